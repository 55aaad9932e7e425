//! The birth record as the registry accepts it: every field parsed into a
//! type that can only hold a valid value, with the field path of each
//! violation, and the content hash that makes issuance idempotent.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use super::personal_id::{
    BucketKey, FIRST_ENCODABLE_YEAR, LAST_ENCODABLE_YEAR, PersonalId, ProvinceCode, Sex,
};
use super::province::ProvinceTable;

/// A bad field: its path relative to the message being parsed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path, e.g. `birth.date_of_birth`.
    pub field: String,
    /// Human-readable reason.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation under a parent path (`items[3]` + `birth.sex`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Collects violations with their paths while parsing a message.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Keeps the value, or records why `field` is bad.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(reason) => {
                self.0.push(Violation::new(field, reason));
                None
            }
        }
    }

    /// Records a violation.
    pub fn push(&mut self, field: &str, reason: impl Into<String>) {
        self.0.push(Violation::new(field, reason));
    }

    /// Adds violations found under `prefix`.
    pub fn extend_under(&mut self, prefix: &str, inner: Vec<Violation>) {
        self.0.extend(inner.into_iter().map(|v| v.under(prefix)));
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<Violation>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ if self.0.is_empty() => Err(vec![Violation::new("", "invalid")]),
            _ => Err(self.0),
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Normalises free text to NFC, trims it and checks its length in characters. Control
/// characters are refused wherever they stand: trimming first would quietly drop a tab or
/// a line break at either end.
fn text(raw: &str, min: usize, max: usize) -> Result<String, String> {
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    // Most input is already NFC (all ASCII is): the quick check spares the
    // decompose/recompose pass and its allocations.
    let normalised: String = if is_nfc_quick(raw.chars()) == IsNormalized::Yes {
        raw.trim().to_owned()
    } else {
        raw.nfc().collect::<String>().trim().to_owned()
    };
    let len = normalised.chars().count();
    if len < min {
        return Err(if min == 1 {
            "must not be empty".into()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(normalised)
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);
        impl $name {
            /// NFC-normalises and checks the text.
            pub fn parse(raw: &str) -> Result<Self, String> {
                text(raw, $min, $max).map(Self)
            }
            /// The normalised text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        /// Redacted: personal data.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

text_type!(
    /// A person's full name: 1-100 characters, NFC, no control characters.
    PersonName, 1, 100
);
text_type!(
    /// Free text of 1-200 characters (place of birth, home town).
    Text200, 1, 200
);
text_type!(
    /// Optional free text of at most 200 characters (empty = unknown).
    OptText200, 0, 200
);
text_type!(
    /// An ethnic group, 1-50 characters.
    Ethnicity, 1, 50
);
text_type!(
    /// An optional ethnic group (empty = unknown), at most 50 characters.
    OptEthnicity, 0, 50
);
text_type!(
    /// A register book as printed, 1-32 characters.
    BookNumber, 1, 32
);
text_type!(
    /// Why a record was corrected, 1-500 characters.
    Reason, 1, 500
);

fn identifier(raw: &str, max: usize, extra: &[u8]) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        let allowed: String = extra.iter().map(|&b| b as char).collect();
        return Err(format!("must contain only [A-Za-z0-9{allowed}]"));
    }
    Ok(raw.to_owned())
}

/// The caller's idempotency key: 1-64 characters of `[A-Za-z0-9-_.:]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Checks the key's alphabet and length.
    pub fn parse(raw: &str) -> Result<Self, String> {
        identifier(raw, 64, b"-_.:").map(Self)
    }
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A registering unit's code: 1-32 characters of `[A-Za-z0-9-_.]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnitCode(String);

impl UnitCode {
    /// Checks the code's alphabet and length.
    pub fn parse(raw: &str) -> Result<Self, String> {
        identifier(raw, 32, b"-_.").map(Self)
    }
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 country code in upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nationality(String);

impl Nationality {
    /// Checks the code against the ISO 3166-1 alpha-2 list.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if country_codes::is_assigned_alpha2(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 3166-1 alpha-2 code in upper case".into())
        }
    }
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A calendar date checked against the encodable centuries and today.
pub fn past_date(date: Option<NaiveDate>, today: NaiveDate) -> Result<NaiveDate, String> {
    let date = date.ok_or_else(|| "must be a real calendar date".to_owned())?;
    if date > today {
        return Err("must not be in the future".into());
    }
    if !(FIRST_ENCODABLE_YEAR..=LAST_ENCODABLE_YEAR).contains(&date.year()) {
        return Err(format!(
            "year must be within {FIRST_ENCODABLE_YEAR}-{LAST_ENCODABLE_YEAR}"
        ));
    }
    Ok(date)
}

/// A parent or legal representative.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Parent {
    /// Full name.
    pub full_name: PersonName,
    /// Year of birth, `None` when unknown.
    pub year_of_birth: Option<i32>,
    /// Ethnic group; empty when unknown.
    pub ethnicity: OptEthnicity,
    /// Nationality; `None` when unknown.
    pub nationality: Option<Nationality>,
    /// Residence; empty when unknown.
    pub residence: OptText200,
    /// The parent's own number; `None` when unknown.
    pub personal_id: Option<PersonalId>,
}

/// Redacted: personal data.
impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Parent(<redacted>)")
    }
}

