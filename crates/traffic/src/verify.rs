//! `traffic verify`: checks the system's invariants across both services after a
//! replay, against what the traffic file says must have happened:
//! every eligible registration has exactly one active number; no ineligible one has any;
//! no number twice; each number encodes its request's registering province, the child's
//! century of birth and sex and year of birth (Circular 07/2016/TT-BCA); the civil registry's ISSUED
//! registrations and the population registry's issuances match one to one; the statistics
//! table equals what was replayed.

use crate::catalog;
use crate::client::authorized;
use crate::record::{DateJson, Expected, Reasons, RegisterBirthRequestJson, TrafficLine};
use crate::replay::Outcome;
use anyhow::Context as _;
use contracts::google::r#type::Date as PbDate;
use contracts::moj::civilstatus::v1 as cs;
use contracts::moj::civilstatus::v1::birth_registration_service_client::BirthRegistrationServiceClient;
use contracts::mps::population::v1 as pop;
use contracts::mps::population::v1::population_registry_service_client::PopulationRegistryServiceClient;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead as _;
use std::path::Path;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// What the traffic file says must be in the registries.
#[derive(Debug, Default)]
pub struct Expectation {
    pub first_day: Option<DateJson>,
    pub last_day: Option<DateJson>,
    /// request_id -> what the request must come out as.
    pub by_request: HashMap<String, Want>,
    /// Unit code -> province code, from the units CSV.
    pub unit_provinces: HashMap<String, String>,
    /// (unit code, expected) -> count.
    pub by_unit: BTreeMap<(String, Expected), u64>,
    /// province code -> expected statistics row.
    pub by_province: BTreeMap<String, Row>,
}

/// What one replayed request must come out as.
#[derive(Debug, Clone)]
pub struct Want {
    /// The registering unit.
    pub unit_code: String,
    pub expected: Expected,
    /// What its number must encode; `None` when it must get none.
    pub number: Option<NumberPrefix>,
}

/// What the first six digits of a request's number must say: province (3 digits), century
/// and sex (1), year of birth (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPrefix {
    /// Digit 4: century of birth and sex (1900s male 0, female 1; 2000s 2 / 3; ...).
    pub century_sex: u8,
    /// Digits 5-6: the year of birth mod 100.
    pub year: u8,
    /// Registered on or after the 2025 merger, so digits 1-3 may also be the merged
    /// province's code (a deployment may be configured so; the default is the legacy code).
    pub after_merger: bool,
}

impl NumberPrefix {
    /// The prefix of a request's number; `None` when no number can encode its child (sex
    /// neither male nor female, born outside 1900-2399): such a request gets none.
    pub fn of(request: &RegisterBirthRequestJson) -> anyhow::Result<Option<Self>> {
        let child = request.child.as_ref().context("request without child")?;
        let sex = child.sex_value()?;
        let sex_bit = if sex == cs::Sex::Male as i32 {
            0
        } else if sex == cs::Sex::Female as i32 {
            1
        } else {
            return Ok(None);
        };
        let born = child
            .date_of_birth
            .context("request without child.date_of_birth")?
            .year;
        let registered = request
            .registered_on
            .and_then(DateJson::to_naive)
            .context("request without a valid registered_on")?;
        if !(1900..2400).contains(&born) {
            return Ok(None);
        }
        Ok(Some(Self {
            century_sex: u8::try_from((born - 1900) / 100 * 2 + sex_bit)?,
            year: u8::try_from(born % 100)?,
            after_merger: registered >= catalog::merger_date(),
        }))
    }

