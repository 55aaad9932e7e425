//! The writer's statements on SQLite: cached prepared statements, one row each, run on
//! the writer's own connection from the writer's own thread (`sqlite_direct`). Through
//! sqlx every statement was a message to the connection's thread and back and every
//! bound text a copy; here a row costs its binds and SQLite's own work. One row per
//! statement also tells at once which candidate number was taken (no change), so no
//! lookup of taken numbers is needed before inserting.

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use sqlite_direct::{CheckpointSignal, Direct, Transaction, Value};

use crate::domain::errors::StoreError;
use crate::domain::personal_id::{BucketKey, PersonalId};

use super::super::audit::{Chainer, Entry};
use super::super::rows::{self, id_from_i64, id_i64};
use super::{Col, Head, KeyRow, NewRow, TxError, WriteDb, WriteTx, prefix_i64};

const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
const KEY: &str =
    "SELECT content_hash, personal_id, issue_time, replaces FROM citizens WHERE request_id = ?";
const BUCKET: &str = "SELECT issued FROM buckets WHERE prefix = ?";
const SUSPECTS: &str =
    "SELECT personal_id FROM citizens WHERE dup_key = ? AND status = 1 ORDER BY personal_id";
const IN_BUCKET: &str =
    "SELECT personal_id FROM citizens WHERE personal_id >= ? AND personal_id <= ?";
/// `OR FAIL`: with the default `ABORT`, a statement that may fail part-way keeps a
/// statement journal (a copy of every page it touches, so that it can undo only itself).
/// The writer never goes on after a failed statement: the whole transaction is rolled
/// back. A taken number changes nothing and is drawn again.
const INSERT_CITIZEN: &str = "INSERT OR FAIL INTO citizens (personal_id, request_id, \
    content_hash, kind, status, issue_time, replaces, full_name, sex, date_of_birth, \
    pob_description, pob_province, registration_province, home_town, ethnicity, nationality, \
    father, mother, unit_code, registration_number, book_number, registration_date, dup_key, \
    register_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (personal_id) DO NOTHING";
const STATUS: &str = "SELECT status FROM citizens WHERE personal_id = ?";
const CANCEL: &str =
    "UPDATE citizens SET status = ?, cancel_time = ?, replaced_by = ? WHERE personal_id = ?";
const INSERT_AUDIT: &str = "INSERT OR FAIL INTO audit_log (seq, at_micros, action, personal_id, \
    related_id, request_id, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SET_HEAD: &str = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1";
const ADD_TO_BUCKET: &str = "INSERT OR FAIL INTO buckets (prefix, issued) VALUES (?, ?) \
    ON CONFLICT (prefix) DO UPDATE SET issued = buckets.issued + excluded.issued";

impl From<sqlite_direct::Error> for TxError {
    fn from(e: sqlite_direct::Error) -> Self {
        if e.is_unique_violation() {
            // Another process on the same file stored the same idempotency key.
            Self::Retry
        } else if e.is_unavailable() {
            Self::Store(StoreError::Unavailable(e.to_string()))
        } else {
            Self::Store(StoreError::Unexpected(anyhow::Error::new(e)))
        }
    }
}

/// The writer's SQLite connection, held for direct use.
pub(crate) struct SqliteDb<'c> {
    direct: Direct<'c>,
    checkpointed: CheckpointSignal,
}

impl<'c> SqliteDb<'c> {
    pub(crate) fn new(direct: Direct<'c>, checkpointed: CheckpointSignal) -> Self {
        Self {
            direct,
            checkpointed,
        }
    }
}

/// An open `BEGIN IMMEDIATE` transaction.
pub(crate) struct SqliteTx<'d, 'c> {
    tx: Transaction<'d, 'c>,
}

impl<'c> WriteDb for SqliteDb<'c> {
    type Tx<'a>
        = SqliteTx<'a, 'c>
    where
        Self: 'a;

    async fn begin(&mut self) -> Result<(SqliteTx<'_, 'c>, Head), TxError> {
        // IMMEDIATE takes the write lock now, so a second process on the same file
        // waits (busy_timeout) instead of failing on upgrade.
        let mut tx = self.direct.begin_immediate()?;
        let mut head = None;
        tx.query::<TxError>(HEAD, &[], |row| {
            head = Some(Head {
                seq: row.int(0)?,
                hash: row.text(1)?.to_owned(),
            });
            Ok(())
        })?;
        let head = head.ok_or_else(|| rows::corrupt("audit_head has no row"))?;
        Ok((SqliteTx { tx }, head))
    }

    async fn between_groups(&mut self) {
        if let Err(e) = self.direct.copy_rest_of_wal(&self.checkpointed) {
            tracing::debug!(error = %e, "finishing the background WAL checkpoint failed");
        }
    }
}

/// `items` sorted: a group's keys are random, and visiting an index in key order
/// walks its pages once, left to right, instead of jumping between them.
fn in_key_order<T: Copy + Ord>(items: &[T]) -> Vec<T> {
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    sorted
}

impl WriteTx for SqliteTx<'_, '_> {
    async fn existing_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, KeyRow>, TxError> {
        let mut out = HashMap::new();
        for id in in_key_order(ids) {
            if out.contains_key(id) {
                continue;
            }
            self.tx.query::<TxError>(KEY, &[id.into()], |row| {
                out.insert(
                    id.to_owned(),
                    KeyRow {
                        hash: row.text(0)?.to_owned(),
                        personal_id: id_from_i64(row.int(1)?)?,
                        issue_time: row.int(2)?,
                        replaces: row.opt_int(3)?.map(id_from_i64).transpose()?,
                    },
                );
                Ok(())
            })?;
        }
        Ok(out)
    }

