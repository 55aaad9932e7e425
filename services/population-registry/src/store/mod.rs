//! All SQL of the service: the pool (SQLite or PostgreSQL through sqlx's
//! `any` driver), embedded migrations, the single writer task that groups
//! concurrent issuances into one durable transaction, reads, and the audit
//! chain.

mod audit;
mod rows;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use service_kit::ConfigError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row as _, SqlSafeStr as _};
use tokio::sync::{mpsc, oneshot};

pub use audit::AuditReport;

use crate::config::DatabaseConfig;
use crate::domain::birth::{RequestId, register_entry_key};
use crate::domain::citizen::{
    Citizen, DateRange, IdState, IssuancePage, IssueRequest, Issued, ProvinceStats,
    RegistrationQuery, ReissueRequest, Reissued,
};
use crate::domain::errors::{IssueError, ReissueError, StoreError};
use crate::domain::minting::BucketPolicy;
use crate::domain::personal_id::{PersonalId, ProvinceCode};

/// Which SQL dialect the pool speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (WAL, synchronous=FULL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(ConfigError::new("database.url", "must start with sqlite: or postgres:").into())
        }
    }
}

const SQLITE_INIT: &str = include_str!("../../migrations/sqlite/0001_init.sql");
const SQLITE_APPEND_ORDER: &str =
    include_str!("../../migrations/sqlite/0002_append_order_citizens.sql");
const SQLITE_REGISTER_KEY: &str =
    include_str!("../../migrations/sqlite/0003_register_entry_key.sql");
const POSTGRES_INIT: &str = include_str!("../../migrations/postgres/0001_init.sql");
const POSTGRES_REGISTER_KEY: &str =
    include_str!("../../migrations/postgres/0002_register_entry_key.sql");
const POSTGRES_REQUEST_ID_BYTE_ORDER: &str =
    include_str!("../../migrations/postgres/0003_request_id_byte_order.sql");

fn migrator(backend: Backend) -> Migrator {
    let steps: &[(i64, &str, &'static str)] = match backend {
        Backend::Sqlite => &[
            (1, "init", SQLITE_INIT),
            (2, "append order citizens", SQLITE_APPEND_ORDER),
            (3, "register entry key", SQLITE_REGISTER_KEY),
        ],
        // A PostgreSQL heap is in append order already.
        Backend::Postgres => &[
            (1, "init", POSTGRES_INIT),
            (2, "register entry key", POSTGRES_REGISTER_KEY),
            (3, "request id byte order", POSTGRES_REQUEST_ID_BYTE_ORDER),
        ],
    };
    Migrator {
        migrations: steps
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect::<Vec<_>>()
            .into(),
        // A binary rolled back after a newer release migrated still starts: migrations
        // only add, and `migrate` says the schema is ahead.
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

/// Maps a driver error to "retry later" or "bug".
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    if sqlite_direct::is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Unexpected(anyhow::Error::new(e))
    }
}

/// Runs `fut` under the operation timeout: a stalled database answers
/// UNAVAILABLE instead of hanging the caller.
pub(crate) async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(
            "database operation timed out".into(),
        )),
    }
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    available: AtomicBool,
    writer: mpsc::Sender<writer::WriteCmd>,
    timeout: Duration,
}

/// Handle to the database: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// Opens a pool for `cfg.url` without starting the writer (for admin commands).
pub async fn connect_pool(cfg: &DatabaseConfig) -> anyhow::Result<(AnyPool, Backend)> {
    open_pool(cfg, cfg.max_connections.max(2)).await
}

/// The database the writer commits to.
#[derive(Debug)]
pub enum WriterDb {
    /// The shared pool (PostgreSQL).
    Pool(AnyPool),
    /// The writer's own SQLite connection, run directly on the writer's thread.
    Sqlite(sqlx::SqliteConnection),
}

