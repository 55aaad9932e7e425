//! Generic plumbing shared by both services: layered config, telemetry and trace-context
//! propagation, Prometheus metrics, a gRPC server with health, reflection, TLS/mTLS and
//! bounded graceful shutdown, client channels, and google.rpc status helpers.
//! No domain code lives here.
//!
//! A service's `main` wires it like this (the `kit-echo` binary is the runnable version):
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use service_kit::{GrpcServer, MetricsConfig, ServerConfig, TelemetryConfig};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     server: ServerConfig,
//!     telemetry: TelemetryConfig,
//!     metrics: MetricsConfig,
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config: Config = service_kit::config::load_or_exit("EXAMPLE_", None);
//! let mut telemetry = service_kit::telemetry::init("example", &config.telemetry)?;
//! let metrics_addr = service_kit::metrics::install(&config.metrics).await?;
//! let server = GrpcServer::bind(&config.server, service_kit::echo::FILE_DESCRIPTOR_SET)
//!     .await?
//!     .add_service(service_kit::echo::EchoServer::service());
//! println!("LISTENING grpc={} metrics={:?}", server.local_addr(), metrics_addr);
//! server.serve(service_kit::shutdown::signal()).await?;
//! telemetry.shutdown();
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod echo;
pub mod healthcheck;
pub mod layer;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod testing;
pub mod tls;

pub use config::{
    ClientTlsConfig, ConfigError, LogFormat, MetricsConfig, ServerConfig, ServerTlsConfig,
    TelemetryConfig,
};
pub use server::GrpcServer;
pub use telemetry::{TelemetryGuard, TraceContextInterceptor};
pub use tls::ClientIdentity;
