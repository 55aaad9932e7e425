//! Breaking the service's own database: health turns NOT_SERVING and calls answer
//! UNAVAILABLE (never hang). The population registry being down does not affect health.
//! PostgreSQL lets a test take the database away from under the running service.

mod support;

use std::time::Duration;

use contracts::moj::civilstatus::v1 as pb;
use support::{Backend, TestApp, auth, birth};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(app: &TestApp) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// A session of its own in a transaction that has run `lock` and holds what it took until
/// [`release`].
async fn another_session_holding(app: &TestApp, lock: &'static str) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    let mut session = sqlx::AnyConnection::connect(&app.db_url)
        .await
        .expect("connect");
    for statement in ["BEGIN", lock] {
        sqlx::query(statement)
            .execute(&mut session)
            .await
            .expect(statement);
    }
    session
}

async fn release(mut session: sqlx::AnyConnection) {
    sqlx::query("ROLLBACK")
        .execute(&mut session)
        .await
        .expect("release");
}

async fn wait_for(app: &TestApp, status: ServingStatus) {
    for _ in 0..100 {
        if health(app).await == status as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never became {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_population_registry_down_leaves_the_service_serving_on_sqlite() {
    // Arrange
    let app = TestApp::start_with(Backend::Sqlite, |cfg| {
        cfg.registration.wait_for_number_ms = 50
    })
    .await;
    app.fake.set_down(true);
    // Act
    let r = app
        .client()
        .await
        .register_birth(auth(birth("h-1"), &app.token("reg_c001")))
        .await
        .unwrap();
    // The relay has failed often enough to open its circuit breaker.
    let threshold = app.cfg.relay.breaker_failure_threshold as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.fake.refused_while_down() < threshold {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay tried {} times",
            app.fake.refused_while_down()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Assert
    assert_eq!(
        r.into_inner().registration.unwrap().personal_id_status,
        pb::PersonalIdStatus::Pending as i32
    );
    assert_eq!(health(&app).await, ServingStatus::Serving as i32);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_gone_turns_health_not_serving_and_calls_unavailable() {
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    // Arrange
    let app = TestApp::start_with(Backend::Postgres, |cfg| {
        cfg.database.acquire_timeout_ms = 500
    })
    .await;
    wait_for(&app, ServingStatus::Serving).await;
    let name = app.db_url.rsplit('/').next().unwrap().to_owned();
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap();
    // Act
    app.store.close().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // Assert
    wait_for(&app, ServingStatus::NotServing).await;
    // A call left waiting would end at the client's deadline, DEADLINE_EXCEEDED.
    let mut request = auth(birth("gone"), &app.token("reg_c001"));
    request.set_timeout(Duration::from_secs(5));
    let status = app
        .client()
        .await
        .register_birth(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_each_waiting_group_at_once_not_row_by_row() {
    // Arrange: another process holds SQLite's write lock (an operator's admin command, say),
    // and the service gives up on it after 250 ms. Callers would wait a minute for a
    // number: a failed group must release its callers at once, not leave them waiting.
    use sqlx::Connection as _;
    let app = TestApp::start_with(Backend::Sqlite, |cfg| {
        cfg.database.busy_timeout_ms = 250;
        cfg.registration.wait_for_number_ms = 60_000;
    })
    .await;
    let mut holder = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let token = app.token("reg_c001");

    // Act: 32 registrations at once, each allowed 5 s: enough for a few groups to wait
    // out the lock, not for 32 rows to wait it out one after another (8 s).
    let calls = (0..32).map(|i| {
        let token = token.clone();
        let app = &app;
        async move {
            let mut request = auth(birth(&format!("locked-{i}")), &token);
            request.set_timeout(Duration::from_secs(5));
            app.client().await.register_birth(request).await
        }
    });
    let answers = futures::future::join_all(calls).await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let after = app
        .client()
        .await
        .register_birth(auth(birth("after"), &token))
        .await;

    // Assert: every call refused as UNAVAILABLE in time, nothing written; the lock gone,
    // registering works again.
    let codes: Vec<tonic::Code> = answers
        .iter()
        .map(|a| a.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok))
        .collect();
    assert_eq!(codes, vec![tonic::Code::Unavailable; 32]);
    assert!(after.is_ok(), "{after:?}");
    assert_eq!(app.count_registrations().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_registrations_and_health_go_on_while_lookups_hold_every_pooled_connection() {
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    // Arrange: a lookup pool of two, both held (a burst of lists, a slow statistics
    // query); the official's token already checked, so that the call needs no lookup.
    let app = TestApp::start_with(Backend::Postgres, |cfg| {
        cfg.database.max_connections = 2;
        cfg.database.acquire_timeout_ms = 300;
        cfg.database.health_check_interval_ms = 50;
    })
    .await;
    let token = app.token("reg_c001");
    let mut client = app.client().await;
    client
        .register_birth(auth(birth("before"), &token))
        .await
        .expect("first registration");
    let served = app.served_store.clone().expect("served");
    let held = (
        served.pool().acquire().await.expect("first connection"),
        served.pool().acquire().await.expect("second connection"),
    );

    // Act
    let mut request = auth(birth("while-held"), &token);
    request.set_timeout(Duration::from_secs(10));
    let registered = client.register_birth(request).await;
    // Probes every 50 ms, each of which would give up on the held pool after 300 ms.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let health_while_held = health(&app).await;
    drop(held);

    // Assert: committed and numbered through the write connections.
    let registered = registered.expect("registered while the lookups' pool was exhausted");
    let registration = registered.into_inner().registration.expect("registration");
    assert_eq!(
        registration.personal_id_status,
        pb::PersonalIdStatus::Issued as i32
    );
    assert_eq!(
        health_while_held,
        ServingStatus::Serving as i32,
        "a busy lookup pool is not an unreachable database"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_starting_during_another_migration_does_not_wait_for_its_lock() {
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    // Arrange: a migrated database, and the migration lock held by another connection (a
    // rollout's `migrate` init container in the middle of a long migration).
    let app = TestApp::start(Backend::Postgres).await;
    let holding = another_session_holding(&app, "SELECT pg_advisory_xact_lock(730500104)").await;

    // Act: what `serve` does at start.
    let migrated = tokio::time::timeout(Duration::from_secs(10), app.store.migrate()).await;
    release(holding).await;

    // Assert
    migrated
        .expect("nothing pending: no wait for the lock")
        .expect("migrate");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_session_left_idle_in_a_transaction_is_ended_by_the_server() {
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    // Arrange
    let app = TestApp::start(Backend::Postgres).await;

    // Act
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(app.store.pool())
        .await
        .expect("show");

    // Assert: a replica cut off mid-transaction releases its locks within a minute.
    assert_eq!(timeout, "1min");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_commit_held_up_by_another_session_is_answered_unavailable_and_lands_later() {
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    // Arrange: the audit head's row locked by another session (a replica stuck
    // mid-transaction), a commit timeout of 300 ms.
    let app = TestApp::start_with(Backend::Postgres, |cfg| {
        cfg.registration.commit_timeout_ms = 300;
        cfg.registration.wait_for_number_ms = 0;
    })
    .await;
    let token = app.token("reg_c001");
    let before = app.count_registrations().await;
    let holding =
        another_session_holding(&app, "SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE").await;

    // Act
    let mut request = auth(birth("held-up"), &token);
    request.set_timeout(Duration::from_secs(10));
    let held_up = app.client().await.register_birth(request).await;
    release(holding).await;
    let retried = app
        .client()
        .await
        .register_birth(auth(birth("held-up"), &token))
        .await;

    // Assert: UNAVAILABLE within the call's deadline, then one registration for the key.
    assert_eq!(
        held_up.expect_err("held up").code(),
        tonic::Code::Unavailable
    );
    retried.expect("the retry returns the registration");
    assert_eq!(app.count_registrations().await, before + 1);
    app.stop().await;
}
