//! `traffic bench mint`: the population registry's minting throughput against the bare
//! transport. One run starts the Echo baseline and the registry (its real binary, SQLite
//! durable or PostgreSQL, mTLS on) as child processes and measures unary IssuePersonalId
//! and Echo at the same concurrencies, then BatchIssuePersonalIds over N numbers, the
//! registry's peak resident memory and CPU time per number.

use super::load::{Phase, closed_loop, histogram, ms};
use super::proc::{self, Proc};
use super::records::{Order, RecordGen};
use super::{Dirs, machine_json, run_id};
use crate::client::connect_channels;
use crate::stack::{Certs, TRAFFIC_CLIENT_IDENTITY};
use anyhow::{Context as _, bail};
use contracts::mps::population::v1::{
    BatchIssuePersonalIdsRequest, batch_issue_result::Outcome,
    population_registry_service_client::PopulationRegistryServiceClient,
};
use prost::Message as _;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Storage backend of the registry under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Options of `traffic bench mint`.
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// Numbers minted by the BatchIssuePersonalIds phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub numbers: u64,
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// PostgreSQL server (a fresh database is created on it and dropped afterwards).
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// Measured seconds of each unary and Echo phase (after the warm-up).
    #[arg(long, default_value_t = 10.0, value_parser = crate::args::seconds)]
    pub seconds: f64,
    /// Warm-up seconds of each unary and Echo phase (not measured).
    #[arg(long, default_value_t = 2.0, value_parser = crate::args::seconds_or_zero)]
    pub warmup: f64,
    /// Concurrencies of the unary and Echo phases.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,128",
        value_parser = crate::args::at_least_one
    )]
    pub concurrency: Vec<usize>,
    /// HTTP/2 connections the unary calls are spread over (at most the concurrency).
    #[arg(long, default_value_t = 4, value_parser = crate::args::at_least_one)]
    pub channels: usize,
    /// Items per BatchIssuePersonalIds request message (the contract allows 1,000).
    #[arg(long, default_value_t = 1000, value_parser = crate::args::at_least_one)]
    pub batch_size: usize,
    /// Concurrent BatchIssuePersonalIds streams (one HTTP/2 connection each).
    #[arg(long, default_value_t = 2, value_parser = crate::args::at_least_one)]
    pub streams: usize,
    /// Request messages in flight per stream before waiting for an answer. Two streams of
    /// 16 keep two of the registry's largest groups (16,384 items) in flight: one commits
    /// while the next is validated.
    #[arg(long, default_value_t = 16, value_parser = crate::args::at_least_one)]
    pub window: usize,
    /// Skip the unary and Echo phases (batch only).
    #[arg(long)]
    pub batch_only: bool,
    /// Order of the requests: `register` (by date, at the national daily rate, as live
    /// traffic and a register-order backfill come) or `spread` (every bucket and date in
    /// turn: the page cache's worst case).
    #[arg(long, value_enum, default_value = "register")]
    pub order: Order,
    #[command(flatten)]
    pub dirs: Dirs,
}

fn population_env(certs: &Certs, database_url: &str) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (format!("POPULATION_REGISTRY_{k}"), v.to_owned());
    let p = |k: &str, v: &Path| (format!("POPULATION_REGISTRY_{k}"), v.display().to_string());
    vec![
        s("SERVER__LISTEN_ADDR", "127.0.0.1:0"),
        p("SERVER__TLS__CERT_FILE", &certs.server_cert),
        p("SERVER__TLS__KEY_FILE", &certs.server_key),
        p("SERVER__TLS__CLIENT_CA_FILE", &certs.ca),
        s("DATABASE__URL", database_url),
        s("METRICS__LISTEN_ADDR", "127.0.0.1:0"),
        s(
            "AUTH__MINTING_ALLOWED",
            &format!("[\"{TRAFFIC_CLIENT_IDENTITY}\"]"),
        ),
        s(
            "AUTH__READ_ALLOWED",
            &format!("[\"{TRAFFIC_CLIENT_IDENTITY}\"]"),
        ),
        s("TELEMETRY__LOG_FORMAT", "json"),
        s("TELEMETRY__LOG_FILTER", "warn"),
    ]
}

