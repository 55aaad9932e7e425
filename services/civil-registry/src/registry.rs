//! The use cases behind the RPCs: authentication, policy, the grouped writer of
//! RegisterBirth, waiting for numbers, reads, corrections and statistics. Handlers call one
//! method each; SQL stays in `store`, rules in `domain`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::config::{AuthConfig, RegistrationConfig};
use crate::domain::eligibility::decide;
use crate::domain::error::{AuthFailure, Denied, RegistryError};
use crate::domain::model::{
    Caller, Correction, NewBirth, PersonalIdStatus, Registration, Unit, UnitLevel,
};
use crate::domain::policy;
use crate::domain::population::Outbound;
use crate::relay::Waiters;
use crate::store::{
    Completion, GroupWriter, InsertOutcome, Lease, ListFilter, NewRow, PageCursor, SqliteWriter,
    StatsGrouping, StatsRow, Store, is_unavailable, now_ms, write_group,
};

/// Log target of security-relevant refusals (ids only).
pub const SECURITY_TARGET: &str = "security";

/// SHA-256 of a bearer token, hex: the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh bearer token: 32 random bytes from the OS-seeded CSPRNG, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn db_error(e: sqlx::Error) -> RegistryError {
    if is_unavailable(&e) {
        RegistryError::Unavailable(e.into())
    } else {
        RegistryError::Unexpected(e.into())
    }
}

type InsertReply = oneshot::Sender<Result<(InsertOutcome, Option<Registration>), RegistryError>>;

/// Work for the writer's next group commit.
enum WriteJob {
    /// A RegisterBirth.
    Register { row: NewRow, reply: InsertReply },
    /// Relay outcomes to write back (joined to the next group commit rather than a
    /// transaction of their own).
    Complete {
        completions: Vec<Completion>,
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
}

/// The in-memory path from the writer to this process's relay: eligible registrations'
/// outbox rows are committed already leased to the relay and handed over right after the
/// commit, each with its lease end.
#[derive(Clone, Debug)]
pub struct Handoff {
    /// To the relay.
    pub tx: mpsc::Sender<(Outbound, i64)>,
    /// The relay's lease owner name.
    pub owner: String,
    /// Lease length.
    pub lease_ms: i64,
}

/// The relay's way to write outcomes back through the writer's group commit.
#[derive(Clone, Debug)]
pub struct WriteBack {
    writer: mpsc::Sender<WriteJobBox>,
    commit_timeout: Duration,
}

impl WriteBack {
    /// Writes relay outcomes back in the writer's next group commit; returns once durable
    /// (the waiters of settled registrations are woken by then). Past the commit timeout
    /// the relay moves on: the rows stay leased, and once the lease ends they are sent
    /// again and answered with the same numbers.
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<(), RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Box::new(WriteJob::Complete { completions, reply }))
            .await
            .map_err(|_| writer_stopped())?;
        committed_within(self.commit_timeout, answer).await?
    }
}

fn writer_stopped() -> RegistryError {
    RegistryError::Unavailable(anyhow::anyhow!("the writer has stopped"))
}

/// The writer's answer, or UNAVAILABLE when it does not come within `patience` (a
/// database that stopped answering, a lock another session holds).
async fn committed_within<T>(
    patience: Duration,
    answer: oneshot::Receiver<T>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(patience, answer).await {
        Ok(answer) => answer.map_err(|_| writer_stopped()),
        Err(_) => Err(RegistryError::Unavailable(anyhow::anyhow!(
            "the commit did not complete within registration.commit_timeout_ms ({} ms)",
            patience.as_millis()
        ))),
    }
}

/// Filters of a list call, validated.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Page size, 1..=1000.
    pub page_size: i64,
    /// Where the previous page ended.
    pub after: Option<PageCursor>,
    /// Only this unit.
    pub unit_code: Option<String>,
    /// Only this province.
    pub province_code: Option<String>,
    /// From (inclusive).
    pub from: Option<NaiveDate>,
    /// To (inclusive).
    pub to: Option<NaiveDate>,
    /// Only this status.
    pub status: Option<PersonalIdStatus>,
}

/// A statistics row with its group's name.
#[derive(Clone, Debug, Default)]
pub struct NamedStatsRow {
    /// Name of the province or unit.
    pub name: String,
    /// Counts.
    pub row: StatsRow,
}

