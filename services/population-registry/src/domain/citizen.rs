//! What the registry stores and answers: citizens, issuance outcomes,
//! the state of a number, statistics and the queries that produce them.

use chrono::{DateTime, NaiveDate, Utc};

use super::birth::{
    BirthRecord, BookNumber, ContentHash, Reason, RegistrationRef, RequestId, UnitCode, Violation,
};
use super::personal_id::{PersonalId, ProvinceCode};

/// Whether a number is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CitizenStatus {
    /// Identifies the citizen.
    Active,
    /// Cancelled by a re-issue; never issued again.
    Cancelled,
}

/// A stored citizen record.
#[derive(Clone, Debug)]
pub struct Citizen {
    /// The number.
    pub personal_id: PersonalId,
    /// The record as issued.
    pub record: BirthRecord,
    /// Active or cancelled.
    pub status: CitizenStatus,
    /// When it was issued.
    pub issue_time: DateTime<Utc>,
    /// When it was cancelled.
    pub cancel_time: Option<DateTime<Utc>>,
    /// Its successor, once cancelled.
    pub replaced_by: Option<PersonalId>,
    /// Its predecessor, for a re-issue.
    pub replaces: Option<PersonalId>,
    /// The idempotency key it was issued under.
    pub request_id: RequestId,
}

/// A validated first issuance.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// Idempotency key.
    pub request_id: RequestId,
    /// The record.
    pub record: BirthRecord,
    /// Hash of the content, bound to the key.
    pub hash: ContentHash,
    /// Why the content may not be issued a new number, when only a province code's
    /// validity period refuses it: under a post-merger rule changed since, the key may
    /// have been served, and then its number is still the answer.
    pub refused_if_new: Option<Vec<Violation>>,
}

impl IssueRequest {
    /// Binds the record to its key.
    pub fn new(request_id: RequestId, record: BirthRecord) -> Self {
        let hash = ContentHash::of_issue(&record);
        Self {
            request_id,
            record,
            hash,
            refused_if_new: None,
        }
    }
}

/// The answer to an issuance.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The number.
    pub personal_id: PersonalId,
    /// False when the key had been served before.
    pub newly_issued: bool,
    /// When the number was first issued.
    pub issue_time: DateTime<Utc>,
    /// Active citizens with the same name, birth date, mother and place of birth.
    pub duplicate_suspects: Vec<PersonalId>,
}

/// A validated re-issue.
#[derive(Clone, Debug)]
pub struct ReissueRequest {
    /// Idempotency key.
    pub request_id: RequestId,
    /// The number to cancel.
    pub old: PersonalId,
    /// The corrected record.
    pub record: BirthRecord,
    /// Why (kept in the audit log).
    pub reason: Reason,
    /// Hash of the content, bound to the key.
    pub hash: ContentHash,
    /// As [`IssueRequest::refused_if_new`]: answered from its stored key, or refused.
    pub refused_if_new: Option<Vec<Violation>>,
}

impl ReissueRequest {
    /// Binds the correction to its key.
    pub fn new(
        request_id: RequestId,
        old: PersonalId,
        record: BirthRecord,
        reason: Reason,
    ) -> Self {
        let hash = ContentHash::of_reissue(old, &record, &reason);
        Self {
            request_id,
            old,
            record,
            reason,
            hash,
            refused_if_new: None,
        }
    }
}

/// The answer to a re-issue.
#[derive(Clone, Debug)]
pub struct Reissued {
    /// The new number.
    pub personal_id: PersonalId,
    /// The cancelled number.
    pub cancelled: PersonalId,
    /// False when the key had been served before.
    pub newly_issued: bool,
    /// When the new number was issued.
    pub issue_time: DateTime<Utc>,
}

/// What the registry knows of a well-formed number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdState {
    /// Never issued here.
    NotIssued,
    /// Issued and active.
    Active,
    /// Cancelled; its successor when known.
    Cancelled(Option<PersonalId>),
}

/// How to find the numbers of one registration.
#[derive(Clone, Debug)]
pub enum RegistrationQuery {
    /// By the first issue's idempotency key.
    RequestId(RequestId),
    /// By register entry.
    Entry {
        /// Unit.
        unit_code: UnitCode,
        /// Book.
        book_number: BookNumber,
        /// Entry number.
        registration_number: i64,
    },
}

/// An inclusive range of registration dates.
#[derive(Clone, Copy, Debug)]
pub struct DateRange {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
}

/// Counts for one province of registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvinceStats {
    /// Province.
    pub code: ProvinceCode,
    /// Numbers issued (active or since cancelled).
    pub issued: i64,
    /// Of those, cancelled.
    pub cancelled: i64,
}

/// One issued number without personal data beyond the register entry.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The number.
    pub personal_id: PersonalId,
    /// Its idempotency key.
    pub request_id: RequestId,
    /// The register entry.
    pub registration: RegistrationRef,
    /// Active or cancelled.
    pub status: CitizenStatus,
    /// Successor when cancelled.
    pub replaced_by: Option<PersonalId>,
    /// When it was issued.
    pub issue_time: DateTime<Utc>,
}

/// One page of issuances.
#[derive(Clone, Debug)]
pub struct IssuancePage {
    /// Ordered by number.
    pub issuances: Vec<Issuance>,
    /// The last number of this page when more follow.
    pub next_after: Option<PersonalId>,
}
