//! `traffic bench e2e`: the bare baselines and the full path in one run.
//!
//! Baselines: Echo calls/s over the same mTLS/HTTP/2 stack (a child process); durable
//! SQLite inserts/s through sqlx (WAL, synchronous=FULL), one row per transaction and
//! batched; and the open loop's floor, the latency of the registries' three durable commits
//! in turn per arrival at the open loop's rate. Full path: the pilot (`crate::pilot::run`: both services as processes with mTLS
//! on SQLite, provisioning, replay, verify) closed loop over the whole profile, then on
//! fresh databases open loop at a fixed rate. A sampler reads both services' `/proc`
//! figures meanwhile (peak resident memory, CPU time).

use super::load::Phase;
use super::proc::{self, Sampler};
use super::{Dirs, machine_json, run_id};
use crate::pilot::{self, PilotOptions};
use crate::profile::ProfileName;
use crate::replay::{Mode, ReplayOptions};
use crate::stack::{Build, Certs};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Options of `traffic bench e2e`.
#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Multiplies the pilot profile's 69,524 registrations (e.g. 0.1 for a quick run).
    #[arg(long, default_value_t = 1.0, value_parser = crate::args::scale)]
    pub scale: f64,
    #[arg(long, default_value_t = 2016)]
    pub seed: u64,
    /// Closed loop: registrations in flight (also the Echo baseline's concurrency).
    #[arg(long, default_value_t = 256, value_parser = crate::args::at_least_one)]
    pub concurrency: usize,
    /// HTTP/2 connections of the replay and of the Echo baseline.
    #[arg(long, default_value_t = 4, value_parser = crate::args::at_least_one)]
    pub channels: usize,
    /// Open loop: registrations started per second.
    #[arg(long, default_value_t = 2000.0, value_parser = crate::args::rate)]
    pub rate: f64,
    /// Open loop: seconds of traffic at `--rate` (capped by the profile's size).
    #[arg(long, default_value_t = 20.0, value_parser = crate::args::seconds)]
    pub open_seconds: f64,
    /// Measured seconds of the Echo baseline (after a 2 s warm-up).
    #[arg(long, default_value_t = 10.0, value_parser = crate::args::seconds)]
    pub echo_seconds: f64,
    /// Rows of the batched SQLite baseline.
    #[arg(long, default_value_t = 500_000)]
    pub sqlite_batched_rows: u64,
    /// Seconds of the single-row SQLite baseline.
    #[arg(long, default_value_t = 5.0, value_parser = crate::args::seconds)]
    pub sqlite_single_seconds: f64,
    /// Only the baselines (Echo, SQLite, the open loop's floor): a quick reading of a host.
    #[arg(long)]
    pub baselines_only: bool,
    #[command(flatten)]
    pub dirs: Dirs,
}