/// Callers of recently checked tokens, by token hash. Only tokens found valid are kept, so
/// a new official's token works at once; a revoked one is refused once its entry expires.
#[derive(Debug)]
struct TokenCache {
    ttl: Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (Caller, Instant)>>,
}

/// Entries kept at most (far above the number of officials of a province); past it the
/// cache starts again empty rather than growing without bound.
const TOKEN_CACHE_MAX: usize = 100_000;

impl TokenCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::default(),
        }
    }

    /// The caller cached for `hash`, if it was checked less than the TTL before `now`.
    fn get(&self, hash: &str, now: Instant) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, checked_at)| now.saturating_duration_since(*checked_at) < self.ttl)
            .map(|(caller, _)| caller.clone())
    }

    /// Records that `hash` was checked against the database at `now`.
    fn put(&self, hash: String, caller: &Caller, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (caller.clone(), now));
    }
}

/// The birth register's use cases.
#[derive(Clone, Debug)]
pub struct Registry {
    store: Store,
    writer: mpsc::Sender<WriteJobBox>,
    waiters: Arc<Waiters>,
    wake: Arc<Notify>,
    wait_for_number: Duration,
    commit_timeout: Duration,
    tokens: Arc<TokenCache>,
}

/// Boxed so the channel's element is small.
type WriteJobBox = Box<WriteJob>;

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Register { row, .. } => f
                .debug_struct("Register")
                .field("id", &row.id)
                .finish_non_exhaustive(),
            Self::Complete { completions, .. } => f
                .debug_struct("Complete")
                .field("items", &completions.len())
                .finish_non_exhaustive(),
        }
    }
}

impl Registry {
    /// Starts the writer: on SQLite a thread of its own driving `sqlite_writer`, on
    /// PostgreSQL a task on the pool. It ends when every `Registry` clone is dropped; the
    /// handle resolves once it has.
    pub async fn start(
        store: Store,
        sqlite_writer: Option<SqliteWriter>,
        cfg: &RegistrationConfig,
        auth: &AuthConfig,
        waiters: Arc<Waiters>,
        wake: Arc<Notify>,
        handoff: Option<Handoff>,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(cfg.writer_queue.max(1));
        let group = GroupLoop {
            rx,
            max: cfg.writer_batch_max.max(1),
            wake: wake.clone(),
            waiters: waiters.clone(),
            handoff,
        };
        let writer = match sqlite_writer {
            Some(sqlite) => spawn_sqlite_writer(sqlite, group).await?,
            None => {
                let pool = store.clone();
                tokio::spawn(async move { group.run(pool).await })
            }
        };
        let registry = Self {
            store,
            writer: tx,
            waiters,
            wake,
            wait_for_number: Duration::from_millis(cfg.wait_for_number_ms),
            commit_timeout: Duration::from_millis(cfg.commit_timeout_ms.max(1)),
            tokens: Arc::new(TokenCache::new(Duration::from_millis(auth.token_cache_ms))),
        };
        Ok((registry, writer))
    }

    /// The relay's path into the writer's group commits.
    pub fn write_back(&self) -> WriteBack {
        WriteBack {
            writer: self.writer.clone(),
            commit_timeout: self.commit_timeout,
        }
    }

