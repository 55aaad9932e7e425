//! The `population-registry` command line: `serve`, `migrate`,
//! `audit verify`, `healthcheck`, `config keys`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use service_kit::ConfigError;
use service_kit::config::{ClientTlsConfig, keys, load_or_exit};

use crate::app::App;
use crate::config::{Config, ENV_PREFIX};
use crate::store;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "population-registry",
    version,
    about = "The MPS population registry"
)]
pub struct Cli {
    /// TOML config file (defaults < file < POPULATION_REGISTRY_* variables).
    #[arg(long, global = true, env = "POPULATION_REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC until SIGTERM/SIGINT; prints `LISTENING grpc=ADDR metrics=ADDR`.
    Serve,
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Audit log tools.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running server's health (exit 0 when SERVING), for container health checks.
    Healthcheck {
        /// Server URI; defaults to the plaintext health-only listener
        /// (server.health_listen_addr) when configured, else server.listen_addr, on loopback.
        #[arg(long)]
        uri: Option<String>,
        /// PEM CA of the server certificate (https).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// PEM client certificate for mTLS.
        #[arg(long)]
        cert_file: Option<PathBuf>,
        /// PEM client key for mTLS.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        /// What to print.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Exit code of `audit verify` when the chain is broken (`EX_DATAERR` from sysexits.h), so
/// that a scheduled check tells tampering from a database it could not reach (exit 1).
pub const EXIT_AUDIT_BROKEN: u8 = 65;

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; report the first broken link and exit 65 if any (1 when
    /// the chain cannot be read).
    Verify,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every key as `key<TAB>ENV_VAR<TAB>default-json`.
    Keys,
}

/// Runs one subcommand other than `serve`.
pub async fn admin(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = || load_or_exit::<Config>(ENV_PREFIX, cli.config.as_deref());
    match cli.command {
        Command::Serve => anyhow::bail!("serve is run by main"),
        Command::Config {
            command: ConfigCommand::Keys,
        } => {
            for (key, env, default) in keys::<Config>(ENV_PREFIX) {
                println!("{key}\t{env}\t{default}");
            }
        }
        Command::Migrate => {
            let cfg = load();
            let (pool, backend) = store::connect_pool(&cfg.database).await?;
            store::migrate(&pool, backend).await?;
            println!("migrations applied");
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let cfg = load();
            let (pool, _) = store::connect_pool(&cfg.database).await?;
            let report = store::verify_audit(&pool).await?;
            match report.first_broken {
                None => println!("audit chain intact: {} entries", report.entries),
                Some((seq, reason)) => {
                    println!("audit chain BROKEN at entry {seq}: {reason}");
                    return Ok(ExitCode::from(EXIT_AUDIT_BROKEN));
                }
            }
        }
        Command::Healthcheck {
            uri,
            ca_file,
            cert_file,
            key_file,
        } => {
            let cfg = load();
            let target = service_kit::healthcheck::Target::of(uri, &cfg.server);
            let tls = match target {
                service_kit::healthcheck::Target::Plaintext(_) => {
                    service_kit::healthcheck::plaintext()
                }
                service_kit::healthcheck::Target::Tls(_) => ClientTlsConfig {
                    insecure_plaintext: false,
                    ca_file,
                    cert_file,
                    key_file,
                    server_name: None,
                },
            };
            let uri = target.uri().to_owned();
            let serving = service_kit::healthcheck::check(&uri, &tls, "").await?;
            println!("{}", if serving { "SERVING" } else { "NOT_SERVING" });
            if !serving {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `serve`: config -> telemetry -> App::build -> LISTENING -> serve -> flush.
pub async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cfg: Config = load_or_exit(ENV_PREFIX, config.as_deref());
    let telemetry = service_kit::telemetry::init("population-registry", &cfg.telemetry)
        .map_err(|e| ConfigError::new("telemetry", format!("{e:#}")))?;
    let result = async {
        let app = App::build(&cfg).await?;
        let metrics = app
            .metrics_addr()
            .map_or_else(|| "none".to_owned(), |a| a.to_string());
        println!("LISTENING grpc={} metrics={metrics}", app.local_addr());
        app.serve(service_kit::shutdown::signal()).await
    }
    .await;
    if let Err(e) = &result
        && service_kit::config::exit_code(e) != service_kit::config::EXIT_CONFIG
    {
        // Into the JSON log too: stderr's last line alone is easy to miss in a pod's logs.
        tracing::error!(error = format!("{e:#}"), "population-registry failed");
    }
    telemetry.shutdown_off_runtime().await;
    result.map(|()| ExitCode::SUCCESS)
}
