//! Proto <-> domain. Requests are parsed into domain types collecting EVERY bad field with
//! its exact path (`child.date_of_birth`), so that one answer lists all the fixes needed.

use chrono::{Datelike, NaiveDate};
use contracts::google::r#type::Date;
use contracts::moj::civilstatus::v1 as pb;

use crate::domain::eligibility::IneligibilityReason;
use crate::domain::error::RegistryError;
use crate::domain::model::{
    BirthDate, BirthRecord, Child, Correction, CorrectionReason, Ethnicity, KnownPersonalId,
    Nationality, NewBirth, Parent, PersonName, PersonalIdStatus, PlaceOfBirth, PlaceText,
    ProvinceCode, Registration, RegistrationKind, Relationship, RequestId, Requester, Residence,
    Sex, UnitCode, today_in_vietnam,
};
use crate::registry::ListQuery;
use crate::store::{PageCursor, StatsGrouping, StatsRow};

/// Collects violations while parsing.
#[derive(Debug, Default)]
struct Violations(Vec<(String, String)>);

impl Violations {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push((field.to_owned(), e));
                None
            }
        }
    }
    fn add(&mut self, field: &str, description: &str) {
        self.0.push((field.to_owned(), description.to_owned()));
    }
    fn finish<T>(self, value: Option<T>) -> Result<T, RegistryError> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(RegistryError::InvalidArgument(self.0)),
        }
    }
}

/// A `google.type.Date` as a real calendar date.
pub fn date_from(d: &Date) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(d.year, d.month.max(0) as u32, d.day.max(0) as u32)
        .ok_or_else(|| "must be a real calendar date".to_owned())
}

/// A `google.type.Date`.
pub fn date_to(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

fn required_date(v: &mut Violations, field: &str, d: Option<&Date>) -> Option<NaiveDate> {
    match d {
        None => {
            v.add(field, "is required");
            None
        }
        Some(d) => v.check(field, date_from(d)),
    }
}

fn child(
    v: &mut Violations,
    p: &str,
    c: Option<&pb::Child>,
    registered_on: Option<NaiveDate>,
    today: NaiveDate,
) -> Option<Child> {
    let Some(c) = c else {
        v.add(p, "is required");
        return None;
    };
    let f = |name: &str| format!("{p}.{name}");
    let full_name = v.check(&f("full_name"), PersonName::parse(&c.full_name));
    let sex = match pb::Sex::try_from(c.sex) {
        Ok(pb::Sex::Male) => Some(Sex::Male),
        Ok(pb::Sex::Female) => Some(Sex::Female),
        Ok(pb::Sex::Undetermined) => Some(Sex::Undetermined),
        Ok(pb::Sex::Unspecified) | Err(_) => {
            v.add(
                &f("sex"),
                "must be SEX_MALE, SEX_FEMALE or SEX_UNDETERMINED",
            );
            None
        }
    };
    let dob_field = f("date_of_birth");
    let date_of_birth = required_date(v, &dob_field, c.date_of_birth.as_ref())
        .and_then(|d| v.check(&dob_field, BirthDate::parse(d, today)))
        .and_then(|d| match registered_on {
            Some(r) if d.date() > r => {
                v.add(&dob_field, "must not be after the registration date");
                None
            }
            _ => Some(d),
        });
    let place_of_birth = match &c.place_of_birth {
        None => {
            v.add(&f("place_of_birth"), "is required");
            None
        }
        Some(pob) => {
            let description = v.check(
                &f("place_of_birth.description"),
                PlaceText::parse(&pob.description),
            );
            let province = if pob.province_code.is_empty() {
                Some(None)
            } else {
                v.check(
                    &f("place_of_birth.province_code"),
                    ProvinceCode::parse(&pob.province_code),
                )
                .map(Some)
            };
            description
                .zip(province)
                .map(|(description, province_code)| PlaceOfBirth {
                    description,
                    province_code,
                })
        }
    };
    let home_town = v.check(&f("home_town"), PlaceText::parse(&c.home_town));
    let ethnicity = v.check(&f("ethnicity"), Ethnicity::parse(&c.ethnicity));
    let nationality = v.check(&f("nationality"), Nationality::parse(&c.nationality));
    Some(Child {
        full_name: full_name?,
        sex: sex?,
        date_of_birth: date_of_birth?,
        place_of_birth: place_of_birth?,
        home_town: home_town?,
        ethnicity: ethnicity?,
        nationality: nationality?,
    })
}

fn optional<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    if raw.trim().is_empty() {
        Some(None)
    } else {
        v.check(field, parse(raw)).map(Some)
    }
}

