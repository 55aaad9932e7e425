//! Traces reach an OTLP collector over TLS, verified against the configured CA. Its own
//! binary: one global subscriber per process.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use service_kit::pki::TempCa;
use service_kit::{ClientTlsConfig, GrpcServer, ServerConfig, ServerTlsConfig, TelemetryConfig};
use tokio::sync::mpsc;

/// A collector that passes on the names of the spans it receives.
struct Collector {
    spans: mpsc::UnboundedSender<String>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let names = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|span| span.name);
        for name in names {
            let _ = self.spans.send(name);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_a_collector_over_verified_tls() {
    // Arrange: a collector serving TLS with a certificate from a throwaway CA.
    let ca = TempCa::new("collector").expect("CA");
    let cert = ca.server_cert().expect("server certificate");
    let config = ServerConfig {
        listen_addr: "127.0.0.1:0".parse().expect("address"),
        tls: ServerTlsConfig {
            insecure_plaintext: false,
            cert_file: Some(cert.cert_file),
            key_file: Some(cert.key_file),
            client_ca_file: None,
        },
        ..ServerConfig::default()
    };
    let (spans, mut received) = mpsc::unbounded_channel();
    let server = GrpcServer::bind(&config, service_kit::echo::FILE_DESCRIPTOR_SET)
        .await
        .expect("bind")
        .add_service(TraceServiceServer::new(Collector { spans }));
    let port = server.local_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    // Act: export one span, then flush.
    let mut guard = service_kit::telemetry::init(
        "kit-test",
        &TelemetryConfig {
            otlp_endpoint: Some(format!("https://localhost:{port}")),
            // The name verified is the endpoint's host, as in a deployment.
            otlp_tls: ClientTlsConfig {
                ca_file: Some(ca.ca_file().to_path_buf()),
                ..ClientTlsConfig::default()
            },
            ..TelemetryConfig::default()
        },
    )
    .expect("init");
    tracing::info_span!("registration.exported").in_scope(|| {});
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .expect("flush");
    let first = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;

    // Assert
    assert_eq!(
        first.ok().flatten().as_deref(),
        Some("registration.exported")
    );
    let _ = stop.send(());
    serving.await.expect("server task").expect("serve");
}
