//! Registrations: the grouped insert behind RegisterBirth, reads, lists, corrections,
//! statistics and the rows reconciliation needs.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use sha2::{Digest as _, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::audit::Val;
use super::group::{GroupTx, Table, table};
use super::{AuditEntry, Store, now_ms};
use crate::domain::eligibility::{Decision, IneligibilityReason};
use crate::domain::error::RegistryError;
use crate::domain::model::{
    BirthRecord, Correction, NewBirth, PersonalIdStatus, Registration, Settlement, Unit, UnitCode,
    book_number,
};
use crate::domain::numbering::PostMergerRule;
use crate::domain::population::{Outbound, OutboundKind};
use crate::domain::service::{CorrectionAction, plan_correction};
use crate::relay::encode;

/// One registration to insert.
#[derive(Clone)]
pub struct NewRow {
    /// Id chosen for it (used only if the request is new).
    pub id: Uuid,
    /// The validated request.
    pub birth: NewBirth,
    /// Registering unit (the caller's).
    pub unit: Unit,
    /// Registering official.
    pub official_id: String,
    /// The eligibility decision.
    pub decision: Decision,
    /// [`NewBirth::content_hash`], computed by the caller's task rather than inside the
    /// writer's transaction.
    pub content_hash: String,
    /// The record as stored (JSON), computed likewise.
    pub record_json: String,
    /// The province code its number is to encode, by registration date.
    pub numbering: PostMergerRule,
}

/// Ids only: the rest is the record.
impl std::fmt::Debug for NewRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRow")
            .field("id", &self.id)
            .field("unit", &self.unit.code)
            .field("official_id", &self.official_id)
            .finish_non_exhaustive()
    }
}

impl NewRow {
    /// A row with its digests computed.
    pub fn new(
        id: Uuid,
        birth: NewBirth,
        unit: Unit,
        official_id: String,
        decision: Decision,
        numbering: PostMergerRule,
    ) -> Self {
        let (record_json, content_hash) = birth.record_json_and_content_hash();
        Self {
            id,
            birth,
            unit,
            official_id,
            decision,
            content_hash,
            record_json,
            numbering,
        }
    }
}

/// What became of one insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Inserted now.
    Created(Uuid),
    /// A retry: the registration stored earlier under the same key and content.
    Existing(Uuid),
    /// The key was used with different content.
    Conflict,
}

const COLUMNS: &str = "r.id, r.request_id, r.unit_code, r.origin_unit_code, r.official_id, r.registration_number, r.book_number, \
    r.registered_on, r.record, r.status, r.personal_id, r.reasons, r.rule_version, r.rejection_reason, \
    r.created_at_ms, r.updated_at_ms, r.issue_time_ms, r.issue_key, r.issue_generation";

fn decode_err(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn registration_from_row(row: &AnyRow) -> Result<Registration, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let record: String = row.try_get("record")?;
    let status: String = row.try_get("status")?;
    let registered_on: String = row.try_get("registered_on")?;
    Ok(Registration {
        id: Uuid::parse_str(&id).map_err(decode_err)?,
        request_id: row.try_get("request_id")?,
        unit_code: UnitCode::parse(&row.try_get::<String, _>("unit_code")?).map_err(decode_err)?,
        register_unit_code: UnitCode::parse(&row.try_get::<String, _>("origin_unit_code")?)
            .map_err(decode_err)?,
        official_id: row.try_get("official_id")?,
        registration_number: row.try_get("registration_number")?,
        book_number: row.try_get("book_number")?,
        registered_on: NaiveDate::parse_from_str(&registered_on, "%Y-%m-%d").map_err(decode_err)?,
        record: serde_json::from_str::<BirthRecord>(&record).map_err(|e| {
            // serde_json quotes the offending value, which here is personal data.
            decode_err(format_args!(
                "stored record unreadable ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?,
        status: PersonalIdStatus::from_str_opt(&status)
            .ok_or_else(|| decode_err("unknown status"))?,
        personal_id: row.try_get("personal_id")?,
        reasons: IneligibilityReason::from_mask(row.try_get("reasons")?),
        rule_version: row.try_get("rule_version")?,
        rejection_reason: row.try_get("rejection_reason")?,
        cancelled_personal_ids: Vec::new(),
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        issued_at_ms: row.try_get("issue_time_ms")?,
    })
}

/// Filters of ListBirthRegistrations.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Path of the caller's unit: only units below it.
    pub jurisdiction_path: String,
    /// Only this unit.
    pub unit_code: Option<String>,
    /// Only this province.
    pub province_code: Option<String>,
    /// From this date (inclusive).
    pub from: Option<NaiveDate>,
    /// To this date (inclusive).
    pub to: Option<NaiveDate>,
    /// Only this status.
    pub status: Option<PersonalIdStatus>,
    /// Continue after this position.
    pub after: Option<PageCursor>,
    /// Page size.
    pub limit: i64,
}

/// Position in the newest-first order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCursor {
    /// created_at_ms of the last row of the previous page.
    pub created_at_ms: i64,
    /// id of that row.
    pub id: String,
}

/// How statistics group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsGrouping {
    /// By province code.
    Province,
    /// By district-level unit.
    District,
    /// By registering unit.
    Unit,
}

/// One statistics row (counts of registrations).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsRow {
    /// Group code.
    pub group: String,
    /// Counts in contract order: registrations, first_time, re_registrations, issued,
    /// pending, rejected, not_eligible, then the five reasons.
    pub counts: [i64; 12],
}