    /// The caller behind a bearer token.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, RegistryError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            tracing::warn!(target: SECURITY_TARGET, reason = "TOKEN_MISSING", "unauthenticated call");
            return Err(RegistryError::Unauthenticated(AuthFailure::TokenMissing));
        };
        let hash = token_hash(token);
        // Taken before the lookup, so an entry never outlives its TTL from the check.
        let checked_at = Instant::now();
        if let Some(caller) = self.tokens.get(&hash, checked_at) {
            return Ok(caller);
        }
        match self
            .store
            .caller_by_token_hash(&hash)
            .await
            .map_err(db_error)?
        {
            Some(caller) => {
                self.tokens.put(hash, &caller, checked_at);
                Ok(caller)
            }
            None => {
                tracing::warn!(target: SECURITY_TARGET, reason = "TOKEN_INVALID", "unauthenticated call");
                Err(RegistryError::Unauthenticated(AuthFailure::TokenInvalid))
            }
        }
    }

    fn deny(caller: &Caller, action: &'static str, denied: Denied) -> RegistryError {
        tracing::warn!(target: SECURITY_TARGET, official_id = %caller.official_id, unit = %caller.unit.code, action, reason = ?denied, "permission denied");
        RegistryError::PermissionDenied(denied)
    }

    /// RegisterBirth: policy, eligibility, one grouped durable commit, then a short wait for
    /// the number.
    pub async fn register(
        &self,
        caller: &Caller,
        birth: NewBirth,
    ) -> Result<Registration, RegistryError> {
        policy::may_register(
            caller,
            birth.record.has_foreign_element,
            birth.registered_on,
        )
        .map_err(|d| Self::deny(caller, "register", d))?;
        let decision = decide(&birth.record, birth.registered_on);
        let id = Uuid::now_v7();
        let row = NewRow::new(
            id,
            birth,
            caller.unit.clone(),
            caller.official_id.clone(),
            decision,
            self.store.numbering(),
        );
        // Subscribe before the commit: the relay may write the number back before this
        // task runs again, and the notification must not be missed.
        let mut settled = self.waiters.subscribe(id);
        let (reply, answer) = oneshot::channel();
        if self
            .writer
            .send(Box::new(WriteJob::Register { row, reply }))
            .await
            .is_err()
        {
            return Err(writer_stopped());
        }
        // Wait for the number, not for the insert's commit: the writer releases this
        // subscription as soon as it knows no number is coming (not eligible, a retry, a
        // conflict, a failed commit), so one wake-up ends the wait either way. The number
        // comes only after the insert's commit, whose answer is then ready.
        let mut number = None;
        if !self.wait_for_number.is_zero() {
            number = settled.within(self.wait_for_number).await;
        }
        // Bounded from here, after any wait for the number.
        let outcome = committed_within(self.commit_timeout, answer).await??;
        match outcome {
            (InsertOutcome::Created(_), Some(mut registration)) => {
                if registration.status == PersonalIdStatus::Pending {
                    // The wait ran out; a number written since is still taken.
                    number = number.or_else(|| settled.ready());
                }
                if let Some(settlement) = number {
                    registration.settle(settlement);
                }
                Ok(registration)
            }
            (InsertOutcome::Created(other) | InsertOutcome::Existing(other), _) => {
                // A retry: wait on the stored registration instead. A correction may have
                // moved it out of the registering unit's reach since: the retry then shows
                // it no more than GetBirthRegistration would.
                drop(settled);
                let mut settled = self.waiters.subscribe(other);
                let mut registration = self.load_within(caller, other, "register").await?;
                if registration.status == PersonalIdStatus::Pending
                    && !self.wait_for_number.is_zero()
                    && let Some(settlement) = settled.within(self.wait_for_number).await
                {
                    registration.settle(settlement);
                }
                Ok(registration)
            }
            (InsertOutcome::Conflict, _) => Err(RegistryError::IdempotencyKeyReused),
        }
    }

    async fn load(&self, id: Uuid) -> Result<Registration, RegistryError> {
        self.store
            .registration(id)
            .await
            .map_err(db_error)?
            .map(|(r, _)| r)
            .ok_or(RegistryError::NotFound)
    }

    /// Registration `id`, when its current unit is within the caller's jurisdiction.
    async fn load_within(
        &self,
        caller: &Caller,
        id: Uuid,
        action: &'static str,
    ) -> Result<Registration, RegistryError> {
        let (registration, unit) = self
            .store
            .registration(id)
            .await
            .map_err(db_error)?
            .ok_or(RegistryError::NotFound)?;
        if !policy::within_jurisdiction(caller, &unit) {
            return Err(Self::deny(caller, action, Denied::OutsideJurisdiction));
        }
        Ok(registration)
    }

    /// GetBirthRegistration.
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Registration, RegistryError> {
        policy::may_read(caller).map_err(|d| Self::deny(caller, "get", d))?;
        self.load_within(caller, id, "get").await
    }

    /// ListBirthRegistrations: one page and the cursor of the next.
    pub async fn list(
        &self,
        caller: &Caller,
        query: ListQuery,
    ) -> Result<(Vec<Registration>, Option<PageCursor>), RegistryError> {
        policy::may_read(caller).map_err(|d| Self::deny(caller, "list", d))?;
        if let Some(code) = &query.unit_code {
            let unit = self.store.unit(code).await.map_err(db_error)?;
            if !unit.is_some_and(|u| policy::within_jurisdiction(caller, &u)) {
                return Err(Self::deny(caller, "list", Denied::OutsideJurisdiction));
            }
        }
        if let Some(province) = &query.province_code {
            self.check_province(caller, province, "list")?;
        }
        let filter = ListFilter {
            jurisdiction_path: caller.unit.path.clone(),
            unit_code: query.unit_code,
            province_code: query.province_code,
            from: query.from,
            to: query.to,
            status: query.status,
            after: query.after,
            limit: query.page_size,
        };
        let (registrations, more) = self
            .store
            .list_registrations(&filter)
            .await
            .map_err(db_error)?;
        let next = more
            .then(|| {
                registrations.last().map(|r| PageCursor {
                    created_at_ms: r.created_at_ms,
                    id: r.id.to_string(),
                })
            })
            .flatten();
        Ok((registrations, next))
    }

    fn check_province(
        &self,
        caller: &Caller,
        province: &str,
        action: &'static str,
    ) -> Result<(), RegistryError> {
        if caller.unit.level != UnitLevel::Ministry
            && caller.unit.province_code.as_str() != province
        {
            return Err(Self::deny(caller, action, Denied::OutsideJurisdiction));
        }
        Ok(())
    }

    /// CorrectBirthRegistration: the corrected registration and whether a new number was
    /// requested.
    pub async fn correct(
        &self,
        caller: &Caller,
        correction: Correction,
    ) -> Result<(Registration, bool), RegistryError> {
        policy::may_correct_at_all(caller).map_err(|d| Self::deny(caller, "correct", d))?;
        let new_unit = match &correction.unit_code {
            Some(code) => Some(
                self.store
                    .unit(code.as_str())
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| RegistryError::invalid("unit_code", "is not a known unit"))?,
            ),
            None => None,
        };
        // Checked by the store against the registration's unit as its transaction reads
        // it, so that an entry moved meanwhile to another unit is judged where it now is.
        let authorize = |current: &Unit, moved_to: Option<&Unit>| {
            policy::may_correct(caller, current, moved_to)
                .map_err(|d| Self::deny(caller, "correct", d))
        };
        let reissued = self
            .store
            .correct_registration(
                &correction,
                &caller.official_id,
                new_unit.as_ref(),
                &authorize,
            )
            .await
            .map_err(db_error)??;
        if reissued
            || self
                .store
                .registration(correction.registration_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|(r, _)| r.status == PersonalIdStatus::Pending)
        {
            self.wake.notify_one();
        }
        Ok((self.load(correction.registration_id).await?, reissued))
    }

    /// GetRegistrationStatistics: rows by group and their total.
    pub async fn statistics(
        &self,
        caller: &Caller,
        from: NaiveDate,
        to: NaiveDate,
        grouping: StatsGrouping,
        province: Option<String>,
    ) -> Result<(Vec<NamedStatsRow>, StatsRow), RegistryError> {
        policy::may_read(caller).map_err(|d| Self::deny(caller, "statistics", d))?;
        if let Some(p) = &province {
            self.check_province(caller, p, "statistics")?;
        }
        let rows = self
            .store
            .statistics(&caller.unit.path, from, to, grouping, province.as_deref())
            .await
            .map_err(db_error)?;
        let units = self.store.units().await.map_err(db_error)?;
        let name_of = |code: &str| -> String {
            match grouping {
                StatsGrouping::Province => units
                    .iter()
                    .find(|u| u.level == UnitLevel::Province && u.province_code.as_str() == code)
                    .map(|u| u.name.clone()),
                StatsGrouping::District | StatsGrouping::Unit => units
                    .iter()
                    .find(|u| u.code.as_str() == code)
                    .map(|u| u.name.clone()),
            }
            .unwrap_or_default()
        };
        let mut total = StatsRow::default();
        let named = rows
            .into_iter()
            .map(|row| {
                for (t, c) in total.counts.iter_mut().zip(row.counts) {
                    *t += c;
                }
                NamedStatsRow {
                    name: name_of(&row.group),
                    row,
                }
            })
            .collect();
        Ok((named, total))
    }
}

