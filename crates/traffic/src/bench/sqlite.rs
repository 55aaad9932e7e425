//! The bare storage baselines: durable SQLite inserts through sqlx in a temporary file with
//! the services' settings (WAL, synchronous=FULL), one row per transaction and batched
//! (1,000 rows per transaction, 50 rows per multi-VALUES statement); and the open loop's
//! floor, each arrival at a fixed rate committed three times in turn on two databases.

use super::records::mix;
use crate::replay::{PerSecond, Percentiles, latency_histogram};
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

/// Opens (creating it) the baseline's database with the services' durability settings.
async fn open(path: &Path) -> anyhow::Result<SqliteConnection> {
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
    Ok(conn)
}

/// Runs the batched phase (`batched_rows` rows; it also warms the WAL up), then the
/// single-row phase for `single_for`.
pub async fn measure(
    path: &Path,
    batched_rows: u64,
    single_for: Duration,
) -> anyhow::Result<SqliteBaseline> {
    let mut conn = open(path).await?;

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

/// The open loop's floor on this disk: the latency of the registries' three commits in turn
/// with nothing else around them.
#[derive(Debug, Clone)]
pub struct PacedBaseline {
    pub rate: f64,
    /// The first database's commits (arrivals and settlements together) and the second's.
    pub commits: (u64, u64),
    /// From each arrival's scheduled instant to the end of its first commit.
    pub first_commit_ms: Percentiles,
    /// From each arrival's scheduled instant to the end of its third commit.
    pub three_commits_ms: Percentiles,
    /// The p99 of the three commits for each second's arrivals.
    pub p99_ms_by_second: Vec<f64>,
}

/// What the first database's writer commits: a new arrival, or its settlement.
enum Step {
    Arrival(Instant),
    Settlement(Instant),
}

/// Paces `rate` arrivals a second for `duration` through the registries' storage path
/// without the rest of them: each arrival is a durable row in database A (the civil
/// register), then one in database B (the population register), then another in A (the
/// settlement). Each database has one writer, which commits everything queued when it
/// starts, as the registries' writers do. Arrivals come from a thread of their own, on
/// schedule whatever the commits do (an open loop), so a slow sync delays every arrival
/// behind it. The full path adds the RPCs and the services' CPU to this.
pub async fn paced(
    a_path: &Path,
    b_path: &Path,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<PacedBaseline> {
    anyhow::ensure!(rate > 0.0, "the rate must be positive");
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut a = open(a_path).await?;
    let mut b = open(b_path).await?;
    let (to_a, mut a_rx) = tokio::sync::mpsc::unbounded_channel::<Step>();
    let (to_b, mut b_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = {
        let to_a = to_a.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if to_a.send(Step::Arrival(due)).is_err() {
                    break;
                }
            }
        })
    };
    let second_writer = tokio::spawn(async move {
        let mut commits = 0u64;
        let mut next = 0;
        let mut group = Vec::new();
        while let Some(first) = b_rx.recv().await {
            group.push(first);
            while let Ok(due) = b_rx.try_recv() {
                group.push(due);
            }
            next = insert_group(&mut b, next, group.len()).await?;
            commits += 1;
            for due in group.drain(..) {
                // The first writer outlives this one: it stops after the last settlement.
                let _ = to_a.send(Step::Settlement(due));
            }
        }
        b.close().await?;
        anyhow::Ok(commits)
    });

    let (mut first_commit, mut three_commits) = (latency_histogram(), latency_histogram());
    let mut by_second = PerSecond::default();
    let (mut commits, mut settled, mut next) = (0u64, 0u64, 0);
    let mut group = Vec::new();
    while settled < total {
        let Some(first) = a_rx.recv().await else {
            break;
        };
        group.push(first);
        while let Ok(step) = a_rx.try_recv() {
            group.push(step);
        }
        next = insert_group(&mut a, next, group.len()).await?;
        commits += 1;
        let durable = Instant::now();
        for step in group.drain(..) {
            match step {
                Step::Arrival(due) => {
                    let us = durable.saturating_duration_since(due).as_micros() as u64;
                    first_commit.saturating_record(us.max(1));
                    let _ = to_b.send(due);
                }
                Step::Settlement(due) => {
                    settled += 1;
                    let us = durable.saturating_duration_since(due).as_micros() as u64;
                    three_commits.saturating_record(us.max(1));
                    let second = due.saturating_duration_since(start).as_secs() as usize;
                    by_second.record(second, us);
                }
            }
        }
    }
    drop(to_b);
    let second_commits = second_writer.await??;
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    a.close().await?;
    anyhow::ensure!(settled == total, "{settled} of {total} arrivals settled");
    Ok(PacedBaseline {
        rate,
        commits: (commits, second_commits),
        first_commit_ms: Percentiles::of(&first_commit),
        three_commits_ms: Percentiles::of(&three_commits),
        p99_ms_by_second: by_second.p99_ms(),
    })
}

/// Commits `rows` rows in one transaction, numbered from `next`; returns the next number.
async fn insert_group(conn: &mut SqliteConnection, next: u64, rows: usize) -> anyhow::Result<u64> {
    let mut txn = conn.begin().await?;
    for k in next..next + rows as u64 {
        let (a, b, c) = row(k);
        sqlx::query("INSERT INTO bench_row (request_id, personal_id, payload) VALUES (?, ?, ?)")
            .bind(a)
            .bind(b)
            .bind(c)
            .execute(&mut *txn)
            .await?;
    }
    txn.commit().await?;
    Ok(next + rows as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_paced_arrival_is_committed_three_times_in_turn() {
        let dir = std::env::temp_dir().join(format!("traffic-paced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.db"), dir.join("b.db"));
        let floor = paced(&a, &b, 400.0, Duration::from_millis(500))
            .await
            .unwrap();
        let rows = |path: &Path| {
            let path = path.to_owned();
            async move {
                let mut conn = open(&path).await.unwrap();
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_row")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                n
            }
        };
        let (in_a, in_b) = (rows(&a).await, rows(&b).await);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(floor.three_commits_ms.count, 200);
        assert_eq!(floor.first_commit_ms.count, 200);
        // Each arrival is a row in A, one in B, and its settlement another in A.
        assert_eq!((in_a, in_b), (400, 200));
        assert!(floor.commits.0 >= 1 && floor.commits.1 >= 1);
        assert!(floor.commits.0 <= 400 && floor.commits.1 <= 200);
        // Each arrival's third commit ends after its first.
        assert!(floor.three_commits_ms.p50 >= floor.first_commit_ms.p50);
        assert!(floor.three_commits_ms.max >= floor.first_commit_ms.max);
        assert!(!floor.p99_ms_by_second.is_empty());
    }
}
