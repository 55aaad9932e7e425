//! `traffic replay`: sends a traffic file's registrations to a civil registry, open loop at
//! a fixed rate or closed loop at a fixed concurrency, and measures latency and throughput.
//!
//! Design for not being the bottleneck: the file is parsed on a blocking thread into a
//! bounded queue; each request is one spawned task holding a semaphore permit; requests go
//! round robin over a few HTTP/2 connections; completions flow to one collector task that
//! owns the histograms and the progress bar (no shared locks on the hot path).
//! Open-loop latency is measured from each request's scheduled start, so a stalled
//! server shows up in the percentiles (no coordinated omission).

use crate::client::{Tokens, authorized};
use crate::cores::CoreTimes;
use crate::record::TrafficLine;
use crate::wire::{self, RegisterAnswer};
use anyhow::{Context as _, bail};
use contracts::moj::civilstatus::v1 as pb;
use contracts::moj::civilstatus::v1::birth_registration_service_client::BirthRegistrationServiceClient;
use hdrhistogram::Histogram;
use prost::Message as _;
use prost::bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Open or closed loop.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Start `R` registrations per second whatever the answers (open loop).
    Rate(f64),
    /// Keep `C` registrations in flight (closed loop).
    Concurrency(usize),
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub mode: Mode,
    /// In open loop, the most requests in flight before the schedule slips.
    pub max_in_flight: usize,
    /// Show a progress bar (on stderr).
    pub progress: bool,
    /// Give up waiting for a PENDING registration's number after this long.
    pub number_timeout: Duration,
    /// Retries of a RegisterBirth answered UNAVAILABLE (same request_id, so safe).
    pub retries: u32,
    /// Each RegisterBirth attempt's gRPC deadline: one that outlives it ends
    /// DEADLINE_EXCEEDED (retried, and counted in `retried`).
    pub call_timeout: Duration,
    /// Only replay the first N lines.
    pub limit: Option<u64>,
}

/// How long one request waits, and how often it tries again.
#[derive(Debug, Clone, Copy)]
struct Patience {
    retries: u32,
    number_timeout: Duration,
    call_timeout: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Concurrency(256),
            max_in_flight: 20_000,
            progress: false,
            number_timeout: Duration::from_secs(120),
            retries: 5,
            call_timeout: Duration::from_secs(30),
            limit: None,
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub request_id: String,
    pub unit_code: String,
    /// `birthRegistrations/{id}`; empty when the call failed.
    pub registration: String,
    /// Final personal-id status name, or `ERROR:<code>`.
    pub status: String,
    pub personal_id: String,
    /// The number RegisterBirth itself answered (printed on the certificate); empty when
    /// it answered PENDING or not at all. It must never change afterwards.
    #[serde(default)]
    pub acknowledged_personal_id: String,
}

/// The replay's figures.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub registrations: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    /// Seconds from the first request to the last answer of RegisterBirth.
    pub register_seconds: f64,
    /// Seconds from the first request until every number arrived.
    pub seconds: f64,
    /// Registrations answered per second.
    pub registrations_per_s: f64,
    /// Registrations that ended ISSUED or NOT_ELIGIBLE, per second of `seconds`. Failed
    /// calls and registrations still PENDING (past `number_timeout`) or REJECTED by the
    /// population registry are not counted: they are births the run did not see through.
    pub births_per_s: f64,
    /// Final status name -> count.
    pub by_status: BTreeMap<String, u64>,
    /// Status answered by RegisterBirth itself (ISSUED in the response vs PENDING).
    pub first_answer: BTreeMap<String, u64>,
    /// gRPC code -> count of failed registrations.
    pub errors: BTreeMap<String, u64>,
    pub register_ms: Percentiles,
    /// From each request's start to its number, ISSUED registrations only. When
    /// RegisterBirth answered PENDING the number is seen by polling GetBirthRegistration
    /// (every 20 ms, doubling to 500 ms), so those samples include up to one poll interval.
    pub time_to_number_ms: Percentiles,
    /// RegisterBirth p99 (ms) of the requests sent in each second of the replay, in order:
    /// shows whether a tail is a moment (start-up, a stall) or the steady state.
    pub register_p99_ms_by_second: Vec<f64>,
    /// Share of all cores' time busy (any process) from the first request to the last
    /// answer: near 1 the CPU bounded the run; lower, its waits did.
    pub cores_busy: Option<f64>,
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

struct Item {
    /// The encoded `RegisterBirthRequest`, sent as is by every attempt.
    body: Bytes,
    request_id: String,
    auth: MetadataValue<Ascii>,
    unit_code: String,
}

