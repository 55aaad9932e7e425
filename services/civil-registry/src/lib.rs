//! The Ministry of Justice's civil registry: registers births over gRPC and obtains every
//! eligible child's personal identification number from the population registry through
//! a transactional outbox.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod reconcile;
pub mod registry;
pub mod relay;
pub mod store;
