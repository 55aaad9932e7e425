//! The relay: takes leased outbox rows to the population registry and writes the answers
//! back. Batches when rows queue up, backs off exponentially with jitter per row, stops
//! calling a registry that keeps failing (circuit breaker), and resumes after a restart
//! from the outbox alone (leases expire). Several replicas relay at once safely: a row is
//! leased by one of them at a time.

pub mod client;
pub mod encode;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::config::RelayConfig;
use crate::domain::model::Settlement;
use crate::domain::population::{Outbound, Outcome, PopulationRegistry};
use crate::registry::WriteBack;
use crate::store::{Completion, Store, now_ms};

/// RegisterBirth callers waiting for their number, woken by the relay of this process when
/// it writes the number (or a refusal) back. A waiter whose number is written by another
/// replica simply times out and answers PENDING: correctness never depends on this map.
#[derive(Debug, Default)]
pub struct Waiters {
    map: Mutex<HashMap<Uuid, Vec<oneshot::Sender<Settlement>>>>,
}

impl Waiters {
    /// A wait that ends when `id` settles.
    pub fn subscribe(&self, id: Uuid) -> Subscription<'_> {
        let (tx, rx) = oneshot::channel();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(tx);
        Subscription {
            waiters: self,
            id,
            settled: Some(rx),
        }
    }

    /// Drops waiters that gave up on `id`.
    fn forget(&self, id: Uuid) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = map.get_mut(&id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                map.remove(&id);
            }
        }
    }

    /// Ends the waits on registrations for which no number is coming (their receivers
    /// see the channel closed).
    pub fn release(&self, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            map.remove(id);
        }
    }

    /// Wakes everyone waiting for these registrations.
    pub fn notify(&self, settled: &[(Uuid, Settlement)]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (id, settlement) in settled {
            for tx in map.remove(id).unwrap_or_default() {
                let _ = tx.send(settlement.clone());
            }
        }
    }
}

/// One caller's wait for a registration to settle. Dropping it, whether the number came,
/// the wait ran out or the call was cancelled, removes the entry from [`Waiters`]: a
/// registration settled by another replica leaves nothing behind in this one.
#[derive(Debug)]
pub struct Subscription<'a> {
    waiters: &'a Waiters,
    id: Uuid,
    settled: Option<oneshot::Receiver<Settlement>>,
}

impl Subscription<'_> {
    /// The settlement, waiting at most `patience`: `None` when the wait ran out or no
    /// number is coming (the writer released the wait).
    pub async fn within(&mut self, patience: Duration) -> Option<Settlement> {
        let settled = self.settled.as_mut()?;
        let answer = tokio::time::timeout(patience, settled).await.ok()?;
        // Answered (or released): a receiver must not be polled again.
        self.settled = None;
        answer.ok()
    }

    /// The settlement if it has already come.
    pub fn ready(&mut self) -> Option<Settlement> {
        self.settled.as_mut()?.try_recv().ok()
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        // Closing the receiver first lets `forget` tell this wait from live ones.
        drop(self.settled.take());
        self.waiters.forget(self.id);
    }
}

/// Consecutive-failure circuit breaker: after `threshold` failed calls it stays open for
/// `open_for`, then lets one call through (half-open) to probe.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn wait(&self) -> Option<Duration> {
        self.open_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }
    /// Records a call's result: `None` when it got through, else the code and cause of
    /// its failure, which the log line of an opening breaker names.
    fn record(&mut self, failure: Option<(&str, &str)>) {
        if let Some((code, cause)) = failure {
            self.failures += 1;
            if self.failures >= self.threshold {
                if self.open_until.is_none() {
                    tracing::warn!(
                        target: "civil_registry::relay",
                        failures = self.failures,
                        code,
                        cause,
                        "circuit breaker open: the population registry is not answering"
                    );
                }
                self.open_until = Some(Instant::now() + self.open_for);
                metrics::counter!("civil_registry_relay_breaker_opened_total").increment(1);
            }
        } else {
            if self.open_until.is_some() {
                tracing::info!(target: "civil_registry::relay", "circuit breaker closed: calls get through again");
            }
            self.failures = 0;
            self.open_until = None;
        }
    }
}

