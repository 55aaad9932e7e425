//! The single writer task: it takes every issuance queued while the previous
//! transaction was committing and commits them together (group commit). Each
//! transaction first takes the audit chain head (on PostgreSQL, locks its row),
//! which serialises writers across replicas sharing one database, so idempotency
//! lookups, bucket counts and draws inside it see every earlier commit. The
//! primary key on the number stays the last guarantee: a conflicting draw is
//! simply drawn again.
//!
//! The logic is the same on both backends; the statements are not. `postgres_db` runs
//! them through sqlx's `Any` driver (many rows per statement, the server does the
//! work), `sqlite_db` runs cached prepared statements on the writer's own
//! SQLite connection, on the writer's own thread (no hop to a driver thread, no copy
//! of bound text).

mod postgres_db;
mod sqlite_db;

// foldhash (randomly seeded per map): a group looks up each of its items in several maps,
// and SipHash was 3 % of the writer thread's time in batch minting.
use foldhash::{HashMap, HashMapExt as _, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::domain::birth::{BirthRecord, ContentHash, Violation, sex_str};
use crate::domain::citizen::{IssueRequest, Issued, ReissueRequest, Reissued};
use crate::domain::errors::{IssueError, ReissueError, StoreError};
use crate::domain::minting::{BucketPolicy, draw, pick_free};
use crate::domain::personal_id::{BucketKey, PersonalId};

use super::audit::Entry;
use super::bounded;
use super::rows::{self, id_i64};

pub(crate) use postgres_db::PostgresDb;
pub(crate) use sqlite_db::SqliteDb;

/// Where the outcomes of one `Issue` command go.
type IssueReply = oneshot::Sender<Result<Vec<Result<Issued, IssueError>>, StoreError>>;

/// Work for the writer.
pub(crate) enum WriteCmd {
    /// First issuances; one outcome per item.
    Issue {
        items: Arc<[PendingIssue]>,
        reply: IssueReply,
    },
    /// One re-issue.
    Reissue {
        req: ReissueRequest,
        reply: oneshot::Sender<Result<Reissued, ReissueError>>,
    },
}

/// Random rounds before a bucket's free suffixes are enumerated instead.
const RANDOM_ROUNDS: usize = 6;
/// Longest wait for more work when the previous group was large.
const LINGER: Duration = Duration::from_millis(1);
/// Group size from which the writer lingers (below it, callers are few and
/// latency matters more than grouping).
const LINGER_MIN_GROUP: usize = 8;
/// Attempts of a transaction that lost a race to another replica.
const ATTEMPTS: usize = 3;

/// The audit chain's head when a transaction began.
pub(crate) struct Head {
    seq: i64,
    hash: String,
}

/// A database the writer commits to.
pub(crate) trait WriteDb {
    /// An open writing transaction.
    type Tx<'a>: WriteTx
    where
        Self: 'a;

    /// Begins a transaction that holds the write lock (SQLite) or the chain head's row
    /// (PostgreSQL) until it commits or is dropped, and reads the chain head.
    async fn begin(&mut self) -> Result<(Self::Tx<'_>, Head), TxError>;

    /// Upkeep between two groups, after their replies are sent (SQLite: finishing a
    /// background checkpoint, see `sqlite_direct::CheckpointSignal`).
    async fn between_groups(&mut self) {}
}

/// The statements of one writing transaction; dropped uncommitted, it rolls back.
pub(crate) trait WriteTx {
    /// The stored idempotency keys among `ids`.
    async fn existing_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, KeyRow>, TxError>;
    /// The numbers issued so far in each of `buckets` (distinct), in the same order.
    async fn bucket_counts(&mut self, buckets: &[BucketKey]) -> Result<Vec<u64>, TxError>;
    /// Active citizens per duplicate key, for the distinct `keys`.
    async fn duplicate_suspects(
        &mut self,
        keys: &[i64],
    ) -> Result<HashMap<i64, Vec<PersonalId>>, TxError>;
    /// Every suffix already used in bucket `b`.
    async fn used_suffixes(&mut self, b: BucketKey) -> Result<HashSet<u32>, TxError>;
    /// Inserts the candidate rows (`rows_in[i]` under number `id`), skipping numbers
    /// already taken; returns the numbers inserted.
    async fn insert_citizens(
        &mut self,
        now: i64,
        rows_in: &[NewRow<'_>],
        candidates: &[(usize, PersonalId)],
    ) -> Result<HashSet<PersonalId>, TxError>;
    /// The status of the citizen holding `id`, if any.
    async fn status(&mut self, id: PersonalId) -> Result<Option<i64>, TxError>;
    /// Marks `old` cancelled and replaced by `new`.
    async fn cancel(&mut self, old: PersonalId, new: PersonalId, now: i64) -> Result<(), TxError>;
    /// Appends `entries` (sequence numbers set), chained on from `prev`, which it moves
    /// to the last entry's hash.
    async fn append_audit(&mut self, entries: &[Entry], prev: &mut String) -> Result<(), TxError>;
    /// Moves the chain head.
    async fn set_head(&mut self, seq: i64, hash: &str) -> Result<(), TxError>;
    /// Adds to the issued counts of buckets.
    async fn add_to_buckets(&mut self, deltas: &[(BucketKey, u64)]) -> Result<(), TxError>;
    /// Commits; durable when this returns.
    async fn commit(self) -> Result<(), TxError>;
}

/// An issuance waiting for the writer. A batch keeps tens of thousands of them in flight,
/// so it holds only the values of its row, in one allocation, computed by the caller
/// (`PendingIssue::new`, on a server task): the writer's thread, the one every issuance
/// queues for, only binds them. The caller keeps a reference to the group's items until
/// the writer answers, so they are freed on its task too.
pub(crate) struct PendingIssue {
    row: RowValues,
    /// [`IssueRequest::refused_if_new`]: answered from its stored key, or refused.
    refused_if_new: Option<Box<[Violation]>>,
}

impl PendingIssue {
    pub(crate) fn new(req: IssueRequest) -> Self {
        Self {
            row: RowValues::new(req.request_id.as_str(), &req.hash, &req.record),
            refused_if_new: req.refused_if_new.map(Vec::into_boxed_slice),
        }
    }
}

/// The text columns of a citizen row that come from the request, in `RowValues::text`.
#[derive(Clone, Copy)]
enum Col {
    RequestId,
    ContentHash,
    FullName,
    DateOfBirth,
    PlaceOfBirth,
    /// Empty when born abroad.
    PobProvince,
    RegistrationProvince,
    HomeTown,
    Ethnicity,
    Nationality,
    /// JSON; absent when unknown.
    Father,
    /// JSON; absent when unknown.
    Mother,
    UnitCode,
    BookNumber,
    RegistrationDate,
}

const TEXT_COLUMNS: usize = Col::RegistrationDate as usize + 1;

/// The values of a citizen row that come from the request: the text columns concatenated
/// into one string, and the numbers the writer needs.
pub(crate) struct RowValues {
    text: Box<str>,
    /// End of each column in `text`; a column starts where the previous one ends.
    ends: [u32; TEXT_COLUMNS],
    father_known: bool,
    mother_known: bool,
    sex: i64,
    registration_number: i64,
    /// `RegistrationRef::entry_key`.
    register_key: i64,
    /// `BirthRecord::duplicate_key`.
    dup_key: i64,
    bucket: BucketKey,
}

impl RowValues {
    fn new(request_id: &str, hash: &ContentHash, record: &BirthRecord) -> Self {
        use std::fmt::Write as _;
        fn cut(formatted: &mut String, value: &dyn std::fmt::Display) -> std::ops::Range<usize> {
            let start = formatted.len();
            let _ = write!(formatted, "{value}");
            start..formatted.len()
        }
        let father = rows::parent_json(&record.father);
        let mother = rows::parent_json(&record.mother);
        let reg = &record.registration;
        // The columns formatted from numbers, in one scratch string.
        let mut formatted = String::with_capacity(32);
        let dob = cut(&mut formatted, &record.date_of_birth);
        let pob_province = match record.place_of_birth_province {
            Some(p) => cut(&mut formatted, &p),
            None => 0..0,
        };
        let registration_province = cut(&mut formatted, &record.registration_province);
        let registration_date = cut(&mut formatted, &reg.registration_date);
        // In `Col` order.
        let columns: [&str; TEXT_COLUMNS] = [
            request_id,
            hash.as_str(),
            record.full_name.as_str(),
            &formatted[dob],
            record.place_of_birth.as_str(),
            &formatted[pob_province],
            &formatted[registration_province],
            record.home_town.as_str(),
            record.ethnicity.as_str(),
            record.nationality.as_str(),
            father.as_deref().unwrap_or_default(),
            mother.as_deref().unwrap_or_default(),
            reg.unit_code.as_str(),
            reg.book_number.as_str(),
            &formatted[registration_date],
        ];
        // The exact length: boxing the text then does not reallocate.
        let mut text = String::with_capacity(columns.iter().map(|c| c.len()).sum());
        let mut ends = [0u32; TEXT_COLUMNS];
        for (column, end) in columns.iter().zip(&mut ends) {
            text.push_str(column);
            *end = text.len() as u32;
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            father_known: father.is_some(),
            mother_known: mother.is_some(),
            sex: rows::sex_code(record.sex),
            registration_number: reg.registration_number,
            register_key: reg.entry_key(),
            dup_key: record.duplicate_key(),
            bucket: record.bucket(),
        }
    }

    fn get(&self, col: Col) -> &str {
        let i = col as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn request_id(&self) -> &str {
        self.get(Col::RequestId)
    }

    fn hash(&self) -> &str {
        self.get(Col::ContentHash)
    }

    fn father(&self) -> Option<&str> {
        self.father_known.then(|| self.get(Col::Father))
    }

    fn mother(&self) -> Option<&str> {
        self.mother_known.then(|| self.get(Col::Mother))
    }
}

/// A citizen row about to be inserted.
pub(crate) struct NewRow<'a> {
    kind: i64,
    values: &'a RowValues,
    replaces: Option<PersonalId>,
}

/// An idempotency key already stored.
pub(crate) struct KeyRow {
    hash: String,
    personal_id: PersonalId,
    issue_time: i64,
    replaces: Option<PersonalId>,
}

/// A transaction holding the chain head, with the entries it will append.
struct Tx<T> {
    sql: T,
    head_seq: i64,
    head_hash: String,
    audit: Vec<Entry>,
    now: i64,
    bucket_delta: HashMap<BucketKey, u64>,
    bucket_before: HashMap<BucketKey, u64>,
}

impl<T: WriteTx> Tx<T> {
    /// Loads the current counts of `buckets` not loaded yet (0 for a bucket never used).
    async fn load_buckets(&mut self, buckets: &[BucketKey]) -> Result<(), TxError> {
        let unique: Vec<BucketKey> = buckets
            .iter()
            .copied()
            .filter(|b| !self.bucket_before.contains_key(b))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if unique.is_empty() {
            return Ok(());
        }
        let counts = self.sql.bucket_counts(&unique).await?;
        self.bucket_before.extend(unique.into_iter().zip(counts));
        Ok(())
    }
}

pub(crate) enum TxError {
    Retry,
    Store(StoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn prefix_i64(b: BucketKey) -> i64 {
    i64::try_from(b.prefix()).unwrap_or(i64::MAX)
}

pub(crate) struct Writer<D> {
    db: D,
    policy: BucketPolicy,
    max_group_items: usize,
    timeout: Duration,
}

impl<D: WriteDb> Writer<D> {
    pub(crate) fn new(
        db: D,
        policy: BucketPolicy,
        max_group_items: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            db,
            policy,
            max_group_items: max_group_items.max(1),
            timeout,
        }
    }

    /// Serves the queue until every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let mut last_group = 0;
        while let Some(first) = rx.recv().await {
            let mut issues = Vec::new();
            let mut reissues = Vec::new();
            let mut count = 0;
            let mut push = |cmd: WriteCmd, count: &mut usize| match cmd {
                WriteCmd::Issue { items, reply } => {
                    *count += items.len();
                    issues.push((items, reply));
                }
                WriteCmd::Reissue { req, reply } => {
                    *count += 1;
                    reissues.push((req, reply));
                }
            };
            push(first, &mut count);
            while count < self.max_group_items {
                match rx.try_recv() {
                    Ok(cmd) => push(cmd, &mut count),
                    Err(_) => break,
                }
            }
            // Under load, the callers answered by the last commit send their
            // next requests a moment later; starting at once would commit
            // those few alone and make the rest wait a whole extra commit.
            // So when the last group was large, linger briefly for as many.
            let want = last_group.min(self.max_group_items);
            if last_group >= LINGER_MIN_GROUP && count < want {
                let deadline = tokio::time::Instant::now() + LINGER;
                while count < want {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(cmd)) => push(cmd, &mut count),
                        _ => break,
                    }
                }
            }
            last_group = count;
            if !issues.is_empty() {
                self.commit_issues(issues).await;
            }
            for (req, reply) in reissues {
                let result = self.commit_reissue(&req).await;
                let _ = reply.send(result);
            }
            self.db.between_groups().await;
        }
    }

    async fn commit_issues(&mut self, cmds: Vec<(Arc<[PendingIssue]>, IssueReply)>) {
        let items: Vec<&PendingIssue> = cmds.iter().flat_map(|(items, _)| items.iter()).collect();
        let started = Instant::now();
        let mut outcome = Err(StoreError::Unavailable("not attempted".into()));
        for _ in 0..ATTEMPTS {
            match bounded(self.timeout, async {
                match self.issue_tx(&items).await {
                    Ok(r) => Ok(Some(r)),
                    Err(TxError::Retry) => Ok(None),
                    Err(TxError::Store(e)) => Err(e),
                }
            })
            .await
            {
                Ok(Some(r)) => {
                    outcome = Ok(r);
                    break;
                }
                Ok(None) => outcome = Err(StoreError::Unavailable("write conflict; retry".into())),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        metrics::histogram!("population_registry_write_transaction_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("population_registry_write_group_items").record(items.len() as f64);
        match outcome {
            Ok(results) => {
                let newly = results
                    .iter()
                    .filter(|r| matches!(r, Ok(i) if i.newly_issued))
                    .count();
                metrics::counter!("population_registry_numbers_issued_total")
                    .increment(newly as u64);
                let mut results = results.into_iter();
                for (items, reply) in cmds {
                    let mine: Vec<_> = results.by_ref().take(items.len()).collect();
                    // Released before answering: the caller's reference is then the
                    // last, and the records are freed on its task, not this thread.
                    drop(items);
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                if let StoreError::Unexpected(cause) = &e {
                    tracing::error!(error = format!("{cause:#}"), "issuance transaction failed");
                }
                for (items, reply) in cmds {
                    drop(items);
                    let _ = reply.send(Err(match &e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        StoreError::Unexpected(_) => {
                            StoreError::Unexpected(anyhow::anyhow!("issuance transaction failed"))
                        }
                    }));
                }
            }
        }
    }

    async fn begin(&mut self) -> Result<Tx<D::Tx<'_>>, TxError> {
        let (sql, head) = self.db.begin().await?;
        Ok(Tx {
            sql,
            head_seq: head.seq,
            head_hash: head.hash,
            audit: Vec::new(),
            now: rows::micros(Utc::now()),
            bucket_delta: HashMap::new(),
            bucket_before: HashMap::new(),
        })
    }

    async fn issue_tx(
        &mut self,
        items: &[&PendingIssue],
    ) -> Result<Vec<Result<Issued, IssueError>>, TxError> {
        let policy = self.policy;
        let mut tx = self.begin().await?;
        let ids: Vec<&str> = items.iter().map(|i| i.row.request_id()).collect();
        let existing = tx.sql.existing_keys(&ids).await?;

        enum Plan {
            Replay(PersonalId, i64),
            SameAs(usize),
            New,
            Done(IssueError),
        }
        let mut plans = Vec::with_capacity(items.len());
        let mut first_in_group: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let rid = item.row.request_id();
            let plan = if let Some(key) = existing.get(rid)
                && key.hash == item.row.hash()
            {
                Plan::Replay(key.personal_id, key.issue_time)
            } else if let Some(refused) = &item.refused_if_new {
                // Not served before with this content: as a new issuance it is invalid.
                Plan::Done(IssueError::Invalid(refused.to_vec()))
            } else if existing.contains_key(rid) {
                Plan::Done(IssueError::IdempotencyKeyReused)
            } else if let Some(&j) = first_in_group.get(rid) {
                if items[j].row.hash() == item.row.hash() {
                    Plan::SameAs(j)
                } else {
                    Plan::Done(IssueError::IdempotencyKeyReused)
                }
            } else {
                first_in_group.insert(rid, i);
                Plan::New
            };
            plans.push(plan);
        }

        // Capacity: a full bucket refuses at once, before any draw.
        let new_idx: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(plans[i], Plan::New))
            .collect();
        let buckets: Vec<BucketKey> = new_idx.iter().map(|&i| items[i].row.bucket).collect();
        tx.load_buckets(&buckets).await?;
        let capacity = u64::from(policy.capacity());
        let mut to_mint = Vec::new();
        for &i in &new_idx {
            let b = items[i].row.bucket;
            let used = tx.bucket_before[&b] + tx.bucket_delta.get(&b).copied().unwrap_or(0);
            if used >= capacity {
                plans[i] = Plan::Done(IssueError::BucketExhausted);
            } else {
                *tx.bucket_delta.entry(b).or_default() += 1;
                to_mint.push(i);
            }
        }

        // Duplicate suspects among existing active citizens, before inserting.
        let dup_keys: Vec<i64> = items.iter().map(|i| i.row.dup_key).collect();
        let unique_keys: Vec<i64> = dup_keys
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let suspects = tx.sql.duplicate_suspects(&unique_keys).await?;

        let new_rows: Vec<NewRow<'_>> = to_mint
            .iter()
            .map(|&i| NewRow {
                kind: rows::KIND_ISSUE,
                values: &items[i].row,
                replaces: None,
            })
            .collect();
        let minted = mint(policy, &mut tx, &new_rows).await?;
        let mut number_of: HashMap<usize, PersonalId> = HashMap::new();
        for (&i, id) in to_mint.iter().zip(&minted) {
            number_of.insert(i, *id);
            tx.audit.push(Entry {
                seq: 0,
                at_micros: tx.now,
                action: "issue",
                personal_id: id_i64(*id),
                related_id: None,
                request_id: items[i].row.request_id().to_owned(),
                detail: items[i].row.hash().to_owned(),
            });
        }
        let now = tx.now;
        let touched = finish(tx).await?;
        report_buckets(policy, &touched);

        // Twins in the same group warn each other, in order of arrival.
        let mut seen_in_group: HashMap<i64, Vec<PersonalId>> = HashMap::new();
        let issue_time = rows::from_micros(now)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, plan) in plans.into_iter().enumerate() {
            let dup = dup_keys[i];
            let result = match plan {
                Plan::Done(e) => Err(e),
                Plan::New => {
                    let id = number_of[&i];
                    let mut s: Vec<PersonalId> = suspects.get(&dup).cloned().unwrap_or_default();
                    let group = seen_in_group.entry(dup).or_default();
                    s.extend(group.iter().copied());
                    group.push(id);
                    Ok(Issued {
                        personal_id: id,
                        newly_issued: true,
                        issue_time,
                        duplicate_suspects: s,
                    })
                }
                Plan::SameAs(j) => match number_of.get(&j) {
                    Some(&id) => Ok(Issued {
                        personal_id: id,
                        newly_issued: false,
                        issue_time,
                        duplicate_suspects: Vec::new(),
                    }),
                    // The first item with this key failed; so does this one.
                    None => Err(IssueError::BucketExhausted),
                },
                Plan::Replay(id, at) => Ok(Issued {
                    personal_id: id,
                    newly_issued: false,
                    issue_time: rows::from_micros(at)?,
                    duplicate_suspects: suspects
                        .get(&dup)
                        .map(|v| v.iter().copied().filter(|s| *s != id).collect())
                        .unwrap_or_default(),
                }),
            };
            out.push(result);
        }
        Ok(out)
    }

    async fn commit_reissue(&mut self, req: &ReissueRequest) -> Result<Reissued, ReissueError> {
        let started = Instant::now();
        let mut last = ReissueError::Unavailable("write conflict; retry".into());
        for _ in 0..ATTEMPTS {
            let result = bounded(self.timeout, async {
                match self.reissue_tx(req).await {
                    Ok(r) => Ok(Some(r)),
                    Err(TxError::Retry) => Ok(None),
                    Err(TxError::Store(e)) => Err(e),
                }
            })
            .await;
            match result {
                Ok(Some(r)) => {
                    metrics::histogram!("population_registry_write_transaction_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if matches!(r, Ok(ref ok) if ok.newly_issued) {
                        metrics::counter!("population_registry_numbers_issued_total").increment(1);
                    }
                    return r;
                }
                Ok(None) => {}
                Err(e) => {
                    if let StoreError::Unexpected(cause) = &e {
                        tracing::error!(
                            error = format!("{cause:#}"),
                            "re-issue transaction failed"
                        );
                        last = ReissueError::Unexpected(anyhow::anyhow!("re-issue failed"));
                    } else {
                        last = e.into();
                    }
                    break;
                }
            }
        }
        Err(last)
    }

    async fn reissue_tx(
        &mut self,
        req: &ReissueRequest,
    ) -> Result<Result<Reissued, ReissueError>, TxError> {
        let policy = self.policy;
        let mut tx = self.begin().await?;
        let existing = tx.sql.existing_keys(&[req.request_id.as_str()]).await?;
        let stored = existing.get(req.request_id.as_str());
        if let Some(refused) = &req.refused_if_new
            && stored.is_none_or(|key| key.hash != req.hash.as_str())
        {
            // Not served before with this content: as a new re-issue it is invalid.
            return Ok(Err(ReissueError::Invalid(refused.clone())));
        }
        if let Some(key) = stored {
            if key.hash != req.hash.as_str() {
                return Ok(Err(ReissueError::IdempotencyKeyReused));
            }
            let Some(cancelled) = key.replaces else {
                return Ok(Err(ReissueError::IdempotencyKeyReused));
            };
            return Ok(Ok(Reissued {
                personal_id: key.personal_id,
                cancelled,
                newly_issued: false,
                issue_time: rows::from_micros(key.issue_time)?,
            }));
        }
        let Some(old_status) = tx.sql.status(req.old).await? else {
            return Ok(Err(ReissueError::NotFound));
        };
        if old_status != rows::STATUS_ACTIVE {
            return Ok(Err(ReissueError::AlreadyCancelled));
        }
        let bucket = req.record.bucket();
        if bucket == req.old.bucket() {
            return Ok(Err(ReissueError::NothingToReissue));
        }
        tx.load_buckets(&[bucket]).await?;
        if tx.bucket_before[&bucket] >= u64::from(policy.capacity()) {
            return Ok(Err(ReissueError::BucketExhausted));
        }
        tx.bucket_delta.insert(bucket, 1);
        let values = RowValues::new(req.request_id.as_str(), &req.hash, &req.record);
        let row = NewRow {
            kind: rows::KIND_REISSUE,
            values: &values,
            replaces: Some(req.old),
        };
        let new_id = mint(policy, &mut tx, &[row]).await?[0];
        tx.sql.cancel(req.old, new_id, tx.now).await?;
        let (now, rid) = (tx.now, req.request_id.as_str().to_owned());
        tx.audit.push(Entry {
            seq: 0,
            at_micros: now,
            action: "cancel",
            personal_id: id_i64(req.old),
            related_id: Some(id_i64(new_id)),
            request_id: rid.clone(),
            detail: req.reason.as_str().to_owned(),
        });
        tx.audit.push(Entry {
            seq: 0,
            at_micros: now,
            action: "reissue",
            personal_id: id_i64(new_id),
            related_id: Some(id_i64(req.old)),
            request_id: rid,
            detail: req.hash.as_str().to_owned(),
        });
        let touched = finish(tx).await?;
        report_buckets(policy, &touched);
        Ok(Ok(Reissued {
            personal_id: new_id,
            cancelled: req.old,
            newly_issued: true,
            issue_time: rows::from_micros(now)?,
        }))
    }
}

