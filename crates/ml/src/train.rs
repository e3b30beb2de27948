//! Training and evaluation: fits the spec's learner on the training split of a
//! feature set and evaluates it on the holdout, producing the model artifact.
//! The same feature set, spec and seed give a byte-identical artifact.

use std::collections::BTreeMap;

use crate::MlError;
use crate::features::FeatureTransform;
use crate::featureset::{FeatureSet, HOLDOUT, TRAIN};
use crate::gbdt::{GbdtModel, train_gbdt};
use crate::logistic::fit_logistic;
use crate::metrics::{BinaryMetrics, binary_metrics};
use crate::model::{Estimator, FORMAT, InputSchema, ModelArtifact};
use crate::spec::{Algorithm, DatasetSpec};
use crate::split::stratified_holdout;

/// Share of the training split set aside for LightGBM's early stopping.
pub const EARLY_STOPPING_FRACTION: f64 = 0.1;

/// What training produced.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The artifact to store.
    pub artifact: ModelArtifact,
    /// Holdout metrics.
    pub metrics: BinaryMetrics,
    /// Parameters used, flattened for the registry.
    pub params: BTreeMap<String, String>,
    /// Gain importance per feature (LightGBM) or |coefficient| (logistic).
    pub importance: Vec<(String, f64)>,
}

/// LightGBM-safe feature names: anything but letters, digits, `_`, `-`, `.`, `=`
/// becomes `_`, and duplicates get a numeric suffix.
pub fn lightgbm_names(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    names
        .iter()
        .map(|n| {
            let base: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_-.=".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut name = base.clone();
            let mut k = 1;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            name
        })
        .collect()
}

