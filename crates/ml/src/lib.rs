//! The pure computation behind modelbus: dataset specs, streaming CSV to Arrow,
//! validation, feature transforms, data splits, training and metrics.
//!
//! This crate owns no I/O beyond what it is handed (byte readers, slices) and never
//! talks to the bus, the registry or the artifact store: services do that and call
//! in here. Everything it computes is deterministic for the same inputs and seed.
#![forbid(unsafe_code)]

pub mod evaluate;
pub mod evaluation_html;
pub mod expr;
pub mod features;
pub mod featureset;
pub mod gbdt;
pub mod ge_import;
pub mod logistic;
pub mod metrics;
pub mod model;
pub mod spec;
pub mod split;
pub mod table;
pub mod train;
pub mod validate;
pub mod validation_html;

/// Errors from model fitting and model loading.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// The training data cannot be used as given (empty, one class only, wrong shape).
    #[error("invalid training data: {0}")]
    InvalidData(String),
    /// LightGBM refused to train or predict.
    #[error("LightGBM: {0}")]
    LightGbm(String),
    /// A stored model could not be read back.
    #[error("invalid model: {0}")]
    InvalidModel(String),
}
