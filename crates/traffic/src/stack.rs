//! Running both services as child processes for the pilot and the end-to-end tests: a
//! throwaway CA and certificates, locating (or building) the binaries, starting each
//! service on port 0 and reading its `LISTENING` line, provisioning units and officials
//! through the civil registry's admin CLI, and stopping everything with SIGTERM.

use crate::client::{ClientTls, Tokens};
use crate::profile::{MINISTRY_UNIT, Plan};
use anyhow::{Context as _, bail};
use service_kit::pki::ThrowawayCa;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Identity (CN and DNS SAN) of the civil registry's client certificate.
pub const CIVIL_CLIENT_IDENTITY: &str = "civil-registry";
/// Identity of the traffic tool's client certificate (read allow-list only).
pub const TRAFFIC_CLIENT_IDENTITY: &str = "traffic-verifier";
/// Identity of a client certificate signed by the same CA but on no allow-list (for the
/// intruder tests).
pub const STRANGER_CLIENT_IDENTITY: &str = "stranger";

/// PEM files of the throwaway CA and the certificates signed by it.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub civil_client_cert: PathBuf,
    pub civil_client_key: PathBuf,
    pub traffic_client_cert: PathBuf,
    pub traffic_client_key: PathBuf,
    pub stranger_client_cert: PathBuf,
    pub stranger_client_key: PathBuf,
}

impl Certs {
    /// Creates a CA, one server certificate (localhost, 127.0.0.1) for both services and
    /// the client certificates under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let ca = ThrowawayCa::create(dir, "traffic pilot")?;
        let server = ca.server_cert("server", &["localhost", "127.0.0.1"])?;
        let client = |identity: &str| ca.client_cert(identity, identity, &[identity]);
        let civil = client(CIVIL_CLIENT_IDENTITY)?;
        let traffic = client(TRAFFIC_CLIENT_IDENTITY)?;
        let stranger = client(STRANGER_CLIENT_IDENTITY)?;
        Ok(Self {
            ca: ca.ca_file().to_path_buf(),
            server_cert: server.cert_file,
            server_key: server.key_file,
            civil_client_cert: civil.cert_file,
            civil_client_key: civil.key_file,
            traffic_client_cert: traffic.cert_file,
            traffic_client_key: traffic.key_file,
            stranger_client_cert: stranger.cert_file,
            stranger_client_key: stranger.key_file,
        })
    }

    /// TLS settings of the traffic tool's clients (CA + its client certificate).
    pub fn traffic_client(&self) -> ClientTls {
        ClientTls {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.traffic_client_cert.clone()),
            key_file: Some(self.traffic_client_key.clone()),
            server_name: Some("localhost".to_owned()),
            insecure: false,
        }
    }
}

/// Paths of the two service binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub population: PathBuf,
    pub civil: PathBuf,
}

/// When to run `cargo build` for the service binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Only when they are not next to the running executable.
    IfMissing,
    /// Always (cargo makes it a no-op when they are up to date).
    Always,
}

/// The cargo profile directory of the running executable (`target/<profile>`), also for
/// test executables that live in `target/<profile>/deps`.
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable without a directory")?
        .to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Finds the service binaries next to the running executable, building them with cargo
/// (same profile) when asked or when missing.
pub fn locate_binaries(build: Build) -> anyhow::Result<Binaries> {
    let dir = profile_dir()?;
    let bins = Binaries {
        population: dir.join(format!(
            "population-registry{}",
            std::env::consts::EXE_SUFFIX
        )),
        civil: dir.join(format!("civil-registry{}", std::env::consts::EXE_SUFFIX)),
    };
    if build == Build::IfMissing && bins.population.exists() && bins.civil.exists() {
        return Ok(bins);
    }
    // target/<profile> -> the workspace root holds target/ (the default target dir); the
    // traffic crate's manifest dir is the fallback.
    let root = dir
        .parent()
        .and_then(Path::parent)
        .filter(|r| r.join("Cargo.toml").exists())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "population-registry", "-p", "civil-registry"])
        .env("CARGO_TARGET_DIR", dir.parent().context("no target dir")?);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => bail!("cannot tell the cargo profile of {}", dir.display()),
    }
    eprintln!("building the services: {cmd:?}");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the services failed ({status})");
    }
    if !(bins.population.exists() && bins.civil.exists()) {
        bail!(
            "built, but {} or {} is missing",
            bins.population.display(),
            bins.civil.display()
        );
    }
    Ok(bins)
}

