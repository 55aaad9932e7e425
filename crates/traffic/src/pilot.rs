//! `traffic pilot`: the whole pilot on one machine. Generates the profile, starts both
//! services with mTLS on embedded SQLite under a data directory, provisions units and
//! officials, replays, verifies, prints the table in the shape of the published one and a
//! `RESULT {json}` line, and stops both services.

use crate::bench::proc::Sampler;
use crate::client::connect_channels;
use crate::generate::{Outputs, generate_files};
use crate::profile::{Plan, ProfileName, Summary};
use crate::replay::{ReplayOptions, ReplayReport, replay};
use crate::stack::{Binaries, Build, SUPERVISOR_ID, Stack, locate_binaries};
use crate::verify::{Expectation, Targets, VerifyReport, verify};
use anyhow::Context as _;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of a pilot run.
#[derive(Debug, Clone)]
pub struct PilotOptions {
    pub profile: ProfileName,
    pub seed: u64,
    pub scale: f64,
    pub data_dir: PathBuf,
    pub build: Build,
    /// Service binaries; located (or built) when `None`.
    pub binaries: Option<Binaries>,
    pub replay: ReplayOptions,
    /// HTTP/2 connections the replayer spreads its requests over.
    pub channels: usize,
}

/// The `RESULT` line.
#[derive(Debug, Clone, Serialize)]
pub struct PilotResult {
    pub registrations: u64,
    pub issued: u64,
    pub not_eligible: u64,
    pub violations: u64,
    pub seconds: f64,
    /// [`ReplayReport::births_per_s`]: registrations that ended ISSUED or NOT_ELIGIBLE.
    pub births_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// p99 of [`ReplayReport::time_to_number_ms`] (polled after a PENDING answer).
    pub number_p99_ms: f64,
    pub failed: u64,
    /// Share of the machine's core time busy during the replay (absent off Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores_busy: Option<f64>,
    /// Each service's peak resident memory (`VmHWM`) from start to stop, sampled every
    /// 200 ms (absent off Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub civil_max_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub population_max_rss_mib: Option<f64>,
}

/// Everything a pilot run measured.
#[derive(Debug)]
pub struct PilotRun {
    pub plan: Plan,
    pub summary: Summary,
    pub replay: ReplayReport,
    pub verify: VerifyReport,
    pub result: PilotResult,
}

/// Runs the pilot; the services are stopped whatever happens after they started.
pub async fn run(opts: &PilotOptions) -> anyhow::Result<PilotRun> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let outputs = Outputs::next_to(
        &opts
            .data_dir
            .join(format!("{}.ndjson", profile_stem(opts.profile))),
    );
    let (plan, summary) = generate_files(opts.profile, opts.seed, opts.scale, &outputs)?;
    eprintln!(
        "generated {} registrations ({} eligible, {} re-registrations, {} foreign nationality), {} units, {} officials",
        summary.registrations,
        summary.eligible,
        summary.re_registrations,
        summary.foreign_nationality,
        plan.registering_units().count(),
        plan.officials.len()
    );
    let bins = match &opts.binaries {
        Some(b) => b.clone(),
        None => {
            let build = opts.build;
            tokio::task::spawn_blocking(move || locate_binaries(build)).await??
        }
    };
    let sampler = Sampler::start(Duration::from_millis(200));
    let (stack, tokens) = Stack::start(&opts.data_dir, bins, &plan).await?;
    eprintln!(
        "population-registry on {}, civil-registry on {} (data in {})",
        stack.population.grpc,
        stack.civil.grpc,
        stack.data_dir.display()
    );
    let measured = measure(opts, &stack, tokens, &outputs, &plan).await;
    let stopped = stack.stop().await;
    let peaks = sampler.finish().await;
    let peak_mib = |service: &str| {
        peaks
            .get(service)
            .map(|s| (s.hwm_mib() * 10.0).round() / 10.0)
    };
    let (replay, verify) = measured?;
    stopped.context("stopping the services")?;
    let result = PilotResult {
        registrations: replay.registrations,
        issued: verify.issued,
        not_eligible: verify.not_eligible,
        violations: verify.violation_count() + replay.failed,
        seconds: replay.seconds,
        births_per_s: replay.births_per_s,
        p50_ms: replay.register_ms.p50,
        p99_ms: replay.register_ms.p99,
        number_p99_ms: replay.time_to_number_ms.p99,
        failed: replay.failed,
        cores_busy: replay.cores_busy.map(|b| (b * 1000.0).round() / 1000.0),
        civil_max_rss_mib: peak_mib("civil-registry"),
        population_max_rss_mib: peak_mib("population-registry"),
    };
    Ok(PilotRun {
        plan,
        summary,
        replay,
        verify,
        result,
    })
}

