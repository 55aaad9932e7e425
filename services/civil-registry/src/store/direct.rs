//! The group commit on SQLite: the writer's own connection, driven straight from the
//! writer's own thread (`sqlite_direct`), one cached prepared statement per row. Through
//! the pool every statement was a message to sqlx's connection thread and back, and every
//! multi-row statement a text built, parsed and bound anew; a profile of the closed loop
//! put more of the civil registry's CPU there than in SQLite itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlite_direct::{CheckpointSignal, Direct, Transaction, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::audit::{AuditChain, Val};
use super::group::{FirstIssue, GroupTx, GroupWriter, LAST_NUMBER, StoredRequest, Table};
use super::{Backend, Store};
use crate::config::DatabaseConfig;

const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
const STORED: &str =
    "SELECT id, content_hash FROM registrations WHERE origin_unit_code = ?1 AND request_id = ?2";
const SETTLE_FIRST: &str = "UPDATE registrations SET status = 'ISSUED', issue_time_ms = ?1, \
    updated_at_ms = ?1, rejection_reason = NULL, personal_id = ?2 \
    WHERE id = ?3 AND issue_key = ?4 AND status = 'PENDING'";
const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE issue_key = ?1";

/// The group-commit writer's own SQLite connection, before its thread takes it.
#[derive(Debug)]
pub struct SqliteWriter {
    conn: SqliteConnection,
    turn: Arc<Mutex<()>>,
    checkpointed: CheckpointSignal,
}

impl Store {
    /// SQLite: the group-commit writer's own connection (`None` on PostgreSQL, where the
    /// writer uses the pool). One connection keeps its page cache: in WAL mode a
    /// connection drops it whenever another wrote since its last transaction, so a writer
    /// moving between pooled connections re-read its index pages every group. Statement
    /// journals stay in memory: its statements are bounded writes, while the readers'
    /// aggregates over a whole year may sort more than memory should hold. It takes turns
    /// with this store's writes.
    pub async fn sqlite_writer(
        &self,
        cfg: &DatabaseConfig,
    ) -> anyhow::Result<Option<SqliteWriter>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let options: SqliteConnectOptions = cfg.url.parse().context("database.url")?;
        let conn = sqlx::ConnectOptions::connect(
            &options
                // Durability is never traded for speed: WAL with a full fsync per commit.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // Each commit's WAL frames in a few large writes rather than two per page.
                .vfs(sqlite_direct::wal_coalescing_vfs()?)
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))
                // 8 MiB of page cache instead of SQLite's 2 MB: the writer otherwise
                // re-reads index pages from the OS on every group.
                .pragma("cache_size", "-8192")
                .pragma("temp_store", "MEMORY")
                .pragma(
                    "wal_autocheckpoint",
                    super::WAL_AUTOCHECKPOINT_PAGES.to_string(),
                )
                .pragma(
                    "journal_size_limit",
                    super::WAL_SIZE_LIMIT_BYTES.to_string(),
                ),
        )
        .await
        .context("database.url: cannot open the writer's connection")?;
        Ok(Some(SqliteWriter {
            conn,
            turn: Arc::clone(&self.write_turn),
            checkpointed: self.checkpointed.clone(),
        }))
    }
}

impl SqliteWriter {
    /// Takes the connection from sqlx for direct use by this thread.
    pub(crate) async fn lock(&mut self) -> Result<DirectWriter<'_>, sqlx::Error> {
        Ok(DirectWriter {
            direct: Direct::lock(&mut self.conn).await?,
            turn: Arc::clone(&self.turn),
            checkpointed: self.checkpointed.clone(),
        })
    }

    /// Closes the connection and waits until SQLite has closed it, so that shutting down
    /// leaves no close half done on sqlx's thread.
    pub(crate) async fn close(self) {
        if let Err(e) = sqlx::Connection::close(self.conn).await {
            tracing::warn!(error = %e, "closing the writer's connection");
        }
    }
}

/// The writer's connection, held for direct use.
pub(crate) struct DirectWriter<'c> {
    direct: Direct<'c>,
    turn: Arc<Mutex<()>>,
    checkpointed: CheckpointSignal,
}

