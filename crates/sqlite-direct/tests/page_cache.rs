//! The page cache of `install_page_cache`, in a process of its own: it must be installed
//! before SQLite starts, so every test here installs it before anything else.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};

fn options(dir: &tempfile::TempDir) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(dir.path().join("t.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
}

/// A key that scatters consecutive rows over the whole index, as request ids do.
fn key(n: u64) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    let mut key = x.to_be_bytes().to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key
}

const ROWS: u64 = 30_000;
const PER_COMMIT: u64 = 50;

#[tokio::test]
async fn rebalances_park_pages_under_a_translated_key_and_the_database_stays_whole() {
    sqlite_direct::install_page_cache().expect("installed before SQLite starts");
    let dir = tempfile::tempdir().unwrap();
    let mut conn = SqliteConnection::connect_with(&options(&dir))
        .await
        .unwrap();
    sqlx::query("PRAGMA cache_size = -16384")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB NOT NULL UNIQUE, v TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let parked_before = sqlite_direct::parked_pages();
    for first in (0..ROWS).step_by(PER_COMMIT as usize) {
        let mut tx = conn.begin().await.unwrap();
        for n in first..first + PER_COMMIT {
            sqlx::query("INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)")
                .bind(n as i64)
                .bind(key(n))
                .bind(format!("row {n:>40}"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert!(
        sqlite_direct::parked_pages() > parked_before,
        "random keys split index pages out of order, so SQLite parked some"
    );
    assert_whole(&mut conn).await;
    conn.close().await.unwrap();

    // A fresh cache reads what the first one wrote.
    let mut conn = SqliteConnection::connect_with(&options(&dir))
        .await
        .unwrap();
    assert_whole(&mut conn).await;
}

/// SQLite's own consistency check, and every row found through the index by its key.
async fn assert_whole(conn: &mut SqliteConnection) {
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    for n in (0..ROWS).step_by(7) {
        let id: i64 = sqlx::query_scalar("SELECT id FROM t WHERE k = ?1")
            .bind(key(n))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(id, n as i64);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, ROWS as i64);
}

#[tokio::test]
async fn installing_again_returns_the_first_result() {
    let first = sqlite_direct::install_page_cache();
    assert_eq!(sqlite_direct::install_page_cache(), first);
    assert!(first.is_ok(), "{first:?}");
}
