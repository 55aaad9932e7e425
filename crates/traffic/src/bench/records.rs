//! Valid `IssuePersonalIdRequest`s for the minting benchmark, a pure function of a run id,
//! an order and a sequence number: unique request ids, every province and both sexes in
//! turn, and birth years varied so that 10 million numbers fill no (province, century-sex,
//! year) bucket past 2%.

use crate::catalog::{
    FAMILY_NAMES, FEMALE_GIVEN, FEMALE_MIDDLE, MALE_GIVEN, MALE_MIDDLE, PROVINCES,
};
use chrono::{Datelike as _, Days, NaiveDate};
use contracts::google::r#type::Date;
use contracts::mps::population::v1::{
    BirthRecord, IssuePersonalIdRequest, Parent, PlaceOfBirth, RegistrationReference, Sex,
};

/// Birth years drawn from: 2016..=2024, so that registration dates stay before the
/// 2025-07-01 province merger (the legacy codes are valid on every date used).
const FIRST_YEAR: i32 = 2016;
const YEARS: u64 = 9;

/// 63 provinces x 2 sexes x 9 years.
pub const BUCKETS: u64 = 63 * 2 * YEARS;

/// Register order: births per day of the national rate (about 1.5 million a year).
const REGISTER_ORDER_PER_DAY: u64 = 4_110;
/// Register order: days after 2016-01-01 before the dates start again, so that every
/// registration date precedes the 2025-07-01 merger.
const REGISTER_ORDER_DAYS: u64 = 3_400;

/// In which order the requests come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// As a register is kept and replayed: by date of birth and registration, at the
    /// national rate of about 4,110 births a day (1 million numbers span 243 days of
    /// 2016; 10 million, 2016 to 2022). Live traffic and a backfill in register order both
    /// look like this.
    Register,
    /// Every (province, sex, birth year 2016-2024, day) in turn: consecutive requests far
    /// apart in every index, the worst case for the database's page cache.
    Spread,
}

/// Makes the benchmark's requests.
#[derive(Debug, Clone)]
pub struct RecordGen {
    run: String,
    order: Order,
}

