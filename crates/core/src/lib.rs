//! Shared foundations of every modelbus service: validated ids and digests, the
//! CloudEvents envelope and event payloads, configuration, the JetStream bus, the
//! content-addressed artifact store, DSSE signing, telemetry and operations
//! endpoints, and the embedded nats-server.
//!
//! This crate knows nothing about datasets, models or any one service; it must
//! never depend on `modelbus-ml` or a service crate.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod config;
pub mod deploy;
pub mod events;
pub mod evidence;
pub mod fsutil;
pub mod http;
pub mod ids;
pub mod latency;
pub mod nats_server;
pub mod online;
pub mod ops;
pub mod signing;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;

/// Everything a service needs from its host process; cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    /// Connected bus.
    pub bus: bus::Bus,
    /// Artifact store.
    pub store: artifact::ArtifactStore,
    /// Validated configuration.
    pub config: std::sync::Arc<config::Config>,
    /// Readiness of the process's components.
    pub readiness: ops::Readiness,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
}