fn copy_error(error: &RegistryError) -> RegistryError {
    match error {
        RegistryError::Unavailable(e) => RegistryError::Unavailable(anyhow::anyhow!("{e}")),
        other => RegistryError::Unexpected(anyhow::anyhow!("{other}")),
    }
}

/// Runs the writer on a thread of its own with the SQLite connection it drives directly;
/// returns once the connection is taken, with a handle that resolves when the thread ends.
async fn spawn_sqlite_writer(
    mut sqlite: SqliteWriter,
    group: GroupLoop,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the writer's runtime")?;
    let (ready_tx, ready) = oneshot::channel();
    let (done_tx, done) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("civil-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                match sqlite.lock().await {
                    Ok(direct) => {
                        let _ = ready_tx.send(Ok(()));
                        group.run(direct).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
                sqlite.close().await;
            });
            drop(done_tx);
        })
        .context("starting the writer's thread")?;
    ready
        .await
        .context("the writer's thread stopped")?
        .context("taking the writer's connection")?;
    Ok(tokio::spawn(async move {
        let _ = done.await;
    }))
}

/// The single writer's loop and what it needs besides its connection.
struct GroupLoop {
    rx: mpsc::Receiver<WriteJobBox>,
    max: usize,
    wake: Arc<Notify>,
    waiters: Arc<Waiters>,
    handoff: Option<Handoff>,
}