fn parent(
    v: &mut Violations,
    p: &str,
    raw: Option<&pb::Parent>,
    today: NaiveDate,
) -> Option<Option<Parent>> {
    let Some(raw) = raw else { return Some(None) };
    let f = |name: &str| format!("{p}.{name}");
    let full_name = v.check(&f("full_name"), PersonName::parse(&raw.full_name));
    let year_of_birth = match raw.year_of_birth {
        0 => Some(None),
        y if (1850..=today.year()).contains(&y) => Some(Some(y)),
        _ => {
            v.add(
                &f("year_of_birth"),
                "must be a four-digit year not in the future, or 0 when unknown",
            );
            None
        }
    };
    let ethnicity = optional(v, &f("ethnicity"), &raw.ethnicity, Ethnicity::parse);
    let nationality = optional(v, &f("nationality"), &raw.nationality, Nationality::parse);
    let residence = optional(v, &f("residence"), &raw.residence, Residence::parse);
    let personal_id = optional(
        v,
        &f("personal_id"),
        &raw.personal_id,
        KnownPersonalId::parse,
    );
    Some(Some(Parent {
        full_name: full_name?,
        year_of_birth: year_of_birth?,
        ethnicity: ethnicity?,
        nationality: nationality?,
        residence: residence?,
        personal_id: personal_id?,
    }))
}

/// RegisterBirthRequest -> NewBirth.
pub fn new_birth(req: &pb::RegisterBirthRequest) -> Result<NewBirth, RegistryError> {
    let today = today_in_vietnam();
    let mut v = Violations::default();
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    let kind = match pb::RegistrationKind::try_from(req.kind) {
        Ok(pb::RegistrationKind::FirstTime) => Some(RegistrationKind::FirstTime),
        Ok(pb::RegistrationKind::ReRegistration) => Some(RegistrationKind::ReRegistration),
        Ok(pb::RegistrationKind::Unspecified) | Err(_) => {
            v.add(
                "kind",
                "must be REGISTRATION_KIND_FIRST_TIME or REGISTRATION_KIND_RE_REGISTRATION",
            );
            None
        }
    };
    let registered_on = match &req.registered_on {
        None => Some(today),
        Some(d) => v.check("registered_on", date_from(d)).and_then(|d| {
            if d > today {
                v.add("registered_on", "must not be in the future");
                None
            } else if d.year() < 1900 {
                v.add("registered_on", "must be in 1900 or later");
                None
            } else {
                Some(d)
            }
        }),
    };
    let child = child(&mut v, "child", req.child.as_ref(), registered_on, today);
    let father = parent(&mut v, "father", req.father.as_ref(), today);
    let mother = parent(&mut v, "mother", req.mother.as_ref(), today);
    let requester = match &req.requester {
        None => {
            v.add("requester", "is required");
            None
        }
        Some(r) => {
            let full_name = v.check("requester.full_name", PersonName::parse(&r.full_name));
            let relationship = match pb::Relationship::try_from(r.relationship) {
                Ok(pb::Relationship::Father) => Some(Relationship::Father),
                Ok(pb::Relationship::Mother) => Some(Relationship::Mother),
                Ok(pb::Relationship::Grandparent) => Some(Relationship::Grandparent),
                Ok(pb::Relationship::OtherRelative) => Some(Relationship::OtherRelative),
                Ok(pb::Relationship::Guardian) => Some(Relationship::Guardian),
                Ok(pb::Relationship::Unspecified) | Err(_) => {
                    v.add("requester.relationship", "is required");
                    None
                }
            };
            full_name
                .zip(relationship)
                .map(|(full_name, relationship)| Requester {
                    full_name,
                    relationship,
                })
        }
    };
    let value = (|| {
        Some(NewBirth {
            request_id: request_id?,
            record: BirthRecord {
                kind: kind?,
                has_foreign_element: req.has_foreign_element,
                child: child?,
                father: father?,
                mother: mother?,
                requester: requester?,
            },
            registered_on: registered_on?,
            registered_on_given: req.registered_on.is_some(),
        })
    })();
    v.finish(value)
}

