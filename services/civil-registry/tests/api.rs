//! The civil registry's API, over real gRPC, against a fake population registry, on SQLite
//! and (when TEST_POSTGRES_URL is set) PostgreSQL.

mod support;

use std::sync::Arc;
use std::time::Duration;

use contracts::moj::civilstatus::v1 as pb;
use service_kit::status::{field_violations_of, reason_of};
use support::{Backend, TestApp, auth, birth, date};
use tonic::Code;

const ISSUED: i32 = pb::PersonalIdStatus::Issued as i32;
const PENDING: i32 = pb::PersonalIdStatus::Pending as i32;

async fn register(
    app: &TestApp,
    who: &str,
    req: pb::RegisterBirthRequest,
) -> Result<pb::BirthRegistration, tonic::Status> {
    let mut client = app.client().await;
    client
        .register_birth(auth(req, &app.token(who)))
        .await
        .map(|r| r.into_inner().registration.unwrap())
}

/// (name, unit) of the registrations `who` lists for `unit` (first page).
async fn listed_in(app: &TestApp, who: &str, unit: &str) -> Vec<(String, String)> {
    app.client()
        .await
        .list_birth_registrations(auth(
            pb::ListBirthRegistrationsRequest {
                unit_code: unit.into(),
                ..Default::default()
            },
            &app.token(who),
        ))
        .await
        .unwrap()
        .into_inner()
        .registrations
        .into_iter()
        .map(|r| (r.name, r.unit_code))
        .collect()
}

async fn register_birth_returns_the_number_obtained_from_the_population_registry(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    // Act
    let r = register(&app, "reg_c001", birth("req-1"))
        .await
        .expect("registered");
    // Assert
    assert_eq!(r.personal_id_status, ISSUED);
    assert_eq!(r.personal_id.len(), 12);
    assert!(
        r.personal_id.starts_with("001"),
        "the number encodes the registering unit's province"
    );
    assert_eq!(r.registration_number, 1);
    assert_eq!(r.book_number, "01/2025");
    assert_eq!(r.unit_code, "C001");
    assert_eq!(r.official_id, "reg_c001");
    assert_eq!(r.eligibility_rule_version, "4756/BTP-HTQTCT:2020.1");
    assert!(r.ineligibility_reasons.is_empty());
    assert_eq!(r.child.unwrap().full_name, "Nguyễn Văn An");
    assert_eq!(app.fake.received(), 1);
    app.stop().await;
}

async fn the_relay_connects_to_the_population_registry_when_the_service_starts(backend: Backend) {
    // Arrange: a fresh service, nothing registered, so the relay has nothing to send.
    let app = TestApp::start(backend).await;

    // Act: wait (bounded) for the fake to see a connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.fake.connections() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: connected ahead of any registration, and nothing was issued by it.
    assert!(app.fake.connections() >= 1, "no connection at start");
    assert_eq!(app.fake.received(), 0);
    app.stop().await;
}

/// A Kubernetes Service balances connections, not calls: the relay's calls go over its
/// connections in turn, so that one civil replica reaches several population replicas.
async fn the_relay_sends_over_each_of_its_connections_in_turn(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.population_registry.connections = 3).await;

    // Act: registrations one after another, each answered with its number.
    for i in 0..6 {
        let r = register(&app, "reg_c001", birth(&format!("turns-{i}")))
            .await
            .unwrap();
        assert_eq!(r.personal_id_status, ISSUED);
    }

    // Assert
    assert_eq!(app.fake.connections(), 3);
    app.stop().await;
}

async fn ineligible_births_are_registered_with_their_reason_and_never_sent(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    use pb::IneligibilityReason as R;
    let mut re_registration = birth("re");
    re_registration.kind = pb::RegistrationKind::ReRegistration as i32;
    let mut foreign = birth("foreign");
    foreign.child.as_mut().unwrap().nationality = "FR".into();
    let mut undetermined = birth("sex");
    undetermined.child.as_mut().unwrap().sex = pb::Sex::Undetermined as i32;
    let mut old = birth("old");
    old.child.as_mut().unwrap().date_of_birth = date(2011, 8, 31);
    let mut exactly_14 = birth("fourteen");
    exactly_14.child.as_mut().unwrap().date_of_birth = date(2011, 9, 1);
    let mut before_start = birth("before");
    before_start.registered_on = date(2015, 12, 31);
    before_start.child.as_mut().unwrap().date_of_birth = date(2015, 12, 1);
    let cases = [
        (re_registration, vec![R::ReRegistration]),
        (foreign, vec![R::ForeignNationality]),
        (undetermined, vec![R::SexUndetermined]),
        (exactly_14, vec![R::Age14OrOver]),
        (old, vec![R::Age14OrOver]),
        (before_start, vec![R::BeforeProgramStart]),
    ];
    for (req, reasons) in cases {
        // Act
        let r = register(&app, "reg_c001", req).await.expect("registered");
        // Assert
        assert_eq!(
            r.personal_id_status,
            pb::PersonalIdStatus::NotEligible as i32
        );
        assert_eq!(
            r.ineligibility_reasons,
            reasons.iter().map(|r| *r as i32).collect::<Vec<_>>()
        );
        assert!(r.personal_id.is_empty());
    }
    let mut almost_14 = birth("almost");
    almost_14.child.as_mut().unwrap().date_of_birth = date(2011, 9, 2);
    assert_eq!(
        register(&app, "reg_c001", almost_14)
            .await
            .unwrap()
            .personal_id_status,
        ISSUED
    );
    assert_eq!(app.fake.received(), 1, "only the eligible birth was sent");
    app.stop().await;
}

/// A caller waits for a number only when one is coming: the writer ends every other wait as
/// it commits. With a two-minute wait configured, a caller left waiting would exceed the
/// bound below many times over.
async fn callers_with_no_number_coming_are_answered_without_waiting_for_one(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| {
        cfg.registration.wait_for_number_ms = 120_000;
    })
    .await;
    let well_within = std::time::Duration::from_secs(30);
    let answered = |req| tokio::time::timeout(well_within, register(&app, "reg_c001", req));
    let mut foreign = birth("no-number-foreign");
    foreign.child.as_mut().unwrap().nationality = "FR".into();
    let mut other_content = birth("no-number-issued");
    other_content.child.as_mut().unwrap().full_name = "Someone Else".into();
    // Act
    let issued = answered(birth("no-number-issued")).await.expect("answered");
    let not_eligible = answered(foreign).await.expect("answered");
    let retry = answered(birth("no-number-issued")).await.expect("answered");
    let conflict = answered(other_content).await.expect("answered");
    // Assert
    assert_eq!(issued.unwrap().personal_id_status, ISSUED);
    assert_eq!(
        not_eligible.unwrap().personal_id_status,
        pb::PersonalIdStatus::NotEligible as i32
    );
    assert_eq!(retry.unwrap().personal_id_status, ISSUED);
    assert_eq!(conflict.unwrap_err().code(), Code::AlreadyExists);
    app.stop().await;
}

async fn a_retry_returns_the_same_registration_and_other_content_is_refused(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let first = register(&app, "reg_c001", birth("same-key")).await.unwrap();
    // Act
    let retry = register(&app, "reg_c001", birth("same-key")).await.unwrap();
    let mut other = birth("same-key");
    other.child.as_mut().unwrap().full_name = "Someone Else".into();
    let conflict = register(&app, "reg_c001", other).await.unwrap_err();
    // Assert
    assert_eq!(retry.id, first.id);
    assert_eq!(retry.registration_number, first.registration_number);
    assert_eq!(retry.personal_id, first.personal_id);
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(
        reason_of(&conflict).as_deref(),
        Some("IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(app.count_registrations().await, 1);
    assert_eq!(app.fake.received(), 1);
    app.stop().await;
}

/// A registration's content digest has been SHA-256 of the JSON of (record, given date or
/// null) since the first release: digests stored then must still match their retries.
#[test]
fn the_content_digest_is_that_of_the_record_and_date_pair() {
    use civil_registry::grpc::convert::new_birth;
    use sha2::{Digest, Sha256};
    let mut undated = birth("digest");
    undated.registered_on = None;
    let mut digests = Vec::new();
    for request in [birth("digest"), undated] {
        let new = new_birth(&request).unwrap();
        let (record_json, digest) = new.record_json_and_content_hash();
        let given = new.registered_on_given.then_some(new.registered_on);
        let pair = serde_json::to_vec(&(&new.record, given)).unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(pair)));
        assert_eq!(record_json, serde_json::to_string(&new.record).unwrap());
        digests.push(digest);
    }
    // Pinned: a change of the record's JSON (a field renamed, reordered or added) changes
    // every digest and would answer retries of stored registrations ALREADY_EXISTS.
    assert_eq!(
        digests,
        [
            "25c9fd0ee3458a20864c4fea523b5c41edbb4adba857377098483e22d316d1f8",
            "58b1ad7e1cbeb09d8eb026e7da247129b3e5ab41b2ef508e36581ef9fa361b2b"
        ]
    );
}