/// A PostgreSQL database created for one run and dropped at the end.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str, name: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let scheme_end = admin_url.find("://").map_or(0, |i| i + 3);
        let base = match admin_url[scheme_end..].find('/') {
            Some(i) => &admin_url[..scheme_end + i],
            None => admin_url,
        };
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        })
    }

    async fn drop_db(self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

/// Figures of the BatchIssuePersonalIds phase.
#[derive(Debug, Default)]
struct BatchResult {
    issued: u64,
    not_new: u64,
    errors: BTreeMap<String, u64>,
    duplicates: u64,
    seconds: f64,
    msg_p50_ms: f64,
    msg_p99_ms: f64,
}

pub async fn run(args: MintArgs) -> anyhow::Result<()> {
    let run = run_id();
    let (dir, temporary) = args.dirs.prepare("mint", &run)?;
    let certs = Certs::create(&dir.join("tls"))?;
    let warmup = Duration::from_secs_f64(args.warmup);
    let seconds = Duration::from_secs_f64(args.seconds);
    let records = Arc::new(RecordGen::new(&run, args.order));
    let payload_bytes = records.issue(0).encoded_len();
    let mut out = Map::new();
    out.insert(
        "backend".into(),
        json!(format!("{:?}", args.backend).to_lowercase()),
    );
    out.insert("numbers".into(), json!(args.numbers));
    out.insert(
        "order".into(),
        json!(format!("{:?}", args.order).to_lowercase()),
    );
    out.insert("request_bytes".into(), json!(payload_bytes));
    out.insert("loadavg_start".into(), json!(proc::loadavg()));
    machine_json(&mut out);

    let bins = args.dirs.binaries().await?;

    // 1. The bare transport.
    let mut echo_phases: Vec<Phase> = Vec::new();
    if !args.batch_only {
        let echo = super::echo::start(&certs, &dir).await?;
        eprintln!("echo server on {} (pid {})", echo.grpc, echo.pid);
        for &c in &args.concurrency {
            let phase = super::echo::measure(
                &echo,
                &certs,
                c,
                args.channels,
                payload_bytes,
                warmup,
                seconds,
            )
            .await?;
            println!("echo              {phase}");
            out.insert(format!("echo_c{c}_per_s"), json!(round(phase.per_s)));
            out.insert(format!("echo_c{c}_p50_ms"), json!(phase.p50_ms));
            out.insert(format!("echo_c{c}_p99_ms"), json!(phase.p99_ms));
            echo_phases.push(phase);
        }
        echo.stop(Duration::from_secs(10)).await?;
    }

    // 2. The registry.
    let pg = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            Some(PgDatabase::create(&args.postgres_url, &format!("bench_mint_{run}")).await?)
        }
    };
    let database_url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.join("population-registry.db").display()
        ),
    };
    let measured = async {
        let env = population_env(&certs, &database_url);
        let registry = Proc::spawn(
            "population-registry",
            &bins.population,
            &["serve".to_owned()],
            &env,
            &dir,
            dir.join("population-registry.log"),
        )
        .await?;
        eprintln!(
            "population-registry on {} (pid {}, {database_url})",
            registry.grpc, registry.pid
        );
        let r = measure_registry(&args, &registry, &certs, &records, &echo_phases, &mut out).await;
        let stats = proc::stats(registry.pid);
        let stopped = registry.stop(Duration::from_secs(60)).await;
        r?;
        let stats = stats?;
        out.insert("max_rss_mib".into(), json!(round1(stats.hwm_mib())));
        out.insert(
            "rss_end_mib".into(),
            json!(round1(stats.vm_rss_kib as f64 / 1024.0)),
        );
        out.insert(
            "registry_cpu_seconds".into(),
            json!(round1(stats.cpu_seconds)),
        );
        stopped.context("stopping the population registry")?;
        anyhow::Ok(())
    }
    .await;
    if let Some(pg) = pg {
        pg.drop_db().await;
    }
    measured?;
    out.insert("loadavg_end".into(), json!(proc::loadavg()));
    println!(
        "registry peak resident memory (VmHWM): {} MiB",
        out["max_rss_mib"]
    );
    if temporary && !args.dirs.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("data kept in {}", dir.display());
    }
    println!("RESULT {}", Value::Object(out));
    Ok(())
}

