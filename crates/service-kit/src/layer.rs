//! The per-call tower layer every [`crate::server::GrpcServer`] runs: a tracing span whose
//! parent is the caller's W3C trace context, Prometheus request counts and latency by
//! method and status code, and the request message size limit.
//!
//! The status code is read from the `grpc-status` response header (trailers-only responses,
//! which is how tonic sends most errors) or else from the body's trailers, so the call is
//! recorded when the response really ends, not when the handler returns.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tracing::{Instrument as _, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{GRPC_SERVER_HANDLED_TOTAL, GRPC_SERVER_HANDLING_SECONDS};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Label used for services and methods the server does not know, so that a client
/// probing random paths cannot blow up metric cardinality.
const UNKNOWN_LABEL: &str = "unknown";

/// Adds tracing, metrics and the message size limit to every call. See the module docs.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    known_services: Arc<HashSet<String>>,
    max_message_bytes: usize,
    request_timeout: Duration,
}

impl RpcLayer {
    /// `known_services`: full service names (e.g. `kit.echo.v1.EchoService`) used as metric
    /// labels; other paths are labelled `unknown`. Calls running longer than
    /// `request_timeout` are cut off with `DEADLINE_EXCEEDED`.
    pub fn new(
        known_services: impl IntoIterator<Item = String>,
        max_message_bytes: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            known_services: Arc::new(known_services.into_iter().collect()),
            max_message_bytes,
            request_timeout,
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`RpcLayer`].
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for RpcService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
{
    type Response = http::Response<ObservedBody<tonic::body::Body>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let start = Instant::now();
        let (service, method) = split_path(request.uri().path());
        let known = self.layer.known_services.contains(service);
        let (service, method) = if known {
            (service.to_string(), method.to_string())
        } else {
            (UNKNOWN_LABEL.to_string(), UNKNOWN_LABEL.to_string())
        };

        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // An invalid or absent traceparent leaves the span as a new root: fine either way.
        let _ = span.set_parent(crate::telemetry::extract_trace_context(request.headers()));

        // tonic itself enforces the client's grpc-timeout (answering CANCELLED, and
        // dropping our future); the server's own limit is enforced here so that the client
        // gets the correct DEADLINE_EXCEEDED.
        let server_deadline = start + self.layer.request_timeout;
        let client_deadline = client_timeout(request.headers()).map(|t| start + t);
        let deadline = client_deadline.map_or(server_deadline, |d| server_deadline.min(d));
        let max = self.layer.max_message_bytes;
        let request = request.map(|body| {
            tonic::body::Body::new(LimitedBody::new(
                body,
                max,
                client_deadline,
                self.layer.request_timeout,
            ))
        });

        let record = CallRecord {
            service,
            method,
            start,
            deadline,
            span: span.clone(),
            done: false,
        };
        RpcFuture {
            inner: self.inner.call(request).instrument(span),
            timeout: tokio::time::sleep_until(server_deadline.into()),
            request_timeout: self.layer.request_timeout,
            record: Some(record),
        }
    }
}

pin_project! {
    /// Response future of [`RpcService`].
    #[derive(Debug)]
    pub struct RpcFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        #[pin]
        timeout: tokio::time::Sleep,
        request_timeout: Duration,
        record: Option<CallRecord>,
    }
}