async fn every_bad_field_is_named_and_nothing_is_written(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    type Mutation = fn(&mut pb::RegisterBirthRequest);
    let cases: Vec<(&str, Mutation)> = vec![
        ("request_id", |r| r.request_id = String::new()),
        ("request_id", |r| r.request_id = "bad key!".into()),
        ("kind", |r| r.kind = 0),
        ("child", |r| r.child = None),
        ("child.full_name", |r| {
            r.child.as_mut().unwrap().full_name = " ".into()
        }),
        ("child.full_name", |r| {
            r.child.as_mut().unwrap().full_name = "x".repeat(101)
        }),
        ("child.full_name", |r| {
            r.child.as_mut().unwrap().full_name = "An\u{7}".into()
        }),
        ("child.sex", |r| r.child.as_mut().unwrap().sex = 0),
        ("child.date_of_birth", |r| {
            r.child.as_mut().unwrap().date_of_birth = None
        }),
        ("child.date_of_birth", |r| {
            r.child.as_mut().unwrap().date_of_birth = date(2025, 2, 30)
        }),
        ("child.date_of_birth", |r| {
            r.child.as_mut().unwrap().date_of_birth = date(2025, 9, 2)
        }),
        ("child.date_of_birth", |r| {
            r.child.as_mut().unwrap().date_of_birth = date(1899, 12, 31)
        }),
        ("child.place_of_birth", |r| {
            r.child.as_mut().unwrap().place_of_birth = None
        }),
        ("child.place_of_birth.description", |r| {
            r.child
                .as_mut()
                .unwrap()
                .place_of_birth
                .as_mut()
                .unwrap()
                .description = String::new()
        }),
        ("child.place_of_birth.province_code", |r| {
            r.child
                .as_mut()
                .unwrap()
                .place_of_birth
                .as_mut()
                .unwrap()
                .province_code = "1".into()
        }),
        ("child.home_town", |r| {
            r.child.as_mut().unwrap().home_town = String::new()
        }),
        ("child.ethnicity", |r| {
            r.child.as_mut().unwrap().ethnicity = "e".repeat(51)
        }),
        ("child.nationality", |r| {
            r.child.as_mut().unwrap().nationality = "vn".into()
        }),
        ("father.full_name", |r| {
            r.father.as_mut().unwrap().full_name = String::new()
        }),
        ("father.year_of_birth", |r| {
            r.father.as_mut().unwrap().year_of_birth = 3000
        }),
        ("mother.nationality", |r| {
            r.mother.as_mut().unwrap().nationality = "Vietnam".into()
        }),
        ("mother.personal_id", |r| {
            r.mother.as_mut().unwrap().personal_id = "12345".into()
        }),
        ("mother.residence", |r| {
            r.mother.as_mut().unwrap().residence = "r".repeat(201)
        }),
        ("requester", |r| r.requester = None),
        ("requester.relationship", |r| {
            r.requester.as_mut().unwrap().relationship = 0
        }),
        ("registered_on", |r| r.registered_on = date(2999, 1, 1)),
        ("registered_on", |r| r.registered_on = date(2025, 13, 1)),
    ];
    for (field, mutate) in cases {
        let mut req = birth("bad");
        mutate(&mut req);
        // Act
        let status = register(&app, "reg_c001", req).await.unwrap_err();
        // Assert
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let fields: Vec<String> = field_violations_of(&status)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            vec![field.to_owned()],
            "violations for a bad {field}"
        );
    }
    let mut two = birth("bad");
    two.child.as_mut().unwrap().full_name = String::new();
    two.mother.as_mut().unwrap().full_name = String::new();
    let fields: Vec<String> =
        field_violations_of(&register(&app, "reg_c001", two).await.unwrap_err())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
    assert_eq!(fields, vec!["child.full_name", "mother.full_name"]);
    assert_eq!(app.count_registrations().await, 0);
    assert_eq!(app.fake.received(), 0);
    app.stop().await;
}

/// The public endpoint reads no message for a caller it does not know: a message over the
/// size limit is refused for its token, not for its size, and a known official's is
/// refused for its size.
async fn callers_are_authenticated_before_their_message_is_read(backend: Backend) {
    // Arrange: a 64 KiB limit and a request over it.
    let app = TestApp::start_with(backend, |cfg| cfg.server.max_message_bytes = 64 * 1024).await;
    let mut client = app.client().await;
    let mut oversized = birth("oversized");
    oversized.child.as_mut().unwrap().full_name = "N".repeat(100 * 1024);

    // Act
    let no_token = client
        .register_birth(tonic::Request::new(oversized.clone()))
        .await
        .unwrap_err();
    let bad_token = client
        .register_birth(auth(oversized.clone(), "not-a-token"))
        .await
        .unwrap_err();
    let official = client
        .register_birth(auth(oversized, &app.token("reg_c001")))
        .await
        .unwrap_err();

    // Assert
    let refusal = |s: &tonic::Status| (s.code(), reason_of(s).unwrap_or_default());
    assert_eq!(
        refusal(&no_token),
        (Code::Unauthenticated, "TOKEN_MISSING".into())
    );
    assert_eq!(
        refusal(&bad_token),
        (Code::Unauthenticated, "TOKEN_INVALID".into())
    );
    assert_eq!(official.code(), Code::ResourceExhausted, "{official:?}");
    assert_eq!(app.count_registrations().await, 0);
    app.stop().await;
}

