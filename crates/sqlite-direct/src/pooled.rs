//! The settings of the services' pooled SQLite connections (the readers, and on the civil
//! registry its other writers), applied right after each connects.

use sqlx::{AnyConnection, Executor as _};

/// What differs between the services' pools.
#[derive(Clone, Copy, Debug)]
pub struct PooledSqlite {
    /// Page cache per connection, KiB.
    pub cache_kib: u32,
    /// The auto-checkpoint threshold, pages: a backstop, the services checkpoint in the
    /// background, off the commit path.
    pub wal_autocheckpoint_pages: u32,
    /// The WAL file kept after a reset, bytes: above the size it reaches between
    /// checkpoints, so it is reused in place (each new block costs ext4 an allocation and
    /// a zero fill on the commit path).
    pub journal_size_limit_bytes: u64,
    /// How long a statement waits for another process's write lock.
    pub busy_timeout_ms: u64,
    /// Whether foreign keys are enforced.
    pub foreign_keys: bool,
}

impl PooledSqlite {
    /// Applies the settings. Durability is never traded for speed: WAL with a full sync
    /// per commit, which is durable once its WAL frames are synced; a checkpoint only
    /// copies durable pages into the database file.
    async fn apply(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = FULL").await?;
        if self.foreign_keys {
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        let settings = [
            format!("PRAGMA cache_size = -{}", self.cache_kib),
            format!(
                "PRAGMA wal_autocheckpoint = {}",
                self.wal_autocheckpoint_pages
            ),
            format!(
                "PRAGMA journal_size_limit = {}",
                self.journal_size_limit_bytes
            ),
            format!("PRAGMA busy_timeout = {}", self.busy_timeout_ms),
        ];
        for pragma in settings {
            conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
        }
        Ok(())
    }

    /// What each new pooled connection of either backend needs: these settings on
    /// SQLite; on PostgreSQL, plans made with each execution's values. A generic plan is
    /// cached per statement after five runs, and one cached while a table was empty (a
    /// fresh deployment, before the first ANALYZE) scans the whole table on every later
    /// call. A session left idle inside a transaction for a minute is ended by the server:
    /// a replica cut off mid-transaction (a half-open connection the server has not yet
    /// noticed) must not hold the audit head's row lock, and every other replica's writes
    /// with it, until TCP gives up hours later.
    pub async fn prepare(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            self.apply(conn).await
        } else {
            conn.execute("SET plan_cache_mode = force_custom_plan")
                .await?;
            conn.execute("SET idle_in_transaction_session_timeout = '60s'")
                .await
                .map(drop)
        }
    }
}
