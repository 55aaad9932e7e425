//! The `civil-registry` command line: `serve`, `migrate`, `audit verify`, `healthcheck`,
//! `config keys`, `admin units import`, `admin officials create|import|revoke|list`, and
//! `reconcile`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, ENV_PREFIX};
use crate::domain::model::{ProvinceCode, Role, UnitCode, UnitLevel};
use crate::registry::{new_token, token_hash};
use crate::relay::client::GrpcPopulationRegistry;
use crate::store::{Store, UnitInput};

/// The Ministry of Justice's birth register.
#[derive(Debug, Parser)]
#[command(name = "civil-registry", version)]
pub struct Cli {
    /// TOML configuration file (overridden by CIVIL_REGISTRY_* variables).
    #[arg(long, global = true, env = "CIVIL_REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (prints `LISTENING grpc=ADDR metrics=ADDR` once bound).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// The audit log.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running server's health (exit 0 when SERVING), for container health checks.
    Healthcheck {
        /// Server URI; defaults to the plaintext health-only listener
        /// (server.health_listen_addr) when configured, else server.listen_addr, on loopback.
        #[arg(long)]
        uri: Option<String>,
    },
    /// Configuration.
    Config {
        /// What to show.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Units and official accounts.
    Admin {
        /// What to administer.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Compare issued registrations with the population registry for a period. Exits 0
    /// when both agree (or every difference was repaired), 65 when differences remain, 1
    /// when either side could not be read.
    Reconcile {
        /// First registration date (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Last registration date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: NaiveDate,
        /// Re-queue or write back what can be repaired.
        #[arg(long)]
        repair: bool,
    },
}

/// Exit code of `audit verify` when the chain is broken (`EX_DATAERR` from sysexits.h), so
/// that a scheduled check tells tampering from a database it could not reach (exit 1).
pub const EXIT_AUDIT_BROKEN: i32 = 65;

/// Exit code of `reconcile` when differences remain unrepaired (`EX_DATAERR`), so that a
/// script tells them from a side it could not reach (exit 1).
pub const EXIT_DIFFERENCES_REMAIN: i32 = 65;

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; report the first broken link and exit 65 if any (1 when
    /// the chain cannot be read).
    Verify,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every key, its environment variable and default (tab-separated).
    Keys,
}

/// `admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Units.
    Units {
        /// What to do.
        #[command(subcommand)]
        command: UnitsCommand,
    },
    /// Official accounts.
    Officials {
        /// What to do.
        #[command(subcommand)]
        command: OfficialsCommand,
    },
}

/// `admin units` subcommands.
#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// Import units from CSV `code,name,level,province_code,parent_code,active`.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
}

/// `admin officials` subcommands.
#[derive(Debug, Subcommand)]
pub enum OfficialsCommand {
    /// Create an account; prints its id and bearer token once.
    Create {
        /// Unit code.
        #[arg(long)]
        unit: String,
        /// registrar, supervisor, auditor or admin.
        #[arg(long)]
        role: String,
        /// Account id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
    },
    /// Create accounts from CSV `official_id,unit_code,role`; writes
    /// `official_id,unit_code,role,token` to `--tokens-out`.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Where to write the tokens (created with mode 0600).
        #[arg(long)]
        tokens_out: PathBuf,
    },
    /// Revoke an account.
    Revoke {
        /// Account id.
        id: String,
    },
    /// Replace an active account's token (the old one is refused from now on); prints
    /// the new token once. The account, its id and its audit trail stay.
    Rotate {
        /// Account id.
        id: String,
    },
    /// List accounts (never tokens).
    List,
}

