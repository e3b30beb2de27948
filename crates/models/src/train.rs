//! Training and evaluation: fits the spec's learner on the training split of a
//! feature set and evaluates it on the holdout, producing the model artifact.
//! The same feature set, spec and seed give a byte-identical artifact.

use std::collections::BTreeMap;

use crate::MlError;
use crate::gbdt::{GbdtModel, train_gbdt};
use crate::logistic::fit_logistic;
use crate::metrics::roc_auc;
use crate::metrics::{BinaryMetrics, binary_metrics};
use crate::model::{Estimator, FORMAT, InputSchema, ModelArtifact};
use modelbus_dataset::spec::{Algorithm, CandidateSpec, DatasetSpec};
use modelbus_featurize::features::FeatureTransform;
use modelbus_featurize::featureset::{FeatureSet, HOLDOUT, TRAIN};
use modelbus_featurize::split::{stratified_holdout, stratified_kfold};

/// Share of the training split set aside for LightGBM's early stopping.
pub const EARLY_STOPPING_FRACTION: f64 = 0.1;

/// How one candidate scored during selection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateScore {
    /// Candidate name.
    pub name: String,
    /// Learner.
    pub algorithm: Algorithm,
    /// Mean validation ROC AUC (over folds with cross-validation).
    pub validation_roc_auc: f64,
    /// Per-fold ROC AUC (one value without cross-validation).
    pub fold_roc_auc: Vec<f64>,
    /// Seconds spent fitting during selection.
    pub fit_seconds: f64,
}

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
    /// Every candidate and its validation score; the first-ranked one won.
    pub selection: Vec<CandidateScore>,
    /// Predicted probabilities on the holdout rows, in feature-set order.
    pub holdout_predictions: Vec<f64>,
    /// Labels of the holdout rows.
    pub holdout_labels: Vec<f64>,
    /// Seconds the final fit took.
    pub fit_seconds: f64,
}

/// A fitted estimator with its importance.
struct Fitted {
    estimator: Estimator,
    importance: Vec<f64>,
    trees: Option<usize>,
}

impl Fitted {
    fn predict(&self, x: &[f64], k: usize) -> Result<Vec<f64>, MlError> {
        Ok(match &self.estimator {
            Estimator::Gbdt { model } => {
                let m = GbdtModel::parse(model)?;
                x.chunks(k).map(|row| m.predict_proba(row)).collect()
            }
            Estimator::Logistic(m) => m.predict_proba_batch(x, k),
        })
    }
}

fn take(x: &[f64], y: &[f64], k: usize, idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut xo = Vec::with_capacity(idx.len() * k);
    let mut yo = Vec::with_capacity(idx.len());
    for &i in idx {
        xo.extend_from_slice(&x[i * k..(i + 1) * k]);
        yo.push(y[i]);
    }
    (xo, yo)
}

/// Fits one candidate on (x, y). LightGBM sets aside a stratified share of the
/// rows for early stopping.
fn fit(
    candidate: &CandidateSpec,
    x: &[f64],
    y: &[f64],
    names: &[String],
    seed: u64,
) -> Result<Fitted, MlError> {
    let k = names.len();
    match candidate.algorithm {
        Algorithm::Gbdt => {
            let (fit_idx, es_idx) = stratified_holdout(y, EARLY_STOPPING_FRACTION, seed);
            let (xf, yf) = take(x, y, k, &fit_idx);
            let (xe, ye) = take(x, y, k, &es_idx);
            let text = train_gbdt(
                &xf,
                k,
                &yf,
                &lightgbm_names(names),
                Some((&xe, &ye)),
                &candidate.gbdt,
                seed,
            )?;
            let model = GbdtModel::parse(&text)?;
            Ok(Fitted {
                importance: model.feature_importance_gain(),
                trees: Some(model.num_trees()),
                estimator: Estimator::Gbdt { model: text },
            })
        }
        Algorithm::Logistic => {
            let model = fit_logistic(x, k, y, &candidate.logistic)?;
            Ok(Fitted {
                importance: model.coef.iter().map(|c| c.abs()).collect(),
                trees: None,
                estimator: Estimator::Logistic(model),
            })
        }
    }
}