/// The raw parent fields, before parsing.
#[derive(Default)]
pub struct ParentInput<'a> {
    /// Raw full name.
    pub full_name: &'a str,
    /// Year, 0 = unknown.
    pub year_of_birth: i32,
    /// Raw ethnicity.
    pub ethnicity: &'a str,
    /// Raw nationality.
    pub nationality: &'a str,
    /// Raw residence.
    pub residence: &'a str,
    /// Raw number.
    pub personal_id: &'a str,
}

impl fmt::Debug for ParentInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParentInput(<redacted>)")
    }
}

impl Parent {
    /// Parses every field, with paths relative to the parent message.
    pub fn parse(input: &ParentInput<'_>, today: NaiveDate) -> Result<Self, Vec<Violation>> {
        let mut v = Violations::default();
        let full_name = v.check("full_name", PersonName::parse(input.full_name));
        let year_of_birth = v.check(
            "year_of_birth",
            match input.year_of_birth {
                0 => Ok(None),
                y if (1850..=today.year()).contains(&y) => Ok(Some(y)),
                _ => Err(format!(
                    "must be 0 (unknown) or a year within 1850-{}",
                    today.year()
                )),
            },
        );
        let ethnicity = v.check("ethnicity", OptEthnicity::parse(input.ethnicity));
        let nationality = v.check(
            "nationality",
            match input.nationality {
                "" => Ok(None),
                raw => Nationality::parse(raw).map(Some),
            },
        );
        let residence = v.check("residence", OptText200::parse(input.residence));
        let personal_id = v.check(
            "personal_id",
            match input.personal_id {
                "" => Ok(None),
                raw => PersonalId::parse(raw).map(Some).map_err(|e| e.to_string()),
            },
        );
        let value = (|| {
            Some(Self {
                full_name: full_name?,
                year_of_birth: year_of_birth?,
                ethnicity: ethnicity?,
                nationality: nationality?,
                residence: residence?,
                personal_id: personal_id?,
            })
        })();
        v.finish(value)
    }
}

/// The civil registry's register entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistrationRef {
    /// Registering unit.
    pub unit_code: UnitCode,
    /// Entry number in the book's year, >= 1.
    pub registration_number: i64,
    /// Register book.
    pub book_number: BookNumber,
    /// Date of registration.
    pub registration_date: NaiveDate,
}

impl RegistrationRef {
    /// [`register_entry_key`] of this entry.
    pub fn entry_key(&self) -> i64 {
        register_entry_key(
            self.unit_code.as_str(),
            self.book_number.as_str(),
            self.registration_number,
        )
    }
}

/// The integer the citizens are indexed by for FindCitizenByRegistration: a digest of the
/// unit and book in the high 39 bits, the entry number in the low 24. A book's entries
/// stay together and in number order, so each book's new entries append at its own end
/// of the index, as with the three columns it replaces, but the key is one narrow integer
/// compared at once (a batch of a million numbers ran 9 % faster than with the three
/// columns). A lookup checks the three columns as well, so two books that share a
/// digest, or numbers past 2^24 (which wrap), only cost it an extra row. Stored in every
/// row: never change the formula without a migration that recomputes it.
pub fn register_entry_key(unit_code: &str, book_number: &str, registration_number: i64) -> i64 {
    let mut h = Sha256::new();
    field(&mut h, unit_code);
    field(&mut h, book_number);
    let digest = h.finalize();
    let mut high = [0u8; 8];
    high[3..].copy_from_slice(&digest[..5]);
    let book = i64::from_be_bytes(high) & ((1 << 39) - 1);
    (book << 24) | (registration_number & ((1 << 24) - 1))
}

