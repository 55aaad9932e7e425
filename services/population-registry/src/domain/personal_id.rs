//! The 12-digit personal identification number: parsing, decoding and the
//! (province, century-sex, year) bucket its first six digits name.

use std::fmt;

/// Sex as digit 4 of the number encodes it (odd = female).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sex {
    /// Male.
    Male,
    /// Female.
    Female,
}

/// A three-digit province (or country) code, `000`-`999`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvinceCode(u16);

impl ProvinceCode {
    /// Parses exactly three ASCII digits.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be exactly 3 digits".into());
        }
        raw.parse::<u16>()
            .map(Self)
            .map_err(|_| "must be exactly 3 digits".into())
    }

    /// The code as a number (0-999).
    pub fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

impl fmt::Debug for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProvinceCode({:03})", self.0)
    }
}

/// First year of the earliest century the number can encode.
pub const FIRST_ENCODABLE_YEAR: i32 = 1900;
/// Last year the number can encode (digit 4 = 8/9 is the 2300s).
pub const LAST_ENCODABLE_YEAR: i32 = 2399;

/// The space of one (province, century-sex, year) prefix: 10^6 suffixes.
pub const SUFFIX_SPACE: u32 = 1_000_000;

/// The first six digits of a number: the pool the last six are drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    province: ProvinceCode,
    century_sex: u8,
    year_in_century: u8,
}

impl BucketKey {
    /// The bucket of a child of `sex` born in `birth_year`, registered in `province`.
    pub fn new(province: ProvinceCode, sex: Sex, birth_year: i32) -> Result<Self, String> {
        if !(FIRST_ENCODABLE_YEAR..=LAST_ENCODABLE_YEAR).contains(&birth_year) {
            return Err(format!(
                "year {birth_year} is outside the centuries the number can encode ({FIRST_ENCODABLE_YEAR}-{LAST_ENCODABLE_YEAR})"
            ));
        }
        let century = (birth_year - FIRST_ENCODABLE_YEAR) / 100;
        let sex_bit = match sex {
            Sex::Male => 0,
            Sex::Female => 1,
        };
        Ok(Self {
            province,
            century_sex: u8::try_from(century * 2 + sex_bit).map_err(|e| e.to_string())?,
            year_in_century: u8::try_from(birth_year % 100).map_err(|e| e.to_string())?,
        })
    }

    /// The six-digit prefix as a number (e.g. 001221).
    pub fn prefix(self) -> u64 {
        u64::from(self.province.0) * 1000
            + u64::from(self.century_sex) * 100
            + u64::from(self.year_in_century)
    }

    /// Rebuilds a bucket from its six-digit prefix.
    pub fn from_prefix(prefix: u64) -> Option<Self> {
        if prefix >= 1_000_000 {
            return None;
        }
        Some(Self {
            province: ProvinceCode(u16::try_from(prefix / 1000).ok()?),
            century_sex: u8::try_from((prefix / 100) % 10).ok()?,
            year_in_century: u8::try_from(prefix % 100).ok()?,
        })
    }

    /// The smallest number of this bucket.
    pub fn first_number(self) -> u64 {
        self.prefix() * u64::from(SUFFIX_SPACE)
    }

    /// The number with this prefix and the given six-digit suffix.
    pub fn number(self, suffix: u32) -> PersonalId {
        debug_assert!(suffix < SUFFIX_SPACE);
        PersonalId(self.first_number() + u64::from(suffix % SUFFIX_SPACE))
    }

    /// Province of registration.
    pub fn province(self) -> ProvinceCode {
        self.province
    }

