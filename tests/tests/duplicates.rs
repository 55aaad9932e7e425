//! Duplicates and reordering from the client side: the same RegisterBirth sent several
//! times at once, a retry after a client-side timeout whose first call had in fact
//! succeeded, and registrations replayed out of order (twins and days shuffled). Each
//! request_id gives one registration and one number.
//!
//! `E2E_HEAVY=1` uses ten times more registrations.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fleet::{Fleet, findings, heavy};
use common::register_request;
use contracts::moj::civilstatus::v1 as cpb;
use e2e_tests::proxy::{Mode, Proxy};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use traffic::client::authorized;
use traffic::profile::Level;
use traffic::replay::{Mode as ReplayMode, Outcome, ReplayOptions, replay};

/// Copies of each registration in the duplicated slice.
const COPIES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_retried_and_shuffled_register_births_give_one_registration_and_one_number_each()
{
    // Arrange: ~210 registrations; the first third sent COPIES times each, shuffled; the
    // rest shuffled (twins and days out of order).
    let scale = if heavy() { 0.03 } else { 0.003 };
    let fleet = Fleet::start(scale, &[]).await;
    let total = fleet.lines.len();
    let third = total / 3;
    let mut rng = StdRng::seed_from_u64(11);
    let mut duplicated: Vec<String> = fleet.lines[..third]
        .iter()
        .flat_map(|l| std::iter::repeat_n(l.clone(), COPIES))
        .collect();
    duplicated.shuffle(&mut rng);
    let mut shuffled = fleet.lines[third..].to_vec();
    shuffled.shuffle(&mut rng);
    let dup_file = fleet.dir.join("duplicated.ndjson");
    std::fs::write(&dup_file, duplicated.join("\n") + "\n").expect("write");
    let shuffled_file = fleet.dir.join("shuffled.ndjson");
    std::fs::write(&shuffled_file, shuffled.join("\n") + "\n").expect("write");
    let everything = fleet.slice("everything", 0..total);
    let opts = ReplayOptions {
        mode: ReplayMode::Concurrency(32),
        number_timeout: Duration::from_secs(60),
        ..ReplayOptions::default()
    };

    // Act 1: duplicates, up to 32 in flight (copies of one request overlap).
    let dup = replay(
        &dup_file,
        fleet.channels(&fleet.stack.civil.uri(), 2),
        fleet.tokens.clone(),
        &opts,
    )
    .await
    .expect("replay");

    // Assert 1: every copy of a request got the same registration and the same number.
    assert_eq!(dup.failed, 0, "errors: {:?}", dup.errors);
    let mut by_request: HashMap<&str, Vec<&Outcome>> = HashMap::new();
    for o in &dup.outcomes {
        by_request.entry(&o.request_id).or_default().push(o);
    }
    assert_eq!(by_request.len(), third);
    for (id, copies) in &by_request {
        assert_eq!(copies.len(), COPIES);
        assert!(
            copies
                .iter()
                .all(|o| o.registration == copies[0].registration
                    && o.personal_id == copies[0].personal_id
                    && (o.acknowledged_personal_id.is_empty()
                        || o.acknowledged_personal_id == copies[0].personal_id)),
            "copies of {id} diverge: {copies:#?}"
        );
    }

    // Act 2: the rest, shuffled.
    let shuffled_report = replay(
        &shuffled_file,
        fleet.channels(&fleet.stack.civil.uri(), 2),
        fleet.tokens.clone(),
        &opts,
    )
    .await
    .expect("replay");

    // Assert 2: one registration and one number per request, across both services.
    let mut outcomes: Vec<Outcome> = by_request.values().map(|c| c[0].clone()).collect();
    outcomes.extend(shuffled_report.outcomes.iter().cloned());
    let verified = fleet.verify(&everything, &outcomes).await;
    let found = findings(&shuffled_report, &verified);
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(verified.registrations as usize, total);

    // Act 3: a call whose answer is slower than the client's deadline (a proxy delays
    // both directions), so the client gives up although the registry commits; then the
    // client retries the same request_id directly.
    let registrar = fleet
        .plan
        .officials
        .iter()
        .find(|o| {
            fleet
                .plan
                .units
                .iter()
                .any(|u| u.code == o.unit_code && u.level == Level::Commune)
        })
        .expect("a commune registrar")
        .id
        .clone();
    let auth = fleet.auth(&registrar);
    let request = register_request("duplicates-timeout-retry");
    let slow = Proxy::start(vec![fleet.stack.civil.grpc])
        .await
        .expect("proxy");
    slow.set_mode(Mode::Delay(Duration::from_millis(400)));
    let before = fleet.registrations().await;
    let mut first = authorized(request.clone(), &auth);
    first.set_timeout(Duration::from_millis(600));
    let mut slow_client = contracts::moj::civilstatus::v1::birth_registration_service_client::BirthRegistrationServiceClient::new(
        fleet.channels(&format!("https://{}", slow.addr()), 1).remove(0),
    );
    let timed_out = slow_client
        .register_birth(first)
        .await
        .expect_err("the client gives up first");
    fleet
        .until_registered(before + 1, Duration::from_secs(10))
        .await;
    let retried = fleet
        .civil_client()
        .register_birth(authorized(request.clone(), &auth))
        .await
        .expect("the retry is answered")
        .into_inner()
        .registration
        .expect("registration");
    let again = fleet
        .civil_client()
        .register_birth(authorized(request.clone(), &auth))
        .await
        .expect("a second retry is answered")
        .into_inner()
        .registration
        .expect("registration");
    let settled = settled(&fleet, &retried.name, &auth).await;
    let after_settling = fleet
        .civil_client()
        .register_birth(authorized(request, &auth))
        .await
        .expect("a retry after the number is answered")
        .into_inner()
        .registration
        .expect("registration");

    // Assert 3: the first call had committed; the retries return that registration.
    assert!(
        matches!(
            timed_out.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{timed_out:?}"
    );
    assert_eq!(fleet.registrations().await, before + 1);
    assert_eq!(retried.name, again.name);
    assert_eq!(retried.id, again.id);
    // One number for the request, whichever answer carried it first.
    for answer in [&retried, &again, &after_settling] {
        if answer.personal_id_status == cpb::PersonalIdStatus::Issued as i32 {
            assert_eq!(answer.personal_id, settled.personal_id);
        }
    }
    assert_eq!(
        after_settling.personal_id_status,
        cpb::PersonalIdStatus::Issued as i32
    );
    assert_eq!(after_settling.personal_id, settled.personal_id);
    fleet
        .stack
        .stop()
        .await
        .expect("both services stop cleanly");
}

/// The registration once its number has come back (polling, up to 30 s).
async fn settled(
    fleet: &Fleet,
    name: &str,
    auth: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> cpb::BirthRegistration {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let registration = fleet
            .civil_client()
            .get_birth_registration(authorized(
                cpb::GetBirthRegistrationRequest { name: name.into() },
                auth,
            ))
            .await
            .expect("the registration is readable")
            .into_inner()
            .registration
            .expect("registration");
        if registration.personal_id_status == cpb::PersonalIdStatus::Issued as i32 {
            return registration;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no number within 30 s: status {}",
            registration.personal_id_status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
