//! `traffic verify`: checks the invariants of architecture.md across both services after a
//! replay, against what the traffic file says must have happened:
//! every eligible registration has exactly one active number; no ineligible one has any;
//! no number twice; the civil registry's ISSUED registrations and the population registry's
//! issuances match one to one; the statistics table equals what was replayed.

use crate::client::authorized;
use crate::record::{DateJson, Expected, Reasons, TrafficLine};
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
    /// request_id -> (unit code, expected outcome).
    pub by_request: HashMap<String, (String, Expected)>,
    /// (unit code, expected) -> count.
    pub by_unit: BTreeMap<(String, Expected), u64>,
    /// province code -> expected statistics row.
    pub by_province: BTreeMap<String, Row>,
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
        let mut e = Self::default();
        let r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
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
            e.by_province.entry(province.clone()).or_default().add(
                l.request.kind != "REGISTRATION_KIND_RE_REGISTRATION",
                expected,
            );
            *e.by_unit
                .entry((l.unit_code.clone(), expected))
                .or_default() += 1;
            e.by_request
                .insert(l.request.request_id, (l.unit_code, expected));
        }
        Ok(e)
    }

    pub fn registrations(&self) -> u64 {
        self.by_request.len() as u64
    }
    pub fn eligible(&self) -> u64 {
        self.by_request
            .values()
            .filter(|(_, e)| *e == Expected::Eligible)
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
    registration_number: i64,
    book_number: String,
    status: i32,
    personal_id: String,
    reasons: Reasons,
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

    // 2. Status and number of each registration, per unit.
    let mut actual_by_unit: BTreeMap<(String, Expected), u64> = BTreeMap::new();
    let mut numbers: HashMap<&str, &str> = HashMap::new();
    let mut civil_issued: HashMap<&str, &str> = HashMap::new();
    for r in &listed {
        let status =
            cs::PersonalIdStatus::try_from(r.status).unwrap_or(cs::PersonalIdStatus::Unspecified);
        let got = match status {
            cs::PersonalIdStatus::Issued => {
                report.issued += 1;
                if r.personal_id.len() != 12 || !r.personal_id.bytes().all(|b| b.is_ascii_digit()) {
                    violation(
                        &mut v,
                        &mut counts,
                        "malformed-number",
                        format!("{} has number {:?}", r.name, r.personal_id),
                    );
                }
                if let Some(other) = numbers.insert(&r.personal_id, &r.name) {
                    violation(
                        &mut v,
                        &mut counts,
                        "number-twice",
                        format!("{} on {} and {}", r.personal_id, other, r.name),
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
            let Some((_, want)) = expect.by_request.get(&o.request_id) else {
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
                        "{}: answered {}, now {:?}",
                        r.name, o.acknowledged_personal_id, r.personal_id
                    ),
                );
            }
            let ok = match want {
                Expected::Eligible => {
                    r.status == cs::PersonalIdStatus::Issued as i32 && !r.personal_id.is_empty()
                }
                Expected::NotEligible(reasons) => {
                    r.status == cs::PersonalIdStatus::NotEligible as i32
                        && r.reasons == *reasons
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
                        o.request_id, want, r.status, r.reasons
                    ),
                );
            }
        }
    }

    // 4. Population side: one issuance per ISSUED registration, same number, no number twice.
    let issuances = list_issuances(&mut population, from, to).await?;
    let mut pop_numbers: HashSet<&str> = HashSet::new();
    let mut pop_active: HashMap<&str, &str> = HashMap::new();
    for i in &issuances {
        if !pop_numbers.insert(&i.personal_id) {
            violation(&mut v, &mut counts, "minted-twice", i.personal_id.clone());
        }
        if i.status == pop::CitizenStatus::Active as i32
            && let Some(prev) = pop_active.insert(&i.request_id, &i.personal_id)
        {
            violation(
                &mut v,
                &mut counts,
                "two-active-numbers",
                format!("request {}: {} and {}", i.request_id, prev, i.personal_id),
            );
        }
    }
    // What the population registry stored for a key is what the civil registry holds
    // (a retry that sent changed content under the same key would show here).
    let by_id: HashMap<&str, &Listed> = listed.iter().map(|r| (r.id.as_str(), r)).collect();
    for i in &issuances {
        if let (Some(r), Some(reference)) = (by_id.get(i.request_id.as_str()), &i.registration)
            && (reference.unit_code != r.unit_code
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
                    r.unit_code,
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
            Some(n) => violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("registration {id}: civil {number}, population {n}"),
            ),
            None => violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("registration {id}: civil {number}, no active issuance"),
            ),
        }
    }
    for (id, number) in &pop_active {
        if !civil_issued.contains_key(id) {
            violation(
                &mut v,
                &mut counts,
                "reconcile",
                format!("issuance {number} for {id} has no ISSUED registration"),
            );
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
    let pstats = population
        .get_issuance_statistics(pop::GetIssuanceStatisticsRequest {
            registered_from: Some(pb_date(from)),
            registered_to: Some(pb_date(to)),
            province_codes: Vec::new(),
        })
        .await
        .context("GetIssuanceStatistics")?
        .into_inner();
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
            .context("ListIssuances")?
            .into_inner();
        out.extend(page.issuances);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}
