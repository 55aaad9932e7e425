//! The single writer task: it takes every issuance queued while the previous
//! transaction was committing and commits them together (group commit), with
//! multi-row INSERTs. Each transaction first locks the audit chain head, which
//! serialises writers across replicas sharing one PostgreSQL, so idempotency
//! lookups, bucket counts and draws inside it see every earlier commit. The
//! primary key on the number stays the last guarantee: a conflicting draw is
//! simply drawn again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::{Any, AnyPool, Row as _, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::domain::birth::{BirthRecord, ContentHash, sex_str};
use crate::domain::citizen::{IssueRequest, Issued, ReissueRequest, Reissued};
use crate::domain::errors::{IssueError, ReissueError, StoreError};
use crate::domain::minting::{BucketPolicy, draw, pick_free};
use crate::domain::personal_id::{BucketKey, PersonalId};

use super::audit::{Entry, chain_hash};
use super::rows::{self, id_from_i64, id_i64};
use super::{Backend, bounded, classify};

/// Where the outcomes of one `Issue` command go.
type IssueReply = oneshot::Sender<Result<Vec<Result<Issued, IssueError>>, StoreError>>;

/// Work for the writer.
pub(crate) enum WriteCmd {
    /// First issuances; one outcome per item.
    Issue {
        items: Vec<IssueRequest>,
        reply: IssueReply,
    },
    /// One re-issue.
    Reissue {
        req: ReissueRequest,
        reply: oneshot::Sender<Result<Reissued, ReissueError>>,
    },
}

/// Most rows per multi-row INSERT: 23,000 parameters for citizens, below
/// SQLite's 32,766 and PostgreSQL's 65,535. Few large statements keep the
/// per-statement cost of the driver off the per-number budget.
const INSERT_CHUNK: usize = 1000;
/// Most parameters per IN list.
const IN_CHUNK: usize = 2048;

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
/// Candidates from which taken numbers are looked up before the INSERT.
const LOOKUP_BEFORE_INSERT_MIN: usize = 256;
/// Random rounds before a bucket's free suffixes are enumerated instead.
const RANDOM_ROUNDS: usize = 6;
/// Longest wait for more work when the previous group was large.
const LINGER: Duration = Duration::from_millis(1);
/// Group size from which the writer lingers (below it, callers are few and
/// latency matters more than grouping).
const LINGER_MIN_GROUP: usize = 8;
/// Attempts of a transaction that lost a race to another replica.
const ATTEMPTS: usize = 3;

pub(crate) struct Writer {
    pool: AnyPool,
    backend: Backend,
    policy: BucketPolicy,
    max_group_items: usize,
    timeout: Duration,
}

/// A citizen row about to be inserted.
struct NewRow<'a> {
    request_id: &'a str,
    hash: &'a ContentHash,
    kind: i64,
    record: &'a BirthRecord,
    replaces: Option<PersonalId>,
    /// `record.duplicate_key()`, which the group computed for its suspect lookup.
    dup_key: i64,
}

/// An idempotency key already stored.
struct KeyRow {
    hash: String,
    personal_id: PersonalId,
    issue_time: i64,
    replaces: Option<PersonalId>,
}

/// A transaction holding the chain head, with the entries it will append.
struct Tx {
    tx: Transaction<'static, Any>,
    backend: Backend,
    head_seq: i64,
    head_hash: String,
    audit: Vec<Entry>,
    now: i64,
    bucket_delta: HashMap<BucketKey, u64>,
    bucket_before: HashMap<BucketKey, u64>,
}

fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // unique violation on the idempotency key (a replica's concurrent
            // insert), serialization failure, deadlock.
            matches!(code.as_ref(), "23505" | "40001" | "40P01" | "2067" | "1555")
        }
        _ => false,
    }
}

