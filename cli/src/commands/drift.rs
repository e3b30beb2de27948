//! `modelbus drift`: data drift between two CSV files, locally, the same
//! computation the monitor runs on live windows (like an Evidently
//! `DataDriftPreset` report).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use modelbus_dataset::spec::DatasetSpec;
use modelbus_featurize::drift::{self, DatasetDrift, DriftOptions, DriftReference, Method};
use modelbus_featurize::sample::{FeatureSample, sample_csv};

use super::datasets::spec_text;
use super::print_json;
use crate::client::Client;

/// Arguments of `modelbus drift`.
#[derive(clap::Args)]
pub struct DriftArgs {
    /// Dataset whose registered spec gives the columns and their types.
    #[arg(long)]
    dataset: Option<String>,
    /// A spec file instead of the registered spec (works offline).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// The reference CSV (e.g. the training batch).
    #[arg(long)]
    reference: PathBuf,
    /// The current CSV (e.g. recent traffic).
    #[arg(long)]
    current: PathBuf,
    /// One method for every column it fits instead of Evidently's default
    /// rule: ks, chisquare, z, wasserstein, jensenshannon or psi.
    #[arg(long, value_parser = parse_method)]
    method: Option<Method>,
    /// Threshold for that method (default: the method's, 0.05 for p-values, 0.1 for distances).
    #[arg(long)]
    threshold: Option<f64>,
    /// Share of drifted columns at or above which the data set has drifted.
    #[arg(long, default_value_t = 0.5)]
    drift_share: f64,
    /// Fewest values a current column needs to be tested.
    #[arg(long, default_value_t = 30)]
    min_rows: u64,
    /// Prints the JSON report.
    #[arg(long)]
    json: bool,
    /// Also writes a self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        format!("unknown method {s:?}; one of {}", all.join(", "))
    })
}

/// Samples the features of a CSV file.
fn sample_file(path: &Path, spec: Arc<DatasetSpec>) -> Result<(u64, Vec<(String, FeatureSample)>)> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sample_csv(std::io::BufReader::with_capacity(1 << 20, f), spec)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The reference and the current samples of two files, read side by side.
pub type ReadPair = (DriftReference, u64, Vec<(String, FeatureSample)>);

/// Reads both files (side by side, one thread each) into the reference and
/// the current samples.
pub fn read_pair(spec: Arc<DatasetSpec>, reference: &Path, current: &Path) -> Result<ReadPair> {
    let (r, c) = std::thread::scope(|s| {
        let spec_r = spec.clone();
        let r = s.spawn(move || {
            let (rows, samples) = sample_file(reference, spec_r)?;
            Ok::<_, anyhow::Error>(DriftReference::from_samples(rows, samples))
        });
        let c = sample_file(current, spec);
        (r.join(), c)
    });
    let r = r.map_err(|_| anyhow::anyhow!("reading the reference panicked"))??;
    let (rows, samples) = c?;
    Ok((r, rows, samples))
}

/// Reads both files (side by side) and compares them.
pub fn drift_files(
    spec: Arc<DatasetSpec>,
    reference: &Path,
    current: &Path,
    options: &DriftOptions,
) -> Result<DatasetDrift> {
    let (r, rows, samples) = read_pair(spec, reference, current)?;
    drift::compare(&r, rows, samples, options).map_err(|e| anyhow::anyhow!("{e}"))
}

impl DriftArgs {
    /// Compares and prints the report; exit 3 when any column or the data set drifted.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let (text, source) =
            spec_text(client, self.dataset.as_deref(), self.spec.as_deref()).await?;
        let spec = Arc::new(
            DatasetSpec::parse(&text, &source)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .spec,
        );
        let options = DriftOptions {
            drift_share: self.drift_share,
            min_rows: self.min_rows,
            method: self.method,
            threshold: self.threshold,
            ..DriftOptions::default()
        };
        let started = std::time::Instant::now();
        let (reference, current) = (self.reference.clone(), self.current.clone());
        let name = spec.name.clone();
        let report =
            tokio::task::spawn_blocking(move || drift_files(spec, &reference, &current, &options))
                .await??;
        let elapsed = started.elapsed();
        if let Some(h) = &self.html {
            let title = format!(
                "{name}: {} vs {}",
                self.reference.display(),
                self.current.display()
            );
            std::fs::write(h, drift::html::render(&title, &report))
                .with_context(|| format!("cannot write {}", h.display()))?;
        }
        if self.json {
            print_json(&report)?;
        } else {
            for c in &report.columns {
                println!(
                    "{} {:<28} {:<14} {:>12} {} {:<8} nulls {:.3} → {:.3}{}",
                    if c.drifted { "DRIFT" } else { "ok   " },
                    c.column,
                    c.method.name(),
                    format!("{:.4}", c.score),
                    if c.method.is_test() { "<" } else { "≥" },
                    c.threshold,
                    c.reference_null_share,
                    c.current_null_share,
                    if c.unseen_rows > 0 {
                        format!(", {} rows of unseen categories", c.unseen_rows)
                    } else {
                        String::new()
                    }
                );
            }
            for s in &report.skipped {
                println!("skip  {:<28} {}", s.column, s.reason);
            }
            println!(
                "{}: {}/{} columns drifted (share {:.2}, threshold {:.2}); {} reference rows, {} current rows, in {:.3}s",
                if report.drifted {
                    "DATASET DRIFT"
                } else if report.any_drift() {
                    "COLUMN DRIFT"
                } else {
                    "NO DRIFT"
                },
                report.drifted_columns,
                report.columns.len(),
                report.share,
                report.drift_share,
                report.reference_rows,
                report.current_rows,
                elapsed.as_secs_f64()
            );
        }
        Ok(if report.any_drift() {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    }
}
