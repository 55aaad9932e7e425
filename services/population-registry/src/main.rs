//! `population-registry`: see `cli` for the subcommands.

use std::process::ExitCode;

use clap::Parser as _;
use population_registry::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => cli::serve(cli.config).await,
        _ => cli::admin(cli).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("population-registry: {e:#}");
        ExitCode::FAILURE
    })
}
