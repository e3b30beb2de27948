//! What the monitor needs of a trained version, fixed at training time and
//! stored as one content-addressed artifact (`monitoring_reference` among the
//! training run's artifacts): the features' drift reference, the holdout's
//! score distribution (the reference of prediction drift), the holdout's
//! figures that live performance is compared with, and how to read a logged
//! record (its null markers and labels).
//!
//! The monitor never needs the training rows.

use serde::{Deserialize, Serialize};

use modelbus_featurize::drift::DriftReference;
use modelbus_featurize::drift::reference::NumericReference;

/// Name of the predicted probability among drift columns: not a valid column
/// name in a spec, so it never collides with a feature.
pub const PREDICTION_COLUMN: &str = "@probability";

/// One logged prediction of a closed window, as the window's index artifact
/// lists it (JSON lines): what the registry joins labels to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedPrediction {
    /// Prediction id.
    pub id: String,
    /// Entity, when the record had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// When it was answered (Unix milliseconds).
    pub time_ms: i64,
    /// Predicted probability of the positive class.
    pub p: f64,
}

/// The holdout figures live performance is compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutFigures {
    /// Holdout rows.
    pub rows: u64,
    /// Positive holdout rows.
    pub positives: u64,
    /// ROC AUC.
    pub roc_auc: f64,
    /// PR AUC.
    pub pr_auc: f64,
    /// Log loss.
    pub log_loss: f64,
    /// Brier score.
    pub brier: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// The decision threshold.
    pub threshold: f64,
}

/// Everything the monitor compares a version's live traffic with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitoringReference {
    /// The training rows' features (input columns and derived features).
    pub features: DriftReference,
    /// The holdout's predicted probabilities.
    pub prediction: NumericReference,
    /// The holdout's figures.
    pub holdout: HoldoutFigures,
    /// Cells equal to one of these are nulls (the spec's `null_values`).
    pub null_values: Vec<String>,
    /// The positive class's label.
    pub positive_label: String,
    /// The other label.
    pub negative_label: String,
    /// The holdout's calibration, for estimated performance before labels
    /// arrive (identity for references written before it existed).
    #[serde(default)]
    pub calibration: crate::performance::Calibration,
    /// A PCA of the training rows' encoded features, for multivariate drift
    /// (absent for references written before it, or encodings too wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<modelbus_featurize::drift::multivariate::PcaReference>,
}

impl MonitoringReference {
    /// Bytes as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads stored bytes, checking the drift references are consistent.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        r.features.check()?;
        modelbus_featurize::drift::ColumnReference::Numeric(r.prediction.clone())
            .check()
            .map_err(|e| format!("prediction reference: {e}"))?;
        r.calibration.check()?;
        if let Some(p) = &r.multivariate {
            p.check()
                .map_err(|e| format!("multivariate reference: {e}"))?;
        }
        if !(0.0..=1.0).contains(&r.holdout.threshold) {
            return Err(format!(
                "threshold {} is outside [0, 1]",
                r.holdout.threshold
            ));
        }
        Ok(r)
    }

    /// Estimated performance of a window's probabilities (CBPE) at the
    /// model's threshold, in the bus's terms.
    pub fn estimate(&self, probabilities: &[f64]) -> crate::performance::Estimated {
        crate::performance::estimate(&self.calibration, probabilities, self.holdout.threshold)
    }

    /// The features and the prediction as one drift reference.
    pub fn drift_reference(&self) -> DriftReference {
        let mut r = self.features.clone();
        r.columns.push((
            PREDICTION_COLUMN.to_string(),
            modelbus_featurize::drift::ColumnReference::Numeric(self.prediction.clone()),
        ));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_featurize::sample::FeatureSample;

    #[test]
    fn round_trips_and_refuses_a_corrupt_reference() {
        let features = DriftReference::from_samples(
            3,
            vec![(
                "x".into(),
                FeatureSample::Numeric {
                    values: vec![1.0, 2.0, 3.0],
                    nulls: 0,
                },
            )],
        );
        let r = MonitoringReference {
            features,
            prediction: NumericReference::from_values(vec![0.1, 0.9], 0),
            holdout: HoldoutFigures {
                rows: 2,
                positives: 1,
                roc_auc: 1.0,
                pr_auc: 1.0,
                log_loss: 0.1,
                brier: 0.01,
                ece: 0.1,
                threshold: 0.5,
            },
            null_values: vec![String::new()],
            positive_label: "Yes".into(),
            negative_label: "No".into(),
            calibration: Default::default(),
            multivariate: None,
        };
        let back = MonitoringReference::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.drift_reference().columns.len(), 2);
        let mut bad = r.clone();
        bad.prediction.rows = 7;
        assert!(
            MonitoringReference::from_slice(&bad.to_bytes())
                .unwrap_err()
                .contains("prediction reference")
        );
    }
}
