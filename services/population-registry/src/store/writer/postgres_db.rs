//! The writer's statements on PostgreSQL, through sqlx's `Any` driver: the database
//! server does the work, and many rows per statement keep round trips few. Each
//! transaction locks the audit chain's head row (`FOR UPDATE`), which serialises the
//! writers of every replica sharing the database.

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use sqlx::{Any, AnyPool, Row as _, Transaction};

use crate::domain::personal_id::{BucketKey, PersonalId};

use super::super::audit::{Chainer, Entry};
use super::super::classify;
use super::super::rows::{self, id_from_i64, id_i64};
use super::{Col, Head, KeyRow, NewRow, TxError, WriteDb, WriteTx, prefix_i64};

/// Most rows per multi-row INSERT: 23,000 parameters for citizens, below PostgreSQL's
/// 65,535. Few large statements keep the per-statement cost of the driver off the
/// per-number budget.
const INSERT_CHUNK: usize = 1000;
/// Most parameters per IN list.
const IN_CHUNK: usize = 2048;
/// Candidates from which taken numbers are looked up before the INSERT.
const LOOKUP_BEFORE_INSERT_MIN: usize = 256;

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        if is_retryable(&e) {
            Self::Retry
        } else {
            Self::Store(classify(e))
        }
    }
}

fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // unique violation on the idempotency key (a replica's concurrent
            // insert), serialization failure, deadlock.
            matches!(code.as_ref(), "23505" | "40001" | "40P01")
        }
        _ => false,
    }
}

/// The PostgreSQL pool; the writer takes one connection of it per transaction.
pub(crate) struct PostgresDb {
    pool: AnyPool,
}

impl PostgresDb {
    pub(crate) fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

/// An open transaction on a pooled connection.
pub(crate) struct PostgresTx {
    tx: Transaction<'static, Any>,
}

impl WriteDb for PostgresDb {
    type Tx<'a> = PostgresTx;

