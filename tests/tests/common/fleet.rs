//! Arrangements of the fault tests (crashes, network faults, duplicates, replicas): a
//! generated pilot slice, both services as processes with short relay timeouts, a replay
//! running in the background while the test breaks things, and `traffic verify` after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use contracts::moj::civilstatus::v1 as cpb;
use contracts::moj::civilstatus::v1::birth_registration_service_client::BirthRegistrationServiceClient;
use tonic::transport::Channel;
use traffic::client::{ClientTls, Target, Tokens, authorized};
use traffic::generate::{Outputs, generate_files};
use traffic::profile::{Plan, ProfileName};
use traffic::replay::{Mode, Outcome, ReplayOptions, ReplayReport, replay};
use traffic::stack::{Build, SUPERVISOR_ID, Stack, locate_binaries};
use traffic::verify::{Expectation, Targets, VerifyReport, verify};

/// `E2E_HEAVY=1`: full-size variants (outside the default test command).
pub fn heavy() -> bool {
    std::env::var("E2E_HEAVY").is_ok_and(|v| v == "1")
}

/// Short relay timeouts and backoffs so that recovery takes seconds, not minutes.
/// RegisterBirth waits `WAIT_FOR_NUMBER_MS` for the number before answering PENDING.
pub const WAIT_FOR_NUMBER_MS: u64 = 500;
pub const FAST_RELAY: &[(&str, &str)] = &[
    ("CIVIL_REGISTRY_RELAY__BACKOFF_INITIAL_MS", "50"),
    ("CIVIL_REGISTRY_RELAY__BACKOFF_MAX_MS", "400"),
    ("CIVIL_REGISTRY_RELAY__BREAKER_OPEN_MS", "300"),
    ("CIVIL_REGISTRY_RELAY__LEASE_MS", "4000"),
    ("CIVIL_REGISTRY_RELAY__IDLE_POLL_MS", "100"),
    (
        "CIVIL_REGISTRY_POPULATION_REGISTRY__CALL_TIMEOUT_MS",
        "1500",
    ),
    (
        "CIVIL_REGISTRY_POPULATION_REGISTRY__CONNECT_TIMEOUT_MS",
        "500",
    ),
    ("CIVIL_REGISTRY_REGISTRATION__WAIT_FOR_NUMBER_MS", "500"),
];

pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Both services on a generated pilot slice.
#[derive(Debug)]
pub struct Fleet {
    pub stack: Stack,
    pub tokens: Arc<Tokens>,
    pub plan: Plan,
    /// The generated traffic, one registration per line, in replay order.
    pub lines: Vec<String>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Fleet {
    /// Generates the pilot at `scale`, starts both services with [`FAST_RELAY`] and `extra`
    /// (later keys win).
    pub async fn start(scale: f64, extra: &[(String, String)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let outputs = Outputs::next_to(&dir.join("traffic.ndjson"));
        let (plan, _) =
            generate_files(ProfileName::Pilot2016, 7, scale, &outputs).expect("generate");
        let lines: Vec<String> = std::fs::read_to_string(&outputs.traffic)
            .expect("traffic")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let bins = tokio::task::spawn_blocking(|| locate_binaries(Build::Always))
            .await
            .expect("join")
            .expect("service binaries");
        let mut all = env(FAST_RELAY);
        all.extend(extra.iter().cloned());
        let (stack, tokens) = Stack::start_with_env(&dir.join("stack"), bins, &plan, &all)
            .await
            .expect("both services start");
        Self {
            stack,
            tokens: Arc::new(tokens),
            plan,
            lines,
            dir,
            _tmp: tmp,
        }
    }

    /// Writes lines `range` of the traffic to a file of their own.
    pub fn slice(&self, name: &str, range: std::ops::Range<usize>) -> PathBuf {
        let path = self.dir.join(format!("{name}.ndjson"));
        let mut text = self.lines[range].join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("write slice");
        path
    }

    pub fn tls(&self) -> ClientTls {
        self.stack.certs.traffic_client()
    }

    /// `n` lazily connected channels to `uri` (each its own connection; they reconnect
    /// after the service restarts on the same address).
    pub fn channels(&self, uri: &str, n: usize) -> Vec<Channel> {
        let ep = Target::new(uri, &self.tls()).expect("endpoint");
        (0..n).map(|_| ep.connect_lazy()).collect()
    }

    pub fn civil_client(&self) -> BirthRegistrationServiceClient<Channel> {
        BirthRegistrationServiceClient::new(self.channels(&self.stack.civil.uri(), 1).remove(0))
    }

    pub fn auth(
        &self,
        official_id: &str,
    ) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        self.tokens.get(official_id).expect("token").clone()
    }

    /// Replays `file` over `channels` in the background: open loop at `rate` per second,
    /// retrying a lost or refused call (same request_id) for long enough to outlast a
    /// restart.
    pub fn replay_in_background(
        &self,
        file: &Path,
        channels: Vec<Channel>,
        rate: f64,
    ) -> tokio::task::JoinHandle<ReplayReport> {
        self.replay_in_background_with(
            file,
            channels,
            ReplayOptions {
                mode: Mode::Rate(rate),
                max_in_flight: 512,
                number_timeout: Duration::from_secs(60),
                retries: 60,
                ..ReplayOptions::default()
            },
        )
    }

    /// Replays `file` over `channels` in the background as `opts` say.
    pub fn replay_in_background_with(
        &self,
        file: &Path,
        channels: Vec<Channel>,
        opts: ReplayOptions,
    ) -> tokio::task::JoinHandle<ReplayReport> {
        let file = file.to_owned();
        let tokens = self.tokens.clone();
        tokio::spawn(async move {
            replay(&file, channels, tokens, &opts)
                .await
                .expect("replay runs")
        })
    }

    /// Registrations the civil registry holds (every date), as its supervisor sees them.
    pub async fn registrations(&self) -> i64 {
        let stats = self
            .civil_client()
            .get_registration_statistics(authorized(
                cpb::GetRegistrationStatisticsRequest {
                    registered_from: Some(super::date(1900, 1, 1)),
                    registered_to: Some(super::date(2399, 12, 31)),
                    grouping: cpb::StatisticsGrouping::Province.into(),
                    province_code: String::new(),
                },
                &self.auth(SUPERVISOR_ID),
            ))
            .await;
        stats
            .ok()
            .and_then(|s| s.into_inner().total)
            .map_or(0, |t| t.registrations)
    }

    /// Waits (polling, up to `within`) until the civil registry holds at least `n`
    /// registrations.
    pub async fn until_registered(&self, n: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.registrations().await;
            if got >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {got} of {n} registrations within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `traffic verify` of the traffic in `file` (everything replayed so far) against both
    /// services, with the replay's outcomes.
    pub async fn verify(&self, file: &Path, outcomes: &[Outcome]) -> VerifyReport {
        verify_against(
            &self.plan,
            file,
            outcomes,
            self.channels(&self.stack.civil.uri(), 1).remove(0),
            self.channels(&self.stack.population.uri(), 1).remove(0),
            &self.auth(SUPERVISOR_ID),
        )
        .await
    }
}

/// `traffic verify` through the given channels.
pub async fn verify_against(
    plan: &Plan,
    file: &Path,
    outcomes: &[Outcome],
    civil: Channel,
    population: Channel,
    supervisor: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> VerifyReport {
    let provinces = plan
        .units
        .iter()
        .map(|u| (u.code.clone(), u.province_code.clone()))
        .collect();
    let expect = Expectation::read(file, &provinces, None).expect("expectation");
    let targets = Targets {
        civil,
        civil_auth: supervisor.clone(),
        population,
    };
    verify(&targets, &expect, Some(outcomes), Duration::from_secs(60))
        .await
        .expect("verify runs")
}

/// The replay's and verify's findings, empty when every invariant holds: every request
/// acknowledged (none failed), and no violation.
pub fn findings(replay: &ReplayReport, verified: &VerifyReport) -> Vec<String> {
    let mut out = verified.violations.clone();
    if replay.failed > 0 {
        out.push(format!(
            "{} registrations never acknowledged: {:?}",
            replay.failed, replay.errors
        ));
    }
    out
}
