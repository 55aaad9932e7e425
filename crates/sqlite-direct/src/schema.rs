//! What a binary may run on: the migrations a database has applied, against the ones the
//! binary knows.

/// How the applied migrations stand against the binary's.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaStanding {
    /// Every applied migration is one the binary knows.
    Known,
    /// Newer migrations than the binary's newest are applied (a binary rolled back after a
    /// release migrated): migrations only add, so it runs, and says so.
    Newer {
        /// The newest applied version.
        applied: i64,
        /// The binary's newest version.
        known: i64,
    },
}

/// Compares `applied` with `known`. An applied version the binary does not know but
/// below its newest is no rollback (a migration renumbered or squashed, or another
/// program's): running would migrate a schema nobody tested, so it is refused.
pub fn schema_standing(applied: &[i64], known: &[i64]) -> Result<SchemaStanding, String> {
    let newest_known = known.iter().copied().max().unwrap_or(0);
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|version| !known.contains(version))
        .collect();
    if let Some(stray) = unknown.iter().copied().filter(|v| *v <= newest_known).min() {
        return Err(format!(
            "the database has applied migration {stray}, which this binary does not know \
             although it knows later ones (up to {newest_known}): not a rollback; refusing \
             to run on a schema it was not built for"
        ));
    }
    Ok(match unknown.iter().copied().max() {
        Some(applied) => SchemaStanding::Newer {
            applied,
            known: newest_known,
        },
        None => SchemaStanding::Known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_migrations_are_a_rollback_and_unknown_older_ones_are_refused() {
        assert_eq!(
            schema_standing(&[1, 2, 3], &[1, 2, 3]),
            Ok(SchemaStanding::Known)
        );
        assert_eq!(schema_standing(&[], &[1, 2, 3]), Ok(SchemaStanding::Known));
        assert_eq!(
            schema_standing(&[1, 2], &[1, 2, 3]),
            Ok(SchemaStanding::Known)
        );
        assert_eq!(
            schema_standing(&[1, 2, 3, 4, 5], &[1, 2, 3]),
            Ok(SchemaStanding::Newer {
                applied: 5,
                known: 3
            })
        );
        let squashed = schema_standing(&[1, 2, 3, 4, 5], &[10]).unwrap_err();
        assert!(squashed.contains("migration 1,"), "{squashed}");
        assert!(schema_standing(&[1, 7, 3], &[1, 2, 3]).is_ok());
        assert!(
            schema_standing(&[1, 2, 3], &[1, 3, 4]).is_err(),
            "2 was never shipped with 3"
        );
    }
}