fn round(x: f64) -> f64 {
    x.round()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn measure_registry(
    args: &MintArgs,
    registry: &Proc,
    certs: &Certs,
    records: &Arc<RecordGen>,
    echo_phases: &[Phase],
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let tls = certs.traffic_client();
    let warmup = Duration::from_secs_f64(args.warmup);
    let seconds = Duration::from_secs_f64(args.seconds);
    let counter = Arc::new(AtomicU64::new(0));
    if !args.batch_only {
        for &c in &args.concurrency {
            let chans =
                connect_channels(&registry.uri(), &tls, args.channels.min(c).max(1)).await?;
            let clients: Arc<Vec<PopulationRegistryServiceClient<Channel>>> = Arc::new(
                chans
                    .into_iter()
                    .map(PopulationRegistryServiceClient::new)
                    .collect(),
            );
            let records = Arc::clone(records);
            let cpu0 = proc::stats(registry.pid)?.cpu_seconds;
            let seq0 = counter.load(Ordering::Relaxed);
            let phase = closed_loop(c, warmup, seconds, Arc::clone(&counter), move |seq| {
                let mut client = clients[(seq as usize) % clients.len()].clone();
                let req = records.issue(seq);
                async move {
                    client
                        .issue_personal_id(req)
                        .await
                        .map(|_| ())
                        .map_err(|s| s.code())
                }
            })
            .await;
            let cpu = proc::stats(registry.pid)?.cpu_seconds - cpu0;
            let calls_total = counter.load(Ordering::Relaxed) - seq0;
            println!("IssuePersonalId   {phase}");
            if !phase.errors_by_code.is_empty() {
                println!("  errors by code: {:?}", phase.errors_by_code);
            }
            out.insert(format!("unary_c{c}_per_s"), json!(round(phase.per_s)));
            out.insert(format!("unary_c{c}_p50_ms"), json!(phase.p50_ms));
            out.insert(format!("unary_c{c}_p99_ms"), json!(phase.p99_ms));
            out.insert(format!("unary_c{c}_errors"), json!(phase.errors));
            // CPU over every call of the phase, warm-up included (calls_total counts them).
            out.insert(
                format!("unary_c{c}_registry_cpu_us_per_call"),
                json!(round1(cpu * 1e6 / calls_total.max(1) as f64)),
            );
            if let Some(e) = echo_phases.iter().find(|e| e.concurrency == c) {
                let ratio = if e.per_s > 0.0 {
                    phase.per_s / e.per_s
                } else {
                    0.0
                };
                println!("  ratio to echo at c={c}: {:.3}", ratio);
                out.insert(format!("unary_c{c}_to_echo"), json!(round3(ratio)));
            }
        }
    }

    let streams = args.streams.max(1);
    let chans = connect_channels(&registry.uri(), &tls, streams).await?;
    let cpu0 = proc::stats(registry.pid)?.cpu_seconds;
    let client_cpu0 = proc::own_cpu_seconds();
    let first_seq = counter.load(Ordering::Relaxed);
    let batch = batch_phase(
        chans,
        Arc::clone(records),
        first_seq,
        args.numbers,
        args.batch_size.clamp(1, 1000),
        args.window.max(1),
    )
    .await?;
    let cpu = proc::stats(registry.pid)?.cpu_seconds - cpu0;
    let client_cpu = proc::own_cpu_seconds() - client_cpu0;
    let per_s = batch.issued as f64 / batch.seconds.max(1e-9);
    println!(
        "BatchIssuePersonalIds: {} numbers in {:.2} s = {:.0} numbers/s ({} streams x {} in flight x {} items); message p50 {:.1} ms p99 {:.1} ms; errors {:?}; duplicates {}; registry CPU {:.1} us/number, bench client CPU {:.1} us/number",
        batch.issued,
        batch.seconds,
        per_s,
        streams,
        args.window,
        args.batch_size,
        batch.msg_p50_ms,
        batch.msg_p99_ms,
        batch.errors,
        batch.duplicates,
        cpu * 1e6 / batch.issued.max(1) as f64,
        client_cpu * 1e6 / batch.issued.max(1) as f64,
    );
    out.insert("batch_numbers_per_s".into(), json!(round(per_s)));
    out.insert("batch_numbers".into(), json!(batch.issued));
    out.insert("batch_seconds".into(), json!(round3(batch.seconds)));
    out.insert(
        "batch_errors".into(),
        json!(batch.errors.values().sum::<u64>()),
    );
    out.insert("batch_not_newly_issued".into(), json!(batch.not_new));
    out.insert("batch_duplicates".into(), json!(batch.duplicates));
    out.insert("batch_message_p50_ms".into(), json!(batch.msg_p50_ms));
    out.insert("batch_message_p99_ms".into(), json!(batch.msg_p99_ms));
    out.insert(
        "batch_registry_cpu_us_per_number".into(),
        json!(round1(cpu * 1e6 / batch.issued.max(1) as f64)),
    );
    out.insert(
        "batch_client_cpu_us_per_number".into(),
        json!(round1(client_cpu * 1e6 / batch.issued.max(1) as f64)),
    );
    if let Some(e) = echo_phases.iter().max_by_key(|e| e.concurrency) {
        out.insert(
            "batch_to_echo".into(),
            json!(round3(per_s / e.per_s.max(1e-9))),
        );
    }
    if batch.issued == 0 {
        bail!("the batch phase minted nothing: {:?}", batch.errors);
    }
    Ok(())
}

/// Mints `numbers` numbers over one BatchIssuePersonalIds stream per channel, each with
/// `window` request messages of `batch_size` items in flight.
async fn batch_phase(
    channels: Vec<Channel>,
    records: Arc<RecordGen>,
    first_seq: u64,
    numbers: u64,
    batch_size: usize,
    window: usize,
) -> anyhow::Result<BatchResult> {
    let next = Arc::new(AtomicU64::new(first_seq));
    let end = first_seq + numbers;
    let start = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    // Progress every 10 s: shows whether the rate decays as the database grows.
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(10), Duration::from_secs(10));
            loop {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>6.0} s: {now} numbers, {:.0}/s over the last 10 s",
                    start.elapsed().as_secs_f64(),
                    (now - last) as f64 / 10.0
                );
                last = now;
            }
        })
    };
    let mut tasks = Vec::new();
    for ch in channels {
        let next = Arc::clone(&next);
        let records = Arc::clone(&records);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            one_stream(ch, records, next, end, batch_size, window, done).await
        }));
    }
    let mut total = BatchResult::default();
    let mut ids: Vec<u64> = Vec::with_capacity(numbers as usize);
    let mut h = histogram();
    for t in tasks {
        let (r, mut stream_ids, sh) = t.await.context("batch stream panicked")??;
        total.issued += r.issued;
        total.not_new += r.not_new;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
        ids.append(&mut stream_ids);
        let _ = h.add(&sh);
    }
    total.seconds = start.elapsed().as_secs_f64();
    progress.abort();
    total.msg_p50_ms = ms(h.value_at_quantile(0.5));
    total.msg_p99_ms = ms(h.value_at_quantile(0.99));
    ids.sort_unstable();
    total.duplicates = ids.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    Ok(total)
}

