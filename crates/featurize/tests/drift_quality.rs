//! The quality of the drift signal on the real Telco data, as the monitor
//! computes it: the training rows' drift reference (what the features service
//! stores) against windows of 1,000 rows drawn from the holdout.
//!
//! - False alarms: windows from the same distribution as training are flagged
//!   (any column drifting) in at most 1 % of cases.
//! - Sensitivity: the shift "MonthlyCharges × 1.10 + 5" is flagged.

use std::path::PathBuf;
use std::sync::Arc;

use modelbus_dataset::spec::DatasetSpec;
use modelbus_dataset::table::{Chunk, read_all};
use modelbus_featurize::drift::{DriftOptions, DriftReference, compare};
use modelbus_featurize::features::{Cell, FeaturePlan, FeatureStatistics, FeatureTransform, cell};
use modelbus_featurize::sample::FeatureSampler;
use modelbus_featurize::split::stratified_holdout;
use rand::{Rng, SeedableRng};

const WINDOWS: usize = 300;
const WINDOW_ROWS: usize = 1_000;

struct Telco {
    chunks: Vec<Chunk>,
    spec: Arc<DatasetSpec>,
    transform: FeatureTransform,
    reference: DriftReference,
    holdout: Vec<usize>,
}

fn telco() -> Telco {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("config/datasets/telco-churn.toml")).unwrap();
    let spec = Arc::new(DatasetSpec::parse(&text, "telco-churn.toml").unwrap().spec);
    let file = std::fs::File::open(root.join("data/telco-churn/telco_customer_churn.csv")).unwrap();
    let chunks = read_all(file, spec.clone(), 65_536).unwrap();
    let index = |n: &str| spec.columns.iter().position(|c| c.name == n);
    let target = index(&spec.target.column).unwrap();
    let labels: Vec<f64> = chunks
        .iter()
        .flat_map(|c| {
            (0..c.batch.num_rows()).map(move |i| match cell(c, target, i) {
                Cell::Text("Yes") => 1.0,
                _ => 0.0,
            })
        })
        .collect();
    // The features service's split and reference, exactly.
    let (train, holdout) =
        stratified_holdout(&labels, spec.model.holdout_fraction, spec.model.seed);
    let transform =
        FeatureTransform::fit(&FeaturePlan::from_spec(&spec), &chunks, &index, &train).unwrap();
    let stats = FeatureStatistics::compute(&transform, &chunks, &index, &train);
    Telco {
        reference: stats.drift_reference.unwrap(),
        chunks,
        spec,
        transform,
        holdout,
    }
}

/// Windows of rows drawn (with replacement, seeded) from the holdout; with
/// `shift`, MonthlyCharges × 1.10 + 5. Returns how many were flagged.
fn flagged(t: &Telco, seed: u64, shift: bool) -> (usize, Vec<String>) {
    let index = |n: &str| t.spec.columns.iter().position(|c| c.name == n);
    let starts: Vec<usize> = t
        .chunks
        .iter()
        .scan(0, |acc, c| {
            let s = *acc;
            *acc += c.batch.num_rows();
            Some(s)
        })
        .collect();
    let locate = |row: usize| {
        let k = starts.partition_point(|s| *s <= row) - 1;
        (&t.chunks[k], row - starts[k])
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut count = 0;
    let mut columns = Vec::new();
    for _ in 0..WINDOWS {
        let mut sampler = FeatureSampler::from_transform(&t.transform);
        let idx: Vec<Option<usize>> = sampler.inputs.iter().map(|c| index(c)).collect();
        let monthly = sampler.inputs.iter().position(|c| c == "MonthlyCharges");
        for _ in 0..WINDOW_ROWS {
            let row = t.holdout[rng.random_range(0..t.holdout.len())];
            let (chunk, i) = locate(row);
            let mut cells: Vec<Cell<'_>> = idx
                .iter()
                .map(|ci| ci.map(|ci| cell(chunk, ci, i)).unwrap_or(Cell::Null))
                .collect();
            if shift
                && let Some(m) = monthly
                && let Cell::Num(v) = cells[m]
            {
                cells[m] = Cell::Num(v * 1.10 + 5.0);
            }
            sampler.add_cells(&cells);
        }
        let (rows, samples) = sampler.finish();
        let d = compare(
            &t.reference,
            rows,
            samples.into_iter().map(|(f, s)| (f.name, s)).collect(),
            &DriftOptions::default(),
        )
        .unwrap();
        if d.any_drift() {
            count += 1;
            columns.extend(
                d.columns
                    .iter()
                    .filter(|c| c.drifted)
                    .map(|c| c.column.clone()),
            );
        }
    }
    (count, columns)
}

#[test]
fn windows_like_training_rarely_alarm_and_a_charge_shift_always_does() {
    let t = telco();
    assert!(t.holdout.len() > 1_000, "{} holdout rows", t.holdout.len());
    let (alarms, columns) = flagged(&t, 7, false);
    let rate = alarms as f64 / WINDOWS as f64;
    println!(
        "false alarms: {alarms} of {WINDOWS} windows ({:.2} %), columns {columns:?}",
        rate * 100.0
    );
    assert!(
        rate <= 0.01,
        "{alarms} of {WINDOWS} unshifted windows flagged: {columns:?}"
    );
    let (detected, columns) = flagged(&t, 8, true);
    println!("shift detected in {detected} of {WINDOWS} windows");
    assert_eq!(detected, WINDOWS, "the shift was missed in some windows");
    assert!(columns.iter().any(|c| c == "MonthlyCharges"));
}
