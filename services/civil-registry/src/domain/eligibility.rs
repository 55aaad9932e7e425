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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::*;

    fn record(kind: RegistrationKind, sex: Sex, dob: NaiveDate, nationality: &str) -> BirthRecord {
        sample_record(kind, sex, dob, nationality)
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_first_time_vietnamese_child_of_determined_sex_under_14_is_eligible() {
        let decision = decide(
            &record(
                RegistrationKind::FirstTime,
                Sex::Female,
                d(2020, 1, 1),
                "VN",
            ),
            d(2020, 2, 1),
        );
        assert!(decision.is_eligible());
        assert_eq!(decision.rule_version, RULE_VERSION);
    }

    #[test]
    fn every_failing_condition_is_reported_not_only_the_first() {
        let decision = decide(
            &record(
                RegistrationKind::ReRegistration,
                Sex::Undetermined,
                d(1990, 1, 1),
                "FR",
            ),
            d(2015, 6, 1),
        );
        assert_eq!(
            decision.reasons,
            vec![
                IneligibilityReason::ForeignNationality,
                IneligibilityReason::ReRegistration,
                IneligibilityReason::SexUndetermined,
                IneligibilityReason::Age14OrOver,
                IneligibilityReason::BeforeProgramStart,
            ]
        );
    }

    #[test]
    fn the_programme_starts_on_1_january_2016_inclusive() {
        let r = record(
            RegistrationKind::FirstTime,
            Sex::Male,
            d(2015, 12, 20),
            "VN",
        );
        assert!(decide(&r, d(2016, 1, 1)).is_eligible());
        assert_eq!(
            decide(&r, d(2015, 12, 31)).reasons,
            vec![IneligibilityReason::BeforeProgramStart]
        );
    }

    #[test]
    fn a_child_born_on_29_february_turns_14_on_28_february() {
        let r = record(RegistrationKind::FirstTime, Sex::Male, d(2016, 2, 29), "VN");
        assert!(decide(&r, d(2030, 2, 27)).is_eligible());
        assert_eq!(
            decide(&r, d(2030, 2, 28)).reasons,
            vec![IneligibilityReason::Age14OrOver]
        );
    }

    #[test]
    fn stored_reason_masks_keep_their_bits() {
        // Rows written by every earlier release hold these masks.
        use IneligibilityReason::*;
        let reasons = vec![ForeignNationality, Age14OrOver];
        assert_eq!(IneligibilityReason::mask(&reasons), 9);
        assert_eq!(IneligibilityReason::from_mask(9), reasons);
        assert_eq!(
            IneligibilityReason::from_mask(31),
            vec![
                ForeignNationality,
                ReRegistration,
                SexUndetermined,
                Age14OrOver,
                BeforeProgramStart
            ]
        );
        assert_eq!(IneligibilityReason::from_mask(2), vec![ReRegistration]);
        assert_eq!(IneligibilityReason::from_mask(4), vec![SexUndetermined]);
        assert_eq!(IneligibilityReason::from_mask(16), vec![BeforeProgramStart]);
    }
}