/// Requests parsed and encoded before the clock starts (the whole pilot; a larger file
/// streams the rest during the replay). About 1 KB each.
const PREPARED_AHEAD: usize = 131_072;

enum Event {
    Registered {
        /// When the request was due (open loop) or sent (closed loop).
        scheduled: Instant,
        latency_us: u64,
        pending: bool,
        retried: u32,
    },
    Done {
        outcome: Outcome,
        number_us: Option<u64>,
        at: Instant,
    },
}

/// Counts the lines of a traffic file (for the progress bar).
pub fn count_lines(path: &Path) -> anyhow::Result<u64> {
    let mut r = std::io::BufReader::with_capacity(1 << 20, crate::files::open(path)?);
    let mut n = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        n += buf.iter().filter(|b| **b == b'\n').count() as u64;
        let len = buf.len();
        r.consume(len);
    }
    Ok(n)
}

/// Replays a traffic file through `channels` (round robin) with the officials' tokens.
pub async fn replay(
    file: &Path,
    channels: Vec<Channel>,
    tokens: Arc<Tokens>,
    opts: &ReplayOptions,
) -> anyhow::Result<ReplayReport> {
    if channels.is_empty() {
        bail!("no channels");
    }
    if let Mode::Rate(rate) = opts.mode
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("the rate must be a positive number per second, not {rate}");
    }
    let total = match opts.limit {
        Some(l) => count_lines(file)?.min(l),
        None => count_lines(file)?,
    };
    let (tx, mut rx) = mpsc::channel::<Item>(PREPARED_AHEAD);
    let path = file.to_owned();
    let limit = opts.limit;
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let r = std::io::BufReader::with_capacity(1 << 20, crate::files::open(&path)?);
        for (i, line) in r.lines().enumerate() {
            if limit.is_some_and(|l| i as u64 >= l) {
                break;
            }
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: TrafficLine = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            let auth = tokens
                .get(&parsed.official_id)
                .with_context(|| format!("no token for official {}", parsed.official_id))?
                .clone();
            let request = pb::RegisterBirthRequest::try_from(&parsed.request)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            let item = Item {
                body: Bytes::from(request.encode_to_vec()),
                request_id: request.request_id,
                auth,
                unit_code: parsed.unit_code,
            };
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
        Ok(())
    });

    // The parsing and encoding would otherwise take the cores from the services measured.
    let ahead = (total as usize).min(PREPARED_AHEAD);
    while rx.len() < ahead && !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    let progress = opts.progress;
    let start = Instant::now();
    let cores_at_start = CoreTimes::now();
    let collector = tokio::spawn(collect(ev_rx, total, progress, start));

    let permits = match opts.mode {
        Mode::Concurrency(c) => c.max(1),
        Mode::Rate(_) => opts.max_in_flight.max(1),
    };
    let sem = Arc::new(Semaphore::new(permits));
    let clients: Vec<_> = channels
        .into_iter()
        .map(|c| {
            (
                Grpc::new(c.clone()),
                BirthRegistrationServiceClient::new(c).max_decoding_message_size(16 << 20),
            )
        })
        .collect();
    let patience = Patience {
        retries: opts.retries,
        number_timeout: opts.number_timeout,
        call_timeout: opts.call_timeout,
    };
    let launch = move |i: u64, item: Item, scheduled: Instant, permit, ev_tx| {
        let client = clients[(i as usize) % clients.len()].clone();
        async move {
            one(client, item, scheduled, patience, permit, ev_tx).await;
        }
    };
    match opts.mode {
        Mode::Rate(rate) => {
            let runtime = tokio::runtime::Handle::current();
            let ev_tx = ev_tx.clone();
            let pacer = std::thread::Builder::new()
                .name("replay-pacer".into())
                .spawn(move || pace(runtime, start, rate, rx, sem, ev_tx, launch))
                .context("spawning the pacer thread")?;
            tokio::task::spawn_blocking(move || pacer.join())
                .await
                .context("waiting for the pacer")?
                .map_err(|_| anyhow::anyhow!("the pacer panicked"))??;
        }
        Mode::Concurrency(_) => {
            let mut i: u64 = 0;
            while let Some(item) = rx.recv().await {
                // Closed loop: each request goes when a permit lets it.
                let permit = Arc::clone(&sem)
                    .acquire_owned()
                    .await
                    .context("semaphore closed")?;
                tokio::spawn(launch(i, item, Instant::now(), permit, ev_tx.clone()));
                i += 1;
            }
        }
    }
    drop(ev_tx);
    reader.await.context("reader panicked")??;
    let (mut report, last) = collector.await.context("collector panicked")?;
    report.cores_busy = CoreTimes::now()
        .zip(cores_at_start)
        .and_then(|(end, start)| end.busy_since(start));
    report.seconds = last.map_or(0.0, |l| l.duration_since(start).as_secs_f64());
    report.births_per_s = births_per_s(&report.by_status, report.seconds);
    report.registrations_per_s = if report.register_seconds > 0.0 {
        report.registrations as f64 / report.register_seconds
    } else {
        0.0
    };
    Ok(report)
}

