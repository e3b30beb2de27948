//! The quality of estimated performance (CBPE) on the real Telco data.
//!
//! Every row is scored out of fold by a logistic model that never saw it (five
//! folds). The calibration is fitted on one half of the rows (as the trainer
//! fits it on the holdout) and windows of 1,000 rows are drawn from the other
//! half, then the other way round. On each window the estimated ROC AUC (from
//! probabilities alone) is compared with the realised one (from the labels):
//! the bar is 0.02, on the mean absolute difference (NannyML's
//! measure of an estimator's error).

use std::path::PathBuf;
use std::sync::Arc;

use modelbus_dataset::spec::{DatasetSpec, LogisticParams};
use modelbus_dataset::table::read_all;
use modelbus_featurize::features::{Cell, FeaturePlan, FeatureTransform, cell};
use modelbus_featurize::split::stratified_holdout;
use modelbus_models::logistic::fit_logistic;
use modelbus_models::performance::{Calibration, estimate, realised};
use rand::SeedableRng;
use rand::seq::SliceRandom;

const WINDOWS: usize = 200;
const WINDOW_ROWS: usize = 1_000;

#[test]
fn estimated_roc_auc_is_within_two_hundredths_of_the_realised_one_on_telco() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("config/datasets/telco-churn.toml")).unwrap();
    let spec = Arc::new(DatasetSpec::parse(&text, "telco-churn.toml").unwrap().spec);
    let file = std::fs::File::open(root.join("data/telco-churn/telco_customer_churn.csv")).unwrap();
    let chunks = read_all(file, spec.clone(), 65_536).unwrap();
    let index = |n: &str| spec.columns.iter().position(|c| c.name == n);
    let target = index(&spec.target.column).unwrap();
    let y: Vec<f64> = chunks
        .iter()
        .flat_map(|c| {
            (0..c.batch.num_rows()).map(move |i| match cell(c, target, i) {
                Cell::Text("Yes") => 1.0,
                _ => 0.0,
            })
        })
        .collect();
    // Out-of-fold probabilities for every row (5 folds): each row is scored
    // by a model that never saw it.
    let n = y.len();
    let fold: Vec<usize> = (0..n).map(|i| (i * 7919 + 13) % 5).collect();
    let mut p_oof = vec![0.0; n];
    for f in 0..5 {
        let train: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let transform =
            FeatureTransform::fit(&FeaturePlan::from_spec(&spec), &chunks, &index, &train).unwrap();
        let x = transform.transform_chunks(&chunks, &index);
        let k = transform.num_features();
        let rows = |idx: &[usize]| -> Vec<f64> {
            idx.iter()
                .flat_map(|&i| x[i * k..(i + 1) * k].iter().copied())
                .collect()
        };
        let labels: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let model = fit_logistic(&rows(&train), k, &labels, &LogisticParams::default()).unwrap();
        for (&i, p) in test.iter().zip(model.predict_proba_batch(&rows(&test), k)) {
            p_oof[i] = p;
        }
    }
    // Two halves: the calibration is fitted on one (as the trainer fits it on
    // the holdout), windows are drawn from the other, then the other way round.
    let (a, b) = stratified_holdout(&y, 0.5, 7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut abs_diff, mut worst, mut within, mut sum_est, mut sum_real) =
        (0.0f64, 0.0f64, 0, 0.0, 0.0);
    for (cal, eval) in [(&a, &b), (&b, &a)] {
        let cy: Vec<f64> = cal.iter().map(|&i| y[i]).collect();
        let cp: Vec<f64> = cal.iter().map(|&i| p_oof[i]).collect();
        let calibration = Calibration::fit(&cy, &cp, 5);
        let mut order = eval.clone();
        for _ in 0..WINDOWS / 2 {
            order.shuffle(&mut rng);
            let w = &order[..WINDOW_ROWS];
            let p: Vec<f64> = w.iter().map(|&i| p_oof[i]).collect();
            let yy: Vec<f64> = w.iter().map(|&i| y[i]).collect();
            let est = estimate(&calibration, &p, 0.5).roc_auc.unwrap();
            let real = realised(&yy, &p, 0.5).roc_auc.unwrap();
            let d = (est - real).abs();
            abs_diff += d;
            worst = worst.max(d);
            within += usize::from(d <= 0.02);
            sum_est += est;
            sum_real += real;
        }
    }
    let n = WINDOWS as f64;
    let (mean_diff, bias) = (abs_diff / n, (sum_est - sum_real) / n);
    eprintln!(
        "CBPE on Telco, {WINDOWS} windows of {WINDOW_ROWS}: mean |estimated - realised| ROC AUC {mean_diff:.4}, bias {bias:+.4}, worst {worst:.4}, within 0.02: {within}/{WINDOWS}; mean realised {:.4}",
        sum_real / n
    );
    assert!(mean_diff <= 0.02, "mean absolute difference {mean_diff}");
    assert!(bias.abs() <= 0.01, "bias {bias}");
    // A realised ROC AUC over 1,000 rows has a sampling spread of its own
    // (about 0.013 here), which no estimate can follow: the bar is on the
    // mean, and most windows are within it.
    assert!(
        within as f64 >= 0.5 * n,
        "{within} of {WINDOWS} within 0.02"
    );
}
