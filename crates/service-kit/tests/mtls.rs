//! Mutual TLS over real TCP: clients without a certificate or with one from another CA
//! are refused; a proper client's identity reaches the handler.

mod common;

use std::time::Duration;

use common::{TestServer, plaintext_config};
use service_kit::pki::{IssuedCert, TempCa as TestCa};
use service_kit::{
    ClientTlsConfig, ServerConfig, ServerTlsConfig,
    echo::{EchoRequest, EchoServiceClient},
};

fn mtls_server_config(ca: &TestCa) -> ServerConfig {
    let server_cert = ca.server_cert().expect("server certificate");
    ServerConfig {
        tls: ServerTlsConfig {
            insecure_plaintext: false,
            cert_file: Some(server_cert.cert_file),
            key_file: Some(server_cert.key_file),
            client_ca_file: Some(ca.ca_file().to_path_buf()),
        },
        ..plaintext_config()
    }
}

fn client_tls(ca: &TestCa, cert: Option<&IssuedCert>) -> ClientTlsConfig {
    ClientTlsConfig {
        insecure_plaintext: false,
        ca_file: Some(ca.ca_file().to_path_buf()),
        cert_file: cert.map(|c| c.cert_file.clone()),
        key_file: cert.map(|c| c.key_file.clone()),
        server_name: Some("localhost".into()),
    }
}

async fn call(uri: &str, tls: &ClientTlsConfig) -> Result<String, tonic::Status> {
    let channel = service_kit::tls::client_channel(uri, tls, Duration::from_secs(2))
        .expect("channel config is valid");
    let mut client = EchoServiceClient::new(channel);
    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    request.set_timeout(Duration::from_secs(5));
    client
        .echo(request)
        .await
        .map(|r| r.into_inner().client_identity)
}

#[tokio::test]
async fn with_mtls_a_client_with_a_certificate_from_the_trusted_ca_is_identified() {
    let ca = TestCa::new("trusted").expect("CA");
    let server = TestServer::start(&mtls_server_config(&ca)).await;
    let client_cert = ca
        .client_cert("civil-registry")
        .expect("client certificate");

    let identity = call(
        &format!("https://localhost:{}", server.addr.port()),
        &client_tls(&ca, Some(&client_cert)),
    )
    .await;

    assert_eq!(identity.expect("mTLS call succeeds"), "civil-registry");
    server.stop().await;
}