/// The open loop's clock and dispatcher: a thread of its own that sleeps until each
/// request's start, `rate` times a second from `start`, and spawns the request's task
/// onto the runtime itself. Tokio's timer rounds every sleep up to the next millisecond,
/// which would add up to 1 ms (0.5 ms on average) of the load generator's own lateness to
/// every latency measured from the schedule; a thread's sleep is late by the kernel's
/// timer slack (50 µs by default). Spawning from here, rather than handing each instant
/// to a task that spawns, spares a thread wake-up per request: at 2,000/s the hand-over
/// cost the load generator as much CPU as its calls, on the cores it shares with the
/// services it measures.
fn pace<F, Fut>(
    runtime: tokio::runtime::Handle,
    start: Instant,
    rate: f64,
    mut items: mpsc::Receiver<Item>,
    sem: Arc<Semaphore>,
    ev_tx: mpsc::UnboundedSender<Event>,
    launch: F,
) -> anyhow::Result<()>
where
    F: Fn(
        u64,
        Item,
        Instant,
        tokio::sync::OwnedSemaphorePermit,
        mpsc::UnboundedSender<Event>,
    ) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = start.into_std();
    for i in 0u64.. {
        let Some(item) = items.blocking_recv() else {
            break;
        };
        let at = start
            + Duration::try_from_secs_f64(i as f64 / rate)
                .with_context(|| format!("request {i} at {rate}/s starts too late to schedule"))?;
        if let Some(wait) = at.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let permit = match Arc::clone(&sem).try_acquire_owned() {
            Ok(p) => p,
            // At the in-flight cap: wait for a slot (the lateness is measured).
            Err(_) => runtime
                .block_on(Arc::clone(&sem).acquire_owned())
                .context("semaphore closed")?,
        };
        runtime.spawn(launch(
            i,
            item,
            Instant::from_std(at),
            permit,
            ev_tx.clone(),
        ));
    }
    Ok(())
}

/// See [`ReplayReport::births_per_s`].
fn births_per_s(by_status: &BTreeMap<String, u64>, seconds: f64) -> f64 {
    let seen_through: u64 = [
        pb::PersonalIdStatus::Issued,
        pb::PersonalIdStatus::NotEligible,
    ]
    .into_iter()
    .filter_map(|s| by_status.get(&status_name(s as i32)))
    .sum();
    if seconds > 0.0 {
        seen_through as f64 / seconds
    } else {
        0.0
    }
}

fn status_name(s: i32) -> String {
    pb::PersonalIdStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PERSONAL_ID_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("UNKNOWN({s})"))
}

/// Whether a failed RegisterBirth is worth sending again. The same request_id makes every
/// retry safe (the registry answers the registration it already stored), so besides the
/// retryable codes, any status that the client built from a broken connection (it carries
/// the transport error as its source: a process killed mid-call shows up as UNKNOWN or
/// INTERNAL "h2 protocol error") is retried: the call may or may not have been committed.
pub fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => {
            true
        }
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