impl GroupLoop {
    /// The single writer: each turn takes everything queued (up to `max` jobs) and commits it
    /// in ONE transaction, starting as soon as the previous commit ended: registrations with
    /// their audit entries and outbox rows, and the relay's outcomes. No timer, no waiting for
    /// a full group.
    async fn run<W: GroupWriter>(self, mut writer: W) {
        let Self {
            mut rx,
            max,
            wake,
            waiters,
            handoff,
        } = self;
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            metrics::histogram!("civil_registry_writer_batch_size").record(jobs.len() as f64);
            let mut rows = Vec::new();
            let mut inserts = Vec::new();
            let mut completions = Vec::new();
            let mut completed = Vec::new();
            for job in jobs {
                match *job {
                    WriteJob::Register { row, reply } => {
                        rows.push(row);
                        inserts.push(reply);
                    }
                    WriteJob::Complete {
                        completions: c,
                        reply,
                    } => {
                        completions.extend(c);
                        completed.push(reply);
                    }
                }
            }
            let eligible = rows.iter().filter(|r| r.decision.is_eligible()).count();
            // Lease in the commit only what the relay's queue can take now (only this task
            // sends on it, so the room cannot shrink before the send); the rest is claimed by
            // the relay's poll.
            let lease = handoff
                .as_ref()
                .filter(|h| eligible > 0 && h.tx.capacity() >= eligible)
                .map(|h| Lease {
                    owner: h.owner.clone(),
                    until_ms: now_ms() + h.lease_ms,
                });
            let started = std::time::Instant::now();
            match write_group(&mut writer, &rows, lease.as_ref(), &completions).await {
                Ok(written) => {
                    metrics::histogram!("civil_registry_write_transaction_seconds")
                        .record(started.elapsed().as_secs_f64());
                    waiters.notify(&written.settled);
                    for reply in completed {
                        let _ = reply.send(Ok(()));
                    }
                    let queued = rows.iter().zip(&written.outcomes).any(|(r, o)| {
                        matches!(o.0, InsertOutcome::Created(_)) && r.decision.is_eligible()
                    });
                    let no_number: Vec<Uuid> = rows
                        .iter()
                        .zip(&written.outcomes)
                        .filter(|(_, outcome)| !number_coming(outcome))
                        .map(|(row, _)| row.id)
                        .collect();
                    for (reply, outcome) in inserts.into_iter().zip(written.outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                    // After the replies, so that the released callers find them sent.
                    waiters.release(&no_number);
                    hand_over(handoff.as_ref(), lease.as_ref(), written.leased, &wake);
                    if queued && lease.is_none() {
                        wake.notify_one();
                    }
                }
                Err(e)
                    if !is_unavailable(&e)
                        && rows.len() + usize::from(!completions.is_empty()) > 1 =>
                {
                    // One row's failure must not fail its neighbours: commit them one by one.
                    // Not when the database itself is out of reach (locked, full, gone):
                    // each row would wait out the same failure in turn, long after it ends.
                    tracing::warn!(error = %e, rows = rows.len(), "grouped commit failed; retrying one by one");
                    if !completions.is_empty() {
                        let result = write_group(&mut writer, &[], None, &completions).await;
                        let result = match result {
                            Ok(written) => {
                                waiters.notify(&written.settled);
                                Ok(())
                            }
                            Err(e) => Err(db_error(e)),
                        };
                        for reply in completed {
                            let _ = reply.send(result.as_ref().map(|_| ()).map_err(copy_error));
                        }
                    }
                    for (row, reply) in rows.into_iter().zip(inserts) {
                        let eligible = row.decision.is_eligible();
                        let lease = handoff
                            .as_ref()
                            .filter(|h| eligible && h.tx.capacity() >= 1)
                            .map(|h| Lease {
                                owner: h.owner.clone(),
                                until_ms: now_ms() + h.lease_ms,
                            });
                        let result = write_group(
                            &mut writer,
                            std::slice::from_ref(&row),
                            lease.as_ref(),
                            &[],
                        )
                        .await;
                        let reply_value = match result {
                            Ok(mut written) => {
                                hand_over(
                                    handoff.as_ref(),
                                    lease.as_ref(),
                                    std::mem::take(&mut written.leased),
                                    &wake,
                                );
                                written.outcomes.pop().ok_or_else(|| {
                                    RegistryError::Unexpected(anyhow::anyhow!("no outcome"))
                                })
                            }
                            Err(e) => Err(db_error(e)),
                        };
                        if eligible
                            && lease.is_none()
                            && matches!(reply_value, Ok((InsertOutcome::Created(_), _)))
                        {
                            wake.notify_one();
                        }
                        let released = !reply_value.as_ref().is_ok_and(number_coming);
                        let _ = reply.send(reply_value);
                        if released {
                            waiters.release(&[row.id]);
                        }
                    }
                }
                Err(e) => {
                    let error = db_error(e);
                    for reply in inserts {
                        let _ = reply.send(Err(copy_error(&error)));
                    }
                    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
                    waiters.release(&ids);
                    for reply in completed {
                        let _ = reply.send(Err(copy_error(&error)));
                    }
                }
            }
            writer.between_groups().await;
        }
    }
}

