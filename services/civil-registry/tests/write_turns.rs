//! SQLite has one write lock per file, and its busy handler does not queue waiters: it
//! sleeps 1, 2, 5 ... 100 ms between attempts. The writes of one process therefore take
//! turns in the process (`Store::write_turn`) and never meet that handler: the group
//! commits on the writer's own thread and connection, the relay's claims and write-backs,
//! and every other write through the pool. With the busy timeout at zero, any write that
//! found the lock taken would fail at once with "database is locked"; here none may.

mod support;

use civil_registry::domain::model::{ProvinceCode, UnitCode, UnitLevel};
use civil_registry::store::UnitInput;
use support::{Backend, TestApp, auth, birth};

fn unit(code: &str) -> UnitInput {
    UnitInput {
        code: UnitCode::parse(code).unwrap(),
        name: format!("Unit {code}"),
        level: UnitLevel::parse("province").unwrap(),
        province_code: ProvinceCode::parse("001").unwrap(),
        parent_code: None,
        active: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commits_relay_claims_and_pool_writes_take_turns_not_meeting_the_busy_handler() {
    let mut app = TestApp::start(Backend::Sqlite).await;
    app.halt().await;
    app.cfg.database.busy_timeout_ms = 0;
    // Starting can find the file locked while the service's own connections open and
    // check each migration under the write lock (5 starts of 60 here, before any of the
    // writes below; under a loaded test run, several in a row while the halted instance's
    // connections close), and with no busy timeout that start fails. The start is not what
    // this test is about: it is tried again, a moment later. The writes below get no such
    // second chance.
    let mut attempts = 0;
    while let Err(e) = app.try_launch().await {
        attempts += 1;
        assert!(
            attempts < 20 && format!("{e:#}").contains("database is locked"),
            "start: {e:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let store = app.served_store.clone().expect("served");
    let units_before = store.units().await.unwrap().len();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        // Registrations: the writer's group commits, then the relay's write-backs.
        let mut client = app.client().await;
        let token = app.token("reg_c001");
        tasks.spawn(async move {
            for i in 0..40 {
                client
                    .register_birth(auth(birth(&format!("turns-{task}-{i}")), &token))
                    .await
                    .map_err(|e| format!("register {i}: {e}"))?;
            }
            Ok::<_, String>(())
        });
        // Transactions through the pool.
        let pool = store.clone();
        tasks.spawn(async move {
            for i in 0..40 {
                pool.import_units(&[unit(&format!("W{task}P{i}"))], "test")
                    .await
                    .map_err(|e| format!("pool write {i}: {e:#}"))?;
            }
            Ok(())
        });
        // The relay's claim is a single UPDATE outside any transaction.
        let pool = store.clone();
        tasks.spawn(async move {
            for i in 0..40 {
                pool.claim_outbox("relay-test", 10, 1_000)
                    .await
                    .map_err(|e| format!("claim {i}: {e}"))?;
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(
        app.count_registrations().await,
        4 * 40,
        "every registration committed"
    );
    let units = store.units().await.unwrap();
    assert_eq!(
        units.len(),
        units_before + 4 * 40,
        "every pool write committed"
    );
    app.stop().await;
}
