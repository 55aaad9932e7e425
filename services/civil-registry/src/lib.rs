//! The civil-registry service.
