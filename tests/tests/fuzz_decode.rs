//! A stable-toolchain fuzz harness over request decoding plus validation: valid encoded
//! requests of every RPC of both services are mutated (bit flips, byte changes, inserted,
//! deleted and duplicated ranges, truncation, splices of other requests) by a seeded RNG;
//! each mutant is decoded with prost and, when it decodes, converted proto -> domain by
//! the service's own conversion. The property: nothing panics.
//!
//! Budget: `E2E_FUZZ_ITERATIONS` (default 200,000 mutants, a few seconds) and/or `E2E_FUZZ_SECONDS`;
//! `E2E_FUZZ_SEED` replays a run. CI runs the default; a long run is e.g.
//! `E2E_FUZZ_SECONDS=600 E2E_FUZZ_ITERATIONS=1000000000 cargo test -p e2e-tests --release --test fuzz_decode`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use civil_registry::grpc::convert as civil;
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use population_registry::domain::province::{PostMergerRule, ProvinceTable};
use population_registry::grpc::convert as pop;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

mod common;

/// Decodes `bytes` as one request type and runs its conversion: `None` when it does not
/// decode, else whether the conversion accepted it.
type Target = fn(&[u8], &ProvinceTable) -> Option<bool>;

fn targets() -> Vec<(&'static str, Target)> {
    vec![
        ("IssuePersonalIdRequest", |b, p| {
            let r = ppb::IssuePersonalIdRequest::decode(b).ok()?;
            Some(pop::issue_request(&r, p).is_ok())
        }),
        ("BatchIssuePersonalIdsRequest", |b, p| {
            let r = ppb::BatchIssuePersonalIdsRequest::decode(b).ok()?;
            let accepted = r.items.iter().filter(|i| pop::issue_request(i, p).is_ok());
            Some(accepted.count() == r.items.len())
        }),
        ("ReissuePersonalIdRequest", |b, p| {
            let r = ppb::ReissuePersonalIdRequest::decode(b).ok()?;
            Some(pop::reissue_request(&r, p).is_ok())
        }),
        ("GetCitizenRequest", |b, _| {
            let r = ppb::GetCitizenRequest::decode(b).ok()?;
            Some(pop::personal_id(&r.personal_id, "personal_id").is_ok())
        }),
        ("ValidatePersonalIdRequest", |b, p| {
            let r = ppb::ValidatePersonalIdRequest::decode(b).ok()?;
            Some(pop::validation(&r.personal_id, p, None).valid)
        }),
        ("FindCitizenByRegistrationRequest", |b, _| {
            let r = ppb::FindCitizenByRegistrationRequest::decode(b).ok()?;
            Some(pop::registration_query(&r).is_ok())
        }),
        ("GetIssuanceStatisticsRequest", |b, p| {
            let r = ppb::GetIssuanceStatisticsRequest::decode(b).ok()?;
            let dates = pop::date_range(r.registered_from.as_ref(), r.registered_to.as_ref());
            let provinces = pop::province_filter(&r.province_codes, p);
            Some(dates.is_ok() && provinces.is_ok())
        }),
        ("ListIssuancesRequest", |b, _| {
            let r = ppb::ListIssuancesRequest::decode(b).ok()?;
            let dates = pop::date_range(r.registered_from.as_ref(), r.registered_to.as_ref());
            let page = pop::page(r.page_size, &r.page_token);
            Some(dates.is_ok() && page.is_ok())
        }),
        ("RegisterBirthRequest", |b, _| {
            let r = cpb::RegisterBirthRequest::decode(b).ok()?;
            Some(civil::new_birth(&r).is_ok())
        }),
        ("GetBirthRegistrationRequest", |b, _| {
            let r = cpb::GetBirthRegistrationRequest::decode(b).ok()?;
            Some(civil::registration_id("name", &r.name).is_ok())
        }),
        ("ListBirthRegistrationsRequest", |b, _| {
            let r = cpb::ListBirthRegistrationsRequest::decode(b).ok()?;
            Some(civil::list_query(&r).is_ok())
        }),
        ("CorrectBirthRegistrationRequest", |b, _| {
            let r = cpb::CorrectBirthRegistrationRequest::decode(b).ok()?;
            Some(civil::correction(&r).is_ok())
        }),
        ("GetRegistrationStatisticsRequest", |b, _| {
            let r = cpb::GetRegistrationStatisticsRequest::decode(b).ok()?;
            Some(civil::statistics_query(&r).is_ok())
        }),
    ]
}

/// How the mutants fared with one request type.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    accepted: u64,
    refused: u64,
}

