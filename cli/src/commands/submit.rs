//! `modelbus submit`: streams a CSV batch to ingest and, with `--wait`, follows
//! its pipeline run to the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{metric, print_json};
use crate::client::Client;

/// Arguments of `modelbus submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Dataset name.
    #[arg(long)]
    dataset: String,
    /// CSV file.
    file: PathBuf,
    /// Waits for the run to end: exit 0 deployed, 3 rejected, 1 otherwise.
    #[arg(long)]
    wait: bool,
    /// Prints JSON.
    #[arg(long)]
    json: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
}

/// The model a run registered, as `submit --wait --json` shows it.
#[derive(serde::Serialize)]
struct Registered<'a> {
    /// Model name.
    name: &'a str,
    /// Version.
    version: u32,
    /// Artifact digest.
    model_sha256: &'a str,
    /// Holdout metrics.
    metrics: &'a BTreeMap<String, f64>,
    /// `candidate` or `rejected`.
    status: &'a str,
}

impl SubmitArgs {
    /// Submits; with `--wait`, exit 0 when the run ends deployed, 3 rejected,
    /// 1 otherwise.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let file = &self.file;
        let resp = client.submit(&self.dataset, file).await?;
        let id = resp.pipeline_run;
        if !self.json {
            eprintln!(
                "submitted {} ({} bytes, sha256 {}) as pipeline run {id}{}",
                file.display(),
                resp.size_bytes,
                resp.batch_sha256,
                if resp.created {
                    ""
                } else {
                    " (already submitted: existing run)"
                }
            );
        }
        if !self.wait {
            if self.json {
                print_json(&serde_json::json!({
                    "pipeline_run": id, "batch_sha256": resp.batch_sha256, "state": resp.state, "created": resp.created,
                }))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        let run = client.wait_run(&id, self.timeout.into()).await?;
        let version = if !run.model.is_empty() && run.model_version > 0 {
            Some(
                client
                    .model_version(&run.model, u64::from(run.model_version))
                    .await?,
            )
        } else {
            None
        };
        if self.json {
            print_json(&serde_json::json!({
                "pipeline_run": id,
                "batch_sha256": run.batch_sha256,
                "state": run.state,
                "model": version.as_ref().map(|v| Registered {
                    name: &run.model,
                    version: run.model_version,
                    model_sha256: &v.model_sha256,
                    metrics: &v.metrics,
                    status: &v.status,
                }),
                "reasons": run.reasons,
                "stages": run.stages,
            }))?;
        } else {
            for s in &run.stages {
                eprintln!("  {:<11} {:<10} {}", s.name, s.status, s.detail);
            }
            let metrics = version.as_ref().map(|v| &v.metrics);
            match run.state.as_str() {
                "deployed" => eprintln!(
                    "deployed {} v{} to staging (roc_auc {}, pr_auc {})",
                    run.model,
                    run.model_version,
                    metric(metrics, "roc_auc"),
                    metric(metrics, "pr_auc")
                ),
                other => {
                    eprintln!("run ended {other}:");
                    for r in &run.reasons {
                        eprintln!("  - {r}");
                    }
                }
            }
        }
        Ok(match run.state.as_str() {
            "deployed" => ExitCode::SUCCESS,
            "rejected" => ExitCode::from(3),
            _ => ExitCode::FAILURE,
        })
    }
}
