//! Prepared statements run straight on a locked sqlx SQLite connection.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement, `BEGIN`
//! and `COMMIT` is a message to that thread and back; it also copies every bound text
//! (into an `Arc`, then into SQLite). For a writer that commits thousands of rows per
//! transaction, or a few rows thousands of times a second, those hand-offs and copies
//! cost more than SQLite's own work. [`Direct`] takes the connection's handle out of
//! sqlx's thread ([`SqliteConnection::lock_handle`]) for as long as it lives and runs
//! cached prepared statements on the caller's thread, binding text in place.
//!
//! The interface is safe: statements are keyed by their `'static` SQL, bound values live for
//! the call that binds them (the statement is reset and its bindings cleared before the
//! call returns), and rows are only seen inside the callback that reads them.

use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::fmt;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};

mod coalesce;
mod connect;
mod page_cache;
mod pooled;
mod schema;
mod unavailable;
mod wal_restart;

pub use coalesce::{url_with_paced_checkpoints, wal_coalescing_vfs};
pub use connect::{ConnectError, connect_pool, without_secrets};
pub use page_cache::{install_page_cache, parked_pages};
pub use pooled::PooledSqlite;
pub use schema::{SchemaStanding, schema_standing};
pub use unavailable::{is_unavailable, is_unavailable_code};
pub use wal_restart::CheckpointSignal;

/// A value bound to a statement's parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// UTF-8 text, bound without a copy.
    Text(&'a str),
    /// Bytes, bound without a copy.
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Self::Blob(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// An error SQLite returned, with its extended result code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    code: c_int,
    message: String,
}

impl Error {
    /// SQLite's extended result code (e.g. 2067, `SQLITE_CONSTRAINT_UNIQUE`).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The primary result code (the low byte of the extended one).
    pub fn primary_code(&self) -> i32 {
        self.code & 0xff
    }

    /// The database is locked by another connection or process (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED`), which a later attempt may not meet.
    pub fn is_busy(&self) -> bool {
        matches!(self.primary_code(), ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED)
    }

    /// The database cannot be used now: locked, or its storage failing, full, gone or
    /// read-only ([`is_unavailable_code`]).
    pub fn is_unavailable(&self) -> bool {
        is_unavailable_code(self.code)
    }

    /// A UNIQUE or PRIMARY KEY constraint refused the row.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self.code,
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    }

    fn misuse(message: impl Into<String>) -> Self {
        Self {
            code: ffi::SQLITE_MISUSE,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLite error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// So that code written against sqlx (`sqlx::Error::from`) reports, and classifies, this
/// crate's errors as it does sqlx's own SQLite errors: `code()` is the extended result
/// code, in decimal.
impl sqlx::error::DatabaseError for Error {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// One row of a query's result, valid inside the callback that receives it.
pub struct Row<'s> {
    stmt: &'s Statement,
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row").finish_non_exhaustive()
    }
}

impl Row<'_> {
    fn column_type(&self, i: usize) -> Result<c_int, Error> {
        let column = self.stmt.column_index(i)?;
        // SAFETY: the statement has a current row (the callback runs between a step that
        // returned SQLITE_ROW and the next step or reset), and `column` is in range.
        Ok(unsafe { ffi::sqlite3_column_type(self.stmt.raw.as_ptr(), column) })
    }

    /// Column `i` as an integer (0 for NULL, as SQLite converts).
    pub fn int(&self, i: usize) -> Result<i64, Error> {
        let column = self.stmt.column_index(i)?;
        // SAFETY: as in `column_type`.
        Ok(unsafe { ffi::sqlite3_column_int64(self.stmt.raw.as_ptr(), column) })
    }

    /// Column `i` as an integer, `None` for NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, Error> {
        if self.column_type(i)? == ffi::SQLITE_NULL {
            return Ok(None);
        }
        self.int(i).map(Some)
    }

    /// Column `i` as text; NULL reads as the empty string.
    pub fn text(&self, i: usize) -> Result<&str, Error> {
        let column = self.stmt.column_index(i)?;
        let raw = self.stmt.raw.as_ptr();
        // SAFETY: as in `column_type`. `sqlite3_column_text` first, then
        // `sqlite3_column_bytes`, as SQLite documents; the pointer stays valid until the
        // next step or reset of the statement, which cannot happen while `self` is
        // borrowed (the callback holds the only `Row`).
        let bytes = unsafe {
            let text = ffi::sqlite3_column_text(raw, column);
            let len = ffi::sqlite3_column_bytes(raw, column);
            if text.is_null() {
                return Ok("");
            }
            std::slice::from_raw_parts(text, usize::try_from(len).unwrap_or(0))
        };
        std::str::from_utf8(bytes).map_err(|_| Error::misuse(format!("column {i}: not UTF-8")))
    }
}