/// A registration as reconciliation compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileRow {
    /// Id.
    pub id: Uuid,
    /// Status.
    pub status: PersonalIdStatus,
    /// Current number.
    pub personal_id: Option<String>,
    /// Whether an outbox row is waiting for it.
    pub queued: bool,
    /// When the row last changed, to tell a repair whether it still stands as seen.
    pub updated_at_ms: i64,
}

impl Store {
    /// A registration with its current unit.
    pub async fn registration(
        &self,
        id: Uuid,
    ) -> Result<Option<(Registration, Unit)>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS}, u.code, u.name, u.level, u.province_code, u.parent_code, u.active, u.path \
             FROM registrations r JOIN units u ON u.code = r.unit_code WHERE r.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut registration = registration_from_row(&row)?;
        let unit = super::admin::unit_from_row(&row)?;
        self.fill_cancelled(std::slice::from_mut(&mut registration))
            .await?;
        Ok(Some((registration, unit)))
    }

    async fn fill_cancelled(&self, registrations: &mut [Registration]) -> Result<(), sqlx::Error> {
        if registrations.is_empty() {
            return Ok(());
        }
        let placeholders = super::params(self.backend, registrations.len());
        let sql = format!(
            "SELECT registration_id, personal_id FROM cancelled_personal_ids WHERE registration_id IN ({}) \
             ORDER BY cancelled_at_ms, personal_id",
            placeholders
        );
        let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for r in registrations.iter() {
            query = query.bind(r.id.to_string());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
        for (rid, pid) in rows {
            by_id.entry(rid).or_default().push(pid);
        }
        for r in registrations.iter_mut() {
            r.cancelled_personal_ids = by_id.remove(&r.id.to_string()).unwrap_or_default();
        }
        Ok(())
    }

    /// One page of registrations, newest first, and whether more follow.
    pub async fn list_registrations(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<Registration>, bool), sqlx::Error> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM registrations r JOIN units u ON u.code = r.unit_code \
             WHERE substr(u.path, 1, CAST($1 AS INTEGER)) = $2"
        );
        let mut n = 2;
        fn next_param(sql: &mut String, n: &mut usize, clause: &str) {
            *n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        }
        macro_rules! next {
            ($sql:expr, $clause:expr) => {
                next_param($sql, &mut n, $clause)
            };
        }
        if filter.unit_code.is_some() {
            // Two index searches instead of one unit-led index that every insert would
            // write: the unit's own registrations by the register-number key, and those a
            // correction moved into it by the partial `registrations_moved`.
            next!(
                &mut sql,
                " AND ((r.origin_unit_code = ? AND r.unit_code = r.origin_unit_code)"
            );
            next!(
                &mut sql,
                " OR (r.unit_code = ? AND r.unit_code <> r.origin_unit_code))"
            );
        }
        if filter.province_code.is_some() {
            next!(&mut sql, " AND u.province_code = ?");
        }
        // `|| ''` keeps the planner off the registered_on index: a page must walk the
        // (created_at_ms, id) index from the cursor, not sort the whole date range again
        // for every page (quadratic when a verifier pages through a national year).
        if filter.from.is_some() {
            next!(&mut sql, " AND r.registered_on || '' >= ?");
        }
        if filter.to.is_some() {
            next!(&mut sql, " AND r.registered_on || '' <= ?");
        }
        if filter.status.is_some() {
            next!(&mut sql, " AND r.status = ?");
        }
        if filter.after.is_some() {
            // A row value, so that both backends seek the index to the cursor.
            next!(&mut sql, " AND (r.created_at_ms, r.id) < (?");
            next!(&mut sql, ", ?)");
        }
        next!(
            &mut sql,
            " ORDER BY r.created_at_ms DESC, r.id DESC LIMIT ?"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.jurisdiction_path.chars().count() as i64)
            .bind(filter.jurisdiction_path.clone());
        if let Some(v) = &filter.unit_code {
            query = query.bind(v.clone()).bind(v.clone());
        }
        if let Some(v) = &filter.province_code {
            query = query.bind(v.clone());
        }
        if let Some(v) = filter.from {
            query = query.bind(v.format("%Y-%m-%d").to_string());
        }
        if let Some(v) = filter.to {
            query = query.bind(v.format("%Y-%m-%d").to_string());
        }
        if let Some(v) = filter.status {
            query = query.bind(v.as_str());
        }
        if let Some(c) = &filter.after {
            query = query.bind(c.created_at_ms).bind(c.id.clone());
        }
        let rows = query.bind(filter.limit + 1).fetch_all(&self.pool).await?;
        let mut registrations = rows
            .iter()
            .map(registration_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = registrations.len() as i64 > filter.limit;
        registrations.truncate(filter.limit.max(0) as usize);
        self.fill_cancelled(&mut registrations).await?;
        Ok((registrations, more))
    }

    /// Applies a correction planned against the row as it stands inside the transaction,
    /// once `authorize` has accepted the registration's unit as read there (and the unit it
    /// moves to, if another). Returns the outcome for an idempotent retry too (`reissued`
    /// as first answered).
    pub async fn correct_registration(
        &self,
        correction: &Correction,
        actor: &str,
        new_unit: Option<&Unit>,
        authorize: &CorrectionCheck<'_>,
    ) -> Result<Result<bool, RegistryError>, sqlx::Error> {
        let mut wtx = self.begin_write().await?;
        let id = correction.registration_id.to_string();
        let sql = format!(
            "SELECT {COLUMNS}, u.code, u.name, u.level, u.province_code, u.parent_code, u.active, u.path \
             FROM registrations r JOIN units u ON u.code = r.unit_code WHERE r.id = $1"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.clone())
            .fetch_optional(&mut *wtx.tx)
            .await?
        else {
            return Ok(Err(RegistryError::NotFound));
        };
        let registration = registration_from_row(&row)?;
        let current_unit = super::admin::unit_from_row(&row)?;
        let new_unit = new_unit.filter(|unit| unit.code != current_unit.code);
        // A replay is authorised too: the same request id must not let another official
        // read back a correction outside their jurisdiction.
        if let Err(denied) = authorize(&current_unit, new_unit) {
            return Ok(Err(denied));
        }
        let hash = correction.content_hash();
        let previous: Option<(String, i64)> =
            sqlx::query_as("SELECT content_hash, reissued FROM corrections WHERE registration_id = $1 AND request_id = $2")
                .bind(id.clone())
                .bind(correction.request_id.as_str().to_owned())
                .fetch_optional(&mut *wtx.tx)
                .await?;
        if let Some((stored, reissued)) = previous {
            return Ok(if stored == hash {
                Ok(reissued != 0)
            } else {
                Err(RegistryError::IdempotencyKeyReused)
            });
        }
        let generation: i64 = row.try_get("issue_generation")?;
        let last_key: Option<String> = row.try_get("issue_key")?;
        let plan = match plan_correction(
            &registration,
            &current_unit,
            correction,
            new_unit,
            generation,
            last_key.as_deref(),
            self.numbering,
        ) {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        let target_unit = new_unit.unwrap_or(&current_unit);
        let now = now_ms();
        let (issue_key, reissued) = match &plan.action {
            CorrectionAction::None => (None, false),
            CorrectionAction::Issue { key } => (Some(key.clone()), false),
            CorrectionAction::Reissue { key, .. } => (Some(key.clone()), true),
        };
        // A new key counts; the registration id (the first key) and a key sent again do not.
        let generation = if issue_key.is_some()
            && issue_key.as_deref() != Some(id.as_str())
            && issue_key != last_key
        {
            generation + 1
        } else {
            generation
        };
        let mut updated = registration.clone();
        updated.record = plan.record.clone();
        updated.unit_code = target_unit.code.clone();
        sqlx::query(
            "UPDATE registrations SET record = $1, unit_code = $2, status = $3, reasons = $4, rule_version = $5, \
             rejection_reason = CASE WHEN $3 = 'REJECTED' THEN rejection_reason ELSE NULL END, \
             issue_key = COALESCE($6, issue_key), issue_generation = $7, updated_at_ms = $8 WHERE id = $9",
        )
        .bind(serde_json::to_string(&plan.record).map_err(decode_err)?)
        .bind(target_unit.code.as_str().to_owned())
        .bind(plan.status.as_str())
        .bind(IneligibilityReason::mask(&plan.decision.reasons))
        .bind(plan.decision.rule_version)
        .bind(issue_key.clone())
        .bind(generation)
        .bind(now)
        .bind(id.clone())
        .execute(&mut *wtx.tx)
        .await?;
        match &plan.action {
            CorrectionAction::None => {}
            CorrectionAction::Issue { key } => {
                let payload = encode::issue_request(&updated, target_unit, self.numbering, key);
                insert_outbox(&mut wtx, key, &id, OutboundKind::Issue, payload, now).await?;
            }
            CorrectionAction::Reissue {
                key,
                old_personal_id,
            } => {
                let payload = encode::reissue_request(
                    &updated,
                    target_unit,
                    self.numbering,
                    key,
                    old_personal_id,
                    correction.reason.as_str(),
                );
                insert_outbox(&mut wtx, key, &id, OutboundKind::Reissue, payload, now).await?;
            }
        }
        sqlx::query(
            "INSERT INTO corrections (registration_id, request_id, content_hash, reissued, created_at_ms, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.clone())
        .bind(correction.request_id.as_str().to_owned())
        .bind(hash)
        .bind(i64::from(reissued))
        .bind(now)
        .bind(correction.reason.as_str().to_owned())
        .execute(&mut *wtx.tx)
        .await?;
        wtx.audit(AuditEntry {
            actor: actor.to_owned(),
            action: "registration.correct",
            entity: format!("registration/{id}"),
            details: serde_json::json!({
                "request_id": correction.request_id.as_str(), "unit": target_unit.code.as_str(),
                "status": plan.status.as_str(), "issue_key": issue_key,
                // The text is personal data, kept in `corrections`; the chain vouches for it.
                "reason_sha256": hex::encode(Sha256::digest(correction.reason.as_str())),
            }),
        });
        wtx.commit().await?;
        Ok(Ok(reissued))
    }

    /// Counts per group for registrations dated within the range, within a jurisdiction.
    pub async fn statistics(
        &self,
        jurisdiction_path: &str,
        from: NaiveDate,
        to: NaiveDate,
        grouping: StatsGrouping,
        province_code: Option<&str>,
    ) -> Result<Vec<StatsRow>, sqlx::Error> {
        let key = match grouping {
            StatsGrouping::Province => "u.province_code",
            StatsGrouping::District => "u.district_code",
            StatsGrouping::Unit => "u.code",
        };
        let sum = |cond: &str| format!("CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS BIGINT)");
        let mut columns = vec![
            "CAST(COUNT(*) AS BIGINT)".to_owned(),
            sum("r.kind = 'FIRST_TIME'"),
            sum("r.kind = 'RE_REGISTRATION'"),
            sum("r.status = 'ISSUED'"),
            sum("r.status = 'PENDING'"),
            sum("r.status = 'REJECTED'"),
            sum("r.status = 'NOT_ELIGIBLE'"),
        ];
        for reason in IneligibilityReason::ALL {
            columns.push(sum(&format!(
                "r.status = 'NOT_ELIGIBLE' AND (r.reasons & {}) <> 0",
                reason.bit()
            )));
        }
        let mut sql = format!(
            "SELECT {key} AS g, {} FROM registrations r JOIN units u ON u.code = r.unit_code \
             WHERE r.registered_on >= $1 AND r.registered_on <= $2 AND substr(u.path, 1, CAST($3 AS INTEGER)) = $4",
            columns.join(", ")
        );
        if province_code.is_some() {
            sql.push_str(" AND u.province_code = $5");
        }
        sql.push_str(&format!(" GROUP BY {key} ORDER BY {key}"));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from.format("%Y-%m-%d").to_string())
            .bind(to.format("%Y-%m-%d").to_string())
            .bind(jurisdiction_path.chars().count() as i64)
            .bind(jurisdiction_path.to_owned());
        if let Some(p) = province_code {
            query = query.bind(p.to_owned());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let mut counts = [0i64; 12];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = row.try_get::<Option<i64>, _>(i + 1)?.unwrap_or(0);
                }
                Ok(StatsRow {
                    group: row.try_get(0)?,
                    counts,
                })
            })
            .collect()
    }

    /// Every registration dated within the range that is or should be numbered (not
    /// NOT_ELIGIBLE), for reconciliation.
    pub async fn reconcile_rows(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<ReconcileRow>, sqlx::Error> {
        let rows: Vec<(String, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT r.id, r.status, r.personal_id, \
             (SELECT COUNT(*) FROM outbox o WHERE o.registration_id = r.id) AS queued, r.updated_at_ms \
             FROM registrations r WHERE r.registered_on >= $1 AND r.registered_on <= $2 AND r.status <> 'NOT_ELIGIBLE' \
             ORDER BY r.id",
        )
        .bind(from.format("%Y-%m-%d").to_string())
        .bind(to.format("%Y-%m-%d").to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, status, personal_id, queued, updated_at_ms)| {
                Ok(ReconcileRow {
                    id: Uuid::parse_str(&id).map_err(decode_err)?,
                    status: PersonalIdStatus::from_str_opt(&status)
                        .ok_or_else(|| decode_err("unknown status"))?,
                    personal_id,
                    queued: queued > 0,
                    updated_at_ms,
                })
            })
            .collect()
    }

    /// Counts registrations by status (for metrics). Only unsettled registrations are
    /// indexed by status on SQLite (migration 5): the issued ones are the total less those,
    /// counted in one statement so that both come from one snapshot. The total counts a
    /// NOT NULL column so that SQLite scans that column's narrow index (a bare `COUNT(*)`
    /// in a compound picked a wider one).
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, CAST(COUNT(*) AS BIGINT) FROM registrations \
             WHERE status <> 'ISSUED' GROUP BY status \
             UNION ALL SELECT '', CAST(COUNT(registered_on) AS BIGINT) FROM registrations",
        )
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = rows
            .iter()
            .filter(|(s, _)| s.is_empty())
            .map(|(_, n)| n)
            .sum();
        let mut counts: Vec<(String, i64)> =
            rows.into_iter().filter(|(s, _)| !s.is_empty()).collect();
        let unsettled: i64 = counts.iter().map(|(_, n)| n).sum();
        counts.push(("ISSUED".to_owned(), total - unsettled));
        Ok(counts)
    }
}

