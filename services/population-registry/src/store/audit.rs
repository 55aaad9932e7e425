//! The hash-chained audit log: each entry's hash is
//! sha256(previous hash || canonical entry), so that changing, inserting or
//! deleting any row breaks every later link.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row as _};

/// Hash of the (empty) chain before the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry before it is chained.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub seq: i64,
    pub at_micros: i64,
    pub action: &'static str,
    pub personal_id: i64,
    pub related_id: Option<i64>,
    pub request_id: String,
    pub detail: String,
}

/// The canonical bytes of an entry: a JSON array in a fixed order, which is
/// unambiguous whatever the fields contain.
fn canonical(
    seq: i64,
    at_micros: i64,
    action: &str,
    personal_id: i64,
    related_id: Option<i64>,
    request_id: &str,
    detail: &str,
) -> Vec<u8> {
    // A tuple serialises as the same JSON array as before, without building
    // a `serde_json::Value` tree per entry.
    serde_json::to_vec(&(
        seq,
        at_micros,
        action,
        format!("{personal_id:012}"),
        related_id.map(|r| format!("{r:012}")).unwrap_or_default(),
        request_id,
        detail,
    ))
    .unwrap_or_default()
}

/// sha256(prev_hash || canonical entry), hex.
pub(crate) fn chain_hash(prev_hash: &str, entry: &Entry) -> String {
    chain_hash_parts(
        prev_hash,
        &canonical(
            entry.seq,
            entry.at_micros,
            entry.action,
            entry.personal_id,
            entry.related_id,
            &entry.request_id,
            &entry.detail,
        ),
    )
}

fn chain_hash_parts(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(hex::decode(prev_hash).unwrap_or_else(|_| prev_hash.as_bytes().to_vec()));
    h.update(canonical);
    hex::encode(h.finalize())
}

/// Outcome of `audit verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// The first broken link: its sequence number and what is wrong.
    pub first_broken: Option<(i64, String)>,
}

const PAGE: i64 = 10_000;

/// Walks the whole chain in sequence order.
pub(crate) async fn verify(pool: &AnyPool) -> anyhow::Result<AuditReport> {
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1i64;
    let mut entries = 0u64;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at_micros, action, personal_id, related_id, request_id, detail, \
             prev_hash, hash FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(expected_seq)
        .bind(PAGE)
        .fetch_all(pool)
        .await
        .context("reading the audit log")?;
        let done = (rows.len() as i64) < PAGE;
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let stored_prev: String = row.try_get(7)?;
            let stored_hash: String = row.try_get(8)?;
            let broken = |reason: &str| {
                Ok(AuditReport {
                    entries,
                    first_broken: Some((seq, reason.to_owned())),
                })
            };
            if seq != expected_seq {
                return Ok(AuditReport {
                    entries,
                    first_broken: Some((expected_seq, format!("entry missing (next is {seq})"))),
                });
            }
            if stored_prev != prev {
                return broken("prev_hash does not match the previous entry's hash");
            }
            let action: String = row.try_get(2)?;
            let bytes = canonical(
                seq,
                row.try_get(1)?,
                &action,
                row.try_get(3)?,
                row.try_get(4)?,
                &row.try_get::<String, _>(5)?,
                &row.try_get::<String, _>(6)?,
            );
            let recomputed = chain_hash_parts(&prev, &bytes);
            if recomputed != stored_hash {
                return broken("content does not match its hash");
            }
            prev = stored_hash;
            expected_seq += 1;
            entries += 1;
        }
        if done {
            break;
        }
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await
        .context("reading the audit head")?;
    let head_seq: i64 = head.try_get(0)?;
    let head_hash: String = head.try_get(1)?;
    if head_seq != expected_seq - 1 || head_hash != prev {
        return Ok(AuditReport {
            entries,
            first_broken: Some((
                expected_seq,
                format!("chain head (seq {head_seq}) does not match the last entry"),
            )),
        });
    }
    Ok(AuditReport {
        entries,
        first_broken: None,
    })
}
