//! Support for the end-to-end tests: starting both services as real processes.
