//! From validated rows to model inputs: the feature plan a spec declares,
//! the transform fitted on the training split (imputation, one-hot encoding,
//! derived features) that serving applies unchanged, the feature statistics
//! of the training rows (the drift reference), stratified splits, and feature
//! sets as Parquet (cargo feature `parquet`, which the features service and
//! the trainer enable; serving needs only the transform), and data drift:
//! feature samples, the drift reference kept of the training rows, and the
//! Evidently-compatible drift methods.
//!
//! It builds on `modelbus-dataset` and knows nothing of models. No I/O beyond
//! the byte buffers it is handed; no async.
#![forbid(unsafe_code)]

pub mod drift;
pub mod features;
#[cfg(feature = "parquet")]
pub mod featureset;
pub mod sample;
pub mod split;

/// Why a feature set could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FeaturizeError {
    /// The feature set cannot be written as given.
    #[error("invalid training data: {0}")]
    InvalidData(String),
    /// Stored bytes are not a feature set.
    #[error("invalid model: {0}")]
    InvalidModel(String),
}
