//! Telemetry: `tracing` logs (text or JSON) under an env filter, optional OpenTelemetry
//! export over OTLP/gRPC, and W3C trace-context propagation through gRPC metadata.
//!
//! Propagation always uses the W3C `traceparent`/`tracestate` format directly (not the
//! global propagator), so it works the same in tests that never call [`init`].

use anyhow::Context as _;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::LevelFilter, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

use crate::config::{LogFormat, TelemetryConfig};

/// Bound on one connection attempt to the collector.
const COLLECTOR_CONNECT: std::time::Duration = std::time::Duration::from_secs(5);
/// Bound on one export: the exporter's own default, which a channel of the caller's must
/// carry itself. A collector that accepts and stalls costs a batch of spans, no more.
const COLLECTOR_EXPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the trace exporter alive; flushes buffered spans on [`TelemetryGuard::shutdown`]
/// or on drop, whichever comes first.
#[derive(Debug)]
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes buffered spans and stops the exporter. Idempotent.
    ///
    /// Blocks the calling thread while the exporter flushes; from async code on a
    /// current-thread runtime prefer calling it from `spawn_blocking`.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces failed: {error}");
        }
    }

    /// [`TelemetryGuard::shutdown`] on a blocking thread, for async code: the exporter's
    /// own tasks need the runtime's workers, which a flush holding one of them could
    /// starve (a pod limited to one core runs one worker).
    pub async fn shutdown_off_runtime(mut self) {
        let _ = tokio::task::spawn_blocking(move || self.shutdown()).await;
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global `tracing` subscriber: env filter from `cfg.log_filter`, text or JSON
/// lines on stderr (stdout is reserved for command output such as the `LISTENING` line).
/// When `cfg.otlp_endpoint` is set, spans are also exported over OTLP/gRPC (TLS per
/// `cfg.otlp_tls`) with `service.name = service_name`; that needs a running Tokio runtime.
///
/// Fails when the filter is invalid, the exporter cannot be built, or a global subscriber
/// is already installed.
pub fn init(service_name: &'static str, cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&cfg.log_filter)
        .with_context(|| format!("telemetry.log_filter: invalid filter {:?}", cfg.log_filter))?;

    // The log filter applies to log output only: a quiet log level must not switch off
    // the per-call spans that traces are made of.
    let fmt_layer = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };

    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            tokio::runtime::Handle::try_current()
                .context("telemetry::init with an OTLP endpoint must run inside a Tokio runtime")?;
            // The kit's own channel, so that the collector is reached with the same TLS
            // rules as every other peer (verified CA, plaintext only when asked for).
            let channel = crate::tls::client_channel_with(
                endpoint,
                &cfg.otlp_tls,
                COLLECTOR_CONNECT,
                Some(COLLECTOR_EXPORT),
            )
            .map_err(|e| {
                crate::ConfigError::new("telemetry.otlp_endpoint/otlp_tls", format!("{e:#}"))
            })?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .build()
                .with_context(|| format!("telemetry.otlp_endpoint: cannot export to {endpoint}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service_name).build())
                    .build(),
            )
        }
        None => None,
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(LevelFilter::INFO)
    });

    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("a global tracing subscriber is already installed")?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard { provider })
}

/// A tonic client interceptor that injects the current span's W3C trace context into the
/// request metadata: `Client::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(&mut request);
        Ok(request)
    }
}

/// Injects the current span's W3C trace context (`traceparent`, `tracestate`) into the
/// request's metadata. Does nothing when the current span has no OpenTelemetry context.
pub fn inject_trace_context<T>(req: &mut tonic::Request<T>) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new()
        .inject_context(&context, &mut MetadataInjector(req.metadata_mut()));
}

/// The W3C trace context carried by incoming HTTP headers (empty context when absent).
pub fn extract_trace_context(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The current span's OpenTelemetry trace id as 32 hex digits, if it has a valid one.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