/// `config keys`: needs no valid configuration, since it is how to find the right keys.
pub fn print_config_keys() {
    for (key, env, default) in service_kit::config::keys::<Config>(ENV_PREFIX) {
        println!("{key}\t{env}\t{default}");
    }
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli, cfg: Config) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve => {
            let app = App::build(cfg).await?;
            let metrics = app
                .metrics_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "none".into());
            println!("LISTENING grpc={} metrics={}", app.grpc_addr(), metrics);
            app.serve(service_kit::shutdown::signal()).await?;
            Ok(0)
        }
        Command::Migrate => {
            let store = Store::connect(&cfg.database)
                .await?
                .with_numbering(cfg.registration.post_merger_rule);
            store.migrate().await?;
            store.close().await;
            println!("migrations applied");
            Ok(0)
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            // Reads only: the daily check, and a check of a restored copy, must not migrate
            // what they inspect.
            let store = Store::connect(&cfg.database)
                .await?
                .with_numbering(cfg.registration.post_merger_rule);
            let report = store.verify_audit().await?;
            match report.first_broken {
                None => {
                    println!("audit chain intact: {} entries", report.entries);
                    Ok(0)
                }
                Some(seq) => {
                    println!("audit chain BROKEN at entry {seq}");
                    Ok(EXIT_AUDIT_BROKEN)
                }
            }
        }
        Command::Healthcheck { uri } => {
            let target = service_kit::healthcheck::Target::of(uri, &cfg.server);
            // Over TLS the probe presents the service's own client identity and CA (the
            // ministry's PKI), as configured for its calls to the population registry.
            let tls = match target {
                service_kit::healthcheck::Target::Plaintext(_) => {
                    service_kit::healthcheck::plaintext()
                }
                service_kit::healthcheck::Target::Tls(_) => service_kit::ClientTlsConfig {
                    insecure_plaintext: false,
                    server_name: None,
                    ..cfg.population_registry.tls.clone()
                },
            };
            let uri = target.uri().to_owned();
            let serving = service_kit::healthcheck::check(&uri, &tls, "").await?;
            println!("{}", if serving { "SERVING" } else { "NOT_SERVING" });
            Ok(if serving { 0 } else { 1 })
        }
        Command::Config {
            command: ConfigCommand::Keys,
        } => {
            print_config_keys();
            Ok(0)
        }
        Command::Admin { command } => admin(command, &cfg).await,
        Command::Reconcile { from, to, repair } => {
            if to < from {
                bail!("--to must not be before --from");
            }
            let store = open(&cfg).await?;
            let client = GrpcPopulationRegistry::new(&cfg.population_registry)?;
            let differences =
                crate::reconcile::reconcile(&store, &client, from, to, repair).await?;
            for d in &differences {
                println!("{d}");
            }
            let repaired = differences.iter().filter(|d| d.repaired).count();
            println!("differences={} repaired={}", differences.len(), repaired);
            Ok(if differences.iter().all(|d| d.repaired) {
                0
            } else {
                EXIT_DIFFERENCES_REMAIN
            })
        }
    }
}

async fn open(cfg: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&cfg.database)
        .await?
        .with_numbering(cfg.registration.post_merger_rule);
    store.migrate().await?;
    Ok(store)
}

const ADMIN_ACTOR: &str = "system:admin-cli";

/// Reads a units CSV (`code,name,level,province_code,parent_code,active`).
pub fn read_units(path: &Path) -> anyhow::Result<Vec<UnitInput>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let expected = [
        "code",
        "name",
        "level",
        "province_code",
        "parent_code",
        "active",
    ];
    if headers.iter().map(str::trim).collect::<Vec<_>>() != expected {
        bail!("{}: header must be {}", path.display(), expected.join(","));
    }
    let mut units = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        let line = i + 2;
        let field = |n: usize| record.get(n).unwrap_or_default().trim().to_owned();
        let err =
            |what: &str, e: String| anyhow::anyhow!("{} line {line}: {what} {e}", path.display());
        units.push(UnitInput {
            code: UnitCode::parse(&field(0)).map_err(|e| err("code", e))?,
            name: field(1),
            level: UnitLevel::parse(&field(2)).map_err(|e| err("level", e))?,
            province_code: ProvinceCode::parse(&field(3)).map_err(|e| err("province_code", e))?,
            parent_code: if field(4).is_empty() {
                None
            } else {
                Some(UnitCode::parse(&field(4)).map_err(|e| err("parent_code", e))?)
            },
            active: match field(5).as_str() {
                "true" => true,
                "false" => false,
                _ => bail!(
                    "{} line {line}: active must be true or false",
                    path.display()
                ),
            },
        });
    }
    Ok(units)
}

