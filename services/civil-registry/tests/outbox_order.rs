//! The relay's claims take the longest overdue rows first and pass over rows another relay
//! holds; when nothing is due, it sleeps until the earliest row no relay holds. The depth
//! gauge counts the queue and dates its oldest row.

mod support;

use sqlx::Connection as _;
use support::{Backend, TestApp, auth, birth};

/// Issue keys of the queued rows, in the order they were created.
async fn queued_keys(app: &TestApp) -> Vec<String> {
    let mut conn = sqlx::AnyConnection::connect(&app.db_url).await.unwrap();
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT issue_key FROM outbox ORDER BY created_at_ms, issue_key")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.ok();
    keys
}

async fn claimed(app: &TestApp, limit: i64) -> Vec<String> {
    let mut keys: Vec<String> = app
        .store
        .claim_outbox("relay-under-test", limit, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.key)
        .collect();
    keys.sort();
    keys
}

fn sorted(keys: &[&String]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| (*k).clone()).collect();
    keys.sort();
    keys
}

/// A registry whose population side was down while `n` births were registered, one every
/// few milliseconds (distinct creation times), then halted: only the queued rows, and the
/// test's own claims, from here on. Returns it with the rows' keys in creation order.
async fn queued_births(backend: Backend, prefix: &str, n: usize) -> (TestApp, Vec<String>) {
    let mut app = TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 0).await;
    app.fake.set_down(true);
    let mut client = app.client().await;
    let token = app.token("reg_c001");
    for i in 0..n {
        client
            .register_birth(auth(birth(&format!("{prefix}-{i}")), &token))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    app.halt().await;
    let keys = queued_keys(&app).await;
    assert_eq!(keys.len(), n, "one queued row per eligible registration");
    (app, keys)
}

async fn claims_take_the_longest_overdue_rows_first(backend: Backend) {
    let (app, keys) = queued_births(backend, "overdue", 7).await;
    let now = chrono::Utc::now().timestamp_millis();
    let in_an_hour = now + 3_600_000;
    // (next attempt, leased by another relay until): due in an order unlike creation's; the
    // last row's relay crashed and its lease has run out.
    let plan = [
        (5_000, 0),
        (1_000, 0),
        (3_000, 0),
        (2_000, now + 60_000),
        (4_000, 0),
        (in_an_hour, 0),
        (6_000, now - 1),
    ];
    for (key, (next_attempt, lease_until)) in keys.iter().zip(plan) {
        app.sql(&format!(
            "UPDATE outbox SET next_attempt_ms = {next_attempt}, lease_until_ms = {lease_until}, \
             lease_owner = {} WHERE issue_key = '{key}'",
            if lease_until > 0 {
                "'another-relay'"
            } else {
                "NULL"
            }
        ))
        .await;
    }
    // Tried three times before: the claim counts the fourth attempt (backoff grows with it).
    app.sql(&format!(
        "UPDATE outbox SET attempts = 3 WHERE issue_key = '{}'",
        keys[4]
    ))
    .await;

    assert_eq!(
        claimed(&app, 2).await,
        sorted(&[&keys[1], &keys[2]]),
        "the two longest overdue, past the one another relay holds"
    );
    let rest = app
        .store
        .claim_outbox("relay-under-test", 10, 60_000)
        .await
        .unwrap();
    let mut rest_keys: Vec<String> = rest.iter().map(|item| item.key.clone()).collect();
    rest_keys.sort();
    assert_eq!(
        rest_keys,
        sorted(&[&keys[4], &keys[0], &keys[6]]),
        "the rest of the due rows and the one whose lease ran out; the held one and the \
         one due in an hour stay"
    );
    let attempts = |key: &String| rest.iter().find(|item| &item.key == key).unwrap().attempts;
    assert_eq!(attempts(&keys[4]), 4);
    assert_eq!(claimed(&app, 10).await, Vec::<String>::new());
    assert_eq!(
        app.store.next_outbox_due().await.unwrap(),
        Some(in_an_hour),
        "the relay sleeps until the earliest row no relay holds"
    );
    app.stop().await;
}

/// The oldest queued row's creation time, read the slow way.
const OLDEST: &str = "SELECT MIN(created_at_ms) FROM outbox";

async fn the_depth_gauge_counts_the_queue_and_dates_its_oldest_row(backend: Backend) {
    let (app, keys) = queued_births(backend, "queued", 5).await;
    let (depth, oldest) = app.store.outbox_depth().await.unwrap();
    assert_eq!(depth, 5);
    assert_eq!(oldest, Some(app.scalar(OLDEST).await));

    // The oldest row failed and waits an hour for its next attempt: still the oldest.
    app.sql(&format!(
        "UPDATE outbox SET next_attempt_ms = next_attempt_ms + 3600000, attempts = 3 \
         WHERE issue_key = '{}'",
        keys[0]
    ))
    .await;
    assert_eq!(app.store.outbox_depth().await.unwrap(), (5, oldest));

    // The two oldest were delivered: the third is now the oldest.
    app.sql(&format!(
        "DELETE FROM outbox WHERE issue_key IN ('{}', '{}')",
        keys[0], keys[1]
    ))
    .await;
    let (depth, third) = app.store.outbox_depth().await.unwrap();
    assert_eq!(depth, 3);
    assert_eq!(third, Some(app.scalar(OLDEST).await));
    assert!(third > oldest, "{third:?} after {oldest:?}");

    app.sql("DELETE FROM outbox").await;
    assert_eq!(app.store.outbox_depth().await.unwrap(), (0, None));
    app.stop().await;
}

both_backends!(
    claims_take_the_longest_overdue_rows_first,
    the_depth_gauge_counts_the_queue_and_dates_its_oldest_row,
);
