//! The serialised contract types of a dataset spec that the stages above read:
//! how nulls are imputed, how the decision threshold is chosen and the
//! evaluation configured, and the parameters of each learner. They live with
//! the spec (the user's TOML contract), so the spec depends on nothing above
//! it; the featurize and models crates use them.

use serde::{Deserialize, Serialize};

/// How nulls are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// Training median (numbers).
    Median,
    /// Training mean (numbers).
    Mean,
    /// A constant given as `fill_value`.
    Constant,
    /// The most frequent training value (numbers or categories).
    MostFrequent,
}

/// A constant fill value: a number, or a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FillValue {
    /// For numeric and boolean columns.
    Num(f64),
    /// For string columns.
    Text(String),
}

/// Largest accepted [`EvaluationConfig::bootstrap_samples`].
pub const MAX_BOOTSTRAP_SAMPLES: usize = 100_000;

/// Largest accepted [`EvaluationConfig::calibration_bins`].
pub const MAX_CALIBRATION_BINS: usize = 1_000;

/// How the decision threshold is chosen (spec: `[evaluation] threshold = { rule =
/// "max_f1" }` or `{ rule = "cost", false_positive = 1.0, false_negative = 5.0 }`
/// or `{ rule = "fixed", value = 0.5 }`).
///
/// A row is predicted positive when its probability is greater than or equal to
/// the threshold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ThresholdRule {
    /// The threshold, among the distinct predicted probabilities, with the
    /// highest F1 score (ties go to the higher threshold).
    #[default]
    MaxF1,
    /// The threshold with the lowest total misclassification cost (ties go to
    /// the higher threshold); "predict nothing positive" is a candidate too.
    Cost {
        /// Cost of one false positive.
        false_positive: f64,
        /// Cost of one false negative.
        false_negative: f64,
    },
    /// A fixed threshold.
    Fixed {
        /// The threshold, in `[0, 1]`.
        value: f64,
    },
}

impl ThresholdRule {
    /// A short human-readable description, e.g. `cost (FP 1, FN 5)`.
    pub fn describe(&self) -> String {
        match self {
            ThresholdRule::MaxF1 => "max F1".to_string(),
            ThresholdRule::Cost {
                false_positive,
                false_negative,
            } => format!("cost (FP {false_positive}, FN {false_negative})"),
            ThresholdRule::Fixed { value } => format!("fixed {value}"),
        }
    }
}

/// Settings of the evaluation (the spec's `[evaluation]` table). Every key is
/// optional; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Bootstrap resamples for confidence intervals (default 1000; 0 disables
    /// the intervals, which are then NaN).
    pub bootstrap_samples: usize,
    /// Confidence level of the intervals, strictly between 0 and 1 (default 0.95).
    pub confidence: f64,
    /// Equal-width bins on `[0, 1]` for the calibration error (default 10).
    pub calibration_bins: usize,
    /// How the decision threshold is chosen (default max F1).
    pub threshold: ThresholdRule,
    /// Seed of the bootstrap resampling (default 0).
    pub seed: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            bootstrap_samples: 1000,
            confidence: 0.95,
            calibration_bins: 10,
            threshold: ThresholdRule::MaxF1,
            seed: 0,
        }
    }
}

impl EvaluationConfig {
    /// Checks the values, returning the first problem as a message that names
    /// the key (relative to the `[evaluation]` table).
    ///
    /// the models crate's `evaluate` never panics on an invalid configuration (it clamps), but a
    /// spec should be refused with this message instead.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_samples > MAX_BOOTSTRAP_SAMPLES {
            return Err(format!(
                "bootstrap_samples must be at most {MAX_BOOTSTRAP_SAMPLES} (got {})",
                self.bootstrap_samples
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(format!(
                "confidence must be strictly between 0 and 1 (got {})",
                self.confidence
            ));
        }
        if self.calibration_bins == 0 || self.calibration_bins > MAX_CALIBRATION_BINS {
            return Err(format!(
                "calibration_bins must be between 1 and {MAX_CALIBRATION_BINS} (got {})",
                self.calibration_bins
            ));
        }
        match self.threshold {
            ThresholdRule::MaxF1 => {}
            ThresholdRule::Cost {
                false_positive,
                false_negative,
            } => {
                for (key, cost) in [
                    ("threshold.false_positive", false_positive),
                    ("threshold.false_negative", false_negative),
                ] {
                    if !(cost.is_finite() && cost >= 0.0) {
                        return Err(format!(
                            "{key} must be a finite cost of at least 0 (got {cost})"
                        ));
                    }
                }
                if false_positive == 0.0 && false_negative == 0.0 {
                    return Err(
                        "threshold.false_positive and threshold.false_negative cannot both be 0"
                            .to_string(),
                    );
                }
            }
            ThresholdRule::Fixed { value } => {
                if !(0.0..=1.0).contains(&value) {
                    return Err(format!("threshold.value must be in [0, 1] (got {value})"));
                }
            }
        }
        Ok(())
    }

