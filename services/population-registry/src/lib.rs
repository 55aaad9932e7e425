//! The population-registry service.