/// The writer's database. On SQLite, a connection of its own. In WAL mode a connection
/// drops its page cache whenever another connection wrote since its last transaction, so
/// a writer moving between pooled connections re-read its hot index pages every group,
/// and every pooled connection grew a cache of its own. One connection keeps one large
/// cache: the pages a group dirties stay in memory until the commit instead of spilling
/// into the WAL mid-transaction. On PostgreSQL, a pool of one connection: the writer
/// commits one group at a time, and lookups holding every connection of the shared pool
/// (statistics over years, a listing paged through) must not make minting wait for one.
pub async fn connect_writer(cfg: &DatabaseConfig) -> anyhow::Result<WriterDb> {
    use sqlx::ConnectOptions as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    if Backend::of_url(&cfg.url)? != Backend::Sqlite {
        let (writer_pool, _) = open_pool(cfg, 1).await?;
        return Ok(WriterDb::Pool(writer_pool));
    }
    let options: SqliteConnectOptions = cfg.url.parse().context("database.url")?;
    let conn = options
        // Durability is never traded for speed: every commit is fsynced.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // Each group's WAL frames in large writes rather than two per page.
        .vfs(sqlite_direct::wal_coalescing_vfs()?)
        .busy_timeout(Duration::from_millis(cfg.sqlite_busy_timeout_ms))
        .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
        // Statement journals and temporary b-trees in memory; they are not part of
        // durability: the WAL is.
        .pragma("temp_store", "MEMORY")
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
        .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
        .connect()
        .await
        .context("database.url: cannot open the writer's connection")?;
    Ok(WriterDb::Sqlite(conn))
}

/// Page cache of each reading connection (lookups touch a few pages each).
const READER_CACHE_KIB: u32 = 4 * 1024;
/// Page cache of the writer's connection: the index pages one group dirties.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// The readers' pool (and on PostgreSQL the writer's too). Temporary b-trees stay in files:
/// the readers' aggregates over years of citizens may sort more than memory should hold.
async fn open_pool(cfg: &DatabaseConfig, connections: u32) -> anyhow::Result<(AnyPool, Backend)> {
    install_default_drivers();
    let backend = Backend::of_url(&cfg.url)?;
    if backend == Backend::Sqlite {
        if cfg.url.contains(":memory:") {
            return Err(ConfigError::new(
                "database.url",
                "an in-memory SQLite database would lose every number issued at exit; name a file",
            )
            .into());
        }
        create_sqlite_dir(&cfg.url)?;
    }
    let busy = cfg.sqlite_busy_timeout_ms;
    let options = AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // Checkpoints run off the commit path (see `checkpointer`).
                sqlite_direct::PooledSqlite {
                    cache_kib: READER_CACHE_KIB,
                    wal_autocheckpoint_pages: WAL_AUTOCHECKPOINT_PAGES,
                    journal_size_limit_bytes: WAL_SIZE_LIMIT_BYTES,
                    busy_timeout_ms: busy,
                    foreign_keys: false,
                }
                .prepare(conn)
                .await
            })
        });
    let url = if backend == Backend::Sqlite {
        // The checkpointer runs on these connections: paced, its writes to the database
        // file reach the disk in steps instead of in front of every commit's WAL sync at
        // once.
        sqlite_direct::url_with_paced_checkpoints(&cfg.url)?
    } else {
        cfg.url.clone()
    };
    let pool = sqlite_direct::connect_pool(options, &url)
        .await
        .context("database.url: cannot connect")?;
    Ok((pool, backend))
}

/// Auto-checkpoint backstop (pages): far above one group's WAL frames, so a
/// commit normally never checkpoints inline.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 65_536;
/// WAL size kept on disk after a reset.
const WAL_SIZE_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Period of the background PASSIVE checkpoint. Each round ends in an fsync
/// of the database file, which queues behind the writer's WAL fsyncs, and
/// rounds a second apart copy a page that many groups rewrote once rather
/// than four times: unary p99 and batch CPU both measured lower than at
/// 250 ms, and 2 s no better in batch (BENCHMARKS.md).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// SQLite: copies committed WAL frames into the database file from a pooled
/// connection, concurrently with the writer (a PASSIVE checkpoint never
/// blocks it), so the writer's commits pay only their WAL fsync. Stops when
/// the store is dropped or its pool closed.
async fn checkpointer(
    inner: std::sync::Weak<Inner>,
    checkpointed: sqlite_direct::CheckpointSignal,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = inner.upgrade().map(|i| i.pool.clone()) else {
            return;
        };
        if pool.is_closed() {
            return;
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            Ok(_) => checkpointed.checkpointed(),
            Err(e) => tracing::debug!(error = %e, "background WAL checkpoint failed"),
        }
    }
}

