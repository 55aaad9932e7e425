//! Traffic profiles: the administrative units, the official accounts and the registrations
//! of a run, generated reproducibly from a seed.
//!
//! Assumptions (the pilot's published figures do not say):
//! - of the pilot's 2,819 registrations without a number, 2,255 (80%) are re-registrations
//!   and 564 (20%) are births whose child takes a foreign nationality. Re-registered children
//!   are under 14, so re-registration is their only reason and the table maps one to one
//!   onto the published one;
//! - 560 further births with a foreign element take Vietnamese nationality and ARE eligible;
//!   every birth with a foreign element is registered at a district Justice Office, every
//!   other birth at a commune;
//! - about 0.7% of deliveries are twins and 0.02% triplets (same parents, date, place and
//!   unit; different children);
//! - 3% of first-time registrations are late (born 1 to 13 years before registration, so
//!   birth years before 2016), the rest are registered 1 to 120 days after birth (most within
//!   60 days, so January registrations carry birth year 2015);
//! - registrations fall on working days (Saturday at 40%, Sunday and the Tết holiday of
//!   2016-02-06..14 at 2%) and over units by a fixed random weight per unit;
//! - `national-year` (2017): 1,500,000 births over the 63 provinces by population weight
//!   (catalog.rs), one district unit per 130,000 people and one commune per 9,000, the same
//!   shares of ineligible and foreign-element births as the pilot.

use crate::catalog::{self, Locality, Province};
use crate::record::{
    ChildJson, DateJson, ParentJson, PlaceOfBirthJson, RegisterBirthRequestJson, RequesterJson,
    TrafficLine,
};
use chrono::{Datelike as _, Days, Months, NaiveDate, Weekday};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;
use std::io::Write;

/// A named traffic profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum ProfileName {
    /// The 2016 pilot: five localities, 2016-01-01..2016-03-31, 69,524 registrations.
    #[value(name = "pilot-2016")]
    #[serde(rename = "pilot-2016")]
    Pilot2016,
    /// One year (2017) for the whole country: about 1.5 million births.
    #[value(name = "national-year")]
    #[serde(rename = "national-year")]
    NationalYear,
}

/// Level of an administrative unit, as in the units CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Ministry,
    Province,
    District,
    Commune,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ministry => "ministry",
            Level::Province => "province",
            Level::District => "district",
            Level::Commune => "commune",
        }
    }
}

/// One unit of the units CSV.
#[derive(Debug, Clone)]
pub struct Unit {
    pub code: String,
    pub name: String,
    pub level: Level,
    pub province_code: String,
    pub parent_code: String,
}

/// One official account of the officials CSV.
#[derive(Debug, Clone)]
pub struct Official {
    pub id: String,
    pub unit_code: String,
    pub role: String,
}

/// The code of the ministry-level unit every profile includes, for the reading account
/// that `verify` uses.
pub const MINISTRY_UNIT: &str = "BTP";
/// Role of the accounts that register births.
pub const REGISTRAR_ROLE: &str = "registrar";

/// Counts a profile is built to hit exactly.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Targets {
    pub registrations: u64,
    pub re_registrations: u64,
    pub foreign_nationality: u64,
    pub foreign_element_vietnamese: u64,
}

impl Targets {
    pub fn not_eligible(&self) -> u64 {
        self.re_registrations + self.foreign_nationality
    }
    pub fn eligible(&self) -> u64 {
        self.registrations - self.not_eligible()
    }
}

/// A region (a pilot locality or a province) and the units that register its births.
#[derive(Debug, Clone)]
struct Region {
    province_code: &'static str,
    name: String,
    weight: f64,
    hospitals: Vec<String>,
    /// Indices into `Plan::units`, with cumulative weights for picking one.
    communes: Picker,
    districts: Picker,
    /// Ethnic groups and cumulative weights.
    thai: bool,
}

#[derive(Debug, Clone, Default)]
struct Picker {
    items: Vec<usize>,
    cumulative: Vec<f64>,
}

impl Picker {
    fn push(&mut self, item: usize, weight: f64) {
        let total = self.cumulative.last().copied().unwrap_or(0.0) + weight;
        self.items.push(item);
        self.cumulative.push(total);
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        self.items[i.min(self.items.len() - 1)]
    }
}

