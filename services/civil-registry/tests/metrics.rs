//! What operators read: the group-commit timing and the gauges the alert rules read
//! (deploy/k8s/overlays/prod-monitoring/prometheusrules.yaml). The metrics recorder is
//! global to the process, so these checks live in a test binary of their own, one
//! service at a time: every figure they see comes from the service they started.

mod support;

use std::time::Duration;

use support::{Backend, TestApp, auth, birth};

/// The value of the series `name` (with its labels, if any) in the rendered metrics.
fn value(rendered: &str, name: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Registers births while the population registry is down, and reads what the service
/// reports about them. Each backend queues a different number of births, so that a gauge
/// left by the run before cannot pass for this one's.
async fn commits_and_queued_births_are_reported(backend: Backend) {
    // Arrange
    let metrics = service_kit::metrics::handle().expect("recorder");
    let app = TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 50).await;
    app.fake.set_down(true);
    let mut client = app.client().await;
    let births = match backend {
        Backend::Sqlite => 3,
        Backend::Postgres => 4,
    };
    let commits_before = value(
        &metrics.render(),
        "civil_registry_write_transaction_seconds_count",
    )
    .unwrap_or(0.0);

    // Act
    for i in 0..births {
        client
            .register_birth(auth(birth(&format!("queued-{i}")), &app.token("reg_c001")))
            .await
            .expect("registered");
    }

    // Assert: each registration was a timed commit; the sampler (every 5 s) sees the births
    // queued for their numbers.
    let rendered = metrics.render();
    let commits = value(&rendered, "civil_registry_write_transaction_seconds_count").unwrap_or(0.0);
    assert!(
        commits >= commits_before + f64::from(births),
        "{backend:?}: {commits_before} commits before, {commits} after {births} registrations"
    );
    let queued = [
        ("civil_registry_outbox_depth", f64::from(births)),
        (
            "civil_registry_registrations{status=\"PENDING\"}",
            f64::from(births),
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut rendered = metrics.render();
    while queued
        .iter()
        .any(|(name, v)| value(&rendered, name) != Some(*v))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        rendered = metrics.render();
    }
    for (name, expected) in queued {
        assert_eq!(
            value(&rendered, name),
            Some(expected),
            "{backend:?}: {name}\n{rendered}"
        );
    }
    let oldest = value(
        &rendered,
        "civil_registry_outbox_oldest_pending_age_seconds",
    );
    assert!(
        oldest.is_some_and(|age| age >= 0.0),
        "{backend:?}\n{rendered}"
    );
    assert!(
        value(&rendered, "civil_registry_metrics_sample_seconds").is_some(),
        "{backend:?}\n{rendered}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_is_timed_and_the_alerts_gauges_count_the_queued_births() {
    commits_and_queued_births_are_reported(Backend::Sqlite).await;
    if std::env::var("TEST_POSTGRES_URL").is_err() {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    }
    commits_and_queued_births_are_reported(Backend::Postgres).await;
}
