//! Builds the population registry's request messages from a registration. The bytes are
//! stored in the outbox when the request is queued and sent unchanged on every retry, so
//! that one idempotency key always carries one content.

use chrono::{Datelike, NaiveDate};
use contracts::google::r#type::Date;
use contracts::mps::population::v1 as pop;
use prost::Message;

use crate::domain::model::{Parent, Registration, Sex, Unit};
use crate::domain::numbering::PostMergerRule;

/// A `google.type.Date`.
pub fn date(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

fn parent(p: &Parent) -> pop::Parent {
    pop::Parent {
        full_name: p.full_name.as_str().to_owned(),
        year_of_birth: p.year_of_birth.unwrap_or(0),
        ethnicity: p.ethnicity_text().to_owned(),
        nationality: p.nationality_text().to_owned(),
        residence: p.residence_text().to_owned(),
        personal_id: p.personal_id_text().to_owned(),
    }
}

/// The record as the population registry receives it; `unit` is the registering unit,
/// whose province code (as `numbering` has it on the registration date) is what the number
/// encodes. The register entry it references stays that of the unit that recorded the
/// birth.
pub fn birth_record(
    registration: &Registration,
    unit: &Unit,
    numbering: PostMergerRule,
) -> pop::BirthRecord {
    let child = &registration.record.child;
    pop::BirthRecord {
        full_name: child.full_name.as_str().to_owned(),
        sex: match child.sex {
            Sex::Male => pop::Sex::Male as i32,
            Sex::Female => pop::Sex::Female as i32,
            // Never queued: the eligibility rule refuses an undetermined sex.
            Sex::Undetermined => pop::Sex::Unspecified as i32,
        },
        date_of_birth: Some(date(child.date_of_birth.date())),
        place_of_birth: Some(pop::PlaceOfBirth {
            description: child.place_of_birth.description.as_str().to_owned(),
            province_code: child
                .place_of_birth
                .province_code
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
        }),
        registration_province_code: numbering
            .number_province(&unit.province_code, registration.registered_on)
            .as_str()
            .to_owned(),
        home_town: child.home_town.as_str().to_owned(),
        ethnicity: child.ethnicity.as_str().to_owned(),
        nationality: child.nationality.as_str().to_owned(),
        father: registration.record.father.as_ref().map(parent),
        mother: registration.record.mother.as_ref().map(parent),
        registration: Some(pop::RegistrationReference {
            unit_code: registration.register_unit_code.as_str().to_owned(),
            registration_number: registration.registration_number,
            book_number: registration.book_number.clone(),
            registration_date: Some(date(registration.registered_on)),
        }),
    }
}

/// An encoded `IssuePersonalIdRequest`.
pub fn issue_request(
    registration: &Registration,
    unit: &Unit,
    numbering: PostMergerRule,
    key: &str,
) -> Vec<u8> {
    pop::IssuePersonalIdRequest {
        request_id: key.to_owned(),
        birth: Some(birth_record(registration, unit, numbering)),
    }
    .encode_to_vec()
}

/// An encoded `ReissuePersonalIdRequest`.
pub fn reissue_request(
    registration: &Registration,
    unit: &Unit,
    numbering: PostMergerRule,
    key: &str,
    old_personal_id: &str,
    reason: &str,
) -> Vec<u8> {
    pop::ReissuePersonalIdRequest {
        request_id: key.to_owned(),
        personal_id: old_personal_id.to_owned(),
        corrected_birth: Some(birth_record(registration, unit, numbering)),
        reason: reason.to_owned(),
    }
    .encode_to_vec()
}
