//! `traffic`: generate, replay and verify registration traffic, and run the pilot.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use traffic::args;
use traffic::client::{ClientTls, Tokens, connect_channels};
use traffic::files;
use traffic::generate::{Outputs, generate_files};
use traffic::pilot::{self, PilotOptions};
use traffic::profile::ProfileName;
use traffic::replay::{self, Mode, ReplayOptions};
use traffic::stack::Build;
use traffic::verify::{self, Expectation, Targets, read_unit_provinces};

/// mimalloc, as the civil registry: the load generator and the Echo baseline it serves
/// allocate per call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "traffic", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks on this machine (`bench mint`, `bench e2e`); each ends with a RESULT line.
    Bench {
        #[command(subcommand)]
        command: traffic::bench::BenchCommand,
    },
    /// Writes a profile's registrations (NDJSON), units CSV and officials CSV.
    Generate {
        #[arg(long, value_enum, default_value = "pilot-2016")]
        profile: ProfileName,
        #[arg(long, default_value_t = 2016)]
        seed: u64,
        /// Multiplies the registration counts (units and accounts stay as published).
        #[arg(long, default_value_t = 1.0, value_parser = args::scale)]
        scale: f64,
        /// The traffic file (NDJSON).
        #[arg(long)]
        out: PathBuf,
        /// Units CSV; default next to --out as STEM.units.csv.
        #[arg(long)]
        units_out: Option<PathBuf>,
        /// Officials CSV; default next to --out as STEM.officials.csv.
        #[arg(long)]
        officials_out: Option<PathBuf>,
    },
    /// Replays a traffic file against a civil registry.
    Replay {
        /// The traffic file (NDJSON from `generate`).
        file: PathBuf,
        /// Civil registry address (host:port or https://host:port).
        #[arg(long)]
        target: String,
        /// Tokens CSV (`official_id,unit_code,role,token`), as written by
        /// `civil-registry admin officials import --tokens-out`.
        #[arg(long)]
        tokens: PathBuf,
        #[command(flatten)]
        load: Load,
        /// Writes each request's outcome (NDJSON) for `verify --results`.
        #[arg(long)]
        results: Option<PathBuf>,
        #[command(flatten)]
        tls: ClientTls,
    },
    /// Checks both registries against a replayed traffic file.
    Verify {
        /// The traffic file that was replayed.
        file: PathBuf,
        /// Civil registry address.
        #[arg(long)]
        civil: String,
        /// Population registry address (the client certificate must be on its read allow-list).
        #[arg(long)]
        population: String,
        /// Bearer token of an account whose jurisdiction covers the replayed units
        /// (e.g. a ministry supervisor); or env TRAFFIC_TOKEN.
        #[arg(long, env = "TRAFFIC_TOKEN", hide_env_values = true)]
        token: String,
        /// Units CSV (default: STEM.units.csv next to the traffic file).
        #[arg(long)]
        units: Option<PathBuf>,
        /// Outcomes written by `replay --results`, for per-request checks.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Only the first N lines were replayed.
        #[arg(long)]
        limit: Option<u64>,
        /// How long to wait for PENDING registrations to get their numbers before
        /// reporting them (longer where the deployment still has a backlog to relay).
        #[arg(long, default_value_t = 60.0, value_parser = args::seconds_or_zero)]
        settle_seconds: f64,
        #[command(flatten)]
        tls: ClientTls,
    },
    /// The whole pilot on this machine: build, start both services with mTLS on SQLite,
    /// provision, replay, verify, print the table and a RESULT line.
    Pilot {
        #[arg(long, value_enum, default_value = "pilot-2016")]
        profile: ProfileName,
        #[arg(long, default_value_t = 2016)]
        seed: u64,
        /// Multiplies the registration counts (e.g. 0.005 for a quick run).
        #[arg(long, default_value_t = 1.0, value_parser = args::scale)]
        scale: f64,
        /// Data directory (databases, certificates, logs); must not exist or be empty.
        /// Default: a fresh directory under the system temp dir, removed after a clean run.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rebuild the service binaries even when they are next to this executable.
        #[arg(long)]
        build: bool,
        /// Keep the data directory.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(Debug, Args)]
struct Load {
    /// Open loop: start this many registrations per second.
    #[arg(long, conflicts_with = "concurrency", value_parser = args::rate)]
    rate: Option<f64>,
    /// Closed loop: keep this many registrations in flight (default 256).
    #[arg(long, value_parser = args::at_least_one)]
    concurrency: Option<usize>,
    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 4, value_parser = args::at_least_one)]
    channels: usize,
    /// Only replay the first N registrations.
    #[arg(long)]
    limit: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Load {
    fn options(&self) -> ReplayOptions {
        ReplayOptions {
            mode: match (self.rate, self.concurrency) {
                (Some(r), _) => Mode::Rate(r),
                (None, c) => Mode::Concurrency(c.unwrap_or(256)),
            },
            progress: !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            limit: self.limit,
            ..ReplayOptions::default()
        }
    }
}