    /// How `number` (12 ASCII digits) of a registration by a unit of `province` departs
    /// from this prefix, as (violation kind, what). The digits 4-6 found are not quoted:
    /// they are the child's sex and year of birth.
    pub fn mismatches(&self, number: &str, province: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let (Some(got_province), Some(got_century_sex), Some(got_year)) =
            (number.get(0..3), number.get(3..4), number.get(4..6))
        else {
            return out;
        };
        let merged = catalog::province(province)
            .map(|p| p.merged_code)
            .filter(|m| self.after_merger && *m != province);
        if got_province != province && Some(got_province) != merged {
            out.push((
                "number-province",
                match merged {
                    Some(m) => format!(
                        "digits 1-3 are {got_province}, not the registering unit's province \
                         {province} or its merged province {m}"
                    ),
                    None => format!(
                        "digits 1-3 are {got_province}, not the registering unit's province \
                         {province}"
                    ),
                },
            ));
        }
        if got_century_sex != self.century_sex.to_string() {
            out.push((
                "number-century-sex",
                "digit 4 does not encode the child's century of birth and sex".to_owned(),
            ));
        }
        if got_year != format!("{:02}", self.year) {
            out.push((
                "number-year",
                "digits 5-6 are not the child's year of birth".to_owned(),
            ));
        }
        out
    }
}

/// One row of the statistics table (a subset of `RegistrationStatisticsRow`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub registrations: i64,
    pub first_time: i64,
    pub re_registrations: i64,
    pub eligible: i64,
    pub issued: i64,
    pub pending: i64,
    pub rejected: i64,
    pub not_eligible: i64,
    pub not_eligible_foreign_nationality: i64,
    pub not_eligible_re_registration: i64,
    pub not_eligible_sex_undetermined: i64,
    pub not_eligible_age_14_or_over: i64,
    pub not_eligible_before_program_start: i64,
}

impl Row {
    fn from_proto(r: &cs::RegistrationStatisticsRow) -> Self {
        Self {
            registrations: r.registrations,
            first_time: r.first_time,
            re_registrations: r.re_registrations,
            eligible: r.eligible,
            issued: r.issued,
            pending: r.pending,
            rejected: r.rejected,
            not_eligible: r.not_eligible,
            not_eligible_foreign_nationality: r.not_eligible_foreign_nationality,
            not_eligible_re_registration: r.not_eligible_re_registration,
            not_eligible_sex_undetermined: r.not_eligible_sex_undetermined,
            not_eligible_age_14_or_over: r.not_eligible_age_14_or_over,
            not_eligible_before_program_start: r.not_eligible_before_program_start,
        }
    }

    fn add(&mut self, first_time: bool, expected: Expected) {
        self.registrations += 1;
        if first_time {
            self.first_time += 1;
        } else {
            self.re_registrations += 1;
        }
        match expected {
            Expected::Eligible => {
                self.eligible += 1;
                // Once fully replayed, every eligible registration is numbered.
                self.issued += 1;
            }
            Expected::NotEligible(r) => {
                self.not_eligible += 1;
                let b = |bit| i64::from(r.has(bit));
                self.not_eligible_foreign_nationality += b(Reasons::FOREIGN_NATIONALITY);
                self.not_eligible_re_registration += b(Reasons::RE_REGISTRATION);
                self.not_eligible_sex_undetermined += b(Reasons::SEX_UNDETERMINED);
                self.not_eligible_age_14_or_over += b(Reasons::AGE_14_OR_OVER);
                self.not_eligible_before_program_start += b(Reasons::BEFORE_PROGRAM_START);
            }
        }
    }
}

/// Unit code -> province code, from a units CSV (`code,...,province_code,...`).
pub fn read_unit_provinces(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let h = r.headers()?.clone();
    let code = h
        .iter()
        .position(|c| c == "code")
        .context("units CSV without code")?;
    let prov = h
        .iter()
        .position(|c| c == "province_code")
        .context("units CSV without province_code")?;
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec?;
        out.insert(rec[code].to_owned(), rec[prov].to_owned());
    }
    Ok(out)
}

