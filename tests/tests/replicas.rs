//! Replicas: three population-registry and two civil-registry processes, each ministry on
//! its own fresh PostgreSQL database, under concurrent load spread over both civil
//! instances. The relays reach the population replicas through a round-robin TCP proxy
//! that drops every connection a few times during the load, so that a batch may be
//! committed by one replica and retried on another. No number twice; no outbox row sent
//! twice with different content (no ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED anywhere, and
//! the replicas together minted exactly one number per eligible registration); `traffic
//! verify` holds.
//!
//! Runs only when TEST_POSTGRES_URL is set. `E2E_HEAVY=1` uses ten times more load.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, env, findings, heavy};
use e2e_tests::proxy::{Mode, Proxy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use traffic::replay::{Mode as ReplayMode, ReplayOptions, replay};
use traffic::stack::ServiceProcess;

/// A fresh database on the TEST_POSTGRES_URL server, dropped (best effort) on drop.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin: &str, prefix: &str) -> Self {
        use sqlx::Connection as _;
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await: a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The Prometheus text of a process's /metrics.
async fn scrape(process: &ServiceProcess) -> String {
    let addr = process.metrics.expect("metrics endpoint");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    out
}

/// Sum of a metric's samples (every label set) in a Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_population_and_two_civil_replicas_on_postgres_mint_each_number_once() {
    let Ok(admin) = std::env::var("TEST_POSTGRES_URL") else {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    };
    // Arrange: one database per ministry; the first pair of processes (the stack), then
    // two more population replicas and a second civil instance on the same databases.
    let civil_db = PgDatabase::create(&admin, "e2e_civil").await;
    let population_db = PgDatabase::create(&admin, "e2e_population").await;
    let proxy = Proxy::start(Vec::new()).await.expect("proxy");
    let scale = if heavy() { 0.03 } else { 0.004 };
    let mut fleet = Fleet::start(
        scale,
        &env(&[
            ("POPULATION_REGISTRY_DATABASE__URL", &population_db.url),
            ("CIVIL_REGISTRY_DATABASE__URL", &civil_db.url),
            (
                "CIVIL_REGISTRY_POPULATION_REGISTRY__URI",
                &format!("https://{}", proxy.addr()),
            ),
            // Small batches, so that the load makes many calls.
            ("CIVIL_REGISTRY_RELAY__BATCH_SIZE", "16"),
        ]),
    )
    .await;
    let mut populations = vec![
        fleet.stack.spawn_population(&[]).await.expect("replica 2"),
        fleet.stack.spawn_population(&[]).await.expect("replica 3"),
    ];
    proxy.set_upstreams(
        std::iter::once(fleet.stack.population.grpc)
            .chain(populations.iter().map(|p| p.grpc))
            .collect(),
    );
    let second_civil = fleet.stack.spawn_civil(&[]).await.expect("civil 2");
    let everything = fleet.slice("everything", 0..fleet.lines.len());
    // Requests alternate over two connections to each civil instance.
    let mut channels = fleet.channels(&fleet.stack.civil.uri(), 1);
    channels.extend(fleet.channels(&second_civil.uri(), 1));
    channels.extend(fleet.channels(&fleet.stack.civil.uri(), 1));
    channels.extend(fleet.channels(&second_civil.uri(), 1));
    let opts = ReplayOptions {
        mode: ReplayMode::Concurrency(32),
        number_timeout: Duration::from_secs(60),
        ..ReplayOptions::default()
    };

    // Act: the load, with every relay connection dropped three times along the way.
    let tokens = fleet.tokens.clone();
    let file = everything.clone();
    let loading = tokio::spawn(async move { replay(&file, channels, tokens, &opts).await });
    let total = fleet.lines.len() as i64;
    for quarter in 1..=3 {
        fleet
            .until_registered(total * quarter / 4, Duration::from_secs(120))
            .await;
        proxy.set_mode(Mode::Drop);
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.set_mode(Mode::PassThrough);
    }
    let report = loading.await.expect("replay task").expect("replay");

    // Assert
    let outcomes = report.outcomes.clone();
    let verified = fleet.verify(&everything, &outcomes).await;
    let found = findings(&report, &verified);
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(verified.registrations as i64, total);
    let mut minted = metric_sum(
        &scrape(&fleet.stack.population).await,
        "population_registry_numbers_issued_total",
    );
    for p in &populations {
        minted += metric_sum(&scrape(p).await, "population_registry_numbers_issued_total");
    }
    assert_eq!(
        minted as u64, verified.issued,
        "numbers minted by the three replicas together vs ISSUED registrations"
    );
    for civil in [&fleet.stack.civil, &second_civil] {
        let text = scrape(civil).await;
        let conflicts = text
            .lines()
            .filter(|l| {
                l.starts_with("civil_registry_relay_outcomes_total")
                    && (l.contains("ALREADY_EXISTS") || l.contains("INVALID_ARGUMENT"))
            })
            .collect::<Vec<_>>();
        assert!(conflicts.is_empty(), "relay refusals: {conflicts:?}");
        assert!(
            metric_sum(&text, "civil_registry_relay_outcomes_total") > 0.0,
            "civil instance {} relayed nothing",
            civil.grpc
        );
    }
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(&fleet.stack.data_dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(
            !text.contains("IDEMPOTENCY_KEY_REUSED") && !text.contains("ALREADY_EXISTS"),
            "{} mentions a reused idempotency key",
            log.display()
        );
    }
    eprintln!(
        "{} registrations over two civil instances, {} numbers minted by three population replicas, {} relay connections",
        report.registrations,
        minted,
        proxy.accepted()
    );
    second_civil
        .stop(Duration::from_secs(30))
        .await
        .expect("civil 2 stops");
    for p in populations.drain(..) {
        p.stop(Duration::from_secs(30))
            .await
            .expect("replica stops");
    }
    fleet
        .stack
        .stop()
        .await
        .expect("both services stop cleanly");
}