/// The raw birth fields, before parsing (the gRPC layer fills it from proto).
#[derive(Default)]
pub struct BirthInput<'a> {
    /// Raw full name.
    pub full_name: &'a str,
    /// Sex; `None` when unspecified or unknown.
    pub sex: Option<Sex>,
    /// Date of birth: outer `None` = missing, inner `None` = not a real date.
    pub date_of_birth: Option<Option<NaiveDate>>,
    /// Place of birth: `None` when the message is missing.
    pub place_of_birth: Option<(&'a str, &'a str)>,
    /// Raw registration province code.
    pub registration_province_code: &'a str,
    /// Raw home town.
    pub home_town: &'a str,
    /// Raw ethnicity.
    pub ethnicity: &'a str,
    /// Raw nationality.
    pub nationality: &'a str,
    /// Father, when recorded.
    pub father: Option<ParentInput<'a>>,
    /// Mother, when recorded.
    pub mother: Option<ParentInput<'a>>,
    /// Registration: unit, number, book, date (outer `None` = message missing).
    pub registration: Option<RegistrationInput<'a>>,
}

impl fmt::Debug for BirthInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BirthInput(<redacted>)")
    }
}

/// The raw register entry.
#[derive(Debug, Default)]
pub struct RegistrationInput<'a> {
    /// Raw unit code.
    pub unit_code: &'a str,
    /// Raw number.
    pub registration_number: i64,
    /// Raw book.
    pub book_number: &'a str,
    /// Outer `None` = missing, inner `None` = not a real date.
    pub registration_date: Option<Option<NaiveDate>>,
}

/// A birth record in which every field is valid.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BirthRecord {
    /// Child's full name.
    pub full_name: PersonName,
    /// Child's sex.
    pub sex: Sex,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Place of birth as written.
    pub place_of_birth: Text200,
    /// Province of birth; `None` when born abroad.
    pub place_of_birth_province: Option<ProvinceCode>,
    /// Province of registration (digits 1-3).
    pub registration_province: ProvinceCode,
    /// Home town.
    pub home_town: Text200,
    /// Ethnic group.
    pub ethnicity: Ethnicity,
    /// Always VN: numbers are issued only to Vietnamese citizens.
    pub nationality: Nationality,
    /// Father.
    pub father: Option<Parent>,
    /// Mother.
    pub mother: Option<Parent>,
    /// The register entry.
    pub registration: RegistrationRef,
}

/// Redacted: personal data.
impl fmt::Debug for BirthRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BirthRecord(<redacted>)")
    }
}

