//! Intruders: callers without credentials, with forged, revoked or foreign ones, and
//! officials reaching outside their unit or province. Each is refused with the contract's
//! code, nothing is written, and each attempt leaves a line in the service's
//! security log (target `security`) that carries ids only: no names, no tokens.

mod common;

use common::{Cert, World, date, fields_of, issue_request, register_request};
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use service_kit::status::reason_of;
use tonic::Code;
use tonic::metadata::MetadataValue;
use traffic::client::authorized;

/// Personal data of the requests the intruders send: none of it may reach a log.
const PERSONAL: [&str; 5] = [
    "Nguyễn Văn An",
    "Nguyễn Văn Bình",
    "Trần Thị Cúc",
    "Lê Thị Hoa",
    "Phạm Thị Lan",
];

/// (what, acceptable codes, ErrorInfo reason when the service answered, outcome).
type PopulationAttempt = (
    &'static str,
    Vec<Code>,
    Option<&'static str>,
    Result<(), tonic::Status>,
);

/// Security log lines (JSON, target `security`) of a log file.
fn security_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("\"target\":\"security\""))
        .collect()
}

fn request<T>(msg: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(a) = authorization {
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(a).expect("ascii header"),
        );
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intruders_are_refused_with_the_contract_codes_and_every_attempt_is_logged_without_personal_data()
 {
    // Arrange: a registration in province A's commune; a registrar of a neighbouring commune;
    // a registrar of province B; a revoked account.
    let world = World::start().await;
    let (owner, owner_unit, _) = world.commune_registrar(0);
    let (outsider, outsider_unit, province_b) = world.commune_registrar(1);
    let neighbour = world.neighbour_registrar(&owner_unit);
    let registration = world.register(&owner, "intruders-own").await;
    let created = world
        .stack
        .civil_admin(&[
            "admin",
            "officials",
            "create",
            "--unit",
            &owner_unit,
            "--role",
            "registrar",
        ])
        .await
        .expect("create an account");
    let field = |k: &str| {
        created
            .lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .expect("admin output")
            .to_owned()
    };
    let (revoked_id, revoked_token) = (field("official_id="), field("token="));
    world
        .stack
        .civil_admin(&["admin", "officials", "revoke", &revoked_id])
        .await
        .expect("revoke");
    let before = world.counts().await;
    let (civil_log_before, population_log_before) = world.logs();
    let civil_security_before = security_lines(&civil_log_before).len();
    let population_security_before = security_lines(&population_log_before).len();
    let revoked = format!("Bearer {revoked_token}");
    let correction = |unit_code: &str| cpb::CorrectBirthRegistrationRequest {
        request_id: "intruders-correct".into(),
        name: registration.name.clone(),
        child: register_request("x").child,
        father: register_request("x").father,
        mother: register_request("x").mother,
        unit_code: unit_code.to_owned(),
        reason: "Sửa nơi đăng ký".into(),
    };
    let stats = |province: &str| cpb::GetRegistrationStatisticsRequest {
        registered_from: Some(date(2016, 1, 1)),
        registered_to: Some(date(2016, 12, 31)),
        grouping: cpb::StatisticsGrouping::Unit.into(),
        province_code: province.to_owned(),
    };
    let get = || cpb::GetBirthRegistrationRequest {
        name: registration.name.clone(),
    };
    let outsider_auth = world.auth(&outsider);
    let neighbour_auth = world.auth(&neighbour);
    let owner_auth = world.auth(&owner);

    // Act: the civil registry's intruders, each (what, code, reason, outcome).
    let mut civil = world.civil();
    let mut attempts: Vec<(&str, Code, &str, Result<(), tonic::Status>)> = Vec::new();
    attempts.push((
        "register without a token",
        Code::Unauthenticated,
        "TOKEN_MISSING",
        civil
            .register_birth(request(register_request("intruders-1"), None))
            .await
            .map(drop),
    ));
    attempts.push((
        "register with an empty bearer",
        Code::Unauthenticated,
        "TOKEN_MISSING",
        civil
            .register_birth(request(register_request("intruders-2"), Some("Bearer ")))
            .await
            .map(drop),
    ));
    attempts.push((
        "register with a forged token",
        Code::Unauthenticated,
        "TOKEN_INVALID",
        civil
            .register_birth(request(
                register_request("intruders-3"),
                Some("Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ))
            .await
            .map(drop),
    ));
    attempts.push((
        "register with a Basic credential",
        Code::Unauthenticated,
        "TOKEN_MISSING",
        civil
            .register_birth(request(
                register_request("intruders-4"),
                Some("Basic dXNlcjpwYXNz"),
            ))
            .await
            .map(drop),
    ));
    attempts.push((
        "read with a forged token",
        Code::Unauthenticated,
        "TOKEN_INVALID",
        civil
            .get_birth_registration(request(get(), Some("Bearer x")))
            .await
            .map(drop),
    ));
    attempts.push((
        "register with a revoked account",
        Code::PermissionDenied,
        "ACCOUNT_REVOKED",
        civil
            .register_birth(request(register_request("intruders-5"), Some(&revoked)))
            .await
            .map(drop),
    ));
    attempts.push((
        "read with a revoked account",
        Code::PermissionDenied,
        "ACCOUNT_REVOKED",
        civil
            .get_birth_registration(request(get(), Some(&revoked)))
            .await
            .map(drop),
    ));
    attempts.push((
        "correct another commune's registration",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .correct_birth_registration(authorized(correction(""), &neighbour_auth))
            .await
            .map(drop),
    ));
    attempts.push((
        "read another commune's registration",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .get_birth_registration(authorized(get(), &neighbour_auth))
            .await
            .map(drop),
    ));
    attempts.push((
        "read a registration of another province",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .get_birth_registration(authorized(get(), &outsider_auth))
            .await
            .map(drop),
    ));
    attempts.push((
        "list another province's unit",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .list_birth_registrations(authorized(
                cpb::ListBirthRegistrationsRequest {
                    unit_code: owner_unit.clone(),
                    ..Default::default()
                },
                &outsider_auth,
            ))
            .await
            .map(drop),
    ));
    attempts.push((
        "statistics of another province",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .get_registration_statistics(authorized(stats("001"), &outsider_auth))
            .await
            .map(drop),
    ));
    attempts.push((
        "move a registration into another province",
        Code::PermissionDenied,
        "OUTSIDE_JURISDICTION",
        civil
            .correct_birth_registration(authorized(correction(&outsider_unit), &owner_auth))
            .await
            .map(drop),
    ));
    let own_province_rows = civil
        .get_registration_statistics(authorized(stats(&province_b), &outsider_auth))
        .await
        .expect("own province statistics")
        .into_inner()
        .total
        .map_or(0, |t| t.registrations);

    // Act: the population registry's intruders.
    let issue = || issue_request("intruders-mint", 1);
    let citizen = || ppb::GetCitizenRequest {
        personal_id: "001216000001".into(),
    };
    let mut pop_attempts: Vec<PopulationAttempt> = Vec::new();
    pop_attempts.push((
        "mint without a client certificate",
        vec![Code::Unauthenticated],
        Some("CLIENT_CERTIFICATE_MISSING"),
        world
            .population(Cert::None)
            .issue_personal_id(issue())
            .await
            .map(drop),
    ));
    pop_attempts.push((
        "read without a client certificate",
        vec![Code::Unauthenticated],
        Some("CLIENT_CERTIFICATE_MISSING"),
        world
            .population(Cert::None)
            .get_citizen(citizen())
            .await
            .map(drop),
    ));
    // A certificate from another CA fails the TLS handshake: no gRPC status can be sent,
    // the client sees a transport error (UNAVAILABLE, UNKNOWN or CANCELLED, depending on
    // when its side notices). The server still writes it to its security log.
    pop_attempts.push((
        "mint with a certificate from another CA",
        vec![Code::Unavailable, Code::Unknown, Code::Cancelled],
        None,
        world
            .population(Cert::OtherCa)
            .issue_personal_id(issue())
            .await
            .map(drop),
    ));
    pop_attempts.push((
        "mint with a certificate on no allow-list",
        vec![Code::PermissionDenied],
        Some("CALLER_NOT_ALLOWED"),
        world
            .population(Cert::Stranger)
            .issue_personal_id(issue())
            .await
            .map(drop),
    ));
    pop_attempts.push((
        "read with a certificate on no allow-list",
        vec![Code::PermissionDenied],
        Some("CALLER_NOT_ALLOWED"),
        world
            .population(Cert::Stranger)
            .get_citizen(citizen())
            .await
            .map(drop),
    ));
    pop_attempts.push((
        "mint with a read-only certificate",
        vec![Code::PermissionDenied],
        Some("CALLER_NOT_ALLOWED"),
        world
            .population(Cert::Reader)
            .issue_personal_id(issue())
            .await
            .map(drop),
    ));
    let stream_by_stranger = world
        .population(Cert::Stranger)
        .batch_issue_personal_ids(tokio_stream::iter(vec![
            ppb::BatchIssuePersonalIdsRequest {
                items: vec![issue()],
            },
        ]))
        .await
        .map(drop);
    pop_attempts.push((
        "batch mint with a certificate on no allow-list",
        vec![Code::PermissionDenied],
        Some("CALLER_NOT_ALLOWED"),
        stream_by_stranger,
    ));

    // Assert: codes and reasons.
    let after = world.counts().await;
    let (civil_log, population_log) = world.logs();
    world.stop().await;
    let mut failures = Vec::new();
    for (what, code, reason, outcome) in &attempts {
        match outcome {
            Ok(()) => failures.push(format!("civil: {what}: accepted")),
            Err(s) if s.code() != *code || reason_of(s).as_deref() != Some(*reason) => failures
                .push(format!(
                    "civil: {what}: {:?} {:?} ({}), expected {code:?} {reason}",
                    s.code(),
                    reason_of(s),
                    s.message()
                )),
            Err(_) => {}
        }
    }
    for (what, codes, reason, outcome) in &pop_attempts {
        match outcome {
            Ok(()) => failures.push(format!("population: {what}: accepted")),
            Err(s) if !codes.contains(&s.code()) => failures.push(format!(
                "population: {what}: {:?} ({}), expected {codes:?}",
                s.code(),
                s.message()
            )),
            Err(s) if reason.is_some() && reason_of(s).as_deref() != *reason => {
                failures.push(format!(
                    "population: {what}: reason {:?}, expected {reason:?}",
                    reason_of(s)
                ))
            }
            Err(s) if !fields_of(s).is_empty() => {
                failures.push(format!("population: {what}: field violations {s:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} intruders were not refused as specified:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(after, before, "an intruder wrote something");
    assert_eq!(own_province_rows, 0, "the outsider's own province is empty");

    // Assert: one security line per refused attempt, ids only.
    let civil_security = security_lines(&civil_log);
    let population_security = security_lines(&population_log);
    assert!(
        civil_security.len() - civil_security_before >= attempts.len(),
        "civil security log has {} new lines for {} attempts:\n{}",
        civil_security.len() - civil_security_before,
        attempts.len(),
        civil_security.join("\n")
    );
    assert!(
        population_security.len() - population_security_before >= pop_attempts.len(),
        "population security log has {} new lines for {} attempts:\n{}",
        population_security.len() - population_security_before,
        pop_attempts.len(),
        population_security.join("\n")
    );
    assert!(
        population_security[population_security_before..]
            .iter()
            .any(|l| l.contains("TLS handshake refused")),
        "the certificate from another CA is in the security log:\n{}",
        population_security.join("\n")
    );
    for line in civil_security.iter().chain(&population_security) {
        for personal in PERSONAL {
            assert!(
                !line.contains(personal),
                "personal data in a log line: {line}"
            );
        }
        for credential in [
            revoked_token.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "dXNlcjpwYXNz",
        ] {
            assert!(
                !line.contains(credential),
                "a credential in a log line: {line}"
            );
        }
    }
    assert!(
        civil_security.iter().any(|l| l.contains(&revoked_id)),
        "the revoked account's attempt names its id"
    );
    for log in [&civil_log, &population_log] {
        for personal in PERSONAL {
            assert!(
                !log.contains(personal),
                "personal data in a log: {personal}"
            );
        }
    }
}
