//! Pure decisions of the use cases that are more than a policy check: what a correction
//! does to the registration and to its number.

use chrono::Datelike;

use super::eligibility::{Decision, decide};
use super::error::RegistryError;
use super::model::{BirthRecord, Correction, PersonalIdStatus, Registration, Sex, Unit};
use super::numbering::PostMergerRule;

/// What a correction asks of the population registry.
#[derive(Clone, PartialEq, Eq)]
pub enum CorrectionAction {
    /// Nothing: the number (if any) stays.
    None,
    /// A first issue under a new key (after a refusal, or a record that became eligible).
    Issue {
        /// Idempotency key.
        key: String,
    },
    /// Cancel the number and issue a new one.
    Reissue {
        /// Idempotency key of the re-issue.
        key: String,
        /// The active number to cancel.
        old_personal_id: String,
    },
}

/// Without the number to cancel.
impl std::fmt::Debug for CorrectionAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Issue { key } => f.debug_struct("Issue").field("key", key).finish(),
            Self::Reissue { key, .. } => f
                .debug_struct("Reissue")
                .field("key", key)
                .finish_non_exhaustive(),
        }
    }
}

/// The corrected registration and what to ask for.
#[derive(Clone, Debug)]
pub struct CorrectionPlan {
    /// The corrected record.
    pub record: BirthRecord,
    /// New status.
    pub status: PersonalIdStatus,
    /// Eligibility of the corrected record.
    pub decision: Decision,
    /// Request to queue.
    pub action: CorrectionAction,
}

/// Whether a REJECTED registration may be sent again without a change: only a first issue,
/// and only when the record was refused as invalid (`INVALID_ARGUMENT`, the code the relay's refusal text
/// starts with), which can come from the other side's state (its clock, its province
/// table) and be lifted there. A key reused with other content, nothing to re-issue or a
/// full bucket would be refused again, or worse, mint beside a number already held: those
/// go to an operator (`reconcile`).
fn may_be_sent_again_unchanged(registration: &Registration) -> bool {
    registration.status == PersonalIdStatus::Rejected
        // A refused re-issue carries its correction's reason, which a second attempt under
        // the same key would have to repeat word for word: that one goes to an operator.
        && registration.personal_id.is_none()
        && registration
            .rejection_reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with("INVALID_ARGUMENT"))
}

/// Whether a refused re-issue was refused for what it asked (invalid content, its bucket
/// full, nothing to re-issue), so that the number it meant to replace is still active.
/// Not when the registry holds no such citizen or the number is already cancelled.
fn refused_for_its_content(registration: &Registration) -> bool {
    registration
        .rejection_reason
        .as_deref()
        .is_some_and(|reason| {
            [
                "INVALID_ARGUMENT",
                "RESOURCE_EXHAUSTED BUCKET_EXHAUSTED",
                "FAILED_PRECONDITION NOTHING_TO_REISSUE",
            ]
            .iter()
            .any(|prefix| reason.starts_with(prefix))
        })
}

/// Whether `number`'s first six digits encode this province, sex and year of birth
/// (personal-id.md: the century and sex digit is 0/1 for a man/woman born 1900–1999, 2/3
/// for 2000–2099, and so on to 8/9 for 2300–2399).
fn encodes(number: &str, province_code: &str, sex: Sex, year: i32) -> bool {
    let woman = match sex {
        Sex::Male => 0,
        Sex::Female => 1,
        Sex::Undetermined => return false,
    };
    let century = year.div_euclid(100) - 19;
    (0..=4).contains(&century)
        && number.len() == 12
        && number.starts_with(&format!(
            "{province_code}{}{:02}",
            century * 2 + woman,
            year.rem_euclid(100)
        ))
}