/// The outbox, in the order of `outbox_row`'s values.
pub(crate) const OUTBOX: Table = table!(
    "outbox",
    [
        "issue_key",
        "registration_id",
        "kind",
        "payload",
        "attempts",
        "next_attempt_ms",
        "lease_until_ms",
        "created_at_ms",
        "lease_owner",
    ]
);

/// The registrations, in the order of `insert_registrations_tx`'s values.
const REGISTRATIONS: Table = table!(
    "registrations",
    [
        "id",
        "origin_unit_code",
        "request_id",
        "content_hash",
        "unit_code",
        "official_id",
        "reg_year",
        "registration_number",
        "book_number",
        "registered_on",
        "kind",
        "status",
        "reasons",
        "rule_version",
        "issue_key",
        "issue_generation",
        "record",
        "created_at_ms",
        "updated_at_ms",
    ]
);

/// An outbox row, due now; with `lease`, already leased to that relay (attempts = 1 and
/// the lease taken, as a claim would have left it).
fn outbox_row(
    key: &str,
    registration_id: &str,
    kind: OutboundKind,
    payload: Vec<u8>,
    now: i64,
    lease: Option<&Lease>,
) -> Vec<Val> {
    vec![
        Val::S(key.to_owned()),
        Val::S(registration_id.to_owned()),
        Val::S(kind.as_str().to_owned()),
        Val::B(payload),
        Val::I(i64::from(lease.is_some())),
        Val::I(now),
        Val::I(lease.map_or(0, |l| l.until_ms)),
        Val::I(now),
        Val::OS(lease.map(|l| l.owner.clone())),
    ]
}

