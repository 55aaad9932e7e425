//! The birth register's rules, free of transport and storage: validated values, the
//! eligibility rule, the access policy, the errors a caller can act on, and the port to the
//! population registry.

pub mod eligibility;
pub mod error;
pub mod model;
pub mod numbering;
pub mod policy;
pub mod population;
pub mod service;
