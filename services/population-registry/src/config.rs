//! The service's typed configuration: defaults < optional TOML file <
//! `POPULATION_REGISTRY_*` environment variables (loaded by the service kit).

use serde::{Deserialize, Serialize};
use service_kit::config::{MetricsConfig, ServerConfig, TelemetryConfig};

use crate::domain::province::PostMergerRule;

/// Prefix of every environment variable of this service.
pub const ENV_PREFIX: &str = "POPULATION_REGISTRY_";

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC server (address, TLS/mTLS, limits).
    pub server: ServerConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Minting engine.
    pub minting: MintingConfig,
    /// Caller allow-lists.
    pub auth: AuthConfig,
}

/// Where citizens live and how hard to try reaching them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` (WAL, synchronous=FULL) or `postgres://...`.
    pub url: String,
    /// Connections of the readers' pool, at least 2; the writer has one of its own besides.
    pub max_connections: u32,
    /// Longest wait for a pooled connection before a call fails UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Longest a single read or write transaction may take before UNAVAILABLE.
    pub operation_timeout_ms: u64,
    /// Interval of the reachability probe that drives the health status.
    pub health_probe_interval_ms: u64,
    /// SQLite: how long to wait for another process's write lock.
    pub sqlite_busy_timeout_ms: u64,
    /// Run the embedded migrations when `serve` starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/population-registry.db?mode=rwc".into(),
            max_connections: 8,
            acquire_timeout_ms: 1_000,
            operation_timeout_ms: 10_000,
            health_probe_interval_ms: 1_000,
            sqlite_busy_timeout_ms: 5_000,
            migrate_on_start: true,
        }
    }
}

/// The minting engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintingConfig {
    /// Numbers a (province, century-sex, year) bucket offers: suffixes
    /// 0..capacity. 1,000,000 in production; tiny values only for drills and tests.
    pub bucket_capacity: u32,
    /// Fill percentage past which a bucket is logged as nearly full.
    pub bucket_warn_percent: u8,
    /// Most issuances the writer commits in one transaction. Below what a busy batch
    /// client keeps in flight, so that the next group is validated and waiting while one
    /// commits (16,384 against 32,768 in flight: 6.5 % more numbers/s at the same CPU per
    /// number, BENCHMARKS.md).
    pub max_group_items: usize,
    /// Province codes for registrations on or after 2025-07-01: `legacy`
    /// (the registering unit's pre-merger code) or `merged` (the 34 new codes).
    pub post_merger_rule: PostMergerRule,
}

impl Default for MintingConfig {
    fn default() -> Self {
        Self {
            bucket_capacity: 1_000_000,
            bucket_warn_percent: 80,
            max_group_items: 16_384,
            post_merger_rule: PostMergerRule::Legacy,
        }
    }
}

/// Client-certificate identities (CN, DNS SAN or URI SAN) allowed per role.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// May mint (IssuePersonalId, BatchIssuePersonalIds, ReissuePersonalId)
    /// and, since minting callers already learn numbers, read.
    pub minting_allowed: Vec<String>,
    /// May only read (GetCitizen, FindCitizenByRegistration,
    /// ValidatePersonalId, GetIssuanceStatistics, ListIssuances).
    pub read_allowed: Vec<String>,
}
