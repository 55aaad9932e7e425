//! Layered configuration: defaults < TOML file < environment, unknown keys rejected, and
//! a binary (`kit-echo`) that exits 64 naming the bad key. Environment cases run the
//! binary as a child process: tests must not mutate their own process environment.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use service_kit::{ServerConfig, TelemetryConfig, config};

const KIT_ECHO: &str = env!("CARGO_BIN_EXE_kit-echo");

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TestConfig {
    server: ServerConfig,
    telemetry: TelemetryConfig,
}

fn write_file(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write config file");
    path
}

fn kit_echo(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(KIT_ECHO);
    command.args(args).env_remove("KIT_ECHO_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run kit-echo")
}

#[test]
fn config_layers_defaults_then_file_then_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        dir.path(),
        "kit.toml",
        "[server]\ndrain_timeout_ms = 111\nrequest_timeout_ms = 222\n",
    );

    let output = kit_echo(
        &[
            "--config",
            file.to_str().expect("utf-8 path"),
            "config",
            "show",
        ],
        &[
            ("KIT_ECHO_SERVER__REQUEST_TIMEOUT_MS", "333"),
            ("KIT_ECHO_TELEMETRY__LOG_FORMAT", "json"),
        ],
    );

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        shown["server"]["max_message_bytes"],
        4 * 1024 * 1024,
        "default kept"
    );
    assert_eq!(
        shown["server"]["drain_timeout_ms"], 111,
        "file over default"
    );
    assert_eq!(shown["server"]["request_timeout_ms"], 333, "env over file");
    assert_eq!(shown["telemetry"]["log_format"], "json", "env over default");
}

#[test]
fn the_config_file_can_be_named_by_the_prefixed_config_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(dir.path(), "kit.toml", "[server]\ndrain_timeout_ms = 42\n");

    let output = kit_echo(
        &["config", "show"],
        &[("KIT_ECHO_CONFIG", file.to_str().expect("utf-8 path"))],
    );

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(shown["server"]["drain_timeout_ms"], 42);
}

#[test]
fn an_invalid_environment_value_makes_the_binary_exit_64_naming_the_key() {
    let output = kit_echo(&["serve"], &[("KIT_ECHO_SERVER__DRAIN_TIMEOUT_MS", "soon")]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(config::EXIT_CONFIG), "{stderr}");
    assert!(
        stderr.contains("invalid configuration: server.drain_timeout_ms:"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("KIT_ECHO_SERVER__DRAIN_TIMEOUT_MS"),
        "names the variable: {stderr}"
    );
}

#[test]
fn an_invalid_file_value_makes_the_binary_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        dir.path(),
        "kit.toml",
        "[telemetry]\nlog_format = \"xml\"\n",
    );

    let output = kit_echo(&["--config", file.to_str().expect("utf-8 path")], &[]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("telemetry.log_format"),
        "names the key: {stderr}"
    );
}

#[test]
fn an_unreadable_certificate_makes_the_binary_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("server.pem");
    let missing = missing.to_str().expect("utf-8 path");

    let output = kit_echo(
        &["serve"],
        &[
            ("KIT_ECHO_SERVER__LISTEN_ADDR", "127.0.0.1:0"),
            ("KIT_ECHO_SERVER__TLS__INSECURE_PLAINTEXT", "false"),
            ("KIT_ECHO_SERVER__TLS__CERT_FILE", missing),
            ("KIT_ECHO_SERVER__TLS__KEY_FILE", missing),
        ],
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(config::EXIT_CONFIG), "{stderr}");
    assert!(
        stderr.contains("server.tls.cert_file: cannot read"),
        "names the key: {stderr}"
    );
}

#[test]
fn an_unknown_environment_key_makes_the_binary_exit_64() {
    let output = kit_echo(
        &["serve"],
        &[("KIT_ECHO_SERVER__LISTEN_ADRESS", "127.0.0.1:1")],
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("server.listen_adress: unknown key"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        dir.path(),
        "kit.toml",
        "[server.tls]\ninsecure_plaintext = true\ncert = \"x\"\n",
    );

    let error =
        config::load::<TestConfig>("KIT_TEST_UNUSED_", Some(&file)).expect_err("unknown key");

    assert_eq!(error.key, "server.tls.cert");
    assert!(error.reason.contains("unknown key"), "{error}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let error =
        config::load::<TestConfig>("KIT_TEST_UNUSED_", Some(Path::new("/nonexistent/kit.toml")))
            .expect_err("missing file");

    assert!(
        error.to_string().contains("/nonexistent/kit.toml"),
        "{error}"
    );
}

#[test]
fn defaults_apply_when_there_is_no_file_and_no_environment() {
    let loaded = config::load::<TestConfig>("KIT_TEST_UNUSED_", None).expect("defaults");

    assert_eq!(loaded.server.listen_addr.to_string(), "127.0.0.1:50051");
    assert_eq!(loaded.server.drain_timeout_ms, 10_000);
    assert_eq!(loaded.server.concurrency_limit_per_connection, 256);
    assert_eq!(loaded.telemetry.log_filter, "info");
    assert!(
        !loaded.server.tls.insecure_plaintext,
        "TLS is on by default"
    );
}

#[test]
fn keys_lists_every_key_with_its_environment_variable_and_default() {
    let keys = config::keys::<TestConfig>("POPULATION_REGISTRY_");

    let find = |key: &str| keys.iter().find(|(k, _, _)| k == key).cloned();
    assert_eq!(
        find("server.listen_addr"),
        Some((
            "server.listen_addr".into(),
            "POPULATION_REGISTRY_SERVER__LISTEN_ADDR".into(),
            "\"127.0.0.1:50051\"".into()
        ))
    );
    assert_eq!(
        find("server.tls.client_ca_file"),
        Some((
            "server.tls.client_ca_file".into(),
            "POPULATION_REGISTRY_SERVER__TLS__CLIENT_CA_FILE".into(),
            "null".into()
        )),
        "Option keys are listed too"
    );
    assert_eq!(
        find("telemetry.otlp_tls.ca_file").map(|(_, env, _)| env),
        Some("POPULATION_REGISTRY_TELEMETRY__OTLP_TLS__CA_FILE".into()),
        "nested tables are listed key by key"
    );
    assert_eq!(keys.len(), 19, "{keys:?}");
}

#[test]
fn kit_echo_serves_prints_its_address_and_stops_cleanly_on_sigterm() {
    // Arrange: the binary on port 0 with metrics.
    let mut child = Command::new(KIT_ECHO)
        .arg("serve")
        .env("KIT_ECHO_SERVER__LISTEN_ADDR", "127.0.0.1:0")
        .env("KIT_ECHO_SERVER__TLS__INSECURE_PLAINTEXT", "true")
        .env("KIT_ECHO_METRICS__LISTEN_ADDR", "127.0.0.1:0")
        .env("KIT_ECHO_TELEMETRY__LOG_FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kit-echo");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read LISTENING line");
    let grpc_addr = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("LISTENING grpc=ADDR metrics=ADDR, got {line:?}"))
        .to_string();
    assert!(line.starts_with("LISTENING grpc=127.0.0.1:"), "{line}");
    assert!(!line.contains("metrics=none"), "{line}");

    // Act: it answers health, then gets SIGTERM.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let serving = runtime.block_on(service_kit::healthcheck::check(
        &format!("http://{grpc_addr}"),
        &service_kit::ClientTlsConfig {
            insecure_plaintext: true,
            ..Default::default()
        },
        "kit.echo.v1.EchoService",
    ));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");

    // Assert
    assert!(serving.expect("health check"), "kit-echo is SERVING");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "kit-echo did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}
