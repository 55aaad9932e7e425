//! A quick, ignored throughput probe of batch minting (the real benchmark is
//! `traffic bench mint`): `cargo test --release -p population-registry
//! --test batch_speed -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::{TestApp, TestDb, birth, issue};
use contracts::mps::population::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe, not a test"]
async fn batch_minting_throughput_on_sqlite() {
    let total: i64 = std::env::var("PROBE_NUMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let db = match TestDb::postgres().await {
        Some(db) if std::env::var("PROBE_POSTGRES").is_ok() => db,
        _ => TestDb::sqlite().await,
    };
    let mut cfg = common::config(&db);
    if let Some(n) = std::env::var("PROBE_GROUP_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.minting.max_group_items = n;
    }
    let mut app = TestApp::spawn_with(cfg).await;
    let messages: Vec<pb::BatchIssuePersonalIdsRequest> = (0..total / 1000)
        .map(|m| pb::BatchIssuePersonalIdsRequest {
            items: (0..1000)
                .map(|i| {
                    let n = m * 1000 + i + 1;
                    let mut b = birth(&format!("Trẻ {n}"), n);
                    b.registration_province_code =
                        ["001", "079", "031", "048", "092"][(n % 5) as usize].into();
                    if n % 2 == 0 {
                        b.sex = pb::Sex::Female.into();
                    }
                    issue(&format!("r{n}"), b)
                })
                .collect(),
        })
        .collect();

    let started = Instant::now();
    let mut stream = app
        .client
        .batch_issue_personal_ids(tokio_stream::iter(messages))
        .await
        .expect("stream")
        .into_inner();
    let mut minted = 0usize;
    while let Some(msg) = stream.message().await.expect("ok") {
        minted += msg.results.len();
    }
    let secs = started.elapsed().as_secs_f64();

    println!(
        "RESULT batch minted={minted} seconds={secs:.2} numbers_per_s={:.0}",
        minted as f64 / secs
    );
    assert_eq!(minted as i64, total);
    app.stop().await;
}

/// Unary IssuePersonalId at concurrency 128 (plaintext, one process): calls/s and p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe, not a test"]
async fn unary_minting_throughput_at_concurrency_128() {
    let total: usize = std::env::var("PROBE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let db = match TestDb::postgres().await {
        Some(db) if std::env::var("PROBE_POSTGRES").is_ok() => db,
        _ => TestDb::sqlite().await,
    };
    let app = TestApp::spawn(&db).await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..128)
        .map(|_| {
            let mut client = app.client.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total {
                        return latencies;
                    }
                    let mut b = birth(&format!("Trẻ {n}"), n as i64 + 1);
                    b.registration_province_code =
                        ["001", "079", "031", "048", "092"][n % 5].into();
                    let t = Instant::now();
                    client
                        .issue_personal_id(issue(&format!("u{n}"), b))
                        .await
                        .expect("issued");
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "RESULT unary c=128 calls={} seconds={secs:.2} per_s={:.0} p50_ms={:.1} p99_ms={:.1}",
        all.len(),
        all.len() as f64 / secs,
        p(0.5),
        p(0.99)
    );
    app.stop().await;
}