/// Whether a number will be written back for this insert: a new registration still
/// pending. Its caller waits for that number; every other caller is released at once.
fn number_coming(outcome: &(InsertOutcome, Option<Registration>)) -> bool {
    matches!(outcome, (InsertOutcome::Created(_), Some(registration))
        if registration.status == PersonalIdStatus::Pending)
}

/// Gives rows leased in a commit to the relay. A row that does not fit (it always should)
/// stays leased until its lease expires, then the relay's poll claims it.
fn hand_over(
    handoff: Option<&Handoff>,
    lease: Option<&Lease>,
    leased: Vec<Outbound>,
    wake: &Notify,
) {
    let (Some(handoff), Some(lease)) = (handoff, lease) else {
        return;
    };
    for item in leased {
        if handoff.tx.try_send((item, lease.until_ms)).is_err() {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{ProvinceCode, Role, UnitCode};

    #[test]
    fn tokens_are_stored_as_their_sha256_never_as_themselves() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn caller(official_id: &str) -> Caller {
        Caller {
            official_id: official_id.to_owned(),
            role: Role::Registrar,
            active: true,
            unit: Unit {
                code: UnitCode::parse("C001").unwrap(),
                name: "Commune".to_owned(),
                level: UnitLevel::Commune,
                province_code: ProvinceCode::parse("001").unwrap(),
                parent_code: None,
                active: true,
                path: "/C001/".to_owned(),
            },
        }
    }

    #[test]
    fn a_cached_token_is_trusted_until_its_ttl_has_passed_and_not_after() {
        let cache = TokenCache::new(Duration::from_secs(10));
        let checked_at = Instant::now();
        cache.put("h".to_owned(), &caller("reg_a"), checked_at);

        let just_before = cache.get("h", checked_at + Duration::from_millis(9_999));
        let at_expiry = cache.get("h", checked_at + Duration::from_secs(10));

        assert_eq!(just_before.map(|c| c.official_id), Some("reg_a".to_owned()));
        assert!(
            at_expiry.is_none(),
            "an expired entry sends the next call to the database"
        );
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = TokenCache::new(Duration::ZERO);
        let now = Instant::now();
        cache.put("h".to_owned(), &caller("reg_a"), now);

        assert!(cache.get("h", now).is_none());
    }

    #[test]
    fn a_full_cache_starts_again_empty_instead_of_growing() {
        let cache = TokenCache::new(Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..TOKEN_CACHE_MAX {
            cache.put(format!("h{i}"), &caller("reg_a"), now);
        }

        cache.put("newest".to_owned(), &caller("reg_b"), now);

        assert!(cache.get("h0", now).is_none());
        assert!(cache.get("newest", now).is_some());
        assert_eq!(cache.entries.lock().unwrap().len(), 1);
    }
}
