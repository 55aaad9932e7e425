//! Validated values of a birth registration. Parse, don't validate: every type here has a
//! fallible constructor, so a value that exists is valid. Types that hold personal data
//! redact themselves in `Debug` so that they can never leak into logs by accident.

use chrono::{Datelike, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Registration dates are civil dates in Asia/Ho_Chi_Minh, which has had no daylight saving
/// since 1975: a fixed +07:00 offset is exact and avoids a time-zone database dependency.
pub fn today_in_vietnam() -> NaiveDate {
    let offset = FixedOffset::east_opt(7 * 3600).expect("+07:00 is a valid offset");
    Utc::now().with_timezone(&offset).date_naive()
}

/// A description of why a raw value was refused (for `google.rpc.BadRequest`).
pub type Invalid = String;

/// NFC, trimmed of spaces, length in characters. Control characters are refused wherever
/// they stand: trimming first would quietly drop a tab or a line break at either end.
fn clean_text(raw: &str, min: usize, max: usize) -> Result<String, Invalid> {
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let trimmed = raw.trim();
    // Most input is NFC already (all ASCII is): the quick check spares the
    // decompose/recompose pass and its allocations.
    let text: String = if is_nfc_quick(trimmed.chars()) == IsNormalized::Yes {
        trimmed.to_owned()
    } else {
        trimmed.nfc().collect()
    };
    let len = text.chars().count();
    if len < min {
        return Err(if min == 1 {
            "is required".into()
        } else {
            format!("must have at least {min} characters")
        });
    }
    if len > max {
        return Err(format!("must have at most {max} characters"));
    }
    Ok(text)
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, redact = $redact:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Trims, normalises to NFC and checks length and characters.
            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                clean_text(raw, $min, $max).map(Self)
            }
            /// The normalised text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<Self, Invalid> {
                Self::parse(&raw)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if $redact {
                    write!(f, concat!(stringify!($name), "(<redacted>)"))
                } else {
                    write!(f, concat!(stringify!($name), "({:?})"), self.0)
                }
            }
        }
    };
}

text_newtype!(
    /// A person's full name, 1 to 100 characters, NFC.
    PersonName, 1, 100, redact = true);
text_newtype!(
    /// Free text of up to 200 characters (place of birth, home town), at least one.
    PlaceText, 1, 200, redact = true);
text_newtype!(
    /// An ethnic group, 1 to 50 characters.
    Ethnicity, 1, 50, redact = true);
text_newtype!(
    /// A parent's residence, 1 to 200 characters.
    Residence, 1, 200, redact = true);
text_newtype!(
    /// Why a correction was made, 1 to 500 characters.
    CorrectionReason, 1, 500, redact = true);

/// A client idempotency key: 1 to 64 characters of `[A-Za-z0-9-_.:]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// Checks length and alphabet; no normalisation (keys compare byte for byte).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        if raw.len() > 64 {
            return Err("must have at most 64 characters".into());
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err("must contain only A-Z, a-z, 0-9, '-', '_', '.' and ':'".into());
        }
        Ok(Self(raw.to_owned()))
    }
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for RequestId {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}
impl From<RequestId> for String {
    fn from(value: RequestId) -> String {
        value.0
    }
}

/// A unit code: 1 to 32 characters of `[A-Za-z0-9-_.]` (what the population contract accepts).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitCode(String);

impl UnitCode {
    /// Checks length and alphabet.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        if raw.len() > 32
            || !raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err("must be 1 to 32 characters of A-Z, a-z, 0-9, '-', '_', '.'".into());
        }
        Ok(Self(raw.to_owned()))
    }
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for UnitCode {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}
impl From<UnitCode> for String {
    fn from(value: UnitCode) -> String {
        value.0
    }
}
impl std::fmt::Display for UnitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 63 province codes of the personal identification number (Circular 07/2016/TT-BCA).
/// The 34 provinces of the 2025 merger keep codes from this list ("0" + the new
/// administrative code), so it covers both. A code outside it would be committed here and
/// then refused by the population registry, leaving the registration REJECTED: refusing it
/// up front names the field to the official instead.
const PROVINCE_CODES: &str = "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096";

/// A three-digit province code ("001").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProvinceCode(String);

impl ProvinceCode {
    /// Exactly three ASCII digits naming a known province.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a three-digit province code".into());
        }
        if !PROVINCE_CODES.split(' ').any(|c| c == raw) {
            return Err("is not a known province code".into());
        }
        Ok(Self(raw.to_owned()))
    }
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ProvinceCode {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}
impl From<ProvinceCode> for String {
    fn from(value: ProvinceCode) -> String {
        value.0
    }
}