/// `birthRegistrations/{uuid}` -> the id. Only the form the API hands out (lowercase,
/// hyphenated) names a registration: one resource has one name.
pub fn registration_id(field: &str, name: &str) -> Result<uuid::Uuid, RegistryError> {
    name.strip_prefix("birthRegistrations/")
        .and_then(|id| {
            uuid::Uuid::try_parse(id)
                .ok()
                .filter(|parsed| parsed.hyphenated().to_string() == id)
        })
        .ok_or_else(|| {
            RegistryError::invalid(field, "must be birthRegistrations/{id} with a UUID id")
        })
}

/// CorrectBirthRegistrationRequest -> Correction. The date of birth is checked against
/// today here and against the registration date by the registry.
pub fn correction(req: &pb::CorrectBirthRegistrationRequest) -> Result<Correction, RegistryError> {
    let today = today_in_vietnam();
    let mut v = Violations::default();
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    let id = match registration_id("name", &req.name) {
        Ok(id) => Some(id),
        Err(_) => {
            v.add("name", "must be birthRegistrations/{id} with a UUID id");
            None
        }
    };
    let child = child(&mut v, "child", req.child.as_ref(), None, today);
    let father = parent(&mut v, "father", req.father.as_ref(), today);
    let mother = parent(&mut v, "mother", req.mother.as_ref(), today);
    let unit_code = optional(&mut v, "unit_code", &req.unit_code, UnitCode::parse);
    let reason = v.check("reason", CorrectionReason::parse(&req.reason));
    let value = (|| {
        Some(Correction {
            request_id: request_id?,
            registration_id: id?,
            child: child?,
            father: father?,
            mother: mother?,
            unit_code: unit_code?,
            reason: reason?,
        })
    })();
    v.finish(value)
}

fn status_from(s: i32) -> Result<Option<PersonalIdStatus>, String> {
    match pb::PersonalIdStatus::try_from(s) {
        Ok(pb::PersonalIdStatus::Unspecified) => Ok(None),
        Ok(pb::PersonalIdStatus::Issued) => Ok(Some(PersonalIdStatus::Issued)),
        Ok(pb::PersonalIdStatus::Pending) => Ok(Some(PersonalIdStatus::Pending)),
        Ok(pb::PersonalIdStatus::NotEligible) => Ok(Some(PersonalIdStatus::NotEligible)),
        Ok(pb::PersonalIdStatus::Rejected) => Ok(Some(PersonalIdStatus::Rejected)),
        Err(_) => Err("is not a known status".into()),
    }
}

/// An opaque page token for a cursor.
pub fn page_token(cursor: &PageCursor) -> String {
    hex::encode(format!("{}|{}", cursor.created_at_ms, cursor.id))
}

fn cursor_from(token: &str) -> Result<PageCursor, String> {
    let bad = || "is not a token returned by this service".to_owned();
    let raw = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (ms, id) = raw.split_once('|').ok_or_else(bad)?;
    Ok(PageCursor {
        created_at_ms: ms.parse().map_err(|_| bad())?,
        id: id.to_owned(),
    })
}

/// ListBirthRegistrationsRequest -> ListQuery.
pub fn list_query(req: &pb::ListBirthRegistrationsRequest) -> Result<ListQuery, RegistryError> {
    let mut v = Violations::default();
    let page_size = match req.page_size {
        0 => Some(100),
        n @ 1..=1000 => Some(i64::from(n)),
        _ => {
            v.add("page_size", "must be 0 to 1000");
            None
        }
    };
    let after = if req.page_token.is_empty() {
        Some(None)
    } else {
        v.check("page_token", cursor_from(&req.page_token))
            .map(Some)
    };
    let unit_code =
        optional(&mut v, "unit_code", &req.unit_code, UnitCode::parse).map(|u| u.map(String::from));
    let province_code = optional(
        &mut v,
        "province_code",
        &req.province_code,
        ProvinceCode::parse,
    )
    .map(|p| p.map(String::from));
    let from = req
        .registered_from
        .as_ref()
        .map(|d| v.check("registered_from", date_from(d)));
    let to = req
        .registered_to
        .as_ref()
        .map(|d| v.check("registered_to", date_from(d)));
    if let (Some(Some(f)), Some(Some(t))) = (from, to)
        && t < f
    {
        v.add("registered_to", "must not be before registered_from");
    }
    let status = v.check("personal_id_status", status_from(req.personal_id_status));
    let value = (|| {
        Some(ListQuery {
            page_size: page_size?,
            after: after?,
            unit_code: unit_code?,
            province_code: province_code?,
            from: from.map(|d| d.ok_or(())).transpose().ok()?,
            to: to.map(|d| d.ok_or(())).transpose().ok()?,
            status: status?,
        })
    })();
    v.finish(value)
}