async fn one(
    (mut grpc, mut client): (Grpc<Channel>, BirthRegistrationServiceClient<Channel>),
    item: Item,
    scheduled: Instant,
    patience: Patience,
    permit: tokio::sync::OwnedSemaphorePermit,
    ev: mpsc::UnboundedSender<Event>,
) {
    let request_id = item.request_id;
    let mut attempt = 0;
    let answer = loop {
        let mut req = authorized(item.body.clone(), &item.auth);
        req.set_timeout(patience.call_timeout);
        match wire::register_birth(&mut grpc, req).await {
            Ok(answer) => break Ok(answer),
            Err(s) if attempt < patience.retries && retryable(&s) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            Err(s) => break Err(s),
        }
    };
    let latency_us = scheduled.elapsed().as_micros() as u64;
    drop(permit);
    let fail = |code: tonic::Code| Outcome {
        request_id: request_id.clone(),
        unit_code: item.unit_code.clone(),
        registration: String::new(),
        status: format!("ERROR:{code:?}"),
        personal_id: String::new(),
        acknowledged_personal_id: String::new(),
    };
    let reg = match answer {
        Ok(RegisterAnswer {
            registration: Some(reg),
        }) => reg,
        Ok(_) => {
            let _ = ev.send(Event::Done {
                outcome: fail(tonic::Code::Internal),
                number_us: None,
                at: Instant::now(),
            });
            return;
        }
        Err(status) => {
            let _ = ev.send(Event::Done {
                outcome: fail(status.code()),
                number_us: None,
                at: Instant::now(),
            });
            return;
        }
    };
    let pending = reg.personal_id_status == pb::PersonalIdStatus::Pending as i32;
    let _ = ev.send(Event::Registered {
        scheduled,
        latency_us,
        pending,
        retried: attempt,
    });
    let acknowledged_personal_id = reg.personal_id.clone();
    let mut reg = reg;
    let mut number_us =
        (reg.personal_id_status == pb::PersonalIdStatus::Issued as i32).then_some(latency_us);
    if pending {
        // Poll until the number arrives: the registry answers PENDING when the number did
        // not come within its wait, and keeps obtaining it in the background.
        let deadline = Instant::now() + patience.number_timeout;
        let mut wait = Duration::from_millis(20);
        while reg.personal_id_status == pb::PersonalIdStatus::Pending as i32
            && Instant::now() < deadline
        {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
            let req = authorized(
                pb::GetBirthRegistrationRequest {
                    name: reg.name.clone(),
                },
                &item.auth,
            );
            if let Ok(resp) = client.get_birth_registration(req).await
                && let Some(r) = resp.into_inner().registration
            {
                reg = r.into();
            }
        }
        if reg.personal_id_status == pb::PersonalIdStatus::Issued as i32 {
            number_us = Some(scheduled.elapsed().as_micros() as u64);
        }
    }
    let _ = ev.send(Event::Done {
        outcome: Outcome {
            request_id,
            unit_code: item.unit_code,
            registration: reg.name,
            status: status_name(reg.personal_id_status),
            personal_id: reg.personal_id,
            acknowledged_personal_id,
        },
        number_us,
        at: Instant::now(),
    });
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
    total: u64,
    progress: bool,
    start: Instant,
) -> (ReplayReport, Option<Instant>) {
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut register = latency_histogram();
    let mut number = latency_histogram();
    let mut by_second = PerSecond::default();
    let mut report = ReplayReport {
        registrations: 0,
        succeeded: 0,
        failed: 0,
        retried: 0,
        register_seconds: 0.0,
        seconds: 0.0,
        registrations_per_s: 0.0,
        births_per_s: 0.0,
        by_status: BTreeMap::new(),
        first_answer: BTreeMap::new(),
        errors: BTreeMap::new(),
        register_ms: Percentiles::default(),
        time_to_number_ms: Percentiles::default(),
        register_p99_ms_by_second: Vec::new(),
        cores_busy: None,
        outcomes: Vec::with_capacity(total as usize),
    };
    let mut last_registered: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Registered {
                scheduled,
                latency_us,
                pending,
                retried,
            } => {
                let _ = register.record(latency_us.max(1));
                let second = scheduled.saturating_duration_since(start).as_secs() as usize;
                by_second.record(second, latency_us);
                *report
                    .first_answer
                    .entry(if pending { "PENDING" } else { "ANSWERED" }.to_owned())
                    .or_default() += 1;
                report.retried += u64::from(retried);
                last_registered = Some(Instant::now());
            }
            Event::Done {
                outcome,
                number_us,
                at,
            } => {
                report.registrations += 1;
                if let Some(code) = outcome.status.strip_prefix("ERROR:") {
                    report.failed += 1;
                    *report.errors.entry(code.to_owned()).or_default() += 1;
                    last_registered = Some(at);
                } else {
                    report.succeeded += 1;
                }
                if let Some(us) = number_us {
                    let _ = number.record(us.max(1));
                }
                *report.by_status.entry(outcome.status.clone()).or_default() += 1;
                report.outcomes.push(outcome);
                last = Some(at);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    report.register_seconds =
        last_registered.map_or(0.0, |l| l.duration_since(start).as_secs_f64());
    report.register_p99_ms_by_second = by_second.p99_ms();
    report.register_ms = Percentiles::of(&register);
    report.time_to_number_ms = Percentiles::of(&number);
    (report, last)
}

impl ReplayReport {
    /// Human-readable summary lines.
    pub fn print(&self) {
        println!(
            "replayed {} registrations: {} ok, {} failed ({} retries)",
            self.registrations, self.succeeded, self.failed, self.retried
        );
        println!(
            "throughput: {:.0} registrations/s answered, {:.0} births/s fully numbered ({:.2} s)",
            self.registrations_per_s, self.births_per_s, self.seconds
        );
        println!("RegisterBirth latency: {}", self.register_ms);
        println!("time to number:        {}", self.time_to_number_ms);
        if let Some(busy) = self.cores_busy {
            println!(
                "cores busy (any process) during the replay: {:.0} %",
                busy * 100.0
            );
        }
        if let Some(line) = p99_by_second_summary(&self.register_p99_ms_by_second) {
            println!("RegisterBirth p99 per second sent: {line}");
        }
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("by status: {}", statuses.join(" "));
        let first: Vec<String> = self
            .first_answer
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("first answer: {}", first.join(" "));
        if !self.errors.is_empty() {
            let errs: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("errors by code: {}", errs.join(" "));
        }
    }
}

/// Latencies in µs, 1 µs to 1 h at 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Latencies by the second they were scheduled in, for each second's p99 (2 significant
/// digits, up to 10 min).
#[derive(Default)]
pub(crate) struct PerSecond {
    seconds: Vec<Histogram<u32>>,
}

impl PerSecond {
    pub(crate) fn record(&mut self, second: usize, latency_us: u64) {
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, || {
                Histogram::<u32>::new_with_bounds(1, 600_000_000, 2)
                    .expect("valid histogram bounds")
            });
        }
        self.seconds[second].saturating_record(latency_us.max(1));
    }

    /// Each second's p99 in ms (0 for a second with no request).
    pub(crate) fn p99_ms(&self) -> Vec<f64> {
        self.seconds
            .iter()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect()
    }
}