impl<F, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = Result<http::Response<ObservedBody<tonic::body::Body>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                ready!(this.timeout.poll(cx));
                let status = tonic::Status::deadline_exceeded(format!(
                    "the server's request timeout of {} ms expired",
                    this.request_timeout.as_millis()
                ));
                Ok(status.into_http())
            }
        };
        let mut record = this.record.take();
        Poll::Ready(match result {
            Ok(response) => {
                // Trailers-only response: the status is already in the headers.
                if let Some(code) = grpc_status(response.headers())
                    && let Some(record) = record.take()
                {
                    record.finish(code);
                }
                Ok(response.map(|inner| ObservedBody { inner, record }))
            }
            Err(error) => {
                if let Some(record) = record {
                    record.finish(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

pin_project! {
    /// Response body that records the call when its trailers (or its end) arrive.
    #[derive(Debug)]
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(record) = this.record.take()
                {
                    record.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => {
                if let Some(record) = this.record.take() {
                    record.finish(Code::Internal);
                }
            }
            None => {
                // A gRPC response always ends with a status; without one the client sees
                // UNKNOWN (or, for an empty trailers-only body, the headers already had it).
                if let Some(record) = this.record.take() {
                    record.finish(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call's metric and span state; records exactly once, on `finish` or on drop (a call
/// dropped before its end was cancelled by the client or cut off by the deadline).
#[derive(Debug)]
struct CallRecord {
    service: String,
    method: String,
    start: Instant,
    deadline: Instant,
    span: tracing::Span,
    done: bool,
}

/// tonic's client-deadline timer starts a moment before this layer sees the request, so a
/// call it cuts off is dropped slightly before our computed deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

impl CallRecord {
    fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        self.done = true;
        let elapsed = self.start.elapsed().as_secs_f64();
        // An unimplemented method name is client-chosen: keep it out of the labels.
        let method = if code == Code::Unimplemented {
            UNKNOWN_LABEL.to_string()
        } else {
            self.method.clone()
        };
        let code_name = code_name(code);
        let labels = [
            ("grpc_service", self.service.clone()),
            ("grpc_method", method),
            ("grpc_code", code_name.to_string()),
        ];
        metrics::counter!(GRPC_SERVER_HANDLED_TOTAL, &labels).increment(1);
        metrics::histogram!(GRPC_SERVER_HANDLING_SECONDS, &labels).record(elapsed);

        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.done {
            let code = if Instant::now() + DEADLINE_SLACK >= self.deadline {
                Code::DeadlineExceeded
            } else {
                Code::Cancelled
            };
            self.record(code);
        }
    }
}

pin_project! {
    /// Request body that fails as soon as a gRPC message header announces more than `max`
    /// bytes, before the message is buffered, and that fails with DEADLINE_EXCEEDED when
    /// the client has sent nothing for the server's request timeout, or at the client's
    /// own deadline: the response future's timeout ends once a streaming handler has
    /// answered, so without this a client that opens a stream and goes silent would hold
    /// the call for ever. The server's limit is an idle limit on request streams, not a
    /// total one, so that a long backfill over one busy stream is never cut off.
    struct LimitedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: tokio::time::Sleep,
        client_deadline: Option<Instant>,
        request_timeout: Duration,
        max: usize,
        header: [u8; 5],
        header_len: usize,
        remaining: usize,
    }
}

impl<B> LimitedBody<B> {
    fn new(
        inner: B,
        max: usize,
        client_deadline: Option<Instant>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep_until(
                next_idle_deadline(request_timeout, client_deadline).into(),
            ),
            client_deadline,
            request_timeout,
            max,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
        }
    }
}

/// Walks the gRPC length-prefixed framing (1 flag byte, 4 length bytes, message) across
/// arbitrary chunk boundaries.
fn scan(
    mut data: &[u8],
    max: usize,
    header: &mut [u8; 5],
    header_len: &mut usize,
    remaining: &mut usize,
) -> Result<(), tonic::Status> {
    while !data.is_empty() {
        if *remaining > 0 {
            let n = (*remaining).min(data.len());
            *remaining -= n;
            data = &data[n..];
            continue;
        }
        let n = (5 - *header_len).min(data.len());
        header[*header_len..*header_len + n].copy_from_slice(&data[..n]);
        *header_len += n;
        data = &data[n..];
        if *header_len == 5 {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len > max {
                return Err(tonic::Status::resource_exhausted(format!(
                    "request message of {len} bytes is larger than the limit of {max} bytes"
                )));
            }
            *remaining = len;
            *header_len = 0;
        }
    }
    Ok(())
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = hyper::body::Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = hyper::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = match this.inner.poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                ready!(this.deadline.poll(cx));
                return Poll::Ready(Some(Err(Box::new(tonic::Status::deadline_exceeded(
                    format!(
                        "the request stream sent nothing for the server's request timeout of \
                         {} ms, or reached the client's deadline",
                        this.request_timeout.as_millis()
                    ),
                )))));
            }
        };
        match polled {
            Some(Ok(frame)) => {
                this.deadline
                    .reset(next_idle_deadline(*this.request_timeout, *this.client_deadline).into());
                if let Some(data) = frame.data_ref()
                    && let Err(status) = scan(
                        data,
                        *this.max,
                        this.header,
                        this.header_len,
                        this.remaining,
                    )
                {
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// When a request stream that stays silent from now on is cut off.
fn next_idle_deadline(idle: Duration, client_deadline: Option<Instant>) -> Instant {
    let idle_deadline = Instant::now() + idle;
    client_deadline.map_or(idle_deadline, |d| d.min(idle_deadline))
}

/// The client's `grpc-timeout` header (e.g. `100m`, `5S`).
fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Codes that mean the server failed, as opposed to the client asking for something wrong
/// (OpenTelemetry's rule for gRPC server spans).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The canonical upper-case name of a status code, as used in metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_header_split_across_chunks_is_still_checked_against_the_limit() {
        let (mut header, mut header_len, mut remaining) = ([0; 5], 0, 0);
        // 0 flag, length 100 (> 10), split after two bytes.
        assert!(scan(&[0, 0], 10, &mut header, &mut header_len, &mut remaining).is_ok());
        let error = scan(
            &[0, 0, 100],
            10,
            &mut header,
            &mut header_len,
            &mut remaining,
        )
        .expect_err("100 bytes exceed the limit of 10");
        assert_eq!(error.code(), Code::ResourceExhausted);
    }

    #[test]
    fn messages_within_the_limit_pass_one_after_another() {
        let (mut header, mut header_len, mut remaining) = ([0; 5], 0, 0);
        let mut stream = vec![0, 0, 0, 0, 3, b'a', b'b', b'c'];
        stream.extend_from_slice(&[0, 0, 0, 0, 10]);
        stream.extend_from_slice(&[7; 10]);
        for chunk in stream.chunks(3) {
            scan(chunk, 10, &mut header, &mut header_len, &mut remaining).expect("within limit");
        }
        assert_eq!((header_len, remaining), (0, 0));
    }

    #[test]
    fn grpc_timeout_headers_parse_in_every_unit() {
        let mut headers = http::HeaderMap::new();
        for (value, expected) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("4S", Duration::from_secs(4)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            headers.insert("grpc-timeout", value.parse().expect("header value"));
            assert_eq!(client_timeout(&headers), Some(expected), "{value}");
        }
        headers.insert("grpc-timeout", "12x".parse().expect("header value"));
        assert_eq!(client_timeout(&headers), None);
    }
}