/// A group commit's `BEGIN IMMEDIATE` transaction, holding the process's write turn.
pub(crate) struct DirectTx<'d, 'c> {
    // Dropped (rolled back if uncommitted) before the turn is released: field order.
    tx: Transaction<'d, 'c>,
    _turn: OwnedMutexGuard<()>,
    chain: AuditChain,
}

impl<'c> GroupWriter for DirectWriter<'c> {
    type Tx<'a>
        = DirectTx<'a, 'c>
    where
        Self: 'a;

    async fn begin(&mut self) -> Result<DirectTx<'_, 'c>, sqlx::Error> {
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let mut tx = self.direct.begin_immediate()?;
        let mut head = None;
        tx.query::<sqlx::Error>(HEAD, &[], |row| {
            head = Some((row.int(0)?, row.text(1)?.to_owned()));
            Ok(())
        })?;
        let (seq, hash) = head.ok_or(sqlx::Error::RowNotFound)?;
        Ok(DirectTx {
            tx,
            _turn: turn,
            chain: AuditChain::from_head(seq, hash),
        })
    }

    async fn between_groups(&mut self) {
        if let Err(e) = self.direct.copy_rest_of_wal(&self.checkpointed) {
            tracing::debug!(error = %e, "finishing the background WAL checkpoint failed");
        }
    }
}

impl GroupTx for DirectTx<'_, '_> {
    fn chain(&mut self) -> &mut AuditChain {
        &mut self.chain
    }

    async fn stored_requests(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredRequest>, sqlx::Error> {
        let mut stored = Vec::new();
        for (unit, request_id) in keys {
            self.tx.query::<sqlx::Error>(
                STORED,
                &[(*unit).into(), (*request_id).into()],
                |row| {
                    stored.push(StoredRequest {
                        unit_code: (*unit).to_owned(),
                        request_id: (*request_id).to_owned(),
                        id: row.text(0)?.to_owned(),
                        content_hash: row.text(1)?.to_owned(),
                    });
                    Ok(())
                },
            )?;
        }
        Ok(stored)
    }

    async fn advance_counters(
        &mut self,
        books: &[(&str, i64, i64)],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut lasts = Vec::with_capacity(books.len());
        for (unit, year, count) in books {
            let mut last = 0;
            self.tx.query::<sqlx::Error>(
                LAST_NUMBER,
                &[(*unit).into(), (*year).into()],
                |row| {
                    last = row.opt_int(0)?.unwrap_or(0);
                    Ok(())
                },
            )?;
            lasts.push(last + count);
        }
        Ok(lasts)
    }

    async fn insert(
        &mut self,
        table: &'static Table,
        rows: Vec<Vec<Val>>,
    ) -> Result<(), sqlx::Error> {
        let mut values = Vec::with_capacity(table.columns.len());
        for row in &rows {
            values.clear();
            values.extend(row.iter().map(Val::as_direct));
            self.tx.execute(table.insert_one, &values)?;
        }
        Ok(())
    }

    async fn settle_first_issues(
        &mut self,
        now: i64,
        issues: &[FirstIssue<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut settled = Vec::new();
        for (id, key, personal_id) in issues {
            let params: [Value<'_>; 4] = [
                now.into(),
                (*personal_id).into(),
                id.as_str().into(),
                (*key).into(),
            ];
            if self.tx.execute(SETTLE_FIRST, &params)? == 1 {
                settled.push(id.clone());
            }
        }
        Ok(settled)
    }

    async fn execute(&mut self, sql: &'static str, params: Vec<Val>) -> Result<u64, sqlx::Error> {
        let values: Vec<Value<'_>> = params.iter().map(Val::as_direct).collect();
        Ok(self.tx.execute(sql, &values)?)
    }

    async fn delete_outbox(&mut self, keys: &[String]) -> Result<(), sqlx::Error> {
        for key in keys {
            self.tx.execute(DELETE_OUTBOX, &[key.as_str().into()])?;
        }
        Ok(())
    }

    async fn commit_written(self) -> Result<(), sqlx::Error> {
        Ok(self.tx.commit()?)
    }
}
