//! Units and official accounts: imports, token lookups, revocation.

use std::collections::HashMap;

use anyhow::{Context, bail};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{AuditEntry, Store, now_ms};
use crate::domain::model::{Caller, ProvinceCode, Role, Unit, UnitCode, UnitLevel};

/// One unit to import.
#[derive(Clone, Debug)]
pub struct UnitInput {
    /// Code.
    pub code: UnitCode,
    /// Name.
    pub name: String,
    /// Level.
    pub level: UnitLevel,
    /// Province code.
    pub province_code: ProvinceCode,
    /// Parent, `None` at the top.
    pub parent_code: Option<UnitCode>,
    /// Active.
    pub active: bool,
}

/// An official account as listed (never the token or its hash).
#[derive(Clone, Debug)]
pub struct OfficialRow {
    /// Id.
    pub id: String,
    /// Unit code.
    pub unit_code: String,
    /// Role.
    pub role: String,
    /// Not revoked.
    pub active: bool,
}

pub(crate) fn unit_from_row(row: &AnyRow) -> Result<Unit, sqlx::Error> {
    let bad = |e: String| sqlx::Error::Decode(e.into());
    let parent: Option<String> = row.try_get("parent_code")?;
    Ok(Unit {
        code: UnitCode::parse(&row.try_get::<String, _>("code")?).map_err(bad)?,
        name: row.try_get("name")?,
        level: UnitLevel::parse(&row.try_get::<String, _>("level")?).map_err(bad)?,
        province_code: ProvinceCode::parse(&row.try_get::<String, _>("province_code")?)
            .map_err(bad)?,
        parent_code: parent
            .filter(|p| !p.is_empty())
            .map(|p| UnitCode::parse(&p))
            .transpose()
            .map_err(bad)?,
        active: row.try_get::<i64, _>("active")? != 0,
        path: row.try_get("path")?,
    })
}

