//! Another language's client against both real services: the Python client of
//! `tests/interop/python` compiles the public contracts itself (grpcio-tools), registers a
//! birth over TLS with an official's token, reads the `google.rpc.BadRequest` of a bad one,
//! checks the number on the population registry with a reader certificate, and backfills
//! through the `BatchIssuePersonalIds` stream with a minting one. This test then checks what
//! it reported against the services' own state.
//!
//! It needs a Python with the client's packages, named by `INTEROP_PYTHON` (`.ci/run` makes
//! one); without it the test says `skipped: INTEROP_PYTHON not set`.

mod common;

use common::{Cert, World};
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use traffic::client::authorized;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_registers_births_backfills_numbers_and_reads_their_errors() {
    let Ok(python) = std::env::var("INTEROP_PYTHON") else {
        service_kit::testing::skip("INTEROP_PYTHON not set");
        return;
    };
    // Arrange
    let world = World::start().await;
    let (official, _unit, province) = world.commune_registrar(0);
    let token = world.auth(&official);
    let before = world.counts().await;
    let certs = &world.stack.certs;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/interop/python/registry_client.py"
    );

    // Act
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--civil", &world.stack.civil.grpc.to_string()])
        .args(["--population", &world.stack.population.grpc.to_string()])
        .arg("--ca")
        .arg(&certs.ca)
        .arg("--cert")
        .arg(&certs.traffic_client_cert)
        .arg("--key")
        .arg(&certs.traffic_client_key)
        .arg("--minting-cert")
        .arg(&certs.civil_client_cert)
        .arg("--minting-key")
        .arg(&certs.civil_client_key)
        .args(["--server-name", "localhost"])
        .env("OFFICIAL_TOKEN", token.to_str().expect("ascii token"))
        .output()
        .await
        .expect("the Python client runs");

    // Assert: it passed its own checks, and what it saw is what the services hold.
    assert!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line on stdout");
    let name = seen["registration"].as_str().expect("registration");
    let number = seen["personal_id"].as_str().expect("personal_id");
    assert_eq!(
        seen["invalid_fields"],
        serde_json::json!(["child.full_name"])
    );
    assert_eq!(seen["province_code"], serde_json::json!(province));
    let stored = world
        .civil()
        .get_birth_registration(authorized(
            cpb::GetBirthRegistrationRequest { name: name.into() },
            &token,
        ))
        .await
        .expect("the registration the client made")
        .into_inner()
        .registration
        .expect("registration");
    assert_eq!(stored.personal_id, number);
    assert_eq!(
        stored.personal_id_status,
        cpb::PersonalIdStatus::Issued as i32
    );
    let under_key = world
        .population(Cert::Reader)
        .find_citizen_by_registration(ppb::FindCitizenByRegistrationRequest {
            request_id: name.trim_start_matches("birthRegistrations/").into(),
            ..Default::default()
        })
        .await
        .expect("the citizen under the registration's key")
        .into_inner()
        .citizens;
    assert_eq!(
        under_key
            .iter()
            .map(|c| c.personal_id.as_str())
            .collect::<Vec<_>>(),
        [number]
    );
    // The backfill's number is stored under its key; its invalid item named its field.
    assert_eq!(
        seen["backfill_invalid_fields"],
        serde_json::json!(["items[1].birth.nationality"])
    );
    let backfilled = seen["backfill_personal_id"]
        .as_str()
        .expect("backfill number");
    let citizen = world
        .population(Cert::Reader)
        .get_citizen(ppb::GetCitizenRequest {
            personal_id: backfilled.into(),
        })
        .await
        .expect("the backfilled citizen")
        .into_inner()
        .citizen
        .expect("citizen");
    assert!(citizen.request_id.starts_with("py-backfill-"));
    assert_eq!(citizen.status, ppb::CitizenStatus::Active as i32);
    // One registration and two numbers: the retries and the invalid records wrote nothing.
    let after = world.counts().await;
    assert_eq!(after.registrations, before.registrations + 1);
    assert_eq!(after.population_issued, before.population_issued + 2);
    world.stop().await;
}