/// GetRegistrationStatisticsRequest -> (from, to, grouping, province).
pub fn statistics_query(
    req: &pb::GetRegistrationStatisticsRequest,
) -> Result<(NaiveDate, NaiveDate, StatsGrouping, Option<String>), RegistryError> {
    let mut v = Violations::default();
    let from = required_date(&mut v, "registered_from", req.registered_from.as_ref());
    let to = required_date(&mut v, "registered_to", req.registered_to.as_ref());
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        v.add("registered_to", "must not be before registered_from");
    }
    let grouping = match pb::StatisticsGrouping::try_from(req.grouping) {
        Ok(pb::StatisticsGrouping::Province) => Some(StatsGrouping::Province),
        Ok(pb::StatisticsGrouping::District) => Some(StatsGrouping::District),
        Ok(pb::StatisticsGrouping::Unit) => Some(StatsGrouping::Unit),
        Ok(pb::StatisticsGrouping::Unspecified) | Err(_) => {
            v.add("grouping", "is required");
            None
        }
    };
    let province = optional(
        &mut v,
        "province_code",
        &req.province_code,
        ProvinceCode::parse,
    )
    .map(|p| p.map(String::from));
    let value = (|| Some((from?, to?, grouping?, province?)))();
    v.finish(value)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn parent_to(p: &Parent) -> pb::Parent {
    pb::Parent {
        full_name: p.full_name.as_str().to_owned(),
        year_of_birth: p.year_of_birth.unwrap_or(0),
        ethnicity: p.ethnicity_text().to_owned(),
        nationality: p.nationality_text().to_owned(),
        residence: p.residence_text().to_owned(),
        personal_id: p.personal_id_text().to_owned(),
    }
}

/// Registration -> proto.
pub fn registration_to(r: Registration) -> pb::BirthRegistration {
    let c = &r.record.child;
    let issued = r.status == PersonalIdStatus::Issued;
    pb::BirthRegistration {
        name: format!("birthRegistrations/{}", r.id),
        id: r.id.to_string(),
        registration_number: r.registration_number,
        book_number: r.book_number.clone(),
        unit_code: r.unit_code.as_str().to_owned(),
        register_unit_code: r.register_unit_code.as_str().to_owned(),
        official_id: r.official_id.clone(),
        kind: match r.record.kind {
            RegistrationKind::FirstTime => pb::RegistrationKind::FirstTime,
            RegistrationKind::ReRegistration => pb::RegistrationKind::ReRegistration,
        } as i32,
        has_foreign_element: r.record.has_foreign_element,
        child: Some(pb::Child {
            full_name: c.full_name.as_str().to_owned(),
            sex: match c.sex {
                Sex::Male => pb::Sex::Male,
                Sex::Female => pb::Sex::Female,
                Sex::Undetermined => pb::Sex::Undetermined,
            } as i32,
            date_of_birth: Some(date_to(c.date_of_birth.date())),
            place_of_birth: Some(pb::PlaceOfBirth {
                description: c.place_of_birth.description.as_str().to_owned(),
                province_code: c
                    .place_of_birth
                    .province_code
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            }),
            home_town: c.home_town.as_str().to_owned(),
            ethnicity: c.ethnicity.as_str().to_owned(),
            nationality: c.nationality.as_str().to_owned(),
        }),
        father: r.record.father.as_ref().map(parent_to),
        mother: r.record.mother.as_ref().map(parent_to),
        requester: Some(pb::Requester {
            full_name: r.record.requester.full_name.as_str().to_owned(),
            relationship: match r.record.requester.relationship {
                Relationship::Father => pb::Relationship::Father,
                Relationship::Mother => pb::Relationship::Mother,
                Relationship::Grandparent => pb::Relationship::Grandparent,
                Relationship::OtherRelative => pb::Relationship::OtherRelative,
                Relationship::Guardian => pb::Relationship::Guardian,
            } as i32,
        }),
        registered_on: Some(date_to(r.registered_on)),
        personal_id_status: match r.status {
            PersonalIdStatus::Issued => pb::PersonalIdStatus::Issued,
            PersonalIdStatus::Pending => pb::PersonalIdStatus::Pending,
            PersonalIdStatus::NotEligible => pb::PersonalIdStatus::NotEligible,
            PersonalIdStatus::Rejected => pb::PersonalIdStatus::Rejected,
        } as i32,
        personal_id: if issued {
            r.personal_id.clone().unwrap_or_default()
        } else {
            String::new()
        },
        ineligibility_reasons: if r.status == PersonalIdStatus::NotEligible {
            r.reasons
                .iter()
                .map(|reason| {
                    (match reason {
                        IneligibilityReason::ForeignNationality => {
                            pb::IneligibilityReason::ForeignNationality
                        }
                        IneligibilityReason::ReRegistration => {
                            pb::IneligibilityReason::ReRegistration
                        }
                        IneligibilityReason::SexUndetermined => {
                            pb::IneligibilityReason::SexUndetermined
                        }
                        IneligibilityReason::Age14OrOver => pb::IneligibilityReason::Age14OrOver,
                        IneligibilityReason::BeforeProgramStart => {
                            pb::IneligibilityReason::BeforeProgramStart
                        }
                    }) as i32
                })
                .collect()
        } else {
            Vec::new()
        },
        eligibility_rule_version: r.rule_version.clone(),
        rejection_reason: if r.status == PersonalIdStatus::Rejected {
            r.rejection_reason.clone().unwrap_or_default()
        } else {
            String::new()
        },
        cancelled_personal_ids: r.cancelled_personal_ids.clone(),
        create_time: Some(timestamp(r.created_at_ms)),
        update_time: Some(timestamp(r.updated_at_ms)),
        personal_id_issue_time: if issued {
            r.issued_at_ms.map(timestamp)
        } else {
            None
        },
    }
}