/// Assigns a fresh number to every row and inserts it. Capacity was
/// checked by the caller, so a free suffix exists for each.
async fn mint<T: WriteTx>(
    policy: BucketPolicy,
    tx: &mut Tx<T>,
    rows_in: &[NewRow<'_>],
) -> Result<Vec<PersonalId>, TxError> {
    let capacity = policy.capacity();
    let mut taken: HashMap<BucketKey, HashSet<u32>> = HashMap::new();
    let mut free_lists: HashMap<BucketKey, Vec<u32>> = HashMap::new();
    let mut assigned: Vec<Option<PersonalId>> = vec![None; rows_in.len()];
    let mut pending: Vec<usize> = (0..rows_in.len()).collect();
    let mut need: HashMap<BucketKey, usize> = HashMap::new();
    for r in rows_in {
        *need.entry(r.values.bucket).or_default() += 1;
    }
    let mut round = 0;
    while !pending.is_empty() {
        let mut candidates = Vec::with_capacity(pending.len());
        for &i in &pending {
            let b = rows_in[i].values.bucket;
            let before = tx.bucket_before.get(&b).copied().unwrap_or(0);
            let enumerate =
                round >= RANDOM_ROUNDS || policy.should_enumerate(before + need[&b] as u64);
            let suffix = if enumerate {
                if let std::collections::hash_map::Entry::Vacant(slot) = free_lists.entry(b) {
                    let mut used = tx.sql.used_suffixes(b).await?;
                    used.extend(taken.get(&b).into_iter().flatten().copied());
                    slot.insert(pick_free(capacity, &used, need[&b]));
                }
                free_lists.get_mut(&b).and_then(Vec::pop).ok_or_else(|| {
                    StoreError::Unexpected(anyhow::anyhow!(
                        "bucket counter out of step with its numbers"
                    ))
                })?
            } else {
                draw(capacity, taken.entry(b).or_default())
            };
            taken.entry(b).or_default().insert(suffix);
            candidates.push((i, b.number(suffix)));
        }
        let inserted = tx.sql.insert_citizens(tx.now, rows_in, &candidates).await?;
        pending.clear();
        for (i, id) in candidates {
            if inserted.contains(&id) {
                assigned[i] = Some(id);
            } else {
                // Taken by an earlier commit: it stays in `taken`, draw again.
                pending.push(i);
            }
        }
        round += 1;
        if round > RANDOM_ROUNDS + 2 {
            return Err(TxError::Store(StoreError::Unexpected(anyhow::anyhow!(
                "could not place numbers in their buckets"
            ))));
        }
    }
    Ok(assigned.into_iter().flatten().collect())
}

/// Appends the audit entries, moves the chain head, updates bucket
/// counts, commits. Returns the touched buckets with their new counts.
async fn finish<T: WriteTx>(mut tx: Tx<T>) -> Result<Vec<(BucketKey, u64, u64)>, TxError> {
    let mut seq = tx.head_seq;
    for e in &mut tx.audit {
        seq += 1;
        e.seq = seq;
    }
    if !tx.audit.is_empty() {
        let mut prev = tx.head_hash.clone();
        tx.sql.append_audit(&tx.audit, &mut prev).await?;
        tx.sql.set_head(seq, &prev).await?;
    }
    let deltas: Vec<(BucketKey, u64)> = tx
        .bucket_delta
        .iter()
        .filter(|(_, d)| **d > 0)
        .map(|(b, d)| (*b, *d))
        .collect();
    tx.sql.add_to_buckets(&deltas).await?;
    let touched = deltas
        .into_iter()
        .map(|(b, d)| {
            let before = tx.bucket_before.get(&b).copied().unwrap_or(0);
            (b, before, before + d)
        })
        .collect();
    tx.sql.commit().await?;
    Ok(touched)
}

/// Exports the fill of touched buckets and logs those crossing the line.
fn report_buckets(policy: BucketPolicy, touched: &[(BucketKey, u64, u64)]) {
    for &(b, before, after) in touched {
        if !policy.is_exported(after) {
            continue;
        }
        let fill = policy.fill(after);
        metrics::gauge!(
            "population_registry_bucket_fill_ratio",
            "province" => b.province().to_string(),
            "year" => b.birth_year().to_string(),
            "sex" => sex_str(b.sex()),
        )
        .set(fill);
        if policy.crosses_warning(before, after) {
            tracing::warn!(
                province = %b.province(),
                year = b.birth_year(),
                sex = sex_str(b.sex()),
                issued = after,
                capacity = policy.capacity(),
                "number bucket is nearly full"
            );
        }
    }
}