pub(super) fn mix(mut x: u64) -> u64 {
    // splitmix64: spreads consecutive sequence numbers over the name lists.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn date(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

impl RecordGen {
    /// `run` makes request ids unique across runs against the same database.
    pub fn new(run: &str, order: Order) -> Self {
        Self {
            run: run.to_owned(),
            order,
        }
    }

    /// The `seq`-th request of the run.
    pub fn issue(&self, seq: u64) -> IssuePersonalIdRequest {
        let province = &PROVINCES[(seq % 63) as usize];
        let male = (seq / 63).is_multiple_of(2);
        let dob = match self.order {
            Order::Register => {
                let day = (seq / REGISTER_ORDER_PER_DAY) % REGISTER_ORDER_DAYS;
                NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)
                    .and_then(|d| d.checked_add_days(Days::new(day)))
                    .unwrap_or_else(|| unreachable!("within 2016..2025"))
            }
            Order::Spread => {
                let year = FIRST_YEAR + ((seq / 126) % YEARS) as i32;
                let day_of_year = ((seq / BUCKETS) % 365) as u32 + 1;
                NaiveDate::from_yo_opt(year, day_of_year)
                    .unwrap_or_else(|| unreachable!("day 1..=365 exists in every year"))
            }
        };
        let year = dob.year();
        let h = mix(seq);
        let registered = dob.checked_add_days(Days::new(1 + h % 30)).unwrap_or(dob);
        let pick = |list: &[&'static str], shift: u32| list[((h >> shift) as usize) % list.len()];
        let family = FAMILY_NAMES[((h >> 8) as usize) % FAMILY_NAMES.len()].0;
        let (middle, given) = if male {
            (pick(MALE_MIDDLE, 16), pick(MALE_GIVEN, 24))
        } else {
            (pick(FEMALE_MIDDLE, 16), pick(FEMALE_GIVEN, 24))
        };
        let mother_family = FAMILY_NAMES[((h >> 32) as usize) % FAMILY_NAMES.len()].0;
        let parent = |full_name: String, age: i32| Parent {
            full_name,
            year_of_birth: year - age,
            ethnicity: "Kinh".to_owned(),
            nationality: "VN".to_owned(),
            residence: province.name.to_owned(),
            personal_id: String::new(),
        };
        IssuePersonalIdRequest {
            request_id: format!("bench-{}-{seq}", self.run),
            birth: Some(BirthRecord {
                full_name: format!("{family} {middle} {given}"),
                sex: if male { Sex::Male } else { Sex::Female } as i32,
                date_of_birth: Some(date(dob)),
                place_of_birth: Some(PlaceOfBirth {
                    description: format!("Bệnh viện đa khoa {}", province.name),
                    province_code: province.code.to_owned(),
                }),
                registration_province_code: province.code.to_owned(),
                home_town: province.name.to_owned(),
                ethnicity: "Kinh".to_owned(),
                nationality: "VN".to_owned(),
                father: Some(parent(
                    format!(
                        "{family} {} {}",
                        pick(MALE_MIDDLE, 40),
                        pick(MALE_GIVEN, 48)
                    ),
                    28 + (h % 10) as i32,
                )),
                mother: Some(parent(
                    format!(
                        "{mother_family} {} {}",
                        pick(FEMALE_MIDDLE, 52),
                        pick(FEMALE_GIVEN, 56)
                    ),
                    24 + ((h >> 4) % 10) as i32,
                )),
                registration: Some(RegistrationReference {
                    unit_code: format!("BENCH-{}-{:02}", province.code, (h >> 12) % 40),
                    registration_number: seq as i64 + 1,
                    book_number: format!("01/{}", registered.year()),
                    registration_date: Some(date(registered)),
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn request_ids_are_unique_and_buckets_are_spread_evenly() {
        let g = RecordGen::new("t", Order::Spread);
        let mut ids = HashSet::new();
        let mut buckets = std::collections::HashMap::<(String, i32, i32), u64>::new();
        for seq in 0..BUCKETS * 3 {
            let r = g.issue(seq);
            assert!(ids.insert(r.request_id.clone()));
            let b = r.birth.unwrap();
            let dob = b.date_of_birth.unwrap();
            *buckets
                .entry((b.registration_province_code, b.sex, dob.year))
                .or_default() += 1;
        }
        assert_eq!(buckets.len() as u64, BUCKETS);
        assert!(buckets.values().all(|n| *n == 3));
    }

    #[test]
    fn in_register_order_dates_advance_at_the_national_rate_and_buckets_stay_under_two_percent() {
        let g = RecordGen::new("t", Order::Register);
        let mut buckets = std::collections::HashMap::<(String, i32, i32), u64>::new();
        let mut last_dob = NaiveDate::MIN;
        // A step coprime with 63 and 126 visits every province and sex evenly.
        for seq in (0..10_000_000).step_by(127) {
            let b = g.issue(seq).birth.unwrap();
            let d = b.date_of_birth.unwrap();
            let dob = NaiveDate::from_ymd_opt(d.year, d.month as u32, d.day as u32).unwrap();
            assert!(dob >= last_dob, "dates never go back within 10 M");
            last_dob = dob;
            *buckets
                .entry((b.registration_province_code, b.sex, d.year))
                .or_default() += 127;
        }
        assert_eq!(last_dob.year(), 2022);
        assert!(
            buckets.values().all(|n| *n < 20_000),
            "{:?}",
            buckets.values().max()
        );
    }

    #[test]
    fn registration_follows_birth_and_precedes_the_merger() {
        for order in [Order::Register, Order::Spread] {
            let g = RecordGen::new("t", order);
            for seq in (0..20_000_000).step_by(997) {
                let b = g.issue(seq).birth.unwrap();
                let d = |d: Date| {
                    NaiveDate::from_ymd_opt(d.year, d.month as u32, d.day as u32).unwrap()
                };
                let dob = d(b.date_of_birth.unwrap());
                let reg = d(b.registration.unwrap().registration_date.unwrap());
                assert!(dob < reg);
                assert!(reg < NaiveDate::from_ymd_opt(2025, 7, 1).unwrap());
            }
        }
    }
}
