//! The bare storage baseline: durable SQLite inserts through sqlx in a temporary file with
//! the services' settings (WAL, synchronous=FULL), one row per transaction and batched
//! (1,000 rows per transaction, 50 rows per multi-VALUES statement).

use super::records::mix;
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use std::path::Path;
use std::time::{Duration, Instant};

/// Rows per transaction of the batched phase.
pub const ROWS_PER_TXN: u64 = 1_000;
/// Rows per INSERT statement of the batched phase.
pub const ROWS_PER_STATEMENT: u64 = 50;

/// The baseline's figures.
#[derive(Debug, Clone, Copy)]
pub struct SqliteBaseline {
    pub single_rows: u64,
    pub single_seconds: f64,
    pub single_per_s: f64,
    pub batched_rows: u64,
    pub batched_seconds: f64,
    pub batched_per_s: f64,
    /// Batched rows/s in the population registry's statement shape (23 columns, 100 rows
    /// per INSERT) with PostgreSQL-style `$N` placeholders, as the services write them.
    pub wide_dollar_per_s: f64,
    /// The same with anonymous `?` placeholders.
    pub wide_question_per_s: f64,
}

/// A row about the size of a registration: two unique text keys (the second random, like
/// a personal id) and ~300 bytes of payload.
fn row(i: u64) -> (String, String, String) {
    (
        format!("req-{i:012}"),
        // splitmix64 is a bijection: random-looking, never a duplicate.
        format!("{:020}", mix(i)),
        format!("{:0>300}", i),
    )
}

/// Runs the batched phase (`batched_rows` rows; it also warms the WAL up), then the
/// single-row phase for `single_for`.
pub async fn measure(
    path: &Path,
    batched_rows: u64,
    single_for: Duration,
) -> anyhow::Result<SqliteBaseline> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_row (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE,
            personal_id TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL
        )",
    )
    .execute(&mut conn)
    .await?;

    let values = vec!["(?, ?, ?)"; ROWS_PER_STATEMENT as usize].join(", ");
    // `OR FAIL`, as the registries write: no statement journal (see their `insert_into`),
    // so that the bare limit is not understated.
    let multi =
        format!("INSERT OR FAIL INTO bench_row (request_id, personal_id, payload) VALUES {values}");
    let start = Instant::now();
    let mut i = 0;
    while i < batched_rows {
        let mut tx = conn.begin().await?;
        let txn_end = (i + ROWS_PER_TXN).min(batched_rows);
        while i < txn_end {
            let n = (txn_end - i).min(ROWS_PER_STATEMENT);
            if n == ROWS_PER_STATEMENT {
                // The statement text is built from constants only.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(multi.as_str()));
                for k in i..i + n {
                    let (a, b, c) = row(k);
                    q = q.bind(a).bind(b).bind(c);
                }
                q.execute(&mut *tx).await?;
            } else {
                for k in i..i + n {
                    let (a, b, c) = row(k);
                    sqlx::query(
                        "INSERT INTO bench_row (request_id, personal_id, payload) VALUES (?, ?, ?)",
                    )
                    .bind(a)
                    .bind(b)
                    .bind(c)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            i += n;
        }
        tx.commit().await?;
    }
    let batched_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut single_rows = 0;
    while start.elapsed() < single_for {
        let (a, b, c) = row(batched_rows + single_rows);
        // Autocommit: one transaction, hence one fsync of the WAL, per row.
        sqlx::query("INSERT INTO bench_row (request_id, personal_id, payload) VALUES (?, ?, ?)")
            .bind(a)
            .bind(b)
            .bind(c)
            .execute(&mut conn)
            .await?;
        single_rows += 1;
    }
    let single_seconds = start.elapsed().as_secs_f64();
    let wide_dollar_per_s = wide(&mut conn, "wide_dollar", true, batched_rows / 5).await?;
    let wide_question_per_s = wide(&mut conn, "wide_question", false, batched_rows / 5).await?;
    conn.close().await?;
    Ok(SqliteBaseline {
        single_rows,
        single_seconds,
        single_per_s: single_rows as f64 / single_seconds,
        batched_rows,
        batched_seconds,
        batched_per_s: batched_rows as f64 / batched_seconds,
        wide_dollar_per_s,
        wide_question_per_s,
    })
}

/// Columns and rows per statement of the wide phase (the registry's citizens insert).
const WIDE_COLUMNS: usize = 23;
const WIDE_ROWS_PER_STATEMENT: usize = 100;

/// Inserts `rows` 23-column rows, 100 per statement and 1,000 per transaction, with `$N`
/// or `?` placeholders. sqlx-sqlite resolves each bound parameter through
/// `sqlite3_bind_parameter_name`, which for named (`$N`) parameters scans SQLite's list of
/// names: quadratic in the parameters of a statement. This phase measures what that costs.
async fn wide(
    conn: &mut SqliteConnection,
    table: &str,
    dollar: bool,
    rows: u64,
) -> anyhow::Result<f64> {
    let cols: Vec<String> = (1..WIDE_COLUMNS)
        .map(|c| format!("c{c} TEXT NOT NULL"))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id INTEGER PRIMARY KEY, {})",
        cols.join(", ")
    )))
    .execute(&mut *conn)
    .await?;
    let mut n = 0;
    let tuples: Vec<String> = (0..WIDE_ROWS_PER_STATEMENT)
        .map(|r| {
            let ps: Vec<String> = (0..WIDE_COLUMNS)
                .map(|c| {
                    if dollar {
                        format!("${}", r * WIDE_COLUMNS + c + 1)
                    } else {
                        "?".to_owned()
                    }
                })
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    let sql = format!("INSERT OR FAIL INTO {table} VALUES {}", tuples.join(", "));
    let value = format!("{:0>12}", 7);
    let start = Instant::now();
    while n < rows {
        let mut tx = conn.begin().await?;
        for _ in 0..(ROWS_PER_TXN as usize / WIDE_ROWS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for _ in 0..WIDE_ROWS_PER_STATEMENT {
                q = q.bind(n as i64);
                n += 1;
                for _ in 1..WIDE_COLUMNS {
                    q = q.bind(value.clone());
                }
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