/// An official's id: 1 to 64 of `A-Z a-z 0-9 . _ -`. It is written to the audit log and
/// the security log, so it may hold nothing that could forge or break a line there.
fn official_id(raw: &str) -> anyhow::Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if raw.is_empty() || raw.len() > 64 || !raw.chars().all(allowed) {
        anyhow::bail!("must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(raw.to_owned())
}

async fn admin(command: AdminCommand, cfg: &Config) -> anyhow::Result<i32> {
    let store = open(cfg).await?;
    match command {
        AdminCommand::Units {
            command: UnitsCommand::Import { file },
        } => {
            let units = read_units(&file)?;
            let n = store.import_units(&units, ADMIN_ACTOR).await?;
            println!("imported {n} units");
        }
        AdminCommand::Officials { command } => match command {
            OfficialsCommand::Create { unit, role, id } => {
                let unit = UnitCode::parse(&unit).map_err(|e| anyhow::anyhow!("--unit {e}"))?;
                let role = Role::parse(&role).map_err(|e| anyhow::anyhow!("--role {e}"))?;
                let id = match id {
                    Some(id) => official_id(&id).map_err(|e| anyhow::anyhow!("--id {e}"))?,
                    None => uuid::Uuid::new_v4().to_string(),
                };
                let token = new_token();
                store
                    .create_officials(&[(id.clone(), unit, role, token_hash(&token))], ADMIN_ACTOR)
                    .await?;
                println!("official_id={id}");
                println!("token={token}");
            }
            OfficialsCommand::Import { file, tokens_out } => {
                let mut reader = csv::Reader::from_path(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let mut rows = Vec::new();
                let mut out = Vec::new();
                for (i, record) in reader.records().enumerate() {
                    let record = record?;
                    let get = |n: usize| record.get(n).unwrap_or_default().trim().to_owned();
                    let line = i + 2;
                    let id = official_id(&get(0))
                        .map_err(|e| anyhow::anyhow!("line {line}: official_id {e}"))?;
                    let unit = UnitCode::parse(&get(1))
                        .map_err(|e| anyhow::anyhow!("line {line}: unit_code {e}"))?;
                    let role = Role::parse(&get(2))
                        .map_err(|e| anyhow::anyhow!("line {line}: role {e}"))?;
                    let token = new_token();
                    rows.push((id.clone(), unit.clone(), role, token_hash(&token)));
                    out.push([id, unit.to_string(), role.as_str().to_owned(), token]);
                }
                // The tokens are on disk before the accounts exist, and take the file's
                // name only once they do: a failed write creates no account whose token
                // is lost, and a failed import leaves an earlier tokens file as it was.
                let pending = write_tokens(&tokens_out, &out)?;
                if let Err(e) = store.create_officials(&rows, ADMIN_ACTOR).await {
                    let _ = std::fs::remove_file(&pending);
                    return Err(e);
                }
                std::fs::rename(&pending, &tokens_out).with_context(|| {
                    format!(
                        "the accounts were created; their tokens are in {}",
                        pending.display()
                    )
                })?;
                println!(
                    "created {} officials; tokens written to {}",
                    out.len(),
                    tokens_out.display()
                );
            }
            OfficialsCommand::Revoke { id } => {
                if !store.revoke_official(&id, ADMIN_ACTOR).await? {
                    bail!("no official {id}");
                }
                println!("revoked {id}");
            }
            OfficialsCommand::Rotate { id } => {
                let token = new_token();
                if !store
                    .rotate_official_token(&id, &token_hash(&token), ADMIN_ACTOR)
                    .await?
                {
                    bail!("no active official {id}");
                }
                println!("official_id={id}");
                println!("token={token}");
            }
            OfficialsCommand::List => {
                println!("official_id,unit_code,role,active");
                for o in store.officials().await? {
                    println!("{},{},{},{}", o.id, o.unit_code, o.role, o.active);
                }
            }
        },
    }
    store.close().await;
    Ok(0)
}

/// Writes the tokens, readable by the owner only, to a new file beside `path` (flushed to
/// disk) and returns its name.
fn write_tokens(path: &Path, rows: &[[String; 4]]) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let mut pending = path.as_os_str().to_owned();
    pending.push(".pending");
    let pending = PathBuf::from(pending);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&pending).with_context(|| {
        format!(
            "creating {} (left over from an import that failed? remove it)",
            pending.display()
        )
    })?;
    let mut writer = csv::Writer::from_writer(file);
    writer.write_record(["official_id", "unit_code", "role", "token"])?;
    for row in rows {
        writer.write_record(row)?;
    }
    let mut file = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    file.flush()?;
    file.sync_all()?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::official_id;

    #[test]
    fn an_official_id_is_a_short_plain_word() {
        for good in ["CB000001", "reg_c001", "a.b-c", &"x".repeat(64)] {
            assert_eq!(official_id(good).ok().as_deref(), Some(good), "{good}");
        }
        for bad in [
            "",
            "two words",
            "tab\tin",
            "new\nline",
            "Nguyễn",
            &"x".repeat(65),
        ] {
            assert!(official_id(bad).is_err(), "{bad:?}");
        }
    }
}