/// Scores every candidate on the training rows: k-fold stratified CV when
/// `cv_folds` is set, else one stratified validation split. Returns the scores,
/// best first (ties keep the spec's order).
pub fn select(
    candidates: &[CandidateSpec],
    cv_folds: Option<usize>,
    x: &[f64],
    y: &[f64],
    names: &[String],
    seed: u64,
) -> Result<Vec<CandidateScore>, MlError> {
    let k = names.len();
    let folds: Vec<(Vec<usize>, Vec<usize>)> = match cv_folds {
        Some(f) => {
            let held = stratified_kfold(y, f, seed);
            held.iter()
                .map(|h| {
                    let hs: std::collections::BTreeSet<usize> = h.iter().copied().collect();
                    (
                        (0..y.len()).filter(|i| !hs.contains(i)).collect(),
                        h.clone(),
                    )
                })
                .collect()
        }
        None => vec![stratified_holdout(y, VALIDATION_FRACTION, seed)],
    };
    let mut scores = Vec::new();
    for c in candidates {
        let mut aucs = Vec::new();
        let started = std::time::Instant::now();
        for (train_idx, valid_idx) in &folds {
            let (xt, yt) = take(x, y, k, train_idx);
            let (xv, yv) = take(x, y, k, valid_idx);
            let f = fit(c, &xt, &yt, names, seed)?;
            aucs.push(roc_auc(&yv, &f.predict(&xv, k)?));
        }
        let mean = aucs.iter().sum::<f64>() / aucs.len().max(1) as f64;
        scores.push(CandidateScore {
            name: c.label(),
            algorithm: c.algorithm,
            validation_roc_auc: mean,
            fold_roc_auc: aucs,
            fit_seconds: started.elapsed().as_secs_f64(),
        });
    }
    // Stable sort: equal scores keep the spec's order.
    scores.sort_by(|a, b| b.validation_roc_auc.total_cmp(&a.validation_roc_auc));
    Ok(scores)
}

/// The winner among scored candidates: the first, in spec order, whose score is
/// within `tolerance` of the best (simpler learners listed first win ties).
pub fn pick(
    candidates: &[CandidateSpec],
    scores: &[CandidateScore],
    tolerance: f64,
) -> Option<usize> {
    let best = scores
        .iter()
        .map(|s| s.validation_roc_auc)
        .fold(f64::NEG_INFINITY, f64::max);
    candidates.iter().position(|c| {
        scores
            .iter()
            .any(|s| s.name == c.label() && s.validation_roc_auc >= best - tolerance)
    })
}

/// Share of the training rows used to score candidates without cross-validation.
pub const VALIDATION_FRACTION: f64 = 0.2;

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