#[tokio::test]
async fn with_mtls_a_client_without_a_certificate_is_refused() {
    let ca = TestCa::new("trusted").expect("CA");
    let server = TestServer::start(&mtls_server_config(&ca)).await;

    let result = call(
        &format!("https://localhost:{}", server.addr.port()),
        &client_tls(&ca, None),
    )
    .await;

    // TLS 1.3 lets the client finish its side of the handshake first; the server's refusal
    // then arrives as a TLS alert on the first call.
    let status = result.expect_err("no client certificate must be refused");
    assert!(
        format!("{status:?}").contains("CertificateRequired"),
        "refused by the TLS handshake: {status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_mtls_a_client_with_a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("trusted").expect("CA");
    let other_ca = TestCa::new("rogue").expect("CA");
    let server = TestServer::start(&mtls_server_config(&ca)).await;
    let rogue_cert = other_ca
        .client_cert("civil-registry")
        .expect("client certificate");

    // The client trusts the real server CA but presents the rogue CA's certificate.
    let result = call(
        &format!("https://localhost:{}", server.addr.port()),
        &client_tls(&ca, Some(&rogue_cert)),
    )
    .await;

    let status = result.expect_err("a certificate from another CA must be refused");
    assert!(
        format!("{status:?}").contains("UnknownCA"),
        "refused by the TLS handshake: {status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_handler_sees_the_full_client_identity_and_can_match_it() {
    use service_kit::echo::{EchoService, EchoServiceServer};

    /// Echo variant that returns the whole identity, to check every field.
    #[derive(Clone, Debug)]
    struct IdentityEcho;
    #[tonic::async_trait]
    impl EchoService for IdentityEcho {
        async fn echo(
            &self,
            request: tonic::Request<EchoRequest>,
        ) -> Result<tonic::Response<service_kit::echo::EchoResponse>, tonic::Status> {
            let identity = service_kit::tls::client_identity(&request)
                .ok_or_else(|| tonic::Status::unauthenticated("no client identity"))?;
            if !identity.matches("spiffe://test/population-client") {
                return Err(tonic::Status::permission_denied("not allowed"));
            }
            Ok(tonic::Response::new(service_kit::echo::EchoResponse {
                message: format!(
                    "{}|{}|{}|{}",
                    identity.subject,
                    identity.common_name.clone().unwrap_or_default(),
                    identity.dns_names.join(","),
                    identity.uris.join(",")
                ),
                ..Default::default()
            }))
        }
    }
    let ca = TestCa::new("trusted").expect("CA");
    let server = service_kit::GrpcServer::bind(
        &mtls_server_config(&ca),
        service_kit::echo::FILE_DESCRIPTOR_SET,
    )
    .await
    .expect("bind")
    .add_service(EchoServiceServer::new(IdentityEcho));
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));
    let uri = format!("https://localhost:{}", addr.port());
    let allowed = ca
        .client_cert("population-client")
        .expect("client certificate");
    let other = ca.client_cert("someone-else").expect("client certificate");

    let channel = service_kit::tls::client_channel(
        &uri,
        &client_tls(&ca, Some(&allowed)),
        Duration::from_secs(2),
    )
    .expect("channel");
    let reply = EchoServiceClient::new(channel)
        .echo(EchoRequest::default())
        .await
        .expect("allowed client")
        .into_inner();
    let channel = service_kit::tls::client_channel(
        &uri,
        &client_tls(&ca, Some(&other)),
        Duration::from_secs(2),
    )
    .expect("channel");
    let denied = EchoServiceClient::new(channel)
        .echo(EchoRequest::default())
        .await
        .expect_err("a valid certificate with the wrong name is denied by the handler");
    let _ = stop_tx.send(());
    task.await.expect("task").expect("serve");

    assert_eq!(
        reply.message,
        "CN=population-client|population-client|population-client.test|spiffe://test/population-client"
    );
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn healthcheck_works_over_mtls() {
    let ca = TestCa::new("trusted").expect("CA");
    let server = TestServer::start(&mtls_server_config(&ca)).await;
    let client_cert = ca.client_cert("kubelet").expect("client certificate");
    let uri = format!("https://localhost:{}", server.addr.port());

    let serving =
        service_kit::healthcheck::check(&uri, &client_tls(&ca, Some(&client_cert)), "").await;

    assert!(serving.expect("health check over mTLS"));
    server.stop().await;
}

#[tokio::test]
async fn with_mtls_the_plaintext_probe_listener_answers_health_and_nothing_else() {
    let ca = TestCa::new("trusted").expect("CA");
    let config = ServerConfig {
        health_listen_addr: Some("127.0.0.1:0".parse().expect("address")),
        ..mtls_server_config(&ca)
    };
    let server = TestServer::start(&config).await;
    let probe = server.health_addr.expect("probe listener bound");
    let probe_uri = format!("http://{probe}");
    let plaintext = ClientTlsConfig {
        insecure_plaintext: true,
        ..ClientTlsConfig::default()
    };

    let serving = service_kit::healthcheck::check(&probe_uri, &plaintext, "").await;
    server
        .health
        .set_not_serving::<service_kit::echo::EchoServiceServer<service_kit::echo::EchoServer>>()
        .await;
    let echo_flipped =
        service_kit::healthcheck::check(&probe_uri, &plaintext, "kit.echo.v1.EchoService").await;
    let echo_on_probe = call(&probe_uri, &plaintext).await;

    assert!(serving.expect("probe check"), "the server is SERVING");
    assert!(
        !echo_flipped.expect("probe check"),
        "the probe listener shares the server's health reporter"
    );
    assert_eq!(
        echo_on_probe
            .expect_err("no service but health on the probe port")
            .code(),
        tonic::Code::Unimplemented
    );
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_answers_the_handshake_fails_the_call_at_the_connect_timeout() {
    // Arrange: a listener that accepts connections and never says a word.
    let ca = TestCa::new("trusted").expect("CA");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let channel = service_kit::tls::client_channel(
        &format!("https://localhost:{}", addr.port()),
        &client_tls(&ca, None),
        Duration::from_millis(300),
    )
    .expect("channel config is valid");

    // Act: no gRPC deadline on the call, so only the channel's connect timeout can end it.
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        EchoServiceClient::new(channel).echo(EchoRequest::default()),
    )
    .await;
    held.abort();

    // Assert: the call fails on its own (a transport error that callers retry) instead of
    // waiting for a handshake that never comes.
    let status = outcome
        .expect("the connect timeout ends the call")
        .expect_err("nothing answers");
    let mut cause = std::error::Error::source(&status);
    let mut timed_out = false;
    while let Some(error) = cause {
        timed_out |= error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        cause = error.source();
    }
    assert!(timed_out, "a connect that timed out: {status:?}");
}

/// Puts `from`'s contents at `to` the way Kubernetes updates a mounted Secret: whole, at
/// once (a new file renamed over the old).
fn replace(from: &std::path::Path, to: &std::path::Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).expect("stage");
    std::fs::rename(&staged, to).expect("swap");
}