/// An ISO 3166-1 alpha-2 code in upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nationality(String);

impl Nationality {
    /// An officially assigned code: the population registry refuses any other.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if country_codes::is_assigned_alpha2(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 3166-1 alpha-2 code in upper case".into())
        }
    }
    /// Whether this is Vietnamese nationality.
    pub fn is_vietnamese(&self) -> bool {
        self.0 == "VN"
    }
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Loading a stored record checks the shape only: registrations stored before the list
/// was checked (any two upper-case letters) must keep loading.
impl TryFrom<String> for Nationality {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw))
        } else {
            Self::parse(&raw)
        }
    }
}
impl From<Nationality> for String {
    fn from(value: Nationality) -> String {
        value.0
    }
}

/// A parent's 12-digit personal identification number, opaque to this service.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KnownPersonalId(String);

impl KnownPersonalId {
    /// Exactly twelve ASCII digits.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() == 12 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be exactly 12 digits".into())
        }
    }
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for KnownPersonalId {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}
impl From<KnownPersonalId> for String {
    fn from(value: KnownPersonalId) -> String {
        value.0
    }
}
impl std::fmt::Debug for KnownPersonalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KnownPersonalId(<redacted>)")
    }
}

/// Sex as recorded at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    /// Male.
    Male,
    /// Female.
    Female,
    /// Not yet determined: registered, but no number.
    Undetermined,
}

/// First registration or re-registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegistrationKind {
    /// Never registered before (late registrations included).
    FirstTime,
    /// Re-registration of a birth registered before.
    ReRegistration,
}

impl RegistrationKind {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstTime => "FIRST_TIME",
            Self::ReRegistration => "RE_REGISTRATION",
        }
    }
}

/// The requester's relationship to the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relationship {
    /// Father.
    Father,
    /// Mother.
    Mother,
    /// Grandparent.
    Grandparent,
    /// Another relative.
    OtherRelative,
    /// Guardian or head of a care institution.
    Guardian,
}

/// A date of birth: a real date in 1900-2399 (what a number can encode).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BirthDate(NaiveDate);

impl BirthDate {
    /// Checks the century range and that the date is not after `today`.
    pub fn parse(date: NaiveDate, today: NaiveDate) -> Result<Self, Invalid> {
        if !(1900..=2399).contains(&date.year()) {
            return Err("must be in the years 1900 to 2399".into());
        }
        if date > today {
            return Err("must not be in the future".into());
        }
        Ok(Self(date))
    }
    /// The date.
    pub fn date(self) -> NaiveDate {
        self.0
    }
}
impl std::fmt::Debug for BirthDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BirthDate(<redacted>)")
    }
}

/// Where the child was born.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlaceOfBirth {
    /// Free text as on the certificate.
    pub description: PlaceText,
    /// Province of the place of birth; `None` when born abroad.
    pub province_code: Option<ProvinceCode>,
}

/// The child.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Child {
    /// Full name.
    pub full_name: PersonName,
    /// Sex.
    pub sex: Sex,
    /// Date of birth.
    pub date_of_birth: BirthDate,
    /// Place of birth.
    pub place_of_birth: PlaceOfBirth,
    /// Home town.
    pub home_town: PlaceText,
    /// Ethnic group.
    pub ethnicity: Ethnicity,
    /// Nationality.
    pub nationality: Nationality,
}

/// A parent; every field but the name may be unknown.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Parent {
    /// Full name.
    pub full_name: PersonName,
    /// Year of birth, when known.
    pub year_of_birth: Option<i32>,
    /// Ethnic group, when known.
    pub ethnicity: Option<Ethnicity>,
    /// Nationality, when known.
    pub nationality: Option<Nationality>,
    /// Residence, when known.
    pub residence: Option<Residence>,
    /// The parent's own number, when known.
    pub personal_id: Option<KnownPersonalId>,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parent(<redacted>)")
    }
}

impl Parent {
    /// Ethnic group as written, empty when unknown (the contracts' convention).
    pub fn ethnicity_text(&self) -> &str {
        self.ethnicity.as_ref().map_or("", |v| v.as_str())
    }

    /// Nationality code, empty when unknown.
    pub fn nationality_text(&self) -> &str {
        self.nationality.as_ref().map_or("", |v| v.as_str())
    }

    /// Residence, empty when unknown.
    pub fn residence_text(&self) -> &str {
        self.residence.as_ref().map_or("", |v| v.as_str())
    }