/// Everything a profile generates: units, officials and the recipe for the registrations.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: ProfileName,
    pub seed: u64,
    pub targets: Targets,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub units: Vec<Unit>,
    pub officials: Vec<Official>,
    regions: Vec<Region>,
    /// Officials of each unit (indices into `officials`), parallel to `units`.
    unit_officials: Vec<Vec<usize>>,
}

/// Splits `total` over `weights` so that the parts sum exactly to `total` (largest remainder).
pub fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut rest = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| {
        let ra = exact[*a] - exact[*a].floor();
        let rb = exact[*b] - exact[*b].floor();
        rb.total_cmp(&ra).then(a.cmp(b))
    });
    for i in order {
        if rest == 0 {
            break;
        }
        parts[i] += 1;
        rest -= 1;
    }
    parts
}

fn scaled(n: u64, scale: f64) -> u64 {
    (n as f64 * scale).round() as u64
}

impl Plan {
    /// Builds the units and officials of a profile; `scale` multiplies the registration
    /// counts only (units and accounts stay as published), for small test runs.
    pub fn new(profile: ProfileName, seed: u64, scale: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(scale > 0.0 && scale.is_finite(), "scale must be positive");
        let mut rng = StdRng::seed_from_u64(seed ^ profile_salt(profile));
        let mut units = vec![Unit {
            code: MINISTRY_UNIT.to_owned(),
            name: "Bộ Tư pháp - Cục Hộ tịch, quốc tịch, chứng thực".to_owned(),
            level: Level::Ministry,
            // Every unit carries a province code; the ministry sits in Hà Nội.
            province_code: "001".to_owned(),
            parent_code: String::new(),
        }];
        let mut regions = Vec::new();
        let (targets, first_day, last_day, total_officials) = match profile {
            ProfileName::Pilot2016 => {
                for loc in &catalog::PILOT_LOCALITIES {
                    regions.push(build_region_pilot(loc, &mut units, &mut rng));
                }
                let t = Targets {
                    registrations: scaled(69_524, scale),
                    re_registrations: scaled(2_255, scale),
                    foreign_nationality: scaled(564, scale),
                    foreign_element_vietnamese: scaled(560, scale),
                };
                (t, date(2016, 1, 1)?, date(2016, 3, 31)?, 1_594usize)
            }
            ProfileName::NationalYear => {
                for prov in &catalog::PROVINCES {
                    regions.push(build_region_national(prov, &mut units, &mut rng));
                }
                let n = scaled(1_500_000, scale);
                let share = |x: u64| (n as f64 * x as f64 / 69_524.0).round() as u64;
                let t = Targets {
                    registrations: n,
                    re_registrations: share(2_255),
                    foreign_nationality: share(564),
                    foreign_element_vietnamese: share(560),
                };
                let registering = units
                    .iter()
                    .filter(|u| matches!(u.level, Level::District | Level::Commune))
                    .count();
                (
                    t,
                    date(2017, 1, 1)?,
                    date(2017, 12, 31)?,
                    registering * 5 / 4,
                )
            }
        };
        let (officials, unit_officials) =
            build_officials(&units, &regions, total_officials, &mut rng);
        Ok(Self {
            profile,
            seed,
            targets,
            first_day,
            last_day,
            units,
            officials,
            regions,
            unit_officials,
        })
    }

    /// Units that register births (districts and communes).
    pub fn registering_units(&self) -> impl Iterator<Item = &Unit> {
        self.units
            .iter()
            .filter(|u| matches!(u.level, Level::District | Level::Commune))
    }

