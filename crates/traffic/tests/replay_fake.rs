//! The replayer against an in-process fake civil registry: tokens are sent, PENDING answers
//! are polled until the number arrives, failures are counted by code.

use contracts::moj::civilstatus::v1 as pb;
use contracts::moj::civilstatus::v1::birth_registration_service_server::{
    BirthRegistrationService, BirthRegistrationServiceServer,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};
use traffic::client::{ClientTls, Tokens, connect_channels};
use traffic::generate::{Outputs, generate_files};
use traffic::profile::ProfileName;
use traffic::replay::{Mode, ReplayOptions, replay};

/// Answers PENDING for every third eligible birth and issues its number on the next read;
/// refuses every token but `tok-...`.
#[derive(Default, Clone)]
struct FakeRegistry {
    regs: Arc<Mutex<HashMap<String, pb::BirthRegistration>>>,
    /// How long RegisterBirth takes to answer.
    answer_after: Duration,
}

fn status_for(req: &pb::RegisterBirthRequest) -> (pb::PersonalIdStatus, Vec<i32>) {
    let child = req.child.as_ref().expect("child");
    let mut reasons = Vec::new();
    if child.nationality != "VN" {
        reasons.push(pb::IneligibilityReason::ForeignNationality as i32);
    }
    if req.kind == pb::RegistrationKind::ReRegistration as i32 {
        reasons.push(pb::IneligibilityReason::ReRegistration as i32);
    }
    if reasons.is_empty() {
        (pb::PersonalIdStatus::Issued, reasons)
    } else {
        (pb::PersonalIdStatus::NotEligible, reasons)
    }
}

#[tonic::async_trait]
impl BirthRegistrationService for FakeRegistry {
    async fn register_birth(
        &self,
        request: Request<pb::RegisterBirthRequest>,
    ) -> Result<Response<pb::RegisterBirthResponse>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !auth.starts_with("Bearer tok-") {
            return Err(Status::unauthenticated("bad token"));
        }
        let req = request.into_inner();
        tokio::time::sleep(self.answer_after).await;
        let (mut status, reasons) = status_for(&req);
        let mut regs = self.regs.lock().unwrap();
        let n = regs.len();
        if status == pb::PersonalIdStatus::Issued && n.is_multiple_of(3) {
            status = pb::PersonalIdStatus::Pending;
        }
        let name = format!("birthRegistrations/{n}");
        let reg = pb::BirthRegistration {
            name: name.clone(),
            id: n.to_string(),
            personal_id_status: status as i32,
            personal_id: if status == pb::PersonalIdStatus::Issued {
                format!("001216{n:06}")
            } else {
                String::new()
            },
            ineligibility_reasons: reasons,
            ..Default::default()
        };
        regs.insert(name, reg.clone());
        Ok(Response::new(pb::RegisterBirthResponse {
            registration: Some(reg),
        }))
    }

    async fn get_birth_registration(
        &self,
        request: Request<pb::GetBirthRegistrationRequest>,
    ) -> Result<Response<pb::GetBirthRegistrationResponse>, Status> {
        let name = request.into_inner().name;
        let mut regs = self.regs.lock().unwrap();
        let reg = regs
            .get_mut(&name)
            .ok_or_else(|| Status::not_found("no such registration"))?;
        if reg.personal_id_status == pb::PersonalIdStatus::Pending as i32 {
            reg.personal_id_status = pb::PersonalIdStatus::Issued as i32;
            reg.personal_id = format!("001216{:06}", reg.id.parse::<u32>().unwrap_or(0));
        }
        Ok(Response::new(pb::GetBirthRegistrationResponse {
            registration: Some(reg.clone()),
        }))
    }

    async fn list_birth_registrations(
        &self,
        _: Request<pb::ListBirthRegistrationsRequest>,
    ) -> Result<Response<pb::ListBirthRegistrationsResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn correct_birth_registration(
        &self,
        _: Request<pb::CorrectBirthRegistrationRequest>,
    ) -> Result<Response<pb::CorrectBirthRegistrationResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn get_registration_statistics(
        &self,
        _: Request<pb::GetRegistrationStatisticsRequest>,
    ) -> Result<Response<pb::GetRegistrationStatisticsResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }
}