impl Expectation {
    /// Reads a traffic file (`limit`: only its first lines, as replayed).
    pub fn read(
        file: &Path,
        unit_provinces: &HashMap<String, String>,
        limit: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut e = Self {
            unit_provinces: unit_provinces.clone(),
            ..Self::default()
        };
        let r = std::io::BufReader::with_capacity(1 << 20, crate::files::open(file)?);
        for (i, line) in r.lines().enumerate() {
            if limit.is_some_and(|l| i as u64 >= l) {
                break;
            }
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let l: TrafficLine = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", file.display(), i + 1))?;
            let expected = l.request.expected()?;
            let day = l.request.registered_on.context("registered_on missing")?;
            e.first_day = Some(e.first_day.map_or(day, |d| d.min(day)));
            e.last_day = Some(e.last_day.map_or(day, |d| d.max(day)));
            let province = unit_provinces
                .get(&l.unit_code)
                .with_context(|| format!("unit {} not in the units CSV", l.unit_code))?;
            e.by_province
                .entry(province.clone())
                .or_default()
                .add(!l.request.is_re_registration()?, expected);
            *e.by_unit
                .entry((l.unit_code.clone(), expected))
                .or_default() += 1;
            let number = match expected {
                Expected::Eligible => NumberPrefix::of(&l.request)
                    .with_context(|| format!("{} line {}", file.display(), i + 1))?,
                Expected::NotEligible(_) => None,
            };
            let want = Want {
                unit_code: l.unit_code,
                expected,
                number,
            };
            e.by_request.insert(l.request.request_id, want);
        }
        Ok(e)
    }

    pub fn registrations(&self) -> u64 {
        self.by_request.len() as u64
    }
    pub fn eligible(&self) -> u64 {
        self.by_request
            .values()
            .filter(|w| w.expected == Expected::Eligible)
            .count() as u64
    }
}

/// Connections and credentials `verify` uses.
#[derive(Debug, Clone)]
pub struct Targets {
    pub civil: Channel,
    /// Bearer token of an account whose jurisdiction covers every replayed unit.
    pub civil_auth: MetadataValue<Ascii>,
    /// Channel to the population registry with a client certificate on its read allow-list.
    pub population: Channel,
}

/// Result of `verify`.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub registrations: u64,
    pub issued: u64,
    pub not_eligible: u64,
    pub pending: u64,
    pub rejected: u64,
    pub population_active: u64,
    pub violations: Vec<String>,
    /// The civil registry's statistics by province (province code -> (name, row)).
    pub table: BTreeMap<String, (String, Row)>,
    pub total: Row,
}

struct Listed {
    id: String,
    name: String,
    unit_code: String,
    /// The unit whose register holds the entry (`registration_number`, `book_number`).
    register_unit_code: String,
    registration_number: i64,
    book_number: String,
    status: i32,
    personal_id: String,
    reasons: Reasons,
}

/// Twelve ASCII digits, the shape of every number.
fn well_formed(number: &str) -> bool {
    number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit())
}

fn pb_date(d: DateJson) -> PbDate {
    d.into()
}

const MAX_REPORTED: usize = 20;

fn violation(
    v: &mut Vec<String>,
    counter: &mut BTreeMap<&'static str, u64>,
    kind: &'static str,
    msg: String,
) {
    let n = counter.entry(kind).or_default();
    *n += 1;
    if *n <= MAX_REPORTED as u64 {
        v.push(format!("{kind}: {msg}"));
    }
}

