//! Properties of every parser at the services' edges, over arbitrary input (proptest).
//! The population registry's personal-id and birth-record parsers have their own
//! proptests in its crate; these add the civil registry's domain parsers (none had any),
//! the population registry's identifier and text parsers, and both services'
//! proto -> domain conversions on arbitrary messages: never a panic, and whatever is
//! accepted satisfies the contract's rule for the field.

use chrono::{Datelike as _, NaiveDate};
use civil_registry::domain::model as civil;
use civil_registry::grpc::convert as civil_convert;
use contracts::google::r#type::Date;
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use population_registry::domain::birth as pop;
use population_registry::domain::province::{PostMergerRule, ProvinceTable};
use population_registry::grpc::convert as pop_convert;
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization as _;

/// Strings that hit the interesting classes: ASCII, Vietnamese, controls, combining marks.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,120}",
        "[A-Za-z0-9 ._:-]{0,70}",
        "[ \\t\\n\\u{0}-\\u{1f}\\u{7f}a-zàáạảãăằắặẳẵâầấậẩẫđêềếệểễôồốộổỗơờớợởỡưừứựửữ\\u{300}-\\u{323}]{0,210}",
    ]
}

fn any_date() -> impl Strategy<Value = Date> {
    prop_oneof![
        (1850i32..2500, 0i32..14, 0i32..33).prop_map(|(year, month, day)| Date {
            year,
            month,
            day
        }),
        any::<(i32, i32, i32)>().prop_map(|(year, month, day)| Date { year, month, day }),
    ]
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::weighted(0.9, s)
}

fn digits(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, n).prop_map(|d| d.iter().map(|d| d.to_string()).collect())
}

fn code_or_text() -> impl Strategy<Value = String> {
    prop_oneof![digits(3), Just("001".to_owned()), any_text()]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..5, any::<i32>()]
}

/// `valid` most of the time, else anything `other` makes: a message of two dozen fields
/// then has each of them wrong now and then and all of them right about a fifth of the
/// time, so that the properties about what is accepted are exercised (with every field
/// arbitrary, no message was ever accepted).
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    valid: T,
    other: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![15 => Just(valid), 1 => other].boxed()
}

/// A required message, missing now and then.
fn usually_some<T: std::fmt::Debug + Clone + 'static>(
    present: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![15 => present.prop_map(Some), 1 => Just(None)].boxed()
}

fn text(valid: &str) -> BoxedStrategy<String> {
    mostly(valid.to_owned(), any_text())
}

fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

fn civil_child() -> impl Strategy<Value = cpb::Child> {
    (
        text("Nguyễn Văn An"),
        mostly(cpb::Sex::Male as i32, enum_value()),
        mostly(Some(date(2020, 1, 2)), opt(any_date())),
        mostly(
            Some(("Bệnh viện Bạch Mai".to_owned(), "001".to_owned())),
            opt((any_text(), code_or_text())),
        ),
        text("Hà Nội"),
        text("Kinh"),
        mostly("VN".to_owned(), any_text()),
    )
        .prop_map(
            |(full_name, sex, date_of_birth, pob, home_town, ethnicity, nationality)| cpb::Child {
                full_name,
                sex,
                date_of_birth,
                place_of_birth: pob.map(|(description, province_code)| cpb::PlaceOfBirth {
                    description,
                    province_code,
                }),
                home_town,
                ethnicity,
                nationality,
            },
        )
}

fn civil_parent() -> impl Strategy<Value = cpb::Parent> {
    (
        text("Trần Thị Bình"),
        mostly(1990, prop_oneof![Just(0), 1800i32..2100, any::<i32>()]),
        text("Kinh"),
        mostly("VN".to_owned(), any_text()),
        text("Hà Nội"),
        mostly(String::new(), prop_oneof![digits(12), any_text()]),
    )
        .prop_map(
            |(full_name, year_of_birth, ethnicity, nationality, residence, personal_id)| {
                cpb::Parent {
                    full_name,
                    year_of_birth,
                    ethnicity,
                    nationality,
                    residence,
                    personal_id,
                }
            },
        )
}

fn pop_parent() -> impl Strategy<Value = ppb::Parent> {
    civil_parent().prop_map(|p| ppb::Parent {
        full_name: p.full_name,
        year_of_birth: p.year_of_birth,
        ethnicity: p.ethnicity,
        nationality: p.nationality,
        residence: p.residence,
        personal_id: p.personal_id,
    })
}