/// A running service process.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: &'static str,
    pub grpc: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub log: PathBuf,
    child: Child,
}

/// Parses `LISTENING grpc=ADDR metrics=ADDR` (metrics may be absent or `none`).
pub fn parse_listening(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = line.trim().strip_prefix("LISTENING")?;
    let mut grpc = None;
    let mut metrics = None;
    for part in rest.split_whitespace() {
        if let Some(a) = part.strip_prefix("grpc=") {
            grpc = a.parse().ok();
        } else if let Some(a) = part.strip_prefix("metrics=") {
            metrics = a.parse().ok();
        }
    }
    Some((grpc?, metrics))
}

impl ServiceProcess {
    /// Starts `bin serve` with `env`, stderr to `log`, and waits for its LISTENING line.
    pub async fn start(
        name: &'static str,
        bin: &Path,
        env: &[(String, String)],
        cwd: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(bin)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = parse_listening(&line) {
                    return Ok(Some(addrs));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let (grpc, metrics) = match found {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "{name} exited before listening ({status:?}); log {}:\n{}",
                    log.display(),
                    tail(&log)
                );
            }
            Err(_) => bail!(
                "{name} did not print LISTENING within 60 s; log {}:\n{}",
                log.display(),
                tail(&log)
            ),
        };
        // Keep draining stdout so that the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name,
            grpc,
            metrics,
            log,
            child,
        })
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after that).
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        terminate(pid).with_context(|| format!("sending SIGTERM to {} ({pid})", self.name))?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!(
                "{} exited with {status} after SIGTERM; log {}",
                self.name,
                self.log.display()
            ),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not stop within {grace:?} of SIGTERM; killed",
                    self.name
                )
            }
        }
    }

    /// SIGKILL: a crash, with no chance to drain, flush or release anything. Returns once
    /// the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.id().is_some() {
            self.child.start_kill().context("kill -9")?;
        }
        self.child.wait().await?;
        Ok(())
    }

    /// The process id, while it runs (for /proc measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `https://127.0.0.1:PORT` of the gRPC listener.
    pub fn uri(&self) -> String {
        format!("https://{}", self.grpc)
    }
}

/// Sends SIGTERM by system call, so that stopping needs no `kill` binary (minimal images
/// have no procps).
fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    Ok(())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Both services, running, with what the traffic tool needs to talk to them.
#[derive(Debug)]
pub struct Stack {
    pub data_dir: PathBuf,
    pub certs: Certs,
    pub bins: Binaries,
    pub population: ServiceProcess,
    pub civil: ServiceProcess,
    civil_env: Vec<(String, String)>,
    population_env: Vec<(String, String)>,
    /// Processes started after the first two (restarts, replicas): names their logs.
    spawned: u32,
}

fn population_env(dir: &Path, certs: &Certs) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (format!("POPULATION_REGISTRY_{k}"), v.to_owned());
    let p = |k: &str, v: &Path| (format!("POPULATION_REGISTRY_{k}"), v.display().to_string());
    vec![
        s("SERVER__LISTEN_ADDR", "127.0.0.1:0"),
        p("SERVER__TLS__CERT_FILE", &certs.server_cert),
        p("SERVER__TLS__KEY_FILE", &certs.server_key),
        p("SERVER__TLS__CLIENT_CA_FILE", &certs.ca),
        s(
            "DATABASE__URL",
            &sqlite_url(&dir.join("population-registry.db")),
        ),
        s("METRICS__LISTEN_ADDR", "127.0.0.1:0"),
        s(
            "AUTH__MINTING_ALLOWED",
            &format!("[\"{CIVIL_CLIENT_IDENTITY}\"]"),
        ),
        s(
            "AUTH__READ_ALLOWED",
            &format!("[\"{CIVIL_CLIENT_IDENTITY}\",\"{TRAFFIC_CLIENT_IDENTITY}\"]"),
        ),
        s("TELEMETRY__LOG_FORMAT", "json"),
        s("TELEMETRY__LOG_FILTER", "warn"),
    ]
}

