//! Proto <-> domain. Incoming messages are parsed into domain types with the
//! exact field path of each violation; outgoing domain values become proto.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc};
use contracts::google::r#type::Date;
use contracts::mps::population::v1 as pb;

use crate::domain::birth::{
    BirthInput, BirthRecord, BookNumber, Parent, ParentInput, Reason, RegistrationInput,
    RegistrationRef, RequestId, UnitCode, Violation, Violations,
};
use crate::domain::citizen::{
    Citizen, CitizenStatus, DateRange, IdState, Issuance, IssueRequest, Issued, RegistrationQuery,
    ReissueRequest, Reissued,
};
use crate::domain::personal_id::{PersonalId, ProvinceCode, Sex};
use crate::domain::province::ProvinceTable;

/// How far a caller's clock may run ahead of this host's. The civil registry dates a
/// registration by its own clock; just after midnight, a clock here a moment behind would
/// otherwise refuse that date as in the future, and the birth would stay REJECTED until an
/// official sent it again.
const CLOCK_SKEW_ALLOWANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The reference for "not in the future": today in Vietnam (UTC+7) on a clock
/// [`CLOCK_SKEW_ALLOWANCE`] ahead of this one.
pub fn today() -> NaiveDate {
    latest_today_at(Utc::now())
}

fn latest_today_at(now: DateTime<Utc>) -> NaiveDate {
    let offset = FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| unreachable!("valid offset"));
    (now + CLOCK_SKEW_ALLOWANCE)
        .with_timezone(&offset)
        .date_naive()
}

/// Outer `None` = missing, inner `None` = not a real calendar date.
fn date(d: Option<&Date>) -> Option<Option<NaiveDate>> {
    d.map(|d| {
        let month = u32::try_from(d.month).ok()?;
        let day = u32::try_from(d.day).ok()?;
        NaiveDate::from_ymd_opt(d.year, month, day)
    })
}

fn parent_input(p: &pb::Parent) -> ParentInput<'_> {
    ParentInput {
        full_name: &p.full_name,
        year_of_birth: p.year_of_birth,
        ethnicity: &p.ethnicity,
        nationality: &p.nationality,
        residence: &p.residence,
        personal_id: &p.personal_id,
    }
}

fn sex(raw: i32) -> Option<Sex> {
    match pb::Sex::try_from(raw).ok()? {
        pb::Sex::Male => Some(Sex::Male),
        pb::Sex::Female => Some(Sex::Female),
        pb::Sex::Unspecified => None,
    }
}

/// Parses a `BirthRecord` message found at `path`.
pub fn birth(
    b: Option<&pb::BirthRecord>,
    path: &str,
    provinces: &ProvinceTable,
) -> Result<BirthRecord, Vec<Violation>> {
    let Some(b) = b else {
        return Err(vec![Violation::new(path, "is required")]);
    };
    let input = BirthInput {
        full_name: &b.full_name,
        sex: sex(b.sex),
        date_of_birth: date(b.date_of_birth.as_ref()),
        place_of_birth: b
            .place_of_birth
            .as_ref()
            .map(|p| (p.description.as_str(), p.province_code.as_str())),
        registration_province_code: &b.registration_province_code,
        home_town: &b.home_town,
        ethnicity: &b.ethnicity,
        nationality: &b.nationality,
        father: b.father.as_ref().map(parent_input),
        mother: b.mother.as_ref().map(parent_input),
        registration: b.registration.as_ref().map(|r| RegistrationInput {
            unit_code: &r.unit_code,
            registration_number: r.registration_number,
            book_number: &r.book_number,
            registration_date: date(r.registration_date.as_ref()),
        }),
    };
    BirthRecord::parse(&input, provinces, today())
        .map_err(|v| v.into_iter().map(|v| v.under(path)).collect())
}

/// Parses an issuance; paths are relative to `IssuePersonalIdRequest`.
pub fn issue_request(
    req: &pb::IssuePersonalIdRequest,
    provinces: &ProvinceTable,
) -> Result<IssueRequest, Vec<Violation>> {
    let mut v = Violations::default();
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    let record = record_for_key(&mut v, req.birth.as_ref(), "birth", provinces);
    let value = match (request_id, record) {
        (Some(id), Some((rec, refused_if_new))) => Some(IssueRequest {
            refused_if_new,
            ..IssueRequest::new(id, rec)
        }),
        (_, record) => refuse_whole(&mut v, record),
    };
    v.finish(value)
}

