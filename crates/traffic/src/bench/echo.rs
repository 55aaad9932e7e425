//! The bare-transport baseline: service-kit's Echo service behind the kit's `GrpcServer`
//! (the same TLS/mTLS, HTTP/2, metrics layer and limits the registries run with), started
//! as a separate process (`traffic bench echo-server`, hidden) like the registries, and a
//! closed-loop Echo load.

use super::load::{Phase, closed_loop};
use super::proc::Proc;
use crate::client::connect_channels;
use crate::stack::Certs;
use service_kit::echo::{EchoRequest, EchoServer, EchoServiceClient};
use service_kit::{GrpcServer, LogFormat, MetricsConfig, ServerConfig, TelemetryConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Arguments of the hidden `bench echo-server` subcommand.
#[derive(Debug, clap::Args)]
pub struct EchoServerArgs {
    /// Server certificate (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Server key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA whose client certificates are required (mTLS).
    #[arg(long)]
    pub client_ca: PathBuf,
}

/// Serves Echo until SIGTERM, wired like the registries: telemetry at `warn`, the
/// Prometheus recorder and endpoint installed, mTLS, port 0, a `LISTENING` line.
pub async fn serve(args: EchoServerArgs) -> anyhow::Result<()> {
    let mut telemetry = service_kit::telemetry::init(
        "bench-echo",
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "warn".into(),
            ..TelemetryConfig::default()
        },
    )?;
    let metrics = service_kit::metrics::install(&MetricsConfig {
        listen_addr: Some(([127, 0, 0, 1], 0).into()),
    })
    .await?;
    let mut cfg = ServerConfig {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        ..ServerConfig::default()
    };
    cfg.tls.cert_file = Some(args.cert);
    cfg.tls.key_file = Some(args.key);
    cfg.tls.client_ca_file = Some(args.client_ca);
    let server = GrpcServer::bind(&cfg, service_kit::echo::FILE_DESCRIPTOR_SET)
        .await?
        .add_service(EchoServer::service());
    println!(
        "LISTENING grpc={} metrics={}",
        server.local_addr(),
        metrics.map_or_else(|| "none".to_owned(), |a| a.to_string())
    );
    server.serve(service_kit::shutdown::signal()).await?;
    telemetry.shutdown();
    Ok(())
}

/// Starts the echo server as a child process (this executable, hidden subcommand).
pub async fn start(certs: &Certs, dir: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let p = |p: &Path| p.display().to_string();
    let args = vec![
        "bench".to_owned(),
        "echo-server".to_owned(),
        "--cert".to_owned(),
        p(&certs.server_cert),
        "--key".to_owned(),
        p(&certs.server_key),
        "--client-ca".to_owned(),
        p(&certs.ca),
    ];
    Proc::spawn("echo", &exe, &args, &[], dir, dir.join("echo-server.log")).await
}

/// Closed-loop Echo calls with a payload of `payload_bytes` (the size of the request the
/// compared call sends), over `channels` HTTP/2 connections.
pub async fn measure(
    echo: &Proc,
    certs: &Certs,
    concurrency: usize,
    channels: usize,
    payload_bytes: usize,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<Phase> {
    let chans = connect_channels(
        &echo.uri(),
        &certs.traffic_client(),
        channels.min(concurrency).max(1),
    )
    .await?;
    let clients: Arc<Vec<EchoServiceClient<_>>> =
        Arc::new(chans.into_iter().map(EchoServiceClient::new).collect());
    let payload = vec![0x5a_u8; payload_bytes];
    let phase = closed_loop(
        concurrency,
        warmup,
        seconds,
        Arc::new(AtomicU64::new(0)),
        move |seq| {
            let mut client = clients[(seq as usize) % clients.len()].clone();
            let req = EchoRequest {
                message: String::new(),
                payload: payload.clone(),
                delay_ms: 0,
                fail_with_code: 0,
            };
            async move { client.echo(req).await.map(|_| ()).map_err(|s| s.code()) }
        },
    )
    .await;
    Ok(phase)
}
