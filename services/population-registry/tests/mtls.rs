//! Callers are admitted by client certificate against per-role allow-lists.

mod common;

use std::time::Duration;

use common::{Client, TestApp, TestDb, birth, config, issue};
use contracts::mps::population::v1 as pb;
use population_registry::config::AuthConfig;
use population_registry::domain::errors::AuthError;
use population_registry::grpc::auth::{Authorizer, Role};
use service_kit::config::ClientTlsConfig;
use service_kit::pki::TempCa as TestCa;
use service_kit::status::reason_of;
use tonic::Code;

fn client(addr: std::net::SocketAddr, ca: &TestCa, name: Option<&str>) -> Client {
    Client::new(channel(addr, ca, name))
}

fn channel(
    addr: std::net::SocketAddr,
    ca: &TestCa,
    name: Option<&str>,
) -> tonic::transport::Channel {
    let cert = name.map(|n| ca.client_cert(n).expect("client certificate"));
    let tls = ClientTlsConfig {
        insecure_plaintext: false,
        ca_file: Some(ca.ca_file().to_path_buf()),
        cert_file: cert.as_ref().map(|c| c.cert_file.clone()),
        key_file: cert.as_ref().map(|c| c.key_file.clone()),
        server_name: Some("localhost".into()),
    };
    service_kit::tls::client_channel(
        &format!("https://localhost:{}", addr.port()),
        &tls,
        Duration::from_secs(3),
    )
    .expect("channel")
}

async fn mtls_app(db: &TestDb, ca: &TestCa) -> TestApp {
    let server = ca.server_cert().expect("server certificate");
    let mut cfg = config(db);
    cfg.server.tls.insecure_plaintext = false;
    cfg.server.tls.cert_file = Some(server.cert_file);
    cfg.server.tls.key_file = Some(server.key_file);
    cfg.server.tls.client_ca_file = Some(ca.ca_file().to_path_buf());
    cfg.auth.minting_allowed = vec!["spiffe://test/civil-registry".into()];
    cfg.auth.read_allowed = vec!["spiffe://test/auditor".into()];
    TestApp::spawn_with(cfg).await
}

