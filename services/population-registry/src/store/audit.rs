//! The hash-chained audit log: each entry's hash is
//! sha256(previous hash || canonical entry), so that changing, inserting or
//! deleting any row breaks every later link.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row as _};

/// Hash of the (empty) chain before the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry before it is chained.
#[derive(Clone)]
pub(crate) struct Entry {
    pub seq: i64,
    pub at_micros: i64,
    pub action: &'static str,
    pub personal_id: i64,
    pub related_id: Option<i64>,
    pub request_id: String,
    pub detail: String,
}

/// Without the numbers and the detail (a correction's reason).
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("action", &self.action)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// An entry's chained fields, borrowed from a new entry or from a stored row.
#[derive(Clone, Copy)]
struct Fields<'a> {
    seq: i64,
    at_micros: i64,
    action: &'a str,
    personal_id: i64,
    related_id: Option<i64>,
    request_id: &'a str,
    detail: &'a str,
}

/// The canonical bytes of an entry: a JSON array in a fixed order, which is
/// unambiguous whatever the fields contain. Written straight into `buf` (cleared
/// first), byte for byte what serde_json makes of the tuple
/// `(seq, at_micros, action, "{personal_id:012}", "{related_id:012}" or "", request_id,
/// detail)`: the writer chains every entry of a group in turn, and a fresh buffer and two
/// formatted strings per entry were a third of that work.
fn canonical_into(buf: &mut Vec<u8>, e: &Fields<'_>) {
    use std::io::Write as _;
    let Fields {
        seq,
        at_micros,
        action,
        personal_id,
        related_id,
        request_id,
        detail,
    } = *e;
    buf.clear();
    // Writing into a Vec cannot fail; strings are escaped by serde_json itself.
    let _ = write!(buf, "[{seq},{at_micros},");
    let _ = serde_json::to_writer(&mut *buf, action);
    let _ = write!(buf, ",\"{personal_id:012}\",");
    match related_id {
        Some(r) => {
            let _ = write!(buf, "\"{r:012}\",");
        }
        None => buf.extend_from_slice(b"\"\","),
    }
    let _ = serde_json::to_writer(&mut *buf, request_id);
    buf.push(b',');
    let _ = serde_json::to_writer(&mut *buf, detail);
    buf.push(b']');
}

/// Chains entries one after another with one reused buffer.
#[derive(Default)]
pub(crate) struct Chainer {
    buf: Vec<u8>,
}

impl Chainer {
    /// sha256(prev_hash || canonical entry), hex.
    pub(crate) fn hash(&mut self, prev_hash: &str, entry: &Entry) -> String {
        let fields = Fields {
            seq: entry.seq,
            at_micros: entry.at_micros,
            action: entry.action,
            personal_id: entry.personal_id,
            related_id: entry.related_id,
            request_id: &entry.request_id,
            detail: &entry.detail,
        };
        canonical_into(&mut self.buf, &fields);
        chain_hash_parts(prev_hash, &self.buf)
    }
}

fn chain_hash_parts(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    let mut prev = [0u8; 32];
    if hex::decode_to_slice(prev_hash, &mut prev).is_ok() {
        h.update(prev);
    } else {
        // Not a hash of this chain (a damaged row): hashed as stored, so that
        // verification reports the broken link instead of failing.
        h.update(hex::decode(prev_hash).unwrap_or_else(|_| prev_hash.as_bytes().to_vec()));
    }
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
    let mut bytes = Vec::new();
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
            let (request_id, detail): (String, String) = (row.try_get(5)?, row.try_get(6)?);
            let fields = Fields {
                seq,
                at_micros: row.try_get(1)?,
                action: &action,
                personal_id: row.try_get(3)?,
                related_id: row.try_get(4)?,
                request_id: &request_id,
                detail: &detail,
            };
            canonical_into(&mut bytes, &fields);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The canonical form as first defined: serde_json of the tuple. Chains written
    /// before `canonical_into` must still verify, so both must agree byte for byte.
    fn reference(
        seq: i64,
        at_micros: i64,
        action: &str,
        personal_id: i64,
        related_id: Option<i64>,
        request_id: &str,
        detail: &str,
    ) -> Vec<u8> {
        serde_json::to_vec(&(
            seq,
            at_micros,
            action,
            format!("{personal_id:012}"),
            related_id.map(|r| format!("{r:012}")).unwrap_or_default(),
            request_id,
            detail,
        ))
        .unwrap()
    }

    proptest! {
        #[test]
        fn canonical_bytes_are_those_of_the_serde_json_tuple(
            seq in any::<i64>(),
            at in any::<i64>(),
            action in "(issue|cancel|reissue)",
            id in any::<i64>(),
            related in proptest::option::of(any::<i64>()),
            request_id in "\\PC*|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}é]*",
            detail in any::<String>(),
        ) {
            let mut buf = b"left over".to_vec();
            let fields = Fields {
                seq,
                at_micros: at,
                action: &action,
                personal_id: id,
                related_id: related,
                request_id: &request_id,
                detail: &detail,
            };
            canonical_into(&mut buf, &fields);
            prop_assert_eq!(buf, reference(seq, at, &action, id, related, &request_id, &detail));
        }
    }

    /// sha256(prev_bytes || the reference canonical form of `e`), hex.
    fn expected(prev_bytes: &[u8], e: &Entry) -> String {
        let mut h = Sha256::new();
        h.update(prev_bytes);
        h.update(reference(
            e.seq,
            e.at_micros,
            e.action,
            e.personal_id,
            e.related_id,
            &e.request_id,
            &e.detail,
        ));
        hex::encode(h.finalize())
    }

    #[test]
    fn a_chained_hash_covers_the_previous_hash_and_the_entry() {
        let entry = Entry {
            seq: 1,
            at_micros: 1_451_606_400_000_000,
            action: "issue",
            personal_id: 1_016_000_042,
            related_id: None,
            request_id: "civil-1".into(),
            detail: "ab".repeat(32),
        };
        let first = expected(&[0u8; 32], &entry);
        let mut chainer = Chainer::default();
        assert_eq!(chainer.hash(GENESIS, &entry), first);
        let next = Entry {
            seq: 2,
            ..entry.clone()
        };
        assert_ne!(chainer.hash(&first, &next), chainer.hash(GENESIS, &next));
        // A damaged previous hash is hashed as stored, as before.
        assert_eq!(
            chainer.hash("not hex", &entry),
            expected(b"not hex", &entry)
        );
    }
}
