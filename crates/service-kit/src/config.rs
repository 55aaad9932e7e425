//! Layered configuration: `T::default()` < optional TOML file < environment variables,
//! plus the reusable config sections every service embeds.
//!
//! Environment variables are `{PREFIX}{KEY}` with `__` between nested keys, e.g.
//! `POPULATION_REGISTRY_SERVER__LISTEN_ADDR` for `server.listen_addr`. Unknown keys are
//! errors as long as the service's root config type (like every section here) uses
//! `#[serde(deny_unknown_fields)]`; `{PREFIX}CONFIG` is exempt because by convention it
//! names the config file itself.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Exit code for an invalid configuration: 64, sysexits.h's `EX_USAGE` (the command was
/// started wrongly), apart from 1 for failures at run time.
pub const EXIT_CONFIG: i32 = 64;

/// An invalid configuration: which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted key, e.g. `server.listen_addr` (`config file` when the file itself is missing).
    pub key: String,
    /// Human-readable reason, including where the bad value came from when known.
    pub reason: String,
}

impl ConfigError {
    /// The error for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The exit code for an error that stopped a binary: [`EXIT_CONFIG`] when a
/// [`ConfigError`] is among its causes (a value that parsed but cannot work, found while
/// starting), 1 otherwise. Operators and supervisors tell "fix the configuration" from
/// "retry later" by it.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.chain().any(|cause| cause.is::<ConfigError>()) {
        EXIT_CONFIG
    } else {
        1
    }
}

/// Loads `T` from its defaults, then the optional TOML `file`, then environment variables
/// named `{env_prefix}{KEY}` (nested keys joined by `__`). A missing `file` is an error:
/// an operator who names a file expects it to be read.
pub fn load<T>(env_prefix: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError {
                key: "config file".to_string(),
                reason: format!("{} does not exist", file.display()),
            });
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed(env_prefix).split("__").ignore(&["config"]));
    figment
        .extract::<T>()
        .map_err(|error| from_figment(error, env_prefix))
}

/// [`load`], or on error prints `invalid configuration: {key}: {reason}` to stderr and exits
/// with [`EXIT_CONFIG`]. For `main`, before telemetry exists.
pub fn load_or_exit<T>(env_prefix: &str, file: Option<&Path>) -> T
where
    T: DeserializeOwned + Serialize + Default,
{
    match load(env_prefix, file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// Every key of `T`'s defaults as `(dotted key, env var name, default as JSON)`, sorted by
/// key, `Option`s included (as `null`). Used by each binary's `config keys` subcommand so
/// that the operations guide can be checked against the code.
pub fn keys<T: Serialize + Default>(env_prefix: &str) -> Vec<(String, String, String)> {
    let value = serde_json::to_value(T::default()).unwrap_or(serde_json::Value::Null);
    let mut out = Vec::new();
    flatten(&value, &mut Vec::new(), &mut out);
    out.into_iter()
        .map(|(path, default)| {
            let env = env_var(env_prefix, &path);
            (path.join("."), env, default)
        })
        .collect()
}

fn flatten(
    value: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    match value {
        // An empty map is still a key an operator can set, so it is listed as `{}`.
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                flatten(child, path, out);
                path.pop();
            }
        }
        other => out.push((path.clone(), other.to_string())),
    }
}

fn from_figment(error: figment::Error, env_prefix: &str) -> ConfigError {
    // figment chains errors; the first is as good as any and keeps the message short.
    let mut path = error.path.clone();
    let reason = match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            "unknown key".to_string()
        }
        figment::error::Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing key".to_string()
        }
        kind => kind.to_string(),
    };
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| match &metadata.source {
            Some(source) => format!("{source}"),
            // Only the environment provider has no source; name the exact variable.
            None => format!("environment variable {}", env_var(env_prefix, &path)),
        });
    let reason = match source {
        Some(source) => format!("{reason} (from {source})"),
        None => reason,
    };
    ConfigError {
        key: path.join("."),
        reason,
    }
}

fn env_var<S: AsRef<str>>(env_prefix: &str, path: &[S]) -> String {
    let key: Vec<String> = path.iter().map(|p| p.as_ref().to_uppercase()).collect();
    format!("{env_prefix}{}", key.join("__"))
}

/// The gRPC server section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Optional second, plaintext listener that serves only grpc.health.v1, for probes that
    /// cannot speak TLS (Kubernetes' native gRPC probes); unset = no such listener.
    pub health_listen_addr: Option<SocketAddr>,
    /// How long in-flight calls may run after a shutdown signal before the server stops.
    pub drain_timeout_ms: u64,
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent requests served per client connection; more wait.
    pub concurrency_limit_per_connection: usize,
    /// Upper bound on a unary call's duration, and on the silence between the messages of
    /// a request stream (a shorter client deadline wins).
    pub request_timeout_ms: u64,
    /// Age at which a client connection is asked to go away (HTTP/2 GOAWAY; calls in
    /// flight finish), so that clients connect again and spread over replicas added
    /// since; 0 = never.
    pub max_connection_age_ms: u64,
    /// TLS for the server.
    pub tls: ServerTlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            health_listen_addr: None,
            drain_timeout_ms: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit_per_connection: 256,
            request_timeout_ms: 30_000,
            max_connection_age_ms: 0,
            tls: ServerTlsConfig::default(),
        }
    }
}

/// Server TLS. Without `insecure_plaintext`, `cert_file` and `key_file` are required.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Serve plaintext HTTP/2 (logged as a warning). Only for local runs and tests.
    pub insecure_plaintext: bool,
    /// PEM certificate chain of the server.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, every client must present a certificate it signed (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Client TLS for calls to another service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// Talk plaintext HTTP/2 (`http://` URIs only, logged as a warning).
    pub insecure_plaintext: bool,
    /// PEM CA bundle that signed the server's certificate (required for `https://`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, presented for mTLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name expected in the server certificate; defaults to the URI's host.
    pub server_name: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info,sqlx=warn`.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint, e.g. `https://otel-collector:4317`; unset = no export.
    pub otlp_endpoint: Option<String>,
    /// TLS towards the collector: `ca_file` for `https://`; an `http://` endpoint needs
    /// `insecure_plaintext`, as every other plaintext connection does.
    pub otlp_tls: ClientTlsConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info".to_string(),
            otlp_endpoint: None,
            otlp_tls: ClientTlsConfig::default(),
        }
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `GET /metrics` HTTP endpoint; unset = no endpoint.
    pub listen_addr: Option<SocketAddr>,
}
