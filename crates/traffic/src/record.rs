//! One line of a traffic file, and the contract's `RegisterBirthRequest` in the proto3 JSON
//! mapping (lowerCamelCase names, enum names as strings, defaults omitted).
//!
//! prost generates no JSON support, so the mirror types here are the file format and
//! `TryFrom` converts them into the prost types the replayer sends.

use anyhow::{Context as _, anyhow};
use contracts::google::r#type::Date as PbDate;
use contracts::moj::civilstatus::v1 as pb;
use serde::{Deserialize, Serialize};

/// One registration to replay: which official sends which request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrafficLine {
    pub official_id: String,
    pub unit_code: String,
    pub request: RegisterBirthRequestJson,
}

/// `google.type.Date` in JSON.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateJson {
    pub year: i32,
    pub month: i32,
    pub day: i32,
}

impl DateJson {
    pub fn from_naive(d: chrono::NaiveDate) -> Self {
        use chrono::Datelike as _;
        Self {
            year: d.year(),
            month: d.month() as i32,
            day: d.day() as i32,
        }
    }

    pub fn to_naive(self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::from_ymd_opt(self.year, self.month as u32, self.day as u32)
    }
}

impl From<DateJson> for PbDate {
    fn from(d: DateJson) -> Self {
        PbDate {
            year: d.year,
            month: d.month,
            day: d.day,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterBirthRequestJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_foreign_element: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub father: Option<ParentJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mother: Option<ParentJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<RequesterJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_on: Option<DateJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub full_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<DateJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_of_birth: Option<PlaceOfBirthJson>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub home_town: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ethnicity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nationality: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOfBirthJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub province_code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub full_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub year_of_birth: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ethnicity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nationality: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub residence: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub personal_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequesterJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub full_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub relationship: String,
}

/// Parses a proto3 JSON enum value: the name, or the number as a string (both are valid
/// proto3 JSON); empty means the zero value.
fn enum_value(field: &str, value: &str, from_name: fn(&str) -> Option<i32>) -> anyhow::Result<i32> {
    if value.is_empty() {
        return Ok(0);
    }
    if let Some(v) = from_name(value) {
        return Ok(v);
    }
    value
        .parse::<i32>()
        .map_err(|_| anyhow!("{field}: unknown enum value {value:?}"))
}

fn kind_from_name(s: &str) -> Option<i32> {
    pb::RegistrationKind::from_str_name(s).map(|v| v as i32)
}
fn sex_from_name(s: &str) -> Option<i32> {
    pb::Sex::from_str_name(s).map(|v| v as i32)
}
fn relationship_from_name(s: &str) -> Option<i32> {
    pb::Relationship::from_str_name(s).map(|v| v as i32)
}

impl RegisterBirthRequestJson {
    /// `kind` as sent (a name or a number).
    pub fn kind_value(&self) -> anyhow::Result<i32> {
        enum_value("kind", &self.kind, kind_from_name)
    }

    /// Whether this is a re-registration, however `kind` is spelt.
    pub fn is_re_registration(&self) -> anyhow::Result<bool> {
        Ok(self.kind_value()? == pb::RegistrationKind::ReRegistration as i32)
    }
}

impl ChildJson {
    /// `sex` as sent (a name or a number).
    pub fn sex_value(&self) -> anyhow::Result<i32> {
        enum_value("child.sex", &self.sex, sex_from_name)
    }
}

impl TryFrom<&RegisterBirthRequestJson> for pb::RegisterBirthRequest {
    type Error = anyhow::Error;

    fn try_from(r: &RegisterBirthRequestJson) -> anyhow::Result<Self> {
        let child = match &r.child {
            None => None,
            Some(c) => Some(pb::Child {
                full_name: c.full_name.clone(),
                sex: c.sex_value()?,
                date_of_birth: c.date_of_birth.map(Into::into),
                place_of_birth: c.place_of_birth.as_ref().map(|p| pb::PlaceOfBirth {
                    description: p.description.clone(),
                    province_code: p.province_code.clone(),
                }),
                home_town: c.home_town.clone(),
                ethnicity: c.ethnicity.clone(),
                nationality: c.nationality.clone(),
            }),
        };
        let requester = match &r.requester {
            None => None,
            Some(q) => Some(pb::Requester {
                full_name: q.full_name.clone(),
                relationship: enum_value(
                    "requester.relationship",
                    &q.relationship,
                    relationship_from_name,
                )?,
            }),
        };
        Ok(pb::RegisterBirthRequest {
            request_id: r.request_id.clone(),
            kind: r.kind_value()?,
            has_foreign_element: r.has_foreign_element,
            child,
            father: r.father.as_ref().map(parent),
            mother: r.mother.as_ref().map(parent),
            requester,
            registered_on: r.registered_on.map(Into::into),
        })
    }
}

fn parent(p: &ParentJson) -> pb::Parent {
    pb::Parent {
        full_name: p.full_name.clone(),
        year_of_birth: p.year_of_birth,
        ethnicity: p.ethnicity.clone(),
        nationality: p.nationality.clone(),
        residence: p.residence.clone(),
        personal_id: p.personal_id.clone(),
    }
}

/// What the pilot's eligibility rule (Official letter 4756/BTP-HTQTCT) says
/// about a request: the traffic tool's own, independent oracle for `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expected {
    Eligible,
    NotEligible(Reasons),
}

/// Ineligibility reasons as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Reasons(pub u8);

impl Reasons {
    pub const FOREIGN_NATIONALITY: u8 = 1;
    pub const RE_REGISTRATION: u8 = 2;
    pub const SEX_UNDETERMINED: u8 = 4;
    pub const AGE_14_OR_OVER: u8 = 8;
    pub const BEFORE_PROGRAM_START: u8 = 16;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// From the contract's `ineligibility_reasons`.
    pub fn from_proto(reasons: &[i32]) -> Self {
        let mut bits = 0;
        for r in reasons {
            bits |= match pb::IneligibilityReason::try_from(*r) {
                Ok(pb::IneligibilityReason::ForeignNationality) => Self::FOREIGN_NATIONALITY,
                Ok(pb::IneligibilityReason::ReRegistration) => Self::RE_REGISTRATION,
                Ok(pb::IneligibilityReason::SexUndetermined) => Self::SEX_UNDETERMINED,
                Ok(pb::IneligibilityReason::Age14OrOver) => Self::AGE_14_OR_OVER,
                Ok(pb::IneligibilityReason::BeforeProgramStart) => Self::BEFORE_PROGRAM_START,
                Ok(pb::IneligibilityReason::Unspecified) | Err(_) => 0,
            };
        }
        Self(bits)
    }
}

impl RegisterBirthRequestJson {
    /// The eligibility this request must end with.
    pub fn expected(&self) -> anyhow::Result<Expected> {
        let child = self.child.as_ref().context("request without child")?;
        let mut bits = 0;
        if child.nationality != "VN" {
            bits |= Reasons::FOREIGN_NATIONALITY;
        }
        // The values the replay sends: proto3 JSON may spell an enum by name or by number.
        if self.is_re_registration()? {
            bits |= Reasons::RE_REGISTRATION;
        }
        if child.sex_value()? == pb::Sex::Undetermined as i32 {
            bits |= Reasons::SEX_UNDETERMINED;
        }
        let registered = self
            .registered_on
            .and_then(DateJson::to_naive)
            .context("request without a valid registered_on")?;
        let born = child
            .date_of_birth
            .and_then(DateJson::to_naive)
            .context("request without a valid child.date_of_birth")?;
        if born
            .checked_add_months(chrono::Months::new(14 * 12))
            .is_some_and(|fourteenth| fourteenth <= registered)
        {
            bits |= Reasons::AGE_14_OR_OVER;
        }
        if registered < chrono::NaiveDate::from_ymd_opt(2016, 1, 1).context("date")? {
            bits |= Reasons::BEFORE_PROGRAM_START;
        }
        Ok(if bits == 0 {
            Expected::Eligible
        } else {
            Expected::NotEligible(Reasons(bits))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, sex: &str) -> RegisterBirthRequestJson {
        serde_json::from_value(serde_json::json!({
            "requestId": "r-1",
            "kind": kind,
            "child": {
                "fullName": "A",
                "sex": sex,
                "dateOfBirth": {"year": 2016, "month": 2, "day": 1},
                "nationality": "VN"
            },
            "registeredOn": {"year": 2016, "month": 2, "day": 10}
        }))
        .unwrap()
    }

    #[test]
    fn the_expectation_reads_enums_spelt_as_numbers_as_the_replay_sends_them() {
        let undetermined = Expected::NotEligible(Reasons(Reasons::SEX_UNDETERMINED));
        let re_registration = Expected::NotEligible(Reasons(Reasons::RE_REGISTRATION));
        // The contract's numbers: FIRST_TIME 1, RE_REGISTRATION 2; MALE 1, FEMALE 2,
        // UNDETERMINED 3.
        for (kind, sex, wire, want) in [
            (
                "REGISTRATION_KIND_FIRST_TIME",
                "SEX_FEMALE",
                (1, 2),
                Expected::Eligible,
            ),
            ("1", "2", (1, 2), Expected::Eligible),
            (
                "REGISTRATION_KIND_FIRST_TIME",
                "SEX_UNDETERMINED",
                (1, 3),
                undetermined,
            ),
            ("1", "3", (1, 3), undetermined),
            (
                "REGISTRATION_KIND_RE_REGISTRATION",
                "SEX_MALE",
                (2, 1),
                re_registration,
            ),
            ("2", "1", (2, 1), re_registration),
        ] {
            let r = request(kind, sex);
            let sent = pb::RegisterBirthRequest::try_from(&r).unwrap();
            let child = sent.child.as_ref().unwrap();
            assert_eq!((sent.kind, child.sex), wire, "kind {kind} sex {sex}");
            assert_eq!(r.expected().unwrap(), want, "kind {kind} sex {sex}");
        }
    }

    #[test]
    fn an_enum_value_that_is_neither_a_name_nor_a_number_is_refused() {
        assert!(request("FIRST", "SEX_MALE").expected().is_err());
        assert!(request("1", "M").expected().is_err());
    }
}
