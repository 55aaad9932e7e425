//! The civil registry's typed configuration: defaults < optional TOML file < environment
//! variables `CIVIL_REGISTRY_<SECTION>__<KEY>` (loaded by `service_kit::config`).

use serde::{Deserialize, Serialize};
use service_kit::{ClientTlsConfig, MetricsConfig, ServerConfig, TelemetryConfig};

use crate::domain::numbering::PostMergerRule;

/// Environment variable prefix of every key.
pub const ENV_PREFIX: &str = "CIVIL_REGISTRY_";

/// Everything the service reads at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC server.
    pub server: ServerConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Own database.
    pub database: DatabaseConfig,
    /// The population registry (client).
    pub population_registry: PopulationRegistryConfig,
    /// The outbox relay.
    pub relay: RelayConfig,
    /// RegisterBirth.
    pub registration: RegistrationConfig,
    /// Officials' bearer tokens.
    pub auth: AuthConfig,
}

/// Officials' bearer tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long a token found valid is trusted without reading the database again, so a
    /// busy official's calls do not each cost a query. A revoked token is refused within
    /// this time. 0 reads the database on every call.
    pub token_cache_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_cache_ms: 10_000,
        }
    }
}

/// The service's own database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host:port/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Longest wait for a pooled connection before a call answers UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// SQLite: how long a statement waits for another process's write lock (this process's
    /// own writes take turns and never wait here).
    pub busy_timeout_ms: u64,
    /// How often health checks the database.
    pub health_check_interval_ms: u64,
    /// SQLite: period of the background checkpoint that copies committed WAL pages into
    /// the database file. Shorter keeps each round's write burst small; longer copies a
    /// page that many commits rewrote once.
    pub checkpoint_interval_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/civil-registry.db?mode=rwc".into(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            busy_timeout_ms: 10_000,
            health_check_interval_ms: 2_000,
            checkpoint_interval_ms: 250,
        }
    }
}

/// How to reach the population registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopulationRegistryConfig {
    /// `https://host:port` (mTLS); `http://` only with `tls.insecure_plaintext`.
    pub uri: String,
    /// Client TLS (CA, client certificate and key).
    pub tls: ClientTlsConfig,
    /// Bound on one connection attempt.
    pub connect_timeout_ms: u64,
    /// Deadline of every call.
    pub call_timeout_ms: u64,
    /// HTTP/2 connections, used in turn. Behind a Kubernetes Service each lands on a
    /// replica of the kernel's choosing: several let the calls of one civil replica reach
    /// several population replicas (with the population side's `max_connection_age_ms`
    /// spreading them again as it scales).
    pub connections: usize,
}

impl Default for PopulationRegistryConfig {
    fn default() -> Self {
        Self {
            uri: "https://127.0.0.1:50051".into(),
            tls: ClientTlsConfig::default(),
            connect_timeout_ms: 3_000,
            call_timeout_ms: 5_000,
            connections: 4,
        }
    }
}

/// The outbox relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Run the relay in `serve` (several replicas may all run it).
    pub enabled: bool,
    /// Most rows per call (BatchIssuePersonalIds accepts up to 1,000).
    pub batch_size: i64,
    /// Batches in flight at once per replica. Fewer, larger batches cost fewer commits;
    /// more hide the population registry's latency.
    pub max_in_flight_batches: usize,
    /// How long a replica owns the rows it took; after that another may retry them.
    pub lease_ms: i64,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one probe call.
    pub breaker_open_ms: u64,
    /// Longest sleep when the outbox looks empty (rows queued by other replicas).
    pub idle_poll_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            max_in_flight_batches: 4,
            lease_ms: 30_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 60_000,
            breaker_failure_threshold: 5,
            breaker_open_ms: 5_000,
            idle_poll_ms: 1_000,
        }
    }
}

/// RegisterBirth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// How long RegisterBirth waits for the number, counted from the request (its durable
    /// commit included), before answering PENDING. The answer never precedes that commit.
    pub wait_for_number_ms: u64,
    /// Most registrations committed together in one transaction.
    pub writer_batch_max: usize,
    /// Queue of registrations waiting for the writer.
    pub writer_queue: usize,
    /// Longest RegisterBirth (and the relay's write-back) waits for its commit before
    /// UNAVAILABLE: a database that stopped answering, or a lock another session holds.
    /// The commit may still land; a retry with the same request_id then returns it.
    pub commit_timeout_ms: u64,
    /// Which province code the number of a birth registered from 2025-07-01 encodes:
    /// `legacy` (the registering unit's own code) or `merged` (the code of the province
    /// it became part of). Must equal the population registry's
    /// `minting.post_merger_rule`, which refuses a code it holds invalid on that date.
    pub post_merger_rule: PostMergerRule,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            wait_for_number_ms: 2_000,
            writer_batch_max: 512,
            writer_queue: 8_192,
            commit_timeout_ms: 10_000,
            post_merger_rule: PostMergerRule::Legacy,
        }
    }
}