/// A prepared statement, finalized on drop.
struct Statement {
    raw: NonNull<ffi::sqlite3_stmt>,
    parameters: usize,
    columns: usize,
}

impl Statement {
    fn column_index(&self, i: usize) -> Result<c_int, Error> {
        if i >= self.columns {
            return Err(Error::misuse(format!(
                "column {i} of a statement with {} columns",
                self.columns
            )));
        }
        c_int::try_from(i).map_err(|_| Error::misuse("column index"))
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: `raw` came from a successful prepare and is finalized once, here. The
        // connection is still open: statements are dropped by `Direct` before its lock
        // on the connection.
        unsafe {
            ffi::sqlite3_finalize(self.raw.as_ptr());
        }
    }
}

/// A cached statement's key: where its `'static` SQL text lives and how long it is. The
/// text behind a static address never changes, so hashing two words stands for hashing
/// the text, which for a writer's statements (hundreds of characters, run several times
/// per row) was a measurable share of the population writer's CPU. The same text at two
/// addresses is prepared twice, harmlessly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SqlKey(usize, usize);

impl SqlKey {
    fn of(sql: &'static str) -> Self {
        Self(sql.as_ptr() as usize, sql.len())
    }
}

/// A sqlx SQLite connection taken out of sqlx's hands for direct use, with a cache of
/// prepared statements. While it lives, sqlx's thread for the connection waits.
pub struct Direct<'c> {
    db: NonNull<ffi::sqlite3>,
    statements: HashMap<SqlKey, Statement, foldhash::fast::RandomState>,
    // Dropped after `statements` (field order), so every statement is finalized while
    // the connection is still locked for this thread.
    _lock: LockedSqliteHandle<'c>,
}

impl fmt::Debug for Direct<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

impl<'c> Direct<'c> {
    /// Locks `conn`'s handle away from sqlx's thread until the result is dropped.
    pub async fn lock(conn: &'c mut SqliteConnection) -> Result<Self, sqlx::Error> {
        let mut lock = conn.lock_handle().await?;
        let db = lock.as_raw_handle();
        Ok(Self {
            db,
            statements: HashMap::default(),
            _lock: lock,
        })
    }