fn civil_env(
    dir: &Path,
    certs: &Certs,
    population: Option<&ServiceProcess>,
) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (format!("CIVIL_REGISTRY_{k}"), v.to_owned());
    let p = |k: &str, v: &Path| (format!("CIVIL_REGISTRY_{k}"), v.display().to_string());
    let mut env = vec![
        s("SERVER__LISTEN_ADDR", "127.0.0.1:0"),
        p("SERVER__TLS__CERT_FILE", &certs.server_cert),
        p("SERVER__TLS__KEY_FILE", &certs.server_key),
        s("DATABASE__URL", &sqlite_url(&dir.join("civil-registry.db"))),
        s("METRICS__LISTEN_ADDR", "127.0.0.1:0"),
        p("POPULATION_REGISTRY__TLS__CA_FILE", &certs.ca),
        p(
            "POPULATION_REGISTRY__TLS__CERT_FILE",
            &certs.civil_client_cert,
        ),
        p(
            "POPULATION_REGISTRY__TLS__KEY_FILE",
            &certs.civil_client_key,
        ),
        s("POPULATION_REGISTRY__TLS__SERVER_NAME", "localhost"),
        s("TELEMETRY__LOG_FORMAT", "json"),
        s("TELEMETRY__LOG_FILTER", "warn"),
    ];
    if let Some(pop) = population {
        env.push(s("POPULATION_REGISTRY__URI", &pop.uri()));
    }
    env
}

impl Stack {
    /// Creates certificates under `data_dir`, starts the population registry, provisions
    /// the plan's units and officials in the civil registry, then starts it.
    /// Returns the stack and the officials' tokens (plus a ministry supervisor's token
    /// under [`SUPERVISOR_ID`]).
    pub async fn start(
        data_dir: &Path,
        bins: Binaries,
        plan: &Plan,
    ) -> anyhow::Result<(Self, Tokens)> {
        Self::start_with_env(data_dir, bins, plan, &[]).await
    }

