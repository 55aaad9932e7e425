//! `population-registry`: see `cli` for the subcommands.

use std::process::ExitCode;

use clap::Parser as _;
use population_registry::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything opens a database: SQLite takes its page cache when it starts.
    if let Err(e) = sqlite_direct::install_page_cache() {
        eprintln!("population-registry: SQLite keeps its default page cache: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => cli::serve(cli.config).await,
        _ => cli::admin(cli).await,
    };
    result.unwrap_or_else(|e| {
        let code = service_kit::config::exit_code(&e);
        if code == service_kit::config::EXIT_CONFIG {
            eprintln!("invalid configuration: {e:#}");
        } else {
            eprintln!("population-registry: {e:#}");
        }
        ExitCode::from(code as u8)
    })
}
