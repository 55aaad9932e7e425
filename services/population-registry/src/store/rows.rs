//! Mapping between table rows and domain types. Stored values were valid
//! when written; a row that no longer parses is corruption, never input.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::domain::birth::{
    BirthRecord, BookNumber, Ethnicity, Nationality, OptEthnicity, OptText200, Parent, PersonName,
    RegistrationRef, RequestId, Text200, UnitCode,
};
use crate::domain::citizen::{Citizen, CitizenStatus, Issuance};
use crate::domain::errors::StoreError;
use crate::domain::personal_id::{PersonalId, ProvinceCode, Sex};

use super::classify;

pub(crate) const STATUS_ACTIVE: i64 = 1;
pub(crate) const STATUS_CANCELLED: i64 = 2;
pub(crate) const KIND_ISSUE: i64 = 1;
pub(crate) const KIND_REISSUE: i64 = 2;

/// Columns `citizen()` reads, in order.
pub(crate) const CITIZEN_COLUMNS: &str = "personal_id, request_id, status, issue_time, cancel_time, \
    replaced_by, replaces, full_name, sex, date_of_birth, pob_description, pob_province, \
    registration_province, home_town, ethnicity, nationality, father, mother, unit_code, \
    registration_number, book_number, registration_date";

/// Columns of a new citizen row, in the order `bind_new` binds them.
pub(crate) const INSERT_COLUMNS: &str = "personal_id, request_id, content_hash, kind, status, \
    issue_time, replaces, full_name, sex, date_of_birth, pob_description, pob_province, \
    registration_province, home_town, ethnicity, nationality, father, mother, unit_code, \
    registration_number, book_number, registration_date, dup_key, register_key";
pub(crate) const INSERT_COLUMN_COUNT: usize = 24;

pub(crate) fn corrupt(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Unexpected(anyhow::anyhow!("corrupt row: {reason}"))
}

pub(crate) fn id_i64(id: PersonalId) -> i64 {
    // 12 digits always fit.
    i64::try_from(id.as_u64()).unwrap_or(i64::MAX)
}

pub(crate) fn id_from_i64(v: i64) -> Result<PersonalId, StoreError> {
    u64::try_from(v)
        .ok()
        .and_then(|v| PersonalId::from_u64(v).ok())
        .ok_or_else(|| corrupt("personal_id"))
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt("timestamp"))
}

pub(crate) fn sex_code(sex: Sex) -> i64 {
    match sex {
        Sex::Male => 1,
        Sex::Female => 2,
    }
}

/// A parent as stored (JSON column).
#[derive(Serialize, Deserialize)]
pub(crate) struct ParentRow {
    full_name: String,
    year_of_birth: i32,
    ethnicity: String,
    nationality: String,
    residence: String,
    personal_id: String,
}

pub(crate) fn parent_json(p: &Option<Parent>) -> Option<String> {
    p.as_ref().map(|p| {
        serde_json::to_string(&ParentRow {
            full_name: p.full_name.as_str().to_owned(),
            year_of_birth: p.year_of_birth.unwrap_or(0),
            ethnicity: p.ethnicity.as_str().to_owned(),
            nationality: p
                .nationality
                .as_ref()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            residence: p.residence.as_str().to_owned(),
            personal_id: p.personal_id.map(|id| id.to_string()).unwrap_or_default(),
        })
        .unwrap_or_default()
    })
}

fn parent(json: Option<String>) -> Result<Option<Parent>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let row: ParentRow = serde_json::from_str(&json).map_err(|e| {
        // serde_json quotes the offending value, which here is personal data.
        corrupt(format_args!(
            "parent unreadable ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(Some(Parent {
        full_name: PersonName::parse(&row.full_name).map_err(corrupt)?,
        year_of_birth: (row.year_of_birth != 0).then_some(row.year_of_birth),
        ethnicity: OptEthnicity::parse(&row.ethnicity).map_err(corrupt)?,
        nationality: match row.nationality.as_str() {
            "" => None,
            n => Some(Nationality::parse(n).map_err(corrupt)?),
        },
        residence: OptText200::parse(&row.residence).map_err(corrupt)?,
        personal_id: match row.personal_id.as_str() {
            "" => None,
            id => Some(PersonalId::parse(id).map_err(corrupt)?),
        },
    }))
}