/// `n` plaintext channels to the fake at `addr`.
async fn plaintext_channels(
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<tonic::transport::Channel> {
    let tls = ClientTls {
        insecure: true,
        ..ClientTls::default()
    };
    connect_channels(&addr.to_string(), &tls, n).await.unwrap()
}

/// A small pilot (about 70 registrations) in `dir`, and a token the fake accepts for
/// each of its officials.
fn small_pilot(dir: &std::path::Path) -> (Outputs, Tokens) {
    let outputs = Outputs::next_to(&dir.join("t.ndjson"));
    let (plan, _) = generate_files(ProfileName::Pilot2016, 4, 0.001, &outputs).unwrap();
    let mut tokens = Tokens::default();
    for o in &plan.officials {
        tokens.insert(&o.id, &format!("tok-x{}", o.id)).unwrap();
    }
    (outputs, tokens)
}

async fn start_fake() -> std::net::SocketAddr {
    start(FakeRegistry::default()).await
}

async fn start(registry: FakeRegistry) -> std::net::SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BirthRegistrationServiceServer::new(registry))
            .serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_polls_pending_registrations_until_numbered_and_counts_errors_by_code() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let outputs = Outputs::next_to(&dir.path().join("t.ndjson"));
    let (plan, summary) = generate_files(ProfileName::Pilot2016, 3, 0.004, &outputs).unwrap();
    // The official of the first line has a token the fake refuses.
    let text = std::fs::read_to_string(&outputs.traffic).unwrap();
    let first: traffic::record::TrafficLine =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut tokens = Tokens::default();
    for o in &plan.officials {
        let token = if o.id == first.official_id {
            "refused".to_owned()
        } else {
            format!("tok-{}", o.id)
        };
        tokens.insert(&o.id, &token).unwrap();
    }
    let refused = text
        .lines()
        .filter(|l| l.contains(&format!("\"official_id\":\"{}\"", first.official_id)))
        .count() as u64;
    let addr = start_fake().await;
    let channels = plaintext_channels(addr, 2).await;

    // Act
    let report = replay(
        &outputs.traffic,
        channels,
        Arc::new(tokens),
        &ReplayOptions {
            mode: Mode::Concurrency(16),
            number_timeout: Duration::from_secs(10),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();

    // Assert
    let not_eligible = summary.re_registrations + summary.foreign_nationality;
    assert_eq!(report.registrations, summary.registrations);
    assert_eq!(report.failed, refused);
    assert_eq!(
        report.errors.get("Unauthenticated").copied().unwrap_or(0),
        refused
    );
    assert_eq!(
        report.by_status.get("PENDING"),
        None,
        "every PENDING was polled to ISSUED"
    );
    assert_eq!(
        report.by_status.get("ISSUED").copied().unwrap_or(0)
            + report.by_status.get("NOT_ELIGIBLE").copied().unwrap_or(0),
        summary.registrations - refused
    );
    assert!(report.by_status.get("NOT_ELIGIBLE").copied().unwrap_or(0) <= not_eligible);
    assert!(report.first_answer.get("PENDING").copied().unwrap_or(0) > 0);
    assert_eq!(report.time_to_number_ms.count, report.by_status["ISSUED"]);
    assert_eq!(report.outcomes.len() as u64, summary.registrations);
    // The refused registrations are not births seen through.
    let seen_through = (summary.registrations - refused) as f64;
    assert!((report.births_per_s - seen_through / report.seconds).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_replay_keeps_to_the_rate() {
    // Arrange: 50 registrations at 500/s take about 0.1 s.
    let dir = tempfile::tempdir().unwrap();
    let (outputs, tokens) = small_pilot(dir.path());
    let addr = start_fake().await;
    let channels = plaintext_channels(addr, 1).await;

    // Act
    let report = replay(
        &outputs.traffic,
        channels,
        Arc::new(tokens),
        &ReplayOptions {
            mode: Mode::Rate(500.0),
            limit: Some(50),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();

    // Assert
    assert_eq!(report.registrations, 50);
    assert_eq!(report.failed, 0);
    assert!(
        report.register_seconds >= 0.09,
        "took {} s",
        report.register_seconds
    );
}

/// Open-loop latency counts from when a request was due, not from when it could be sent:
/// a server that falls behind the schedule shows its backlog in the figures (no
/// coordinated omission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_the_wait_behind_a_slow_server() {
    // Arrange: due every 5 ms, answered one at a time every 50 ms.
    let dir = tempfile::tempdir().unwrap();
    let (outputs, tokens) = small_pilot(dir.path());
    let addr = start(FakeRegistry {
        answer_after: Duration::from_millis(50),
        ..FakeRegistry::default()
    })
    .await;
    let channels = plaintext_channels(addr, 1).await;

    // Act
    let report = replay(
        &outputs.traffic,
        channels,
        Arc::new(tokens),
        &ReplayOptions {
            mode: Mode::Rate(200.0),
            max_in_flight: 1,
            limit: Some(20),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();

    // Assert: the last request was due at 95 ms and answered after about 1,000 ms.
    assert_eq!(report.registrations, 20);
    assert!(
        report.register_ms.max >= 800.0,
        "latency from the schedule: {}",
        report.register_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throwaway_ca_gives_working_mtls_between_server_and_replayer() {
    // Arrange: a server requiring client certificates of the throwaway CA.
    let dir = tempfile::tempdir().unwrap();
    let certs = traffic::stack::Certs::create(&dir.path().join("tls")).unwrap();
    let config = service_kit::ServerConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        tls: service_kit::ServerTlsConfig {
            insecure_plaintext: false,
            cert_file: Some(certs.server_cert.clone()),
            key_file: Some(certs.server_key.clone()),
            client_ca_file: Some(certs.ca.clone()),
        },
        ..service_kit::ServerConfig::default()
    };
    let server = service_kit::GrpcServer::bind(&config, contracts::FILE_DESCRIPTOR_SET)
        .await
        .unwrap()
        .add_service(BirthRegistrationServiceServer::new(FakeRegistry::default()));
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    let (outputs, tokens) = small_pilot(dir.path());

    // Act
    let channels = connect_channels(&format!("https://{addr}"), &certs.traffic_client(), 1)
        .await
        .unwrap();
    let report = replay(
        &outputs.traffic,
        channels,
        Arc::new(tokens),
        &ReplayOptions {
            limit: Some(10),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();

    // Assert
    assert_eq!(report.registrations, 10);
    assert_eq!(report.failed, 0, "{:?}", report.errors);
}

#[test]
fn the_listening_line_gives_both_addresses() {
    let (grpc, metrics) =
        traffic::stack::parse_listening("LISTENING grpc=127.0.0.1:4321 metrics=127.0.0.1:9000")
            .unwrap();

    assert_eq!(grpc.port(), 4321);
    assert_eq!(metrics.unwrap().port(), 9000);
    assert!(traffic::stack::parse_listening("starting").is_none());
}