/// The code and cause of an outcome that says "try again".
fn retry_of(outcome: &Outcome) -> Option<(&str, &str)> {
    match outcome {
        Outcome::Retry { code, cause } => Some((code, cause)),
        Outcome::Issued { .. } | Outcome::Rejected { .. } => None,
    }
}

/// The next row handed over, or never when there is no handoff.
async fn next_handed(handed: &mut Option<Handed>) -> Option<(Outbound, i64)> {
    match handed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with full jitter in [d/2, d], capped.
pub fn backoff(cfg: &RelayConfig, attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let d = cfg
        .backoff_initial_ms
        .saturating_mul(1u64 << exp.min(20))
        .min(cfg.backoff_max_ms)
        .max(1);
    Duration::from_millis(rand::random_range(d / 2..=d))
}

/// The relay of one process.
#[derive(Debug)]
pub struct Relay<P> {
    store: Store,
    registry: Arc<P>,
    cfg: RelayConfig,
    waiters: Arc<Waiters>,
    wake: Arc<Notify>,
    owner: String,
    breaker: Arc<Mutex<Breaker>>,
    handoff: Arc<Mutex<Option<Handed>>>,
    write_back: Option<WriteBack>,
}

/// Rows handed over by the writer in memory, each with its lease end.
type Handed = mpsc::Receiver<(Outbound, i64)>;

impl<P> Clone for Relay<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            registry: self.registry.clone(),
            cfg: self.cfg.clone(),
            waiters: self.waiters.clone(),
            wake: self.wake.clone(),
            owner: self.owner.clone(),
            breaker: self.breaker.clone(),
            handoff: self.handoff.clone(),
            write_back: self.write_back.clone(),
        }
    }
}

impl<P: PopulationRegistry> Relay<P> {
    /// A relay; `wake` is notified by RegisterBirth when rows were queued.
    pub fn new(
        store: Store,
        registry: Arc<P>,
        cfg: RelayConfig,
        waiters: Arc<Waiters>,
        wake: Arc<Notify>,
    ) -> Self {
        let breaker = Breaker {
            threshold: cfg.breaker_failure_threshold.max(1),
            open_for: Duration::from_millis(cfg.breaker_open_ms),
            failures: 0,
            open_until: None,
        };
        Self {
            store,
            registry,
            cfg,
            waiters,
            wake,
            owner: format!("relay-{}", Uuid::new_v4()),
            breaker: Arc::new(Mutex::new(breaker)),
            handoff: Arc::new(Mutex::new(None)),
            write_back: None,
        }
    }

    /// The name this relay leases rows under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The hot path: rows the writer committed already leased to this relay arrive on
    /// `handed` right after their commit, and outcomes go back through the writer's group
    /// commit. Polling and claiming stay for everything else (retries, rows of a crashed
    /// replica, rows the queue had no room for).
    pub fn with_handoff(self, handed: Handed, write_back: WriteBack) -> Self {
        *self.handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(handed);
        Self {
            write_back: Some(write_back),
            ..self
        }
    }

