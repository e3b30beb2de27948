//! Models: metrics, the evaluation report and its HTML, logistic regression,
//! the pure-Rust predictor of LightGBM's text format, the model artifact and
//! the `Predictor` serving uses; and, behind the cargo feature `training`
//! (only the trainer and the CLI enable it), LightGBM training through
//! `lightgbm3` and candidate selection (`train`).
//!
//! It builds on `modelbus-dataset` and `modelbus-featurize`. No I/O beyond the
//! buffers it is handed; no async. Everything it computes is deterministic for
//! the same inputs and seed.
#![forbid(unsafe_code)]

pub mod evaluate;
pub mod evaluation_html;
pub mod gbdt;
pub mod logistic;
pub mod metrics;
pub mod model;
pub mod monitoring;
pub mod performance;
#[cfg(feature = "training")]
pub mod train;

impl From<modelbus_featurize::FeaturizeError> for MlError {
    fn from(e: modelbus_featurize::FeaturizeError) -> Self {
        match e {
            modelbus_featurize::FeaturizeError::InvalidData(m) => MlError::InvalidData(m),
            modelbus_featurize::FeaturizeError::InvalidModel(m) => MlError::InvalidModel(m),
        }
    }
}

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