/// Trains and evaluates: chooses among the spec's candidates on the training
/// split, refits the winner on the whole training split and evaluates it on the
/// holdout. `negative_label` names a negative prediction. The artifact's decision
/// threshold is the one the spec's threshold rule picks on the holdout.
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
    let candidates = spec.model.candidates();
    let selection = if candidates.len() > 1 || spec.model.cv_folds.is_some() {
        select(
            &candidates,
            spec.model.cv_folds,
            &x_train,
            &y_train,
            &fs.names,
            seed,
        )?
    } else {
        Vec::new()
    };
    let winner = pick(&candidates, &selection, spec.model.selection_tolerance)
        .map(|i| candidates[i].clone())
        .unwrap_or_else(|| candidates[0].clone());
    let mut params = BTreeMap::new();
    params.insert("algorithm".to_string(), winner.algorithm.to_string());
    params.insert("candidate".to_string(), winner.label());
    params.insert("seed".to_string(), seed.to_string());
    params.insert(
        "holdout_fraction".to_string(),
        spec.model.holdout_fraction.to_string(),
    );
    params.insert("train_rows".to_string(), y_train.len().to_string());
    params.insert("holdout_rows".to_string(), y_hold.len().to_string());
    if let Some(f) = spec.model.cv_folds {
        params.insert("cv_folds".to_string(), f.to_string());
    }
    for s in &selection {
        params.insert(
            format!("selection.{}.validation_roc_auc", s.name),
            format!("{:.6}", s.validation_roc_auc),
        );
    }
    match winner.algorithm {
        Algorithm::Gbdt => {
            for (key, v) in serde_json::to_value(&winner.gbdt)
                .unwrap_or_default()
                .as_object()
                .into_iter()
                .flatten()
            {
                params.insert(format!("gbdt.{key}"), v.to_string());
            }
        }
        Algorithm::Logistic => {
            params.insert("logistic.l2".to_string(), winner.logistic.l2.to_string());
            params.insert(
                "logistic.max_iter".to_string(),
                winner.logistic.max_iter.to_string(),
            );
        }
    }
    let started = std::time::Instant::now();
    let fitted = fit(&winner, &x_train, &y_train, &fs.names, seed)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    if let Some(t) = fitted.trees {
        params.insert("gbdt.trees".to_string(), t.to_string());
    }
    let p_hold = fitted.predict(&x_hold, k)?;
    let metrics = binary_metrics(&y_hold, &p_hold);
    let threshold =
        crate::evaluate::choose_threshold(&y_hold, &p_hold, &spec.evaluation.threshold).threshold;
    let importance = fs
        .names
        .iter()
        .cloned()
        .zip(fitted.importance.iter().copied())
        .collect();
    let artifact = ModelArtifact {
        format: FORMAT.to_string(),
        model_name: spec.model_name().to_string(),
        dataset: spec.name.clone(),
        algorithm: winner.algorithm,
        positive_label: spec.target.positive.clone(),
        negative_label: negative_label.to_string(),
        threshold,
        input: InputSchema::from_spec(spec),
        transform: transform.clone(),
        feature_names: fs.names.clone(),
        estimator: fitted.estimator,
    };
    Ok(Trained {
        artifact,
        metrics,
        params,
        importance,
        selection,
        holdout_predictions: p_hold,
        holdout_labels: y_hold,
        fit_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Predictor;
    use modelbus_dataset::table::read_all;
    use modelbus_featurize::featureset::FeatureSet;
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
                    if modelbus_featurize::features::cell(c, ti, i)
                        == modelbus_featurize::features::Cell::Text("Yes")
                    {
                        1.0
                    } else {
                        0.0
                    },
                );
                if let modelbus_featurize::features::Cell::Text(e) =
                    modelbus_featurize::features::cell(c, ei, i)
                {
                    entity.push(e.to_string());
                }
            }
        }
        let (train_idx, hold_idx) =
            stratified_holdout(&label, spec.model.holdout_fraction, spec.model.seed);
        let index = |n: &str| spec.columns.iter().position(|c| c.name == n);
        let plan = modelbus_featurize::features::FeaturePlan::from_spec(&spec);
        let transform = FeatureTransform::fit(&plan, &chunks, &index, &train_idx).unwrap();
        let x = transform.transform_chunks(&chunks, &index);
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

#[cfg(test)]
mod selection_tests {
    use super::*;

    /// Two informative features with a curved boundary: trees beat a line.
    fn data(n: usize) -> (Vec<f64>, Vec<f64>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f64 = rng.random_range(-1.0..1.0);
            let b: f64 = rng.random_range(-1.0..1.0);
            let noise: f64 = rng.random_range(-0.2..0.2);
            x.extend([a, b]);
            y.push(if a * a + b * b + noise < 0.5 {
                1.0
            } else {
                0.0
            });
        }
        (x, y)
    }

    fn candidate(algorithm: Algorithm) -> CandidateSpec {
        CandidateSpec {
            name: None,
            algorithm,
            gbdt: Default::default(),
            logistic: Default::default(),
        }
    }

    #[test]
    fn cross_validation_ranks_the_better_learner_first() {
        let (x, y) = data(1500);
        let names = vec!["a".to_string(), "b".to_string()];
        let cands = [candidate(Algorithm::Logistic), candidate(Algorithm::Gbdt)];
        let scores = select(&cands, Some(4), &x, &y, &names, 42).unwrap();
        assert_eq!(scores.len(), 2);
        assert_eq!(scores[0].algorithm, Algorithm::Gbdt, "{scores:?}");
        assert_eq!(scores[0].fold_roc_auc.len(), 4);
        assert!(
            scores[0].validation_roc_auc > scores[1].validation_roc_auc + 0.1,
            "{scores:?}"
        );
        // Deterministic for a seed.
        let again = select(&cands, Some(4), &x, &y, &names, 42).unwrap();
        assert_eq!(
            scores
                .iter()
                .map(|s| s.validation_roc_auc)
                .collect::<Vec<_>>(),
            again
                .iter()
                .map(|s| s.validation_roc_auc)
                .collect::<Vec<_>>()
        );
        // Without CV: one validation split.
        let one = select(&cands, None, &x, &y, &names, 42).unwrap();
        assert_eq!(one[0].fold_roc_auc.len(), 1);
    }
}
