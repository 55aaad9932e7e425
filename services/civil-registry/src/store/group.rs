//! The writer's group commit, on whichever connection runs it. What a group writes is
//! decided once (`insert_registrations_tx`, `complete_outbox_tx`); the few statements it
//! takes are [`GroupTx`]'s, run either through the pool ([`WriteTx`], PostgreSQL and every
//! write outside the group commit) or, on SQLite, straight on the writer's own connection
//! from its own thread (`direct`).

use super::audit::{AUDIT_LOG, AuditChain, SET_HEAD, Val, WriteTx, insert_rows};
use super::outbox::{Completion, complete_outbox_tx};
use super::registrations::{GroupWritten, Lease, NewRow, insert_registrations_tx};
use super::{Backend, Store, param, pieces};

/// A table the group commit inserts rows into, with its one-row INSERT for statements
/// prepared once and run per row.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static [&'static str],
    /// `INSERT OR FAIL INTO name (columns) VALUES (?, ...)`: see `insert_into` for `OR FAIL`.
    pub(crate) insert_one: &'static str,
}

/// A [`Table`] whose one-row INSERT is spelt out at compile time from its columns.
macro_rules! table {
    (@param $column:literal) => {
        ", ?"
    };
    ($name:literal, [$first:literal $(, $rest:literal)* $(,)?]) => {
        $crate::store::group::Table {
            name: $name,
            columns: &[$first $(, $rest)*],
            insert_one: concat!(
                "INSERT OR FAIL INTO ", $name, " (", $first $(, ", ", $rest)*,
                ") VALUES (?" $(, $crate::store::group::table!(@param $rest))*, ")"
            ),
        }
    };
}
pub(crate) use table;

/// A registration stored before under a (unit, request_id) key.
#[derive(Debug)]
pub(crate) struct StoredRequest {
    pub(crate) unit_code: String,
    pub(crate) request_id: String,
    pub(crate) id: String,
    pub(crate) content_hash: String,
}

/// A first number written back: (registration id, issue key, personal id).
pub(crate) type FirstIssue<'a> = (String, &'a str, &'a str);

/// The statements of one group-commit transaction, which holds the audit chain's head.
pub(crate) trait GroupTx {
    /// The audit chain this transaction extends.
    fn chain(&mut self) -> &mut AuditChain;