/// Longest a BatchIssuePersonalIds stream is kept open (the server's request timeout,
/// `server.request_timeout_ms`, default 30 s, bounds a whole streaming call).
const STREAM_SESSION: Duration = Duration::from_secs(20);

type StreamOutcome = (BatchResult, Vec<u64>, hdrhistogram::Histogram<u64>);

async fn one_stream(
    channel: Channel,
    records: Arc<RecordGen>,
    next: Arc<AtomicU64>,
    end: u64,
    batch_size: usize,
    window: usize,
    done: Arc<AtomicU64>,
) -> anyhow::Result<StreamOutcome> {
    let client = PopulationRegistryServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut r = BatchResult::default();
    let mut ids = Vec::new();
    let mut h = histogram();
    while next.load(Ordering::Relaxed) < end {
        let (tx, rx) = mpsc::channel::<BatchIssuePersonalIdsRequest>(window);
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
        let sem = Arc::new(Semaphore::new(window));
        let producer_sem = Arc::clone(&sem);
        let session_start = Instant::now();
        let records = Arc::clone(&records);
        let next = Arc::clone(&next);
        let producer = tokio::spawn(async move {
            // The server's request timeout bounds a whole stream: close this one in time and
            // open the next.
            while session_start.elapsed() < STREAM_SESSION {
                let Ok(permit) = Arc::clone(&producer_sem).acquire_owned().await else {
                    break;
                };
                permit.forget();
                let from = next.fetch_add(batch_size as u64, Ordering::Relaxed);
                if from >= end {
                    break;
                }
                let to = (from + batch_size as u64).min(end);
                let items = (from..to).map(|seq| records.issue(seq)).collect();
                let _ = sent_tx.send(Instant::now());
                if tx
                    .send(BatchIssuePersonalIdsRequest { items })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let response = client
            .clone()
            .batch_issue_personal_ids(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow::anyhow!("BatchIssuePersonalIds: {s}"))?;
        let mut inbound = response.into_inner();
        while let Some(msg) = inbound
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("BatchIssuePersonalIds stream: {s}"))?
        {
            sem.add_permits(1);
            done.fetch_add(msg.results.len() as u64, Ordering::Relaxed);
            if let Some(sent) = sent_rx.recv().await {
                let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
            }
            for item in msg.results {
                match item.outcome {
                    Some(Outcome::Issued(i)) => {
                        r.issued += 1;
                        if !i.newly_issued {
                            r.not_new += 1;
                        }
                        if let Ok(n) = i.personal_id.parse::<u64>() {
                            ids.push(n);
                        }
                    }
                    Some(Outcome::Error(st)) => {
                        *r.errors
                            .entry(format!("{:?}", tonic::Code::from_i32(st.code)))
                            .or_default() += 1;
                    }
                    None => *r.errors.entry("NoOutcome".into()).or_default() += 1,
                }
            }
        }
        producer.await.context("producer panicked")?;
    }
    Ok((r, ids, h))
}