    /// The confidence level actually used: the configured one, or 0.95 when it
    /// is not strictly between 0 and 1.
    pub fn effective_confidence(&self) -> f64 {
        if self.confidence > 0.0 && self.confidence < 1.0 {
            self.confidence
        } else {
            0.95
        }
    }
}

/// Largest `num_leaves` LightGBM accepts.
const MAX_NUM_LEAVES: u32 = 131_072;

/// LightGBM parameters exposed to dataset specs.
///
/// Only the knobs that matter for tabular binary classification are exposed; everything
/// that affects reproducibility (threads, seeds, determinism flags) is fixed by
/// the models crate's `train_gbdt` so that a spec cannot make training non-deterministic. Unknown fields
/// are rejected so that typos in a spec fail loudly instead of silently using defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbdtParams {
    /// Maximum number of boosting rounds (trees).
    pub num_iterations: u32,
    /// Shrinkage applied to every tree.
    pub learning_rate: f64,
    /// Maximum number of leaves per tree.
    pub num_leaves: u32,
    /// Minimum number of training rows in a leaf.
    pub min_data_in_leaf: u32,
    /// Fraction of features sampled for every tree, in (0, 1].
    pub feature_fraction: f64,
    /// Fraction of rows sampled for bagging, in (0, 1].
    pub bagging_fraction: f64,
    /// Bagging every `bagging_freq` iterations; 0 disables bagging.
    pub bagging_freq: u32,
    /// L2 regularisation of leaf values.
    pub lambda_l2: f64,
    /// Stop when the validation AUC has not improved for this many rounds; used only when
    /// a validation set is given, and 0 disables early stopping.
    pub early_stopping_rounds: u32,
}

impl Default for GbdtParams {
    fn default() -> Self {
        Self {
            num_iterations: 300,
            learning_rate: 0.05,
            num_leaves: 15,
            min_data_in_leaf: 20,
            feature_fraction: 0.9,
            bagging_fraction: 0.8,
            bagging_freq: 1,
            lambda_l2: 1.0,
            early_stopping_rounds: 30,
        }
    }
}

impl GbdtParams {
    /// Checks that every parameter is in the range LightGBM accepts, so that a bad spec is
    /// reported with the parameter's name before any training starts.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |msg: String| Err(format!("GBDT parameter {msg}"));
        let as_i32 = |name: &str, v: u32| -> Result<(), String> {
            if i32::try_from(v).is_err() {
                return bad(format!("{name}={v} is too large (at most {})", i32::MAX));
            }
            Ok(())
        };
        if self.num_iterations == 0 {
            return bad("num_iterations must be at least 1".to_owned());
        }
        as_i32("num_iterations", self.num_iterations)?;
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate={} must be a finite number > 0",
                self.learning_rate
            ));
        }
        if !(2..=MAX_NUM_LEAVES).contains(&self.num_leaves) {
            return bad(format!(
                "num_leaves={} must be between 2 and {MAX_NUM_LEAVES}",
                self.num_leaves
            ));
        }
        as_i32("min_data_in_leaf", self.min_data_in_leaf)?;
        for (name, v) in [
            ("feature_fraction", self.feature_fraction),
            ("bagging_fraction", self.bagging_fraction),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return bad(format!("{name}={v} must be in (0, 1]"));
            }
        }
        as_i32("bagging_freq", self.bagging_freq)?;
        if !(self.lambda_l2.is_finite() && self.lambda_l2 >= 0.0) {
            return bad(format!(
                "lambda_l2={} must be a finite number >= 0",
                self.lambda_l2
            ));
        }
        as_i32("early_stopping_rounds", self.early_stopping_rounds)?;
        Ok(())
    }
}

/// Settings for the models crate's `fit_logistic`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LogisticParams {
    /// L2 penalty on the standardised coefficients in sum form (`1 / C` in
    /// scikit-learn terms). Must be finite and `>= 0`; `0` is plain maximum
    /// likelihood, which diverges on separable data (the fit then stops at
    /// `max_iter` with large coefficients).
    pub l2: f64,
    /// Maximum number of Newton steps.
    pub max_iter: usize,
    /// Convergence threshold: fitting stops once the largest absolute change of
    /// any parameter in one step is below `tol`. Must be finite and `>= 0`.
    pub tol: f64,
}

impl Default for LogisticParams {
    /// `l2 = 1.0` (scikit-learn's default `C = 1.0`), `max_iter = 100`,
    /// `tol = 1e-8`. Newton converges quadratically, so well-posed problems
    /// usually finish in under ten steps.
    fn default() -> Self {
        Self {
            l2: 1.0,
            max_iter: 100,
            tol: 1e-8,
        }
    }
}