fn create_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("database.url: cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// Runs the SQLite writer on a thread of its own, with a single-threaded runtime for its
/// queue: its statements run on that thread without blocking the server's workers.
/// Returns once the connection is held (or failed to be).
async fn spawn_sqlite_writer(
    mut conn: sqlx::SqliteConnection,
    rx: mpsc::Receiver<writer::WriteCmd>,
    policy: BucketPolicy,
    max_group_items: usize,
    timeout: Duration,
    checkpointed: sqlite_direct::CheckpointSignal,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the writer's runtime")?;
    let (ready_tx, ready) = oneshot::channel();
    std::thread::Builder::new()
        .name("population-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                let direct = match sqlite_direct::Direct::lock(&mut conn).await {
                    Ok(direct) => direct,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let db = writer::SqliteDb::new(direct, checkpointed);
                writer::Writer::new(db, policy, max_group_items, timeout)
                    .run(rx)
                    .await;
            });
        })
        .context("starting the writer's thread")?;
    ready
        .await
        .context("the writer's thread stopped")?
        .context("taking the writer's connection")?;
    Ok(())
}

/// Applies the embedded migrations of the pool's backend, then gives the rows stored
/// before the register entry key its value.
pub async fn migrate(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let migrator = migrator(backend);
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    // Before a fresh database's first run the table does not exist: nothing applied.
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    let standing = sqlite_direct::schema_standing(&applied, &known)
        .map_err(|why| ConfigError::new("database.url", why))?;
    migrator.run(pool).await.context("running migrations")?;
    if let sqlite_direct::SchemaStanding::Newer { applied, known } = standing {
        tracing::warn!(
            schema_version = applied,
            binary_version = known,
            "the database schema is newer than this binary (a rollback?): running on it"
        );
    }
    fill_register_keys(pool)
        .await
        .context("computing the register entry keys of earlier citizens")?;
    Ok(())
}

/// Most numbers FindCitizenByRegistration returns for one registration (its corrections
/// are made by hand, a few in a lifetime).
const MAX_CHAIN: usize = 1000;

/// Rows per transaction of `fill_register_keys`.
const REGISTER_KEY_CHUNK: i64 = 5_000;

/// Sets `register_key` where it is still NULL (rows stored before migration 3 on SQLite,
/// 2 on PostgreSQL), a chunk per transaction; idempotent, so replicas starting together
/// may both run it.
async fn fill_register_keys(pool: &AnyPool) -> anyhow::Result<u64> {
    let mut filled = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT personal_id, unit_code, book_number, registration_number FROM citizens \
             WHERE register_key IS NULL LIMIT $1",
        )
        .bind(REGISTER_KEY_CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(filled);
        }
        for (personal_id, unit_code, book_number, registration_number) in &rows {
            let key = register_entry_key(unit_code, book_number, *registration_number);
            sqlx::query("UPDATE citizens SET register_key = $1 WHERE personal_id = $2")
                .bind(key)
                .bind(*personal_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        filled += rows.len() as u64;
        tracing::info!(filled, "register entry keys computed for earlier citizens");
    }
}

/// Recomputes the audit chain and reports the first broken link.
pub async fn verify_audit(pool: &AnyPool) -> anyhow::Result<AuditReport> {
    audit::verify(pool).await
}

impl Store {
    /// Wraps a migrated pool and starts the writer: a task on the shared pool, or on
    /// SQLite a thread of its own holding the writer's connection.
    pub async fn start(
        pool: AnyPool,
        writer_db: WriterDb,
        backend: Backend,
        cfg: &DatabaseConfig,
        policy: BucketPolicy,
        max_group_items: usize,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let timeout = Duration::from_millis(cfg.operation_timeout_ms);
        let checkpointed = sqlite_direct::CheckpointSignal::new();
        match writer_db {
            WriterDb::Pool(writer_pool) => {
                let db = writer::PostgresDb::new(writer_pool);
                let writer = writer::Writer::new(db, policy, max_group_items, timeout);
                tokio::spawn(writer.run(rx));
            }
            WriterDb::Sqlite(conn) => {
                spawn_sqlite_writer(
                    conn,
                    rx,
                    policy,
                    max_group_items,
                    timeout,
                    checkpointed.clone(),
                )
                .await?;
            }
        }
        let inner = Arc::new(Inner {
            pool,
            backend,
            available: AtomicBool::new(true),
            writer: tx,
            timeout,
        });
        if backend == Backend::Sqlite {
            tokio::spawn(checkpointer(Arc::downgrade(&inner), checkpointed));
        }
        Ok(Self { inner })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The pool (admin tasks and tests).
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Closes the pool: pending and later calls fail UNAVAILABLE.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Last probe result; handlers refuse at once while it is false.
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.is_available() {
            Ok(())
        } else {
            Err(StoreError::Unavailable("database unreachable".into()))
        }
    }

