//! Child processes of the benchmarks and what `/proc` says about them: peak resident
//! memory (`VmHWM`), CPU time (utime + stime) and the machine's load average.
//!
//! The benchmarks spawn their own children (the echo server is this executable with a
//! hidden subcommand, not `serve`), so this is a small sibling of [`crate::stack`]'s
//! `ServiceProcess` that also exposes the pid, which the memory and CPU figures need.

use crate::stack::parse_listening;
use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A running child that printed its `LISTENING grpc=ADDR` line.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `bin args...` with `env`, stderr to `log`, and waits for its LISTENING line.
    pub async fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("child without pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some((grpc, _)) = parse_listening(&line) {
                    return Ok(Some(grpc));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let grpc = match found {
            Ok(Ok(Some(a))) => a,
            Ok(_) => {
                let status = child.wait().await.ok();
                bail!(
                    "{name} exited before listening ({status:?}); log {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            Err(_) => bail!("{name} did not print LISTENING within 120 s"),
        };
        // Keep draining stdout so that the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: name.to_owned(),
            pid,
            grpc,
            log,
            child,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// SIGTERM, then wait up to `grace` (SIGKILL after that).
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => bail!("{} exited with {s}; log {}", self.name, self.log.display()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within {grace:?}; killed", self.name)
            }
        }
    }
}

/// What `/proc/<pid>` says about a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set size (`VmHWM`), KiB.
    pub vm_hwm_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub vm_rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

impl ProcStats {
    pub fn hwm_mib(&self) -> f64 {
        self.vm_hwm_kib as f64 / 1024.0
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 when unknown).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
pub fn stats(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
    Ok(ProcStats {
        vm_hwm_kib: kib("VmHWM:"),
        vm_rss_kib: kib("VmRSS:"),
        cpu_seconds: cpu as f64 / clk_tck(),
    })
}

/// This process's own CPU time, seconds.
pub fn own_cpu_seconds() -> f64 {
    stats(std::process::id()).map_or(0.0, |s| s.cpu_seconds)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Children of this process, by executable file name (e.g. `population-registry`).
pub fn children_by_exe() -> BTreeMap<String, u32> {
    let me = std::process::id();
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        if let Some(name) = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            out.insert(name, pid);
        }
    }
    out
}

/// Samples the children's `/proc` figures every `every` until `stop` is dropped or fires,
/// keeping the last reading per executable name (VmHWM is already a peak; CPU time only
/// grows), so that figures survive the children's exit.
#[derive(Debug)]
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<BTreeMap<String, ProcStats>>,
}

impl Sampler {
    pub fn start(every: Duration) -> Self {
        let (stop, mut rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut seen: BTreeMap<String, ProcStats> = BTreeMap::new();
            loop {
                for (name, pid) in children_by_exe() {
                    if let Ok(s) = stats(pid) {
                        let e = seen.entry(name).or_default();
                        e.vm_hwm_kib = e.vm_hwm_kib.max(s.vm_hwm_kib);
                        e.vm_rss_kib = s.vm_rss_kib;
                        e.cpu_seconds = e.cpu_seconds.max(s.cpu_seconds);
                    }
                }
                tokio::select! {
                    _ = &mut rx => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
            seen
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> BTreeMap<String, ProcStats> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
