//! Keeping a busy WAL short: the writer finishes each background checkpoint.
//!
//! SQLite restarts the WAL from its beginning only when every frame in it has been copied
//! into the database. A PASSIVE checkpoint running beside a writer that commits hundreds of
//! times a second never gets there: frames committed while it ran are left over. So the
//! WAL only restarted at the auto-checkpoint threshold, by a checkpoint run inline in a
//! writer's commit, which copied whatever the background one had not and synced the
//! database file while every queued request waited (up to 6 ms, every 2 s at 2,000
//! registrations a second). With a [`CheckpointSignal`], the background checkpointer says
//! when it has finished and the writer, between two groups, copies the few frames
//! committed meanwhile ([`Direct::copy_rest_of_wal`]); its next transaction then restarts
//! the WAL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Direct, Error};

/// A background checkpointer's word to the writer that a checkpoint has finished.
#[derive(Clone, Debug, Default)]
pub struct CheckpointSignal(Arc<AtomicBool>);

impl CheckpointSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the background checkpointer after each checkpoint that completed.
    pub fn checkpointed(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Direct<'_> {
    /// If a background checkpoint finished since the last call, checkpoints what was
    /// committed while it ran (PASSIVE: it never waits on a lock), so that the next write
    /// transaction restarts the WAL. Call it between transactions; returns whether it
    /// checkpointed.
    pub fn copy_rest_of_wal(&mut self, signal: &CheckpointSignal) -> Result<bool, Error> {
        if !signal.take() {
            return Ok(false);
        }
        self.execute("PRAGMA wal_checkpoint(PASSIVE)", &[])?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};

    use super::*;

    const INSERT: &str = "INSERT INTO t (body) VALUES (randomblob(3000))";

    /// Frames in the WAL: `mxFrame` of the wal-index header, read without a checkpoint.
    fn wal_frames(dir: &tempfile::TempDir) -> u32 {
        let shm = std::fs::read(dir.path().join("t.db-shm")).unwrap();
        u32::from_ne_bytes(shm[16..20].try_into().unwrap())
    }

    async fn checkpoint(conn: &mut SqliteConnection) {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(conn)
            .await
            .unwrap();
    }

    fn commit_rows(direct: &mut Direct<'_>, rows: usize) {
        let mut tx = direct.begin_immediate().unwrap();
        for _ in 0..rows {
            tx.execute(INSERT, &[]).unwrap();
        }
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn the_writer_finishing_a_background_checkpoint_restarts_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0");
        let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
        let mut checkpointer = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            .execute(&mut writer)
            .await
            .unwrap();
        let signal = CheckpointSignal::new();
        let mut direct = Direct::lock(&mut writer).await.unwrap();
        commit_rows(&mut direct, 200);
        assert!(!direct.copy_rest_of_wal(&signal).unwrap(), "not signalled");

        // A checkpoint that runs while commits land: a reader's snapshot holds it back
        // from the frames committed after it, as time does in a running service.
        let mut reader = SqliteConnection::connect_with(&options).await.unwrap();
        let mut read = reader.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *read)
            .await
            .unwrap();
        commit_rows(&mut direct, 10);
        checkpoint(&mut checkpointer).await;
        read.rollback().await.unwrap();

        // Left alone, the WAL does not restart: it grows past the frames left over.
        let left_over = wal_frames(&dir);
        commit_rows(&mut direct, 1);
        let grown = wal_frames(&dir);
        assert!(grown > left_over, "{grown} frames after {left_over}");
        signal.checkpointed();
        assert!(direct.copy_rest_of_wal(&signal).unwrap());
        assert!(
            !direct.copy_rest_of_wal(&signal).unwrap(),
            "once per signal"
        );

        // The next transaction starts the WAL again from its first frame.
        commit_rows(&mut direct, 1);
        let after = wal_frames(&dir);
        assert!(
            after < 10,
            "{after} frames after the restart, {grown} before"
        );
        drop(direct);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut writer)
            .await
            .unwrap();
        assert_eq!(rows, 212);
    }
}
