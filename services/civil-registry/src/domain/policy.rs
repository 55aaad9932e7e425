//! Who may do what: one explicit, pure decision per RPC. Jurisdiction is the unit tree: an
//! account reads everything registered by its own unit and the units below it.

use chrono::NaiveDate;

use super::error::Denied;
use super::model::{Caller, Role, Unit, UnitLevel};

/// From this date births with a foreign element are registered by communes (the 2025
/// two-level local government reform); before it, by district-level units.
pub fn foreign_element_commune_from() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 1).expect("valid date")
}

fn active(caller: &Caller) -> Result<(), Denied> {
    if caller.active && caller.unit.active {
        Ok(())
    } else {
        Err(Denied::AccountRevoked)
    }
}

/// Whether `unit` lies within the jurisdiction of the caller's unit.
pub fn within_jurisdiction(caller: &Caller, unit: &Unit) -> bool {
    unit.path.starts_with(&caller.unit.path)
}

/// RegisterBirth: a registrar, in the own unit (the unit comes from the token), at the level
/// that is competent for the birth on its registration date.
pub fn may_register(
    caller: &Caller,
    has_foreign_element: bool,
    registered_on: NaiveDate,
) -> Result<(), Denied> {
    active(caller)?;
    if caller.role != Role::Registrar {
        return Err(Denied::RoleNotAllowed);
    }
    let level = caller.unit.level;
    if has_foreign_element {
        let required = if registered_on < foreign_element_commune_from() {
            UnitLevel::District
        } else {
            UnitLevel::Commune
        };
        if level != required {
            return Err(Denied::ForeignElementLevel);
        }
    } else if level != UnitLevel::Commune {
        // Births without a foreign element are the commune's competence only.
        return Err(Denied::OutsideJurisdiction);
    }
    Ok(())
}

/// Reads (get, list, statistics): any active account, within its jurisdiction; the caller
/// checks each target unit with [`within_jurisdiction`].
pub fn may_read(caller: &Caller) -> Result<(), Denied> {
    active(caller)
}

/// CorrectBirthRegistration, before anything is looked up: an active registrar. Checked
/// first so that other accounts cannot learn which registrations and units exist.
pub fn may_correct_at_all(caller: &Caller) -> Result<(), Denied> {
    active(caller)?;
    if caller.role != Role::Registrar {
        return Err(Denied::RoleNotAllowed);
    }
    Ok(())
}

/// CorrectBirthRegistration: a registrar whose jurisdiction holds the registration's unit
/// (the own unit, or one below it: a district's registrar corrects its communes' entries)
/// and the new registering unit, if any, which must be active. Moving an entry to another
/// province, which re-issues its number, takes a registrar above both: at the ministry.
pub fn may_correct(
    caller: &Caller,
    registration_unit: &Unit,
    new_unit: Option<&Unit>,
) -> Result<(), Denied> {
    may_correct_at_all(caller)?;
    if !within_jurisdiction(caller, registration_unit) {
        return Err(Denied::OutsideJurisdiction);
    }
    if let Some(unit) = new_unit
        && (!within_jurisdiction(caller, unit) || !unit.active)
    {
        return Err(Denied::OutsideJurisdiction);
    }
    Ok(())
}
