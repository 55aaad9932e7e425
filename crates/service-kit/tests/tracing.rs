//! W3C trace context crosses the wire: the server's per-call span is a child of the
//! client's span. Installs a global subscriber, so it is the only test in this binary.

mod common;

use common::{TestServer, plaintext_channel, plaintext_config};
use opentelemetry::trace::{SpanKind, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use service_kit::{
    TraceContextInterceptor,
    echo::{EchoRequest, EchoServiceClient},
};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_trace_id_arrives_in_the_servers_span() {
    // Arrange: an in-memory exporter behind the global subscriber (server tasks run on
    // other threads, so a thread-local default would not see them).
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("kit-test")));
    tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
    let server = TestServer::start(&plaintext_config()).await;
    let mut client = EchoServiceClient::with_interceptor(
        plaintext_channel(server.addr).await,
        TraceContextInterceptor,
    );

    // Act: call from inside a client span.
    let client_span = tracing::info_span!("client.call");
    let client_trace_id = client_span
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string();
    let reply = client
        .echo(EchoRequest::default())
        .instrument(client_span.clone())
        .await
        .expect("echo")
        .into_inner();
    drop(client_span);
    server.stop().await;
    provider.force_flush().expect("flush");

    // Assert: the handler saw the client's trace, and the exported server span is a child
    // of the client span.
    assert_eq!(
        reply.trace_id, client_trace_id,
        "handler's current trace id"
    );
    let spans = exporter.get_finished_spans().expect("spans");
    let client_span = spans
        .iter()
        .find(|s| s.name == "client.call")
        .expect("client span exported");
    let server_span = spans
        .iter()
        .find(|s| s.name == "kit.echo.v1.EchoService/Echo")
        .unwrap_or_else(|| {
            panic!(
                "server span exported; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        server_span.span_context.trace_id().to_string(),
        client_trace_id
    );
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id()
    );
    assert_eq!(server_span.span_kind, SpanKind::Server);
    let code = server_span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "rpc.grpc.status_code")
        .map(|kv| kv.value.to_string());
    assert_eq!(
        code.as_deref(),
        Some("0"),
        "status code recorded on the span"
    );
}