pub(crate) async fn insert_outbox(
    wtx: &mut super::audit::WriteTx,
    key: &str,
    registration_id: &str,
    kind: OutboundKind,
    payload: Vec<u8>,
    now: i64,
) -> Result<(), sqlx::Error> {
    wtx.insert(
        &OUTBOX,
        vec![outbox_row(key, registration_id, kind, payload, now, None)],
    )
    .await
}

/// Outbox rows written already leased to this process's relay, which gets them in memory
/// right after the commit: no poll and no lease round trip on the way to the population
/// registry. The lease keeps them safe across crashes and replicas exactly like a claimed
/// row: if they are not answered before it expires, any relay claims them again.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The relay's owner name.
    pub owner: String,
    /// Lease end (ms since the epoch).
    pub until_ms: i64,
}

/// What one group commit wrote.
#[derive(Debug, Default)]
pub struct GroupWritten {
    /// One per registration row, in order.
    pub outcomes: Vec<(InsertOutcome, Option<Registration>)>,
    /// Outbox rows leased in the commit.
    pub leased: Vec<Outbound>,
    /// Registrations settled by the relay outcomes.
    pub settled: Vec<(Uuid, Settlement)>,
}

/// Who may correct a registration in its current unit, moving it to the other one if any.
pub type CorrectionCheck<'a> =
    dyn Fn(&Unit, Option<&Unit>) -> Result<(), RegistryError> + Send + Sync + 'a;

