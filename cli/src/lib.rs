//! The `modelbus` command: runs the platform (`modelbus up`) or one service, and
//! is the command-line client of the registry and ingest. The library half exists
//! so the integration tests can start the platform in process.
#![forbid(unsafe_code)]

pub mod bench;
pub mod client;
pub mod commands;
pub mod evidence;
pub mod governance;
pub mod platform;
