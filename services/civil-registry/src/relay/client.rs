//! The tonic adapter of the population-registry port: mTLS channel from the service kit,
//! W3C trace context on every call, a deadline on every call. First issues go out through
//! `BatchIssuePersonalIds` when more than one is waiting (one stream per batch).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use contracts::mps::population::v1 as pop;
use pop::population_registry_service_client::PopulationRegistryServiceClient;
use prost::Message;
use service_kit::telemetry::TraceContextInterceptor;
use tonic::Code;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::config::PopulationRegistryConfig;
use crate::domain::population::{
    Outbound, OutboundKind, Outcome, PopulationRegistry, RemoteIssuance,
};

type Client = PopulationRegistryServiceClient<InterceptedService<Channel, TraceContextInterceptor>>;

/// The population registry over gRPC.
#[derive(Clone, Debug)]
pub struct GrpcPopulationRegistry {
    /// One client per connection, taken in turn: behind a Kubernetes Service each
    /// connection lands on a replica of its own, so the calls spread over several.
    clients: Arc<[Client]>,
    turn: Arc<AtomicUsize>,
    health: HealthClient<Channel>,
    call_timeout: Duration,
}

impl GrpcPopulationRegistry {
    /// A lazily connecting client.
    pub fn new(cfg: &PopulationRegistryConfig) -> anyhow::Result<Self> {
        let channels = (0..cfg.connections.max(1))
            .map(|_| {
                service_kit::tls::client_channel(
                    &cfg.uri,
                    &cfg.tls,
                    Duration::from_millis(cfg.connect_timeout_ms),
                )
            })
            .collect::<anyhow::Result<Vec<Channel>>>()
            .map_err(|e| service_kit::ConfigError::new("population_registry", format!("{e:#}")))?;
        let health = HealthClient::new(channels[0].clone());
        let clients = channels
            .into_iter()
            .map(|channel| {
                PopulationRegistryServiceClient::with_interceptor(channel, TraceContextInterceptor)
                    .max_decoding_message_size(64 * 1024 * 1024)
            })
            .collect();
        Ok(Self {
            clients,
            turn: Arc::default(),
            health,
            call_timeout: Duration::from_millis(cfg.call_timeout_ms),
        })
    }

    /// The client of the next connection in turn.
    fn client(&self) -> Client {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        self.clients[turn % self.clients.len()].clone()
    }

    /// Opens the connection (TCP, mTLS handshake, HTTP/2) at start with a health check, so
    /// that a wrong address or certificate shows in the log when the service starts rather
    /// than as the first registrations' PENDING answers (the health service is outside the
    /// allow-lists, which only a minting call checks). Any answer, even UNIMPLEMENTED,
    /// proves the connection; a failure changes nothing, the channel connects again on
    /// first use.
    pub async fn warm_up(&self) {
        let mut health = self.health.clone();
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(self.call_timeout, check).await {
            Ok(Err(status))
                if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) =>
            {
                tracing::warn!(
                    code = ?status.code(),
                    cause = %cause_of(&status),
                    "population registry not reachable at start; numbers wait in the outbox until it is"
                );
            }
            Ok(Err(status)) => tracing::warn!(
                code = ?status.code(),
                cause = %cause_of(&status),
                "population registry answered its health check with an error at start"
            ),
            Ok(Ok(_)) => tracing::info!("population registry connected"),
            Err(_) => tracing::warn!(
                "population registry did not answer at start; numbers wait in the outbox until it does"
            ),
        }
    }

    fn no_answer_in_time(&self) -> Outcome {
        Outcome::Retry {
            code: "DEADLINE_EXCEEDED".into(),
            cause: format!(
                "no answer within population_registry.call_timeout_ms ({} ms)",
                self.call_timeout.as_millis()
            ),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        request
    }

    async fn issue_one(&self, item: &Outbound) -> Outcome {
        let Ok(message) = pop::IssuePersonalIdRequest::decode(item.payload.as_slice()) else {
            return corrupt();
        };
        let mut client = self.client();
        match tokio::time::timeout(
            self.call_timeout,
            client.issue_personal_id(self.request(message)),
        )
        .await
        {
            Ok(Ok(response)) => Outcome::Issued {
                personal_id: response.into_inner().personal_id,
            },
            Ok(Err(status)) => classify(&status),
            Err(_) => self.no_answer_in_time(),
        }
    }

    async fn reissue_one(&self, item: &Outbound) -> Outcome {
        let Ok(message) = pop::ReissuePersonalIdRequest::decode(item.payload.as_slice()) else {
            return corrupt();
        };
        let mut client = self.client();
        match tokio::time::timeout(
            self.call_timeout,
            client.reissue_personal_id(self.request(message)),
        )
        .await
        {
            Ok(Ok(response)) => Outcome::Issued {
                personal_id: response.into_inner().personal_id,
            },
            Ok(Err(status)) => classify(&status),
            Err(_) => self.no_answer_in_time(),
        }
    }

    async fn issue_batch(&self, items: &[&Outbound]) -> Vec<Outcome> {
        let mut messages = Vec::with_capacity(items.len());
        for item in items {
            match pop::IssuePersonalIdRequest::decode(item.payload.as_slice()) {
                Ok(m) => messages.push(m),
                Err(_) => return items.iter().map(|_| corrupt()).collect(),
            }
        }
        let outbound = tokio_stream::iter([pop::BatchIssuePersonalIdsRequest { items: messages }]);
        let mut client = self.client();
        let call = async {
            let mut stream = client
                .batch_issue_personal_ids(self.request(outbound))
                .await?
                .into_inner();
            stream.message().await
        };
        let response = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => {
                return retry_all(items.len(), "UNKNOWN", "the answer stream ended empty");
            }
            Ok(Err(status)) => {
                let outcome = classify(&status);
                return items.iter().map(|_| outcome.clone()).collect();
            }
            Err(_) => return items.iter().map(|_| self.no_answer_in_time()).collect(),
        };
        let mut by_key = std::collections::HashMap::new();
        for result in response.results {
            let outcome = match result.outcome {
                Some(pop::batch_issue_result::Outcome::Issued(issued)) => Outcome::Issued {
                    personal_id: issued.personal_id,
                },
                Some(pop::batch_issue_result::Outcome::Error(status)) => {
                    let code = Code::from(status.code);
                    let message = status.message.clone();
                    classify(&tonic::Status::with_details(
                        code,
                        message,
                        status.encode_to_vec().into(),
                    ))
                }
                None => retry("UNKNOWN", "an answer with neither number nor error"),
            };
            by_key.insert(result.request_id, outcome);
        }
        items
            .iter()
            .map(|item| {
                by_key
                    .remove(&item.key)
                    .unwrap_or_else(|| retry("UNKNOWN", "the batch's answer left it out"))
            })
            .collect()
    }
}

