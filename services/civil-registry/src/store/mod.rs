//! All SQL of the civil registry, over sqlx's `Any` driver so that one set of portable
//! queries serves SQLite (default; WAL, synchronous=FULL) and PostgreSQL. Every write
//! transaction starts by taking the audit chain's head, which serialises writers (SQLite
//! has one writer anyway; on PostgreSQL the row lock keeps the hash chain linear and
//! orders lock acquisition so that writers never deadlock).

mod admin;
mod audit;
mod direct;
mod group;
mod outbox;
mod registrations;

pub use admin::{OfficialRow, UnitInput};
pub use audit::{AuditEntry, VerifyReport};
pub use direct::SqliteWriter;
pub(crate) use group::{GroupWriter, write_group};
pub use outbox::Completion;
pub use registrations::{
    GroupWritten, InsertOutcome, Lease, ListFilter, NewRow, PageCursor, ReconcileRow,
    StatsGrouping, StatsRow,
};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::ConfigError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::DatabaseConfig;
use crate::domain::numbering::PostMergerRule;

/// Which database is behind the `Any` pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The civil registry's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where write transactions and outbox claims take their connection. PostgreSQL: a
    /// pool of their own, so that lookups holding every pooled connection (a burst of
    /// lists, a slow statistics query) never hold registrations back; writers queue on the
    /// audit head's row lock anyway. SQLite: the same pool, whose writes take the turn.
    writes: AnyPool,
    /// One connection for the health probe alone: a burst of lookups holding every pooled
    /// connection must not read as an unreachable database (every replica NOT_SERVING at
    /// once, the ingress left without endpoints).
    health: AnyPool,
    backend: Backend,
    /// SQLite: this process's write transactions take turns here before asking for the
    /// file's write lock. SQLite's busy handler does not queue: a writer that finds the
    /// lock taken sleeps 1, 2, 5, 10 ... 100 ms between attempts however soon the lock is
    /// freed, so the group-commit writer colliding with a relay claim stalled every
    /// registration for up to a few hundred milliseconds. Shared with the group-commit
    /// writer's own connection (`Store::sqlite_writer`); other processes still meet the
    /// busy handler.
    write_turn: Arc<Mutex<()>>,
    /// SQLite: given after each background checkpoint, for the writer to finish it
    /// (`sqlite_direct::CheckpointSignal`).
    checkpointed: sqlite_direct::CheckpointSignal,
    /// The province code each number is to encode (`registration.post_merger_rule`).
    numbering: PostMergerRule,
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_registrations_status.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_registrations_moved.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_lighter_commits.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_derived_counts.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_correction_reasons.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_registrations_status.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_registrations_moved.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_lighter_commits.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_correction_reasons.sql"),
    ),
];

/// The `n`-th (1-based) bind parameter for statements built at run time. SQLite gets
/// anonymous `?` parameters: sqlx resolves named or numbered ones by asking SQLite for each
/// parameter's name, which is quadratic in the number of parameters of a multi-row INSERT.
pub(crate) fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// The verb of the group commit's multi-row INSERTs. On SQLite, `OR FAIL`: with the
/// default `ABORT`, a statement that may fail part-way keeps a statement journal (a copy
/// of every page it touches, so that it can undo only itself). A failed statement here
/// always rolls back its whole transaction, so there is nothing to undo statement by
/// statement. (An immediate foreign key still makes SQLite keep one for the
/// `registrations` rows.) PostgreSQL has no such clause and no such cost.
pub(crate) fn insert_into(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INSERT OR FAIL INTO",
        Backend::Postgres => "INSERT INTO",
    }
}

