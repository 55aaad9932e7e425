//! `traffic verify` itself: a run it passes, then faults planted behind the services'
//! backs, each of which it must report. Every other end-to-end test asserts that verify
//! finds nothing, which a verify that checks nothing would also pass.

mod common;

use std::time::Duration;

use common::fleet::Fleet;
use common::issue_request;
use contracts::mps::population::v1::population_registry_service_client::PopulationRegistryServiceClient;
use sqlx::Connection as _;
use traffic::client::{ClientTls, Target};
use traffic::replay::{Mode, ReplayOptions, replay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_number_on_an_ineligible_birth_and_numbers_the_registries_disagree_on() {
    // Arrange: about 140 registrations replayed, and verified clean.
    let fleet = Fleet::start(0.002, &[]).await;
    let everything = fleet.slice("everything", 0..fleet.lines.len());
    let replayed = replay(
        &everything,
        fleet.channels(&fleet.stack.civil.uri(), 2),
        fleet.tokens.clone(),
        &ReplayOptions {
            mode: Mode::Concurrency(16),
            number_timeout: Duration::from_secs(60),
            ..ReplayOptions::default()
        },
    )
    .await
    .expect("replay");
    let clean = fleet.verify(&everything, &replayed.outcomes).await;
    assert_eq!(clean.violations, Vec::<String>::new(), "a clean run first");

    // Act: a number minted for an ineligible birth (as a relay that sent it would have),
    // two numbered births' numbers swapped in the civil register, one number shown twice,
    // and a first registration recorded as a re-registration.
    let url = format!(
        "sqlite://{}",
        fleet.stack.data_dir.join("civil-registry.db").display()
    );
    let mut register = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the civil register");
    let ineligible: String = sqlx::query_scalar(
        "SELECT id FROM registrations WHERE status = 'NOT_ELIGIBLE' ORDER BY id LIMIT 1",
    )
    .fetch_one(&mut register)
    .await
    .expect("an ineligible birth");
    let certs = &fleet.stack.certs;
    let minting = ClientTls {
        ca_file: Some(certs.ca.clone()),
        cert_file: Some(certs.civil_client_cert.clone()),
        key_file: Some(certs.civil_client_key.clone()),
        server_name: Some("localhost".into()),
        insecure: false,
    };
    PopulationRegistryServiceClient::new(
        Target::new(&fleet.stack.population.uri(), &minting)
            .expect("endpoint")
            .connect_lazy(),
    )
    .issue_personal_id(issue_request(&ineligible, 1))
    .await
    .expect("minted under the ineligible birth's key");
    let numbered: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, personal_id FROM registrations WHERE status = 'ISSUED' ORDER BY id LIMIT 4",
    )
    .fetch_all(&mut register)
    .await
    .expect("numbered births");
    let [
        (first, first_number),
        (second, second_number),
        (third, _),
        (fourth, _),
    ] = &numbered[..]
    else {
        panic!("four numbered births: {numbered:?}");
    };
    // In three steps: the register's numbers are unique at every step.
    for (id, number) in [
        (first, "swap"),
        (second, first_number),
        (first, second_number),
    ] {
        sqlx::query("UPDATE registrations SET personal_id = ?1 WHERE id = ?2")
            .bind(number)
            .bind(id)
            .execute(&mut register)
            .await
            .expect("plant a fault");
    }
    // A register whose unique index was lost: the third birth shows the first's number.
    for statement in [
        "DROP INDEX registrations_personal_id",
        "UPDATE registrations SET personal_id = (SELECT personal_id FROM registrations \
         WHERE id = ?1) WHERE id = ?2",
    ] {
        sqlx::query(statement)
            .bind(first)
            .bind(third)
            .execute(&mut register)
            .await
            .expect(statement);
    }
    // A first registration counted as a re-registration.
    sqlx::query("UPDATE registrations SET kind = 'RE_REGISTRATION' WHERE id = ?1")
        .bind(fourth)
        .execute(&mut register)
        .await
        .expect("plant a fault");
    register.close().await.ok();
    let planted = fleet.verify(&everything, &replayed.outcomes).await;

    // Assert
    let of_kind = |kind: &str| {
        planted
            .violations
            .iter()
            .filter(|v| v.starts_with(&format!("{kind}: ")))
            .count()
    };
    assert_eq!(
        of_kind("ineligible-numbered"),
        1,
        "{:#?}",
        planted.violations
    );
    assert_eq!(of_kind("number-twice"), 1, "{:#?}", planted.violations);
    assert_eq!(
        of_kind("reconcile"),
        3,
        "two swapped numbers and the copied one differ from the population registry's: {:#?}",
        planted.violations
    );
    assert!(of_kind("statistics") >= 1, "{:#?}", planted.violations);
    assert!(
        of_kind("issuance-statistics") >= 1,
        "the extra active number: {:#?}",
        planted.violations
    );
    fleet
        .stack
        .stop()
        .await
        .expect("both services stop cleanly");
}