/// A statistics row -> proto.
pub fn stats_row_to(code: String, name: String, row: &StatsRow) -> pb::RegistrationStatisticsRow {
    let c = row.counts;
    pb::RegistrationStatisticsRow {
        group_code: code,
        group_name: name,
        registrations: c[0],
        first_time: c[1],
        re_registrations: c[2],
        eligible: c[3] + c[4] + c[5],
        issued: c[3],
        pending: c[4],
        rejected: c[5],
        not_eligible: c[6],
        not_eligible_foreign_nationality: c[7],
        not_eligible_re_registration: c[8],
        not_eligible_sex_undetermined: c[9],
        not_eligible_age_14_or_over: c[10],
        not_eligible_before_program_start: c[11],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: RegistryError) -> Vec<String> {
        match error {
            RegistryError::InvalidArgument(violations) => {
                violations.into_iter().map(|(field, _)| field).collect()
            }
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    fn day(y: i32, m: i32, d: i32) -> Option<Date> {
        Some(Date {
            year: y,
            month: m,
            day: d,
        })
    }

    #[test]
    fn a_registration_has_one_name_the_one_the_api_hands_out() {
        let id = uuid::Uuid::now_v7();
        let canonical = format!("birthRegistrations/{id}");
        assert_eq!(registration_id("name", &canonical).ok(), Some(id));
        let upper = id.hyphenated().to_string().to_uppercase();
        for other in [
            format!("birthRegistrations/{upper}"),
            format!("birthRegistrations/{{{id}}}"),
            format!("birthRegistrations/{}", id.simple()),
            format!("birthRegistrations/{}", id.urn()),
            format!("birthregistrations/{id}"),
            id.to_string(),
        ] {
            let refused = registration_id("name", &other).expect_err(&other);
            assert_eq!(fields(refused), ["name"], "{other}");
        }
    }

    #[test]
    fn a_list_range_that_ends_before_it_starts_is_refused() {
        let mut req = pb::ListBirthRegistrationsRequest {
            registered_from: day(2016, 3, 1),
            registered_to: day(2016, 2, 1),
            ..Default::default()
        };
        assert_eq!(fields(list_query(&req).unwrap_err()), ["registered_to"]);
        req.registered_to = day(2016, 3, 1);
        assert!(list_query(&req).is_ok(), "a one-day range");
    }
}
