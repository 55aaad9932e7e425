//! SQLite has one write lock per file, and its busy handler does not queue waiters: it
//! sleeps 1, 2, 5 ... 100 ms between attempts. The writes of one process therefore take
//! turns in the process (`Store::write_turn`) and never meet that handler. With the busy
//! timeout at zero, any write that found the lock taken would fail at once with "database
//! is locked"; here none may.

use civil_registry::config::DatabaseConfig;
use civil_registry::domain::model::{ProvinceCode, UnitCode, UnitLevel};
use civil_registry::store::{Store, UnitInput};

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
async fn the_writer_and_the_pool_take_turns_instead_of_meeting_the_busy_handler() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DatabaseConfig {
        url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("civil-registry.db").display()
        ),
        busy_timeout_ms: 0,
        ..DatabaseConfig::default()
    };
    let store = Store::connect(&cfg).await.unwrap();
    store.migrate().await.unwrap();
    // The group-commit writer's own connection, as `App::build` opens it.
    let writer = store.writer(&cfg).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        for (on, name) in [(writer.clone(), "writer"), (store.clone(), "pool")] {
            tasks.spawn(async move {
                for i in 0..40 {
                    let code = format!("W{task}{name}{i}");
                    on.import_units(&[unit(&code)], "test")
                        .await
                        .map_err(|e| format!("{name} write {i}: {e:#}"))?;
                }
                Ok::<_, String>(())
            });
        }
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
    let units = store.units().await.unwrap();
    assert_eq!(units.len(), 4 * 2 * 40, "every write committed");
}