impl BirthRecord {
    /// Parses every field; paths are relative to the `BirthRecord` message.
    pub fn parse(
        input: &BirthInput<'_>,
        provinces: &ProvinceTable,
        today: NaiveDate,
    ) -> Result<Self, Vec<Violation>> {
        let mut v = Violations::default();
        let full_name = v.check("full_name", PersonName::parse(input.full_name));
        let sex = v.check(
            "sex",
            input
                .sex
                .ok_or_else(|| "must be SEX_MALE or SEX_FEMALE".to_owned()),
        );
        let registration = match &input.registration {
            None => {
                v.push("registration", "is required");
                None
            }
            Some(r) => {
                let unit_code = v.check("registration.unit_code", UnitCode::parse(r.unit_code));
                let number = v.check(
                    "registration.registration_number",
                    if r.registration_number >= 1 {
                        Ok(r.registration_number)
                    } else {
                        Err("must be at least 1".into())
                    },
                );
                let book = v.check("registration.book_number", BookNumber::parse(r.book_number));
                let date = v.check(
                    "registration.registration_date",
                    match r.registration_date {
                        None => Err("is required".into()),
                        Some(d) => past_date(d, today),
                    },
                );
                (|| {
                    Some(RegistrationRef {
                        unit_code: unit_code?,
                        registration_number: number?,
                        book_number: book?,
                        registration_date: date?,
                    })
                })()
            }
        };
        let registration_date = registration.as_ref().map(|r| r.registration_date);
        let date_of_birth = v.check(
            "date_of_birth",
            match input.date_of_birth {
                None => Err("is required".into()),
                Some(d) => past_date(d, today).and_then(|dob| match registration_date {
                    Some(reg) if dob > reg => Err("must not be after the registration date".into()),
                    _ => Ok(dob),
                }),
            },
        );
        let (place_of_birth, place_of_birth_province) = match input.place_of_birth {
            None => {
                v.push("place_of_birth", "is required");
                (None, None)
            }
            Some((description, province)) => (
                v.check("place_of_birth.description", Text200::parse(description)),
                v.check(
                    "place_of_birth.province_code",
                    match province {
                        "" => Ok(None),
                        raw => provinces.known(raw).map(Some).map_err(|e| e.to_string()),
                    },
                ),
            ),
        };
        let registration_province = match registration_date {
            Some(on) => v.check(
                "registration_province_code",
                provinces
                    .valid_on(input.registration_province_code, on)
                    .map_err(|e| e.to_string()),
            ),
            // Without a valid registration date the code can only be checked for being known.
            None => v.check(
                "registration_province_code",
                provinces
                    .known(input.registration_province_code)
                    .map_err(|e| e.to_string()),
            ),
        };
        let home_town = v.check("home_town", Text200::parse(input.home_town));
        let ethnicity = v.check("ethnicity", Ethnicity::parse(input.ethnicity));
        let nationality = v.check(
            "nationality",
            Nationality::parse(input.nationality).and_then(|n| {
                if n.as_str() == "VN" {
                    Ok(n)
                } else {
                    Err("numbers are issued only to Vietnamese citizens (\"VN\")".into())
                }
            }),
        );
        let mut parent = |name: &str, p: &Option<ParentInput<'_>>| match p {
            None => Some(None),
            Some(p) => match Parent::parse(p, today) {
                Ok(parent) => Some(Some(parent)),
                Err(inner) => {
                    v.extend_under(name, inner);
                    None
                }
            },
        };
        let father = parent("father", &input.father);
        let mother = parent("mother", &input.mother);
        let value = (|| {
            Some(Self {
                full_name: full_name?,
                sex: sex?,
                date_of_birth: date_of_birth?,
                place_of_birth: place_of_birth?,
                place_of_birth_province: place_of_birth_province?,
                registration_province: registration_province?,
                home_town: home_town?,
                ethnicity: ethnicity?,
                nationality: nationality?,
                father: father?,
                mother: mother?,
                registration: registration?,
            })
        })();
        v.finish(value)
    }

    /// The bucket this record's number is drawn from.
    pub fn bucket(&self) -> BucketKey {
        BucketKey::new(
            self.registration_province,
            self.sex,
            self.date_of_birth.year(),
        )
        .unwrap_or_else(|_| unreachable!("date_of_birth was checked to be encodable"))
    }

    /// Key of the duplicate-suspect check: same name, date of birth, mother's
    /// name and place of birth. The date of birth (days since 0001-01-01)
    /// leads and 40 bits of SHA-256 follow: records registered together are
    /// born around the same days, so their index entries land on the same few
    /// pages instead of one random page each. A collision only adds a
    /// spurious warning.
    pub fn duplicate_key(&self) -> i64 {
        let mut h = Sha256::new();
        field(&mut h, self.full_name.as_str());
        field(&mut h, &self.date_of_birth.to_string());
        field(
            &mut h,
            self.mother.as_ref().map_or("", |m| m.full_name.as_str()),
        );
        field(&mut h, self.place_of_birth.as_str());
        let digest = h.finalize();
        let mut low = [0u8; 8];
        low[3..].copy_from_slice(&digest[..5]);
        // Encodable birth dates are within 1900..=2399: under 2^20 days.
        let days = i64::from(self.date_of_birth.num_days_from_ce().max(0));
        (days << 40) | i64::from_be_bytes(low)
    }

    /// Feeds every field, in a fixed order and length-prefixed, into `h`.
    fn hash_into(&self, h: &mut Sha256) {
        field(h, self.full_name.as_str());
        field(h, sex_str(self.sex));
        field(h, &self.date_of_birth.to_string());
        field(h, self.place_of_birth.as_str());
        field(
            h,
            &self
                .place_of_birth_province
                .map(|p| p.to_string())
                .unwrap_or_default(),
        );
        field(h, &self.registration_province.to_string());
        field(h, self.home_town.as_str());
        field(h, self.ethnicity.as_str());
        field(h, self.nationality.as_str());
        for parent in [&self.father, &self.mother] {
            match parent {
                None => field(h, "-"),
                Some(p) => {
                    field(h, "+");
                    field(h, p.full_name.as_str());
                    field(h, &p.year_of_birth.unwrap_or(0).to_string());
                    field(h, p.ethnicity.as_str());
                    field(h, p.nationality.as_ref().map_or("", |n| n.as_str()));
                    field(h, p.residence.as_str());
                    field(
                        h,
                        &p.personal_id.map(|id| id.to_string()).unwrap_or_default(),
                    );
                }
            }
        }
        let r = &self.registration;
        field(h, r.unit_code.as_str());
        field(h, &r.registration_number.to_string());
        field(h, r.book_number.as_str());
        field(h, &r.registration_date.to_string());
    }
}

