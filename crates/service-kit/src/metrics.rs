//! Prometheus metrics: the global recorder and the `GET /metrics` HTTP endpoint.
//!
//! Every gRPC call served by [`crate::server::GrpcServer`] is counted in
//! [`GRPC_SERVER_HANDLED_TOTAL`] and timed in [`GRPC_SERVER_HANDLING_SECONDS`], both labelled
//! `grpc_service`, `grpc_method` and `grpc_code` (the code's name, e.g. `OK`,
//! `INVALID_ARGUMENT`). Labels never carry personal data.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Mutex, OnceLock, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::MetricsConfig;

/// Counter of finished gRPC calls.
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";
/// Histogram of gRPC call latency in seconds, from request headers to the response's end.
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// Latency buckets in seconds: fine below 100 ms where healthy calls live, coarse above.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once (later calls reuse it) and, when
/// `cfg.listen_addr` is set, serves `GET /metrics` there; returns the bound address.
/// Services add their own metrics with the `metrics` macros.
pub async fn install(cfg: &MetricsConfig) -> anyhow::Result<Option<SocketAddr>> {
    let handle = handle()?;
    let Some(listen_addr) = cfg.listen_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("metrics.listen_addr: cannot bind {listen_addr}"))?;
    let local_addr = listener.local_addr()?;
    tokio::spawn(serve(listener, handle));
    Ok(Some(local_addr))
}

/// The installed recorder's handle (installing the recorder if needed), e.g. to render the
/// metrics in tests without HTTP.
pub fn handle() -> anyhow::Result<PrometheusHandle> {
    // Serialises first installs: a second caller must wait for the first one's handle
    // rather than fail to install its own recorder.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(GRPC_SERVER_HANDLING_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .context("invalid latency buckets")?
        .install_recorder()
        .context(
            "cannot install the Prometheus recorder (another metrics recorder is installed)",
        )?;
    // Histograms keep their samples until upkeep drains them.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    crate::tls::export_loaded_expiries();
    Ok(handle)
}

async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(respond(&request, &handle)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection error");
            }
        });
    }
}

fn respond<B>(request: &Request<B>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
            (
                hyper::StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        } else {
            (
                hyper::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: try GET /metrics\n".to_string(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