async fn measure(
    opts: &PilotOptions,
    stack: &Stack,
    tokens: crate::client::Tokens,
    outputs: &Outputs,
    plan: &Plan,
) -> anyhow::Result<(ReplayReport, VerifyReport)> {
    let tls = stack.certs.traffic_client();
    let civil = connect_channels(&stack.civil.uri(), &tls, opts.channels).await?;
    let population = connect_channels(&stack.population.uri(), &tls, 1).await?;
    let supervisor = tokens
        .get(SUPERVISOR_ID)
        .context("no supervisor token")?
        .clone();
    let report = replay(
        &outputs.traffic,
        civil.clone(),
        Arc::new(tokens),
        &opts.replay,
    )
    .await?;
    let provinces = plan
        .units
        .iter()
        .map(|u| (u.code.clone(), u.province_code.clone()))
        .collect();
    let expect = Expectation::read(&outputs.traffic, &provinces, opts.replay.limit)?;
    let targets = Targets {
        civil: civil[0].clone(),
        civil_auth: supervisor,
        population: population[0].clone(),
    };
    let verified = verify(
        &targets,
        &expect,
        Some(&report.outcomes),
        Duration::from_secs(60),
    )
    .await?;
    Ok((report, verified))
}

fn profile_stem(p: ProfileName) -> &'static str {
    match p {
        ProfileName::Pilot2016 => "pilot-2016",
        ProfileName::NationalYear => "national-year",
    }
}

impl PilotRun {
    /// Prints the table by locality (shape of the published one), the figures and RESULT.
    pub fn print(&self) -> anyhow::Result<()> {
        println!();
        println!(
            "{:<24} {:>13} {:>14} {:>12} {:>17} {:>19} {:>7}",
            "locality",
            "registrations",
            "numbers issued",
            "not issued",
            "re-registration",
            "foreign nationality",
            "other"
        );
        for code in self.plan.region_codes() {
            let Some((_, row)) = self.verify.table.get(code) else {
                continue;
            };
            let other = row.not_eligible
                - row.not_eligible_re_registration
                - row.not_eligible_foreign_nationality;
            println!(
                "{:<24} {:>13} {:>14} {:>12} {:>17} {:>19} {:>7}",
                self.plan.region_name(code).unwrap_or(code),
                row.registrations,
                row.issued,
                row.not_eligible,
                row.not_eligible_re_registration,
                row.not_eligible_foreign_nationality,
                other.max(0)
            );
        }
        let t = &self.verify.total;
        println!(
            "{:<24} {:>13} {:>14} {:>12} {:>17} {:>19} {:>7}",
            "total",
            t.registrations,
            t.issued,
            t.not_eligible,
            t.not_eligible_re_registration,
            t.not_eligible_foreign_nationality,
            (t.not_eligible - t.not_eligible_re_registration - t.not_eligible_foreign_nationality)
                .max(0)
        );
        if self.plan.profile == ProfileName::Pilot2016 {
            println!(
                "{:<24} {:>13} {:>14} {:>12}",
                "published (2016-04-28)", 69_524, 66_705, 2_819
            );
        }
        println!(
            "units {} (district {}, commune {}), official accounts {}",
            self.plan.registering_units().count(),
            self.plan
                .units
                .iter()
                .filter(|u| u.level == crate::profile::Level::District)
                .count(),
            self.plan
                .units
                .iter()
                .filter(|u| u.level == crate::profile::Level::Commune)
                .count(),
            self.plan.officials.len()
        );
        println!(
            "twins {} sets, triplets {} sets, late registrations {}, births with a foreign element {}",
            self.summary.twin_sets,
            self.summary.triplet_sets,
            self.summary.late_registrations,
            self.summary.foreign_element
        );
        println!();
        self.replay.print();
        println!(
            "population registry: {} active numbers for the period",
            self.verify.population_active
        );
        if let (Some(civil), Some(population)) = (
            self.result.civil_max_rss_mib,
            self.result.population_max_rss_mib,
        ) {
            println!(
                "peak resident memory: civil-registry {civil:.1} MiB, population-registry {population:.1} MiB"
            );
        }
        if self.verify.violations.is_empty() {
            println!("verify: 0 violations");
        } else {
            println!("verify: {} violations", self.verify.violation_count());
            for v in &self.verify.violations {
                println!("  {v}");
            }
        }
        println!("RESULT {}", serde_json::to_string(&self.result)?);
        Ok(())
    }
}