    /// The parent's own number, empty when unknown.
    pub fn personal_id_text(&self) -> &str {
        self.personal_id.as_ref().map_or("", |v| v.as_str())
    }
}

/// Who asked for the registration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requester {
    /// Full name.
    pub full_name: PersonName,
    /// Relationship to the child.
    pub relationship: Relationship,
}

/// What the register holds about the birth itself (the part corrections replace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BirthRecord {
    /// First time or re-registration.
    pub kind: RegistrationKind,
    /// A foreign parent or born abroad.
    pub has_foreign_element: bool,
    /// The child.
    pub child: Child,
    /// Father, when recorded.
    pub father: Option<Parent>,
    /// Mother, when recorded.
    pub mother: Option<Parent>,
    /// Who asked.
    pub requester: Requester,
}

/// A validated RegisterBirth request.
#[derive(Clone, Debug)]
pub struct NewBirth {
    /// Client idempotency key.
    pub request_id: RequestId,
    /// The record.
    pub record: BirthRecord,
    /// Registration date, resolved to today when the client sent none.
    pub registered_on: NaiveDate,
    /// Whether the client gave the date (part of the idempotent content).
    pub registered_on_given: bool,
}

impl NewBirth {
    /// The record as stored (JSON) and a digest of the request's content: a retry with the
    /// same key must carry the same digest.
    ///
    /// The digest is SHA-256 of the JSON of `(record, given date or null)`, which serde
    /// writes as `[<record>,<date>]`: it is hashed from the record's JSON in pieces, so
    /// that the record is serialised once per registration. Digests already stored stay
    /// valid (a test holds the two forms equal).
    pub fn record_json_and_content_hash(&self) -> (String, String) {
        use sha2::{Digest, Sha256};
        let record_json = serde_json::to_string(&self.record).unwrap_or_default();
        let given = self.registered_on_given.then_some(self.registered_on);
        let given_json = serde_json::to_string(&given).unwrap_or_default();
        let mut digest = Sha256::new();
        digest.update(b"[");
        digest.update(record_json.as_bytes());
        digest.update(b",");
        digest.update(given_json.as_bytes());
        digest.update(b"]");
        (record_json, hex::encode(digest.finalize()))
    }
}

/// A validated correction.
#[derive(Clone, Debug)]
pub struct Correction {
    /// Idempotency key of the correction.
    pub request_id: RequestId,
    /// The registration.
    pub registration_id: uuid::Uuid,
    /// The corrected child.
    pub child: Child,
    /// The corrected father.
    pub father: Option<Parent>,
    /// The corrected mother.
    pub mother: Option<Parent>,
    /// A new registering unit, when the place of registration was wrong.
    pub unit_code: Option<UnitCode>,
    /// Why.
    pub reason: CorrectionReason,
}

impl Correction {
    /// Digest of the correction's content, for idempotent retries.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(&(
            &self.child,
            &self.father,
            &self.mother,
            &self.unit_code,
            &self.reason,
        ))
        .unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}

/// Where a registration's number stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PersonalIdStatus {
    /// Number issued.
    Issued,
    /// Being obtained.
    Pending,
    /// Not eligible.
    NotEligible,
    /// Refused by the population registry.
    Rejected,
}

impl PersonalIdStatus {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "ISSUED",
            Self::Pending => "PENDING",
            Self::NotEligible => "NOT_ELIGIBLE",
            Self::Rejected => "REJECTED",
        }
    }
    /// Inverse of [`Self::as_str`].
    pub fn from_str_opt(raw: &str) -> Option<Self> {
        Some(match raw {
            "ISSUED" => Self::Issued,
            "PENDING" => Self::Pending,
            "NOT_ELIGIBLE" => Self::NotEligible,
            "REJECTED" => Self::Rejected,
            _ => return None,
        })
    }
}

/// Level of an administrative unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnitLevel {
    /// Commune People's Committee.
    Commune,
    /// District Justice Office.
    District,
    /// Province Department of Justice.
    Province,
    /// The Ministry.
    Ministry,
}

impl UnitLevel {
    /// Parses the CSV / storage name.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(match raw {
            "commune" => Self::Commune,
            "district" => Self::District,
            "province" => Self::Province,
            "ministry" => Self::Ministry,
            _ => return Err("must be commune, district, province or ministry".into()),
        })
    }
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commune => "commune",
            Self::District => "district",
            Self::Province => "province",
            Self::Ministry => "ministry",
        }
    }
}

