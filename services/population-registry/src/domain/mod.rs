//! The registry's rules, free of transport and storage: the number, the
//! province table, the birth record, the minting draw, and the outcomes and
//! errors of each operation.

pub mod birth;
pub mod citizen;
pub mod errors;
pub mod minting;
pub mod personal_id;
pub mod province;
