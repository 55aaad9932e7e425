//! Support for the end-to-end tests: starting both services as real processes.
//!
//! The orchestration (throwaway CA, locating or building the service binaries, starting
//! them on port 0, provisioning, replay and verify) is shared with `traffic pilot` and lives
//! in the traffic crate's library; this crate re-exports it for the tests.

pub mod proxy;

pub use traffic::pilot::{PilotOptions, PilotRun, run as run_pilot};
pub use traffic::profile::ProfileName;
pub use traffic::replay::{Mode, ReplayOptions};
pub use traffic::stack::Build;