/// An official's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Registers and corrects in the own unit; reads within the jurisdiction.
    Registrar,
    /// Reads only.
    Supervisor,
    /// Reads only.
    Auditor,
    /// Reads only through the API; administration happens through the CLI.
    Admin,
}

impl Role {
    /// Parses the CLI / storage name.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(match raw {
            "registrar" => Self::Registrar,
            "supervisor" => Self::Supervisor,
            "auditor" => Self::Auditor,
            "admin" => Self::Admin,
            _ => return Err("must be registrar, supervisor, auditor or admin".into()),
        })
    }
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registrar => "registrar",
            Self::Supervisor => "supervisor",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }
}

/// An administrative unit as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Code.
    pub code: UnitCode,
    /// Name.
    pub name: String,
    /// Level.
    pub level: UnitLevel,
    /// Legacy three-digit province code, what the number encodes.
    pub province_code: ProvinceCode,
    /// Parent unit, `None` at the top.
    pub parent_code: Option<UnitCode>,
    /// Whether the unit is active.
    pub active: bool,
    /// Materialised path from the top (`/MOJ/P01/D001/`), for jurisdiction checks and
    /// filters: a unit is within another's jurisdiction when its path starts with it.
    pub path: String,
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Official id.
    pub official_id: String,
    /// Role.
    pub role: Role,
    /// Whether the account is active (not revoked).
    pub active: bool,
    /// The official's unit.
    pub unit: Unit,
}

/// A stored registration.
#[derive(Clone)]
pub struct Registration {
    /// Id (UUID v7).
    pub id: uuid::Uuid,
    /// Client idempotency key.
    pub request_id: String,
    /// Registering unit (after corrections).
    pub unit_code: UnitCode,
    /// Unit whose register holds the entry (`registration_number`, `book_number`): the
    /// one that recorded the birth, whatever unit a correction moved it to since.
    pub register_unit_code: UnitCode,
    /// Registering official.
    pub official_id: String,
    /// Number in the register of `register_unit_code` for the year.
    pub registration_number: i64,
    /// Book as printed, `NN/YYYY`.
    pub book_number: String,
    /// Date of registration.
    pub registered_on: NaiveDate,
    /// The birth.
    pub record: BirthRecord,
    /// Status of the number.
    pub status: PersonalIdStatus,
    /// The current number (also kept while a re-issue is pending or refused).
    pub personal_id: Option<String>,
    /// Ineligibility reasons.
    pub reasons: Vec<crate::domain::eligibility::IneligibilityReason>,
    /// Rule version that decided.
    pub rule_version: String,
    /// Why the population registry refused, when REJECTED.
    pub rejection_reason: Option<String>,
    /// Numbers cancelled by corrections, oldest first.
    pub cancelled_personal_ids: Vec<String>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// Last change, ms since the epoch.
    pub updated_at_ms: i64,
    /// When the current number arrived.
    pub issued_at_ms: Option<i64>,
}

/// Registers hold this many entries per book; the book number follows from the entry number.
pub const ENTRIES_PER_BOOK: i64 = 1000;

/// The book number printed on the certificate for an entry of a year.
pub fn book_number(registration_number: i64, year: i32) -> String {
    format!(
        "{:02}/{}",
        (registration_number - 1) / ENTRIES_PER_BOOK + 1,
        year
    )
}

/// How a registration's request to the population registry ended (what the relay wrote).
#[derive(Clone, PartialEq, Eq)]
pub struct Settlement {
    /// ISSUED or REJECTED.
    pub status: PersonalIdStatus,
    /// The number, when issued.
    pub personal_id: Option<String>,
    /// Why refused, when rejected.
    pub rejection_reason: Option<String>,
    /// When it was written, ms since the epoch.
    pub at_ms: i64,
}

/// Ids and state only: the record, the number and the refusal's text are personal data.
impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("unit_code", &self.unit_code)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Without the number.
impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlement")
            .field("status", &self.status)
            .field("at_ms", &self.at_ms)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The registration after `settlement`.
    pub fn settle(&mut self, settlement: Settlement) {
        self.status = settlement.status;
        if let Some(old) = self
            .personal_id
            .take()
            .filter(|old| Some(old) != settlement.personal_id.as_ref())
        {
            if settlement.personal_id.is_some() {
                self.cancelled_personal_ids.push(old);
            } else {
                self.personal_id = Some(old);
            }
        }
        if settlement.personal_id.is_some() {
            self.personal_id = settlement.personal_id;
            self.issued_at_ms = Some(settlement.at_ms);
        }
        self.rejection_reason = settlement.rejection_reason;
        self.updated_at_ms = settlement.at_ms;
    }
}

