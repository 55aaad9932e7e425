//! `traffic bench`: benchmarks on this machine, each ending with one `RESULT {json}` line
//! (see BENCHMARKS.md at the repository root for the recorded runs).
//!
//! - `bench mint`: the population registry's unary and batch minting against the bare
//!   transport (service-kit's Echo on the same mTLS/HTTP/2 stack), peak memory.
//! - `bench e2e`: the bare baselines (Echo calls/s, durable SQLite single-row and batched
//!   inserts/s) and the full path through both services (the pilot's replay, closed and
//!   open loop), with the ratios.
//!
//! Benchmarks measure; they never assert timings (tests do not run them).

mod e2e;
mod echo;
mod load;
mod mint;
pub(crate) mod proc;
mod records;
mod sqlite;

pub use e2e::E2eArgs;
pub use echo::EchoServerArgs;
pub use mint::{Backend, MintArgs};
pub use records::RecordGen;

use crate::stack::{Binaries, Build, locate_binaries};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Minting: unary IssuePersonalId at several concurrencies and BatchIssuePersonalIds over
    /// N numbers, against the Echo baseline; peak resident memory of the registry.
    Mint(MintArgs),
    /// End to end: bare baselines (Echo, durable SQLite inserts) and the full path through
    /// both services, closed loop and open loop at a fixed rate.
    E2e(E2eArgs),
    /// The Echo baseline server (started by the benchmarks as a child process).
    #[command(hide = true)]
    EchoServer(EchoServerArgs),
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Mint(args) => mint::run(args).await,
        BenchCommand::E2e(args) => e2e::run(args).await,
        BenchCommand::EchoServer(args) => echo::serve(args).await,
    }
}

/// Where a benchmark keeps its databases, certificates and logs.
#[derive(Debug, Clone, clap::Args)]
pub struct Dirs {
    /// Data directory (must not exist or be empty); default: a fresh directory under the
    /// system temp dir, removed after the run.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory.
    #[arg(long)]
    pub keep: bool,
    /// Rebuild the service binaries even when they are next to this executable.
    #[arg(long)]
    pub build: bool,
}

impl Dirs {
    /// The service binaries: next to this executable, or built first (`--build`, or when
    /// they are missing).
    async fn binaries(&self) -> anyhow::Result<Binaries> {
        let build = if self.build {
            Build::Always
        } else {
            Build::IfMissing
        };
        tokio::task::spawn_blocking(move || locate_binaries(build)).await?
    }

    /// Creates the run's directory; `true` when it is a temporary one.
    fn prepare(&self, kind: &str, run: &str) -> anyhow::Result<(PathBuf, bool)> {
        let (dir, temporary) = match &self.data_dir {
            Some(d) => {
                if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                    anyhow::bail!("{} is not empty", d.display());
                }
                (d.clone(), false)
            }
            None => (
                std::env::temp_dir().join(format!("traffic-bench-{kind}-{run}")),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        Ok((std::fs::canonicalize(&dir)?, temporary))
    }
}

/// A short id that keeps request ids and database names of different runs apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

/// Adds the machine's core count to a RESULT object.
fn machine_json(out: &mut Map<String, Value>) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.insert("cores".into(), json!(cores));
}
