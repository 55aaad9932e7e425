//! The port to the population registry. The relay and reconciliation speak to it only
//! through this trait; the tonic adapter lives in `relay::client`, tests use a fake server.
//! Requests travel as the exact bytes stored in the outbox, so that every retry of a row
//! carries the same content.

use std::future::Future;

/// What an outbox row asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundKind {
    /// A first issue (`IssuePersonalId`).
    Issue,
    /// A re-issue after a correction (`ReissuePersonalId`).
    Reissue,
}

impl OutboundKind {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Reissue => "reissue",
        }
    }
    /// Inverse of [`Self::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "issue" => Some(Self::Issue),
            "reissue" => Some(Self::Reissue),
            _ => None,
        }
    }
}

/// One request as stored in the outbox.
#[derive(Clone)]
pub struct Outbound {
    /// The idempotency key sent (the registration id for a first issue).
    pub key: String,
    /// The registration it belongs to.
    pub registration_id: uuid::Uuid,
    /// Issue or re-issue.
    pub kind: OutboundKind,
    /// The encoded request message.
    pub payload: Vec<u8>,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// The answer for one request.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The number.
    Issued {
        /// The 12-digit number.
        personal_id: String,
    },
    /// Refused for good: the registration becomes REJECTED with this reason.
    Rejected {
        /// The gRPC code name (for metrics).
        code: String,
        /// Code, ErrorInfo reason and message, for the official.
        reason: String,
    },
    /// Worth another try later.
    Retry {
        /// The gRPC code name (for metrics).
        code: String,
        /// What the transport or the population registry said, for operators. Records are
        /// never echoed in these answers, so it holds no personal data.
        cause: String,
    },
}

/// One issuance as the population registry lists it, for reconciliation.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteIssuance {
    /// The number.
    pub personal_id: String,
    /// Key it was issued under.
    pub request_id: String,
    /// Whether it is still active.
    pub active: bool,
}

/// Without the payload, which holds the record.
impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("key", &self.key)
            .field("registration_id", &self.registration_id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Without the number, and without an official's reason (it may quote the record).
impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Issued { .. } => f.debug_struct("Issued").finish_non_exhaustive(),
            Self::Rejected { code, .. } => f
                .debug_struct("Rejected")
                .field("code", code)
                .finish_non_exhaustive(),
            Self::Retry { code, cause } => f
                .debug_struct("Retry")
                .field("code", code)
                .field("cause", cause)
                .finish(),
        }
    }
}

/// Without the number.
impl std::fmt::Debug for RemoteIssuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteIssuance")
            .field("request_id", &self.request_id)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The population registry as the civil registry needs it.
pub trait PopulationRegistry: Send + Sync + 'static {
    /// Sends the requests (issues batched, re-issues one by one); one outcome per request,
    /// in order. A transport failure answers `Retry` for every request.
    fn send(&self, items: &[Outbound]) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Every issuance for registrations dated within the range (inclusive).
    fn list_issuances(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> impl Future<Output = anyhow::Result<Vec<RemoteIssuance>>> + Send;

    /// Every number issued for a registration id (its first-issue key), oldest first.
    fn find_by_registration(
        &self,
        registration_id: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<RemoteIssuance>>> + Send;
}