enum TxError {
    Retry,
    Store(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        if is_retryable(&e) {
            Self::Retry
        } else {
            Self::Store(classify(e))
        }
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Writer {
    pub(crate) fn new(
        pool: AnyPool,
        backend: Backend,
        policy: BucketPolicy,
        max_group_items: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            pool,
            backend,
            policy,
            max_group_items: max_group_items.max(1),
            timeout,
        }
    }

    /// Serves the queue until every sender is gone.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<WriteCmd>) {
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
        }
    }

    async fn commit_issues(&self, cmds: Vec<(Vec<IssueRequest>, IssueReply)>) {
        let items: Vec<&IssueRequest> = cmds.iter().flat_map(|(items, _)| items.iter()).collect();
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
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                if let StoreError::Unexpected(cause) = &e {
                    tracing::error!(error = format!("{cause:#}"), "issuance transaction failed");
                }
                for (_, reply) in cmds {
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

    async fn begin(&self) -> Result<Tx, TxError> {
        let mut tx = match self.backend {
            // IMMEDIATE takes the write lock now, so a second process on the
            // same file waits (busy_timeout) instead of failing on upgrade.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        if self.backend == Backend::Postgres {
            // The writer only looks rows up by key. Without statistics (autovacuum off,
            // or before its first ANALYZE) the planner takes each value of an IN list to
            // match 0.5% of the table, and chose a parallel scan of every citizen for a
            // group's 2,048 duplicate keys.
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await?;
        }
        let sql = match self.backend {
            Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        };
        let head = sqlx::query(sql).fetch_one(&mut *tx).await?;
        Ok(Tx {
            backend: self.backend,
            head_seq: head.try_get(0)?,
            head_hash: head.try_get(1)?,
            tx,
            audit: Vec::new(),
            now: rows::micros(Utc::now()),
            bucket_delta: HashMap::new(),
            bucket_before: HashMap::new(),
        })
    }

    async fn issue_tx(
        &self,
        items: &[&IssueRequest],
    ) -> Result<Vec<Result<Issued, IssueError>>, TxError> {
        let mut tx = self.begin().await?;
        let ids: Vec<&str> = items.iter().map(|i| i.request_id.as_str()).collect();
        let existing = existing_keys(&mut tx, &ids).await?;

        enum Plan {
            Replay(PersonalId, i64),
            SameAs(usize),
            New,
            Done(IssueError),
        }
        let mut plans = Vec::with_capacity(items.len());
        let mut first_in_group: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let rid = item.request_id.as_str();
            let plan = if let Some(key) = existing.get(rid) {
                if key.hash == item.hash.as_str() {
                    Plan::Replay(key.personal_id, key.issue_time)
                } else {
                    Plan::Done(IssueError::IdempotencyKeyReused)
                }
            } else if let Some(&j) = first_in_group.get(rid) {
                if items[j].hash == item.hash {
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
        let buckets: Vec<BucketKey> = new_idx.iter().map(|&i| items[i].record.bucket()).collect();
        load_buckets(&mut tx, &buckets).await?;
        let capacity = u64::from(self.policy.capacity());
        let mut to_mint = Vec::new();
        for &i in &new_idx {
            let b = items[i].record.bucket();
            let used = tx.bucket_before[&b] + tx.bucket_delta.get(&b).copied().unwrap_or(0);
            if used >= capacity {
                plans[i] = Plan::Done(IssueError::BucketExhausted);
            } else {
                *tx.bucket_delta.entry(b).or_default() += 1;
                to_mint.push(i);
            }
        }

        // Duplicate suspects among existing active citizens, before inserting.
        let dup_keys: Vec<i64> = items.iter().map(|i| i.record.duplicate_key()).collect();
        let suspects = duplicate_suspects(&mut tx, &dup_keys).await?;

        let new_rows: Vec<NewRow<'_>> = to_mint
            .iter()
            .map(|&i| NewRow {
                request_id: items[i].request_id.as_str(),
                hash: &items[i].hash,
                kind: rows::KIND_ISSUE,
                record: &items[i].record,
                replaces: None,
                dup_key: dup_keys[i],
            })
            .collect();
        let minted = self.mint(&mut tx, &new_rows).await?;
        let mut number_of: HashMap<usize, PersonalId> = HashMap::new();
        for (&i, id) in to_mint.iter().zip(&minted) {
            number_of.insert(i, *id);
            tx.audit.push(Entry {
                seq: 0,
                at_micros: tx.now,
                action: "issue",
                personal_id: id_i64(*id),
                related_id: None,
                request_id: items[i].request_id.as_str().to_owned(),
                detail: items[i].hash.as_str().to_owned(),
            });
        }
        let now = tx.now;
        let touched = self.finish(tx).await?;
        self.report_buckets(&touched);

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

    async fn commit_reissue(&self, req: &ReissueRequest) -> Result<Reissued, ReissueError> {
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
        &self,
        req: &ReissueRequest,
    ) -> Result<Result<Reissued, ReissueError>, TxError> {
        let mut tx = self.begin().await?;
        let existing = existing_keys(&mut tx, &[req.request_id.as_str()]).await?;
        if let Some(key) = existing.get(req.request_id.as_str()) {
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
        let old = sqlx::query("SELECT status FROM citizens WHERE personal_id = $1")
            .bind(id_i64(req.old))
            .fetch_optional(&mut *tx.tx)
            .await?;
        let Some(old) = old else {
            return Ok(Err(ReissueError::NotFound));
        };
        if old.try_get::<i64, _>(0)? != rows::STATUS_ACTIVE {
            return Ok(Err(ReissueError::AlreadyCancelled));
        }
        let bucket = req.record.bucket();
        if bucket == req.old.bucket() {
            return Ok(Err(ReissueError::NothingToReissue));
        }
        load_buckets(&mut tx, &[bucket]).await?;
        if tx.bucket_before[&bucket] >= u64::from(self.policy.capacity()) {
            return Ok(Err(ReissueError::BucketExhausted));
        }
        tx.bucket_delta.insert(bucket, 1);
        let row = NewRow {
            request_id: req.request_id.as_str(),
            hash: &req.hash,
            kind: rows::KIND_REISSUE,
            record: &req.record,
            replaces: Some(req.old),
            dup_key: req.record.duplicate_key(),
        };
        let new_id = self.mint(&mut tx, &[row]).await?[0];
        sqlx::query(
            "UPDATE citizens SET status = $1, cancel_time = $2, replaced_by = $3 \
             WHERE personal_id = $4",
        )
        .bind(rows::STATUS_CANCELLED)
        .bind(tx.now)
        .bind(id_i64(new_id))
        .bind(id_i64(req.old))
        .execute(&mut *tx.tx)
        .await?;
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
        let touched = self.finish(tx).await?;
        self.report_buckets(&touched);
        Ok(Ok(Reissued {
            personal_id: new_id,
            cancelled: req.old,
            newly_issued: true,
            issue_time: rows::from_micros(now)?,
        }))
    }

    /// Assigns a fresh number to every row and inserts it. Capacity was
    /// checked by the caller, so a free suffix exists for each.
    async fn mint(&self, tx: &mut Tx, rows_in: &[NewRow<'_>]) -> Result<Vec<PersonalId>, TxError> {
        let capacity = self.policy.capacity();
        let mut taken: HashMap<BucketKey, HashSet<u32>> = HashMap::new();
        let mut free_lists: HashMap<BucketKey, Vec<u32>> = HashMap::new();
        let mut assigned: Vec<Option<PersonalId>> = vec![None; rows_in.len()];
        let mut pending: Vec<usize> = (0..rows_in.len()).collect();
        let mut need: HashMap<BucketKey, usize> = HashMap::new();
        for r in rows_in {
            *need.entry(r.record.bucket()).or_default() += 1;
        }
        let mut round = 0;
        while !pending.is_empty() {
            let mut candidates = Vec::with_capacity(pending.len());
            for &i in &pending {
                let b = rows_in[i].record.bucket();
                let before = tx.bucket_before.get(&b).copied().unwrap_or(0);
                let enumerate = round >= RANDOM_ROUNDS
                    || self.policy.should_enumerate(before + need[&b] as u64);
                let suffix = if enumerate {
                    if let std::collections::hash_map::Entry::Vacant(slot) = free_lists.entry(b) {
                        let mut used = used_suffixes(tx, b).await?;
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
            let inserted = insert_rows(tx, rows_in, &candidates).await?;
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
    async fn finish(&self, mut tx: Tx) -> Result<Vec<(BucketKey, u64, u64)>, TxError> {
        let mut seq = tx.head_seq;
        for e in &mut tx.audit {
            seq += 1;
            e.seq = seq;
        }
        // Each chunk is hashed as its statement is built.
        let mut prev = tx.head_hash.clone();
        let backend = tx.backend;
        let chunks: Vec<&[Entry]> = pieces(&tx.audit, INSERT_CHUNK).collect();
        execute_chunks(&mut tx.tx, &chunks, |chunk| {
            audit_statement(backend, chunk, &mut prev)
        })
        .await?;
        if !tx.audit.is_empty() {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(prev)
                .execute(&mut *tx.tx)
                .await?;
        }
        let mut touched = Vec::new();
        let deltas: Vec<(BucketKey, u64)> = tx
            .bucket_delta
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(b, d)| (*b, *d))
            .collect();
        for chunk in pieces(&deltas, INSERT_CHUNK) {
            let sql = format!(
                "{} buckets (prefix, issued) VALUES {} ON CONFLICT (prefix) \
                 DO UPDATE SET issued = buckets.issued + excluded.issued",
                rows::insert_into(tx.backend),
                rows::placeholders(tx.backend, chunk.len(), 2)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (b, d) in chunk {
                q = q
                    .bind(prefix_i64(*b))
                    .bind(i64::try_from(*d).unwrap_or(i64::MAX));
            }
            q.execute(&mut *tx.tx).await?;
        }
        for (b, d) in deltas {
            let before = tx.bucket_before.get(&b).copied().unwrap_or(0);
            touched.push((b, before, before + d));
        }
        tx.tx.commit().await?;
        Ok(touched)
    }

    /// Exports the fill of touched buckets and logs those crossing the line.
    fn report_buckets(&self, touched: &[(BucketKey, u64, u64)]) {
        for &(b, before, after) in touched {
            let fill = self.policy.fill(after);
            metrics::gauge!(
                "population_registry_bucket_fill_ratio",
                "province" => b.province().to_string(),
                "year" => b.birth_year().to_string(),
                "sex" => sex_str(b.sex()),
            )
            .set(fill);
            if self.policy.crosses_warning(before, after) {
                tracing::warn!(
                    province = %b.province(),
                    year = b.birth_year(),
                    sex = sex_str(b.sex()),
                    issued = after,
                    capacity = self.policy.capacity(),
                    "number bucket is nearly full"
                );
            }
        }
    }
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
    backend: Backend,
    chunk: &[Entry],
    prev: &mut String,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "{} audit_log (seq, at_micros, action, personal_id, related_id, \
         request_id, detail, prev_hash, hash) VALUES {}",
        rows::insert_into(backend),
        rows::placeholders(backend, chunk.len(), 9)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in chunk {
        let hash = chain_hash(prev, e);
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

fn prefix_i64(b: BucketKey) -> i64 {
    i64::try_from(b.prefix()).unwrap_or(i64::MAX)
}

async fn existing_keys(tx: &mut Tx, ids: &[&str]) -> Result<HashMap<String, KeyRow>, TxError> {
    let mut out = HashMap::new();
    let unique: Vec<&str> = ids
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in in_lists(&unique, IN_CHUNK) {
        let sql = format!(
            "SELECT request_id, content_hash, personal_id, issue_time, replaces FROM citizens \
             WHERE request_id IN ({})",
            rows::list(tx.backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &chunk {
            q = q.bind((*id).to_owned());
        }
        for row in q.fetch_all(&mut *tx.tx).await? {
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

/// Loads the current counts of `buckets` (0 for a bucket never used).
async fn load_buckets(tx: &mut Tx, buckets: &[BucketKey]) -> Result<(), TxError> {
    let unique: Vec<BucketKey> = buckets
        .iter()
        .copied()
        .filter(|b| !tx.bucket_before.contains_key(b))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in in_lists(&unique, IN_CHUNK) {
        let sql = format!(
            "SELECT prefix, issued FROM buckets WHERE prefix IN ({})",
            rows::list(tx.backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in &chunk {
            q = q.bind(prefix_i64(*b));
        }
        let mut found = HashMap::new();
        for row in q.fetch_all(&mut *tx.tx).await? {
            let prefix: i64 = row.try_get(0)?;
            let issued: i64 = row.try_get(1)?;
            found.insert(prefix, u64::try_from(issued).unwrap_or(0));
        }
        for b in &chunk {
            tx.bucket_before
                .insert(*b, found.get(&prefix_i64(*b)).copied().unwrap_or(0));
        }
    }
    Ok(())
}

/// Active citizens per duplicate key.
async fn duplicate_suspects(
    tx: &mut Tx,
    keys: &[i64],
) -> Result<HashMap<i64, Vec<PersonalId>>, TxError> {
    let unique: Vec<i64> = keys
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut out: HashMap<i64, Vec<PersonalId>> = HashMap::new();
    for chunk in in_lists(&unique, IN_CHUNK) {
        let sql = format!(
            "SELECT dup_key, personal_id FROM citizens WHERE dup_key IN ({}) AND status = 1 \
             ORDER BY personal_id",
            rows::list(tx.backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in &chunk {
            q = q.bind(*k);
        }
        for row in q.fetch_all(&mut *tx.tx).await? {
            out.entry(row.try_get(0)?)
                .or_default()
                .push(id_from_i64(row.try_get(1)?)?);
        }
    }
    Ok(out)
}

/// Every suffix already used in bucket `b`.
async fn used_suffixes(tx: &mut Tx, b: BucketKey) -> Result<HashSet<u32>, TxError> {
    let lo = b.first_number();
    let hi = lo + 999_999;
    let found = sqlx::query(
        "SELECT personal_id FROM citizens WHERE personal_id >= $1 AND personal_id <= $2",
    )
    .bind(i64::try_from(lo).unwrap_or(i64::MAX))
    .bind(i64::try_from(hi).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx.tx)
    .await?;
    let mut used = HashSet::with_capacity(found.len());
    for row in found {
        used.insert(id_from_i64(row.try_get(0)?)?.suffix());
    }
    Ok(used)
}

/// Which of the candidates' numbers are already in the table.
async fn numbers_in_use(
    tx: &mut Tx,
    candidates: &[(usize, PersonalId)],
) -> Result<HashSet<PersonalId>, TxError> {
    let mut out = HashSet::new();
    for chunk in in_lists(candidates, IN_CHUNK) {
        let sql = format!(
            "SELECT personal_id FROM citizens WHERE personal_id IN ({})",
            rows::list(tx.backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &(_, id) in &chunk {
            q = q.bind(id_i64(id));
        }
        for row in q.fetch_all(&mut *tx.tx).await? {
            out.insert(id_from_i64(row.try_get(0)?)?);
        }
    }
    Ok(out)
}

/// The multi-row INSERT of one chunk of candidate rows.
fn insert_statement<'q>(
    backend: Backend,
    now: i64,
    rows_in: &[NewRow<'_>],
    chunk: &[(usize, PersonalId)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "{} citizens ({}) VALUES {} ON CONFLICT (personal_id) DO NOTHING",
        rows::insert_into(backend),
        rows::INSERT_COLUMNS,
        rows::placeholders(backend, chunk.len(), rows::INSERT_COLUMN_COUNT)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, id) in chunk {
        let r = &rows_in[*i];
        let rec = r.record;
        let reg = &rec.registration;
        q = q
            .bind(id_i64(*id))
            .bind(r.request_id.to_owned())
            .bind(r.hash.as_str().to_owned())
            .bind(r.kind)
            .bind(rows::STATUS_ACTIVE)
            .bind(now)
            .bind(r.replaces.map(id_i64))
            .bind(rec.full_name.as_str().to_owned())
            .bind(rows::sex_code(rec.sex))
            .bind(rec.date_of_birth.to_string())
            .bind(rec.place_of_birth.as_str().to_owned())
            .bind(
                rec.place_of_birth_province
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            )
            .bind(rec.registration_province.to_string())
            .bind(rec.home_town.as_str().to_owned())
            .bind(rec.ethnicity.as_str().to_owned())
            .bind(rec.nationality.as_str().to_owned())
            .bind(rows::parent_json(&rec.father))
            .bind(rows::parent_json(&rec.mother))
            .bind(reg.unit_code.as_str().to_owned())
            .bind(reg.registration_number)
            .bind(reg.book_number.as_str().to_owned())
            .bind(reg.registration_date.to_string())
            .bind(r.dup_key);
    }
    q
}

/// Inserts the candidate rows, skipping numbers already taken; returns the
/// numbers actually inserted.
async fn insert_rows(
    tx: &mut Tx,
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
    // more round trip to the database thread.
    let taken = if candidates.len() >= LOOKUP_BEFORE_INSERT_MIN {
        numbers_in_use(tx, candidates).await?
    } else {
        HashSet::new()
    };
    let free: Vec<(usize, PersonalId)> = candidates
        .iter()
        .copied()
        .filter(|(_, id)| !taken.contains(id))
        .collect();
    let (backend, now) = (tx.backend, tx.now);
    let chunks: Vec<&[(usize, PersonalId)]> = pieces(&free, INSERT_CHUNK).collect();
    let affected = execute_chunks(&mut tx.tx, &chunks, |chunk| {
        insert_statement(backend, now, rows_in, chunk)
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
            rows::list(tx.backend, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &(_, id) in chunk {
            q = q.bind(id_i64(id));
        }
        let mine: HashMap<PersonalId, &str> = chunk
            .iter()
            .map(|&(i, id)| (id, rows_in[i].request_id))
            .collect();
        for row in q.fetch_all(&mut *tx.tx).await? {
            let id = id_from_i64(row.try_get(0)?)?;
            let key: String = row.try_get(1)?;
            if mine.get(&id).is_some_and(|k| *k == key) {
                inserted.insert(id);
            }
        }
    }
    Ok(inserted)
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