    fn last_error(&self, code: c_int) -> Error {
        // SAFETY: `db` is an open connection that only this thread uses while locked;
        // `sqlite3_errmsg` returns a NUL-terminated string owned by SQLite, copied at once.
        let (code, message) = unsafe {
            let extended = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr()))
                .to_string_lossy()
                .into_owned();
            (if extended != 0 { extended } else { code }, message)
        };
        Error { code, message }
    }

    fn prepared(&mut self, sql: &'static str) -> Result<&Statement, Error> {
        let key = SqlKey::of(sql);
        if !self.statements.contains_key(&key) {
            let len = c_int::try_from(sql.len()).map_err(|_| Error::misuse("SQL too long"))?;
            let mut raw = std::ptr::null_mut();
            // SAFETY: `sql` is valid for `len` bytes; SQLite copies what it needs.
            // PERSISTENT: the statement is kept for the connection's life.
            let rc = unsafe {
                ffi::sqlite3_prepare_v3(
                    self.db.as_ptr(),
                    sql.as_ptr().cast(),
                    len,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut raw,
                    std::ptr::null_mut(),
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.last_error(rc));
            }
            let raw = NonNull::new(raw)
                .ok_or_else(|| Error::misuse(format!("no statement in {sql:?}")))?;
            // SAFETY: `raw` is a valid prepared statement.
            let (parameters, columns) = unsafe {
                (
                    ffi::sqlite3_bind_parameter_count(raw.as_ptr()),
                    ffi::sqlite3_column_count(raw.as_ptr()),
                )
            };
            let statement = Statement {
                raw,
                parameters: usize::try_from(parameters).unwrap_or(0),
                columns: usize::try_from(columns).unwrap_or(0),
            };
            self.statements.insert(key, statement);
        }
        self.statements
            .get(&key)
            .ok_or_else(|| Error::misuse("statement cache"))
    }

    /// Runs `sql` with `params` to completion; returns the rows it changed.
    pub fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, Error> {
        self.run(sql, params, &mut |_| Ok::<(), Error>(()))?;
        // SAFETY: `db` is open and used by this thread only.
        let changes = unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) };
        Ok(u64::try_from(changes).unwrap_or(0))
    }

    /// Runs `sql` with `params`, calling `each` for every row of its result.
    pub fn query<E: From<Error>>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run(sql, params, &mut each)
    }

    fn run<E: From<Error>>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (raw, parameters) = {
            let statement = self.prepared(sql)?;
            (statement.raw.as_ptr(), statement.parameters)
        };
        if params.len() != parameters {
            return Err(Error::misuse(format!(
                "{} values for {parameters} parameters of {sql:?}",
                params.len()
            ))
            .into());
        }
        // Whatever happens below, the statement is left reset with no bindings, so no
        // pointer into `params` outlives this call.
        struct Reset(*mut ffi::sqlite3_stmt);
        impl Drop for Reset {
            fn drop(&mut self) {
                // SAFETY: a valid prepared statement of this thread's connection.
                unsafe {
                    ffi::sqlite3_reset(self.0);
                    ffi::sqlite3_clear_bindings(self.0);
                }
            }
        }
        let _reset = Reset(raw);
        for (i, value) in params.iter().enumerate() {
            let index = c_int::try_from(i + 1).map_err(|_| Error::misuse("parameter index"))?;
            // SAFETY: `raw` is valid and `index` is within its parameter count. Text and
            // bytes are bound SQLITE_STATIC: SQLite reads them during the steps below, and
            // the bindings are cleared (by `_reset`) before `params` can be dropped.
            let rc = unsafe {
                match *value {
                    Value::Null => ffi::sqlite3_bind_null(raw, index),
                    Value::Int(v) => ffi::sqlite3_bind_int64(raw, index, v),
                    Value::Text(s) => {
                        let len =
                            c_int::try_from(s.len()).map_err(|_| Error::misuse("text too long"))?;
                        ffi::sqlite3_bind_text(
                            raw,
                            index,
                            s.as_ptr().cast(),
                            len,
                            ffi::SQLITE_STATIC(),
                        )
                    }
                    Value::Blob(b) => {
                        let len =
                            c_int::try_from(b.len()).map_err(|_| Error::misuse("blob too long"))?;
                        ffi::sqlite3_bind_blob(
                            raw,
                            index,
                            b.as_ptr().cast(),
                            len,
                            ffi::SQLITE_STATIC(),
                        )
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.last_error(rc).into());
            }
        }
        loop {
            // SAFETY: `raw` is valid, bound, and used by this thread only.
            let rc = unsafe { ffi::sqlite3_step(raw) };
            match rc {
                ffi::SQLITE_ROW => {
                    let statement = self
                        .statements
                        .get(&SqlKey::of(sql))
                        .ok_or_else(|| Error::misuse("statement cache"))?;
                    each(&Row { stmt: statement })?;
                }
                ffi::SQLITE_DONE => return Ok(()),
                _ => return Err(self.last_error(rc).into()),
            }
        }
    }

    /// Starts a transaction with `BEGIN IMMEDIATE` (the write lock taken now, so a second
    /// process on the same file waits its busy timeout instead of failing on upgrade). It
    /// rolls back when dropped uncommitted.
    pub fn begin_immediate(&mut self) -> Result<Transaction<'_, 'c>, Error> {
        self.execute("BEGIN IMMEDIATE", &[])?;
        Ok(Transaction {
            direct: self,
            open: true,
        })
    }
}

