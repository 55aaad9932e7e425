//! The hash-chained audit log. Entries are appended inside the transaction of the change
//! they record; each entry's hash covers its content and the previous hash, so editing or
//! deleting any entry breaks every later link (`audit verify`).

use sha2::{Digest, Sha256};
use sqlx::{Any, Transaction};

use super::group::{Table, table};
use super::{Store, now_ms};

/// One change to record. Details hold ids and codes, never personal data, so that the log
/// can be handed to an auditor as is.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// Official id, or `system:<component>`.
    pub actor: String,
    /// What happened (`registration.create`, `personal_id.issued`, ...).
    pub action: &'static str,
    /// What it happened to (`registration/<id>`, `official/<id>`, ...).
    pub entity: String,
    /// Ids and codes.
    pub details: serde_json::Value,
}

fn link(
    prev: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    entity: &str,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        entity,
        details,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// The audit chain as one write transaction extends it: entries are chained in memory and
/// written at commit (`group::finish`), with the head moved to the last of them.
#[derive(Debug)]
pub(crate) struct AuditChain {
    seq: i64,
    hash: String,
    rows: Vec<Vec<Val>>,
}

impl AuditChain {
    /// The chain continuing from the head read inside the transaction.
    pub(crate) fn from_head(seq: i64, hash: String) -> Self {
        Self {
            seq,
            hash,
            rows: Vec::new(),
        }
    }

    /// Appends an entry (written at commit).
    pub(crate) fn append(&mut self, entry: AuditEntry) {
        let seq = self.seq + 1;
        let at_ms = now_ms();
        let details = entry.details.to_string();
        let hash = link(
            &self.hash,
            seq,
            at_ms,
            &entry.actor,
            entry.action,
            &entry.entity,
            &details,
        );
        self.rows.push(vec![
            Val::I(seq),
            Val::I(at_ms),
            Val::S(entry.actor),
            Val::S(entry.action.to_owned()),
            Val::S(entry.entity),
            Val::S(details),
            Val::S(std::mem::replace(&mut self.hash, hash.clone())),
            Val::S(hash),
        ]);
        self.seq = seq;
    }

    /// The entries appended since the last call, and the head after them.
    pub(crate) fn take(&mut self) -> (Vec<Vec<Val>>, i64, String) {
        (std::mem::take(&mut self.rows), self.seq, self.hash.clone())
    }
}

/// The columns of `audit_log` in the order of [`AuditChain`]'s rows.
pub(crate) const AUDIT_LOG: Table = table!(
    "audit_log",
    [
        "seq",
        "at_ms",
        "actor",
        "action",
        "entity",
        "details",
        "prev_hash",
        "hash"
    ]
);

/// Moves the chain's head; bound as (seq, hash).
pub(crate) const SET_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

/// A write transaction through the pool that owns the audit chain's head until it commits.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    /// The process's write turn (SQLite), released after `tx` ends: fields drop in order.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    pub(crate) chain: AuditChain,
    pub(crate) backend: super::Backend,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("chain", &self.chain.seq)
            .finish_non_exhaustive()
    }
}

impl WriteTx {
    pub(crate) fn new(
        tx: Transaction<'static, Any>,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        seq: i64,
        hash: String,
        backend: super::Backend,
    ) -> Self {
        Self {
            tx,
            _turn: turn,
            chain: AuditChain::from_head(seq, hash),
            backend,
        }
    }

    /// Appends an entry to the chain (written at commit).
    pub(crate) fn audit(&mut self, entry: AuditEntry) {
        self.chain.append(entry);
    }

    /// Writes the entries, moves the head and commits; returns once the commit is durable.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        super::group::finish(self).await
    }
}

/// A value for a multi-row INSERT.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    I(i64),
    S(String),
    OS(Option<String>),
    B(Vec<u8>),
}

impl Val {
    /// Binds the value as the query's next parameter.
    pub(crate) fn bind_to<'q>(
        self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
        match self {
            Val::I(x) => query.bind(x),
            Val::S(x) => query.bind(x),
            Val::OS(x) => query.bind(x),
            Val::B(x) => query.bind(x),
        }
    }

    /// The value as `sqlite_direct` binds it (borrowed, not copied).
    pub(crate) fn as_direct(&self) -> sqlite_direct::Value<'_> {
        match self {
            Val::I(x) => sqlite_direct::Value::Int(*x),
            Val::S(x) => sqlite_direct::Value::Text(x),
            Val::OS(x) => x.as_deref().into(),
            Val::B(x) => sqlite_direct::Value::Blob(x),
        }
    }
}

/// Inserts rows with as few statements as the parameter limits allow (SQLite allows 32,766
/// parameters per statement, PostgreSQL 65,535; chunks stay well below both).
pub(crate) async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    backend: super::Backend,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Val>>,
) -> Result<(), sqlx::Error> {
    let mut rest = rows.into_iter();
    for size in super::piece_sizes(rest.len()) {
        let mut sql = format!(
            "{} {table} ({}) VALUES ",
            super::insert_into(backend),
            columns.join(", ")
        );
        let mut n = 0;
        for i in 0..size {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                n += 1;
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&super::param(backend, n));
            }
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in rest.by_ref().take(size) {
            for v in row {
                query = v.bind_to(query);
            }
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Result of `audit verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: i64,
    /// The first broken link's sequence number, if any.
    pub first_broken: Option<i64>,
}

impl Store {
    /// Recomputes the whole chain and compares it with the head.
    pub async fn verify_audit(&self) -> anyhow::Result<VerifyReport> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query_as::<_, (i64, i64, String, String, String, String, String, String)>(
            "SELECT seq, at_ms, actor, action, entity, details, prev_hash, hash FROM audit_log ORDER BY seq",
        )
        .fetch(&self.pool);
        let mut prev = "0".repeat(64);
        let mut expected_seq = 1;
        let mut entries = 0;
        while let Some((seq, at_ms, actor, action, entity, details, prev_hash, hash)) =
            rows.try_next().await?
        {
            entries += 1;
            let ok = seq == expected_seq
                && prev_hash == prev
                && link(&prev, seq, at_ms, &actor, &action, &entity, &details) == hash;
            if !ok {
                return Ok(VerifyReport {
                    entries,
                    first_broken: Some(expected_seq),
                });
            }
            prev = hash;
            expected_seq += 1;
        }
        drop(rows);
        let (head_seq, head_hash): (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(VerifyReport {
                entries,
                first_broken: Some(expected_seq),
            });
        }
        Ok(VerifyReport {
            entries,
            first_broken: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::link;

    #[test]
    fn every_part_of_an_entry_is_in_its_link() {
        let parts = [
            "prev-hash",
            "7",
            "1700000000000",
            "reg_c001",
            "registration.create",
            "registration/1",
            r#"{"unit":"C001"}"#,
        ];
        let of = |p: &[&str; 7]| {
            link(
                p[0],
                p[1].parse().unwrap(),
                p[2].parse().unwrap(),
                p[3],
                p[4],
                p[5],
                p[6],
            )
        };
        let original = of(&parts);
        for i in 0..parts.len() {
            let mut changed = parts;
            let altered = if i == 1 || i == 2 { "8" } else { "x" };
            changed[i] = altered;
            assert_ne!(of(&changed), original, "part {i} is not in the hash");
        }
        // Separated: moving text across a boundary changes the link too.
        let mut shifted = parts;
        shifted[3] = "reg_c001r";
        shifted[4] = "egistration.create";
        assert_ne!(of(&shifted), original);
    }
}
