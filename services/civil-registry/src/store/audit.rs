//! The hash-chained audit log. Entries are appended inside the transaction of the change
//! they record; each entry's hash covers its content and the previous hash, so editing or
//! deleting any entry breaks every later link (`audit verify`).

use sha2::{Digest, Sha256};
use sqlx::{Any, Transaction};

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

/// A write transaction that owns the audit chain's head until it commits.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    seq: i64,
    hash: String,
    start_seq: i64,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl WriteTx {
    pub(crate) fn new(tx: Transaction<'static, Any>, seq: i64, hash: String) -> Self {
        Self {
            tx,
            seq,
            hash,
            start_seq: seq,
        }
    }

    /// Appends an entry to the chain.
    pub(crate) async fn audit(&mut self, entry: AuditEntry) -> Result<(), sqlx::Error> {
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
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, action, entity, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(seq)
        .bind(at_ms)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.entity)
        .bind(details)
        .bind(&self.hash)
        .bind(&hash)
        .execute(&mut *self.tx)
        .await?;
        self.seq = seq;
        self.hash = hash;
        Ok(())
    }

    /// Moves the head and commits; returns once the commit is durable.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.seq != self.start_seq {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(self.seq)
                .bind(&self.hash)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await
    }
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