fn corrupt() -> Outcome {
    Outcome::Rejected {
        code: "INTERNAL".into(),
        reason: "INTERNAL: stored request could not be decoded".into(),
    }
}

fn retry(code: &str, cause: &str) -> Outcome {
    Outcome::Retry {
        code: code.into(),
        cause: cause.into(),
    }
}

fn retry_all(n: usize, code: &str, cause: &str) -> Vec<Outcome> {
    (0..n).map(|_| retry(code, cause)).collect()
}

/// The status's message and the errors beneath it (a TLS refusal sits below "transport
/// error"), cut to a length fit for a log line and the outbox row.
fn cause_of(status: &tonic::Status) -> String {
    const MOST_CHARS: usize = 300;
    let mut cause = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if !cause.contains(&text) {
            if !cause.is_empty() {
                cause.push_str(": ");
            }
            cause.push_str(&text);
        }
        source = error.source();
    }
    match cause.char_indices().nth(MOST_CHARS) {
        Some((cut, _)) => cause[..cut].to_owned(),
        None => cause,
    }
}

fn code_name(code: Code) -> String {
    format!("{code:?}").chars().fold(String::new(), |mut s, c| {
        if c.is_uppercase() && !s.is_empty() {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
        s
    })
}

/// ErrorInfo domain of the population registry's reasons.
const POPULATION_DOMAIN: &str = "population.mps.gov.vn";

/// Refusals of the record itself (malformed, its key reused with other content, nothing to
/// re-issue, its bucket full, no citizen holding the number to re-issue) end the row as
/// REJECTED, for an official or an operator to resolve.
/// Everything else is retried with backoff, the circuit breaker and the outbox-age alert
/// taking over: a refusal of this caller or route (PERMISSION_DENIED from an allow-list
/// missing the service's new certificate, UNIMPLEMENTED or NOT_FOUND from a misrouted
/// proxy) says nothing about the registration, and no correction by an official could
/// lift it.
pub fn classify(status: &tonic::Status) -> Outcome {
    let code = code_name(status.code());
    let info = status.get_details_error_info();
    let reason = info.as_ref().map(|info| info.reason.clone());
    let registry_says = |wanted: &str| {
        info.as_ref()
            .is_some_and(|info| info.domain == POPULATION_DOMAIN && info.reason == wanted)
    };
    let permanent = match status.code() {
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange => true,
        Code::ResourceExhausted => registry_says("BUCKET_EXHAUSTED"),
        // The registry itself holds no citizen with the number to re-issue: asking again
        // will not change that. A NOT_FOUND without its ErrorInfo is a misrouted call.
        Code::NotFound => registry_says("CITIZEN_NOT_FOUND"),
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::PermissionDenied
        | Code::Unimplemented
        | Code::Aborted
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => false,
    };
    if permanent {
        let mut text = code.clone();
        if let Some(reason) = reason {
            text = format!("{text} {reason}");
        }
        if !status.message().is_empty() {
            text = format!("{text}: {}", status.message());
        }
        for violation in status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default()
        {
            text = format!("{text}; {}: {}", violation.field, violation.description);
        }
        Outcome::Rejected { code, reason: text }
    } else {
        Outcome::Retry {
            code,
            cause: cause_of(status),
        }
    }
}

fn issuance(personal_id: String, request_id: String, status: i32) -> RemoteIssuance {
    RemoteIssuance {
        personal_id,
        request_id,
        active: status == pop::CitizenStatus::Active as i32,
    }
}

impl PopulationRegistry for GrpcPopulationRegistry {
    async fn send(&self, items: &[Outbound]) -> Vec<Outcome> {
        let issues: Vec<&Outbound> = items
            .iter()
            .filter(|i| i.kind == OutboundKind::Issue)
            .collect();
        let mut issued = if issues.len() > 1 {
            self.issue_batch(&issues).await
        } else if let Some(one) = issues.first() {
            vec![self.issue_one(one).await]
        } else {
            Vec::new()
        }
        .into_iter();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.kind {
                OutboundKind::Issue => out.push(
                    issued
                        .next()
                        .unwrap_or_else(|| retry("UNKNOWN", "no answer for this request")),
                ),
                OutboundKind::Reissue => out.push(self.reissue_one(item).await),
            }
        }
        out
    }

    async fn list_issuances(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> anyhow::Result<Vec<RemoteIssuance>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let mut client = self.client();
            let response = client
                .list_issuances(self.request(pop::ListIssuancesRequest {
                    registered_from: Some(super::encode::date(from)),
                    registered_to: Some(super::encode::date(to)),
                    page_size: 1000,
                    page_token: page_token.clone(),
                }))
                .await
                .context("ListIssuances")?
                .into_inner();
            out.extend(
                response
                    .issuances
                    .into_iter()
                    .map(|i| issuance(i.personal_id, i.request_id, i.status)),
            );
            if response.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = response.next_page_token;
        }
    }

    async fn find_by_registration(
        &self,
        registration_id: &str,
    ) -> anyhow::Result<Vec<RemoteIssuance>> {
        let mut client = self.client();
        let result = client
            .find_citizen_by_registration(self.request(pop::FindCitizenByRegistrationRequest {
                request_id: registration_id.to_owned(),
                ..Default::default()
            }))
            .await;
        match result {
            Ok(response) => Ok(response
                .into_inner()
                .citizens
                .into_iter()
                .map(|c| issuance(c.personal_id, c.request_id, c.status))
                .collect()),
            Err(status) if status.code() == Code::NotFound => Ok(Vec::new()),
            Err(status) => Err(anyhow::anyhow!(
                "FindCitizenByRegistration: {}",
                code_name(status.code())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(code: Code, reason: &str) -> tonic::Status {
        service_kit::status::with_reason(code, "refused", POPULATION_DOMAIN, reason)
    }

    #[test]
    fn only_refusals_of_the_record_itself_reject_it() {
        for status in [
            service_kit::status::invalid_argument(vec![(
                "birth.full_name".into(),
                "must not be empty".into(),
            )]),
            with_reason(Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED"),
            with_reason(Code::FailedPrecondition, "NOTHING_TO_REISSUE"),
            with_reason(Code::ResourceExhausted, "BUCKET_EXHAUSTED"),
            with_reason(Code::NotFound, "CITIZEN_NOT_FOUND"),
        ] {
            assert!(
                matches!(classify(&status), Outcome::Rejected { .. }),
                "{status:?}"
            );
        }
        for status in [
            with_reason(Code::PermissionDenied, "CALLER_NOT_ALLOWED"),
            with_reason(Code::Unauthenticated, "CLIENT_CERTIFICATE_MISSING"),
            tonic::Status::unimplemented("no such route"),
            tonic::Status::not_found("no such route"),
            tonic::Status::resource_exhausted("too many streams"),
            service_kit::status::with_reason(
                Code::NotFound,
                "no such citizen",
                "proxy.example",
                "CITIZEN_NOT_FOUND",
            ),
            tonic::Status::unavailable("draining"),
        ] {
            assert!(
                matches!(classify(&status), Outcome::Retry { .. }),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_retry_keeps_the_cause_beneath_the_status_cut_to_a_log_lines_length() {
        let tls = std::io::Error::other("invalid peer certificate: Expired");
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(std::sync::Arc::new(tls));
        let Outcome::Retry { code, cause } = classify(&status) else {
            panic!("not retried");
        };
        assert_eq!(code, "UNAVAILABLE");
        assert_eq!(cause, "transport error: invalid peer certificate: Expired");

        let long = tonic::Status::unavailable("é".repeat(1_000));
        let Outcome::Retry { cause, .. } = classify(&long) else {
            panic!("not retried");
        };
        assert_eq!(cause.chars().count(), 300);
    }

    #[test]
    fn a_rejection_names_the_refused_field_for_the_official() {
        let status = service_kit::status::invalid_argument(vec![(
            "birth.full_name".into(),
            "must not be empty".into(),
        )]);
        let Outcome::Rejected { code, reason } = classify(&status) else {
            panic!("not rejected");
        };
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(
            reason.contains("birth.full_name: must not be empty"),
            "{reason}"
        );
    }
}