/// Calls until `wanted` holds or 5 s pass; the last answer.
async fn until<F, Fut>(
    mut attempt: F,
    wanted: impl Fn(&Result<String, tonic::Status>) -> bool,
) -> Result<String, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = attempt().await;
        if wanted(&answer) || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_server_whose_certificate_and_client_ca_files_are_renewed_uses_them_without_a_restart() {
    // Arrange: the server's files in a directory of their own, from a first CA.
    let first = TestCa::new("first").expect("CA");
    let second = TestCa::new("second").expect("CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, clients) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    let first_server = first.server_cert().expect("server certificate");
    replace(&first_server.cert_file, &cert);
    replace(&first_server.key_file, &key);
    replace(first.ca_file(), &clients);
    let server = TestServer::start(&ServerConfig {
        tls: ServerTlsConfig {
            insecure_plaintext: false,
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            client_ca_file: Some(clients.clone()),
        },
        ..plaintext_config()
    })
    .await;
    let uri = format!("https://localhost:{}", server.addr.port());
    let old_client = client_tls(&first, Some(&first.client_cert("old").expect("cert")));
    let new_client = client_tls(&second, Some(&second.client_cert("new").expect("cert")));
    let before = call(&uri, &new_client).await;
    assert!(
        before.is_err(),
        "the second CA is not trusted yet: {before:?}"
    );

    // Act: renewal under the second CA (the files swapped, the server left running).
    let second_server = second.server_cert().expect("server certificate");
    replace(&second_server.cert_file, &cert);
    replace(&second_server.key_file, &key);
    replace(second.ca_file(), &clients);
    let after = until(|| call(&uri, &new_client), Result::is_ok).await;
    let old = call(&uri, &old_client).await;

    // Assert
    assert_eq!(after.expect("served with the renewed files"), "new");
    assert!(
        old.is_err(),
        "the first CA's certificates are gone: {old:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_channel_whose_client_certificate_files_are_renewed_presents_the_new_certificate() {
    // Arrange: a server trusting clients of `trusted`; a channel presenting a certificate
    // of another CA, from files of its own.
    let trusted = TestCa::new("trusted").expect("CA");
    let other = TestCa::new("other").expect("CA");
    let server = TestServer::start(&mtls_server_config(&trusted)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let refused = other.client_cert("civil-registry").expect("cert");
    replace(&refused.cert_file, &cert);
    replace(&refused.key_file, &key);
    let tls = ClientTlsConfig {
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        ..client_tls(&trusted, None)
    };
    let channel = service_kit::tls::client_channel(
        &format!("https://localhost:{}", server.addr.port()),
        &tls,
        Duration::from_secs(2),
    )
    .expect("channel");
    let client = EchoServiceClient::new(channel);
    let mut echo = move || {
        let mut request = tonic::Request::new(EchoRequest {
            message: "hi".into(),
            ..EchoRequest::default()
        });
        request.set_timeout(Duration::from_secs(2));
        let mut client = client.clone();
        async move {
            client
                .echo(request)
                .await
                .map(|r| r.into_inner().client_identity)
        }
    };
    let before = echo().await;
    assert!(
        before.is_err(),
        "another CA's certificate is refused: {before:?}"
    );

    // Act: the channel's certificate files renewed, the same channel used again.
    let renewed = trusted.client_cert("civil-registry").expect("cert");
    replace(&renewed.cert_file, &cert);
    replace(&renewed.key_file, &key);
    let after = until(&mut echo, Result::is_ok).await;

    // Assert
    assert_eq!(
        after.expect("the renewed certificate is presented"),
        "civil-registry"
    );
    server.stop().await;
}