    /// Relays until `shutdown` turns true; in-flight batches finish (bounded by the call
    /// deadline) before it returns, so that their answers are written back.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.cfg.max_in_flight_batches.max(1)));
        let idle = Duration::from_millis(self.cfg.idle_poll_ms.max(1));
        let batch = self.cfg.batch_size.clamp(1, 1000) as usize;
        let mut handed = self
            .handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut next_poll = tokio::time::Instant::now();
        let mut polled_last = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = self
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .wait();
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // Once due, the poll takes every other turn however busy the handoff is:
            // retries, expired leases and corrections are found only by the poll and must
            // not wait for a lull in registrations.
            let poll_due = !polled_last && tokio::time::Instant::now() >= next_poll;
            let first = if poll_due {
                None
            } else {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => continue,
                    item = next_handed(&mut handed) => match item {
                        Some(item) => Some(item),
                        None => {
                            handed = None;
                            continue;
                        }
                    },
                    _ = self.wake.notified() => None,
                    _ = tokio::time::sleep_until(next_poll) => None,
                }
            };
            polled_last = first.is_none();
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            let items = if let Some(first) = first {
                // Everything handed over meanwhile goes in the same batch. A row whose lease
                // would not cover the call is left to the poll, which leases it afresh.
                let mut raw = Vec::with_capacity(batch);
                raw.push(first);
                if let Some(rx) = handed.as_mut() {
                    while raw.len() < batch {
                        match rx.try_recv() {
                            Ok(item) => raw.push(item),
                            Err(_) => break,
                        }
                    }
                }
                let fresh_until = now_ms() + self.cfg.lease_ms / 2;
                let items: Vec<Outbound> = raw
                    .into_iter()
                    .filter(|(_, until)| *until > fresh_until)
                    .map(|(item, _)| item)
                    .collect();
                items
            } else {
                match self
                    .store
                    .claim_outbox(&self.owner, batch as i64, self.cfg.lease_ms)
                    .await
                {
                    Ok(items) if items.is_empty() => {
                        let due = self.store.next_outbox_due().await.ok().flatten();
                        let sleep = due.map_or(idle, |due| {
                            Duration::from_millis(
                                (due - now_ms()).clamp(1, idle.as_millis() as i64) as u64,
                            )
                        });
                        next_poll = tokio::time::Instant::now() + sleep;
                        items
                    }
                    Ok(items) => {
                        // More may be due: claim again as soon as a slot is free.
                        next_poll = tokio::time::Instant::now();
                        items
                    }
                    Err(e) => {
                        tracing::warn!(target: "civil_registry::relay", error = %e, "claiming outbox rows failed");
                        next_poll = tokio::time::Instant::now() + idle;
                        Vec::new()
                    }
                }
            };
            if items.is_empty() {
                drop(permit);
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.deliver(items).await;
                drop(permit);
            });
        }
        // Wait for in-flight batches: all permits back.
        let _ = slots
            .acquire_many(self.cfg.max_in_flight_batches.max(1) as u32)
            .await;
    }

    async fn deliver(&self, items: Vec<Outbound>) {
        let outcomes = self.registry.send(&items).await;
        // A call failed when nothing in it got an answer beyond "try again".
        let failure = if outcomes.iter().all(|o| retry_of(o).is_some()) {
            outcomes.iter().find_map(retry_of)
        } else {
            None
        };
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(failure);
        let call_failed = failure.is_some();
        let now = now_ms();
        // Counted per batch: one look-up of the labelled counter per code, not per row.
        let mut by_code: HashMap<&str, u64> = HashMap::new();
        for outcome in &outcomes {
            let code = match outcome {
                Outcome::Issued { .. } => "OK",
                Outcome::Rejected { code, .. } | Outcome::Retry { code, .. } => code.as_str(),
            };
            *by_code.entry(code).or_default() += 1;
        }
        for (code, n) in by_code {
            metrics::counter!("civil_registry_relay_outcomes_total", "code" => code.to_owned())
                .increment(n);
        }
        let completions: Vec<Completion> = items
            .into_iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                match outcome {
                    Outcome::Issued { personal_id } => Completion::Issued { item, personal_id },
                    Outcome::Rejected { reason, code } => {
                        tracing::warn!(target: "civil_registry::relay", registration_id = %item.registration_id, code = %code, "population registry refused a record");
                        Completion::Rejected { item, reason }
                    }
                    Outcome::Retry { code, cause } => {
                        let delay = backoff(&self.cfg, item.attempts);
                        let error = format!("{code}: {cause}");
                        Completion::Retry { item, next_attempt_ms: now + delay.as_millis() as i64, error }
                    }
                }
            })
            .collect();
        // On failure the leases expire and the rows go out again with the same content:
        // the population registry answers the same number for the same key.
        if let Some(write_back) = &self.write_back {
            if let Err(e) = write_back.complete(completions).await {
                tracing::warn!(target: "civil_registry::relay", error = %e, "writing relay outcomes failed");
            }
        } else {
            match self.store.complete_outbox(&completions).await {
                Ok(settled) => self.waiters.notify(&settled),
                Err(e) => {
                    tracing::warn!(target: "civil_registry::relay", error = %e, "writing relay outcomes failed")
                }
            }
            if !call_failed {
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_with_jitter_and_stays_under_the_cap() {
        let cfg = RelayConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..RelayConfig::default()
        };
        for _ in 0..100 {
            let first = backoff(&cfg, 1).as_millis();
            let third = backoff(&cfg, 3).as_millis();
            let late = backoff(&cfg, 40).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            assert!((200..=400).contains(&third), "{third}");
            assert!((500..=1_000).contains(&late), "{late}");
        }
    }

    /// A failed call, as the breaker records it.
    const REFUSED: Option<(&str, &str)> = Some(("UNAVAILABLE", "connection refused"));

    /// A closed breaker that opens for a minute after `threshold` failures.
    fn closed_breaker(threshold: u32) -> Breaker {
        Breaker {
            threshold,
            open_for: Duration::from_secs(60),
            failures: 0,
            open_until: None,
        }
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_success() {
        let mut breaker = closed_breaker(3);
        breaker.record(REFUSED);
        breaker.record(REFUSED);
        assert!(breaker.wait().is_none(), "still closed below the threshold");
        breaker.record(REFUSED);
        assert!(breaker.wait().is_some(), "open at the threshold");
        breaker.record(None);
        assert!(breaker.wait().is_none(), "closed after a success");
    }

    #[test]
    fn waiters_receive_the_settlement_of_their_registration_only() {
        let waiters = Waiters::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rx_a = waiters.subscribe(a);
        let mut rx_b = waiters.subscribe(b);
        let settlement = Settlement {
            status: crate::domain::model::PersonalIdStatus::Issued,
            personal_id: Some("001221028568".into()),
            rejection_reason: None,
            at_ms: 1,
        };
        waiters.notify(&[(a, settlement.clone())]);
        assert_eq!(rx_a.ready(), Some(settlement.clone()));
        assert!(rx_b.ready().is_none());

        // Settled in one group, each still gets its own.
        let (c, d) = (Uuid::new_v4(), Uuid::new_v4());
        let (mut rx_c, mut rx_d) = (waiters.subscribe(c), waiters.subscribe(d));
        let other = Settlement {
            personal_id: Some("001221028569".into()),
            ..settlement.clone()
        };
        waiters.notify(&[(c, settlement.clone()), (d, other.clone())]);
        assert_eq!(rx_c.ready(), Some(settlement));
        assert_eq!(rx_d.ready(), Some(other));
    }

    #[test]
    fn a_wait_given_up_leaves_nothing_behind_and_spares_the_others() {
        let waiters = Waiters::default();
        let id = Uuid::new_v4();
        let staying = waiters.subscribe(id);
        let leaving = waiters.subscribe(Uuid::new_v4());
        {
            let _cancelled = waiters.subscribe(id);
        }
        drop(leaving);
        let map = waiters.map.lock().unwrap();
        assert_eq!(map.len(), 1, "only the registration still waited on");
        assert_eq!(map[&id].len(), 1, "only the wait still held");
        drop(map);
        drop(staying);
        assert!(waiters.map.lock().unwrap().is_empty());
    }

    #[test]
    fn an_open_breaker_lets_one_probe_through_and_reopens_when_it_fails() {
        let mut breaker = closed_breaker(2);
        breaker.record(REFUSED);
        breaker.record(REFUSED);
        assert!(breaker.wait().is_some(), "open");
        breaker.open_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(breaker.wait().is_none(), "half-open: the probe may go");
        breaker.record(REFUSED);
        assert!(breaker.wait().is_some(), "the failed probe opens it again");
    }
}
