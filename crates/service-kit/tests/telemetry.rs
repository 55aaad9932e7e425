//! telemetry::init: filter validation, OTLP export set-up, single global install, and a
//! guard whose flush does not hang when the collector is unreachable. One binary, one
//! global subscriber.

use std::time::Duration;

use service_kit::{ClientTlsConfig, LogFormat, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_validates_the_filter_installs_once_and_the_guard_flushes_without_hanging() {
    // An invalid filter is refused before anything is installed.
    let invalid = service_kit::telemetry::init(
        "kit-test",
        &TelemetryConfig {
            log_filter: "info,[bad".into(),
            ..TelemetryConfig::default()
        },
    );
    assert!(
        invalid
            .expect_err("invalid filter")
            .to_string()
            .contains("telemetry.log_filter"),
        "the error names the key"
    );

    // A plaintext collector without the explicit switch is refused, naming the keys.
    let plaintext = service_kit::telemetry::init(
        "kit-test",
        &TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:1".into()),
            ..TelemetryConfig::default()
        },
    );
    assert!(
        format!("{:#}", plaintext.expect_err("plaintext collector")).contains("telemetry.otlp"),
        "the error names the keys"
    );

    // JSON logs with OTLP export to a collector that is not there.
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        log_filter: "warn".into(),
        otlp_endpoint: Some("http://127.0.0.1:1".into()),
        otlp_tls: ClientTlsConfig {
            insecure_plaintext: true,
            ..ClientTlsConfig::default()
        },
    };
    let mut guard = service_kit::telemetry::init("kit-test", &config).expect("first init");
    tracing::info_span!("some.work").in_scope(|| tracing::warn!("a log line"));

    let second = service_kit::telemetry::init("kit-test", &TelemetryConfig::default());
    assert!(second.is_err(), "a second global subscriber is refused");

    let flushed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || guard.shutdown()),
    )
    .await;
    assert!(
        flushed.is_ok(),
        "flushing to an unreachable collector is bounded"
    );
}
