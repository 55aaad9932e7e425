//! The generated profiles reproduce the published figures and the modelled shares.

use contracts::moj::civilstatus::v1 as pb;
use std::collections::{HashMap, HashSet};
use traffic::profile::{Level, Plan, ProfileName, apportion};
use traffic::record::{Expected, Reasons, TrafficLine};

fn pilot_lines(seed: u64, scale: f64) -> (Plan, Vec<TrafficLine>) {
    let plan = Plan::new(ProfileName::Pilot2016, seed, scale).expect("plan");
    let mut lines = Vec::new();
    plan.generate(|l| {
        lines.push(l);
        Ok(())
    })
    .expect("generate");
    (plan, lines)
}

#[test]
fn the_pilot_profile_has_the_published_units_and_accounts() {
    let plan = Plan::new(ProfileName::Pilot2016, 1, 1.0).unwrap();

    let count = |level, province: &str| {
        plan.units
            .iter()
            .filter(|u| u.level == level && (province.is_empty() || u.province_code == province))
            .count()
    };

    assert_eq!(plan.registering_units().count(), 1_276);
    assert_eq!(count(Level::District, ""), 77);
    assert_eq!(count(Level::Commune, ""), 1_199);
    for (code, districts, communes) in [
        ("001", 30, 584),
        ("079", 24, 322),
        ("031", 15, 223),
        ("048", 7, 56),
        ("040", 1, 14),
    ] {
        assert_eq!(
            count(Level::District, code),
            districts,
            "districts of {code}"
        );
        assert_eq!(count(Level::Commune, code), communes, "communes of {code}");
    }
    assert_eq!(plan.officials.len(), 1_594);
    let codes: HashSet<&str> = plan.units.iter().map(|u| u.code.as_str()).collect();
    assert_eq!(codes.len(), plan.units.len(), "unit codes are unique");
    assert!(
        plan.units
            .iter()
            .all(|u| u.parent_code.is_empty() || codes.contains(u.parent_code.as_str()))
    );
    assert!(
        plan.officials
            .iter()
            .all(|o| codes.contains(o.unit_code.as_str()))
    );
}

#[test]
fn the_pilot_profile_hits_the_published_counts_exactly() {
    let (_, lines) = pilot_lines(2016, 1.0);

    let mut eligible = 0;
    let mut re_registration = 0;
    let mut foreign = 0;
    let mut foreign_element_vietnamese = 0;
    for l in &lines {
        if l.request.has_foreign_element && l.request.expected().unwrap() == Expected::Eligible {
            foreign_element_vietnamese += 1;
        }
        match l.request.expected().unwrap() {
            Expected::Eligible => eligible += 1,
            Expected::NotEligible(r) if r == Reasons(Reasons::RE_REGISTRATION) => {
                re_registration += 1
            }
            Expected::NotEligible(r) if r == Reasons(Reasons::FOREIGN_NATIONALITY) => foreign += 1,
            Expected::NotEligible(r) => panic!("unexpected reasons {r:?}"),
        }
    }

    assert_eq!(lines.len(), 69_524);
    assert_eq!(eligible, 66_705);
    assert_eq!(re_registration + foreign, 2_819);
    assert_eq!((re_registration, foreign), (2_255, 564));
    // Registered at district level, and numbered: a foreign parent, a Vietnamese child.
    assert_eq!(foreign_element_vietnamese, 560);
}

