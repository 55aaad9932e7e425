//! Reconciliation: the civil registry's numbered registrations against the population
//! registry's issuances for the same registration dates, one to one. Every difference is
//! reported; with `repair`, what can be repaired safely is: a number the population registry
//! holds but the registration lacks is written back, and a registration that should be
//! numbered but has neither a number nor a queued request is queued again.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use uuid::Uuid;

use crate::domain::model::PersonalIdStatus;
use crate::domain::population::{PopulationRegistry, RemoteIssuance};
use crate::store::Store;

/// What differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DifferenceKind {
    /// The population registry issued a number the registration does not show.
    NumberNotWrittenBack,
    /// Both have an active number, but not the same.
    NumberMismatch,
    /// The registration shows a number the population registry does not hold as active.
    MissingInPopulationRegistry,
    /// Eligible, no number, nothing queued: it would never be numbered.
    StuckWithoutRequest,
    /// An issuance whose key names no registration of this registry in the period.
    UnknownIssuance,
    /// The population registry holds more than one active number for the registration:
    /// a duplicate the contract forbids, reported and never repaired here.
    SeveralActiveNumbers,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// What.
    pub kind: DifferenceKind,
    /// The registration, when known.
    pub registration_id: Option<Uuid>,
    /// Whether `--repair` repaired it.
    pub repaired: bool,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self
            .registration_id
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        write!(
            f,
            "{:?}\tregistration={}\trepaired={}",
            self.kind, id, self.repaired
        )
    }
}

fn registration_of(key: &str) -> Option<Uuid> {
    Uuid::parse_str(key.split(':').next().unwrap_or(key)).ok()
}

/// The active issuances by registration, and what is wrong with them on their own: a key
/// that names no registration (each one reported), a registration with several active
/// numbers (once per registration).
fn index_active(remote: Vec<RemoteIssuance>) -> (HashMap<Uuid, RemoteIssuance>, Vec<Difference>) {
    let mut active = HashMap::new();
    let mut differences = Vec::new();
    let mut several = HashSet::new();
    for issuance in remote.into_iter().filter(|i| i.active) {
        let Some(id) = registration_of(&issuance.request_id) else {
            differences.push(Difference {
                kind: DifferenceKind::UnknownIssuance,
                registration_id: None,
                repaired: false,
            });
            continue;
        };
        if active.insert(id, issuance).is_some() && several.insert(id) {
            differences.push(Difference {
                kind: DifferenceKind::SeveralActiveNumbers,
                registration_id: Some(id),
                repaired: false,
            });
        }
    }
    (active, differences)
}

/// Compares the period `from..=to`; repairs when asked.
pub async fn reconcile<P: PopulationRegistry>(
    store: &Store,
    registry: &P,
    from: NaiveDate,
    to: NaiveDate,
    repair: bool,
) -> anyhow::Result<Vec<Difference>> {
    let local = store.reconcile_rows(from, to).await?;
    let remote = registry.list_issuances(from, to).await?;
    let (mut active, mut out) = index_active(remote);
    let several: HashSet<Uuid> = out
        .iter()
        .filter(|d| d.kind == DifferenceKind::SeveralActiveNumbers)
        .filter_map(|d| d.registration_id)
        .collect();
    for row in local {
        let theirs = active.remove(&row.id);
        let kind = match (row.status, &row.personal_id, &theirs) {
            (PersonalIdStatus::Issued, Some(ours), Some(t)) if &t.personal_id != ours => {
                Some(DifferenceKind::NumberMismatch)
            }
            (PersonalIdStatus::Issued, Some(_), Some(_)) => None,
            (PersonalIdStatus::Issued, _, None) => {
                // Not in the listed period (a registration date recorded differently?):
                // ask by key before calling it missing.
                let found = registry.find_by_registration(&row.id.to_string()).await?;
                if found
                    .iter()
                    .any(|c| c.active && Some(&c.personal_id) == row.personal_id.as_ref())
                {
                    None
                } else {
                    Some(DifferenceKind::MissingInPopulationRegistry)
                }
            }
            (PersonalIdStatus::Pending, _, Some(_)) if row.queued => None,
            (PersonalIdStatus::Rejected, Some(ours), Some(t)) if &t.personal_id == ours => None,
            (_, _, Some(_)) => Some(DifferenceKind::NumberNotWrittenBack),
            (PersonalIdStatus::Pending, _, None) if row.queued => None,
            (PersonalIdStatus::Rejected, _, None) => None,
            (_, _, None) => Some(DifferenceKind::StuckWithoutRequest),
        };
        let Some(kind) = kind else { continue };
        // Which of several active numbers is the registration's is for a person to decide.
        let repaired = if repair && !several.contains(&row.id) {
            match (&kind, &theirs) {
                (
                    DifferenceKind::NumberNotWrittenBack | DifferenceKind::NumberMismatch,
                    Some(t),
                ) => store.repair_write_back(&row, &t.personal_id).await?,
                (DifferenceKind::StuckWithoutRequest, None) => store.repair_requeue(row.id).await?,
                _ => false,
            }
        } else {
            false
        };
        out.push(Difference {
            kind,
            registration_id: Some(row.id),
            repaired,
        });
    }
    for (id, _) in active {
        out.push(Difference {
            kind: DifferenceKind::UnknownIssuance,
            registration_id: Some(id),
            repaired: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuance(personal_id: &str, request_id: &str, active: bool) -> RemoteIssuance {
        RemoteIssuance {
            personal_id: personal_id.into(),
            request_id: request_id.into(),
            active,
        }
    }

    #[test]
    fn several_active_numbers_and_every_unknown_key_are_each_reported() {
        let twice = Uuid::now_v7();
        let once = Uuid::now_v7();
        let (active, differences) = index_active(vec![
            issuance("001200000001", &twice.to_string(), true),
            issuance("001200000002", &format!("{twice}:fix-1"), true),
            issuance("001200000003", &format!("{twice}:fix-2"), true),
            issuance("001200000004", &once.to_string(), false),
            issuance("001200000005", &format!("{once}:fix-1"), true),
            issuance("001200000006", "not-a-registration", true),
            issuance("001200000007", "nor-this-one", true),
        ]);
        let kinds: Vec<_> = differences
            .iter()
            .map(|d| (d.kind.clone(), d.registration_id))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DifferenceKind::SeveralActiveNumbers, Some(twice)),
                (DifferenceKind::UnknownIssuance, None),
                (DifferenceKind::UnknownIssuance, None),
            ]
        );
        assert_eq!(active.len(), 2);
        assert_eq!(active[&once].personal_id, "001200000005");
    }
}