    /// Sex from the century-sex digit.
    pub fn sex(self) -> Sex {
        if self.century_sex.is_multiple_of(2) {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// First year of the century (1900, 2000, ... 2300).
    pub fn century_start_year(self) -> i32 {
        FIRST_ENCODABLE_YEAR + i32::from(self.century_sex / 2) * 100
    }

    /// Full year of birth.
    pub fn birth_year(self) -> i32 {
        self.century_start_year() + i32::from(self.year_in_century)
    }
}

/// Why a string is not a personal identification number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersonalIdError {
    /// Not exactly twelve ASCII digits.
    #[error("must be exactly 12 digits")]
    Format,
}

/// A well-formed 12-digit number. Digit 4 always decodes (0-9 cover five
/// centuries); whether the province code is known is a separate question
/// (see `ProvinceTable`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonalId(u64);

impl PersonalId {
    /// Parses exactly twelve ASCII digits (no sign, no spaces).
    pub fn parse(raw: &str) -> Result<Self, PersonalIdError> {
        if raw.len() != 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PersonalIdError::Format);
        }
        raw.parse::<u64>()
            .map(Self)
            .map_err(|_| PersonalIdError::Format)
    }

    /// Rebuilds a number from its integer form (as stored).
    pub fn from_u64(value: u64) -> Result<Self, PersonalIdError> {
        if value < 1_000_000_000_000 {
            Ok(Self(value))
        } else {
            Err(PersonalIdError::Format)
        }
    }

    /// The number as an integer (leading zeros dropped).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The bucket (digits 1-6).
    pub fn bucket(self) -> BucketKey {
        BucketKey::from_prefix(self.0 / u64::from(SUFFIX_SPACE))
            .unwrap_or_else(|| unreachable!("a 12-digit number has a 6-digit prefix"))
    }

    /// Digits 7-12.
    pub fn suffix(self) -> u32 {
        u32::try_from(self.0 % u64::from(SUFFIX_SPACE)).unwrap_or(0)
    }

    /// Digits 1-3.
    pub fn province(self) -> ProvinceCode {
        self.bucket().province()
    }

    /// Sex from digit 4.
    pub fn sex(self) -> Sex {
        self.bucket().sex()
    }

    /// Full year of birth from digits 4-6.
    pub fn birth_year(self) -> i32 {
        self.bucket().birth_year()
    }
}

impl fmt::Display for PersonalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

/// Redacted: a number identifies a person and never goes to logs.
impl fmt::Debug for PersonalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_example_number_decodes_as_a_boy_registered_in_ha_noi_born_2021() {
        let id = PersonalId::parse("001221028568").unwrap();
        assert_eq!(id.province().to_string(), "001");
        assert_eq!(id.sex(), Sex::Male);
        assert_eq!(id.bucket().century_start_year(), 2000);
        assert_eq!(id.birth_year(), 2021);
        assert_eq!(id.suffix(), 28568);
        assert_eq!(id.to_string(), "001221028568");
    }

    #[test]
    fn digit_four_covers_five_centuries_and_both_sexes() {
        let cases = [
            ('0', 1900, Sex::Male),
            ('1', 1900, Sex::Female),
            ('2', 2000, Sex::Male),
            ('3', 2000, Sex::Female),
            ('8', 2300, Sex::Male),
            ('9', 2300, Sex::Female),
        ];
        for (digit, century, sex) in cases {
            let id = PersonalId::parse(&format!("079{digit}05123456")).unwrap();
            assert_eq!(id.bucket().century_start_year(), century);
            assert_eq!(id.sex(), sex);
            assert_eq!(id.birth_year(), century + 5);
        }
    }

    #[test]
    fn parse_rejects_wrong_lengths_signs_and_non_digits() {
        for raw in [
            "",
            "00122102856",
            "0012210285689",
            "+01221028568",
            "00122102856a",
            " 01221028568",
            "٠٠١٢٢١٠٢٨٥٦٨",
        ] {
            assert_eq!(
                PersonalId::parse(raw),
                Err(PersonalIdError::Format),
                "{raw}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_number() {
        let id = PersonalId::parse("001221028568").unwrap();
        assert!(!format!("{id:?}").contains("1221028568"));
    }

    #[test]
    fn bucket_rejects_years_the_number_cannot_encode() {
        let p = ProvinceCode::parse("001").unwrap();
        assert!(BucketKey::new(p, Sex::Male, 1899).is_err());
        assert!(BucketKey::new(p, Sex::Male, 2400).is_err());
        assert!(BucketKey::new(p, Sex::Female, 2399).is_ok());
    }

    proptest! {
        #[test]
        fn any_twelve_digit_string_parses_and_prints_back(raw in "[0-9]{12}") {
            let id = PersonalId::parse(&raw).unwrap();
            prop_assert_eq!(id.to_string(), raw);
        }

        #[test]
        fn a_bucket_and_suffix_round_trip_through_the_number(
            province in 0u16..1000, female in any::<bool>(), year in 1900i32..2400, suffix in 0u32..SUFFIX_SPACE
        ) {
            let sex = if female { Sex::Female } else { Sex::Male };
            let key = BucketKey::new(ProvinceCode(province), sex, year).unwrap();
            let id = key.number(suffix);
            prop_assert_eq!(id.bucket(), key);
            prop_assert_eq!(id.suffix(), suffix);
            prop_assert_eq!(id.sex(), sex);
            prop_assert_eq!(id.birth_year(), year);
            prop_assert_eq!(PersonalId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn anything_not_twelve_digits_is_refused(raw in "\\PC{0,20}") {
            prop_assume!(!(raw.len() == 12 && raw.bytes().all(|b| b.is_ascii_digit())));
            prop_assert!(PersonalId::parse(&raw).is_err());
        }
    }
}
