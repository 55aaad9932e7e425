//! The `civil-registry` binary: parse the command line, load the configuration (exit 64
//! when invalid), start telemetry, run the command, flush telemetry.

use clap::Parser;

use civil_registry::cli::{Cli, Command, ConfigCommand, print_config_keys, run};
use civil_registry::config::{Config, ENV_PREFIX};

/// mimalloc: registrations allocate per request and per row, and glibc's malloc with its
/// consolidation took about a tenth of the CPU (measured in `bench e2e`; the population
/// registry keeps glibc, whose lower footprint its memory budget needs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // Before anything opens a database: SQLite takes its page cache when it starts.
    if let Err(e) = sqlite_direct::install_page_cache() {
        eprintln!("civil-registry: SQLite keeps its default page cache: {e}");
    }
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Keys,
    } = &cli.command
    {
        print_config_keys();
        return;
    }
    let cfg: Config = service_kit::config::load_or_exit(ENV_PREFIX, cli.config.as_deref());
    let telemetry = match service_kit::telemetry::init("civil-registry", &cfg.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("invalid configuration: telemetry: {e:#}");
            std::process::exit(service_kit::config::EXIT_CONFIG);
        }
    };
    let code = match run(cli, cfg).await {
        Ok(code) => code,
        Err(e) => {
            let code = service_kit::config::exit_code(&e);
            if code == service_kit::config::EXIT_CONFIG {
                eprintln!("invalid configuration: {e:#}");
            } else {
                tracing::error!(error = format!("{e:#}"), "civil-registry failed");
                eprintln!("error: {e:#}");
            }
            code
        }
    };
    telemetry.shutdown_off_runtime().await;
    std::process::exit(code);
}
