//! `kit-echo`: the kit's Echo service as a runnable server, wired exactly like the real
//! services (config -> telemetry -> metrics -> GrpcServer -> shutdown). It is the
//! bare-transport baseline for benchmarks and the binary the kit's config tests run.
//!
//! Config: `--config FILE` (or `KIT_ECHO_CONFIG`), env prefix `KIT_ECHO_`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use service_kit::{
    GrpcServer, MetricsConfig, ServerConfig, TelemetryConfig, config, echo::EchoServer,
};

const ENV_PREFIX: &str = "KIT_ECHO_";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    server: ServerConfig,
    telemetry: TelemetryConfig,
    metrics: MetricsConfig,
}

#[derive(Debug, Parser)]
#[command(version, about = "The service kit's Echo gRPC server")]
struct Cli {
    /// TOML config file (defaults < file < KIT_ECHO_* environment variables).
    #[arg(long, global = true, env = "KIT_ECHO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM or SIGINT (the default).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every key as `key<TAB>ENV_VAR<TAB>default-json`.
    Keys,
    /// Print the effective configuration (defaults < file < env) as JSON.
    Show,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    run(cli).await.map_or_else(
        |e| {
            eprintln!("kit-echo: {e:#}");
            std::process::ExitCode::from(config::exit_code(&e) as u8)
        },
        |()| std::process::ExitCode::SUCCESS,
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Config {
        command: ConfigCommand::Keys,
    }) = cli.command
    {
        for (key, env, default) in config::keys::<Config>(ENV_PREFIX) {
            println!("{key}\t{env}\t{default}");
        }
        return Ok(());
    }
    let config: Config = config::load_or_exit(ENV_PREFIX, cli.config.as_deref());
    if let Some(Command::Config {
        command: ConfigCommand::Show,
    }) = cli.command
    {
        // kit-echo's config holds no secrets, so it can be shown whole.
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let mut telemetry = service_kit::telemetry::init("kit-echo", &config.telemetry)?;
    let metrics_addr = service_kit::metrics::install(&config.metrics).await?;
    let server = GrpcServer::bind(&config.server, service_kit::echo::FILE_DESCRIPTOR_SET)
        .await?
        .add_service(EchoServer::service());
    let metrics = metrics_addr.map_or_else(|| "none".to_string(), |addr| addr.to_string());
    println!("LISTENING grpc={} metrics={metrics}", server.local_addr());
    server.serve(service_kit::shutdown::signal()).await?;
    telemetry.shutdown();
    Ok(())
}