#[test]
fn generation_is_reproducible_from_the_seed() {
    let (_, a) = pilot_lines(42, 0.02);
    let (_, b) = pilot_lines(42, 0.02);
    let (_, c) = pilot_lines(43, 0.02);

    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn births_with_a_foreign_element_go_to_districts_and_the_others_to_communes() {
    let (plan, lines) = pilot_lines(5, 0.1);
    let level: HashMap<&str, Level> = plan
        .units
        .iter()
        .map(|u| (u.code.as_str(), u.level))
        .collect();

    let mut foreign_vietnamese = 0;
    for l in &lines {
        let unit_level = level[l.unit_code.as_str()];
        if l.request.has_foreign_element {
            assert_eq!(unit_level, Level::District, "{}", l.request.request_id);
            if l.request.expected().unwrap() == Expected::Eligible {
                foreign_vietnamese += 1;
            }
        } else {
            assert_eq!(unit_level, Level::Commune, "{}", l.request.request_id);
        }
        let official = plan
            .officials
            .iter()
            .find(|o| o.id == l.official_id)
            .unwrap();
        assert_eq!(
            official.unit_code, l.unit_code,
            "the official belongs to the registering unit"
        );
    }
    assert!(
        foreign_vietnamese > 0,
        "foreign-element births taking Vietnamese nationality are eligible"
    );
}

#[test]
fn the_pilot_has_twins_late_registrations_and_names_with_diacritics() {
    let (_, lines) = pilot_lines(2016, 0.2);

    // (mother, unit, date of birth) -> children
    let mut siblings: HashMap<(String, String, traffic::record::DateJson), usize> = HashMap::new();
    let mut late = 0;
    let mut diacritics = 0;
    for l in &lines {
        let child = l.request.child.as_ref().unwrap();
        let dob = child.date_of_birth.unwrap();
        let mother = l.request.mother.as_ref().unwrap().full_name.clone();
        *siblings
            .entry((mother, l.unit_code.clone(), dob))
            .or_default() += 1;
        if dob.year < 2015 {
            late += 1;
        }
        if !child.full_name.is_ascii() {
            diacritics += 1;
        }
    }

    // Twins are about 0.7 % of maternities, triplets about 0.02 %.
    let sets = |size: usize| siblings.values().filter(|n| **n == size).count();
    let twin_share = sets(2) as f64 / siblings.len() as f64;
    assert!(
        (0.004..0.010).contains(&twin_share),
        "twin share {twin_share}"
    );
    assert!(sets(3) >= 1, "triplets exist");
    assert!(late > 0, "late registrations exist");
    assert!(diacritics > lines.len() / 2, "names carry diacritics");
}

#[test]
fn every_line_converts_to_the_contract_request_with_a_unique_request_id() {
    let (_, lines) = pilot_lines(9, 0.05);

    let mut ids = HashSet::new();
    for l in &lines {
        let req = pb::RegisterBirthRequest::try_from(&l.request).unwrap();
        assert!(ids.insert(req.request_id.clone()));
        assert!(req.request_id.len() <= 64);
        assert_ne!(req.kind, pb::RegistrationKind::Unspecified as i32);
        let child = req.child.unwrap();
        assert!(matches!(
            pb::Sex::try_from(child.sex),
            Ok(pb::Sex::Male | pb::Sex::Female)
        ));
        let requester = req.requester.unwrap();
        assert_ne!(requester.relationship, pb::Relationship::Unspecified as i32);
        assert!(req.registered_on.is_some());
    }
}

#[test]
fn a_line_is_the_proto3_json_mapping_of_the_request() {
    let (_, lines) = pilot_lines(3, 0.01);

    let json: serde_json::Value = serde_json::to_value(&lines[0]).unwrap();

    let req = &json["request"];
    assert!(json["official_id"].is_string() && json["unit_code"].is_string());
    assert!(req["requestId"].is_string());
    assert!(
        req["kind"]
            .as_str()
            .unwrap()
            .starts_with("REGISTRATION_KIND_")
    );
    assert!(req["child"]["fullName"].is_string());
    assert!(req["child"]["dateOfBirth"]["year"].is_number());
    assert!(req["registeredOn"]["month"].is_number());
    assert!(
        req["requester"]["relationship"]
            .as_str()
            .unwrap()
            .starts_with("RELATIONSHIP_")
    );
    let back: TrafficLine = serde_json::from_value(json).unwrap();
    assert_eq!(back, lines[0]);
}

#[test]
fn the_national_year_spreads_births_over_the_63_provinces_by_population() {
    let plan = Plan::new(ProfileName::NationalYear, 1, 0.01).unwrap();
    let provinces: HashMap<&str, &str> = plan
        .units
        .iter()
        .map(|u| (u.code.as_str(), u.province_code.as_str()))
        .collect();
    let mut by_province: HashMap<String, u64> = HashMap::new();

    let summary = plan
        .generate(|l| {
            *by_province
                .entry(provinces[l.unit_code.as_str()].to_owned())
                .or_default() += 1;
            Ok(())
        })
        .unwrap();

    assert_eq!(summary.registrations, 15_000);
    assert_eq!(by_province.len(), 63);
    let hcm = by_province["079"] as f64 / 15_000.0;
    assert!((0.08..0.11).contains(&hcm), "Ho Chi Minh City share {hcm}");
    assert!(
        by_province["006"] < by_province["001"] / 10,
        "Bac Kan is far smaller than Ha Noi"
    );
    assert_eq!(
        Plan::new(ProfileName::NationalYear, 1, 1.0)
            .unwrap()
            .targets
            .registrations,
        1_500_000
    );
}

#[test]
fn apportion_splits_a_total_exactly() {
    assert_eq!(apportion(10, &[1.0, 1.0, 1.0]).iter().sum::<u64>(), 10);
    assert_eq!(apportion(7, &[0.0, 2.0]), vec![0, 7]);
    assert_eq!(
        apportion(69_524, &[430.0, 380.0, 110.0, 70.0, 5.0])
            .iter()
            .sum::<u64>(),
        69_524
    );
}

#[test]
fn the_eligibility_oracle_follows_the_rule() {
    let (_, lines) = pilot_lines(11, 0.01);
    let mut req = lines
        .iter()
        .find(|l| l.request.expected().unwrap() == Expected::Eligible)
        .unwrap()
        .request
        .clone();
    let child = req.child.as_mut().unwrap();
    child.date_of_birth = Some(traffic::record::DateJson {
        year: 2002,
        month: 1,
        day: 1,
    });
    req.registered_on = Some(traffic::record::DateJson {
        year: 2016,
        month: 1,
        day: 1,
    });

    assert_eq!(
        req.expected().unwrap(),
        Expected::NotEligible(Reasons(Reasons::AGE_14_OR_OVER))
    );
    req.child.as_mut().unwrap().date_of_birth = Some(traffic::record::DateJson {
        year: 2002,
        month: 1,
        day: 2,
    });
    assert_eq!(req.expected().unwrap(), Expected::Eligible);
}
