//! The outbox: requests for the population registry, committed with the registration and
//! leased by relays. A lease is taken with one `UPDATE ... RETURNING` whose WHERE clause
//! re-checks the lease, so that of two replicas racing for a row only one gets it (the
//! other's update re-evaluates the row after the first commits and skips it).

use std::collections::HashMap;

use uuid::Uuid;

use super::audit::Val;
use super::group::GroupTx;
use super::{AuditEntry, Backend, ReconcileRow, Store, now_ms};
use crate::domain::model::{PersonalIdStatus, Settlement};
use crate::domain::population::{Outbound, OutboundKind};

/// How a leased row ended.
#[derive(Clone)]
pub enum Completion {
    /// The number arrived.
    Issued {
        /// The row.
        item: Outbound,
        /// The number.
        personal_id: String,
    },
    /// Refused for good.
    Rejected {
        /// The row.
        item: Outbound,
        /// Why.
        reason: String,
    },
    /// Try again at `next_attempt_ms`.
    Retry {
        /// The row.
        item: Outbound,
        /// When.
        next_attempt_ms: i64,
        /// Last error: its code and cause (no personal data).
        error: String,
    },
}

/// Without the number.
impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Issued { item, .. } => f
                .debug_struct("Issued")
                .field("item", item)
                .finish_non_exhaustive(),
            Self::Rejected { item, reason } => f
                .debug_struct("Rejected")
                .field("item", item)
                .field("reason", reason)
                .finish(),
            Self::Retry {
                item,
                next_attempt_ms,
                error,
            } => f
                .debug_struct("Retry")
                .field("item", item)
                .field("next_attempt_ms", next_attempt_ms)
                .field("error", error)
                .finish(),
        }
    }
}

