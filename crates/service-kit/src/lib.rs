//! Generic plumbing shared by both services: layered config, telemetry and trace-context
//! propagation, Prometheus metrics, a gRPC server with health, reflection, TLS/mTLS and
//! bounded graceful shutdown, client channels, and google.rpc status helpers.
//! No domain code lives here.

pub mod config;
pub mod echo;
pub mod healthcheck;
pub mod layer;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use config::{
    ClientTlsConfig, ConfigError, LogFormat, MetricsConfig, ServerConfig, ServerTlsConfig,
    TelemetryConfig,
};
pub use server::GrpcServer;
pub use telemetry::{TelemetryGuard, TraceContextInterceptor};
pub use tls::ClientIdentity;
