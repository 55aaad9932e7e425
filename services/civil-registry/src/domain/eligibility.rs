//! Who gets a number at birth registration: Official letter 4756/BTP-HTQTCT (2020), as a
//! pure function with a version. Every registration stores the version that decided, so a
//! later change of the rule is a new version, never a silent reinterpretation.

use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};

use super::model::{BirthRecord, RegistrationKind, Sex};

/// The version of [`decide`] in force.
pub const RULE_VERSION: &str = "4756/BTP-HTQTCT:2020.1";

/// Registrations before this date are outside the program.
pub fn program_start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2016, 1, 1).expect("valid date")
}

/// Why a registration gets no number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IneligibilityReason {
    /// The child does not take Vietnamese nationality.
    ForeignNationality,
    /// A re-registration.
    ReRegistration,
    /// Sex not determined.
    SexUndetermined,
    /// 14 or older on the registration date.
    Age14OrOver,
    /// Registered before 2016-01-01.
    BeforeProgramStart,
}

impl IneligibilityReason {
    /// Every reason, in contract order.
    pub const ALL: [Self; 5] = [
        Self::ForeignNationality,
        Self::ReRegistration,
        Self::SexUndetermined,
        Self::Age14OrOver,
        Self::BeforeProgramStart,
    ];

    /// Bit in the stored reason mask (stable: stored data depends on it).
    pub fn bit(self) -> i64 {
        match self {
            Self::ForeignNationality => 1,
            Self::ReRegistration => 2,
            Self::SexUndetermined => 4,
            Self::Age14OrOver => 8,
            Self::BeforeProgramStart => 16,
        }
    }

    /// Mask of a set of reasons.
    pub fn mask(reasons: &[Self]) -> i64 {
        reasons.iter().fold(0, |m, r| m | r.bit())
    }

    /// Reasons of a mask, in contract order.
    pub fn from_mask(mask: i64) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|r| mask & r.bit() != 0)
            .collect()
    }
}

/// The rule's decision: eligible when `reasons` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Every condition that fails (all of them, not only the first).
    pub reasons: Vec<IneligibilityReason>,
    /// [`RULE_VERSION`].
    pub rule_version: &'static str,
}

impl Decision {
    /// Whether a number is to be requested.
    pub fn is_eligible(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Decides eligibility for a birth registered on `registered_on`.
pub fn decide(record: &BirthRecord, registered_on: NaiveDate) -> Decision {
    let mut reasons = Vec::new();
    if record.kind == RegistrationKind::ReRegistration {
        reasons.push(IneligibilityReason::ReRegistration);
    }
    if !record.child.nationality.is_vietnamese() {
        reasons.push(IneligibilityReason::ForeignNationality);
    }
    if record.child.sex == Sex::Undetermined {
        reasons.push(IneligibilityReason::SexUndetermined);
    }
    // The 14th birthday of a child born on 29 February is taken as 28 February (chrono's
    // month arithmetic clamps), the earlier and therefore stricter reading.
    let dob = record.child.date_of_birth.date();
    let fourteenth = dob
        .checked_add_months(Months::new(14 * 12))
        .unwrap_or(NaiveDate::MAX);
    if registered_on >= fourteenth {
        reasons.push(IneligibilityReason::Age14OrOver);
    }
    if registered_on < program_start() {
        reasons.push(IneligibilityReason::BeforeProgramStart);
    }
    reasons.sort_by_key(|r| r.bit());
    Decision {
        reasons,
        rule_version: RULE_VERSION,
    }
}