/// The birth record at `path`, with the violations that refuse it as new content when
/// only a province code's validity period does: the record read as the key stored it,
/// should an earlier post-merger rule have served the key (the writer decides). Other
/// violations go to `v`.
fn record_for_key(
    v: &mut Violations,
    b: Option<&pb::BirthRecord>,
    path: &str,
    provinces: &ProvinceTable,
) -> Option<(BirthRecord, Option<Vec<Violation>>)> {
    match birth(b, path, provinces) {
        Ok(record) => Some((record, None)),
        Err(strict) => match birth(b, path, &provinces.without_periods()) {
            Ok(record) => Some((record, Some(strict))),
            Err(_) => {
                for x in strict {
                    v.push(&x.field, x.description);
                }
                None
            }
        },
    }
}

/// A request with a bad field besides its record is refused whole: every violation,
/// the record's validity-period ones included.
fn refuse_whole<T>(
    v: &mut Violations,
    record: Option<(BirthRecord, Option<Vec<Violation>>)>,
) -> Option<T> {
    for x in record
        .and_then(|(_, refused)| refused)
        .into_iter()
        .flatten()
    {
        v.push(&x.field, x.description);
    }
    None
}

/// Parses a re-issue.
pub fn reissue_request(
    req: &pb::ReissuePersonalIdRequest,
    provinces: &ProvinceTable,
) -> Result<ReissueRequest, Vec<Violation>> {
    let mut v = Violations::default();
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    let old = v.check(
        "personal_id",
        PersonalId::parse(&req.personal_id).map_err(|e| e.to_string()),
    );
    let record = record_for_key(
        &mut v,
        req.corrected_birth.as_ref(),
        "corrected_birth",
        provinces,
    );
    let reason = v.check("reason", Reason::parse(&req.reason));
    let value = match (request_id, old, record, reason) {
        (Some(id), Some(old), Some((rec, refused_if_new)), Some(reason)) => Some(ReissueRequest {
            refused_if_new,
            ..ReissueRequest::new(id, old, rec, reason)
        }),
        (_, _, record, _) => refuse_whole(&mut v, record),
    };
    v.finish(value)
}

/// Parses a number in field `field`.
pub fn personal_id(raw: &str, field: &str) -> Result<PersonalId, Vec<Violation>> {
    PersonalId::parse(raw).map_err(|e| vec![Violation::new(field, e.to_string())])
}

/// Parses a FindCitizenByRegistration request.
pub fn registration_query(
    req: &pb::FindCitizenByRegistrationRequest,
) -> Result<RegistrationQuery, Vec<Violation>> {
    if !req.request_id.is_empty() {
        return RequestId::parse(&req.request_id)
            .map(RegistrationQuery::RequestId)
            .map_err(|e| vec![Violation::new("request_id", e)]);
    }
    let mut v = Violations::default();
    let unit_code = v.check("unit_code", UnitCode::parse(&req.unit_code));
    let book_number = v.check("book_number", BookNumber::parse(&req.book_number));
    let number = v.check(
        "registration_number",
        if req.registration_number >= 1 {
            Ok(req.registration_number)
        } else {
            Err("must be at least 1 (or give request_id)".into())
        },
    );
    let value = (|| {
        Some(RegistrationQuery::Entry {
            unit_code: unit_code?,
            book_number: book_number?,
            registration_number: number?,
        })
    })();
    v.finish(value)
}

/// Parses a required, ordered date range.
pub fn date_range(from: Option<&Date>, to: Option<&Date>) -> Result<DateRange, Vec<Violation>> {
    let mut v = Violations::default();
    let mut one = |field: &str, d: Option<&Date>| {
        v.check(
            field,
            match date(d) {
                None => Err("is required".to_owned()),
                Some(None) => Err("must be a real calendar date".to_owned()),
                Some(Some(d)) => Ok(d),
            },
        )
    };
    let from = one("registered_from", from);
    let to = one("registered_to", to);
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        v.push("registered_to", "must not be before registered_from");
    }
    let value = from.zip(to).map(|(from, to)| DateRange { from, to });
    v.finish(value)
}

/// Most codes a province filter may name (there are 63, and the 34 of the merger among them).
const MAX_PROVINCE_FILTER: usize = 100;