/// `count` parameters separated by commas, numbered from 1.
pub(crate) fn params(backend: Backend, count: usize) -> String {
    (1..=count)
        .map(|n| param(backend, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `items` into pieces of a few fixed sizes, so that statements built for a piece
/// have few distinct texts: each text is prepared once per connection and then reused
/// from the statement cache. Powers of two: a group of n rows
/// takes at most log2(n) + 1 statements per table (each one a round trip to the
/// database thread), and 9 sizes of the writer's few statement shapes stay within
/// sqlx's statement cache (100 per connection).
pub(crate) fn pieces<T>(items: &[T]) -> Vec<&[T]> {
    let mut rest = items;
    piece_sizes(items.len())
        .into_iter()
        .map(|size| {
            let (head, tail) = rest.split_at(size);
            rest = tail;
            head
        })
        .collect()
}

/// The sizes `pieces` cuts `len` items into, in order.
pub(crate) fn piece_sizes(mut len: usize) -> Vec<usize> {
    const SIZES: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];
    let mut out = Vec::new();
    while len > 0 {
        let size = SIZES.into_iter().find(|s| *s <= len).unwrap_or(1);
        out.push(size);
        len -= size;
    }
    out
}

/// SQLite's automatic checkpoint, in WAL pages: only a backstop, checkpoints run off the
/// commit path (`Store::checkpoint`, called by a background task).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 65_536;
/// The WAL file kept after a reset: above the size it reaches between checkpoints, so it
/// is reused in place instead of regrown (each new block costs ext4 an allocation and a
/// zero fill on the commit path).
const WAL_SIZE_LIMIT_BYTES: u64 = 1 << 30;

/// PostgreSQL: connections reserved for writes (see `Store::writes`). Two, so that the
/// next write transaction has its connection ready while one holds the audit head.
const WRITE_CONNECTIONS: u32 = 2;

/// Pool options with this service's per-connection settings.
fn pool_options(cfg: &DatabaseConfig, max_connections: u32) -> AnyPoolOptions {
    let busy_timeout_ms = cfg.busy_timeout_ms;
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // Throughput comes from grouping registrations per commit.
                sqlite_direct::PooledSqlite {
                    // 8 MiB instead of SQLite's 2 MB.
                    cache_kib: 8_192,
                    wal_autocheckpoint_pages: WAL_AUTOCHECKPOINT_PAGES,
                    journal_size_limit_bytes: WAL_SIZE_LIMIT_BYTES,
                    busy_timeout_ms,
                    foreign_keys: true,
                }
                .prepare(conn)
                .await
            })
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens the pool (creating the SQLite file's directory if needed). Does not migrate.
    pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        Self::open(cfg).await
    }

    /// Sets which province code the requests this store queues ask numbers for
    /// (`registration.post_merger_rule`; legacy until set).
    pub fn with_numbering(mut self, numbering: PostMergerRule) -> Self {
        self.numbering = numbering;
        self
    }

    /// Which province code the requests this store queues ask numbers for.
    pub fn numbering(&self) -> PostMergerRule {
        self.numbering
    }

    async fn open(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        install_default_drivers();
        let backend = if cfg.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if cfg.url.starts_with("postgres:") || cfg.url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(
                ConfigError::new("database.url", "must start with sqlite: or postgres:").into(),
            );
        };
        if backend == Backend::Sqlite && cfg.url.contains(":memory:") {
            return Err(ConfigError::new(
                "database.url",
                "an in-memory SQLite register would lose every registration at exit; name a file",
            )
            .into());
        }
        if backend == Backend::Sqlite {
            let path = cfg
                .url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("creating the database directory {}", parent.display())
                })?;
            }
        }
        let url = if backend == Backend::Sqlite {
            // The checkpoints run on these connections: paced, their writes
            // to the database file reach the disk in steps instead of in front of
            // every commit's WAL sync at once.
            sqlite_direct::url_with_paced_checkpoints(&cfg.url)?
        } else {
            cfg.url.clone()
        };
        let pool = sqlite_direct::connect_pool(pool_options(cfg, cfg.max_connections), &url)
            .await
            .context("database.url: cannot connect")?;
        let writes = match backend {
            Backend::Sqlite => pool.clone(),
            Backend::Postgres => {
                sqlite_direct::connect_pool(pool_options(cfg, WRITE_CONNECTIONS), &url)
                    .await
                    .context("database.url: cannot connect (write connections)")?
            }
        };
        let health = sqlite_direct::connect_pool(pool_options(cfg, 1), &url)
            .await
            .context("database.url: cannot connect (health probe)")?;
        Ok(Self {
            pool,
            writes,
            health,
            backend,
            write_turn: Arc::new(Mutex::new(())),
            checkpointed: sqlite_direct::CheckpointSignal::new(),
            numbering: PostMergerRule::default(),
        })
    }

    /// The pool lookups use (tests hold its connections to show writes do not need it).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations not yet applied, each in its own transaction.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let known: Vec<i64> = migrations.iter().map(|(version, _)| *version).collect();
        let applied_versions = || {
            sqlx::query_scalar::<_, i64>("SELECT version FROM schema_migrations")
                .fetch_all(&self.pool)
        };
        // A schema with every migration applied takes no lock: a replica starting while
        // another version's migration holds it (the `migrate` init container of a rollout)
        // starts at once instead of waiting past its startup probe.
        let up_to_date = applied_versions()
            .await
            .ok()
            .filter(|applied| known.iter().all(|version| applied.contains(version)));
        if up_to_date.is_none() {
            let (mut tx, _turn) = self.begin_migration_step().await?;
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)")
                .await
                .context("creating schema_migrations")?;
            tx.commit().await?;
        }
        let applied = match up_to_date {
            Some(applied) => applied,
            None => applied_versions()
                .await
                .context("reading the applied migrations")?,
        };
        let standing = sqlite_direct::schema_standing(&applied, &known)
            .map_err(|why| ConfigError::new("database.url", why))?;
        let pending = migrations
            .iter()
            .filter(|(version, _)| !applied.contains(version));
        for (version, sql) in pending {
            let (mut tx, _turn) = self.begin_migration_step().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                tx.execute(sqlx::AssertSqlSafe(statement.to_owned()))
                    .await
                    .with_context(|| format!("applying migration {version}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        if let sqlite_direct::SchemaStanding::Newer { applied, known } = standing {
            tracing::warn!(
                schema_version = applied,
                binary_version = known,
                "the database schema is newer than this binary (a rollback?): running on it"
            );
        }
        Ok(())
    }

    /// A write transaction for one migration step. On PostgreSQL it first takes the
    /// migration lock, so replicas starting together run each step once, in turn (even
    /// `CREATE TABLE IF NOT EXISTS` fails when two run it at once).
    async fn begin_migration_step(
        &self,
    ) -> Result<(Transaction<'static, Any>, Option<OwnedMutexGuard<()>>), sqlx::Error> {
        let (mut tx, turn) = self.begin_immediate().await?;
        if self.backend == Backend::Postgres {
            tx.execute("SELECT pg_advisory_xact_lock(730500104)")
                .await?;
        }
        Ok((tx, turn))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.health)
            .await
            .is_ok()
    }

    /// SQLite: copies committed WAL frames into the database file without blocking the
    /// writer (PASSIVE), so that the writer's commits pay only their WAL fsync. A no-op on
    /// PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
            self.checkpointed.checkpointed();
        }
        Ok(())
    }

    /// Closes the pools (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
        self.health.close().await;
    }

    /// A transaction that holds SQLite's write lock from its first statement, so that it
    /// never fails to upgrade a read snapshot when another writer got in between; on SQLite
    /// with this process's write turn, to be kept until the transaction ends.
    async fn begin_immediate(
        &self,
    ) -> Result<(Transaction<'static, Any>, Option<OwnedMutexGuard<()>>), sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.writes.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writes.begin().await?,
        };
        Ok((tx, turn))
    }

    /// This process's turn to write (SQLite; `None` on PostgreSQL), for every statement
    /// that takes the file's write lock, held until that statement or transaction ends.
    pub(crate) async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(Arc::clone(&self.write_turn).lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// Starts a write transaction positioned on the audit chain's head.
    pub(crate) async fn begin_write(&self) -> Result<audit::WriteTx, sqlx::Error> {
        let (mut tx, turn) = self.begin_immediate().await?;
        if self.backend == Backend::Postgres {
            // A write transaction only looks rows up by key. Without statistics (autovacuum
            // off, or before its first ANALYZE) the planner takes each value of an IN list
            // to match 0.5% of the table and would scan all of it for a long list.
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await?;
        }
        let sql = match self.backend {
            Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        };
        let (seq, hash): (i64, String) = sqlx::query_as(sql).fetch_one(&mut *tx).await?;
        Ok(audit::WriteTx::new(tx, turn, seq, hash, self.backend))
    }
}

/// Whether an error means the database cannot be reached (as opposed to a bad statement):
/// those answer UNAVAILABLE, which clients retry with the same request_id.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    sqlite_direct::is_unavailable(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_item_in_order_with_one_statement_per_set_bit_below_256() {
        for len in [0usize, 1, 2, 3, 46, 255, 256, 257, 1000] {
            let items: Vec<usize> = (0..len).collect();
            let cut = pieces(&items);
            assert_eq!(cut.concat(), items, "len {len}");
            assert!(
                cut.iter()
                    .all(|p| p.len().is_power_of_two() && p.len() <= 256)
            );
            let expected = len / 256 + (len % 256).count_ones() as usize;
            assert_eq!(cut.len(), expected, "len {len}");
        }
    }
}