    /// One round trip to the database; records the result for `is_available`.
    pub async fn probe(&self) -> bool {
        let ok = bounded(self.inner.timeout, async {
            sqlx::query("SELECT 1")
                .execute(&self.inner.pool)
                .await
                .map_err(classify)
        })
        .await
        .is_ok();
        self.inner.available.store(ok, Ordering::Relaxed);
        ok
    }

    /// Issues numbers for `items`, one outcome per item in order; committed
    /// durably before this returns. A caller that waits longer than the operation
    /// timeout (a stalled disk) is answered UNAVAILABLE; should the write still commit,
    /// a retry under the same request ids returns its numbers.
    pub async fn issue(
        &self,
        items: Vec<IssueRequest>,
    ) -> Result<Vec<Result<Issued, IssueError>>, StoreError> {
        self.check_available()?;
        let items: Arc<[writer::PendingIssue]> =
            items.into_iter().map(writer::PendingIssue::new).collect();
        let (reply, rx) = oneshot::channel();
        bounded(self.inner.timeout, async {
            self.inner
                .writer
                .send(writer::WriteCmd::Issue {
                    items: Arc::clone(&items),
                    reply,
                })
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))
        })
        .await?
    }

    /// Cancels a number and issues its successor in one transaction; bounded like
    /// [`Store::issue`].
    pub async fn reissue(&self, req: ReissueRequest) -> Result<Reissued, ReissueError> {
        self.check_available()?;
        let (reply, rx) = oneshot::channel();
        bounded(self.inner.timeout, async {
            self.inner
                .writer
                .send(writer::WriteCmd::Reissue { req, reply })
                .await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("writer stopped".into()))
        })
        .await?
    }

    /// The citizen holding `id`, if any.
    pub async fn citizen(&self, id: PersonalId) -> Result<Option<Citizen>, StoreError> {
        self.check_available()?;
        bounded(self.inner.timeout, async {
            let sql = format!(
                "SELECT {} FROM citizens WHERE personal_id = $1",
                rows::CITIZEN_COLUMNS
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(rows::id_i64(id))
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(rows::citizen).transpose()
        })
        .await
    }

    /// Whether `id` was issued, and its successor when cancelled.
    pub async fn state(&self, id: PersonalId) -> Result<IdState, StoreError> {
        self.check_available()?;
        bounded(self.inner.timeout, async {
            let row =
                sqlx::query("SELECT status, replaced_by FROM citizens WHERE personal_id = $1")
                    .bind(rows::id_i64(id))
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(classify)?;
            match row {
                None => Ok(IdState::NotIssued),
                Some(row) => {
                    let status: i64 = row.try_get(0).map_err(classify)?;
                    let replaced_by: Option<i64> = row.try_get(1).map_err(classify)?;
                    if status == rows::STATUS_ACTIVE {
                        Ok(IdState::Active)
                    } else {
                        Ok(IdState::Cancelled(
                            replaced_by.map(rows::id_from_i64).transpose()?,
                        ))
                    }
                }
            }
        })
        .await
    }

    /// Every number issued for one registration, oldest first.
    pub async fn find_by_registration(
        &self,
        query: &RegistrationQuery,
    ) -> Result<Vec<Citizen>, StoreError> {
        self.check_available()?;
        bounded(self.inner.timeout, async {
            let pool = &self.inner.pool;
            match query {
                RegistrationQuery::Entry {
                    unit_code,
                    book_number,
                    registration_number,
                } => {
                    let sql = format!(
                        "SELECT {} FROM citizens WHERE register_key = $1 AND unit_code = $2 \
                         AND book_number = $3 AND registration_number = $4 \
                         ORDER BY issue_time, personal_id",
                        rows::CITIZEN_COLUMNS
                    );
                    let key = register_entry_key(
                        unit_code.as_str(),
                        book_number.as_str(),
                        *registration_number,
                    );
                    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(key)
                        .bind(unit_code.as_str().to_owned())
                        .bind(book_number.as_str().to_owned())
                        .bind(*registration_number)
                        .fetch_all(pool)
                        .await
                        .map_err(classify)?;
                    found.iter().map(rows::citizen).collect()
                }
                RegistrationQuery::RequestId(request_id) => self.chain_of(request_id).await,
            }
        })
        .await
    }

    /// The issues made under `request_id` and under the keys derived from it (the
    /// registration id, a colon, a suffix: an issue after a correction), with every
    /// re-issue linked to them, oldest first. The derived keys are one range of the
    /// request_id index: from `{id}:` up to `{id};`, the next character in byte order
    /// (PostgreSQL keeps the column in byte order for this, migration 3).
    async fn chain_of(&self, request_id: &RequestId) -> Result<Vec<Citizen>, StoreError> {
        let pool = &self.inner.pool;
        let key = request_id.as_str();
        let sql = format!(
            "SELECT {} FROM citizens WHERE request_id = $1 OR (request_id > $2 AND request_id < $3) \
             LIMIT {MAX_CHAIN}",
            rows::CITIZEN_COLUMNS
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.to_owned())
            .bind(format!("{key}:"))
            .bind(format!("{key};"))
            .fetch_all(pool)
            .await
            .map_err(classify)?;
        let mut chain: HashMap<PersonalId, Citizen> = HashMap::new();
        let mut links = Vec::new();
        for row in &found {
            let citizen = rows::citizen(row)?;
            links.extend(citizen.replaces.into_iter().chain(citizen.replaced_by));
            chain.insert(citizen.personal_id, citizen);
        }
        // Each number's predecessor and successor, until the chain is whole.
        while let Some(id) = links.pop() {
            if chain.len() >= MAX_CHAIN || chain.contains_key(&id) {
                continue;
            }
            if let Some(c) = self.citizen_in(pool, id).await? {
                links.extend(c.replaces.into_iter().chain(c.replaced_by));
                chain.insert(c.personal_id, c);
            }
        }
        let mut chain: Vec<Citizen> = chain.into_values().collect();
        chain.sort_by_key(|c| (c.issue_time, c.personal_id));
        Ok(chain)
    }

    async fn citizen_in(
        &self,
        pool: &AnyPool,
        id: PersonalId,
    ) -> Result<Option<Citizen>, StoreError> {
        let sql = format!(
            "SELECT {} FROM citizens WHERE personal_id = $1",
            rows::CITIZEN_COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rows::id_i64(id))
            .fetch_optional(pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(rows::citizen).transpose()
    }

    /// Issued and cancelled counts per registration province within `range`.
    pub async fn statistics(
        &self,
        range: DateRange,
        provinces: &[ProvinceCode],
    ) -> Result<Vec<ProvinceStats>, StoreError> {
        self.check_available()?;
        bounded(self.inner.timeout, async {
            let found = sqlx::query(
                "SELECT registration_province, COUNT(*), \
                 COUNT(CASE WHEN status = 2 THEN 1 END) \
                 FROM citizens WHERE registration_date >= $1 AND registration_date <= $2 \
                 GROUP BY registration_province ORDER BY registration_province",
            )
            .bind(range.from.to_string())
            .bind(range.to.to_string())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(classify)?;
            let mut out = Vec::with_capacity(found.len());
            for row in found {
                let code: String = row.try_get(0).map_err(classify)?;
                let code = ProvinceCode::parse(&code).map_err(rows::corrupt)?;
                if !provinces.is_empty() && !provinces.contains(&code) {
                    continue;
                }
                out.push(ProvinceStats {
                    code,
                    issued: row.try_get(1).map_err(classify)?,
                    cancelled: row.try_get(2).map_err(classify)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// One page of issuances registered within `range`, by number, after `after`.
    pub async fn issuances(
        &self,
        range: DateRange,
        after: Option<PersonalId>,
        limit: u32,
    ) -> Result<IssuancePage, StoreError> {
        self.check_available()?;
        bounded(self.inner.timeout, async {
            // `|| ''` keeps the planner off the registration-date index, whose plan sorted
            // the whole date range again for every page (quadratic over a national
            // year). Pages walk the number index from the cursor instead, so listing a
            // range end to end reads that index once.
            let found = sqlx::query(
                "SELECT personal_id, request_id, status, replaced_by, issue_time, unit_code, \
                 registration_number, book_number, registration_date FROM citizens \
                 WHERE registration_date || '' >= $1 AND registration_date || '' <= $2 \
                 AND personal_id > $3 ORDER BY personal_id LIMIT $4",
            )
            .bind(range.from.to_string())
            .bind(range.to.to_string())
            .bind(after.map_or(-1, rows::id_i64))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(classify)?;
            let mut issuances = found
                .iter()
                .map(rows::issuance)
                .collect::<Result<Vec<_>, _>>()?;
            let more = issuances.len() > limit as usize;
            issuances.truncate(limit as usize);
            let next_after = if more {
                issuances.last().map(|i| i.personal_id)
            } else {
                None
            };
            Ok(IssuancePage {
                issuances,
                next_after,
            })
        })
        .await
    }
}