    /// [`Stack::start`] with extra environment variables for both services (each variable
    /// carries its service's prefix, so it applies to one of them), e.g. a short
    /// `POPULATION_REGISTRY_SERVER__REQUEST_TIMEOUT_MS` for the limits tests.
    pub async fn start_with_env(
        data_dir: &Path,
        bins: Binaries,
        plan: &Plan,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<(Self, Tokens)> {
        std::fs::create_dir_all(data_dir)?;
        let data_dir = std::fs::canonicalize(data_dir)?;
        let certs = Certs::create(&data_dir.join("tls"))?;

        let mut penv = population_env(&data_dir, &certs);
        penv.extend(extra_env.iter().cloned());
        run_admin(&bins.population, &penv, &data_dir, &["migrate"]).await?;
        let population = ServiceProcess::start(
            "population-registry",
            &bins.population,
            &penv,
            &data_dir,
            data_dir.join("population-registry.log"),
        )
        .await?;

        let mut cenv = civil_env(&data_dir, &certs, Some(&population));
        cenv.extend(extra_env.iter().cloned());
        let tokens = provision(&bins.civil, &cenv, &data_dir, plan).await?;
        let civil = ServiceProcess::start(
            "civil-registry",
            &bins.civil,
            &cenv,
            &data_dir,
            data_dir.join("civil-registry.log"),
        )
        .await?;
        Ok((
            Self {
                data_dir,
                certs,
                bins,
                population,
                civil,
                civil_env: cenv,
                population_env: penv,
                spawned: 0,
            },
            tokens,
        ))
    }

    /// Runs a civil-registry subcommand against this stack's database and config.
    pub async fn civil_admin(&self, args: &[&str]) -> anyhow::Result<String> {
        run_admin(&self.bins.civil, &self.civil_env, &self.data_dir, args).await
    }

    /// Runs a population-registry subcommand against this stack's database and config.
    pub async fn population_admin(&self, args: &[&str]) -> anyhow::Result<String> {
        run_admin(
            &self.bins.population,
            &self.population_env,
            &self.data_dir,
            args,
        )
        .await
    }

    /// Starts one more population-registry process on this stack's configuration plus
    /// `extra` (later keys win: e.g. its own listen address or database), with its own log.
    pub async fn spawn_population(
        &mut self,
        extra: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        self.spawned += 1;
        let mut env = self.population_env.clone();
        env.extend(extra.iter().cloned());
        let log = self
            .data_dir
            .join(format!("population-registry.{}.log", self.spawned));
        ServiceProcess::start(
            "population-registry",
            &self.bins.population,
            &env,
            &self.data_dir,
            log,
        )
        .await
    }

    /// Starts one more civil-registry process (see [`Stack::spawn_population`]).
    pub async fn spawn_civil(
        &mut self,
        extra: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        self.spawned += 1;
        let mut env = self.civil_env.clone();
        env.extend(extra.iter().cloned());
        let log = self
            .data_dir
            .join(format!("civil-registry.{}.log", self.spawned));
        ServiceProcess::start(
            "civil-registry",
            &self.bins.civil,
            &env,
            &self.data_dir,
            log,
        )
        .await
    }

    /// Starts the population registry again on the address it had (after
    /// `self.population.kill()`), as an orchestrator restarts a crashed process.
    pub async fn restart_population(&mut self) -> anyhow::Result<()> {
        self.population.kill().await?;
        let addr = self.population.grpc.to_string();
        self.population = self
            .spawn_population(&[("POPULATION_REGISTRY_SERVER__LISTEN_ADDR".into(), addr)])
            .await?;
        Ok(())
    }

    /// Starts the civil registry again on the address it had (after
    /// `self.civil.kill()`).
    pub async fn restart_civil(&mut self) -> anyhow::Result<()> {
        self.civil.kill().await?;
        let addr = self.civil.grpc.to_string();
        self.civil = self
            .spawn_civil(&[("CIVIL_REGISTRY_SERVER__LISTEN_ADDR".into(), addr)])
            .await?;
        Ok(())
    }

    /// Stops the civil registry first (its relay drains towards the population registry),
    /// then the population registry; both with SIGTERM.
    pub async fn stop(self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(30);
        let civil = self.civil.stop(grace).await;
        let population = self.population.stop(grace).await;
        civil.and(population)
    }
}

/// Official id under which the tokens map holds the ministry supervisor's token.
pub const SUPERVISOR_ID: &str = "__supervisor";

async fn run_admin(
    bin: &Path,
    env: &[(String, String)],
    cwd: &Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Imports units and officials, and creates the ministry supervisor used by `verify`.
async fn provision(
    bin: &Path,
    env: &[(String, String)],
    dir: &Path,
    plan: &Plan,
) -> anyhow::Result<Tokens> {
    let units = dir.join("units.csv");
    let officials = dir.join("officials.csv");
    let tokens_out = dir.join("tokens.csv");
    plan.write_units_csv(std::io::BufWriter::new(std::fs::File::create(&units)?))?;
    plan.write_officials_csv(std::io::BufWriter::new(std::fs::File::create(&officials)?))?;
    run_admin(bin, env, dir, &["migrate"]).await?;
    let path = |p: &Path| p.display().to_string();
    run_admin(bin, env, dir, &["admin", "units", "import", &path(&units)]).await?;
    run_admin(
        bin,
        env,
        dir,
        &[
            "admin",
            "officials",
            "import",
            &path(&officials),
            "--tokens-out",
            &path(&tokens_out),
        ],
    )
    .await?;
    let out = run_admin(
        bin,
        env,
        dir,
        &[
            "admin",
            "officials",
            "create",
            "--unit",
            MINISTRY_UNIT,
            "--role",
            "supervisor",
        ],
    )
    .await?;
    // Prints `official_id=ID` and `token=TOKEN` (a bare last line is accepted too).
    let token = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("token="))
        .or_else(|| out.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .context("admin officials create printed no token")?;
    let mut tokens = Tokens::read_csv(&tokens_out)?;
    tokens.insert(SUPERVISOR_ID, token)?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_a_service_with_sigterm_and_sees_its_clean_exit() {
        // Arrange: a stand-in service (`sh serve` runs the script `serve` of its working
        // directory) that announces itself and exits 0 only on SIGTERM (SIGKILL would
        // show as a failed exit).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("serve"),
            "trap 'exit 0' TERM\necho LISTENING grpc=127.0.0.1:9\nwhile :; do sleep 1 & wait $!; done\n",
        )
        .unwrap();
        let service = ServiceProcess::start(
            "stand-in",
            Path::new("/bin/sh"),
            &[],
            dir.path(),
            dir.path().join("stand-in.log"),
        )
        .await
        .unwrap();

        // Act
        let stopped = service.stop(Duration::from_secs(10)).await;

        // Assert
        assert!(stopped.is_ok(), "{stopped:?}");
    }
}