impl Store {
    /// Leases up to `limit` due rows for `lease_ms`, the longest overdue first. The due
    /// index serves both the filter and the order, so a claim reads about `limit` rows
    /// plus those leased at the front, however long the queue: after an outage a backlog
    /// of a million rows is claimed 500 at a time in milliseconds, where sorting every due
    /// row by its creation took a quarter of a second per claim, the writer waiting.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Outbound>, sqlx::Error> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let rows: Vec<(String, String, String, Vec<u8>, i64)> = sqlx::query_as(CLAIM)
            .bind(owner.to_owned())
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writes)
            .await?;
        let mut items = rows
            .into_iter()
            .filter_map(|(key, rid, kind, payload, attempts)| {
                let (Ok(registration_id), Some(kind)) =
                    (Uuid::parse_str(&rid), OutboundKind::parse(&kind))
                else {
                    // Only a hand-edited or damaged row gets here. It stays leased and is
                    // reported again at every lease, for an operator to repair.
                    tracing::error!(
                        target: "civil_registry::relay",
                        issue_key = %key,
                        "an outbox row has an unreadable registration id or kind: not sent"
                    );
                    return None;
                };
                Some(Outbound {
                    key,
                    registration_id,
                    kind,
                    payload,
                    attempts,
                })
            })
            .collect::<Vec<_>>();
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// When the earliest row no relay holds becomes due (ms since the epoch), if any; read
    /// from the front of the due index. A lease that runs out without an answer is found by
    /// the relay's next poll, at most its idle period later.
    pub async fn next_outbox_due(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(NEXT_DUE)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await
    }

    /// Writes the outcomes of leased rows back in one transaction. Returns what was
    /// settled, for the waiters. An answer for a key the registration no longer waits on
    /// (a stale lease) only removes its row.
    pub async fn complete_outbox(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<(Uuid, Settlement)>, sqlx::Error> {
        let mut wtx = self.begin_write().await?;
        let settled = complete_outbox_tx(&mut wtx, completions).await?;
        wtx.commit().await?;
        Ok(settled)
    }

    /// Outbox depth and the creation time of its oldest row (for metrics). On SQLite the
    /// count reads the narrow due index and the oldest row is the first by rowid (a new
    /// row's rowid is always above every row present, and rows are only ever inserted):
    /// milliseconds at a million rows, where `MIN(created_at_ms)` read the whole table.
    /// PostgreSQL has no such order and scans; the sampler spaces its reads by their cost.
    pub async fn outbox_depth(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        let sql = match self.backend {
            Backend::Sqlite => OUTBOX_DEPTH_SQLITE,
            Backend::Postgres => OUTBOX_DEPTH_POSTGRES,
        };
        sqlx::query_as(sql).fetch_one(&self.pool).await
    }

    /// Reconciliation repair: a number the population registry holds for a registration
    /// that does not show it is written back (and any queued request for it dropped). Only
    /// while the registration is as `seen` when the comparison began: a correction or a
    /// write-back since then is newer than the listing, and the next run judges it. A
    /// number replaced by the repair is kept among the cancelled ones, as a re-issue
    /// keeps it.
    pub async fn repair_write_back(
        &self,
        seen: &ReconcileRow,
        personal_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut wtx = self.begin_write().await?;
        let rid = seen.id.to_string();
        let now = now_ms();
        let as_seen = |sql| {
            sqlx::query(sql)
                .bind(now)
                .bind(rid.clone())
                .bind(seen.updated_at_ms)
                .bind(seen.status.as_str().to_owned())
                .bind(personal_id.to_owned())
        };
        as_seen(REPAIR_CANCEL_REPLACED)
            .execute(&mut *wtx.tx)
            .await?;
        let done = as_seen(REPAIR_ISSUED)
            .execute(&mut *wtx.tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM outbox WHERE registration_id = $1")
            .bind(rid.clone())
            .execute(&mut *wtx.tx)
            .await?;
        wtx.audit(AuditEntry {
            actor: "system:reconcile".into(),
            action: "personal_id.repaired",
            entity: format!("registration/{rid}"),
            details: serde_json::json!({}),
        });
        wtx.commit().await?;
        Ok(true)
    }

    /// Reconciliation repair: a registration that should be numbered but has neither a
    /// number nor a queued request is queued again under its current key, from its stored
    /// content (the bytes the first attempt carried, unless `registration.post_merger_rule`
    /// changed since; the population registry holds nothing under the key, or the
    /// comparison would have found it).
    pub async fn repair_requeue(&self, registration_id: Uuid) -> anyhow::Result<bool> {
        let Some((registration, unit)) = self.registration(registration_id).await? else {
            return Ok(false);
        };
        let mut wtx = self.begin_write().await?;
        let rid = registration_id.to_string();
        let key: Option<String> =
            sqlx::query_scalar("SELECT issue_key FROM registrations WHERE id = $1")
                .bind(rid.clone())
                .fetch_one(&mut *wtx.tx)
                .await?;
        let queued: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE registration_id = $1",
        )
        .bind(rid.clone())
        .fetch_one(&mut *wtx.tx)
        .await?;
        let Some(key) = key.filter(|_| queued == 0 && registration.personal_id.is_none()) else {
            return Ok(false);
        };
        let payload =
            crate::relay::encode::issue_request(&registration, &unit, self.numbering, &key);
        super::registrations::insert_outbox(
            &mut wtx,
            &key,
            &rid,
            OutboundKind::Issue,
            payload,
            now_ms(),
        )
        .await?;
        sqlx::query("UPDATE registrations SET status = 'PENDING', rejection_reason = NULL, updated_at_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(rid.clone())
            .execute(&mut *wtx.tx)
            .await?;
        wtx.audit(AuditEntry {
            actor: "system:reconcile".into(),
            action: "personal_id.requeued",
            entity: format!("registration/{rid}"),
            details: serde_json::json!({ "key": key }),
        });
        wtx.commit().await?;
        Ok(true)
    }
}

/// The relay's audit entry for a registration it settled, and the settlement for the
/// waiters (woken once the transaction commits).
fn settle<T: GroupTx>(
    wtx: &mut T,
    settled: &mut Vec<(Uuid, Settlement)>,
    item: &Outbound,
    action: &'static str,
    settlement: Settlement,
) {
    wtx.chain().append(AuditEntry {
        actor: "system:relay".into(),
        action,
        entity: format!("registration/{}", item.registration_id),
        details: serde_json::json!({ "key": item.key }),
    });
    settled.push((item.registration_id, settlement));
}

/// The repair's two statements bind (now, id, updated_at_ms as seen, status as seen,
/// number), and act only on a row still as seen.
const REPAIR_CANCEL_REPLACED: &str = "INSERT INTO cancelled_personal_ids (personal_id, registration_id, cancelled_at_ms) \
    SELECT personal_id, id, $1 FROM registrations \
    WHERE id = $2 AND updated_at_ms = $3 AND status = $4 AND personal_id IS NOT NULL AND personal_id <> $5 \
    ON CONFLICT (personal_id) DO NOTHING";
const REPAIR_ISSUED: &str = "UPDATE registrations SET status = 'ISSUED', personal_id = $5, issue_time_ms = $1, \
    updated_at_ms = $1, rejection_reason = NULL WHERE id = $2 AND updated_at_ms = $3 AND status = $4";
const CANCEL_REPLACED: &str = "INSERT INTO cancelled_personal_ids (personal_id, registration_id, cancelled_at_ms) \
    SELECT personal_id, id, $1 FROM registrations \
    WHERE id = $2 AND issue_key = $3 AND status = 'PENDING' AND personal_id IS NOT NULL AND personal_id <> $4 \
    ON CONFLICT (personal_id) DO NOTHING";
const ISSUED: &str = "UPDATE registrations SET status = 'ISSUED', personal_id = $1, issue_time_ms = $2, \
    updated_at_ms = $2, rejection_reason = NULL WHERE id = $3 AND issue_key = $4 AND status = 'PENDING'";
const REJECTED: &str = "UPDATE registrations SET status = 'REJECTED', rejection_reason = $1, updated_at_ms = $2 \
    WHERE id = $3 AND issue_key = $4 AND status = 'PENDING'";
/// `claim_outbox`: $1 owner, $2 lease end, $3 now, $4 most rows.
const CLAIM: &str = "UPDATE outbox SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
    WHERE issue_key IN (SELECT issue_key FROM outbox WHERE next_attempt_ms <= $3 AND lease_until_ms <= $3 \
                        ORDER BY next_attempt_ms LIMIT $4) \
    AND next_attempt_ms <= $3 AND lease_until_ms <= $3 \
    RETURNING issue_key, registration_id, kind, payload, attempts";

/// `next_outbox_due`: $1 now.
const NEXT_DUE: &str = "SELECT MIN(next_attempt_ms) FROM outbox WHERE lease_until_ms <= $1";
const OUTBOX_DEPTH_SQLITE: &str = "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM outbox), \
    (SELECT created_at_ms FROM outbox ORDER BY rowid LIMIT 1)";
const OUTBOX_DEPTH_POSTGRES: &str =
    "SELECT CAST(COUNT(*) AS BIGINT), MIN(created_at_ms) FROM outbox";

const RETRY: &str = "UPDATE outbox SET lease_owner = NULL, lease_until_ms = 0, next_attempt_ms = $1, last_error = $2 \
    WHERE issue_key = $3";

/// [`Store::complete_outbox`] inside a caller's write transaction (the writer's group
/// commit).
pub(crate) async fn complete_outbox_tx<T: GroupTx>(
    wtx: &mut T,
    completions: &[Completion],
) -> Result<Vec<(Uuid, Settlement)>, sqlx::Error> {
    let now = now_ms();

    let mut settled = Vec::new();
    let mut done_keys = Vec::new();
    // First issues, the bulk of the traffic, are written back together.
    let (first_issues, others): (Vec<&Completion>, Vec<&Completion>) =
        completions.iter().partition(
            |c| matches!(c, Completion::Issued { item, .. } if item.kind == OutboundKind::Issue),
        );
    let mut numbers = HashMap::new();
    let mut issues = Vec::with_capacity(first_issues.len());
    for completion in &first_issues {
        if let Completion::Issued { item, personal_id } = completion {
            let rid = item.registration_id.to_string();
            numbers.insert(rid.clone(), (item, personal_id));
            issues.push((rid, item.key.as_str(), personal_id.as_str()));
            done_keys.push(item.key.clone());
        }
    }
    for rid in wtx.settle_first_issues(now, &issues).await? {
        let Some((item, personal_id)) = numbers.get(&rid) else {
            continue;
        };
        settle(
            wtx,
            &mut settled,
            item,
            "personal_id.issued",
            Settlement {
                status: PersonalIdStatus::Issued,
                personal_id: Some((*personal_id).clone()),
                rejection_reason: None,
                at_ms: now,
            },
        );
    }
    for completion in others {
        match completion {
            Completion::Issued { item, personal_id } => {
                let rid = item.registration_id.to_string();
                if item.kind == OutboundKind::Reissue {
                    wtx.execute(
                        CANCEL_REPLACED,
                        vec![
                            Val::I(now),
                            Val::S(rid.clone()),
                            Val::S(item.key.clone()),
                            Val::S(personal_id.clone()),
                        ],
                    )
                    .await?;
                }
                let done = wtx
                    .execute(
                        ISSUED,
                        vec![
                            Val::S(personal_id.clone()),
                            Val::I(now),
                            Val::S(rid),
                            Val::S(item.key.clone()),
                        ],
                    )
                    .await?;
                if done > 0 {
                    let action = if item.kind == OutboundKind::Reissue {
                        "personal_id.reissued"
                    } else {
                        "personal_id.issued"
                    };
                    settle(
                        wtx,
                        &mut settled,
                        item,
                        action,
                        Settlement {
                            status: PersonalIdStatus::Issued,
                            personal_id: Some(personal_id.clone()),
                            rejection_reason: None,
                            at_ms: now,
                        },
                    );
                }
                done_keys.push(item.key.clone());
            }
            Completion::Rejected { item, reason } => {
                let done = wtx
                    .execute(
                        REJECTED,
                        vec![
                            Val::S(reason.clone()),
                            Val::I(now),
                            Val::S(item.registration_id.to_string()),
                            Val::S(item.key.clone()),
                        ],
                    )
                    .await?;
                if done > 0 {
                    settle(
                        wtx,
                        &mut settled,
                        item,
                        "personal_id.rejected",
                        Settlement {
                            status: PersonalIdStatus::Rejected,
                            personal_id: None,
                            rejection_reason: Some(reason.clone()),
                            at_ms: now,
                        },
                    );
                }
                done_keys.push(item.key.clone());
            }
            Completion::Retry {
                item,
                next_attempt_ms,
                error,
            } => {
                wtx.execute(
                    RETRY,
                    vec![
                        Val::I(*next_attempt_ms),
                        Val::S(error.clone()),
                        Val::S(item.key.clone()),
                    ],
                )
                .await?;
            }
        }
    }
    wtx.delete_outbox(&done_keys).await?;
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use sqlx::Row as _;

    /// SQLite's plan for a statement, one line per step.
    async fn plan(store: &Store, sql: &str, binds: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(explain.as_str()));
        for _ in 0..binds {
            query = query.bind(0i64);
        }
        query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_due_index_serves_the_claim_and_the_wake_up_without_a_sort_or_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&DatabaseConfig {
            url: format!("sqlite://{}/civil.db?mode=rwc", dir.path().display()),
            ..DatabaseConfig::default()
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let claim = plan(&store, CLAIM, 4).await;
        assert!(
            claim
                .iter()
                .any(|step| step.contains("USING INDEX outbox_due")),
            "{claim:?}"
        );
        assert!(
            !claim.iter().any(|step| step.contains("TEMP B-TREE")),
            "{claim:?}"
        );
        let next_due = plan(&store, NEXT_DUE, 1).await;
        assert!(
            next_due
                .iter()
                .all(|step| step.contains("USING INDEX outbox_due")),
            "{next_due:?}"
        );
        store.close().await;
    }
}