fn r0(x: f64) -> f64 {
    x.round()
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let run = run_id();
    let (dir, temporary) = args.dirs.prepare("e2e", &run)?;
    let mut out = Map::new();
    out.insert("loadavg_start".into(), json!(proc::loadavg()));
    machine_json(&mut out);

    // 1. Bare transport.
    let certs = Certs::create(&dir.join("tls"))?;
    let echo = super::echo::start(&certs, &dir).await?;
    let phase = super::echo::measure(
        &echo,
        &certs,
        args.concurrency,
        args.channels,
        // About the size of an encoded RegisterBirthRequest.
        600,
        Duration::from_secs(2),
        Duration::from_secs_f64(args.echo_seconds),
    )
    .await;
    echo.stop(Duration::from_secs(10)).await?;
    let echo = phase?;
    println!("echo baseline: {echo}");
    out.insert("echo_concurrency".into(), json!(args.concurrency));
    out.insert("echo_per_s".into(), json!(r0(echo.per_s)));
    out.insert("echo_p99_ms".into(), json!(echo.p99_ms));

    // 2. The open loop's floor: the registries' three commits in turn per arrival, at the
    // open loop's rate, for as long, on fresh databases. It comes before the bulk phases so
    // that the device is not still absorbing their hundreds of megabytes (written, then
    // deleted) while it is measured.
    let paced = super::sqlite::paced(
        &dir.join("paced-a.db"),
        &dir.join("paced-b.db"),
        args.rate,
        Duration::from_secs_f64(args.open_seconds),
    )
    .await?;
    for db in ["paced-a.db", "paced-b.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{db}{suffix}")));
        }
    }
    println!(
        "sqlite baseline, open loop ({:.0}/s; a durable row in A, then in B, then in A again, each database one writer committing what is queued: {} and {} commits): first commit {}; all three {}",
        paced.rate, paced.commits.0, paced.commits.1, paced.first_commit_ms, paced.three_commits_ms
    );
    if let Some(line) = crate::replay::p99_by_second_summary(&paced.p99_ms_by_second) {
        println!("  the three commits' p99 per second: {line}");
    }
    for (key, ms) in [
        ("sqlite_open_p50_ms", paced.three_commits_ms.p50),
        ("sqlite_open_p99_ms", paced.three_commits_ms.p99),
        ("sqlite_open_max_ms", paced.three_commits_ms.max),
        ("sqlite_open_first_commit_p99_ms", paced.first_commit_ms.p99),
    ] {
        out.insert(key.into(), json!(ms));
    }

    // 3. Bare storage, rows/s.
    let sqlite = super::sqlite::measure(
        &dir.join("baseline.db"),
        args.sqlite_batched_rows,
        Duration::from_secs_f64(args.sqlite_single_seconds),
    )
    .await?;
    println!(
        "sqlite baseline (WAL, synchronous=FULL): single-row {:.0} rows/s ({} rows in {:.1} s); batched {:.0} rows/s ({} rows, {} per transaction, {} per statement, {:.1} s)",
        sqlite.single_per_s,
        sqlite.single_rows,
        sqlite.single_seconds,
        sqlite.batched_per_s,
        sqlite.batched_rows,
        super::sqlite::ROWS_PER_TXN,
        super::sqlite::ROWS_PER_STATEMENT,
        sqlite.batched_seconds
    );
    println!(
        "sqlite, the registry's statement shape (23 columns, 100 rows per INSERT, 1000 per transaction): {:.0} rows/s with $N placeholders, {:.0} rows/s with ? placeholders",
        sqlite.wide_dollar_per_s, sqlite.wide_question_per_s
    );
    out.insert(
        "sqlite_wide_dollar_per_s".into(),
        json!(r0(sqlite.wide_dollar_per_s)),
    );
    out.insert(
        "sqlite_wide_question_per_s".into(),
        json!(r0(sqlite.wide_question_per_s)),
    );
    out.insert("sqlite_single_per_s".into(), json!(r0(sqlite.single_per_s)));
    out.insert(
        "sqlite_batched_per_s".into(),
        json!(r0(sqlite.batched_per_s)),
    );
    let _ = std::fs::remove_file(dir.join("baseline.db"));

    let violations = if args.baselines_only {
        0
    } else {
        full_path(&args, &dir, &echo, &sqlite, &paced, &mut out).await?
    };
    out.insert("loadavg_end".into(), json!(proc::loadavg()));
    if temporary && !args.dirs.keep && violations == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("data kept in {}", dir.display());
    }
    println!("RESULT {}", Value::Object(out));
    if violations > 0 {
        anyhow::bail!("{violations} violations in the full-path runs");
    }
    Ok(())
}