/// A transaction on a [`Direct`] connection: rolled back unless [`Transaction::commit`]
/// succeeds.
#[derive(Debug)]
pub struct Transaction<'d, 'c> {
    direct: &'d mut Direct<'c>,
    open: bool,
}

impl<'c> Transaction<'_, 'c> {
    /// Commits; with `synchronous = FULL` the commit is durable when this returns.
    pub fn commit(mut self) -> Result<(), Error> {
        self.direct.execute("COMMIT", &[])?;
        self.open = false;
        Ok(())
    }
}

impl<'c> std::ops::Deref for Transaction<'_, 'c> {
    type Target = Direct<'c>;
    fn deref(&self) -> &Direct<'c> {
        self.direct
    }
}

impl<'c> std::ops::DerefMut for Transaction<'_, 'c> {
    fn deref_mut(&mut self) -> &mut Direct<'c> {
        self.direct
    }
}

impl Drop for Transaction<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: `db` is open and used by this thread only. Whether the transaction is
        // still active is asked of SQLite itself: a failed COMMIT may or may not have
        // ended it.
        let active = unsafe { ffi::sqlite3_get_autocommit(self.direct.db.as_ptr()) } == 0;
        if self.open && active {
            let _ = self.direct.execute("ROLLBACK", &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;
    use sqlx::sqlite::SqliteConnectOptions;

    async fn connection(dir: &tempfile::TempDir) -> SqliteConnection {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true);
        SqliteConnection::connect_with(&options).await.unwrap()
    }

    const CREATE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, note TEXT)";
    const INSERT: &str = "INSERT INTO t (id, name, note) VALUES (?1, ?2, ?3)";
    const ALL: &str = "SELECT id, name, note FROM t ORDER BY id";

    fn all(direct: &mut Direct<'_>) -> Vec<(i64, String, Option<i64>)> {
        let mut out = Vec::new();
        direct
            .query::<Error>(ALL, &[], |row| {
                out.push((row.int(0)?, row.text(1)?.to_owned(), row.opt_int(2)?));
                Ok(())
            })
            .unwrap();
        out
    }

    #[tokio::test]
    async fn the_page_cache_cannot_be_installed_once_sqlite_has_started() {
        // No test of this process installs it, and this one starts SQLite first.
        let dir = tempfile::tempdir().unwrap();
        let _conn = connection(&dir).await;
        let refused = install_page_cache().unwrap_err();
        assert_eq!(refused.primary_code(), ffi::SQLITE_MISUSE);
        assert_eq!(
            install_page_cache(),
            Err(refused),
            "the first answer stands"
        );
    }

    #[tokio::test]
    async fn binds_reads_and_commits_text_without_copies_outliving_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        {
            let mut direct = Direct::lock(&mut conn).await.unwrap();
            direct.execute(CREATE, &[]).unwrap();
            let mut tx = direct.begin_immediate().unwrap();
            for (id, name) in [(2, "Nguyễn Văn An"), (1, "Trần Thị Bình")] {
                // The text lives only for this iteration: bound in place, then released.
                let name = name.to_owned();
                let changed = tx
                    .execute(INSERT, &[id.into(), name.as_str().into(), Value::Null])
                    .unwrap();
                assert_eq!(changed, 1);
            }
            tx.commit().unwrap();
            assert_eq!(
                all(&mut direct),
                vec![
                    (1, "Trần Thị Bình".to_owned(), None),
                    (2, "Nguyễn Văn An".to_owned(), None)
                ]
            );
        }
        // Unlocked again, sqlx sees the committed rows.
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn statements_are_cached_by_where_their_text_lives_and_its_length() {
        static TWELVE: &str = "SELECT 12";
        // Same address, shorter: a different statement.
        let one: &'static str = &TWELVE[..8];
        let answer = |direct: &mut Direct<'_>, sql: &'static str| {
            let mut got = None;
            direct
                .query::<Error>(sql, &[], |row| {
                    got = Some(row.int(0)?);
                    Ok(())
                })
                .unwrap();
            got
        };
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        let mut direct = Direct::lock(&mut conn).await.unwrap();
        assert_eq!(answer(&mut direct, TWELVE), Some(12));
        assert_eq!(answer(&mut direct, TWELVE), Some(12));
        assert_eq!(direct.statements.len(), 1, "prepared once, then reused");
        assert_eq!(answer(&mut direct, one), Some(1));
        assert_eq!(direct.statements.len(), 2);
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_errors_carry_sqlites_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        let mut direct = Direct::lock(&mut conn).await.unwrap();
        direct.execute(CREATE, &[]).unwrap();
        direct
            .execute(INSERT, &[1.into(), "a".into(), Value::Int(7)])
            .unwrap();
        {
            let mut tx = direct.begin_immediate().unwrap();
            tx.execute(INSERT, &[2.into(), "b".into(), Value::Null])
                .unwrap();
            let duplicate = tx
                .execute(INSERT, &[3.into(), "a".into(), Value::Null])
                .unwrap_err();
            assert!(duplicate.is_unique_violation(), "{duplicate}");
            assert_eq!(duplicate.code(), ffi::SQLITE_CONSTRAINT_UNIQUE);
        }
        assert_eq!(all(&mut direct), vec![(1, "a".to_owned(), Some(7))]);
        let misuse = direct.execute(INSERT, &[1.into()]).unwrap_err();
        assert_eq!(misuse.code(), ffi::SQLITE_MISUSE);
        let syntax = direct.execute("SELEC 1", &[]).unwrap_err();
        assert_eq!(syntax.primary_code(), ffi::SQLITE_ERROR);
    }

    #[tokio::test]
    async fn blobs_bind_in_place_and_errors_read_as_sqlx_database_errors() {
        use sqlx::error::{DatabaseError as _, ErrorKind};
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        {
            let mut direct = Direct::lock(&mut conn).await.unwrap();
            direct
                .execute("CREATE TABLE b (k TEXT PRIMARY KEY, v BLOB NOT NULL)", &[])
                .unwrap();
            let bytes = vec![0u8, 1, 2, 255];
            direct
                .execute(
                    "INSERT INTO b (k, v) VALUES ($1, $2)",
                    &["k".into(), bytes.as_slice().into()],
                )
                .unwrap();
            let duplicate = direct
                .execute(
                    "INSERT INTO b (k, v) VALUES ($1, $2)",
                    &["k".into(), Value::Blob(&[])],
                )
                .unwrap_err();
            assert_eq!(duplicate.kind(), ErrorKind::UniqueViolation);
            assert_eq!(duplicate.code(), ffi::SQLITE_CONSTRAINT_PRIMARYKEY);
            assert_eq!(
                sqlx::error::DatabaseError::code(&duplicate).as_deref(),
                Some("1555")
            );
            let converted = sqlx::Error::from(duplicate);
            assert!(
                matches!(&converted, sqlx::Error::Database(db) if db.is_unique_violation()),
                "{converted}"
            );
        }
        let stored: Vec<u8> = sqlx::query_scalar("SELECT v FROM b WHERE k = 'k'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, vec![0u8, 1, 2, 255]);
    }
}