fn next_to(file: &Path, suffix: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!("{stem}.{suffix}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { command } => traffic::bench::run(command).await?,
        Command::Generate {
            profile,
            seed,
            scale,
            out,
            units_out,
            officials_out,
        } => {
            let mut outputs = Outputs::next_to(&out);
            if let Some(u) = units_out {
                outputs.units = u;
            }
            if let Some(o) = officials_out {
                outputs.officials = o;
            }
            let (plan, summary) = tokio::task::spawn_blocking(move || {
                generate_files(profile, seed, scale, &outputs).map(|r| (r, outputs))
            })
            .await??
            .0;
            let outputs = Outputs::next_to(&out);
            println!(
                "wrote {} registrations to {}, {} units, {} officials",
                summary.registrations,
                outputs.traffic.display(),
                plan.units.len(),
                plan.officials.len(),
            );
            println!(
                "assumed split of the {} not eligible: {} re-registrations, {} foreign nationality",
                summary.re_registrations + summary.foreign_nationality,
                summary.re_registrations,
                summary.foreign_nationality
            );
            println!("SUMMARY {}", serde_json::to_string(&summary)?);
        }
        Command::Replay {
            file,
            target,
            tokens,
            load,
            results,
            tls,
        } => {
            // Every file is opened before the first request: a wrong name must not cost
            // a replay, nor its outcomes once it has run.
            files::open(&file)?;
            let mut results = results
                .map(|path| files::create(&path).map(std::io::BufWriter::new))
                .transpose()?;
            let tokens = Arc::new(Tokens::read_csv(&tokens)?);
            let channels = connect_channels(&target, &tls, load.channels).await?;
            let report = replay::replay(&file, channels, tokens, &load.options()).await?;
            report.print();
            println!("RESULT {}", serde_json::to_string(&report)?);
            if let Some(w) = &mut results {
                for o in &report.outcomes {
                    serde_json::to_writer(&mut *w, o)?;
                    std::io::Write::write_all(w, b"\n")?;
                }
                std::io::Write::flush(w)?;
            }
            if report.failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Verify {
            file,
            civil,
            population,
            token,
            units,
            results,
            limit,
            settle_seconds,
            tls,
        } => {
            let units = units.unwrap_or_else(|| next_to(&file, "units.csv"));
            let expect = Expectation::read(&file, &read_unit_provinces(&units)?, limit)?;
            let outcomes = match results {
                None => None,
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let mut v = Vec::new();
                    for (i, line) in text.lines().enumerate() {
                        if !line.trim().is_empty() {
                            v.push(serde_json::from_str(line).with_context(|| {
                                format!("{} line {}: not an outcome", p.display(), i + 1)
                            })?);
                        }
                    }
                    Some(v)
                }
            };
            let mut auth = Tokens::default();
            auth.insert("verify", &token)?;
            let targets = Targets {
                civil: connect_channels(&civil, &tls, 1).await?.remove(0),
                civil_auth: auth.get("verify").context("token")?.clone(),
                population: connect_channels(&population, &tls, 1).await?.remove(0),
            };
            let report = verify::verify(
                &targets,
                &expect,
                outcomes.as_deref(),
                Duration::from_secs_f64(settle_seconds),
            )
            .await?;
            println!(
                "registrations {} issued {} not eligible {} pending {} rejected {}; population active {}",
                report.registrations,
                report.issued,
                report.not_eligible,
                report.pending,
                report.rejected,
                report.population_active
            );
            for v in &report.violations {
                println!("VIOLATION {v}");
            }
            println!("violations: {}", report.violation_count());
            if report.violation_count() > 0 {
                std::process::exit(1);
            }
        }
        Command::Pilot {
            profile,
            seed,
            scale,
            data_dir,
            build,
            keep,
            load,
        } => {
            let (data_dir, temporary) = match data_dir {
                Some(d) => {
                    if d.exists() && std::fs::read_dir(&d)?.next().is_some() {
                        anyhow::bail!(
                            "{} is not empty: the pilot needs fresh databases",
                            d.display()
                        );
                    }
                    (d, false)
                }
                None => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default();
                    (
                        std::env::temp_dir()
                            .join(format!("traffic-pilot-{}-{nanos}", std::process::id())),
                        true,
                    )
                }
            };
            let opts = PilotOptions {
                profile,
                seed,
                scale,
                data_dir: data_dir.clone(),
                build: if build {
                    Build::Always
                } else {
                    Build::IfMissing
                },
                binaries: None,
                replay: load.options(),
                channels: load.channels,
            };
            let run = pilot::run(&opts).await?;
            run.print()?;
            let violations = run.result.violations;
            if temporary && !keep && violations == 0 {
                let _ = std::fs::remove_dir_all(&data_dir);
            } else {
                println!("data kept in {}", data_dir.display());
            }
            if violations > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("traffic").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn numeric_flags_the_tool_cannot_run_with_are_refused_while_parsing() {
        let replay = ["replay", "t.ndjson", "--target", "x:1", "--tokens", "t.csv"];
        assert!(parse(&[&replay[..], &["--rate=2000"]].concat()).is_ok());
        assert!(parse(&[&replay[..], &["--concurrency=1"]].concat()).is_ok());
        for bad in [
            &[&replay[..], &["--rate=0"]].concat()[..],
            &[&replay[..], &["--rate=-5"]].concat(),
            &[&replay[..], &["--rate=NaN"]].concat(),
            &[&replay[..], &["--concurrency=0"]].concat(),
            &[&replay[..], &["--channels=0"]].concat(),
            &["pilot", "--scale=0"],
            &["pilot", "--rate=inf"],
            &["bench", "e2e", "--rate=0"],
            &["bench", "e2e", "--echo-seconds=-1"],
            &["bench", "e2e", "--open-seconds=1e30"],
            &["bench", "mint", "--warmup=NaN"],
            &["bench", "mint", "--concurrency=1,0"],
            &["bench", "mint", "--window=0"],
        ] {
            let error = parse(bad).map(|_| ()).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{bad:?}: {error}");
        }
    }
}
