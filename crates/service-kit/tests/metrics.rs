//! `/metrics` over HTTP counts served calls by service, method and status code.
//! One test per binary section: the Prometheus recorder is process-global.

mod common;

use std::net::SocketAddr;

use common::{TestServer, certificate_not_after, echo_client, plaintext_config, sample};
use service_kit::{MetricsConfig, echo::EchoRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (head.to_string(), body.to_string())
}

/// Installs the recorder (once per process) and serves `/metrics` on a port of its own.
async fn metrics_endpoint() -> SocketAddr {
    service_kit::metrics::install(&MetricsConfig {
        listen_addr: Some("127.0.0.1:0".parse().expect("addr")),
    })
    .await
    .expect("install")
    .expect("an address when listen_addr is set")
}

#[tokio::test]
async fn metrics_count_each_call_by_method_and_status_code_with_latency() {
    // Arrange
    let metrics_addr = metrics_endpoint().await;
    let again = service_kit::metrics::install(&MetricsConfig::default()).await;
    assert!(again.expect("installing twice is fine").is_none());
    let server = TestServer::start(&plaintext_config()).await;
    let mut echo = echo_client(server.addr).await;

    // Act: two OK calls and one NOT_FOUND (a trailers-only response).
    for _ in 0..2 {
        echo.echo(EchoRequest::default()).await.expect("ok call");
    }
    let failed = echo
        .echo(EchoRequest {
            fail_with_code: tonic::Code::NotFound as i32,
            ..EchoRequest::default()
        })
        .await;
    assert_eq!(failed.expect_err("fails").code(), tonic::Code::NotFound);
    let (head, body) = scrape(metrics_addr, "/metrics").await;
    let (not_found_head, _) = scrape(metrics_addr, "/other").await;

    // Assert
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        not_found_head.starts_with("HTTP/1.1 404"),
        "{not_found_head}"
    );
    let ok = [
        ("grpc_service", "kit.echo.v1.EchoService"),
        ("grpc_method", "Echo"),
        ("grpc_code", "OK"),
    ];
    let not_found = [
        ("grpc_service", "kit.echo.v1.EchoService"),
        ("grpc_method", "Echo"),
        ("grpc_code", "NOT_FOUND"),
    ];
    assert_eq!(
        sample(&body, "grpc_server_handled_total", &ok),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "grpc_server_handled_total", &not_found),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "grpc_server_handling_seconds_count", &ok),
        Some(2.0),
        "latency histogram: {body}"
    );
    assert!(
        body.contains("grpc_server_handling_seconds_bucket{"),
        "latency is a real histogram with buckets: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_to_unknown_services_and_methods_do_not_create_new_metric_labels() {
    // Arrange
    let metrics_addr = metrics_endpoint().await;
    let server = TestServer::start(&plaintext_config()).await;
    let mut grpc = tonic::client::Grpc::new(common::plaintext_channel(server.addr).await);

    // Act: a random service and a random method of a known service.
    for path in [
        "/attacker.chosen.v1.Service/Anything",
        "/kit.echo.v1.EchoService/NoSuchMethod",
    ] {
        grpc.ready().await.expect("ready");
        let result: Result<tonic::Response<service_kit::echo::EchoResponse>, tonic::Status> = grpc
            .unary(
                tonic::Request::new(EchoRequest::default()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(result.expect_err(path).code(), tonic::Code::Unimplemented);
    }
    let (_, body) = scrape(metrics_addr, "/metrics").await;

    // Assert
    assert!(!body.contains("attacker"), "{body}");
    assert!(!body.contains("NoSuchMethod"), "{body}");
    let unknown_service = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "UNIMPLEMENTED"),
    ];
    let unknown_method = [
        ("grpc_service", "kit.echo.v1.EchoService"),
        ("grpc_method", "unknown"),
        ("grpc_code", "UNIMPLEMENTED"),
    ];
    assert_eq!(
        sample(&body, "grpc_server_handled_total", &unknown_service),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "grpc_server_handled_total", &unknown_method),
        Some(1.0),
        "{body}"
    );
    server.stop().await;
}

/// A pod that missed the restart after a renewal serves its old certificate: the expiry
/// of what each server and client loaded is exported by file, for an alert to read.
#[tokio::test]
async fn the_expiry_of_each_loaded_certificate_is_exported_by_file() {
    use service_kit::pki::TempCa;

    // Arrange
    let metrics_addr = metrics_endpoint().await;
    let ca = TempCa::new("expiry").expect("ca");
    let server_cert = ca.server_cert().expect("server cert");
    let client_cert = ca.client_cert("caller").expect("client cert");

    // Act
    let server = TestServer::start(&service_kit::ServerConfig {
        tls: service_kit::ServerTlsConfig {
            insecure_plaintext: false,
            cert_file: Some(server_cert.cert_file.clone()),
            key_file: Some(server_cert.key_file.clone()),
            client_ca_file: Some(ca.ca_file().to_path_buf()),
        },
        ..plaintext_config()
    })
    .await;
    service_kit::tls::TlsConnector::from_files(
        ca.ca_file(),
        Some((&client_cert.cert_file, &client_cert.key_file)),
        None,
    )
    .expect("client connector");
    let (_, body) = scrape(metrics_addr, "/metrics").await;

    // Assert
    for file in [&server_cert.cert_file, &client_cert.cert_file] {
        let exported = sample(
            &body,
            service_kit::tls::TLS_CERTIFICATE_EXPIRY,
            &[("file", &file.display().to_string())],
        );
        assert_eq!(
            exported,
            Some(certificate_not_after(file)),
            "{}: {body}",
            file.display()
        );
    }
    server.stop().await;
}