/// Valid encoded requests: the seeds every mutant starts from.
fn corpus() -> Vec<Vec<u8>> {
    let register = common::register_request("fuzz-register");
    let issue = common::issue_request("fuzz-issue", 1);
    vec![
        issue.encode_to_vec(),
        ppb::BatchIssuePersonalIdsRequest {
            items: vec![issue.clone(), common::issue_request("fuzz-issue-2", 2)],
        }
        .encode_to_vec(),
        ppb::ReissuePersonalIdRequest {
            request_id: "fuzz-reissue".into(),
            personal_id: "001216000001".into(),
            corrected_birth: issue.birth.clone(),
            reason: "Sai giới tính".into(),
        }
        .encode_to_vec(),
        ppb::FindCitizenByRegistrationRequest {
            request_id: String::new(),
            unit_code: "U1".into(),
            book_number: "01/2016".into(),
            registration_number: 7,
        }
        .encode_to_vec(),
        ppb::GetIssuanceStatisticsRequest {
            registered_from: Some(common::date(2016, 1, 1)),
            registered_to: Some(common::date(2016, 3, 31)),
            province_codes: vec!["001".into(), "079".into()],
        }
        .encode_to_vec(),
        ppb::ListIssuancesRequest {
            registered_from: Some(common::date(2016, 1, 1)),
            registered_to: Some(common::date(2016, 3, 31)),
            page_size: 10,
            page_token: "after:001216000001".into(),
        }
        .encode_to_vec(),
        register.encode_to_vec(),
        cpb::CorrectBirthRegistrationRequest {
            request_id: "fuzz-correct".into(),
            name: "birthRegistrations/0190f3b2-7d1a-7000-8000-000000000000".into(),
            child: register.child.clone(),
            father: register.father.clone(),
            mother: register.mother.clone(),
            unit_code: "U1".into(),
            reason: "Sửa tên".into(),
        }
        .encode_to_vec(),
        cpb::ListBirthRegistrationsRequest {
            page_size: 20,
            page_token: "31367c61".into(),
            unit_code: "U1".into(),
            province_code: "001".into(),
            registered_from: Some(common::date(2016, 1, 1)),
            registered_to: Some(common::date(2016, 2, 1)),
            personal_id_status: 1,
        }
        .encode_to_vec(),
        cpb::GetRegistrationStatisticsRequest {
            registered_from: Some(common::date(2016, 1, 1)),
            registered_to: Some(common::date(2016, 3, 31)),
            grouping: 1,
            province_code: "001".into(),
        }
        .encode_to_vec(),
    ]
}

/// Interesting bytes: varint edges, wire-type tags, UTF-8 lead bytes, controls.
const MAGIC: [u8; 12] = [
    0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12, 0x1a, 0xc3, 0xe1, 0x1b,
];

fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4usize) {
        let len = out.len();
        match rng.random_range(0..7u8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8u8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = MAGIC[rng.random_range(0..MAGIC.len())];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=8usize);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                out.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 32));
                let copy = out[i..j].to_vec();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, copy);
            }
            5 if len > 0 => out.truncate(rng.random_range(0..len)),
            _ => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                if !other.is_empty() {
                    let i = rng.random_range(0..other.len());
                    let j = rng.random_range(i..=other.len());
                    let at = rng.random_range(0..=out.len());
                    out.splice(at..at, other[i..j].iter().copied());
                }
            }
        }
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn mutated_requests_of_every_rpc_decode_and_convert_without_a_panic() {
    // Arrange
    let iterations = env_u64("E2E_FUZZ_ITERATIONS").unwrap_or(200_000);
    let budget = env_u64("E2E_FUZZ_SECONDS").map(Duration::from_secs);
    let seed = env_u64("E2E_FUZZ_SEED").unwrap_or(0x5eed_2016);
    let provinces = ProvinceTable::load(PostMergerRule::Legacy).expect("province table");
    let corpus = corpus();
    let targets = targets();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut tallies = vec![Tally::default(); targets.len()];
    let mut ran = 0u64;

    // Act
    while ran < iterations && budget.is_none_or(|b| started.elapsed() < b) {
        let input = &corpus[rng.random_range(0..corpus.len())];
        let mutant = mutate(&mut rng, input, &corpus);
        for ((name, target), tally) in targets.iter().zip(&mut tallies) {
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&mutant, &provinces)));
            // Assert
            match outcome {
                Ok(Some(true)) => tally.accepted += 1,
                Ok(Some(false)) => tally.refused += 1,
                Ok(None) => {}
                Err(_) => panic!(
                    "{name} panicked on mutant {ran} (seed {seed}): {}",
                    mutant
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            }
        }
        ran += 1;
    }
    eprintln!("{ran} mutants in {:?} (seed {seed})", started.elapsed());
    for ((name, _), tally) in targets.iter().zip(&tallies) {
        eprintln!("  {name}: {tally:?}");
    }
    // The harness exercises conversion, not only decoding: every request type decodes
    // some mutants, and the conversions that validate content both accept and refuse.
    assert!(ran > 0);
    for ((name, _), tally) in targets.iter().zip(&tallies) {
        assert!(
            tally.accepted + tally.refused > 0,
            "{name}: no mutant decoded"
        );
    }
    for checked in [
        "IssuePersonalIdRequest",
        "BatchIssuePersonalIdsRequest",
        "ReissuePersonalIdRequest",
        "RegisterBirthRequest",
        "CorrectBirthRegistrationRequest",
        "ListBirthRegistrationsRequest",
        "GetRegistrationStatisticsRequest",
    ] {
        let at = targets.iter().position(|(name, _)| *name == checked);
        let tally = tallies[at.expect("a target")];
        assert!(
            tally.accepted > 0 && tally.refused > 0,
            "{checked}: conversions not exercised both ways: {tally:?}"
        );
    }
}