/// A record of a child named An, for tests.
#[cfg(test)]
pub(crate) fn sample_record(
    kind: RegistrationKind,
    sex: Sex,
    dob: NaiveDate,
    nationality: &str,
) -> BirthRecord {
    let today = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap();
    BirthRecord {
        kind,
        has_foreign_element: false,
        child: Child {
            full_name: PersonName::parse("An").unwrap(),
            sex,
            date_of_birth: BirthDate::parse(dob, today).unwrap(),
            place_of_birth: PlaceOfBirth {
                description: PlaceText::parse("Ha Noi").unwrap(),
                province_code: None,
            },
            home_town: PlaceText::parse("Nam Dinh").unwrap(),
            ethnicity: Ethnicity::parse("Kinh").unwrap(),
            nationality: Nationality::parse(nationality).unwrap(),
        },
        father: None,
        mother: None,
        requester: Requester {
            full_name: PersonName::parse("Binh").unwrap(),
            relationship: Relationship::Father,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_of_spaces_but_refused_with_a_control_character_anywhere() {
        assert_eq!(
            PersonName::parse("  Lê Văn An ").unwrap().as_str(),
            "Lê Văn An"
        );
        for raw in ["Lê\u{7}An", "Lê Văn An\n", "\tLê Văn An", "Lê Văn An\u{85}"] {
            assert_eq!(
                PersonName::parse(raw).unwrap_err(),
                "must not contain control characters",
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_book_holds_a_thousand_entries() {
        assert_eq!(book_number(1, 2025), "01/2025");
        assert_eq!(book_number(1000, 2025), "01/2025");
        assert_eq!(book_number(1001, 2025), "02/2025");
    }

    #[test]
    fn text_typed_with_combining_marks_is_stored_composed() {
        // "Nguyễn" as e + circumflex + tilde, as some keyboards send it.
        let decomposed = "Nguye\u{302}\u{303}n";
        assert_eq!(PersonName::parse(decomposed).unwrap().as_str(), "Nguyễn");
        assert_eq!(
            PersonName::parse(decomposed).unwrap(),
            PersonName::parse("Nguyễn").unwrap()
        );
    }

    #[test]
    fn a_nationality_must_be_an_assigned_code_though_stored_ones_keep_loading() {
        assert_eq!(Nationality::parse("VN").unwrap().as_str(), "VN");
        for unassigned in ["UK", "XX", "EU"] {
            assert_eq!(
                Nationality::parse(unassigned).unwrap_err(),
                "must be an ISO 3166-1 alpha-2 code in upper case",
                "{unassigned}"
            );
            let stored: Nationality = serde_json::from_str(&format!("\"{unassigned}\"")).unwrap();
            assert_eq!(stored.as_str(), unassigned);
        }
        assert!(serde_json::from_str::<Nationality>("\"uk\"").is_err());
    }

    #[test]
    fn a_registration_shows_its_ids_and_state_in_debug_never_the_person() {
        let mut record = sample_record(
            RegistrationKind::FirstTime,
            Sex::Female,
            NaiveDate::from_ymd_opt(2016, 2, 29).unwrap(),
            "VN",
        );
        record.mother = Some(Parent {
            full_name: PersonName::parse("Trần Thị Mai").unwrap(),
            year_of_birth: Some(1990),
            ethnicity: None,
            nationality: Some(Nationality::parse("VN").unwrap()),
            residence: None,
            personal_id: None,
        });
        let registration = Registration {
            id: uuid::Uuid::nil(),
            request_id: "req-1".into(),
            unit_code: UnitCode::parse("C001").unwrap(),
            register_unit_code: UnitCode::parse("C001").unwrap(),
            official_id: "off-1".into(),
            registration_number: 1,
            book_number: "01/2016".into(),
            registered_on: NaiveDate::from_ymd_opt(2016, 3, 1).unwrap(),
            record,
            status: PersonalIdStatus::Issued,
            personal_id: Some("001316000042".into()),
            reasons: Vec::new(),
            rule_version: "2016.1".into(),
            rejection_reason: None,
            cancelled_personal_ids: vec!["001316000041".into()],
            created_at_ms: 0,
            updated_at_ms: 0,
            issued_at_ms: None,
        };
        let shown = format!("{registration:?} {:?}", registration.record);
        assert!(
            shown.contains("C001") && shown.contains("Issued"),
            "{shown}"
        );
        for personal in ["An", "Mai", "1990", "2016-02-29", "00131600004"] {
            assert!(!shown.contains(personal), "{personal} in {shown}");
        }
    }
}