    /// The registrations stored before under any of these (unit, request_id) keys.
    async fn stored_requests(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredRequest>, sqlx::Error>;

    /// Reserves each book's next `count` entry numbers (unit, year, count); returns each
    /// book's last number after them, in the same order. PostgreSQL keeps a counter row
    /// per book (replicas lock it); SQLite, one writer at a time, reads the highest number
    /// from the register's unique index (migration 5).
    async fn advance_counters(
        &mut self,
        books: &[(&str, i64, i64)],
    ) -> Result<Vec<i64>, sqlx::Error>;

    /// Inserts rows (values in `table.columns` order).
    async fn insert(
        &mut self,
        table: &'static Table,
        rows: Vec<Vec<Val>>,
    ) -> Result<(), sqlx::Error>;

    /// Writes first numbers back to the registrations still waiting for them under that
    /// key; returns the ids of those it settled.
    async fn settle_first_issues(
        &mut self,
        now: i64,
        issues: &[FirstIssue<'_>],
    ) -> Result<Vec<String>, sqlx::Error>;

    /// Runs one statement (parameters `$1`, `$2` ... first used in that order); returns
    /// the rows it changed.
    async fn execute(&mut self, sql: &'static str, params: Vec<Val>) -> Result<u64, sqlx::Error>;

    /// Deletes the outbox rows of these issue keys.
    async fn delete_outbox(&mut self, keys: &[String]) -> Result<(), sqlx::Error>;

    /// Commits what was written (the audit entries already among it).
    async fn commit_written(self) -> Result<(), sqlx::Error>;
}

/// Writes the transaction's audit entries, moves the chain's head and commits; returns
/// once the commit is durable.
pub(crate) async fn finish<T: GroupTx>(mut tx: T) -> Result<(), sqlx::Error> {
    let (rows, seq, hash) = tx.chain().take();
    if !rows.is_empty() {
        tx.insert(&AUDIT_LOG, rows).await?;
        tx.execute(SET_HEAD, vec![Val::I(seq), Val::S(hash)])
            .await?;
    }
    tx.commit_written().await
}

/// A register book's last entry number on SQLite (migration 5: read from the unique index,
/// no counter row).
pub(crate) const LAST_NUMBER: &str = "SELECT MAX(registration_number) FROM registrations \
    WHERE origin_unit_code = $1 AND reg_year = $2";

/// Where the writer's group commits run.
pub(crate) trait GroupWriter {
    /// Its transaction.
    type Tx<'a>: GroupTx
    where
        Self: 'a;

    /// Begins a transaction that holds the write lock and the audit chain's head.
    async fn begin(&mut self) -> Result<Self::Tx<'_>, sqlx::Error>;

    /// Upkeep between two groups, after their replies are sent (SQLite: finishing a
    /// background checkpoint, see `sqlite_direct::CheckpointSignal`).
    async fn between_groups(&mut self) {}
}

/// One group commit of the writer: registrations (their outbox rows leased to `lease`
/// when given) and relay outcomes, in ONE transaction. Returns the insert outcomes, the
/// outbox rows leased in it (to hand to the relay in memory) and what was settled. On an
/// error nothing of the group is kept.
pub(crate) async fn write_group<W: GroupWriter>(
    writer: &mut W,
    rows: &[NewRow],
    lease: Option<&Lease>,
    completions: &[Completion],
) -> Result<GroupWritten, sqlx::Error> {
    let mut tx = writer.begin().await?;
    let settled = if completions.is_empty() {
        Vec::new()
    } else {
        complete_outbox_tx(&mut tx, completions).await?
    };
    let (outcomes, leased) = if rows.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        insert_registrations_tx(&mut tx, rows, lease).await?
    };
    finish(tx).await?;
    Ok(GroupWritten {
        outcomes,
        leased,
        settled,
    })
}

impl GroupWriter for Store {
    type Tx<'a> = WriteTx;

    async fn begin(&mut self) -> Result<WriteTx, sqlx::Error> {
        self.begin_write().await
    }
}

/// Through the pool: multi-row statements, a piece of a few fixed sizes each (see
/// `pieces`), since every statement is a round trip to the database.
impl GroupTx for WriteTx {
    fn chain(&mut self) -> &mut AuditChain {
        &mut self.chain
    }

    async fn stored_requests(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredRequest>, sqlx::Error> {
        let mut stored = Vec::new();
        for chunk in pieces(keys) {
            // By (unit, request_id) pairs, the UNIQUE index's columns: `request_id IN (...)`
            // alone cannot use that index and scanned the whole table on every group.
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "({}, {})",
                        param(self.backend, 2 * i + 1),
                        param(self.backend, 2 * i + 2)
                    )
                })
                .collect();
            let sql = format!(
                "SELECT r.origin_unit_code, r.request_id, r.id, r.content_hash FROM (VALUES {}) AS v \
                 JOIN registrations r ON r.origin_unit_code = v.column1 AND r.request_id = v.column2",
                pairs.join(", ")
            );
            let mut query =
                sqlx::query_as::<_, (String, String, String, String)>(sqlx::AssertSqlSafe(sql));
            for (unit, request_id) in chunk {
                query = query.bind(*unit).bind(*request_id);
            }
            for (unit_code, request_id, id, content_hash) in query.fetch_all(&mut *self.tx).await? {
                stored.push(StoredRequest {
                    unit_code,
                    request_id,
                    id,
                    content_hash,
                });
            }
        }
        Ok(stored)
    }