/// Runs every check; `outcomes` (from the replay, when at hand) adds per-request checks.
pub async fn verify(
    targets: &Targets,
    expect: &Expectation,
    outcomes: Option<&[Outcome]>,
    settle_timeout: Duration,
) -> anyhow::Result<VerifyReport> {
    let (Some(from), Some(to)) = (expect.first_day, expect.last_day) else {
        anyhow::bail!("the traffic file is empty");
    };
    let mut civil = BirthRegistrationServiceClient::new(targets.civil.clone())
        .max_decoding_message_size(64 << 20);
    let mut population = PopulationRegistryServiceClient::new(targets.population.clone())
        .max_decoding_message_size(64 << 20);
    let mut report = VerifyReport::default();
    let mut v = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    // Both registries must answer before the wait for numbers to settle, not after it.
    issuance_statistics(&mut population, from, to).await?;

    // 1. Every registration in the range, once nothing is PENDING any more.
    let deadline = tokio::time::Instant::now() + settle_timeout;
    let listed = loop {
        let listed = list_all(&mut civil, &targets.civil_auth, from, to).await?;
        let pending = listed
            .iter()
            .filter(|r| r.status == cs::PersonalIdStatus::Pending as i32)
            .count();
        if pending == 0 || tokio::time::Instant::now() >= deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.registrations = listed.len() as u64;
    if report.registrations != expect.registrations() {
        violation(
            &mut v,
            &mut counts,
            "count",
            format!(
                "{} registrations listed, {} replayed",
                report.registrations,
                expect.registrations()
            ),
        );
    }

    // 2. Status and number of each registration, per unit; each register entry once.
    let mut actual_by_unit: BTreeMap<(String, Expected), u64> = BTreeMap::new();
    let mut numbers: HashMap<&str, &str> = HashMap::new();
    let mut civil_issued: HashMap<&str, &str> = HashMap::new();
    let mut entries: HashMap<(&str, &str, i64), &str> = HashMap::new();
    for r in &listed {
        let entry = (
            r.register_unit_code.as_str(),
            r.book_number.as_str(),
            r.registration_number,
        );
        if let Some(other) = entries.insert(entry, &r.name) {
            violation(
                &mut v,
                &mut counts,
                "entry-twice",
                format!(
                    "{other} and {} are both entry {} of book {} of {}",
                    r.name, r.registration_number, r.book_number, r.register_unit_code
                ),
            );
        }
        let status =
            cs::PersonalIdStatus::try_from(r.status).unwrap_or(cs::PersonalIdStatus::Unspecified);
        let got = match status {
            cs::PersonalIdStatus::Issued => {
                report.issued += 1;
                if !well_formed(&r.personal_id) {
                    violation(
                        &mut v,
                        &mut counts,
                        "malformed-number",
                        format!(
                            "{} has a number of {} characters, not 12 digits",
                            r.name,
                            r.personal_id.chars().count()
                        ),
                    );
                }
                if let Some(other) = numbers.insert(&r.personal_id, &r.name) {
                    violation(
                        &mut v,
                        &mut counts,
                        "number-twice",
                        format!("{other} and {} show the same number", r.name),
                    );
                }
                civil_issued.insert(&r.id, &r.personal_id);
                Expected::Eligible
            }
            cs::PersonalIdStatus::NotEligible => {
                report.not_eligible += 1;
                if !r.personal_id.is_empty() {
                    violation(
                        &mut v,
                        &mut counts,
                        "ineligible-numbered",
                        format!("{} is NOT_ELIGIBLE with a number", r.name),
                    );
                }
                Expected::NotEligible(r.reasons)
            }
            cs::PersonalIdStatus::Pending => {
                report.pending += 1;
                violation(
                    &mut v,
                    &mut counts,
                    "still-pending",
                    format!("{} has no number after {settle_timeout:?}", r.name),
                );
                Expected::Eligible
            }
            cs::PersonalIdStatus::Rejected | cs::PersonalIdStatus::Unspecified => {
                report.rejected += 1;
                violation(
                    &mut v,
                    &mut counts,
                    "rejected",
                    format!("{} is {:?}", r.name, status),
                );
                Expected::Eligible
            }
        };
        *actual_by_unit
            .entry((r.unit_code.clone(), got))
            .or_default() += 1;
    }
    for (key, want) in &expect.by_unit {
        let got = actual_by_unit.get(key).copied().unwrap_or(0);
        if got != *want {
            violation(
                &mut v,
                &mut counts,
                "unit-mismatch",
                format!(
                    "unit {} {:?}: {} registered, {} replayed",
                    key.0, key.1, got, want
                ),
            );
        }
    }
    for (key, got) in &actual_by_unit {
        if !expect.by_unit.contains_key(key) {
            violation(
                &mut v,
                &mut counts,
                "unit-mismatch",
                format!(
                    "unit {} {:?}: {} registered, none replayed",
                    key.0, key.1, got
                ),
            );
        }
    }

    // 3. Per request, when the replay's outcomes are at hand.
    if let Some(outcomes) = outcomes {
        let by_name: HashMap<&str, &Listed> = listed.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut seen: HashSet<&str> = HashSet::new();
        for o in outcomes {
            let Some(want) = expect.by_request.get(&o.request_id) else {
                violation(&mut v, &mut counts, "unknown-request", o.request_id.clone());
                continue;
            };
            let Some(r) = by_name.get(o.registration.as_str()) else {
                violation(
                    &mut v,
                    &mut counts,
                    "lost",
                    format!("{} ({}) not listed", o.request_id, o.status),
                );
                continue;
            };
            if !seen.insert(&r.name) {
                violation(
                    &mut v,
                    &mut counts,
                    "two-requests-one-registration",
                    r.name.clone(),
                );
            }
            if !o.acknowledged_personal_id.is_empty() && o.acknowledged_personal_id != r.personal_id
            {
                violation(
                    &mut v,
                    &mut counts,
                    "acknowledged-number-changed",
                    format!(
                        "{}: the number it was answered with is not the one it shows now",
                        r.name
                    ),
                );
            }
            let ok = match want.expected {
                Expected::Eligible => {
                    r.status == cs::PersonalIdStatus::Issued as i32 && !r.personal_id.is_empty()
                }
                Expected::NotEligible(reasons) => {
                    r.status == cs::PersonalIdStatus::NotEligible as i32
                        && r.reasons == reasons
                        && r.personal_id.is_empty()
                }
            };
            if !ok {
                violation(
                    &mut v,
                    &mut counts,
                    "wrong-outcome",
                    format!(
                        "{}: expected {:?}, got status {} reasons {:?}",
                        o.request_id, want.expected, r.status, r.reasons
                    ),
                );
            }
            // What the number encodes, against the request (a malformed one is reported
            // above).
            if let Some(prefix) = want.number
                && r.status == cs::PersonalIdStatus::Issued as i32
                && well_formed(&r.personal_id)
            {
                let province = expect
                    .unit_provinces
                    .get(&want.unit_code)
                    .map_or("", String::as_str);
                for (kind, what) in prefix.mismatches(&r.personal_id, province) {
                    violation(
                        &mut v,
                        &mut counts,
                        kind,
                        format!("{} ({}): {what}", o.request_id, r.name),
                    );
                }
            }
        }
    }

    // 4. Population side: one issuance per ISSUED registration, same number, no number twice.
    let issuances = list_issuances(&mut population, from, to).await?;
    let mut pop_numbers: HashMap<&str, &str> = HashMap::new();
    let mut pop_active: HashMap<&str, &str> = HashMap::new();
    for i in &issuances {
        if let Some(first) = pop_numbers.insert(&i.personal_id, &i.request_id) {
            violation(
                &mut v,
                &mut counts,
                "minted-twice",
                format!(
                    "requests {first} and {} were issued the same number",
                    i.request_id
                ),
            );
        }
        if i.status == pop::CitizenStatus::Active as i32
            && let Some(_) = pop_active.insert(&i.request_id, &i.personal_id)
        {
            violation(
                &mut v,
                &mut counts,
                "two-active-numbers",
                format!("request {}: two active numbers", i.request_id),
            );
        }
    }
    // What the population registry stored for a key is what the civil registry holds
    // (a retry that sent changed content under the same key would show here).
    let by_id: HashMap<&str, &Listed> = listed.iter().map(|r| (r.id.as_str(), r)).collect();
    for i in &issuances {
        if let (Some(r), Some(reference)) = (by_id.get(i.request_id.as_str()), &i.registration)
            && (reference.unit_code != r.register_unit_code
                || reference.registration_number != r.registration_number
                || reference.book_number != r.book_number)
        {
            violation(
                &mut v,
                &mut counts,
                "content-drift",
                format!(
                    "{}: population holds {} no. {} book {}, civil {} no. {} book {}",
                    r.name,
                    reference.unit_code,
                    reference.registration_number,
                    reference.book_number,
                    r.register_unit_code,
                    r.registration_number,
                    r.book_number
                ),
            );
        }
    }
    report.population_active = pop_active.len() as u64;
    for (id, number) in &civil_issued {
        match pop_active.get(id) {
            Some(n) if n == number => {}
            Some(_) => violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("registration {id}: the two registries hold different numbers"),
            ),
            None => violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("registration {id}: numbered, but no active issuance"),
            ),
        }
    }
    for id in pop_active.keys() {
        if civil_issued.contains_key(id) {
            continue;
        }
        match by_id.get(id) {
            // The civil registry shows no number for an ineligible birth; the population
            // registry is where one minted by mistake would be.
            Some(r) if r.status == cs::PersonalIdStatus::NotEligible as i32 => violation(
                &mut v,
                &mut counts,
                "ineligible-numbered",
                format!(
                    "{} is NOT_ELIGIBLE, yet the population registry holds an active number for it",
                    r.name
                ),
            ),
            _ => violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("the active issuance for {id} has no ISSUED registration"),
            ),
        }
    }

    // 5. Statistics, both sides, against the traffic file.
    let stats = civil
        .get_registration_statistics(authorized(
            cs::GetRegistrationStatisticsRequest {
                registered_from: Some(pb_date(from)),
                registered_to: Some(pb_date(to)),
                grouping: cs::StatisticsGrouping::Province as i32,
                province_code: String::new(),
            },
            &targets.civil_auth,
        ))
        .await
        .context("GetRegistrationStatistics")?
        .into_inner();
    let mut got_rows: BTreeMap<String, Row> = BTreeMap::new();
    for r in &stats.rows {
        got_rows.insert(r.group_code.clone(), Row::from_proto(r));
        report.table.insert(
            r.group_code.clone(),
            (r.group_name.clone(), Row::from_proto(r)),
        );
    }
    report.total = stats
        .total
        .as_ref()
        .map(Row::from_proto)
        .unwrap_or_default();
    let mut want_total = Row::default();
    for (code, want) in &expect.by_province {
        sum_into(&mut want_total, want);
        match got_rows.get(code) {
            Some(got) if got == want => {}
            Some(got) => violation(
                &mut v,
                &mut counts,
                "statistics",
                format!("province {code}: got {got:?}, replayed {want:?}"),
            ),
            None => violation(
                &mut v,
                &mut counts,
                "statistics",
                format!("province {code}: no row"),
            ),
        }
    }
    for code in got_rows.keys() {
        if !expect.by_province.contains_key(code) {
            violation(
                &mut v,
                &mut counts,
                "statistics",
                format!("province {code}: row without replayed registrations"),
            );
        }
    }
    if report.total != want_total {
        violation(
            &mut v,
            &mut counts,
            "statistics",
            format!("total: got {:?}, replayed {want_total:?}", report.total),
        );
    }
    let pstats = issuance_statistics(&mut population, from, to).await?;
    for p in &pstats.provinces {
        let want = expect
            .by_province
            .get(&p.province_code)
            .map_or(0, |r| r.issued);
        if p.active != want {
            violation(
                &mut v,
                &mut counts,
                "issuance-statistics",
                format!(
                    "province {}: {} active numbers, {} eligible replayed",
                    p.province_code, p.active, want
                ),
            );
        }
    }
    for (code, row) in &expect.by_province {
        if row.issued > 0 && !pstats.provinces.iter().any(|p| &p.province_code == code) {
            violation(
                &mut v,
                &mut counts,
                "issuance-statistics",
                format!("province {code}: no row"),
            );
        }
    }
    let ptotal = pstats.total.map_or(0, |t| t.active);
    if ptotal != report.issued as i64 {
        violation(
            &mut v,
            &mut counts,
            "issuance-statistics",
            format!("total active {ptotal}, civil ISSUED {}", report.issued),
        );
    }

    for (kind, n) in counts {
        if n > MAX_REPORTED as u64 {
            v.push(format!(
                "{kind}: {} more not shown",
                n - MAX_REPORTED as u64
            ));
        }
    }
    report.violations = v;
    Ok(report)
}