impl Store {
    /// Inserts or updates units, recomputing every unit's path and district (a unit may
    /// have moved). Parents must exist in the database or in the same import.
    pub async fn import_units(&self, units: &[UnitInput], actor: &str) -> anyhow::Result<usize> {
        let mut wtx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT code, name, level, province_code, parent_code, active, path FROM units",
        )
        .fetch_all(&mut *wtx.tx)
        .await?;
        let mut all: HashMap<String, (Option<String>, UnitLevel)> = HashMap::new();
        for row in &existing {
            let u = unit_from_row(row)?;
            all.insert(
                u.code.as_str().to_owned(),
                (u.parent_code.map(|p| p.as_str().to_owned()), u.level),
            );
        }
        for u in units {
            all.insert(
                u.code.as_str().to_owned(),
                (
                    u.parent_code.as_ref().map(|p| p.as_str().to_owned()),
                    u.level,
                ),
            );
        }
        let mut paths: HashMap<String, (String, String)> = HashMap::new();
        for code in all.keys() {
            let mut chain = vec![code.clone()];
            let mut cursor = code.clone();
            let mut district = if all[code].1 == UnitLevel::District {
                Some(code.clone())
            } else {
                None
            };
            while let Some(Some(parent)) = all.get(&cursor).map(|(p, _)| p.clone()) {
                let Some((_, level)) = all.get(&parent) else {
                    bail!("unit {cursor}: parent {parent} does not exist")
                };
                if chain.contains(&parent) || chain.len() > 16 {
                    bail!("unit {code}: the parent chain has a cycle");
                }
                if district.is_none() && *level == UnitLevel::District {
                    district = Some(parent.clone());
                }
                chain.push(parent.clone());
                cursor = parent;
            }
            chain.reverse();
            let path = format!("/{}/", chain.join("/"));
            paths.insert(
                code.clone(),
                (path, district.unwrap_or_else(|| code.clone())),
            );
        }
        for (code, (path, district)) in &paths {
            if let Some(u) = units.iter().find(|u| u.code.as_str() == code) {
                sqlx::query(
                    "INSERT INTO units (code, name, level, province_code, parent_code, active, path, district_code) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (code) DO UPDATE SET name = excluded.name, level = excluded.level, \
                     province_code = excluded.province_code, parent_code = excluded.parent_code, \
                     active = excluded.active, path = excluded.path, district_code = excluded.district_code",
                )
                .bind(code.clone())
                .bind(u.name.clone())
                .bind(u.level.as_str())
                .bind(u.province_code.as_str().to_owned())
                .bind(u.parent_code.as_ref().map(|p| p.as_str().to_owned()))
                .bind(i64::from(u.active))
                .bind(path.clone())
                .bind(district.clone())
                .execute(&mut *wtx.tx)
                .await?;
            } else {
                sqlx::query("UPDATE units SET path = $1, district_code = $2 WHERE code = $3")
                    .bind(path.clone())
                    .bind(district.clone())
                    .bind(code.clone())
                    .execute(&mut *wtx.tx)
                    .await?;
            }
        }
        wtx.audit(AuditEntry {
            actor: actor.to_owned(),
            action: "units.import",
            entity: "units".into(),
            details: serde_json::json!({ "codes": units.iter().map(|u| u.code.as_str()).collect::<Vec<_>>() }),
        });
        wtx.commit().await?;
        Ok(units.len())
    }

    /// A unit by code.
    pub async fn unit(&self, code: &str) -> Result<Option<Unit>, sqlx::Error> {
        let row = sqlx::query("SELECT code, name, level, province_code, parent_code, active, path FROM units WHERE code = $1")
            .bind(code.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(unit_from_row).transpose()
    }

    /// Every unit (for names in statistics).
    pub async fn units(&self) -> Result<Vec<Unit>, sqlx::Error> {
        let rows = sqlx::query("SELECT code, name, level, province_code, parent_code, active, path FROM units ORDER BY code")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(unit_from_row).collect()
    }

    /// Creates official accounts (id, unit, role, token hash) in one transaction.
    pub async fn create_officials(
        &self,
        officials: &[(String, UnitCode, Role, String)],
        actor: &str,
    ) -> anyhow::Result<()> {
        let mut wtx = self.begin_write().await?;
        for (id, unit, role, token_hash) in officials {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT code FROM units WHERE code = $1")
                    .bind(unit.as_str().to_owned())
                    .fetch_optional(&mut *wtx.tx)
                    .await?;
            if exists.is_none() {
                bail!("official {id}: unit {unit} does not exist (import units first)");
            }
            sqlx::query(
                "INSERT INTO officials (id, unit_code, role, token_hash, active, created_at_ms) VALUES ($1, $2, $3, $4, 1, $5)",
            )
            .bind(id.clone())
            .bind(unit.as_str().to_owned())
            .bind(role.as_str())
            .bind(token_hash.clone())
            .bind(now_ms())
            .execute(&mut *wtx.tx)
            .await
            .with_context(|| format!("creating official {id}"))?;
            wtx.audit(AuditEntry {
                actor: actor.to_owned(),
                action: "official.create",
                entity: format!("official/{id}"),
                details: serde_json::json!({ "unit": unit.as_str(), "role": role.as_str() }),
            });
        }
        wtx.commit().await?;
        Ok(())
    }

    /// Revokes an account; false when it does not exist.
    pub async fn revoke_official(&self, id: &str, actor: &str) -> anyhow::Result<bool> {
        let revoke =
            sqlx::query("UPDATE officials SET active = 0, revoked_at_ms = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id.to_owned());
        self.change_official(id, actor, "official.revoke", revoke)
            .await
    }

    /// Gives an active account a new token (by its hash); the old one is refused from
    /// now on (within `auth.token_cache_ms` where a replica has it cached). False when no
    /// active account has the id: a revoked account stays revoked.
    pub async fn rotate_official_token(
        &self,
        id: &str,
        token_hash: &str,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let rotate =
            sqlx::query("UPDATE officials SET token_hash = $1 WHERE id = $2 AND active = 1")
                .bind(token_hash.to_owned())
                .bind(id.to_owned());
        self.change_official(id, actor, "official.token_rotate", rotate)
            .await
    }

    /// Runs `update` on account `id` and, when it changed a row, appends `action` to the
    /// audit chain in the same transaction; false when nothing matched.
    async fn change_official<'q>(
        &self,
        id: &str,
        actor: &str,
        action: &'static str,
        update: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> anyhow::Result<bool> {
        let mut wtx = self.begin_write().await?;
        if update.execute(&mut *wtx.tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        wtx.audit(AuditEntry {
            actor: actor.to_owned(),
            action,
            entity: format!("official/{id}"),
            details: serde_json::json!({}),
        });
        wtx.commit().await?;
        Ok(true)
    }

    /// Every account, without secrets.
    pub async fn officials(&self) -> Result<Vec<OfficialRow>, sqlx::Error> {
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as("SELECT id, unit_code, role, active FROM officials ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, unit_code, role, active)| OfficialRow {
                id,
                unit_code,
                role,
                active: active != 0,
            })
            .collect())
    }

    /// The account holding a token (by the token's SHA-256 hash), with its unit.
    pub async fn caller_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Caller>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT o.id AS official_id, o.role AS role, o.active AS official_active, \
             u.code, u.name, u.level, u.province_code, u.parent_code, u.active, u.path \
             FROM officials o JOIN units u ON u.code = o.unit_code WHERE o.token_hash = $1",
        )
        .bind(token_hash.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role = Role::parse(&row.try_get::<String, _>("role")?)
            .map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok(Some(Caller {
            official_id: row.try_get("official_id")?,
            role,
            active: row.try_get::<i64, _>("official_active")? != 0,
            unit: unit_from_row(&row)?,
        }))
    }
}