fn pop_birth() -> impl Strategy<Value = ppb::BirthRecord> {
    (
        civil_child(),
        mostly("001".to_owned(), code_or_text()),
        opt(pop_parent()),
        opt(pop_parent()),
        mostly(
            Some((
                "C001".to_owned(),
                1,
                "2020".to_owned(),
                Some(date(2020, 1, 10)),
            )),
            opt((any_text(), any::<i64>(), any_text(), opt(any_date()))),
        ),
    )
        .prop_map(
            |(c, registration_province_code, father, mother, reg)| ppb::BirthRecord {
                full_name: c.full_name,
                sex: c.sex,
                date_of_birth: c.date_of_birth,
                place_of_birth: c.place_of_birth.map(|p| ppb::PlaceOfBirth {
                    description: p.description,
                    province_code: p.province_code,
                }),
                registration_province_code,
                home_town: c.home_town,
                ethnicity: c.ethnicity,
                nationality: c.nationality,
                father,
                mother,
                registration: reg.map(
                    |(unit_code, registration_number, book_number, registration_date)| {
                        ppb::RegistrationReference {
                            unit_code,
                            registration_number,
                            book_number,
                            registration_date,
                        }
                    },
                ),
            },
        )
}

/// Draws `cases` values of `strategy` (deterministically) and counts those `accepted` takes.
fn accepted_share<T: std::fmt::Debug>(
    strategy: impl Strategy<Value = T>,
    cases: usize,
    accepted: impl Fn(&T) -> bool,
) -> usize {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..cases)
        .filter(|_| accepted(&strategy.new_tree(&mut runner).expect("a value").current()))
        .count()
}

fn register_birth_request() -> impl Strategy<Value = cpb::RegisterBirthRequest> {
    (
        text("reg-1"),
        mostly(cpb::RegistrationKind::FirstTime as i32, enum_value()),
        usually_some(civil_child()),
        opt(civil_parent()),
        opt(civil_parent()),
        mostly(Some(date(2020, 1, 10)), opt(any_date())),
    )
        .prop_map(|(request_id, kind, child, father, mother, registered_on)| {
            cpb::RegisterBirthRequest {
                request_id,
                kind,
                has_foreign_element: false,
                child,
                father,
                mother,
                requester: Some(cpb::Requester {
                    full_name: "Nguyễn Văn Bình".into(),
                    relationship: 1,
                }),
                registered_on,
            }
        })
}

fn issue_request() -> impl Strategy<Value = ppb::IssuePersonalIdRequest> {
    (text("reg-1"), usually_some(pop_birth()))
        .prop_map(|(request_id, birth)| ppb::IssuePersonalIdRequest { request_id, birth })
}

#[test]
fn the_generated_requests_are_accepted_often_enough_to_test_what_acceptance_means() {
    let provinces = ProvinceTable::load(PostMergerRule::Legacy).expect("province table");
    let civil = accepted_share(register_birth_request(), 400, |r| {
        civil_convert::new_birth(r).is_ok()
    });
    let population = accepted_share(issue_request(), 400, |r| {
        pop_convert::issue_request(r, &provinces).is_ok()
    });
    println!("accepted: {civil} RegisterBirth, {population} issue requests of 400 each");
    assert!(
        civil >= 20,
        "{civil} of 400 RegisterBirth requests accepted"
    );
    assert!(
        population >= 20,
        "{population} of 400 issue requests accepted"
    );
}

fn today() -> NaiveDate {
    civil::today_in_vietnam()
}

/// The contract's rule for free text: trimmed, NFC, within bounds, no control characters.
fn is_clean(s: &str, min: usize, max: usize) -> bool {
    let n = s.chars().count();
    s.trim() == s
        && s.nfc().collect::<String>() == s
        && (min..=max).contains(&n)
        && !s.chars().any(char::is_control)
}