    async fn advance_counters(
        &mut self,
        books: &[(&str, i64, i64)],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut lasts = Vec::with_capacity(books.len());
        if self.backend == Backend::Sqlite {
            for (unit, year, count) in books {
                let (last,): (Option<i64>,) = sqlx::query_as(LAST_NUMBER)
                    .bind(*unit)
                    .bind(*year)
                    .fetch_one(&mut *self.tx)
                    .await?;
                lasts.push(last.unwrap_or(0) + count);
            }
            return Ok(lasts);
        }
        for piece in pieces(books) {
            let values: Vec<String> = (0..piece.len())
                .map(|i| {
                    format!(
                        "({}, {}, {})",
                        param(self.backend, 3 * i + 1),
                        param(self.backend, 3 * i + 2),
                        param(self.backend, 3 * i + 3)
                    )
                })
                .collect();
            let sql = format!(
                "{} register_counters (unit_code, reg_year, last_number) VALUES {} \
                 ON CONFLICT (unit_code, reg_year) DO UPDATE SET last_number = register_counters.last_number + excluded.last_number \
                 RETURNING unit_code, reg_year, last_number",
                super::insert_into(self.backend),
                values.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, i64, i64)>(sqlx::AssertSqlSafe(sql));
            for (unit, year, count) in piece {
                query = query.bind(*unit).bind(*year).bind(*count);
            }
            let returned = query.fetch_all(&mut *self.tx).await?;
            for (unit, year, _) in piece {
                let last = returned
                    .iter()
                    .find(|(u, y, _)| u == unit && y == year)
                    .map(|(_, _, last)| *last)
                    .ok_or_else(|| sqlx::Error::Protocol("register counter missing".into()))?;
                lasts.push(last);
            }
        }
        Ok(lasts)
    }

    async fn insert(
        &mut self,
        table: &'static Table,
        rows: Vec<Vec<Val>>,
    ) -> Result<(), sqlx::Error> {
        insert_rows(&mut self.tx, self.backend, table.name, table.columns, rows).await
    }

    async fn settle_first_issues(
        &mut self,
        now: i64,
        issues: &[FirstIssue<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut settled = Vec::new();
        for chunk in pieces(issues) {
            let mut sql = format!(
                "UPDATE registrations SET status = 'ISSUED', issue_time_ms = {}, updated_at_ms = {}, \
                 rejection_reason = NULL, personal_id = v.column3 FROM (VALUES ",
                param(self.backend, 1),
                param(self.backend, 2),
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let p: Vec<String> = (3..=5).map(|k| param(self.backend, 3 * i + k)).collect();
                sql.push_str(&format!("({}, {}, {})", p[0], p[1], p[2]));
            }
            sql.push_str(
                ") AS v WHERE registrations.id = v.column1 AND registrations.issue_key = v.column2 \
                 AND registrations.status = 'PENDING' RETURNING id",
            );
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(now);
            for (id, key, personal_id) in chunk {
                query = query.bind(id.as_str()).bind(*key).bind(*personal_id);
            }
            settled.extend(query.fetch_all(&mut *self.tx).await?);
        }
        Ok(settled)
    }

    async fn execute(&mut self, sql: &'static str, params: Vec<Val>) -> Result<u64, sqlx::Error> {
        let mut query = sqlx::query(sql);
        for value in params {
            query = value.bind_to(query);
        }
        Ok(query.execute(&mut *self.tx).await?.rows_affected())
    }

    async fn delete_outbox(&mut self, keys: &[String]) -> Result<(), sqlx::Error> {
        for chunk in pieces(keys) {
            let placeholders = super::params(self.backend, chunk.len());
            let sql = format!("DELETE FROM outbox WHERE issue_key IN ({placeholders})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                query = query.bind(key.as_str());
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn commit_written(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tables_one_row_insert_names_its_columns_with_one_parameter_each() {
        let t = table!("t", ["a", "b", "c"]);
        assert_eq!(t.name, "t");
        assert_eq!(t.columns, &["a", "b", "c"]);
        assert_eq!(
            t.insert_one,
            "INSERT OR FAIL INTO t (a, b, c) VALUES (?, ?, ?)"
        );
        let one = table!("u", ["x"]);
        assert_eq!(one.insert_one, "INSERT OR FAIL INTO u (x) VALUES (?)");
    }
}