    async fn begin(&mut self) -> Result<(PostgresTx, Head), TxError> {
        let mut tx = self.pool.begin().await?;
        // The writer only looks rows up by key. Without statistics (autovacuum off, or
        // before its first ANALYZE) the planner takes each value of an IN list to match
        // 0.5% of the table, and chose a parallel scan of every citizen for a group's
        // 2,048 duplicate keys.
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let head = Head {
            seq: head.try_get(0)?,
            hash: head.try_get(1)?,
        };
        Ok((PostgresTx { tx }, head))
    }
}

impl WriteTx for PostgresTx {
    async fn existing_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, KeyRow>, TxError> {
        let mut out = HashMap::new();
        let unique: Vec<&str> = ids
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for chunk in in_lists(&unique, IN_CHUNK) {
            let sql = format!(
                "SELECT request_id, content_hash, personal_id, issue_time, replaces \
                 FROM citizens WHERE request_id IN ({})",
                list(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in &chunk {
                q = q.bind((*id).to_owned());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.insert(
                    row.try_get::<String, _>(0)?,
                    KeyRow {
                        hash: row.try_get(1)?,
                        personal_id: id_from_i64(row.try_get(2)?)?,
                        issue_time: row.try_get(3)?,
                        replaces: row
                            .try_get::<Option<i64>, _>(4)?
                            .map(id_from_i64)
                            .transpose()?,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn bucket_counts(&mut self, buckets: &[BucketKey]) -> Result<Vec<u64>, TxError> {
        let mut found = HashMap::new();
        for chunk in in_lists(buckets, IN_CHUNK) {
            let sql = format!(
                "SELECT prefix, issued FROM buckets WHERE prefix IN ({})",
                list(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in &chunk {
                q = q.bind(prefix_i64(*b));
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let prefix: i64 = row.try_get(0)?;
                let issued: i64 = row.try_get(1)?;
                found.insert(prefix, u64::try_from(issued).unwrap_or(0));
            }
        }
        Ok(buckets
            .iter()
            .map(|b| found.get(&prefix_i64(*b)).copied().unwrap_or(0))
            .collect())
    }

    async fn duplicate_suspects(
        &mut self,
        keys: &[i64],
    ) -> Result<HashMap<i64, Vec<PersonalId>>, TxError> {
        let mut out: HashMap<i64, Vec<PersonalId>> = HashMap::new();
        for chunk in in_lists(keys, IN_CHUNK) {
            let sql = format!(
                "SELECT dup_key, personal_id FROM citizens WHERE dup_key IN ({}) \
                 AND status = 1 ORDER BY personal_id",
                list(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in &chunk {
                q = q.bind(*k);
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.entry(row.try_get(0)?)
                    .or_default()
                    .push(id_from_i64(row.try_get(1)?)?);
            }
        }
        Ok(out)
    }

    async fn used_suffixes(&mut self, b: BucketKey) -> Result<HashSet<u32>, TxError> {
        let lo = b.first_number();
        let hi = lo + 999_999;
        let found = sqlx::query(
            "SELECT personal_id FROM citizens WHERE personal_id >= $1 AND personal_id <= $2",
        )
        .bind(i64::try_from(lo).unwrap_or(i64::MAX))
        .bind(i64::try_from(hi).unwrap_or(i64::MAX))
        .fetch_all(&mut *self.tx)
        .await?;
        let mut used = HashSet::with_capacity(found.len());
        for row in found {
            used.insert(id_from_i64(row.try_get(0)?)?.suffix());
        }
        Ok(used)
    }

    async fn insert_citizens(
        &mut self,
        now: i64,
        rows_in: &[NewRow<'_>],
        candidates: &[(usize, PersonalId)],
    ) -> Result<HashSet<PersonalId>, TxError> {
        let mut inserted = HashSet::with_capacity(candidates.len());
        // Numbers already in the table are left out up front: the lookup returns
        // only those few rows, where a RETURNING clause would send one row per
        // number across the driver.
        // A small group (unary calls, up to a few hundred) skips the lookup: a
        // collision there is rare and costs only the fallback query below (at
        // most a few hundred rows), while the lookup would cost every group one
        // more round trip to the database.
        let taken = if candidates.len() >= LOOKUP_BEFORE_INSERT_MIN {
            self.numbers_in_use(candidates).await?
        } else {
            HashSet::new()
        };
        let free: Vec<(usize, PersonalId)> = candidates
            .iter()
            .copied()
            .filter(|(_, id)| !taken.contains(id))
            .collect();
        let chunks: Vec<&[(usize, PersonalId)]> = pieces(&free, INSERT_CHUNK).collect();
        let affected = execute_chunks(&mut self.tx, &chunks, |chunk| {
            insert_statement(now, rows_in, chunk)
        })
        .await?;
        for (chunk, done) in chunks.into_iter().zip(affected) {
            if done == chunk.len() as u64 {
                inserted.extend(chunk.iter().map(|&(_, id)| id));
                continue;
            }
            // Another writer took a number since the lookup (the chain-head lock
            // makes this unexpected): ours are the rows that carry our key. (A group's
            // candidates are distinct, so later chunks cannot have taken these.)
            let sql = format!(
                "SELECT personal_id, request_id FROM citizens WHERE personal_id IN ({})",
                list(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &(_, id) in chunk {
                q = q.bind(id_i64(id));
            }
            let mine: HashMap<PersonalId, &str> = chunk
                .iter()
                .map(|&(i, id)| (id, rows_in[i].values.request_id()))
                .collect();
            for row in q.fetch_all(&mut *self.tx).await? {
                let id = id_from_i64(row.try_get(0)?)?;
                let key: String = row.try_get(1)?;
                if mine.get(&id).is_some_and(|k| *k == key) {
                    inserted.insert(id);
                }
            }
        }
        Ok(inserted)
    }

    async fn status(&mut self, id: PersonalId) -> Result<Option<i64>, TxError> {
        let row = sqlx::query("SELECT status FROM citizens WHERE personal_id = $1")
            .bind(id_i64(id))
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn cancel(&mut self, old: PersonalId, new: PersonalId, now: i64) -> Result<(), TxError> {
        sqlx::query(
            "UPDATE citizens SET status = $1, cancel_time = $2, replaced_by = $3 \
             WHERE personal_id = $4",
        )
        .bind(rows::STATUS_CANCELLED)
        .bind(now)
        .bind(id_i64(new))
        .bind(id_i64(old))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn append_audit(&mut self, entries: &[Entry], prev: &mut String) -> Result<(), TxError> {
        // Each chunk is hashed as its statement is built.
        let chunks: Vec<&[Entry]> = pieces(entries, INSERT_CHUNK).collect();
        execute_chunks(&mut self.tx, &chunks, |chunk| audit_statement(chunk, prev)).await?;
        Ok(())
    }

    async fn set_head(&mut self, seq: i64, hash: &str) -> Result<(), TxError> {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn add_to_buckets(&mut self, deltas: &[(BucketKey, u64)]) -> Result<(), TxError> {
        for chunk in pieces(deltas, INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO buckets (prefix, issued) VALUES {} ON CONFLICT (prefix) \
                 DO UPDATE SET issued = buckets.issued + excluded.issued",
                placeholders(chunk.len(), 2)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (b, d) in chunk {
                q = q
                    .bind(prefix_i64(*b))
                    .bind(i64::try_from(*d).unwrap_or(i64::MAX));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), TxError> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl PostgresTx {
    /// Which of the candidates' numbers are already in the table.
    async fn numbers_in_use(
        &mut self,
        candidates: &[(usize, PersonalId)],
    ) -> Result<HashSet<PersonalId>, TxError> {
        let mut out = HashSet::new();
        for chunk in in_lists(candidates, IN_CHUNK) {
            let sql = format!(
                "SELECT personal_id FROM citizens WHERE personal_id IN ({})",
                list(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &(_, id) in &chunk {
                q = q.bind(id_i64(id));
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.insert(id_from_i64(row.try_get(0)?)?);
            }
        }
        Ok(out)
    }
}

/// Splits `items` into statement-sized pieces of a few fixed sizes (`max`,
/// then powers of two), so that every piece reuses a cached prepared
/// statement instead of preparing a new shape for each odd group size.
fn pieces<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}
/// Splits the values of an IN list into lists of at most `max` (a power of two),
/// the last one padded to a power of two by repeating its last value, which an IN
/// list ignores. A lookup then takes one statement (one round trip to the database
/// thread) per `max` values instead of one per set bit of the count, and every list
/// still has one of a few lengths with a cached prepared statement.
fn in_lists<T: Clone>(values: &[T], max: usize) -> impl Iterator<Item = Vec<T>> + '_ {
    values.chunks(max).map(move |chunk| {
        let mut list = chunk.to_vec();
        if let Some(last) = chunk.last() {
            list.resize(chunk.len().next_power_of_two().min(max), last.clone());
        }
        list
    })
}

/// Runs one statement per chunk, in order, and returns the rows each affected. Each next
/// statement (thousands of binds) is built while the database runs the current one:
/// `join!` polls the execution first, which hands the statement to the database thread,
/// then builds. Built one after the other, the two sides took turns idling.
async fn execute_chunks<'q, T>(
    conn: &mut sqlx::AnyConnection,
    chunks: &[T],
    mut build: impl FnMut(&T) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut affected = Vec::with_capacity(chunks.len());
    let mut next = chunks.first().map(&mut build);
    for k in 0..chunks.len() {
        let Some(statement) = next.take() else { break };
        let (done, following) = tokio::join!(statement.execute(&mut *conn), async {
            chunks.get(k + 1).map(&mut build)
        });
        affected.push(done?.rows_affected());
        next = following;
    }
    Ok(affected)
}

/// The multi-row INSERT of a chunk of audit entries, chained on from `prev`,
/// which it moves to the chunk's last hash.
fn audit_statement<'q>(
    chunk: &[Entry],
    prev: &mut String,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "INSERT INTO audit_log (seq, at_micros, action, personal_id, related_id, \
         request_id, detail, prev_hash, hash) VALUES {}",
        placeholders(chunk.len(), 9)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    let mut chainer = Chainer::default();
    for e in chunk {
        let hash = chainer.hash(prev, e);
        q = q
            .bind(e.seq)
            .bind(e.at_micros)
            .bind(e.action)
            .bind(e.personal_id)
            .bind(e.related_id)
            .bind(e.request_id.clone())
            .bind(e.detail.clone())
            .bind(std::mem::replace(prev, hash.clone()))
            .bind(hash);
    }
    q
}

/// The multi-row INSERT of one chunk of candidate rows.
fn insert_statement<'q>(
    now: i64,
    rows_in: &[NewRow<'_>],
    chunk: &[(usize, PersonalId)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "INSERT INTO citizens ({}) VALUES {} ON CONFLICT (personal_id) DO NOTHING",
        rows::INSERT_COLUMNS,
        placeholders(chunk.len(), rows::INSERT_COLUMN_COUNT)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, id) in chunk {
        let r = &rows_in[*i];
        let v = r.values;
        let text = |col: Col| v.get(col).to_owned();
        q = q
            .bind(id_i64(*id))
            .bind(v.request_id().to_owned())
            .bind(v.hash().to_owned())
            .bind(r.kind)
            .bind(rows::STATUS_ACTIVE)
            .bind(now)
            .bind(r.replaces.map(id_i64))
            .bind(text(Col::FullName))
            .bind(v.sex)
            .bind(text(Col::DateOfBirth))
            .bind(text(Col::PlaceOfBirth))
            .bind(text(Col::PobProvince))
            .bind(text(Col::RegistrationProvince))
            .bind(text(Col::HomeTown))
            .bind(text(Col::Ethnicity))
            .bind(text(Col::Nationality))
            .bind(v.father().map(str::to_owned))
            .bind(v.mother().map(str::to_owned))
            .bind(text(Col::UnitCode))
            .bind(v.registration_number)
            .bind(text(Col::BookNumber))
            .bind(text(Col::RegistrationDate))
            .bind(v.dup_key)
            .bind(v.register_key);
    }
    q
}

/// `($1,$2,...),(...)` for `rows` rows of `cols` parameters.
fn placeholders(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        out.push_str(&numbered(r * cols + 1, cols));
        out.push(')');
    }
    out
}

/// `$1,$2,...` for an IN list of `n` values.
fn list(n: usize) -> String {
    numbered(1, n)
}

/// `$first,...` for `count` parameters.
fn numbered(first: usize, count: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(count * 6);
    for n in first..first + count {
        if n > first {
            out.push(',');
        }
        let _ = write!(out, "${n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lists_cover_every_value_in_one_list_per_max_padded_to_a_power_of_two() {
        for (len, max) in [
            (0usize, 8usize),
            (1, 8),
            (3, 8),
            (5, 8),
            (8, 8),
            (9, 8),
            (69, 2048),
        ] {
            let values: Vec<usize> = (0..len).collect();
            let lists: Vec<Vec<usize>> = in_lists(&values, max).collect();
            assert_eq!(lists.len(), len.div_ceil(max), "len {len}");
            for list in &lists {
                assert!(
                    list.len().is_power_of_two() && list.len() <= max,
                    "{list:?}"
                );
                // Only the last value repeats.
                let last = list[list.len() - 1];
                let first_of_last = list.iter().position(|v| *v == last).unwrap_or(0);
                assert!(list[first_of_last..].iter().all(|v| *v == last), "{list:?}");
            }
            let mut seen: Vec<usize> = lists.concat();
            seen.dedup();
            assert_eq!(seen, values, "len {len}");
        }
    }
}