#[tokio::test]
async fn only_identities_on_the_allow_list_of_a_role_may_call_it() {
    let db = TestDb::sqlite().await;
    let ca = TestCa::new("registry").expect("CA");
    let app = mtls_app(&db, &ca).await;
    let mut minter = client(app.addr, &ca, Some("civil-registry"));
    let mut auditor = client(app.addr, &ca, Some("auditor"));
    let mut stranger = client(app.addr, &ca, Some("stranger"));

    let issued = minter
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("minting caller mints")
        .into_inner();
    let get = |id: &str| pb::GetCitizenRequest {
        personal_id: id.to_owned(),
    };
    let read_by_auditor = auditor.get_citizen(get(&issued.personal_id)).await;
    let read_by_minter = minter.get_citizen(get(&issued.personal_id)).await;
    let mint_by_auditor = auditor
        .issue_personal_id(issue("reg-2", birth("Bình", 2)))
        .await
        .expect_err("read-only caller");
    let read_by_stranger = stranger
        .get_citizen(get(&issued.personal_id))
        .await
        .expect_err("unknown caller");
    let batch_by_stranger = stranger
        .batch_issue_personal_ids(tokio_stream::iter(
            Vec::<pb::BatchIssuePersonalIdsRequest>::new(),
        ))
        .await
        .expect_err("unknown caller");

    assert!(read_by_auditor.is_ok());
    assert!(read_by_minter.is_ok());
    assert_eq!(mint_by_auditor.code(), Code::PermissionDenied);
    assert_eq!(
        reason_of(&mint_by_auditor).as_deref(),
        Some("CALLER_NOT_ALLOWED")
    );
    assert_eq!(read_by_stranger.code(), Code::PermissionDenied);
    assert_eq!(batch_by_stranger.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn a_caller_without_a_client_certificate_is_turned_away() {
    let db = TestDb::sqlite().await;
    let ca = TestCa::new("registry").expect("CA");
    let app = mtls_app(&db, &ca).await;
    let mut anonymous = client(app.addr, &ca, None);

    let read = anonymous
        .get_citizen(pb::GetCitizenRequest {
            personal_id: "001221000001".into(),
        })
        .await
        .expect_err("no certificate");
    let mint = anonymous
        .issue_personal_id(issue("reg-anonymous", birth("An", 1)))
        .await
        .expect_err("no certificate");

    for refused in [read, mint] {
        assert_eq!(
            (refused.code(), reason_of(&refused).unwrap_or_default()),
            (
                Code::Unauthenticated,
                "CLIENT_CERTIFICATE_MISSING".to_owned()
            ),
            "{refused:?}"
        );
    }
    app.stop().await;
}

/// An IssuePersonalIdRequest no server can decode: `request_id` (a string) sent as a number.
#[derive(Clone, PartialEq, prost::Message)]
struct Undecodable {
    #[prost(uint64, tag = "1")]
    request_id_as_a_number: u64,
}

async fn send_undecodable(
    channel: tonic::transport::Channel,
    method: &'static str,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary::<Undecodable, Undecodable, _>(
        tonic::Request::new(Undecodable {
            request_id_as_a_number: 7,
        }),
        http::uri::PathAndQuery::try_from(format!(
            "/mps.population.v1.PopulationRegistryService/{method}"
        ))
        .expect("path"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("undecodable")
}

#[tokio::test]
async fn callers_without_the_role_are_refused_before_their_message_is_read() {
    // Arrange
    let db = TestDb::sqlite().await;
    let ca = TestCa::new("registry").expect("CA");
    let app = mtls_app(&db, &ca).await;

    // Act: the same undecodable message from a stranger, from a caller without a
    // certificate, from a read-only caller, and from the minting caller; and a method the
    // service does not have.
    let issue = "IssuePersonalId";
    let stranger = send_undecodable(channel(app.addr, &ca, Some("stranger")), issue).await;
    let anonymous = send_undecodable(channel(app.addr, &ca, None), issue).await;
    let reader = send_undecodable(channel(app.addr, &ca, Some("auditor")), issue).await;
    let minter = send_undecodable(channel(app.addr, &ca, Some("civil-registry")), issue).await;
    let no_such_method =
        send_undecodable(channel(app.addr, &ca, Some("stranger")), "NoSuchMethod").await;

    // Assert: callers without the role learn only that; the minting caller gets as far as
    // decoding, which is what fails; an unknown method is UNIMPLEMENTED for anyone.
    let refusal = |s: &tonic::Status| (s.code(), reason_of(s).unwrap_or_default());
    assert_eq!(
        refusal(&stranger),
        (Code::PermissionDenied, "CALLER_NOT_ALLOWED".to_owned())
    );
    assert_eq!(
        refusal(&anonymous),
        (
            Code::Unauthenticated,
            "CLIENT_CERTIFICATE_MISSING".to_owned()
        )
    );
    assert_eq!(
        refusal(&reader),
        (Code::PermissionDenied, "CALLER_NOT_ALLOWED".to_owned())
    );
    assert!(
        !matches!(
            minter.code(),
            Code::PermissionDenied | Code::Unauthenticated | Code::Ok
        ),
        "{minter:?}"
    );
    assert_eq!(no_such_method.code(), Code::Unimplemented);
    app.stop().await;
}

#[test]
fn a_request_without_a_verified_identity_is_unauthenticated() {
    let auth = Authorizer::new(
        &AuthConfig {
            minting_allowed: vec!["spiffe://test/civil-registry".into()],
            read_allowed: vec![],
        },
        true,
    );

    let refused = auth
        .check(&tonic::Request::new(()), Role::Read, "GetCitizen")
        .expect_err("no identity");

    assert!(matches!(refused, AuthError::MissingCertificate));
    let status = population_registry::grpc::status::auth(refused);
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("CLIENT_CERTIFICATE_MISSING")
    );
}

#[tokio::test]
async fn tls_without_a_client_ca_is_refused_at_startup() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.server.tls.insecure_plaintext = false;

    let err = population_registry::app::App::build(&cfg)
        .await
        .expect_err("must not serve unauthenticated TLS");

    assert!(
        err.to_string().contains("server.tls.client_ca_file"),
        "{err}"
    );
}

/// The binary's environment for serving a SQLite file in `dir` with `ca`'s server
/// certificate on an ephemeral port (no client CA: each test adds what it needs).
fn tls_serving_env(dir: &std::path::Path, ca: &TestCa) -> Vec<(&'static str, String)> {
    let server = ca.server_cert().expect("server certificate");
    vec![
        (
            "POPULATION_REGISTRY_DATABASE__URL",
            format!("sqlite://{}/p.db?mode=rwc", dir.display()),
        ),
        (
            "POPULATION_REGISTRY_SERVER__LISTEN_ADDR",
            "127.0.0.1:0".into(),
        ),
        (
            "POPULATION_REGISTRY_SERVER__TLS__CERT_FILE",
            server.cert_file.display().to_string(),
        ),
        (
            "POPULATION_REGISTRY_SERVER__TLS__KEY_FILE",
            server.key_file.display().to_string(),
        ),
    ]
}

#[test]
fn serving_without_a_client_ca_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("registry").expect("CA");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_population-registry"))
        .arg("serve")
        .envs(tls_serving_env(dir.path(), &ca))
        .output()
        .expect("population-registry runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("invalid configuration: server.tls.client_ca_file: required"),
        "{stderr}"
    );
}

#[test]
fn the_healthcheck_subcommand_of_a_tls_server_asks_its_health_only_listener() {
    use std::io::BufRead as _;
    // Arrange: the binary serving with mTLS and a plaintext health-only listener, as the
    // image runs it.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("registry").expect("CA");
    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut env = tls_serving_env(dir.path(), &ca);
    env.extend([
        (
            "POPULATION_REGISTRY_SERVER__HEALTH_LISTEN_ADDR",
            format!("127.0.0.1:{health_port}"),
        ),
        (
            "POPULATION_REGISTRY_SERVER__TLS__CLIENT_CA_FILE",
            ca.ca_file().display().to_string(),
        ),
    ]);
    let bin = env!("CARGO_BIN_EXE_population-registry");
    let mut serving = std::process::Command::new(bin)
        .arg("serve")
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = serving.stdout.take().expect("stdout");
    let listening = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("LISTENING"));

    // Act
    let check = std::process::Command::new(bin)
        .arg("healthcheck")
        .envs(env.iter().cloned())
        .output()
        .expect("healthcheck runs");
    serving.kill().ok();
    serving.wait().ok();

    // Assert
    assert!(listening, "the server announced itself");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "SERVING");
}
