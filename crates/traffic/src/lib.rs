//! The traffic tool: generates registration traffic for the pilot and national profiles,
//! replays it against a civil registry, verifies both services afterwards, and runs the
//! whole pilot end to end with both services as child processes.

pub mod args;
pub mod bench;
pub mod catalog;
pub mod client;
pub mod cores;
pub mod files;
pub mod generate;
pub mod pilot;
pub mod profile;
pub mod record;
pub mod replay;
pub mod stack;
pub mod verify;
pub mod wire;