/// The median of the seconds' p99s (seconds with no request left out): the tail of a
/// typical second, which a few stalled seconds do not move.
pub(crate) fn median_second_p99(p99s: &[f64]) -> Option<f64> {
    let mut seen: Vec<f64> = p99s.iter().copied().filter(|p| *p > 0.0).collect();
    seen.sort_by(f64::total_cmp);
    seen.get(seen.len() / 2).copied()
}

/// `median 12.3 ms, worst 250.0 ms (second 0), seconds over twice the median: 0, 1`, or
/// nothing for an empty replay. Seconds with no request (a closed loop's tail) are skipped.
pub(crate) fn p99_by_second_summary(p99s: &[f64]) -> Option<String> {
    let seen: Vec<(usize, f64)> = p99s
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, p)| *p > 0.0)
        .collect();
    let median = median_second_p99(p99s)?;
    let (worst_at, worst) = seen.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let slow: Vec<String> = seen
        .iter()
        .filter(|(_, p)| *p > 2.0 * median)
        .map(|(s, _)| s.to_string())
        .collect();
    Some(format!(
        "median {median:.1} ms, worst {worst:.1} ms (second {worst_at}), seconds over twice \
         the median: {}",
        if slow.is_empty() {
            "none".to_owned()
        } else {
            slow.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::{Percentiles, births_per_s, latency_histogram, p99_by_second_summary};
    use std::collections::BTreeMap;

    #[test]
    fn percentiles_read_the_histogram_at_their_quantiles_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1_000 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.p999, p.max),
            (1_000, 0.5, 0.9, 0.99, 0.999, 1.0)
        );
    }

    #[test]
    fn births_per_second_counts_only_registrations_that_ended_issued_or_not_eligible() {
        let by_status: BTreeMap<String, u64> = [
            ("ISSUED", 50),
            ("NOT_ELIGIBLE", 4),
            ("PENDING", 3),
            ("REJECTED", 1),
            ("ERROR:Unavailable", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(births_per_s(&by_status, 2.0), 27.0);
        assert_eq!(births_per_s(&by_status, 0.0), 0.0);
    }

    #[test]
    fn the_summary_names_the_stalled_seconds_and_skips_seconds_without_requests() {
        let p99s = [40.0, 10.0, 0.0, 11.0, 12.0, 250.0, 9.0];
        assert_eq!(
            p99_by_second_summary(&p99s).unwrap(),
            "median 12.0 ms, worst 250.0 ms (second 5), seconds over twice the median: 0, 5"
        );
        assert_eq!(
            p99_by_second_summary(&[5.0, 6.0]).unwrap(),
            "median 6.0 ms, worst 6.0 ms (second 1), seconds over twice the median: none"
        );
        assert_eq!(p99_by_second_summary(&[]), None);
        assert_eq!(p99_by_second_summary(&[0.0, 0.0]), None);
    }
}