/// Trains and evaluates. `negative_label` is the label returned for a negative
/// prediction (the most frequent non-positive target value).
pub fn train(
    spec: &DatasetSpec,
    transform: &FeatureTransform,
    fs: &FeatureSet,
    negative_label: &str,
) -> Result<Trained, MlError> {
    let k = fs.names.len();
    if k == 0 {
        return Err(MlError::InvalidData(
            "the feature set has no features".into(),
        ));
    }
    let (x_train, y_train, _) = fs.split_rows(TRAIN);
    let (x_hold, y_hold, _) = fs.split_rows(HOLDOUT);
    if y_hold.is_empty() {
        return Err(MlError::InvalidData("the holdout split is empty".into()));
    }
    let seed = spec.model.seed;
    let mut params = BTreeMap::new();
    params.insert("algorithm".to_string(), spec.model.algorithm.to_string());
    params.insert("seed".to_string(), seed.to_string());
    params.insert(
        "holdout_fraction".to_string(),
        spec.model.holdout_fraction.to_string(),
    );
    params.insert("train_rows".to_string(), y_train.len().to_string());
    params.insert("holdout_rows".to_string(), y_hold.len().to_string());
    let (estimator, importance, p_hold) = match spec.model.algorithm {
        Algorithm::Gbdt => {
            let g = &spec.model.gbdt;
            for (key, v) in serde_json::to_value(g)
                .unwrap_or_default()
                .as_object()
                .into_iter()
                .flatten()
            {
                params.insert(format!("gbdt.{key}"), v.to_string());
            }
            // Inner validation split of the training rows, for early stopping only.
            let (fit_idx, es_idx) = stratified_holdout(&y_train, EARLY_STOPPING_FRACTION, seed);
            let take = |idx: &[usize]| -> (Vec<f64>, Vec<f64>) {
                let mut x = Vec::with_capacity(idx.len() * k);
                let mut y = Vec::with_capacity(idx.len());
                for &i in idx {
                    x.extend_from_slice(&x_train[i * k..(i + 1) * k]);
                    y.push(y_train[i]);
                }
                (x, y)
            };
            let (xf, yf) = take(&fit_idx);
            let (xe, ye) = take(&es_idx);
            let names = lightgbm_names(&fs.names);
            let text = train_gbdt(&xf, k, &yf, &names, Some((&xe, &ye)), g, seed)?;
            let model = GbdtModel::parse(&text)?;
            params.insert("gbdt.trees".to_string(), model.num_trees().to_string());
            let p: Vec<f64> = (0..y_hold.len())
                .map(|i| model.predict_proba(&x_hold[i * k..(i + 1) * k]))
                .collect();
            let imp = fs
                .names
                .iter()
                .cloned()
                .zip(model.feature_importance_gain())
                .collect();
            (Estimator::Gbdt { model: text }, imp, p)
        }
        Algorithm::Logistic => {
            let lp = &spec.model.logistic;
            params.insert("logistic.l2".to_string(), lp.l2.to_string());
            params.insert("logistic.max_iter".to_string(), lp.max_iter.to_string());
            let model = fit_logistic(&x_train, k, &y_train, lp)?;
            let p = model.predict_proba_batch(&x_hold, k);
            let imp = fs
                .names
                .iter()
                .cloned()
                .zip(model.coef.iter().map(|c| c.abs()))
                .collect();
            (Estimator::Logistic(model), imp, p)
        }
    };
    let metrics = binary_metrics(&y_hold, &p_hold);
    let artifact = ModelArtifact {
        format: FORMAT.to_string(),
        model_name: spec.model_name().to_string(),
        dataset: spec.name.clone(),
        algorithm: spec.model.algorithm,
        positive_label: spec.target.positive.clone(),
        negative_label: negative_label.to_string(),
        threshold: 0.5,
        input: InputSchema::from_spec(spec),
        transform: transform.clone(),
        feature_names: fs.names.clone(),
        estimator,
    };
    Ok(Trained {
        artifact,
        metrics,
        params,
        importance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::featureset::FeatureSet;
    use crate::model::Predictor;
    use crate::table::read_all;
    use std::sync::Arc;

    /// The whole offline path on the Telco file: read, split, fit transform, train, evaluate.
    fn telco_run(algorithm: Algorithm) -> (Trained, FeatureSet) {
        let text = include_str!("../../../config/datasets/telco-churn.toml");
        let mut spec = DatasetSpec::parse(text, "t").unwrap().spec;
        spec.model.algorithm = algorithm;
        let spec = Arc::new(spec);
        let f = std::fs::File::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap();
        let chunks = read_all(f, spec.clone(), 8192).unwrap();
        let ti = spec.columns.iter().position(|c| c.name == "Churn").unwrap();
        let ei = spec
            .columns
            .iter()
            .position(|c| c.name == "customerID")
            .unwrap();
        let mut label = Vec::new();
        let mut entity = Vec::new();
        for c in &chunks {
            for i in 0..c.batch.num_rows() {
                label.push(
                    if crate::features::cell(c, ti, i) == crate::features::Cell::Text("Yes") {
                        1.0
                    } else {
                        0.0
                    },
                );
                if let crate::features::Cell::Text(e) = crate::features::cell(c, ei, i) {
                    entity.push(e.to_string());
                }
            }
        }
        let (train_idx, hold_idx) =
            stratified_holdout(&label, spec.model.holdout_fraction, spec.model.seed);
        let transform = FeatureTransform::fit(&spec, &chunks, &train_idx);
        let x = transform.transform_chunks(&spec, &chunks);
        let mut split = vec![TRAIN; label.len()];
        for i in hold_idx {
            split[i] = HOLDOUT;
        }
        let fs = FeatureSet {
            names: transform.feature_names(),
            entity,
            label,
            split,
            x,
        };
        (train(&spec, &transform, &fs, "No").unwrap(), fs)
    }

    #[test]
    fn telco_gbdt_is_good_deterministic_and_serves_identically() {
        let (a, fs) = telco_run(Algorithm::Gbdt);
        println!("telco gbdt holdout: {:?}", a.metrics);
        assert!(a.metrics.roc_auc > 0.82, "{:?}", a.metrics);
        let (b, _) = telco_run(Algorithm::Gbdt);
        assert_eq!(
            a.artifact.to_bytes(),
            b.artifact.to_bytes(),
            "same data and seed, same bytes"
        );
        // Serving path: raw record → same probability as evaluation.
        let p = Predictor::new(ModelArtifact::from_bytes(&a.artifact.to_bytes()).unwrap()).unwrap();
        let k = fs.names.len();
        let first = p.predict_encoded(&fs.x[0..k]);
        let rec = serde_json::json!({
            "customerID": "7590-VHVEG", "gender": "Female", "SeniorCitizen": 0, "Partner": "Yes",
            "Dependents": "No", "tenure": 1, "PhoneService": "No", "MultipleLines": "No phone service",
            "InternetService": "DSL", "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "No",
            "TechSupport": "No", "StreamingTV": "No", "StreamingMovies": "No", "Contract": "Month-to-month",
            "PaperlessBilling": "Yes", "PaymentMethod": "Electronic check", "MonthlyCharges": 29.85,
            "TotalCharges": "29.85"
        });
        let out = p
            .predict_records(&[rec.as_object().unwrap().clone()])
            .unwrap();
        assert!((out[0].probability - first).abs() < 1e-12);
    }

    #[test]
    fn telco_logistic_baseline() {
        let (a, _) = telco_run(Algorithm::Logistic);
        println!("telco logistic holdout: {:?}", a.metrics);
        assert!(a.metrics.roc_auc > 0.82, "{:?}", a.metrics);
    }

    #[test]
    fn names_are_made_lightgbm_safe() {
        let n = lightgbm_names(&["a b".into(), "a_b".into(), "Contract=Month-to-month".into()]);
        assert_eq!(n, vec!["a_b", "a_b_1", "Contract=Month-to-month"]);
    }
}