proptest! {
    // 256 cases unless PROPTEST_CASES asks for more (the default config reads it).
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn civil_text_parsers_accept_only_clean_text_within_their_bounds(raw in any_text()) {
        if let Ok(v) = civil::PersonName::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 100)); }
        if let Ok(v) = civil::PlaceText::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 200)); }
        if let Ok(v) = civil::Ethnicity::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 50)); }
        if let Ok(v) = civil::Residence::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 200)); }
        if let Ok(v) = civil::CorrectionReason::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 500)); }
        // Parsing is idempotent: a parsed value parses to itself.
        if let Ok(v) = civil::PersonName::parse(&raw) {
            prop_assert_eq!(civil::PersonName::parse(v.as_str()).map(|p| p.as_str().to_owned()), Ok(v.as_str().to_owned()));
        }
    }

    #[test]
    fn civil_code_parsers_accept_only_their_alphabets(raw in any_text()) {
        if let Ok(v) = civil::RequestId::parse(&raw) {
            prop_assert!((1..=64).contains(&v.as_str().len()));
            prop_assert!(v.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
        }
        if let Ok(v) = civil::UnitCode::parse(&raw) {
            prop_assert!((1..=32).contains(&v.as_str().len()));
            prop_assert!(v.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        }
        if let Ok(v) = civil::Nationality::parse(&raw) {
            prop_assert!(v.as_str().len() == 2 && v.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        }
        if let Ok(v) = civil::KnownPersonalId::parse(&raw) {
            prop_assert!(v.as_str().len() == 12 && v.as_str().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn civil_province_codes_are_exactly_the_known_provinces(raw in prop_oneof![digits(3), any_text()]) {
        let population = ProvinceTable::load(PostMergerRule::Legacy).expect("province table");
        // The civil registry accepts a code exactly when the population registry knows it:
        // otherwise a registration would be committed and then refused downstream.
        prop_assert_eq!(civil::ProvinceCode::parse(&raw).is_ok(), population.known(&raw).is_ok(), "{:?}", raw);
    }

    #[test]
    fn civil_birth_dates_are_encodable_and_never_in_the_future(d in any_date()) {
        let Some(date) = NaiveDate::from_ymd_opt(d.year, d.month.max(0) as u32, d.day.max(0) as u32) else {
            return Ok(());
        };
        if let Ok(b) = civil::BirthDate::parse(date, today()) {
            prop_assert!((1900..=2399).contains(&b.date().year()));
            prop_assert!(b.date() <= today());
        }
    }

    #[test]
    fn population_identifier_and_text_parsers_keep_their_rules(raw in any_text()) {
        if let Ok(v) = pop::RequestId::parse(&raw) {
            prop_assert!((1..=64).contains(&v.as_str().len()));
            prop_assert!(v.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
        }
        if let Ok(v) = pop::UnitCode::parse(&raw) {
            prop_assert!((1..=32).contains(&v.as_str().len()));
        }
        if let Ok(v) = pop::BookNumber::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 32)); }
        if let Ok(v) = pop::Reason::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 500)); }
        if let Ok(v) = pop::PersonName::parse(&raw) { prop_assert!(is_clean(v.as_str(), 1, 100)); }
        if let Ok(v) = pop::Nationality::parse(&raw) { prop_assert_eq!(v.as_str().len(), 2); }
    }

    #[test]
    fn register_birth_conversion_never_panics_and_accepts_only_valid_children(
        req in register_birth_request(),
    ) {
        if let Ok(birth) = civil_convert::new_birth(&req) {
            let c = &birth.record.child;
            prop_assert!(is_clean(c.full_name.as_str(), 1, 100));
            prop_assert!(c.date_of_birth.date() <= birth.registered_on);
            prop_assert!(birth.registered_on <= today());
        }
    }

    #[test]
    fn issue_conversion_never_panics_and_accepts_only_encodable_vietnamese_births(
        req in issue_request(),
    ) {
        let provinces = ProvinceTable::load(PostMergerRule::Legacy).expect("province table");
        let parsed = pop_convert::issue_request(&req, &provinces);
        if let Err(violations) = &parsed {
            // Every refusal names at least one field.
            prop_assert!(!violations.is_empty());
            prop_assert!(violations.iter().all(|v| !v.field.is_empty()));
        }
        if parsed.is_ok() {
            let b = req.birth.as_ref().expect("accepted with a birth");
            prop_assert_eq!(b.nationality.as_str(), "VN");
            let d = b.date_of_birth.expect("accepted with a date of birth");
            prop_assert!((1900..=2399).contains(&d.year));
        }
    }
}