/// Number of violations (the reported lines undercount when capped; this is exact).
impl VerifyReport {
    pub fn violation_count(&self) -> u64 {
        self.violations
            .iter()
            .map(|l| {
                l.split_once(": ")
                    .and_then(|(_, rest)| rest.strip_suffix(" more not shown"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(1)
            })
            .sum()
    }
}

fn sum_into(total: &mut Row, r: &Row) {
    total.registrations += r.registrations;
    total.first_time += r.first_time;
    total.re_registrations += r.re_registrations;
    total.eligible += r.eligible;
    total.issued += r.issued;
    total.pending += r.pending;
    total.rejected += r.rejected;
    total.not_eligible += r.not_eligible;
    total.not_eligible_foreign_nationality += r.not_eligible_foreign_nationality;
    total.not_eligible_re_registration += r.not_eligible_re_registration;
    total.not_eligible_sex_undetermined += r.not_eligible_sex_undetermined;
    total.not_eligible_age_14_or_over += r.not_eligible_age_14_or_over;
    total.not_eligible_before_program_start += r.not_eligible_before_program_start;
}

async fn list_all(
    civil: &mut BirthRegistrationServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    from: DateJson,
    to: DateJson,
) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = civil
            .list_birth_registrations(authorized(
                cs::ListBirthRegistrationsRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    registered_from: Some(pb_date(from)),
                    registered_to: Some(pb_date(to)),
                    ..Default::default()
                },
                auth,
            ))
            .await
            .context("ListBirthRegistrations")?
            .into_inner();
        for r in page.registrations {
            out.push(Listed {
                id: r.id,
                name: r.name,
                unit_code: r.unit_code,
                register_unit_code: r.register_unit_code,
                registration_number: r.registration_number,
                book_number: r.book_number,
                status: r.personal_id_status,
                personal_id: r.personal_id,
                reasons: Reasons::from_proto(&r.ineligibility_reasons),
            });
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

async fn issuance_statistics(
    population: &mut PopulationRegistryServiceClient<Channel>,
    from: DateJson,
    to: DateJson,
) -> anyhow::Result<pop::GetIssuanceStatisticsResponse> {
    Ok(population
        .get_issuance_statistics(pop::GetIssuanceStatisticsRequest {
            registered_from: Some(pb_date(from)),
            registered_to: Some(pb_date(to)),
            province_codes: Vec::new(),
        })
        .await
        .map_err(|s| population_refused("GetIssuanceStatistics", s))?
        .into_inner())
}

/// A failed call to the population registry, with what to do when it refused the
/// client certificate (the usual first-run mistake).
fn population_refused(call: &str, status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            ": put the identity of the client certificate (--cert) on the population \
             registry's auth.read_allowed"
        }
        _ => "",
    };
    anyhow::anyhow!("{call}: {status}{hint}")
}