/// Parses the province filter of GetIssuanceStatistics.
pub fn province_filter(
    codes: &[String],
    provinces: &ProvinceTable,
) -> Result<Vec<ProvinceCode>, Vec<Violation>> {
    if codes.len() > MAX_PROVINCE_FILTER {
        // Refused as a whole: a violation per code would make the error as large as the
        // request.
        return Err(vec![Violation::new(
            "province_codes",
            format!("at most {MAX_PROVINCE_FILTER} codes"),
        )]);
    }
    let mut v = Violations::default();
    let parsed: Vec<Option<ProvinceCode>> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            v.check(
                &format!("province_codes[{i}]"),
                provinces.known(c).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let value: Option<Vec<ProvinceCode>> = parsed.into_iter().collect();
    v.finish(value)
}

/// Page size (0 = 100) and the number after which the page starts.
pub fn page(page_size: i32, page_token: &str) -> Result<(u32, Option<PersonalId>), Vec<Violation>> {
    let mut v = Violations::default();
    let size = v.check(
        "page_size",
        match page_size {
            0 => Ok(100),
            1..=1000 => Ok(page_size.unsigned_abs()),
            _ => Err("must be within 0..=1000".into()),
        },
    );
    let after = v.check(
        "page_token",
        match page_token {
            "" => Ok(None),
            t => t
                .strip_prefix("after:")
                .and_then(|id| PersonalId::parse(id).ok())
                .map(Some)
                .ok_or_else(|| "is not a token returned by ListIssuances".to_owned()),
        },
    );
    let value = size.zip(after);
    v.finish(value)
}

/// The token of the page after `last`.
pub fn page_token(last: Option<PersonalId>) -> String {
    last.map(|id| format!("after:{id}")).unwrap_or_default()
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn proto_date(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap_or(0),
        day: i32::try_from(d.day()).unwrap_or(0),
    }
}

/// Proto sex.
pub fn proto_sex(sex: Sex) -> pb::Sex {
    match sex {
        Sex::Male => pb::Sex::Male,
        Sex::Female => pb::Sex::Female,
    }
}

fn proto_status(s: CitizenStatus) -> pb::CitizenStatus {
    match s {
        CitizenStatus::Active => pb::CitizenStatus::Active,
        CitizenStatus::Cancelled => pb::CitizenStatus::Cancelled,
    }
}

fn opt_id(id: Option<PersonalId>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn proto_parent(p: &Parent) -> pb::Parent {
    pb::Parent {
        full_name: p.full_name.as_str().to_owned(),
        year_of_birth: p.year_of_birth.unwrap_or(0),
        ethnicity: p.ethnicity.as_str().to_owned(),
        nationality: p
            .nationality
            .as_ref()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        residence: p.residence.as_str().to_owned(),
        personal_id: opt_id(p.personal_id),
    }
}

fn proto_registration(r: &RegistrationRef) -> pb::RegistrationReference {
    pb::RegistrationReference {
        unit_code: r.unit_code.as_str().to_owned(),
        registration_number: r.registration_number,
        book_number: r.book_number.as_str().to_owned(),
        registration_date: Some(proto_date(r.registration_date)),
    }
}

fn proto_birth(b: &BirthRecord) -> pb::BirthRecord {
    pb::BirthRecord {
        full_name: b.full_name.as_str().to_owned(),
        sex: proto_sex(b.sex).into(),
        date_of_birth: Some(proto_date(b.date_of_birth)),
        place_of_birth: Some(pb::PlaceOfBirth {
            description: b.place_of_birth.as_str().to_owned(),
            province_code: b
                .place_of_birth_province
                .map(|p| p.to_string())
                .unwrap_or_default(),
        }),
        registration_province_code: b.registration_province.to_string(),
        home_town: b.home_town.as_str().to_owned(),
        ethnicity: b.ethnicity.as_str().to_owned(),
        nationality: b.nationality.as_str().to_owned(),
        father: b.father.as_ref().map(proto_parent),
        mother: b.mother.as_ref().map(proto_parent),
        registration: Some(proto_registration(&b.registration)),
    }
}

/// Proto citizen.
pub fn citizen(c: &Citizen) -> pb::Citizen {
    pb::Citizen {
        personal_id: c.personal_id.to_string(),
        birth: Some(proto_birth(&c.record)),
        status: proto_status(c.status).into(),
        issue_time: Some(timestamp(c.issue_time)),
        cancel_time: c.cancel_time.map(timestamp),
        replaced_by: opt_id(c.replaced_by),
        replaces: opt_id(c.replaces),
        request_id: c.request_id.as_str().to_owned(),
    }
}

/// Proto issuance response (the deprecated `issue_time` filled beside `issued_at`).
#[allow(deprecated)]
pub fn issued(i: &Issued) -> pb::IssuePersonalIdResponse {
    pb::IssuePersonalIdResponse {
        personal_id: i.personal_id.to_string(),
        newly_issued: i.newly_issued,
        issue_time: Some(timestamp(i.issue_time)),
        duplicate_suspects: i.duplicate_suspects.iter().map(|s| s.to_string()).collect(),
        issued_at: Some(timestamp(i.issue_time)),
    }
}

/// Proto re-issue response (the deprecated `issue_time` filled beside `issued_at`).
#[allow(deprecated)]
pub fn reissued(r: &Reissued) -> pb::ReissuePersonalIdResponse {
    pb::ReissuePersonalIdResponse {
        personal_id: r.personal_id.to_string(),
        cancelled_personal_id: r.cancelled.to_string(),
        newly_issued: r.newly_issued,
        issue_time: Some(timestamp(r.issue_time)),
        issued_at: Some(timestamp(r.issue_time)),
    }
}

/// Proto listing row.
pub fn issuance(i: &Issuance) -> pb::Issuance {
    pb::Issuance {
        personal_id: i.personal_id.to_string(),
        request_id: i.request_id.as_str().to_owned(),
        registration: Some(proto_registration(&i.registration)),
        status: proto_status(i.status).into(),
        replaced_by: opt_id(i.replaced_by),
        issue_time: Some(timestamp(i.issue_time)),
    }
}

/// The ValidatePersonalId answer for a raw string.
pub fn validation(
    raw: &str,
    provinces: &ProvinceTable,
    state: Option<IdState>,
) -> pb::ValidatePersonalIdResponse {
    let invalid = |reason: &str| pb::ValidatePersonalIdResponse {
        valid: false,
        invalid_reason: reason.to_owned(),
        ..Default::default()
    };
    let Ok(id) = PersonalId::parse(raw) else {
        return invalid("must be exactly 12 digits");
    };
    let Some(name) = provinces.name(id.province()) else {
        return invalid("unknown province code");
    };
    let bucket = id.bucket();
    let (state, replaced_by) = match state {
        Some(IdState::NotIssued) | None => (pb::PersonalIdState::NotIssued, None),
        Some(IdState::Active) => (pb::PersonalIdState::Active, None),
        Some(IdState::Cancelled(by)) => (pb::PersonalIdState::Cancelled, by),
    };
    pb::ValidatePersonalIdResponse {
        valid: true,
        invalid_reason: String::new(),
        decoded: Some(pb::DecodedPersonalId {
            province_code: id.province().to_string(),
            province_name: name.to_owned(),
            sex: proto_sex(bucket.sex()).into(),
            century_start_year: bucket.century_start_year(),
            birth_year: bucket.birth_year(),
        }),
        state: state.into(),
        replaced_by: opt_id(replaced_by),
    }
}

/// Proto statistics with per-province rows and the total.
pub fn statistics(
    stats: &[crate::domain::citizen::ProvinceStats],
    provinces: &ProvinceTable,
) -> pb::GetIssuanceStatisticsResponse {
    let row =
        |code: String, name: String, issued: i64, cancelled: i64| pb::ProvinceIssuanceStatistics {
            province_code: code,
            province_name: name,
            issued,
            cancelled,
            active: issued - cancelled,
        };
    let rows: Vec<_> = stats
        .iter()
        .map(|s| {
            row(
                s.code.to_string(),
                provinces.name(s.code).unwrap_or_default().to_owned(),
                s.issued,
                s.cancelled,
            )
        })
        .collect();
    let total = row(
        String::new(),
        String::new(),
        stats.iter().map(|s| s.issued).sum(),
        stats.iter().map(|s| s.cancelled).sum(),
    );
    pb::GetIssuanceStatisticsResponse {
        provinces: rows,
        total: Some(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_caller_a_few_minutes_past_midnight_is_not_in_the_future_here() {
        // 23:57 in Ha Noi here; a caller whose clock already shows 00:01 dates its
        // registration the next day.
        let here = utc("2026-03-01T16:57:00Z");

        assert_eq!(
            latest_today_at(here),
            NaiveDate::from_ymd_opt(2026, 3, 2).expect("date")
        );
    }

    #[test]
    fn further_than_the_allowance_from_midnight_today_is_today() {
        let here = utc("2026-03-01T16:54:59Z");

        assert_eq!(
            latest_today_at(here),
            NaiveDate::from_ymd_opt(2026, 3, 1).expect("date")
        );
    }
}