    async fn bucket_counts(&mut self, buckets: &[BucketKey]) -> Result<Vec<u64>, TxError> {
        let mut out = Vec::with_capacity(buckets.len());
        for &b in buckets {
            let mut issued = 0;
            self.tx
                .query::<TxError>(BUCKET, &[prefix_i64(b).into()], |row| {
                    issued = u64::try_from(row.int(0)?).unwrap_or(0);
                    Ok(())
                })?;
            out.push(issued);
        }
        Ok(out)
    }

    async fn duplicate_suspects(
        &mut self,
        keys: &[i64],
    ) -> Result<HashMap<i64, Vec<PersonalId>>, TxError> {
        let mut out: HashMap<i64, Vec<PersonalId>> = HashMap::new();
        for key in in_key_order(keys) {
            self.tx.query::<TxError>(SUSPECTS, &[key.into()], |row| {
                out.entry(key).or_default().push(id_from_i64(row.int(0)?)?);
                Ok(())
            })?;
        }
        Ok(out)
    }

    async fn used_suffixes(&mut self, b: BucketKey) -> Result<HashSet<u32>, TxError> {
        let lo = i64::try_from(b.first_number()).unwrap_or(i64::MAX);
        let mut used = HashSet::new();
        self.tx
            .query::<TxError>(IN_BUCKET, &[lo.into(), (lo + 999_999).into()], |row| {
                used.insert(id_from_i64(row.int(0)?)?.suffix());
                Ok(())
            })?;
        Ok(used)
    }

    async fn insert_citizens(
        &mut self,
        now: i64,
        rows_in: &[NewRow<'_>],
        candidates: &[(usize, PersonalId)],
    ) -> Result<HashSet<PersonalId>, TxError> {
        let mut inserted = HashSet::with_capacity(candidates.len());
        let mut by_number = candidates.to_vec();
        by_number.sort_unstable_by_key(|&(_, id)| id_i64(id));
        for (i, id) in by_number {
            let r = &rows_in[i];
            let v = r.values;
            let values: [Value<'_>; 24] = [
                id_i64(id).into(),
                v.request_id().into(),
                v.hash().into(),
                r.kind.into(),
                rows::STATUS_ACTIVE.into(),
                now.into(),
                r.replaces.map(id_i64).into(),
                v.get(Col::FullName).into(),
                v.sex.into(),
                v.get(Col::DateOfBirth).into(),
                v.get(Col::PlaceOfBirth).into(),
                v.get(Col::PobProvince).into(),
                v.get(Col::RegistrationProvince).into(),
                v.get(Col::HomeTown).into(),
                v.get(Col::Ethnicity).into(),
                v.get(Col::Nationality).into(),
                v.father().into(),
                v.mother().into(),
                v.get(Col::UnitCode).into(),
                v.registration_number.into(),
                v.get(Col::BookNumber).into(),
                v.get(Col::RegistrationDate).into(),
                v.dup_key.into(),
                v.register_key.into(),
            ];
            if self.tx.execute(INSERT_CITIZEN, &values)? == 1 {
                inserted.insert(id);
            }
        }
        Ok(inserted)
    }

    async fn status(&mut self, id: PersonalId) -> Result<Option<i64>, TxError> {
        let mut status = None;
        self.tx
            .query::<TxError>(STATUS, &[id_i64(id).into()], |row| {
                status = Some(row.int(0)?);
                Ok(())
            })?;
        Ok(status)
    }

    async fn cancel(&mut self, old: PersonalId, new: PersonalId, now: i64) -> Result<(), TxError> {
        self.tx.execute(
            CANCEL,
            &[
                rows::STATUS_CANCELLED.into(),
                now.into(),
                id_i64(new).into(),
                id_i64(old).into(),
            ],
        )?;
        Ok(())
    }

    async fn append_audit(&mut self, entries: &[Entry], prev: &mut String) -> Result<(), TxError> {
        let mut chainer = Chainer::default();
        for e in entries {
            let hash = chainer.hash(prev, e);
            self.tx.execute(
                INSERT_AUDIT,
                &[
                    e.seq.into(),
                    e.at_micros.into(),
                    e.action.into(),
                    e.personal_id.into(),
                    e.related_id.into(),
                    e.request_id.as_str().into(),
                    e.detail.as_str().into(),
                    prev.as_str().into(),
                    hash.as_str().into(),
                ],
            )?;
            *prev = hash;
        }
        Ok(())
    }

    async fn set_head(&mut self, seq: i64, hash: &str) -> Result<(), TxError> {
        self.tx.execute(SET_HEAD, &[seq.into(), hash.into()])?;
        Ok(())
    }

    async fn add_to_buckets(&mut self, deltas: &[(BucketKey, u64)]) -> Result<(), TxError> {
        for &(b, d) in deltas {
            let d = i64::try_from(d).unwrap_or(i64::MAX);
            self.tx
                .execute(ADD_TO_BUCKET, &[prefix_i64(b).into(), d.into()])?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), TxError> {
        self.tx.commit()?;
        Ok(())
    }
}
