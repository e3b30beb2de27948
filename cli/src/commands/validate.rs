//! `modelbus validate`: a CSV file against a dataset's expectations, locally,
//! without the pipeline (like a Great Expectations checkpoint run).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::datasets::spec_text;
use super::print_json;
use crate::client::Client;

/// Arguments of `modelbus validate`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Dataset whose registered spec is used.
    #[arg(long)]
    dataset: Option<String>,
    /// A spec file instead of the registered spec (works offline).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// CSV file.
    file: PathBuf,
    /// Prints the JSON report.
    #[arg(long)]
    json: bool,
    /// Also writes the HTML data docs here.
    #[arg(long)]
    html: Option<PathBuf>,
}

impl ValidateArgs {
    /// Validates and prints the report; exit 3 when an error-level
    /// expectation fails.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let (text, source) =
            spec_text(client, self.dataset.as_deref(), self.spec.as_deref()).await?;
        let parsed = modelbus_dataset::spec::DatasetSpec::parse(&text, &source)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let file = &self.file;
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let started = std::time::Instant::now();
        let mut report = tokio::task::spawn_blocking(move || {
            modelbus_dataset::validate::validate_csv(
                std::io::BufReader::with_capacity(1 << 20, f),
                std::sync::Arc::new(parsed.spec),
                65_536,
            )
        })
        .await?;
        let elapsed = started.elapsed();
        report.spec_digest = modelbus_core::ids::Sha256Digest::of(text.as_bytes()).to_hex();
        if let Some(h) = &self.html {
            std::fs::write(h, modelbus_dataset::validation_html::render(&report))
                .with_context(|| format!("cannot write {}", h.display()))?;
        }
        if self.json {
            print_json(&report)?;
        } else {
            for r in &report.results {
                println!(
                    "{} {:<52} {:<22} {}",
                    if r.success {
                        "ok  "
                    } else if r.severity == modelbus_dataset::spec::Severity::Warning {
                        "WARN"
                    } else {
                        "FAIL"
                    },
                    r.expectation,
                    r.kwargs
                        .get("column")
                        .and_then(|c| c.as_str())
                        .unwrap_or(""),
                    if r.success { String::new() } else { r.reason() }
                );
            }
            println!(
                "{}: {} rows, {}/{} expectations met, {} warning(s), in {:.3}s",
                if report.success { "PASSED" } else { "FAILED" },
                report.rows,
                report.statistics.successful_expectations,
                report.statistics.evaluated_expectations,
                report.warnings().len(),
                elapsed.as_secs_f64()
            );
        }
        Ok(if report.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}