async fn list_issuances(
    population: &mut PopulationRegistryServiceClient<Channel>,
    from: DateJson,
    to: DateJson,
) -> anyhow::Result<Vec<pop::Issuance>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let mut req = tonic::Request::new(pop::ListIssuancesRequest {
            registered_from: Some(pb_date(from)),
            registered_to: Some(pb_date(to)),
            page_size: 1000,
            page_token: token.clone(),
        });
        req.set_timeout(Duration::from_secs(30));
        let page = population
            .list_issuances(req)
            .await
            .map_err(|s| population_refused("ListIssuances", s))?
            .into_inner();
        out.extend(page.issuances);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        sex: &str,
        born: (i32, i32, i32),
        registered: (i32, i32, i32),
    ) -> RegisterBirthRequestJson {
        let date = |(year, month, day): (i32, i32, i32)| serde_json::json!({"year": year, "month": month, "day": day});
        serde_json::from_value(serde_json::json!({
            "requestId": "r-1",
            "kind": "REGISTRATION_KIND_FIRST_TIME",
            "child": {"fullName": "A", "sex": sex, "dateOfBirth": date(born), "nationality": "VN"},
            "registeredOn": date(registered)
        }))
        .unwrap()
    }

    fn kinds(found: &[(&'static str, String)]) -> Vec<&'static str> {
        found.iter().map(|(kind, _)| *kind).collect()
    }

    #[test]
    fn the_prefix_follows_the_childs_century_sex_and_year_however_the_sex_is_spelt() {
        let of = |sex, year| {
            NumberPrefix::of(&request(sex, (year, 2, 1), (2016, 2, 10)))
                .unwrap()
                .map(|p| (p.century_sex, p.year))
        };
        assert_eq!(of("SEX_MALE", 2016), Some((2, 16)));
        assert_eq!(of("SEX_FEMALE", 2016), Some((3, 16)));
        assert_eq!(of("2", 2016), Some((3, 16)));
        assert_eq!(of("SEX_MALE", 2003), Some((2, 3)));
        assert_eq!(of("SEX_FEMALE", 1999), Some((1, 99)));
        assert_eq!(of("SEX_UNDETERMINED", 2016), None);
    }

    #[test]
    fn a_number_that_encodes_its_request_passes_and_each_wrong_part_is_named() {
        let prefix = NumberPrefix::of(&request("SEX_FEMALE", (2016, 1, 3), (2016, 2, 10)))
            .unwrap()
            .unwrap();
        assert_eq!(prefix.mismatches("001316123456", "001"), vec![]);

        let found = prefix.mismatches("079216123456", "001");
        assert_eq!(kinds(&found), ["number-province", "number-century-sex"]);
        assert_eq!(
            found[0].1,
            "digits 1-3 are 079, not the registering unit's province 001"
        );
        assert_eq!(
            kinds(&prefix.mismatches("001315123456", "001")),
            ["number-year"]
        );
        // Digits 4-6 (the child's sex and year of birth) are not quoted.
        let found = prefix.mismatches("001215123456", "001");
        assert_eq!(kinds(&found), ["number-century-sex", "number-year"]);
        assert!(found.iter().all(|(_, what)| !what.contains("215")));
    }

    #[test]
    fn the_merged_province_code_is_accepted_from_the_merger_date_only() {
        // Hà Giang (002) became part of Tuyên Quang (008) on 2025-07-01.
        let registered_on = |date| {
            NumberPrefix::of(&request("SEX_MALE", (2025, 6, 1), date))
                .unwrap()
                .unwrap()
        };
        let before = registered_on((2025, 6, 30));
        let after = registered_on((2025, 7, 1));

        assert_eq!(before.mismatches("002225000001", "002"), vec![]);
        assert_eq!(
            kinds(&before.mismatches("008225000001", "002")),
            ["number-province"]
        );
        assert_eq!(after.mismatches("002225000001", "002"), vec![]);
        assert_eq!(after.mismatches("008225000001", "002"), vec![]);
        let found = after.mismatches("001225000001", "002");
        assert_eq!(
            found,
            vec![(
                "number-province",
                "digits 1-3 are 001, not the registering unit's province 002 or its merged \
                 province 008"
                    .to_owned()
            )]
        );
    }
}