/// Plans a correction of `registration` (currently in `current_unit`). `generation` counts
/// the keys minted for the registration so far (the first key is the registration id);
/// `last_key` is the key it was last sent under, if any.
pub fn plan_correction(
    registration: &Registration,
    current_unit: &Unit,
    correction: &Correction,
    new_unit: Option<&Unit>,
    generation: i64,
    last_key: Option<&str>,
    numbering: PostMergerRule,
) -> Result<CorrectionPlan, RegistryError> {
    if registration.status == PersonalIdStatus::Pending {
        // The stored request must go out unchanged until answered; a correction now would
        // race it. The official corrects once the number (or a refusal) has arrived.
        return Err(RegistryError::NotCorrectable(
            "a number is being obtained for this registration".into(),
        ));
    }
    if correction.child.date_of_birth.date() > registration.registered_on {
        return Err(RegistryError::invalid(
            "child.date_of_birth",
            "must not be after the registration date",
        ));
    }
    let mut record = registration.record.clone();
    record.child = correction.child.clone();
    record.father = correction.father.clone();
    record.mother = correction.mother.clone();
    let target = new_unit.unwrap_or(current_unit);
    let unchanged = record == registration.record && target.code == current_unit.code;
    if unchanged && !may_be_sent_again_unchanged(registration) {
        return Err(RegistryError::NothingToCorrect);
    }
    let decision = decide(&record, registration.registered_on);
    let next_key = |prefix: char| format!("{}:{}{}", registration.id, prefix, generation + 1);
    let (status, action) = match (registration.status, registration.personal_id.clone()) {
        (PersonalIdStatus::Issued, Some(old)) | (PersonalIdStatus::Rejected, Some(old)) => {
            if !decision.is_eligible() {
                return Err(RegistryError::NotCorrectable(
                    "the correction would make a numbered registration ineligible".into(),
                ));
            }
            let before = &registration.record.child;
            let year = record.child.date_of_birth.date().year();
            let on = registration.registered_on;
            let province = numbering.number_province(&target.province_code, on);
            let encoded_changed = before.sex != record.child.sex
                || before.date_of_birth.date().year() != year
                || province != numbering.number_province(&current_unit.province_code, on);
            // A re-issue was refused for its new content, and the correction takes the
            // record back to what the number it kept encodes: that number stands, and
            // asking to re-issue it for the same encoding would only be refused as
            // NOTHING_TO_REISSUE.
            let number_fits_again = registration.status == PersonalIdStatus::Rejected
                && refused_for_its_content(registration)
                && encodes(&old, province.as_str(), record.child.sex, year);
            if number_fits_again {
                (PersonalIdStatus::Issued, CorrectionAction::None)
            } else if encoded_changed || registration.status == PersonalIdStatus::Rejected {
                (
                    PersonalIdStatus::Pending,
                    CorrectionAction::Reissue {
                        key: next_key('r'),
                        old_personal_id: old,
                    },
                )
            } else {
                (PersonalIdStatus::Issued, CorrectionAction::None)
            }
        }
        _ if decision.is_eligible() => {
            let key = match last_key {
                // Sent again under the key it was refused under: should the population
                // registry have minted under it after all (its answer lost, a retry then
                // refused), that number comes back instead of a second one.
                Some(last) if unchanged => last.to_owned(),
                // Never sent: the first key is the registration id.
                None => registration.id.to_string(),
                // Sent before with other content: a key of its own.
                Some(_) => next_key('i'),
            };
            (PersonalIdStatus::Pending, CorrectionAction::Issue { key })
        }
        _ => (PersonalIdStatus::NotEligible, CorrectionAction::None),
    };
    Ok(CorrectionPlan {
        record,
        status,
        decision,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_encodes_its_province_century_sex_and_year() {
        assert!(encodes("001216000001", "001", Sex::Male, 2016));
        assert!(encodes("079316000001", "079", Sex::Female, 2016));
        assert!(encodes("001095000001", "001", Sex::Male, 1995));
        assert!(encodes("001199000001", "001", Sex::Female, 1999));
        assert!(!encodes("001216000001", "001", Sex::Female, 2016));
        assert!(!encodes("001216000001", "001", Sex::Male, 2017));
        assert!(!encodes("001216000001", "079", Sex::Male, 2016));
        assert!(!encodes("001216000001", "001", Sex::Male, 1916));
        assert!(!encodes("001216000001", "001", Sex::Undetermined, 2016));
        assert!(!encodes("00121600000", "001", Sex::Male, 2016));
    }
}