async fn every_policy_case_is_refused_with_its_reason(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let mut client = app.client().await;
    let ours = register(&app, "reg_c001", birth("p-1")).await.unwrap();
    let get = |who: &str| {
        auth(
            pb::GetBirthRegistrationRequest {
                name: ours.name.clone(),
            },
            &app.token(who),
        )
    };
    let denied = |s: tonic::Status| (s.code(), reason_of(&s).unwrap_or_default());

    // Act + Assert: authentication.
    let no_token = client
        .register_birth(tonic::Request::new(birth("p-2")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(no_token),
        (Code::Unauthenticated, "TOKEN_MISSING".into())
    );
    let bad_token = client
        .register_birth(auth(birth("p-2"), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(
        denied(bad_token),
        (Code::Unauthenticated, "TOKEN_INVALID".into())
    );
    let revoked = client
        .register_birth(auth(birth("p-2"), &app.token("revoked_c001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(revoked),
        (Code::PermissionDenied, "ACCOUNT_REVOKED".into())
    );
    // Roles: a supervisor reads, never registers.
    let supervisor = client
        .register_birth(auth(birth("p-2"), &app.token("sup_d001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(supervisor),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    // Other unit and other province.
    let other_unit = client
        .get_birth_registration(get("reg_c002"))
        .await
        .unwrap_err();
    assert_eq!(
        denied(other_unit),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    let other_province = client
        .get_birth_registration(get("aud_p079"))
        .await
        .unwrap_err();
    assert_eq!(
        denied(other_province),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    let list_other = client
        .list_birth_registrations(auth(
            pb::ListBirthRegistrationsRequest {
                province_code: "001".into(),
                ..Default::default()
            },
            &app.token("aud_p079"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        denied(list_other),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    // Jurisdiction through the unit tree: district, province and ministry read it.
    for who in ["reg_c001", "sup_d001", "aud_p001", "aud_moj"] {
        let r = client
            .get_birth_registration(get(who))
            .await
            .expect(who)
            .into_inner()
            .registration
            .unwrap();
        assert_eq!(r.id, ours.id);
    }
    // A registrar corrects only in the own unit.
    let correct = pb::CorrectBirthRegistrationRequest {
        request_id: "c-1".into(),
        name: ours.name.clone(),
        child: birth("x").child,
        reason: "typo".into(),
        ..Default::default()
    };
    let other_corrects = client
        .correct_birth_registration(auth(correct, &app.token("reg_c002")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(other_corrects),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    // A read-only account is refused before any lookup, so it cannot tell an unknown
    // registration or unit from a known one.
    let probe = pb::CorrectBirthRegistrationRequest {
        request_id: "c-2".into(),
        name: format!("birthRegistrations/{}", uuid::Uuid::nil()),
        child: birth("x").child,
        unit_code: "NO-SUCH-UNIT".into(),
        reason: "typo".into(),
        ..Default::default()
    };
    let supervisor_corrects = client
        .correct_birth_registration(auth(probe, &app.token("sup_d001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(supervisor_corrects),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    // A birth with no foreign element is the commune's alone, never the district's.
    let at_district = client
        .register_birth(auth(birth("p-3"), &app.token("reg_d001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(at_district),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    // Foreign element: district before 2025-07-01, commune from then on.
    let mut foreign_before = birth("f-1");
    foreign_before.has_foreign_element = true;
    foreign_before.registered_on = date(2025, 6, 30);
    foreign_before.child.as_mut().unwrap().date_of_birth = date(2025, 6, 1);
    let at_commune = client
        .register_birth(auth(foreign_before.clone(), &app.token("reg_c001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(at_commune),
        (Code::PermissionDenied, "FOREIGN_ELEMENT_LEVEL".into())
    );
    let at_district = client
        .register_birth(auth(foreign_before, &app.token("reg_d001")))
        .await
        .unwrap();
    assert_eq!(
        at_district.into_inner().registration.unwrap().unit_code,
        "D001"
    );
    let mut foreign_after = birth("f-2");
    foreign_after.has_foreign_element = true;
    let district_after = client
        .register_birth(auth(foreign_after.clone(), &app.token("reg_d001")))
        .await
        .unwrap_err();
    assert_eq!(
        denied(district_after),
        (Code::PermissionDenied, "FOREIGN_ELEMENT_LEVEL".into())
    );
    let commune_after = client
        .register_birth(auth(foreign_after, &app.token("reg_c001")))
        .await
        .unwrap();
    assert_eq!(
        commune_after.into_inner().registration.unwrap().unit_code,
        "C001"
    );
    assert_eq!(app.count_registrations().await, 3);
    app.stop().await;
}

/// Rows that only the relay's poll finds (here a registration refused while the registry
/// was down, due for its retry) go out while new registrations keep streaming in through
/// the in-memory handoff, not only once the stream stops.
async fn a_retry_goes_out_while_registrations_keep_arriving(backend: Backend) {
    // Arrange: one batch of 2 in flight at a time, each answered after 50 ms, so that
    // more registrations than a batch takes are always waiting in the handoff.
    let app = TestApp::start_with(backend, |cfg| {
        cfg.registration.wait_for_number_ms = 0;
        cfg.relay.max_in_flight_batches = 1;
        cfg.relay.batch_size = 2;
        // Due half a second after its refusal: by then the stream fills the handoff.
        cfg.relay.backoff_initial_ms = 500;
        cfg.relay.backoff_max_ms = 500;
        cfg.relay.idle_poll_ms = 100;
    })
    .await;
    app.fake.set_down(true);
    let waiting = register(&app, "reg_c001", birth("poll-retry"))
        .await
        .unwrap();
    while app.fake.refused_while_down() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.fake.set_answer_delay(Duration::from_millis(50));
    app.fake.set_down(false);
    let streaming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut streams = Vec::new();
    for task in 0..4 {
        let (mut client, token) = (app.client().await, app.token("reg_c001"));
        let streaming = streaming.clone();
        streams.push(tokio::spawn(async move {
            let mut sent = 0;
            while streaming.load(std::sync::atomic::Ordering::SeqCst) {
                let request = birth(&format!("stream-{task}-{sent}"));
                client.register_birth(auth(request, &token)).await.unwrap();
                sent += 1;
            }
            sent
        }));
    }

    // Act: wait for the retried registration's number while the stream flows.
    let mut reader = app.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let numbered = loop {
        let r = reader
            .get_birth_registration(auth(
                pb::GetBirthRegistrationRequest {
                    name: waiting.name.clone(),
                },
                &app.token("reg_c001"),
            ))
            .await
            .unwrap()
            .into_inner()
            .registration
            .unwrap();
        if r.personal_id_status == ISSUED || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let still_streaming = streams.iter().all(|s| !s.is_finished());
    streaming.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut streamed = 0;
    for s in streams {
        streamed += s.await.unwrap();
    }

    // Assert
    assert_eq!(
        numbered.personal_id_status, ISSUED,
        "numbered while {streamed} registrations streamed in"
    );
    assert!(still_streaming && streamed > 0);
    app.stop().await;
}

async fn numbers_arrive_after_the_population_registry_comes_back(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 100).await;
    app.fake.set_down(true);
    // Act
    let mut names = Vec::new();
    let mut handles = Vec::new();
    for i in 0..20 {
        let client = app.client().await;
        let token = app.token("reg_c001");
        handles.push(tokio::spawn(async move {
            let mut client = client;
            // The registry stays down until every call has answered: a call waiting for
            // its number beyond the configured 100 ms would run into this deadline.
            let mut request = auth(birth(&format!("down-{i}")), &token);
            request.set_timeout(Duration::from_secs(5));
            client
                .register_birth(request)
                .await
                .unwrap()
                .into_inner()
                .registration
                .unwrap()
        }));
    }
    for h in handles {
        let r = h.await.unwrap();
        // Assert: registered, answered PENDING while the registry is down.
        assert_eq!(r.personal_id_status, PENDING);
        names.push(r.name);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.fake.set_down(false);
    let mut numbers = std::collections::HashSet::new();
    for name in &names {
        let r = app.settled("reg_c001", name).await;
        assert_eq!(r.personal_id_status, ISSUED);
        assert!(numbers.insert(r.personal_id));
    }
    assert_eq!(numbers.len(), 20);
    assert_eq!(app.fake.conflicts(), 0);
    assert!(
        app.fake
            .distinct_contents_per_key()
            .values()
            .all(|n| *n == 1),
        "one content per key, always"
    );
    assert!(
        app.fake.state.lock().unwrap().batch_calls >= 1,
        "queued rows went out in batches"
    );
    let mut numbers_in_register: Vec<i64> = Vec::new();
    for name in &names {
        numbers_in_register.push(app.settled("reg_c001", name).await.registration_number);
    }
    numbers_in_register.sort();
    assert_eq!(
        numbers_in_register,
        (1..=20).collect::<Vec<_>>(),
        "register numbers are gapless"
    );
    app.stop().await;
}

/// Registers a birth of a child named `name` (which the fake refuses as the caller set it
/// up) and returns the registration once settled REJECTED.
async fn rejected(app: &TestApp, request_id: &str, name: &str) -> pb::BirthRegistration {
    let mut req = birth(request_id);
    req.child.as_mut().unwrap().full_name = name.into();
    let r = register(app, "reg_c001", req).await.unwrap();
    let r = app.settled("reg_c001", &r.name).await;
    assert_eq!(r.personal_id_status, pb::PersonalIdStatus::Rejected as i32);
    r
}

/// A correction of `r` under `request_id` to `child`: the record as it stands otherwise.
fn correction_of(
    r: &pb::BirthRegistration,
    request_id: &str,
    child: pb::Child,
) -> pb::CorrectBirthRegistrationRequest {
    pb::CorrectBirthRegistrationRequest {
        request_id: request_id.into(),
        name: r.name.clone(),
        child: Some(child),
        father: r.father.clone(),
        mother: r.mother.clone(),
        unit_code: String::new(),
        reason: "correction".into(),
    }
}

/// `r` corrected by its registrar with `child` under `request_id`, once the outcome of
/// the correction (a number, a refusal, or nothing to ask) has settled.
async fn corrected(
    app: &TestApp,
    r: &pb::BirthRegistration,
    request_id: &str,
    child: pb::Child,
) -> pb::BirthRegistration {
    app.client()
        .await
        .correct_birth_registration(auth(
            correction_of(r, request_id, child),
            &app.token("reg_c001"),
        ))
        .await
        .unwrap();
    app.settled("reg_c001", &r.name).await
}

/// `request` sent by the commune's registrar (`reg_c001`).
async fn correct(
    app: &TestApp,
    request: pb::CorrectBirthRegistrationRequest,
) -> Result<pb::CorrectBirthRegistrationResponse, tonic::Status> {
    app.client()
        .await
        .correct_birth_registration(auth(request, &app.token("reg_c001")))
        .await
        .map(tonic::Response::into_inner)
}

/// The record of `r` sent again as it stands.
async fn send_again_unchanged(
    app: &TestApp,
    r: &pb::BirthRegistration,
) -> Result<pb::CorrectBirthRegistrationResponse, tonic::Status> {
    correct(
        app,
        correction_of(r, "send-again", r.child.clone().unwrap()),
    )
    .await
}

async fn a_rejected_registration_is_sent_again_unchanged_once_the_refusal_is_lifted(
    backend: Backend,
) {
    // Arrange: a refusal that comes from the other side, not from the record.
    let app = TestApp::start(backend).await;
    app.fake.reject_name("Refused Child", Code::InvalidArgument);
    let r = rejected(&app, "rej-again", "Refused Child").await;
    app.fake.accept_every_name();

    // Act: the official sends the record again as it stands.
    let answer = send_again_unchanged(&app, &r).await;
    let after = app.settled("reg_c001", &r.name).await;

    // Assert: a number; the record itself unchanged.
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(after.personal_id_status, ISSUED);
    assert_eq!(after.child, r.child);
    assert_eq!(app.fake.received(), 2);
    app.stop().await;
}

async fn a_registration_sent_again_gets_the_number_minted_before_its_refusal(backend: Backend) {
    // Arrange: the population registry minted for the registration, its answer was lost,
    // and the retry was refused as invalid (a replica whose clock is behind, say).
    let app = TestApp::start(backend).await;
    app.fake
        .mint_then_refuse_name("Minted Then Refused", Code::InvalidArgument);
    let r = rejected(&app, "minted-refused", "Minted Then Refused").await;
    app.fake.accept_every_name();
    let minted: Vec<String> = {
        let state = app.fake.state.lock().unwrap();
        state
            .by_key
            .values()
            .map(|i| i.personal_id.clone())
            .collect()
    };

    // Act: the official sends the record again as it stands.
    send_again_unchanged(&app, &r).await.unwrap();
    let after = app.settled("reg_c001", &r.name).await;

    // Assert: the number minted the first time, and no second one.
    let minted_after = app.fake.state.lock().unwrap().by_key.len();
    assert_eq!(minted.len(), 1);
    assert_eq!(after.personal_id_status, ISSUED);
    assert_eq!(after.personal_id, minted[0]);
    assert_eq!(minted_after, 1, "a second number was minted");
    app.stop().await;
}

/// Why the population registry refuses a re-issue in the tests below.
enum ReissueRefusal {
    /// The corrected record itself (INVALID_ARGUMENT); the number stays active.
    OfItsContent,
    /// No citizen holds the number any more (CITIZEN_NOT_FOUND).
    CitizenLost,
}

/// A boy's registration numbered, then corrected to a girl and the re-issue refused:
/// returns it as numbered (the boy's record and number) and as refused (REJECTED, still
/// holding the number). The registry refuses nothing by name afterwards.
async fn with_a_refused_reissue(
    app: &TestApp,
    request_id: &str,
    refusal: ReissueRefusal,
) -> (pb::BirthRegistration, pb::BirthRegistration) {
    let mut req = birth(request_id);
    req.child.as_mut().unwrap().full_name = format!("Reissue {request_id}");
    let r = register(app, "reg_c001", req.clone()).await.unwrap();
    let r = app.settled("reg_c001", &r.name).await;
    assert_eq!(r.personal_id_status, ISSUED);
    match refusal {
        ReissueRefusal::OfItsContent => app
            .fake
            .reject_name(&req.child.unwrap().full_name, Code::InvalidArgument),
        ReissueRefusal::CitizenLost => app.fake.lose_citizen(&r.personal_id),
    }
    let refused = corrected(app, &r, &format!("{request_id}-to-girl"), girl(&r)).await;
    assert_eq!(
        refused.personal_id_status,
        pb::PersonalIdStatus::Rejected as i32
    );
    app.fake.accept_every_name();
    (r, refused)
}

/// The registration's child as a girl.
fn girl(r: &pb::BirthRegistration) -> pb::Child {
    pb::Child {
        sex: pb::Sex::Female as i32,
        ..r.child.clone().unwrap()
    }
}

async fn a_refused_reissue_is_not_sent_again_unchanged(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let (r, _) =
        with_a_refused_reissue(&app, "reissue-refused", ReissueRefusal::OfItsContent).await;
    let sent_before = app.fake.received();

    // Act: the same correction again.
    let again = app
        .client()
        .await
        .correct_birth_registration(auth(
            correction_of(&r, "again", girl(&r)),
            &app.token("reg_c001"),
        ))
        .await
        .unwrap_err();

    // Assert: left for an operator; nothing sent.
    assert_eq!(
        (again.code(), reason_of(&again).unwrap_or_default()),
        (Code::FailedPrecondition, "NOTHING_TO_CORRECT".into())
    );
    assert_eq!(app.fake.received(), sent_before);
    app.stop().await;
}

async fn a_refused_reissue_corrected_back_keeps_its_number(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let (r, _) = with_a_refused_reissue(&app, "reissue-undone", ReissueRefusal::OfItsContent).await;
    let sent_before = app.fake.received();

    // Act: the official takes the correction back.
    let back = app
        .client()
        .await
        .correct_birth_registration(auth(
            correction_of(&r, "back-to-boy", r.child.clone().unwrap()),
            &app.token("reg_c001"),
        ))
        .await
        .unwrap()
        .into_inner()
        .registration
        .unwrap();

    // Assert: the number it kept fits the record again; nothing asked of the registry.
    assert_eq!(back.personal_id_status, ISSUED);
    assert_eq!(back.personal_id, r.personal_id);
    assert_eq!(app.fake.received(), sent_before);
    app.stop().await;
}

/// A re-issue refused because the registry holds no citizen with the number leaves
/// nothing to keep: taking the correction back sends the re-issue again, and it stays
/// REJECTED for an operator instead of showing a number nobody holds as ISSUED.
async fn a_reissue_refused_for_a_lost_citizen_is_not_issued_by_taking_the_correction_back(
    backend: Backend,
) {
    // Arrange
    let app = TestApp::start(backend).await;
    let (r, refused) =
        with_a_refused_reissue(&app, "reissue-lost", ReissueRefusal::CitizenLost).await;
    assert!(
        refused.rejection_reason.contains("CITIZEN_NOT_FOUND"),
        "{}",
        refused.rejection_reason
    );
    let sent_before = app.fake.received();

    // Act
    let after = corrected(&app, &r, "lost-back-to-boy", r.child.clone().unwrap()).await;

    // Assert
    assert_eq!(
        after.personal_id_status,
        pb::PersonalIdStatus::Rejected as i32
    );
    assert_eq!(
        app.fake.received(),
        sent_before + 1,
        "the re-issue went out again"
    );
    app.stop().await;
}

async fn a_key_once_sent_is_not_reused_for_other_content(backend: Backend) {
    // Arrange: sent under the registration id (minted there, the answer a refusal), then
    // corrected to ineligible.
    let app = TestApp::start(backend).await;
    app.fake
        .mint_then_refuse_name("First Content", Code::InvalidArgument);
    let r = rejected(&app, "key-once", "First Content").await;
    app.fake.accept_every_name();
    let mut foreign = r.child.clone().unwrap();
    foreign.nationality = "FR".into();
    let mut client = app.client().await;
    client
        .correct_birth_registration(auth(
            correction_of(&r, "to-foreign", foreign),
            &app.token("reg_c001"),
        ))
        .await
        .unwrap();

    // Act: corrected back to eligible, with another name.
    let mut renamed = r.child.clone().unwrap();
    renamed.full_name = "Second Content".into();
    let after = corrected(&app, &r, "renamed", renamed).await;

    // Assert: a key of its own, so no refusal as a reused key.
    assert_eq!(
        after.personal_id_status, ISSUED,
        "{}",
        after.rejection_reason
    );
    assert_eq!(app.fake.conflicts(), 0);
    app.stop().await;
}

async fn a_registration_whose_key_was_refused_as_reused_is_not_sent_again_unchanged(
    backend: Backend,
) {
    // Arrange: the population registry already holds this key with other content, which
    // an unchanged resend could only turn into a second active number.
    let app = TestApp::start(backend).await;
    app.fake.reject_name("Reused Key", Code::AlreadyExists);
    let r = rejected(&app, "reused", "Reused Key").await;
    app.fake.accept_every_name();

    // Act
    let refused = send_again_unchanged(&app, &r).await.unwrap_err();

    // Assert: left for an operator; nothing sent.
    assert_eq!(
        (refused.code(), reason_of(&refused).unwrap_or_default()),
        (Code::FailedPrecondition, "NOTHING_TO_CORRECT".into())
    );
    assert_eq!(app.fake.received(), 1);
    app.stop().await;
}

async fn a_permanent_refusal_marks_the_registration_rejected(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    app.fake.reject_name("Refused Child", Code::InvalidArgument);
    let mut req = birth("rej");
    req.child.as_mut().unwrap().full_name = "Refused Child".into();
    // Act
    let r = register(&app, "reg_c001", req).await.unwrap();
    let r = if r.personal_id_status == PENDING {
        app.settled("reg_c001", &r.name).await
    } else {
        r
    };
    // Assert
    assert_eq!(r.personal_id_status, pb::PersonalIdStatus::Rejected as i32);
    assert!(
        r.rejection_reason.contains("INVALID_ARGUMENT"),
        "{}",
        r.rejection_reason
    );
    assert!(r.personal_id.is_empty());
    assert_eq!(app.fake.received(), 1, "a permanent refusal is not retried");
    // An official corrects the record; it is asked for again under a new key.
    let mut child = r.child.clone().unwrap();
    child.full_name = "Accepted Child".into();
    let correction = pb::CorrectBirthRegistrationRequest {
        request_id: "fix-rejected".into(),
        name: r.name.clone(),
        child: Some(child),
        father: r.father.clone(),
        mother: r.mother.clone(),
        unit_code: String::new(),
        reason: "name misspelt".into(),
    };
    let corrected = app
        .client()
        .await
        .correct_birth_registration(auth(correction, &app.token("reg_c001")))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !corrected.personal_id_reissued,
        "a first issue, not a re-issue"
    );
    let after = app.settled("reg_c001", &r.name).await;
    assert_eq!(after.personal_id_status, ISSUED);
    assert!(after.rejection_reason.is_empty());
    assert_eq!(app.fake.conflicts(), 0);
    app.stop().await;
}

async fn a_correction_of_sex_reissues_the_number(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let mut client = app.client().await;
    let r = register(&app, "reg_c001", birth("corr")).await.unwrap();
    assert_eq!(r.personal_id_status, ISSUED);
    let mut child = r.child.clone().unwrap();
    child.sex = pb::Sex::Female as i32;
    let request = pb::CorrectBirthRegistrationRequest {
        request_id: "fix-sex".into(),
        name: r.name.clone(),
        child: Some(child),
        father: r.father.clone(),
        mother: r.mother.clone(),
        unit_code: String::new(),
        reason: "sex recorded wrongly".into(),
    };
    // Act
    let corrected = client
        .correct_birth_registration(auth(request.clone(), &app.token("reg_c001")))
        .await
        .unwrap()
        .into_inner();
    let after = app.settled("reg_c001", &r.name).await;
    // Assert
    assert!(corrected.personal_id_reissued);
    assert_eq!(after.personal_id_status, ISSUED);
    assert_ne!(after.personal_id, r.personal_id);
    assert_eq!(after.cancelled_personal_ids, vec![r.personal_id.clone()]);
    assert_eq!(&after.personal_id[3..4], "3", "a girl born in the 2000s");
    // The reason, free text about a person, stays beside the correction; the audit log
    // that goes to auditors carries only its hash.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM corrections WHERE request_id = 'fix-sex' AND reason = 'sex recorded wrongly'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM audit_log WHERE details LIKE '%recorded wrongly%'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'registration.correct' AND details LIKE '%reason_sha256%'")
            .await,
        1
    );
    // A retry of the same correction changes nothing more.
    let retry = client
        .correct_birth_registration(auth(request, &app.token("reg_c001")))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.personal_id_reissued);
    assert_eq!(
        app.settled("reg_c001", &r.name).await.personal_id,
        after.personal_id
    );
    // A name-only correction keeps the number.
    let mut child = after.child.clone().unwrap();
    child.full_name = "Nguyễn Thị An".into();
    let name_only = pb::CorrectBirthRegistrationRequest {
        request_id: "fix-name".into(),
        name: r.name.clone(),
        child: Some(child),
        father: after.father.clone(),
        mother: after.mother.clone(),
        unit_code: String::new(),
        reason: "spelling".into(),
    };
    let kept = client
        .correct_birth_registration(auth(name_only.clone(), &app.token("reg_c001")))
        .await
        .unwrap()
        .into_inner();
    assert!(!kept.personal_id_reissued);
    assert_eq!(kept.registration.unwrap().personal_id, after.personal_id);
    let mut nothing = name_only;
    nothing.request_id = "fix-nothing".into();
    let status = client
        .correct_birth_registration(auth(nothing, &app.token("reg_c001")))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason_of(&status).unwrap_or_default()),
        (Code::FailedPrecondition, "NOTHING_TO_CORRECT".into())
    );
    assert_eq!(app.fake.conflicts(), 0);
    app.stop().await;
}

async fn a_correction_of_the_birth_year_reissues_the_number(backend: Backend) {
    // Arrange: born 2025-08-20, so digits 5 and 6 of the number are "25".
    let app = TestApp::start(backend).await;
    let r = register(&app, "reg_c001", birth("year")).await.unwrap();
    assert_eq!(r.personal_id_status, ISSUED);
    assert_eq!(&r.personal_id[4..6], "25", "{}", r.personal_id);
    let mut child = r.child.clone().unwrap();
    child.date_of_birth = date(2024, 12, 31);
    // Act
    let corrected = correct(&app, correction_of(&r, "fix-year", child))
        .await
        .unwrap();
    let after = app.settled("reg_c001", &r.name).await;
    // Assert
    assert!(corrected.personal_id_reissued);
    assert_eq!(after.personal_id_status, ISSUED);
    assert_eq!(&after.personal_id[4..6], "24", "{}", after.personal_id);
    assert_eq!(after.cancelled_personal_ids, vec![r.personal_id.clone()]);
    app.stop().await;
}

async fn a_correction_that_would_postdate_the_registration_or_end_eligibility_changes_nothing(
    backend: Backend,
) {
    // Arrange: a numbered registration of 2025-09-01.
    let app = TestApp::start(backend).await;
    let r = register(&app, "reg_c001", birth("refused-fix"))
        .await
        .unwrap();
    assert_eq!(r.personal_id_status, ISSUED);
    let sent = app.fake.received();
    let mut born_later = r.child.clone().unwrap();
    born_later.date_of_birth = date(2025, 9, 2);
    let mut foreign = r.child.clone().unwrap();
    foreign.nationality = "FR".into();

    // Act
    let after_registration = correct(&app, correction_of(&r, "fix-date", born_later))
        .await
        .unwrap_err();
    let ineligible = correct(&app, correction_of(&r, "fix-nationality", foreign))
        .await
        .unwrap_err();

    // Assert
    assert_eq!(after_registration.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations_of(&after_registration)
            .into_iter()
            .map(|(field, _)| field)
            .collect::<Vec<_>>(),
        vec!["child.date_of_birth".to_owned()]
    );
    assert_eq!(
        (
            ineligible.code(),
            reason_of(&ineligible).unwrap_or_default()
        ),
        (
            Code::FailedPrecondition,
            "REGISTRATION_NOT_CORRECTABLE".into()
        )
    );
    let unchanged = app.settled("reg_c001", &r.name).await;
    assert_eq!(unchanged.personal_id_status, ISSUED);
    assert_eq!(unchanged.personal_id, r.personal_id);
    assert_eq!(unchanged.child, r.child);
    assert!(unchanged.ineligibility_reasons.is_empty());
    assert_eq!(
        app.fake.received(),
        sent,
        "nothing sent to the population side"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM corrections").await,
        0,
        "no correction recorded"
    );
    app.stop().await;
}

async fn a_move_to_another_province_reissues_the_number(backend: Backend) {
    // Arrange: a numbered registration of Ha Noi (001).
    let app = TestApp::start(backend).await;
    let mut client = app.client().await;
    let r = register(&app, "reg_c001", birth("moved-province"))
        .await
        .unwrap();
    assert_eq!(r.personal_id_status, ISSUED);
    assert!(r.personal_id.starts_with("001"), "{}", r.personal_id);
    let move_to = |who: &str, request_id: &str| {
        auth(
            pb::CorrectBirthRegistrationRequest {
                request_id: request_id.into(),
                name: r.name.clone(),
                child: r.child.clone(),
                father: r.father.clone(),
                mother: r.mother.clone(),
                unit_code: "C760".into(),
                reason: "registered in the wrong province".into(),
            },
            &app.token(who),
        )
    };
    // Act: the commune cannot reach Ho Chi Minh City's unit; the ministry's registrar can.
    let from_commune = client
        .correct_birth_registration(move_to("reg_c001", "move-c"))
        .await
        .unwrap_err();
    let from_ministry = client
        .correct_birth_registration(move_to("reg_moj", "move-moj"))
        .await
        .unwrap()
        .into_inner();
    let after = app.settled("aud_moj", &r.name).await;
    // Assert
    assert_eq!(
        (
            from_commune.code(),
            reason_of(&from_commune).unwrap_or_default()
        ),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    assert!(from_ministry.personal_id_reissued);
    assert_eq!(after.unit_code, "C760");
    assert_eq!(after.personal_id_status, ISSUED);
    assert!(
        after.personal_id.starts_with("079"),
        "the new number carries the new province: {}",
        after.personal_id
    );
    assert_eq!(after.cancelled_personal_ids, vec![r.personal_id.clone()]);
    assert_eq!(
        (
            after.register_unit_code.as_str(),
            after.book_number.as_str(),
            after.registration_number
        ),
        ("C001", r.book_number.as_str(), r.registration_number),
        "the entry stays in the register that holds it"
    );
    let mut sent: Vec<(String, String)> = app
        .fake
        .state
        .lock()
        .unwrap()
        .by_key
        .iter()
        .filter(|(key, _)| key.starts_with(&r.id))
        .map(|(_, issued)| {
            let reference = issued.record.registration.clone().unwrap_or_default();
            (
                reference.unit_code,
                issued.record.registration_province_code.clone(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("C001".to_owned(), "001".to_owned()),
            ("C001".to_owned(), "079".to_owned())
        ],
        "both numbers reference the one entry; only the province they encode moved"
    );
    // The commune's registrar sending the original registration again learns no more
    // about it than reading it would.
    let retried = register(&app, "reg_c001", birth("moved-province"))
        .await
        .unwrap_err();
    assert_eq!(
        (retried.code(), reason_of(&retried).unwrap_or_default()),
        (Code::PermissionDenied, "OUTSIDE_JURISDICTION".into())
    );
    app.stop().await;
}

/// Under `post_merger_rule = merged` a birth registered from 2025-07-01 by a unit of Binh
/// Duong (074), which became part of Ho Chi Minh City, is numbered under 079; one registered
/// the day before keeps 074. A move to a unit of Ho Chi Minh City then changes nothing the
/// number encodes, so the number stands.
async fn merged_numbering_uses_the_merged_province_code_from_the_merger_date(backend: Backend) {
    use civil_registry::domain::model::{ProvinceCode, Role, UnitCode, UnitLevel};
    use civil_registry::domain::numbering::PostMergerRule;
    use civil_registry::registry::{new_token, token_hash};
    use civil_registry::store::UnitInput;

    // Arrange: a commune of Binh Duong and its registrar.
    let mut app = TestApp::start_with(backend, |cfg| {
        cfg.registration.post_merger_rule = PostMergerRule::Merged;
    })
    .await;
    let unit = |code: &str, level: &str, parent: &str| UnitInput {
        code: UnitCode::parse(code).unwrap(),
        name: code.to_owned(),
        level: UnitLevel::parse(level).unwrap(),
        province_code: ProvinceCode::parse("074").unwrap(),
        parent_code: Some(UnitCode::parse(parent).unwrap()),
        active: true,
    };
    let units = [
        unit("P074", "province", "MOJ"),
        unit("D740", "district", "P074"),
        unit("C740", "commune", "D740"),
    ];
    app.store.import_units(&units, "test").await.unwrap();
    let token = new_token();
    app.store
        .create_officials(
            &[(
                "reg_c740".to_owned(),
                UnitCode::parse("C740").unwrap(),
                Role::Registrar,
                token_hash(&token),
            )],
            "test",
        )
        .await
        .unwrap();
    app.tokens.insert("reg_c740", token);
    let mut before = birth("before-merger");
    before.child.as_mut().unwrap().date_of_birth = date(2025, 6, 20);
    before.registered_on = date(2025, 6, 30);

    // Act
    let after = register(&app, "reg_c740", birth("after-merger"))
        .await
        .unwrap();
    let before = register(&app, "reg_c740", before).await.unwrap();
    let moved = app
        .client()
        .await
        .correct_birth_registration(auth(
            pb::CorrectBirthRegistrationRequest {
                request_id: "to-hcmc".into(),
                name: after.name.clone(),
                child: after.child.clone(),
                father: after.father.clone(),
                mother: after.mother.clone(),
                unit_code: "C760".into(),
                reason: "registered in the wrong commune".into(),
            },
            &app.token("reg_moj"),
        ))
        .await
        .unwrap()
        .into_inner();

    // Assert
    assert_eq!(
        (after.personal_id_status, before.personal_id_status),
        (ISSUED, ISSUED)
    );
    assert!(
        after.personal_id.starts_with("079"),
        "{}",
        after.personal_id
    );
    assert!(
        before.personal_id.starts_with("074"),
        "{}",
        before.personal_id
    );
    let sent = |id: &str| {
        app.fake.state.lock().unwrap().by_key[id]
            .record
            .registration_province_code
            .clone()
    };
    assert_eq!(
        (sent(&after.id), sent(&before.id)),
        ("079".into(), "074".into())
    );
    assert!(!moved.personal_id_reissued);
    let moved = moved.registration.unwrap();
    assert_eq!(
        (moved.unit_code.as_str(), moved.personal_id.as_str()),
        ("C760", after.personal_id.as_str())
    );
    app.stop().await;
}

async fn reconciliation_finds_and_repairs_a_planted_difference(backend: Backend) {
    // Arrange: a numbered registration loses its number as if the write-back had been
    // lost; another, registered while the population registry is down, loses its queued
    // request, so nothing would ever number it.
    let app = TestApp::start(backend).await;
    let a = register(&app, "reg_c001", birth("rec-a")).await.unwrap();
    let b = register(&app, "reg_c001", birth("rec-b")).await.unwrap();
    assert!([&a, &b].iter().all(|r| r.personal_id_status == ISSUED));
    app.sql(&format!(
        "UPDATE registrations SET status = 'PENDING', personal_id = NULL WHERE id = '{}'",
        a.id
    ))
    .await;
    // Registered while the population registry is down, then its queued request lost.
    app.fake.set_down(true);
    let c = register(&app, "reg_c001", birth("rec-c")).await.unwrap();
    assert_eq!(c.personal_id_status, PENDING);
    app.sql(&format!(
        "DELETE FROM outbox WHERE registration_id = '{}'",
        c.id
    ))
    .await;
    app.fake.set_down(false);
    let client =
        civil_registry::relay::client::GrpcPopulationRegistry::new(&app.cfg.population_registry)
            .unwrap();
    let from = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let to = chrono::NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
    // Act
    let report = civil_registry::reconcile::reconcile(&app.store, &client, from, to, false)
        .await
        .unwrap();
    let repaired = civil_registry::reconcile::reconcile(&app.store, &client, from, to, true)
        .await
        .unwrap();
    let after = civil_registry::reconcile::reconcile(&app.store, &client, from, to, false)
        .await
        .unwrap();
    let requeued = app.settled("aud_moj", &c.name).await;
    // Assert
    use civil_registry::reconcile::DifferenceKind;
    let mut found: Vec<(String, DifferenceKind)> = report
        .iter()
        .map(|d| {
            (
                d.registration_id.map(|i| i.to_string()).unwrap_or_default(),
                d.kind.clone(),
            )
        })
        .collect();
    found.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![
        (a.id.clone(), DifferenceKind::NumberNotWrittenBack),
        (c.id.clone(), DifferenceKind::StuckWithoutRequest),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(found, want, "{report:?}");
    assert_eq!(repaired.len(), 2);
    assert!(repaired.iter().all(|d| d.repaired));
    assert!(after.is_empty(), "{after:?}");
    let fixed = app.settled("aud_moj", &a.name).await;
    assert_eq!(fixed.personal_id, a.personal_id);
    assert_eq!(
        requeued.personal_id_status, ISSUED,
        "the re-queued request went out"
    );
    assert_eq!(
        app.fake.received(),
        3,
        "a, b, and c once re-queued: the write-back asked for nothing new"
    );
    app.stop().await;
}

/// A repair acts on the registration as the comparison saw it: a row changed since (a
/// correction, a write-back) is left for the next run, and a number the repair replaces
/// is kept among the cancelled ones.
async fn a_repair_leaves_a_registration_changed_since_the_comparison_alone(backend: Backend) {
    // Arrange: two numbered registrations, both seen by the comparison.
    let app = TestApp::start(backend).await;
    let a = register(&app, "reg_c001", birth("stale-a")).await.unwrap();
    let b = register(&app, "reg_c001", birth("stale-b")).await.unwrap();
    let a = app.settled("reg_c001", &a.name).await;
    let b = app.settled("reg_c001", &b.name).await;
    let day = chrono::NaiveDate::from_ymd_opt(2025, 9, 1).unwrap();
    let seen = app.store.reconcile_rows(day, day).await.unwrap();
    let seen_as = |id: &str| {
        seen.iter()
            .find(|row| row.id.to_string() == id)
            .expect("seen")
            .clone()
    };
    let (seen_a, seen_b) = (seen_as(&a.id), seen_as(&b.id));
    // `a` changes after the comparison read it.
    app.sql(&format!(
        "UPDATE registrations SET updated_at_ms = updated_at_ms + 1 WHERE id = '{}'",
        a.id
    ))
    .await;

    // Act: both repaired to a number the listing showed.
    let stale = app
        .store
        .repair_write_back(&seen_a, "001225999991")
        .await
        .unwrap();
    let fresh = app
        .store
        .repair_write_back(&seen_b, "001225999992")
        .await
        .unwrap();

    // Assert
    assert!(!stale, "a row changed since it was seen is not repaired");
    assert!(fresh);
    let a_now = app.settled("aud_moj", &a.name).await;
    let b_now = app.settled("aud_moj", &b.name).await;
    assert_eq!(a_now.personal_id, a.personal_id);
    assert!(a_now.cancelled_personal_ids.is_empty());
    assert_eq!(b_now.personal_id, "001225999992");
    assert_eq!(b_now.cancelled_personal_ids, vec![b.personal_id.clone()]);
    app.stop().await;
}

async fn statistics_equal_what_was_registered(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    let mut re = birth("s-re");
    re.kind = pb::RegistrationKind::ReRegistration as i32;
    let mut foreign = birth("s-fr");
    foreign.child.as_mut().unwrap().nationality = "FR".into();
    register(&app, "reg_c001", birth("s-1")).await.unwrap();
    register(&app, "reg_c001", birth("s-2")).await.unwrap();
    register(&app, "reg_c001", re).await.unwrap();
    register(&app, "reg_c002", foreign).await.unwrap();
    register(&app, "reg_c760", birth("s-3")).await.unwrap();
    let mut undetermined = birth("s-sex");
    undetermined.child.as_mut().unwrap().sex = pb::Sex::Undetermined as i32;
    register(&app, "reg_c760", undetermined).await.unwrap();
    // Fourteen on the day before the registration of 2025-09-01.
    let mut fourteen = birth("s-14");
    fourteen.child.as_mut().unwrap().date_of_birth = date(2011, 8, 31);
    register(&app, "reg_c760", fourteen).await.unwrap();
    let mut client = app.client().await;
    let ask_between = |from, to, grouping: pb::StatisticsGrouping, who: &str| {
        auth(
            pb::GetRegistrationStatisticsRequest {
                registered_from: from,
                registered_to: to,
                grouping: grouping as i32,
                province_code: String::new(),
            },
            &app.token(who),
        )
    };
    let ask = |grouping, who| ask_between(date(2025, 1, 1), date(2025, 12, 31), grouping, who);
    // Act
    let by_province = client
        .get_registration_statistics(ask(pb::StatisticsGrouping::Province, "aud_moj"))
        .await
        .unwrap()
        .into_inner();
    let by_unit = client
        .get_registration_statistics(ask(pb::StatisticsGrouping::Unit, "aud_p001"))
        .await
        .unwrap()
        .into_inner();
    let by_district = client
        .get_registration_statistics(ask(pb::StatisticsGrouping::District, "aud_moj"))
        .await
        .unwrap()
        .into_inner();
    // Every registration is dated 2025-09-01: a range on either side of it counts none.
    let mut outside = Vec::new();
    for (from, to) in [
        (date(2025, 1, 1), date(2025, 8, 31)),
        (date(2025, 9, 2), date(2025, 12, 31)),
    ] {
        let stats = client
            .get_registration_statistics(ask_between(
                from,
                to,
                pb::StatisticsGrouping::Province,
                "aud_moj",
            ))
            .await
            .unwrap()
            .into_inner();
        outside.push(stats.total.map_or(0, |t| t.registrations));
    }
    // Assert
    assert_eq!(outside, vec![0, 0]);
    let total = by_province.total.unwrap();
    assert_eq!(
        (
            total.registrations,
            total.first_time,
            total.re_registrations
        ),
        (7, 6, 1)
    );
    assert_eq!(
        (total.eligible, total.issued, total.pending, total.rejected),
        (3, 3, 0, 0)
    );
    assert_eq!(
        (
            total.not_eligible,
            total.not_eligible_foreign_nationality,
            total.not_eligible_re_registration,
            total.not_eligible_sex_undetermined,
            total.not_eligible_age_14_or_over
        ),
        (4, 1, 1, 1, 1)
    );
    let provinces: Vec<(String, String, i64)> = by_province
        .rows
        .iter()
        .map(|r| (r.group_code.clone(), r.group_name.clone(), r.registrations))
        .collect();
    assert_eq!(
        provinces,
        vec![
            ("001".into(), "Ha Noi".into(), 4),
            ("079".into(), "Ho Chi Minh".into(), 3)
        ]
    );
    let units: Vec<(String, i64, i64)> = by_unit
        .rows
        .iter()
        .map(|r| (r.group_code.clone(), r.registrations, r.issued))
        .collect();
    assert_eq!(
        units,
        vec![("C001".into(), 3, 2), ("C002".into(), 1, 0)],
        "a province sees only its own units"
    );
    let districts: Vec<(String, i64)> = by_district
        .rows
        .iter()
        .map(|r| (r.group_code.clone(), r.registrations))
        .collect();
    assert_eq!(districts, vec![("D001".into(), 4), ("D760".into(), 3)]);
    app.stop().await;
}

async fn lists_are_paginated_filtered_and_limited_to_the_jurisdiction(backend: Backend) {
    // Arrange
    let app = TestApp::start(backend).await;
    for i in 0..5 {
        register(&app, "reg_c001", birth(&format!("l-{i}")))
            .await
            .unwrap();
    }
    register(&app, "reg_c002", birth("l-x")).await.unwrap();
    let mut foreign = birth("l-foreign");
    foreign.child.as_mut().unwrap().nationality = "FR".into();
    let not_eligible = register(&app, "reg_c002", foreign).await.unwrap();
    let mut client = app.client().await;
    // Act
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_birth_registrations(auth(
                pb::ListBirthRegistrationsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &app.token("reg_c001"),
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.registrations
                .into_iter()
                .map(|r| (r.unit_code, r.registration_number)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let district = listed_in(&app, "sup_d001", "C002").await;
    let by_status = |status: pb::PersonalIdStatus| {
        let mut client = client.clone();
        let token = app.token("aud_moj");
        async move {
            client
                .list_birth_registrations(auth(
                    pb::ListBirthRegistrationsRequest {
                        personal_id_status: status as i32,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .registrations
        }
    };
    let not_eligible_only = by_status(pb::PersonalIdStatus::NotEligible).await;
    let issued_only = by_status(pb::PersonalIdStatus::Issued).await;
    // Assert
    assert_eq!(
        seen,
        (1..=5)
            .rev()
            .map(|n| ("C001".to_owned(), n))
            .collect::<Vec<_>>(),
        "newest first, own unit only"
    );
    assert_eq!(district.len(), 2);
    assert_eq!(
        not_eligible_only
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [not_eligible.name.as_str()]
    );
    assert_eq!(issued_only.len(), 6, "the eligible ones, numbered");
    assert!(
        issued_only
            .iter()
            .all(|r| r.personal_id_status == pb::PersonalIdStatus::Issued as i32)
    );
    app.stop().await;
}

async fn a_registration_moved_by_a_correction_is_listed_under_its_new_unit(backend: Backend) {
    // Arrange: the district office registers a birth with a foreign element (its
    // competence before 2025-07-01), and its commune registers one of its own.
    let app = TestApp::start(backend).await;
    let mut foreign = birth("moved-1");
    foreign.has_foreign_element = true;
    foreign.registered_on = date(2025, 6, 30);
    foreign.child.as_mut().unwrap().date_of_birth = date(2025, 6, 1);
    let moved = register(&app, "reg_d001", foreign).await.unwrap();
    let stays = register(&app, "reg_c001", birth("stays-1")).await.unwrap();
    // Act: the place of registration was recorded wrongly; the district moves it to C001.
    let correction = pb::CorrectBirthRegistrationRequest {
        request_id: "move-1".into(),
        name: moved.name.clone(),
        child: moved.child.clone(),
        father: moved.father.clone(),
        mother: moved.mother.clone(),
        unit_code: "C001".into(),
        reason: "registered at the wrong office".into(),
    };
    let after = app
        .client()
        .await
        .correct_birth_registration(auth(correction, &app.token("reg_d001")))
        .await
        .unwrap()
        .into_inner()
        .registration
        .unwrap();
    let in_commune = listed_in(&app, "sup_d001", "C001").await;
    let in_district = listed_in(&app, "sup_d001", "D001").await;
    // Assert
    assert_eq!(
        in_commune.len(),
        2,
        "its own registration and the moved one"
    );
    assert!(in_commune.contains(&(moved.name.clone(), "C001".to_owned())));
    assert!(
        in_district.is_empty(),
        "the district no longer lists what it moved away: {in_district:?}"
    );
    let entry = |r: &pb::BirthRegistration| {
        (
            r.register_unit_code.clone(),
            r.book_number.clone(),
            r.registration_number,
        )
    };
    assert_eq!(
        entry(&after),
        entry(&moved),
        "the moved registration keeps its entry in the district's register"
    );
    assert_eq!(entry(&moved).0, "D001");
    assert_eq!(entry(&stays).0, "C001");
    app.stop().await;
}

async fn concurrent_registrations_get_gapless_unique_numbers_and_the_audit_chain_holds(
    backend: Backend,
) {
    // Arrange
    let app = TestApp::start(backend).await;
    // Act
    let mut handles = Vec::new();
    for i in 0..100 {
        let mut client = app.client().await;
        let token = app.token(if i % 2 == 0 { "reg_c001" } else { "reg_c002" });
        handles.push(tokio::spawn(async move {
            client
                .register_birth(auth(birth(&format!("cc-{i}")), &token))
                .await
                .unwrap()
                .into_inner()
                .registration
                .unwrap()
        }));
    }
    let mut per_unit: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for h in handles {
        let r = h.await.unwrap();
        per_unit
            .entry(r.unit_code)
            .or_default()
            .push(r.registration_number);
    }
    // Assert
    for numbers in per_unit.values_mut() {
        numbers.sort();
        assert_eq!(*numbers, (1..=50).collect::<Vec<_>>());
    }
    let report = app.store.verify_audit().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert!(
        report.entries >= 200,
        "a creation and an issue entry per registration"
    );
    app.sql("UPDATE audit_log SET actor = 'intruder' WHERE seq = 5")
        .await;
    assert_eq!(
        app.store.verify_audit().await.unwrap().first_broken,
        Some(5)
    );
    let (code, report) = audit_verify_command(&app.db_url).await;
    assert_eq!(
        code,
        Some(65),
        "the scheduled check's exit for tampering: {report}"
    );
    assert!(report.contains("BROKEN at entry 5"), "{report}");
    app.stop().await;
}

/// `civil-registry audit verify` run against `url`, as a scheduled Job runs it: its exit
/// code and what it printed.
async fn audit_verify_command(url: &str) -> (Option<i32>, String) {
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_civil-registry"))
            .args(["audit", "verify"])
            .env("CIVIL_REGISTRY_DATABASE__URL", url)
            .output()
            .expect("civil-registry audit verify runs")
    })
    .await
    .expect("joined");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn a_register_from_before_the_lighter_commits_migration_keeps_its_chain_and_unique_numbers(
    backend: Backend,
) {
    // Arrange: a register with issued numbers, put back in its shape before migration 4
    // (a full personal-id index; on SQLite, an audit log keyed apart from its rowid).
    let mut app = TestApp::start(backend).await;
    let mut client = app.client().await;
    let mut registered = Vec::new();
    for i in 0..3 {
        let r = client
            .register_birth(auth(birth(&format!("lc-{i}")), &app.token("reg_c001")))
            .await
            .unwrap()
            .into_inner()
            .registration
            .unwrap();
        registered.push(r.name);
    }
    let mut numbers = Vec::new();
    for name in &registered {
        numbers.push(app.settled("reg_c001", name).await.personal_id);
    }
    app.halt().await;
    app.sql("DROP INDEX registrations_personal_id").await;
    app.sql("CREATE UNIQUE INDEX registrations_personal_id ON registrations (personal_id)")
        .await;
    if backend == Backend::Sqlite {
        app.sql(
            "CREATE TABLE audit_log_v1 (seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, \
             actor TEXT NOT NULL, action TEXT NOT NULL, entity TEXT NOT NULL, \
             details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        )
        .await;
        app.sql("INSERT INTO audit_log_v1 SELECT * FROM audit_log")
            .await;
        app.sql("DROP TABLE audit_log").await;
        app.sql("ALTER TABLE audit_log_v1 RENAME TO audit_log")
            .await;
    }
    app.sql("DELETE FROM schema_migrations WHERE version = 4")
        .await;
    // Act
    app.launch().await;
    // Assert
    let report = app.store.verify_audit().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.entries >= 6, "entries kept: {}", report.entries);
    for (name, number) in registered.iter().zip(&numbers) {
        assert_eq!(&app.settled("reg_c001", name).await.personal_id, number);
    }
    let id = registered[1].trim_start_matches("birthRegistrations/");
    let duplicate = app
        .try_sql(&format!(
            "UPDATE registrations SET personal_id = '{}' WHERE id = '{id}'",
            numbers[0]
        ))
        .await;
    assert!(
        duplicate
            .as_ref()
            .err()
            .and_then(|e| e.as_database_error())
            .is_some_and(|e| e.is_unique_violation()),
        "a second registration took a number already held: {duplicate:?}"
    );
    if backend == Backend::Sqlite {
        let separate_keys = app
            .scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM sqlite_master \
                 WHERE name LIKE 'sqlite_autoindex_audit_log%'",
            )
            .await;
        assert_eq!(
            separate_keys, 0,
            "the audit sequence is the table's own key"
        );
    }
    app.stop().await;
}

async fn pending_numbers_survive_a_restart_of_the_civil_registry(backend: Backend) {
    // Arrange
    let mut app =
        TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 50).await;
    app.fake.set_down(true);
    let r = register(&app, "reg_c001", birth("restart")).await.unwrap();
    assert_eq!(r.personal_id_status, PENDING);
    // Act
    app.halt().await;
    app.fake.set_down(false);
    app.launch().await;
    // Assert
    let after = app.settled("reg_c001", &r.name).await;
    assert_eq!(after.personal_id_status, ISSUED);
    assert_eq!(app.fake.conflicts(), 0);
    app.stop().await;
}

async fn two_replicas_relay_together_and_send_every_row_once(backend: Backend) {
    // Arrange: two replicas on one database; the population registry is down while the
    // rows queue up, so that both relays find the same backlog when it comes back.
    let app = TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 0).await;
    let replica = app.replica().await;
    app.fake.set_down(true);
    let mut names = Vec::new();
    for i in 0..40 {
        let mut client = if i % 2 == 0 {
            app.client().await
        } else {
            replica.client().await
        };
        let r = client
            .register_birth(auth(birth(&format!("rep-{i}")), &app.token("reg_c001")))
            .await
            .unwrap();
        names.push(r.into_inner().registration.unwrap().name);
    }
    // Act
    app.fake.set_down(false);
    // Assert
    for name in &names {
        assert_eq!(
            app.settled("reg_c001", name).await.personal_id_status,
            ISSUED
        );
    }
    let per_key = app.fake.distinct_contents_per_key();
    assert_eq!(per_key.len(), 40);
    let successful_sends = app.fake.received();
    assert!(per_key.values().all(|n| *n == 1));
    assert_eq!(successful_sends, 40, "no row was in flight twice");
    replica.stop().await;
    app.stop().await;
}

async fn a_token_revoked_while_in_use_is_trusted_while_its_entry_is_cached(backend: Backend) {
    // Arrange: a cache far longer than the test, and an official whose token has just been
    // used. When the entry expires is the cache's own unit test (registry.rs), on a clock
    // it is given rather than a sleep.
    let app = TestApp::start_with(backend, |cfg| cfg.auth.token_cache_ms = 600_000).await;
    register(&app, "reg_c001", birth("c-1")).await.unwrap();

    // Act: revoke that account and one whose token was never used, as `admin officials
    // revoke` does.
    assert!(app.store.revoke_official("reg_c001", "test").await.unwrap());
    assert!(app.store.revoke_official("reg_c002", "test").await.unwrap());
    let within_cache = register(&app, "reg_c001", birth("c-2")).await;
    let never_cached = register(&app, "reg_c002", birth("c-3")).await.unwrap_err();

    // Assert: only the cached token is still trusted; the other is refused at once.
    assert!(within_cache.is_ok(), "{within_cache:?}");
    assert_eq!(
        (
            never_cached.code(),
            reason_of(&never_cached).unwrap_or_default()
        ),
        (Code::PermissionDenied, "ACCOUNT_REVOKED".into())
    );
    app.stop().await;
}

async fn registrations_are_counted_by_status(backend: Backend) {
    // Arrange: two numbers issued, one birth not eligible, one waiting for its number.
    let app = TestApp::start_with(backend, |cfg| cfg.registration.wait_for_number_ms = 100).await;
    let mut names = Vec::new();
    for i in 0..2 {
        names.push(
            register(&app, "reg_c001", birth(&format!("n-{i}")))
                .await
                .unwrap()
                .name,
        );
    }
    for name in &names {
        assert_eq!(
            app.settled("reg_c001", name).await.personal_id_status,
            ISSUED
        );
    }
    let mut foreign = birth("foreign");
    foreign.child.as_mut().unwrap().nationality = "FR".into();
    register(&app, "reg_c001", foreign).await.unwrap();
    app.fake.set_down(true);
    let waiting = register(&app, "reg_c001", birth("waiting")).await.unwrap();
    assert_eq!(waiting.personal_id_status, PENDING);

    // Act
    let mut counts = app.store.status_counts().await.unwrap();

    // Assert
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("ISSUED".to_owned(), 2),
            ("NOT_ELIGIBLE".to_owned(), 1),
            ("PENDING".to_owned(), 1)
        ]
    );
    app.fake.set_down(false);
    app.stop().await;
}

async fn without_the_token_cache_a_revoked_token_is_refused_at_once(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.auth.token_cache_ms = 0).await;
    register(&app, "reg_c001", birth("c-1")).await.unwrap();

    // Act
    assert!(app.store.revoke_official("reg_c001", "test").await.unwrap());
    let refused = register(&app, "reg_c001", birth("c-2")).await.unwrap_err();

    // Assert
    assert_eq!(
        (refused.code(), reason_of(&refused).unwrap_or_default()),
        (Code::PermissionDenied, "ACCOUNT_REVOKED".into())
    );
    app.stop().await;
}

/// The cache trusts a token for `token_cache_ms`, no longer: a revocation takes hold once
/// the entry is that old.
async fn a_revoked_token_is_refused_once_its_cache_entry_expires(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.auth.token_cache_ms = 200).await;
    register(&app, "reg_c001", birth("ttl-1")).await.unwrap();
    assert!(app.store.revoke_official("reg_c001", "test").await.unwrap());

    // Act
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = register(&app, "reg_c001", birth("ttl-2"))
        .await
        .unwrap_err();

    // Assert
    assert_eq!(
        (refused.code(), reason_of(&refused).unwrap_or_default()),
        (Code::PermissionDenied, "ACCOUNT_REVOKED".into())
    );
    app.stop().await;
}

/// A rotated token replaces the old one on the same account: the old is refused, the new
/// registers under the same official id, and a revoked account cannot be given one.
async fn a_rotated_token_replaces_the_old_one_on_the_same_account(backend: Backend) {
    use civil_registry::registry::{new_token, token_hash};

    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.auth.token_cache_ms = 0).await;
    let old_token = app.token("reg_c001");
    let new = new_token();

    // Act
    let rotated = app
        .store
        .rotate_official_token("reg_c001", &token_hash(&new), "test")
        .await
        .unwrap();
    let revoked_rotated = app
        .store
        .rotate_official_token("revoked_c001", &token_hash(&new_token()), "test")
        .await
        .unwrap();
    let old = app
        .client()
        .await
        .register_birth(auth(birth("rotated-1"), &old_token))
        .await
        .unwrap_err();
    let registered = app
        .client()
        .await
        .register_birth(auth(birth("rotated-2"), &new))
        .await
        .unwrap()
        .into_inner()
        .registration
        .unwrap();

    // Assert
    assert!(rotated);
    assert!(
        !revoked_rotated,
        "a revoked account stays without a valid token"
    );
    assert_eq!(
        (old.code(), reason_of(&old).unwrap_or_default()),
        (Code::Unauthenticated, "TOKEN_INVALID".into())
    );
    assert_eq!(registered.official_id, "reg_c001");
    assert_eq!(
        app.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = 'official.token_rotate'"
        )
        .await,
        1
    );
    app.stop().await;
}

/// A unit closed (in the 2025 reform, say) takes its officials' accounts with it: they
/// neither register nor read, though each account itself is still active.
async fn officials_of_a_deactivated_unit_are_refused(backend: Backend) {
    // Arrange
    let app = TestApp::start_with(backend, |cfg| cfg.auth.token_cache_ms = 0).await;
    let earlier = register(&app, "reg_c002", birth("closing-1"))
        .await
        .unwrap();
    // Act
    app.store
        .import_units(&[support::unit_input("C002", false)], "test")
        .await
        .expect("deactivate the unit");
    let registers = register(&app, "reg_c002", birth("closing-2"))
        .await
        .unwrap_err();
    let reads = app
        .client()
        .await
        .get_birth_registration(auth(
            pb::GetBirthRegistrationRequest {
                name: earlier.name.clone(),
            },
            &app.token("reg_c002"),
        ))
        .await
        .unwrap_err();

    // Assert
    for refused in [registers, reads] {
        assert_eq!(
            (refused.code(), reason_of(&refused).unwrap_or_default()),
            (Code::PermissionDenied, "ACCOUNT_REVOKED".into())
        );
    }
    // The rest of the district goes on.
    register(&app, "reg_c001", birth("closing-3"))
        .await
        .unwrap();
    app.stop().await;
}

both_backends!(
    a_token_revoked_while_in_use_is_trusted_while_its_entry_is_cached,
    without_the_token_cache_a_revoked_token_is_refused_at_once,
    a_revoked_token_is_refused_once_its_cache_entry_expires,
    a_rotated_token_replaces_the_old_one_on_the_same_account,
    officials_of_a_deactivated_unit_are_refused,
    two_replicas_relay_together_and_send_every_row_once,
    register_birth_returns_the_number_obtained_from_the_population_registry,
    the_relay_connects_to_the_population_registry_when_the_service_starts,
    the_relay_sends_over_each_of_its_connections_in_turn,
    ineligible_births_are_registered_with_their_reason_and_never_sent,
    a_retry_returns_the_same_registration_and_other_content_is_refused,
    callers_with_no_number_coming_are_answered_without_waiting_for_one,
    every_bad_field_is_named_and_nothing_is_written,
    every_policy_case_is_refused_with_its_reason,
    callers_are_authenticated_before_their_message_is_read,
    numbers_arrive_after_the_population_registry_comes_back,
    a_retry_goes_out_while_registrations_keep_arriving,
    a_permanent_refusal_marks_the_registration_rejected,
    a_rejected_registration_is_sent_again_unchanged_once_the_refusal_is_lifted,
    a_registration_whose_key_was_refused_as_reused_is_not_sent_again_unchanged,
    a_registration_sent_again_gets_the_number_minted_before_its_refusal,
    a_refused_reissue_is_not_sent_again_unchanged,
    a_refused_reissue_corrected_back_keeps_its_number,
    a_reissue_refused_for_a_lost_citizen_is_not_issued_by_taking_the_correction_back,
    a_key_once_sent_is_not_reused_for_other_content,
    a_correction_of_sex_reissues_the_number,
    a_correction_of_the_birth_year_reissues_the_number,
    a_correction_that_would_postdate_the_registration_or_end_eligibility_changes_nothing,
    a_move_to_another_province_reissues_the_number,
    merged_numbering_uses_the_merged_province_code_from_the_merger_date,
    reconciliation_finds_and_repairs_a_planted_difference,
    a_repair_leaves_a_registration_changed_since_the_comparison_alone,
    statistics_equal_what_was_registered,
    lists_are_paginated_filtered_and_limited_to_the_jurisdiction,
    a_registration_moved_by_a_correction_is_listed_under_its_new_unit,
    concurrent_registrations_get_gapless_unique_numbers_and_the_audit_chain_holds,
    pending_numbers_survive_a_restart_of_the_civil_registry,
    a_register_from_before_the_lighter_commits_migration_keeps_its_chain_and_unique_numbers,
    registrations_are_counted_by_status,
    a_stored_record_that_cannot_be_read_is_reported_without_quoting_it,
);

/// The error of an unreadable record reaches the logs (as the cause of an INTERNAL
/// answer), so it must not quote the stored value: serde_json's own message would.
async fn a_stored_record_that_cannot_be_read_is_reported_without_quoting_it(backend: Backend) {
    // Arrange: a record whose kind is text about a person, as a damaged row might hold.
    let app = TestApp::start(backend).await;
    let r = register(&app, "reg_c001", birth("unreadable"))
        .await
        .unwrap();
    app.sql(&format!(
        "UPDATE registrations SET record = '{{\"kind\": \"Nguyễn Văn Bí\"}}' WHERE id = '{}'",
        r.id
    ))
    .await;

    // Act
    let error = app
        .store
        .registration(r.id.parse().unwrap())
        .await
        .expect_err("the record cannot be read");

    // Assert
    let shown = format!("{error:#} {error:?}");
    assert!(shown.contains("stored record unreadable"), "{shown}");
    assert!(!shown.contains("Nguyễn"), "{shown}");
    app.stop().await;
}

/// SQLite before migration 5 kept a counter row per register book; the numbers go on from
/// the highest stored, gapless, once the counters are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_register_from_before_the_derived_counts_migration_goes_on_numbering() {
    // Arrange: three entries, then the register put back in its shape before migration 5.
    let mut app = TestApp::start(Backend::Sqlite).await;
    for i in 0..3 {
        register(&app, "reg_c001", birth(&format!("dc-{i}")))
            .await
            .unwrap();
    }
    app.halt().await;
    app.sql(
        "CREATE TABLE register_counters (unit_code TEXT NOT NULL, reg_year BIGINT NOT NULL, \
         last_number BIGINT NOT NULL, PRIMARY KEY (unit_code, reg_year))",
    )
    .await;
    app.sql("INSERT INTO register_counters VALUES ('C001', 2025, 3)")
        .await;
    app.sql("DROP INDEX registrations_unsettled").await;
    app.sql("CREATE INDEX registrations_status ON registrations (status)")
        .await;
    app.sql("DELETE FROM schema_migrations WHERE version = 5")
        .await;

    // Act
    app.launch().await;
    let next = register(&app, "reg_c001", birth("dc-3")).await.unwrap();

    // Assert
    assert_eq!(next.registration_number, 4);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'register_counters'")
            .await,
        0
    );
    app.stop().await;
}

/// An in-memory SQLite register would lose every registration when the process exits.
#[tokio::test]
async fn an_in_memory_sqlite_register_is_refused_naming_the_key() {
    let mut cfg = civil_registry::config::Config::default();
    cfg.database.url = "sqlite::memory:".into();
    let err = civil_registry::store::Store::connect(&cfg.database)
        .await
        .expect_err("an in-memory database was accepted");
    let message = format!("{err:#}");
    assert!(message.contains("database.url"), "{message}");
    assert!(message.contains("in-memory"), "{message}");
}
