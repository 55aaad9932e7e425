//! The Ministry of Public Security's population registry: mints each eligible
//! child's 12-digit personal identification number exactly once, keeps the
//! citizen record and a hash-chained audit log, and serves
//! `mps.population.v1.PopulationRegistryService`.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod store;