    /// Writes the units CSV that `civil-registry admin units import` reads.
    pub fn write_units_csv(&self, out: impl Write) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "code",
            "name",
            "level",
            "province_code",
            "parent_code",
            "active",
        ])?;
        for u in &self.units {
            w.write_record([
                u.code.as_str(),
                u.name.as_str(),
                u.level.as_str(),
                u.province_code.as_str(),
                u.parent_code.as_str(),
                "true",
            ])?;
        }
        w.flush()?;
        Ok(())
    }

    /// Writes the officials CSV that `civil-registry admin officials import` reads.
    pub fn write_officials_csv(&self, out: impl Write) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(["official_id", "unit_code", "role"])?;
        for o in &self.officials {
            w.write_record([o.id.as_str(), o.unit_code.as_str(), o.role.as_str()])?;
        }
        w.flush()?;
        Ok(())
    }

    /// Name of the region (pilot locality or province) of a province code.
    pub fn region_name(&self, province_code: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.province_code == province_code)
            .map(|r| r.name.as_str())
    }

    /// Province codes of the regions, in the profile's order.
    pub fn region_codes(&self) -> Vec<&'static str> {
        self.regions.iter().map(|r| r.province_code).collect()
    }

    /// Generates every registration, day by day, calling `emit` for each line in replay order.
    /// Memory stays bounded by one day of traffic, so the national year streams.
    pub fn generate(
        &self,
        mut emit: impl FnMut(TrafficLine) -> anyhow::Result<()>,
    ) -> anyhow::Result<Summary> {
        let t = self.targets;
        let domestic = t
            .registrations
            .checked_sub(t.not_eligible() + t.foreign_element_vietnamese)
            .ok_or_else(|| anyhow::anyhow!("profile counts do not add up"))?;
        let region_weights: Vec<f64> = self.regions.iter().map(|r| r.weight).collect();
        let days: Vec<NaiveDate> = self
            .first_day
            .iter_days()
            .take_while(|d| *d <= self.last_day)
            .collect();
        let day_weights: Vec<f64> = days.iter().map(|d| day_weight(*d)).collect();
        // counts[category][region][day], each exact by largest remainder.
        let split = |n: u64| -> Vec<Vec<u64>> {
            apportion(n, &region_weights)
                .into_iter()
                .map(|per_region| apportion(per_region, &day_weights))
                .collect()
        };
        let categories = [
            (Category::Domestic, split(domestic)),
            (Category::ReRegistration, split(t.re_registrations)),
            (Category::ForeignNationality, split(t.foreign_nationality)),
            (
                Category::ForeignElementVietnamese,
                split(t.foreign_element_vietnamese),
            ),
        ];
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut summary = Summary {
            profile: self.profile,
            seed: self.seed,
            targets: t,
            ..Summary::default_for(self.profile, self.seed, t)
        };
        let mut seq: u64 = 0;
        let prefix = match self.profile {
            ProfileName::Pilot2016 => "p16",
            ProfileName::NationalYear => "ny",
        };
        let mut day_lines: Vec<TrafficLine> = Vec::new();
        for (di, day) in days.iter().enumerate() {
            day_lines.clear();
            for (ri, region) in self.regions.iter().enumerate() {
                for (cat, counts) in &categories {
                    let mut remaining = counts[ri][di];
                    while remaining > 0 {
                        let size = if *cat == Category::Domestic {
                            let x = rng.random::<f64>();
                            if x < 0.0002 && remaining >= 3 {
                                summary.triplet_sets += 1;
                                3
                            } else if x < 0.0072 && remaining >= 2 {
                                summary.twin_sets += 1;
                                2
                            } else {
                                1
                            }
                        } else {
                            1
                        };
                        remaining -= size;
                        self.birth_event(
                            *cat,
                            region,
                            *day,
                            size,
                            &mut rng,
                            &mut day_lines,
                            &mut summary,
                        )?;
                    }
                }
            }
            // Interleave the day's registrations across units and localities.
            for i in (1..day_lines.len()).rev() {
                let j = rng.random_range(0..=i);
                day_lines.swap(i, j);
            }
            for mut line in day_lines.drain(..) {
                seq += 1;
                line.request.request_id = format!("{prefix}-{}-{seq:07}", self.seed);
                emit(line)?;
            }
        }
        summary.registrations = seq;
        Ok(summary)
    }

    #[allow(clippy::too_many_arguments)]
    fn birth_event(
        &self,
        cat: Category,
        region: &Region,
        day: NaiveDate,
        children: u64,
        rng: &mut StdRng,
        out: &mut Vec<TrafficLine>,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let foreign_element = matches!(
            cat,
            Category::ForeignNationality | Category::ForeignElementVietnamese
        );
        let unit_index = if foreign_element {
            region.districts.pick(rng)
        } else {
            region.communes.pick(rng)
        };
        let unit = &self.units[unit_index];
        let official = {
            let offs = &self.unit_officials[unit_index];
            &self.officials[*offs
                .choose(rng)
                .ok_or_else(|| anyhow::anyhow!("unit without officials"))?]
        };
        let late =
            cat == Category::ReRegistration || (cat == Category::Domestic && rng.random_bool(0.03));
        let born = if late {
            // 1 to 13 years before registration: under 14, birth year before the program.
            let back = rng.random_range(365..(13 * 365));
            day - Days::new(back)
        } else {
            let x = rng.random::<f64>();
            let lag = if x < 0.70 {
                rng.random_range(1..=30)
            } else if x < 0.95 {
                rng.random_range(31..=60)
            } else {
                rng.random_range(61..=120)
            };
            day - Days::new(lag)
        };
        if late && cat == Category::Domestic {
            summary.late_registrations += children;
        }
        if born.year() < day.year() {
            summary.born_before_registration_year += children;
        }
        let ethnicity = ethnicity(region, rng);
        let father_foreign = foreign_element && rng.random_bool(0.65);
        let mother_foreign = foreign_element && !father_foreign;
        let foreign = catalog::FOREIGN_PARENTS
            .choose(rng)
            .copied()
            .unwrap_or(("KR", "Kim Min-jun"));
        let family = family_name(region, rng);
        let residence = format!(
            "{}, {}",
            self.units[region.communes.pick(rng)]
                .name
                .trim_start_matches("UBND "),
            region.name
        );
        let has_father = foreign_element || rng.random_bool(0.97);
        let father_age = rng.random_range(22..=42);
        let mother_age = rng.random_range(19..=40);
        let father = has_father.then(|| {
            if father_foreign {
                ParentJson {
                    full_name: foreign.1.to_owned(),
                    year_of_birth: born.year() - father_age,
                    ethnicity: String::new(),
                    nationality: foreign.0.to_owned(),
                    residence: residence.clone(),
                    personal_id: String::new(),
                }
            } else {
                let name = person_name(&family, true, rng);
                vietnamese_parent(
                    name,
                    born.year() - father_age,
                    true,
                    &ethnicity,
                    &residence,
                    region,
                    rng,
                )
            }
        });
        let mother = if mother_foreign {
            ParentJson {
                full_name: foreign.1.to_owned(),
                year_of_birth: born.year() - mother_age,
                ethnicity: String::new(),
                nationality: foreign.0.to_owned(),
                residence: residence.clone(),
                personal_id: String::new(),
            }
        } else {
            let mfamily = family_name(region, rng);
            let name = person_name(&mfamily, false, rng);
            vietnamese_parent(
                name,
                born.year() - mother_age,
                false,
                &ethnicity,
                &residence,
                region,
                rng,
            )
        };
        // Children take the father's family name (a foreign father's first word), else the mother's.
        let child_family = match &father {
            Some(f) => f.full_name.split(' ').next().unwrap_or("Nguyễn").to_owned(),
            None => mother
                .full_name
                .split(' ')
                .next()
                .unwrap_or("Nguyễn")
                .to_owned(),
        };
        let nationality = match cat {
            Category::ForeignNationality => foreign.0.to_owned(),
            _ => "VN".to_owned(),
        };
        let home_province = if rng.random_bool(0.7) {
            catalog::province(region.province_code)
                .map(|p| p.name)
                .unwrap_or("Hà Nội")
        } else {
            catalog::PROVINCES
                .choose(rng)
                .map(|p| p.name)
                .unwrap_or("Hà Nội")
        };
        let home_town = format!(
            "xã {}, tỉnh/thành phố {}",
            catalog::PLACE_WORDS
                .choose(rng)
                .copied()
                .unwrap_or("Tân Lập"),
            home_province
        );
        let hospital = region.hospitals.choose(rng).cloned().unwrap_or_default();
        let (req_rel, req_name) = {
            let x = rng.random::<f64>();
            match &father {
                Some(f) if x < 0.55 => ("RELATIONSHIP_FATHER", f.full_name.clone()),
                _ if x < 0.92 => ("RELATIONSHIP_MOTHER", mother.full_name.clone()),
                _ if x < 0.99 => (
                    "RELATIONSHIP_GRANDPARENT",
                    person_name(&child_family, rng.random_bool(0.5), rng),
                ),
                _ => (
                    "RELATIONSHIP_OTHER_RELATIVE",
                    person_name(&family_name(region, rng), rng.random_bool(0.5), rng),
                ),
            }
        };
        let mut used_given: Vec<String> = Vec::new();
        for _ in 0..children {
            let male = rng.random_bool(0.515);
            let mut full_name;
            loop {
                full_name = person_name(&child_family, male, rng);
                if !used_given.contains(&full_name) {
                    break;
                }
            }
            used_given.push(full_name.clone());
            match cat {
                Category::Domestic | Category::ForeignElementVietnamese => summary.eligible += 1,
                Category::ReRegistration => summary.re_registrations += 1,
                Category::ForeignNationality => summary.foreign_nationality += 1,
            }
            if foreign_element {
                summary.foreign_element += 1;
            }
            out.push(TrafficLine {
                official_id: official.id.clone(),
                unit_code: unit.code.clone(),
                request: RegisterBirthRequestJson {
                    request_id: String::new(),
                    kind: if cat == Category::ReRegistration {
                        "REGISTRATION_KIND_RE_REGISTRATION"
                    } else {
                        "REGISTRATION_KIND_FIRST_TIME"
                    }
                    .to_owned(),
                    has_foreign_element: foreign_element,
                    child: Some(ChildJson {
                        full_name,
                        sex: if male { "SEX_MALE" } else { "SEX_FEMALE" }.to_owned(),
                        date_of_birth: Some(DateJson::from_naive(born)),
                        place_of_birth: Some(PlaceOfBirthJson {
                            description: hospital.clone(),
                            province_code: region.province_code.to_owned(),
                        }),
                        home_town: home_town.clone(),
                        ethnicity: if nationality == "VN" {
                            ethnicity.clone()
                        } else {
                            "Kinh".to_owned()
                        },
                        nationality: nationality.clone(),
                    }),
                    father: father.clone(),
                    mother: Some(mother.clone()),
                    requester: Some(RequesterJson {
                        full_name: req_name.clone(),
                        relationship: req_rel.to_owned(),
                    }),
                    registered_on: Some(DateJson::from_naive(day)),
                },
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Domestic,
    ReRegistration,
    ForeignNationality,
    ForeignElementVietnamese,
}

/// What `generate` produced (printed by the CLI, so the assumptions are in the output).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub profile: ProfileName,
    pub seed: u64,
    pub targets: Targets,
    pub registrations: u64,
    pub eligible: u64,
    pub re_registrations: u64,
    pub foreign_nationality: u64,
    pub foreign_element: u64,
    pub twin_sets: u64,
    pub triplet_sets: u64,
    pub late_registrations: u64,
    pub born_before_registration_year: u64,
}

impl Summary {
    fn default_for(profile: ProfileName, seed: u64, targets: Targets) -> Self {
        Self {
            profile,
            seed,
            targets,
            registrations: 0,
            eligible: 0,
            re_registrations: 0,
            foreign_nationality: 0,
            foreign_element: 0,
            twin_sets: 0,
            triplet_sets: 0,
            late_registrations: 0,
            born_before_registration_year: 0,
        }
    }
}

const fn profile_salt(profile: ProfileName) -> u64 {
    match profile {
        ProfileName::Pilot2016 => 0x5eed_2016,
        ProfileName::NationalYear => 0x5eed_2017,
    }
}

fn date(y: i32, m: u32, d: u32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| anyhow::anyhow!("bad date"))
}

/// Relative registration volume of a day: offices work Monday to Friday and Saturday
/// morning; closed on Sundays and public holidays (Tết 2016 and 2017, Hùng Kings, 30/4,
/// 1/5, National Day).
fn day_weight(d: NaiveDate) -> f64 {
    let md = (d.month(), d.day());
    let holiday = match d.year() {
        2016 => ((2, 6)..=(2, 14)).contains(&md) || md == (4, 18) || md == (5, 2) || md == (9, 2),
        2017 => {
            ((1, 26)..=(2, 1)).contains(&md)
                || md == (4, 6)
                || md == (5, 1)
                || md == (5, 2)
                || md == (9, 4)
        }
        _ => false,
    } || md == (1, 1)
        || md == (4, 30)
        || md == (9, 2);
    if holiday {
        return 0.02;
    }
    match d.weekday() {
        Weekday::Sat => 0.4,
        Weekday::Sun => 0.02,
        _ => 1.0,
    }
}

/// A positive, skewed per-unit weight: a few busy units, many quiet ones.
fn unit_weight(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random();
    0.25 + 2.5 * u * u
}

fn build_region_pilot(loc: &Locality, units: &mut Vec<Unit>, rng: &mut StdRng) -> Region {
    let province_unit = format!("P{}", loc.province_code);
    let province_name = catalog::province(loc.province_code)
        .map(|p| p.name)
        .unwrap_or(loc.name);
    units.push(Unit {
        code: province_unit.clone(),
        name: format!("Sở Tư pháp {province_name}"),
        level: Level::Province,
        province_code: loc.province_code.to_owned(),
        parent_code: MINISTRY_UNIT.to_owned(),
    });
    let districts: Vec<String> = loc.districts.iter().map(|s| (*s).to_owned()).collect();
    let mut region = Region {
        province_code: loc.province_code,
        name: loc.name.to_owned(),
        weight: f64::from(loc.weight_per_mille),
        hospitals: loc.hospitals.iter().map(|s| (*s).to_owned()).collect(),
        communes: Picker::default(),
        districts: Picker::default(),
        thai: loc.province_code == "040",
    };
    add_units(
        &mut region,
        &province_unit,
        &districts,
        loc.communes as usize,
        units,
        rng,
    );
    region
}

fn build_region_national(prov: &Province, units: &mut Vec<Unit>, rng: &mut StdRng) -> Region {
    let province_unit = format!("P{}", prov.code);
    units.push(Unit {
        code: province_unit.clone(),
        name: format!("Sở Tư pháp {}", prov.name),
        level: Level::Province,
        province_code: prov.code.to_owned(),
        parent_code: MINISTRY_UNIT.to_owned(),
    });
    let n_districts = (prov.population_thousands as usize / 130).max(1);
    let n_communes = (prov.population_thousands as usize / 9).max(n_districts);
    let districts: Vec<String> = (1..=n_districts).map(|i| format!("huyện số {i}")).collect();
    let mut region = Region {
        province_code: prov.code,
        name: prov.name.to_owned(),
        weight: f64::from(prov.population_thousands),
        hospitals: vec![
            format!("Bệnh viện Đa khoa tỉnh/thành phố {}", prov.name),
            format!("Bệnh viện Sản - Nhi {}", prov.name),
            format!("Trung tâm Y tế {}", prov.name),
        ],
        communes: Picker::default(),
        districts: Picker::default(),
        thai: matches!(prov.code, "011" | "012" | "014" | "040"),
    };
    add_units(
        &mut region,
        &province_unit,
        &districts,
        n_communes,
        units,
        rng,
    );
    region
}

/// Adds district units (one per name) and `communes` commune units spread over them.
fn add_units(
    region: &mut Region,
    province_unit: &str,
    districts: &[String],
    communes: usize,
    units: &mut Vec<Unit>,
    rng: &mut StdRng,
) {
    let pc = region.province_code;
    let per_district = apportion(communes as u64, &vec![1.0; districts.len()]);
    for (di, dname) in districts.iter().enumerate() {
        let dcode = format!("D{pc}-{:02}", di + 1);
        let index = units.len();
        units.push(Unit {
            code: dcode.clone(),
            name: format!("Phòng Tư pháp {dname}, {}", region.name),
            level: Level::District,
            province_code: pc.to_owned(),
            parent_code: province_unit.to_owned(),
        });
        region.districts.push(index, unit_weight(rng));
        let urban = dname.starts_with("quận") || dname.starts_with("Quận");
        for ci in 0..per_district[di] {
            let word = catalog::PLACE_WORDS
                .choose(rng)
                .copied()
                .unwrap_or("Tân Lập");
            let kind = if urban { "phường" } else { "xã" };
            let index = units.len();
            units.push(Unit {
                code: format!("C{pc}-{:02}-{:03}", di + 1, ci + 1),
                name: format!("UBND {kind} {word} {}, {dname}", ci + 1),
                level: Level::Commune,
                province_code: pc.to_owned(),
                parent_code: dcode.clone(),
            });
            region.communes.push(index, unit_weight(rng));
        }
    }
}

/// One registrar per registering unit, the rest of the accounts spread over units by their
/// weight (busy units have several registrars).
fn build_officials(
    units: &[Unit],
    regions: &[Region],
    total: usize,
    rng: &mut StdRng,
) -> (Vec<Official>, Vec<Vec<usize>>) {
    let mut unit_officials = vec![Vec::new(); units.len()];
    let mut officials = Vec::with_capacity(total);
    let mut add = |unit: usize, officials: &mut Vec<Official>| {
        let id = format!("CB{:06}", officials.len() + 1);
        unit_officials[unit].push(officials.len());
        officials.push(Official {
            id,
            unit_code: units[unit].code.clone(),
            role: REGISTRAR_ROLE.to_owned(),
        });
    };
    for (i, u) in units.iter().enumerate() {
        if matches!(u.level, Level::District | Level::Commune) {
            add(i, &mut officials);
        }
    }
    let weights: Vec<f64> = regions.iter().map(|r| r.weight).collect();
    let extra = total.saturating_sub(officials.len()) as u64;
    for (region, n) in regions.iter().zip(apportion(extra, &weights)) {
        for _ in 0..n {
            add(region.communes.pick(rng), &mut officials);
        }
    }
    (officials, unit_officials)
}

fn family_name(region: &Region, rng: &mut StdRng) -> String {
    let list = if region.thai && rng.random_bool(0.75) {
        catalog::THAI_FAMILY_NAMES
    } else {
        catalog::FAMILY_NAMES
    };
    let total: u32 = list.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (name, w) in list {
        if x < *w {
            return (*name).to_owned();
        }
        x -= w;
    }
    "Nguyễn".to_owned()
}

fn person_name(family: &str, male: bool, rng: &mut StdRng) -> String {
    let (middle, given) = if male {
        (catalog::MALE_MIDDLE, catalog::MALE_GIVEN)
    } else {
        (catalog::FEMALE_MIDDLE, catalog::FEMALE_GIVEN)
    };
    let m = middle.choose(rng).copied().unwrap_or("Văn");
    let g = given.choose(rng).copied().unwrap_or("Anh");
    if rng.random_bool(0.15) {
        let m2 = middle.choose(rng).copied().unwrap_or("Minh");
        if m2 != m {
            return format!("{family} {m} {m2} {g}");
        }
    }
    format!("{family} {m} {g}")
}

fn ethnicity(region: &Region, rng: &mut StdRng) -> String {
    let x: f64 = rng.random();
    if region.thai {
        if x < 0.8 {
            "Thái"
        } else if x < 0.9 {
            "Khơ Mú"
        } else {
            "Kinh"
        }
    } else if region.province_code == "079" && x < 0.05 {
        "Hoa"
    } else if x < 0.02 {
        "Mường"
    } else if x < 0.03 {
        "Tày"
    } else {
        "Kinh"
    }
    .to_owned()
}

/// A Vietnamese parent; about a third have a personal id number already (12 digits in the
/// decree's format: province, century-sex digit, two-digit year, six digits).
fn vietnamese_parent(
    full_name: String,
    year_of_birth: i32,
    male: bool,
    ethnicity: &str,
    residence: &str,
    region: &Region,
    rng: &mut StdRng,
) -> ParentJson {
    let personal_id = if rng.random_bool(0.33) {
        let century_sex = match (year_of_birth >= 2000, male) {
            (false, true) => 0,
            (false, false) => 1,
            (true, true) => 2,
            (true, false) => 3,
        };
        format!(
            "{}{}{:02}{:06}",
            region.province_code,
            century_sex,
            year_of_birth.rem_euclid(100),
            rng.random_range(0..1_000_000)
        )
    } else {
        String::new()
    };
    ParentJson {
        full_name,
        year_of_birth,
        ethnicity: ethnicity.to_owned(),
        nationality: "VN".to_owned(),
        residence: residence.to_owned(),
        personal_id,
    }
}

/// Adds the months to a date, for tests of the age rule.
pub fn add_years(d: NaiveDate, years: u32) -> Option<NaiveDate> {
    d.checked_add_months(Months::new(years * 12))
}