type Inserted = (Vec<(InsertOutcome, Option<Registration>)>, Vec<Outbound>);

/// Inserts a group of registrations in the caller's transaction (with their audit
/// entries and outbox rows), returning one outcome per row in order, and the stored
/// registration for rows created now. Requests already stored are answered from the
/// database.
pub(crate) async fn insert_registrations_tx<T: GroupTx>(
    wtx: &mut T,
    rows: &[NewRow],
    lease: Option<&Lease>,
) -> Result<Inserted, sqlx::Error> {
    let now = now_ms();

    // 1. Requests stored before (retries).
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (row.unit.code.as_str(), row.birth.request_id.as_str()))
        .collect();
    let mut stored: HashMap<(String, String), (String, String)> = wtx
        .stored_requests(&keys)
        .await?
        .into_iter()
        .map(|s| ((s.unit_code, s.request_id), (s.id, s.content_hash)))
        .collect();
    // 2. Decide each row; new rows get their number per unit and year, gapless.
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; rows.len()];
    let mut fresh: Vec<(usize, String)> = Vec::new();
    let mut per_book: HashMap<(String, i32), Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let key = (
            row.unit.code.as_str().to_owned(),
            row.birth.request_id.as_str().to_owned(),
        );
        let hash = row.content_hash.clone();
        if let Some((id, stored_hash)) = stored.get(&key) {
            outcomes[i] = Some(if *stored_hash == hash {
                InsertOutcome::Existing(Uuid::parse_str(id).map_err(decode_err)?)
            } else {
                InsertOutcome::Conflict
            });
            continue;
        }
        stored.insert(key.clone(), (row.id.to_string(), hash.clone()));
        fresh.push((i, hash));
        per_book
            .entry((key.0, row.birth.registered_on.year()))
            .or_default()
            .push(i);
    }
    let mut numbers: HashMap<usize, i64> = HashMap::new();
    let mut books: Vec<_> = per_book.into_iter().collect();
    // A fixed order of counter updates keeps concurrent writers from deadlocking.
    books.sort_by(|a, b| a.0.cmp(&b.0));
    let counts: Vec<(&str, i64, i64)> = books
        .iter()
        .map(|((unit, year), members)| (unit.as_str(), i64::from(*year), members.len() as i64))
        .collect();
    let lasts = wtx.advance_counters(&counts).await?;
    for ((_, members), last) in books.iter().zip(lasts) {
        let k = members.len() as i64;
        for (j, i) in members.iter().enumerate() {
            numbers.insert(*i, last - k + 1 + j as i64);
        }
    }
    // 3. Registrations, outbox rows and audit entries, multi-row.
    let mut registration_rows = Vec::with_capacity(fresh.len());
    let mut outbox_rows = Vec::new();
    let mut leased = Vec::new();
    let mut created = HashMap::new();
    for (i, hash) in fresh {
        let row = &rows[i];
        let number = numbers[&i];
        let year = row.birth.registered_on.year();
        let status = if row.decision.is_eligible() {
            PersonalIdStatus::Pending
        } else {
            PersonalIdStatus::NotEligible
        };
        let registration = Registration {
            id: row.id,
            request_id: row.birth.request_id.as_str().to_owned(),
            unit_code: row.unit.code.clone(),
            register_unit_code: row.unit.code.clone(),
            official_id: row.official_id.clone(),
            registration_number: number,
            book_number: book_number(number, year),
            registered_on: row.birth.registered_on,
            record: row.birth.record.clone(),
            status,
            personal_id: None,
            reasons: row.decision.reasons.clone(),
            rule_version: row.decision.rule_version.to_owned(),
            rejection_reason: None,
            cancelled_personal_ids: Vec::new(),
            created_at_ms: now,
            updated_at_ms: now,
            issued_at_ms: None,
        };
        let id = row.id.to_string();
        let issue_key = row.decision.is_eligible().then(|| id.clone());
        let mask = IneligibilityReason::mask(&registration.reasons);
        registration_rows.push(vec![
            Val::S(id.clone()),
            Val::S(row.unit.code.as_str().to_owned()),
            Val::S(registration.request_id.clone()),
            Val::S(hash),
            Val::S(row.unit.code.as_str().to_owned()),
            Val::S(row.official_id.clone()),
            Val::I(i64::from(year)),
            Val::I(number),
            Val::S(registration.book_number.clone()),
            Val::S(registration.registered_on.format("%Y-%m-%d").to_string()),
            Val::S(registration.record.kind.as_str().to_owned()),
            Val::S(status.as_str().to_owned()),
            Val::I(mask),
            Val::S(registration.rule_version.clone()),
            Val::OS(issue_key.clone()),
            Val::I(0),
            Val::S(row.record_json.clone()),
            Val::I(now),
            Val::I(now),
        ]);
        if let Some(key) = issue_key {
            let payload = encode::issue_request(&registration, &row.unit, row.numbering, &key);
            outbox_rows.push(outbox_row(
                &key,
                &id,
                OutboundKind::Issue,
                payload.clone(),
                now,
                lease,
            ));
            if lease.is_some() {
                leased.push(Outbound {
                    key: key.clone(),
                    registration_id: row.id,
                    kind: OutboundKind::Issue,
                    payload,
                    attempts: 1,
                });
            }
        }
        wtx.chain().append(AuditEntry {
            actor: row.official_id.clone(),
            action: "registration.create",
            entity: format!("registration/{id}"),
            details: serde_json::json!({
                "unit": row.unit.code.as_str(), "number": number, "status": status.as_str(),
                "reasons": mask, "rule": registration.rule_version,
            }),
        });
        outcomes[i] = Some(InsertOutcome::Created(row.id));
        created.insert(i, registration);
    }
    wtx.insert(&REGISTRATIONS, registration_rows).await?;
    wtx.insert(&OUTBOX, outbox_rows).await?;
    Ok((
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| (o.unwrap_or(InsertOutcome::Conflict), created.remove(&i)))
            .collect(),
        leased,
    ))
}