/// The full path, closed loop over the whole profile, then open loop on fresh databases;
/// their figures and ratios go into `out`. Returns the violations found.
async fn full_path(
    args: &E2eArgs,
    dir: &std::path::Path,
    echo: &Phase,
    sqlite: &super::sqlite::SqliteBaseline,
    paced: &super::sqlite::PacedBaseline,
    out: &mut Map<String, Value>,
) -> anyhow::Result<u64> {
    let bins = args.dirs.binaries().await?;
    let pilot_opts = |sub: &str, mode: Mode, limit: Option<u64>| PilotOptions {
        profile: ProfileName::Pilot2016,
        seed: args.seed,
        scale: args.scale,
        data_dir: dir.join(sub),
        build: Build::IfMissing,
        binaries: Some(bins.clone()),
        replay: ReplayOptions {
            mode,
            progress: false,
            limit,
            ..ReplayOptions::default()
        },
        channels: args.channels,
    };
    let mut violations = 0;
    for (label, opts) in [
        (
            "closed",
            pilot_opts("closed", Mode::Concurrency(args.concurrency), None),
        ),
        (
            "open",
            pilot_opts(
                "open",
                Mode::Rate(args.rate),
                Some((args.rate * args.open_seconds).round() as u64),
            ),
        ),
    ] {
        let sampler = Sampler::start(Duration::from_millis(200));
        let client_cpu0 = proc::own_cpu_seconds();
        let pilot = pilot::run(&opts).await;
        let client_cpu = proc::own_cpu_seconds() - client_cpu0;
        let seen = sampler.finish().await;
        let pilot = pilot?;
        let r = &pilot.replay;
        let res = &pilot.result;
        violations += res.violations;
        println!(
            "full path, {label} loop ({}): {} registrations, {} failed, {} violations; {:.0} registrations/s answered, {:.0} births/s fully numbered; RegisterBirth {}; time to number {}",
            match opts.replay.mode {
                Mode::Rate(rate) => format!("{rate:.0}/s"),
                Mode::Concurrency(c) => format!("{c} in flight"),
            },
            r.registrations,
            r.failed,
            res.violations,
            r.registrations_per_s,
            r.births_per_s,
            r.register_ms,
            r.time_to_number_ms
        );
        println!(
            "  first answer: {:?}; by status: {:?}",
            r.first_answer, r.by_status
        );
        let n = r.registrations.max(1) as f64;
        out.insert(format!("{label}_registrations"), json!(r.registrations));
        out.insert(format!("{label}_failed"), json!(r.failed));
        out.insert(format!("{label}_violations"), json!(res.violations));
        out.insert(
            format!("{label}_registrations_per_s"),
            json!(r0(r.registrations_per_s)),
        );
        out.insert(format!("{label}_births_per_s"), json!(r0(r.births_per_s)));
        out.insert(format!("{label}_register_p50_ms"), json!(r.register_ms.p50));
        out.insert(format!("{label}_register_p99_ms"), json!(r.register_ms.p99));
        if let Some(median) = crate::replay::median_second_p99(&r.register_p99_ms_by_second) {
            out.insert(
                format!("{label}_register_p99_median_second_ms"),
                json!(median),
            );
        }
        out.insert(
            format!("{label}_number_p99_ms"),
            json!(r.time_to_number_ms.p99),
        );
        if let Some(busy) = r.cores_busy {
            out.insert(format!("{label}_cores_busy"), json!(r3(busy)));
        }
        out.insert(
            format!("{label}_pending_first"),
            json!(r.first_answer.get("PENDING").copied().unwrap_or(0)),
        );
        for (exe, key) in [
            ("population-registry", "population"),
            ("civil-registry", "civil"),
        ] {
            if let Some(s) = seen.get(exe) {
                println!(
                    "  {exe}: peak resident {:.1} MiB, CPU {:.1} s = {:.0} us per registration",
                    s.hwm_mib(),
                    s.cpu_seconds,
                    s.cpu_seconds * 1e6 / n
                );
                out.insert(
                    format!("{label}_{key}_max_rss_mib"),
                    json!((s.hwm_mib() * 10.0).round() / 10.0),
                );
                out.insert(
                    format!("{label}_{key}_cpu_us_per_registration"),
                    json!(r0(s.cpu_seconds * 1e6 / n)),
                );
            }
        }
        println!(
            "  traffic (generate + replay + verify) CPU {:.1} s = {:.0} us per registration",
            client_cpu,
            client_cpu * 1e6 / n
        );
        out.insert(
            format!("{label}_client_cpu_us_per_registration"),
            json!(r0(client_cpu * 1e6 / n)),
        );
        if label == "open" {
            out.insert("open_rate".into(), json!(args.rate));
            out.insert(
                "open_p99_to_sqlite_open_p99".into(),
                json!(r3(r.register_ms.p99 / paced.three_commits_ms.p99.max(1e-3))),
            );
        }
    }

    // 4. Ratios. The bare limit of one birth: one RPC on the transport (the official's
    // RegisterBirth) plus two durable rows written in batches (the registration in the
    // civil registry, the citizen in the population registry), done one after the other
    // on the same cores.
    let births = out["closed_births_per_s"].as_f64().unwrap_or(0.0);
    let bare = 1.0 / (1.0 / echo.per_s.max(1e-9) + 2.0 / sqlite.batched_per_s.max(1e-9));
    out.insert("bare_limit_per_s".into(), json!(r0(bare)));
    out.insert("births_to_bare_limit".into(), json!(r3(births / bare)));
    out.insert("births_to_echo".into(), json!(r3(births / echo.per_s)));
    out.insert(
        "births_to_sqlite_batched".into(),
        json!(r3(births / sqlite.batched_per_s)),
    );
    out.insert(
        "births_to_sqlite_single".into(),
        json!(r3(births / sqlite.single_per_s)),
    );
    println!(
        "ratios: births/s to the bare limit ({:.0}/s) {:.3}; to Echo {:.3}; to batched SQLite rows {:.3}; to single-row SQLite {:.3}",
        bare,
        births / bare,
        births / echo.per_s,
        births / sqlite.batched_per_s,
        births / sqlite.single_per_s
    );
    let key = |k: &str| out.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    println!(
        "open loop: RegisterBirth p99 {:.2} ms (median second {:.2} ms) against the storage path's floor {:.2} ms (median second {:.2} ms)",
        key("open_register_p99_ms"),
        key("open_register_p99_median_second_ms"),
        paced.three_commits_ms.p99,
        crate::replay::median_second_p99(&paced.p99_ms_by_second).unwrap_or(0.0)
    );
    Ok(violations)
}