fn field(h: &mut Sha256, value: &str) {
    h.update((value.len() as u64).to_be_bytes());
    h.update(value.as_bytes());
}

/// `male` / `female`, as stored and hashed.
pub fn sex_str(sex: Sex) -> &'static str {
    match sex {
        Sex::Male => "male",
        Sex::Female => "female",
    }
}

/// SHA-256 of a request's content, hex: what the idempotency key is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hash of a first issuance.
    pub fn of_issue(record: &BirthRecord) -> Self {
        let mut h = Sha256::new();
        field(&mut h, "issue/v1");
        record.hash_into(&mut h);
        Self(hex::encode(h.finalize()))
    }

    /// Hash of a re-issue: the cancelled number, the corrected record, the reason.
    pub fn of_reissue(old: PersonalId, record: &BirthRecord, reason: &Reason) -> Self {
        let mut h = Sha256::new();
        field(&mut h, "reissue/v1");
        field(&mut h, &old.to_string());
        record.hash_into(&mut h);
        field(&mut h, reason.as_str());
        Self(hex::encode(h.finalize()))
    }

    /// A stored hash.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::province::PostMergerRule;
    use proptest::prelude::*;

    #[test]
    fn a_books_entries_keep_number_order_under_one_digest_and_the_formula_is_fixed() {
        let key = |unit, book, n| register_entry_key(unit, book, n);
        assert!(key("C001", "01/2016", 1) < key("C001", "01/2016", 2));
        assert_eq!(key("C001", "01/2016", 2) - key("C001", "01/2016", 1), 1);
        assert_ne!(
            key("C001", "01/2016", 1) >> 24,
            key("C002", "01/2016", 1) >> 24
        );
        assert_ne!(
            key("C001", "01/2016", 1) >> 24,
            key("C001", "01/2017", 1) >> 24
        );
        // Length-prefixed: moving a character between unit and book changes the digest.
        assert_ne!(key("C00", "101/2016", 7), key("C001", "01/2016", 7));
        assert!(key("C001", "01/2016", (1 << 24) + 5) >= 0);
        // Stored in every row: this value may only change with a migration.
        assert_eq!(key("C001", "01/2016", 7), 0x6399_3fdb_2b00_0007);
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> Option<Option<NaiveDate>> {
        Some(NaiveDate::from_ymd_opt(y, m, d))
    }

    fn input() -> BirthInput<'static> {
        BirthInput {
            full_name: "Nguyễn Văn An",
            sex: Some(Sex::Male),
            date_of_birth: date(2021, 3, 4),
            place_of_birth: Some(("Bệnh viện Phụ sản Hà Nội", "001")),
            registration_province_code: "001",
            home_town: "Nam Định",
            ethnicity: "Kinh",
            nationality: "VN",
            father: None,
            mother: Some(ParentInput {
                full_name: "Trần Thị Bình",
                year_of_birth: 1995,
                nationality: "VN",
                ..ParentInput::default()
            }),
            registration: Some(RegistrationInput {
                unit_code: "HN-001",
                registration_number: 12,
                book_number: "01/2021",
                registration_date: date(2021, 3, 10),
            }),
        }
    }

    fn parse(input: &BirthInput<'_>) -> Result<BirthRecord, Vec<Violation>> {
        let table = ProvinceTable::load(PostMergerRule::Legacy).unwrap();
        BirthRecord::parse(input, &table, today())
    }

    fn fields(result: Result<BirthRecord, Vec<Violation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_complete_record_parses_and_encodes_its_bucket() {
        let record = parse(&input()).unwrap();
        assert_eq!(record.bucket().prefix(), 1221);
    }

    #[test]
    fn every_listed_country_code_is_accepted_and_nothing_else() {
        for code in country_codes::assigned_alpha2() {
            assert!(Nationality::parse(code).is_ok(), "{code}");
        }
        for bad in ["", "A", "vn", "VNM", "AA", "ZZ", "AB", "  ", "VN "] {
            assert!(Nationality::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn already_normalised_text_is_kept_and_only_trimmed() {
        assert_eq!(
            PersonName::parse("  Nguyễn Văn An ").unwrap().as_str(),
            "Nguyễn Văn An"
        );
    }

    #[test]
    fn names_are_stored_in_nfc_form() {
        let mut i = input();
        let decomposed = "Nguye\u{302}\u{303}n Văn An";
        i.full_name = decomposed;
        let record = parse(&i).unwrap();
        assert_eq!(record.full_name.as_str(), "Nguyễn Văn An");
        assert_eq!(
            ContentHash::of_issue(&record),
            ContentHash::of_issue(&parse(&input()).unwrap())
        );
    }

    #[test]
    fn each_bad_field_is_reported_with_its_path() {
        let mut i = input();
        i.full_name = "";
        i.sex = None;
        i.nationality = "FR";
        i.registration_province_code = "003";
        i.mother.as_mut().unwrap().nationality = "vn";
        assert_eq!(
            fields(parse(&i)),
            vec![
                "full_name",
                "sex",
                "registration_province_code",
                "nationality",
                "mother.nationality"
            ]
        );
    }

    #[test]
    fn dates_must_be_real_past_and_not_after_registration() {
        let mut i = input();
        i.date_of_birth = Some(None);
        assert_eq!(fields(parse(&i)), vec!["date_of_birth"]);
        i.date_of_birth = date(2027, 1, 1);
        assert_eq!(fields(parse(&i)), vec!["date_of_birth"]);
        i.date_of_birth = date(2021, 3, 11);
        assert_eq!(fields(parse(&i)), vec!["date_of_birth"]);
        i.date_of_birth = date(1899, 12, 31);
        assert_eq!(fields(parse(&i)), vec!["date_of_birth"]);
        // Born on the day of registration is the usual case at a hospital's desk.
        i.date_of_birth = date(2021, 3, 10);
        assert!(parse(&i).is_ok());
    }

    #[test]
    fn the_registration_province_is_checked_on_the_registration_date_not_today() {
        // Under the merged rule Ha Giang (002) is no longer a registering province from
        // 2025-07-01; a registration made the day before is still valid today.
        let merged = ProvinceTable::load(PostMergerRule::Merged).unwrap();
        let registered_on = |day: Option<Option<NaiveDate>>| {
            let mut i = input();
            i.registration_province_code = "002";
            i.place_of_birth = Some(("Bệnh viện Hà Giang", "002"));
            i.date_of_birth = date(2025, 6, 1);
            i.registration = Some(RegistrationInput {
                unit_code: "HG-001",
                registration_number: 12,
                book_number: "01/2025",
                registration_date: day,
            });
            BirthRecord::parse(&i, &merged, today())
        };
        assert!(registered_on(date(2025, 6, 30)).is_ok());
        assert_eq!(
            fields(registered_on(date(2025, 7, 1))),
            vec!["registration_province_code"]
        );
    }

    #[test]
    fn names_with_control_characters_or_over_100_characters_are_refused() {
        let mut i = input();
        i.full_name = "An\u{7}";
        assert_eq!(fields(parse(&i)), vec!["full_name"]);
        for at_an_end in ["An\n", "\tAn", "An\u{85}"] {
            i.full_name = at_an_end;
            assert_eq!(fields(parse(&i)), vec!["full_name"], "{at_an_end:?}");
        }
        let long = "a".repeat(101);
        i.full_name = &long;
        assert_eq!(fields(parse(&i)), vec!["full_name"]);
        let max = "ễ".repeat(100);
        i.full_name = &max;
        assert!(parse(&i).is_ok());
    }

    #[test]
    fn missing_messages_are_reported() {
        let mut i = input();
        i.registration = None;
        i.place_of_birth = None;
        assert_eq!(fields(parse(&i)), vec!["registration", "place_of_birth"]);
    }

    #[test]
    fn every_field_of_the_content_is_in_the_hash() {
        type Change = fn(&mut BirthInput<'static>);
        fn mother<'a>(i: &'a mut BirthInput<'static>) -> &'a mut ParentInput<'static> {
            i.mother.as_mut().unwrap()
        }
        fn registration<'a>(i: &'a mut BirthInput<'static>) -> &'a mut RegistrationInput<'static> {
            i.registration.as_mut().unwrap()
        }
        // The child's nationality is always VN: no other value parses.
        let changes: [(&str, Change); 19] = [
            ("full_name", |i| i.full_name = "Nguyễn Văn Anh"),
            ("sex", |i| i.sex = Some(Sex::Female)),
            ("date_of_birth", |i| i.date_of_birth = date(2021, 3, 5)),
            ("place_of_birth.name", |i| {
                i.place_of_birth = Some(("Bệnh viện Bạch Mai", "001"));
            }),
            ("place_of_birth.province", |i| {
                i.place_of_birth = Some(("Bệnh viện Phụ sản Hà Nội", "031"));
            }),
            ("registration_province", |i| {
                i.registration_province_code = "031";
            }),
            ("home_town", |i| i.home_town = "Hà Nam"),
            ("ethnicity", |i| i.ethnicity = "Tày"),
            ("father", |i| {
                i.father = Some(ParentInput {
                    full_name: "Nguyễn Văn Cường",
                    ..ParentInput::default()
                });
            }),
            ("mother.full_name", |i| {
                mother(i).full_name = "Trần Thị Bính"
            }),
            ("mother.year_of_birth", |i| mother(i).year_of_birth = 1996),
            ("mother.ethnicity", |i| mother(i).ethnicity = "Kinh"),
            ("mother.nationality", |i| mother(i).nationality = "LA"),
            ("mother.residence", |i| mother(i).residence = "Hà Nội"),
            ("mother.personal_id", |i| {
                mother(i).personal_id = "001195000123";
            }),
            ("registration.unit_code", |i| {
                registration(i).unit_code = "HN-002";
            }),
            ("registration.registration_number", |i| {
                registration(i).registration_number = 13;
            }),
            ("registration.book_number", |i| {
                registration(i).book_number = "02/2021";
            }),
            ("registration.registration_date", |i| {
                registration(i).registration_date = date(2021, 3, 11);
            }),
        ];
        let mut seen = std::collections::HashMap::new();
        seen.insert(ContentHash::of_issue(&parse(&input()).unwrap()), "none");
        for (field, change) in changes {
            let mut i = input();
            change(&mut i);
            let record = parse(&i).unwrap_or_else(|e| panic!("{field}: {e:?}"));
            if let Some(same) = seen.insert(ContentHash::of_issue(&record), field) {
                panic!("changing {field} hashes as changing {same}");
            }
        }
    }

    #[test]
    fn the_content_hash_of_a_record_is_what_the_register_has_stored_since_the_first_release() {
        // Stored idempotency keys are bound to this value: a change of the hash's input or
        // encoding would answer every retry of an earlier request IDEMPOTENCY_KEY_REUSED.
        let hash = ContentHash::of_issue(&parse(&input()).unwrap());
        assert_eq!(
            hash.as_str(),
            "39a3fd400d7345d370e5cbc2e55d3d10cad50c5cff575774c4f43efd19a7e67f"
        );
    }

    proptest! {
        #[test]
        fn person_names_never_hold_control_characters_or_exceed_100_chars(raw in "\\PC{0,120}|[\\x00-\\x1f]{1,3}") {
            if let Ok(name) = PersonName::parse(&raw) {
                prop_assert!(!name.as_str().chars().any(char::is_control));
                let n = name.as_str().chars().count();
                prop_assert!((1..=100).contains(&n));
            }
        }

        #[test]
        fn request_ids_keep_to_their_alphabet(raw in ".{0,70}") {
            if let Ok(id) = RequestId::parse(&raw) {
                prop_assert!(id.as_str().len() <= 64 && !id.as_str().is_empty());
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
            }
        }
    }
}
