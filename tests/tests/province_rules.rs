//! The two registries configure the post-merger rule separately (civil
//! `registration.post_merger_rule`, population `minting.post_merger_rule`). Under either
//! rule, every code the civil registry sends for any of its units, before and from the
//! merger date, is one the population registry accepts on that date under the same rule.

use chrono::NaiveDate;
use civil_registry::domain::model::ProvinceCode as CivilCode;
use civil_registry::domain::numbering::{self, PostMergerRule as CivilRule};
use population_registry::domain::province::{PostMergerRule, ProvinceTable};

#[test]
fn every_code_the_civil_registry_sends_is_one_the_population_registry_accepts() {
    let merger = numbering::merger_date();
    let eve = merger.pred_opt().expect("the day before");
    let later = NaiveDate::from_ymd_opt(2026, 3, 1).expect("date");
    let pairs = [
        (CivilRule::Legacy, PostMergerRule::Legacy),
        (CivilRule::Merged, PostMergerRule::Merged),
    ];
    let mut checked = 0;
    for (civil, population) in pairs {
        let table = ProvinceTable::load(population).expect("province table");
        for (legacy, _) in numbering::merged_codes() {
            let unit_province = CivilCode::parse(legacy).expect("a civil province code");
            for on in [eve, merger, later] {
                let sent = civil.number_province(&unit_province, on);
                assert!(
                    table.valid_on(sent.as_str(), on).is_ok(),
                    "{civil:?}: a unit of {legacy} registering on {on} sends {}, refused",
                    sent.as_str()
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 63 * 3);
}

#[test]
fn under_the_merged_rule_an_absorbed_province_code_is_refused_from_the_merger_date() {
    // What goes wrong when only the population registry is set to `merged`: the civil
    // registry's legacy code for Ha Giang (002, now part of Tuyen Quang, 008) is refused.
    let table = ProvinceTable::load(PostMergerRule::Merged).expect("province table");
    let merger = numbering::merger_date();
    assert!(table.valid_on("002", merger).is_err());
    let ha_giang = CivilCode::parse("002").expect("code");
    assert_eq!(
        CivilRule::Merged
            .number_province(&ha_giang, merger)
            .as_str(),
        "008"
    );
}

#[test]
fn the_civil_registry_maps_each_province_as_the_population_registrys_merger_table_does() {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/population-registry/data/province-merger-2025.csv"
    ))
    .expect("the population registry's merger table");
    let mut population: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (
                fields[0].to_owned(),
                format!("0{}", fields[fields.len() - 1].trim()),
            )
        })
        .collect();
    population.sort();
    let mut civil: Vec<(String, String)> = numbering::merged_codes()
        .map(|(legacy, merged)| (legacy.to_owned(), merged.to_owned()))
        .collect();
    civil.sort();
    assert_eq!(population.len(), 63);
    assert_eq!(civil, population);
}