fn date(s: &str) -> Result<NaiveDate, StoreError> {
    s.parse().map_err(corrupt)
}

fn get<T>(row: &AnyRow, idx: usize) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(idx).map_err(classify)
}

fn registration(row: &AnyRow, first: usize) -> Result<RegistrationRef, StoreError> {
    Ok(RegistrationRef {
        unit_code: UnitCode::parse(&get::<String>(row, first)?).map_err(corrupt)?,
        registration_number: get(row, first + 1)?,
        book_number: BookNumber::parse(&get::<String>(row, first + 2)?).map_err(corrupt)?,
        registration_date: date(&get::<String>(row, first + 3)?)?,
    })
}

fn status(v: i64) -> Result<CitizenStatus, StoreError> {
    match v {
        STATUS_ACTIVE => Ok(CitizenStatus::Active),
        STATUS_CANCELLED => Ok(CitizenStatus::Cancelled),
        _ => Err(corrupt("status")),
    }
}

fn opt_id(v: Option<i64>) -> Result<Option<PersonalId>, StoreError> {
    v.map(id_from_i64).transpose()
}

/// A row selected with `CITIZEN_COLUMNS`.
pub(crate) fn citizen(row: &AnyRow) -> Result<Citizen, StoreError> {
    let pob_province: String = get(row, 11)?;
    let record = BirthRecord {
        full_name: PersonName::parse(&get::<String>(row, 7)?).map_err(corrupt)?,
        sex: match get::<i64>(row, 8)? {
            1 => Sex::Male,
            2 => Sex::Female,
            _ => return Err(corrupt("sex")),
        },
        date_of_birth: date(&get::<String>(row, 9)?)?,
        place_of_birth: Text200::parse(&get::<String>(row, 10)?).map_err(corrupt)?,
        place_of_birth_province: match pob_province.as_str() {
            "" => None,
            p => Some(ProvinceCode::parse(p).map_err(corrupt)?),
        },
        registration_province: ProvinceCode::parse(&get::<String>(row, 12)?).map_err(corrupt)?,
        home_town: Text200::parse(&get::<String>(row, 13)?).map_err(corrupt)?,
        ethnicity: Ethnicity::parse(&get::<String>(row, 14)?).map_err(corrupt)?,
        nationality: Nationality::parse(&get::<String>(row, 15)?).map_err(corrupt)?,
        father: parent(get(row, 16)?)?,
        mother: parent(get(row, 17)?)?,
        registration: registration(row, 18)?,
    };
    Ok(Citizen {
        personal_id: id_from_i64(get(row, 0)?)?,
        request_id: RequestId::parse(&get::<String>(row, 1)?).map_err(corrupt)?,
        status: status(get(row, 2)?)?,
        issue_time: from_micros(get(row, 3)?)?,
        cancel_time: get::<Option<i64>>(row, 4)?.map(from_micros).transpose()?,
        replaced_by: opt_id(get(row, 5)?)?,
        replaces: opt_id(get(row, 6)?)?,
        record,
    })
}

/// A row of the issuance listing.
pub(crate) fn issuance(row: &AnyRow) -> Result<Issuance, StoreError> {
    Ok(Issuance {
        personal_id: id_from_i64(get(row, 0)?)?,
        request_id: RequestId::parse(&get::<String>(row, 1)?).map_err(corrupt)?,
        status: status(get(row, 2)?)?,
        replaced_by: opt_id(get(row, 3)?)?,
        issue_time: from_micros(get(row, 4)?)?,
        registration: registration(row, 5)?,
    })
}
