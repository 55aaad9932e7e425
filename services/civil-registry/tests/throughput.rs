//! Throughput of RegisterBirth on SQLite (WAL, synchronous=FULL) with numbers obtained from
//! a fake population registry: a measurement, not a gate. Run with
//! `cargo test --release -p civil-registry --test throughput -- --ignored --nocapture`
//! (THROUGHPUT_TOTAL, THROUGHPUT_CONCURRENCY, THROUGHPUT_RELAY=0 for the register path
//! alone, THROUGHPUT_BACKEND=postgres with TEST_POSTGRES_URL).

mod support;

use std::time::Instant;

use contracts::moj::civilstatus::v1 as pb;
use support::{Backend, TestApp, auth, birth};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run explicitly"]
async fn register_birth_throughput_on_sqlite_with_full_sync() {
    let total: usize = std::env::var("THROUGHPUT_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let concurrency: usize = std::env::var("THROUGHPUT_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let relay = std::env::var("THROUGHPUT_RELAY")
        .map(|v| v != "0")
        .unwrap_or(true);
    let backend = match std::env::var("THROUGHPUT_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let app = TestApp::start_with(backend, |cfg| {
        cfg.relay.enabled = relay;
        if let Some(n) = std::env::var("THROUGHPUT_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.relay.max_in_flight_batches = n;
        }
        if !relay {
            cfg.registration.wait_for_number_ms = 0;
        }
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(app.client().await);
    }
    let token = app.token("reg_c001");
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut client = clients[w % clients.len()].clone();
        let token = token.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut issued = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return issued;
                }
                let r = client
                    .register_birth(auth(birth(&format!("tp-{i}")), &token))
                    .await
                    .unwrap();
                if r.into_inner().registration.unwrap().personal_id_status
                    == pb::PersonalIdStatus::Issued as i32
                {
                    issued += 1;
                }
            }
        }));
    }
    let mut issued = 0;
    for t in tasks {
        issued += t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "backend={backend:?} relay={relay} registrations={total} concurrency={concurrency} seconds={elapsed:.2} per_second={:.0} issued_in_response={issued}",
        total as f64 / elapsed
    );
    assert_eq!(app.count_registrations().await, total as i64);
    app.stop().await;
}
