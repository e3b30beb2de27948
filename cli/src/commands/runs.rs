//! `modelbus runs`: pipeline runs, listed or one with its stages and its
//! training run.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use modelbus_registry::types::{PipelineRun, TrainingRun};

use super::{number, print_json};
use crate::client::Client;

/// `modelbus runs ...`.
#[derive(Subcommand)]
pub enum RunsCmd {
    /// Lists pipeline runs, newest first.
    List {
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a pipeline run with its stages and its training run.
    Show {
        /// Pipeline run id (`pr-...`).
        id: String,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A pipeline run with the training run of its model, as `runs show --json`
/// prints it.
#[derive(serde::Serialize)]
struct RunWithTraining<'a> {
    /// The run's own fields.
    #[serde(flatten)]
    run: &'a PipelineRun,
    /// Its training run (`null` before training).
    training_run: Option<&'a TrainingRun>,
}

impl RunsCmd {
    /// Runs it.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            RunsCmd::List {
                dataset,
                limit,
                json,
            } => list(client, dataset.as_deref(), limit, json).await?,
            RunsCmd::Show { id, json } => show(client, &id, json).await?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn list(client: &Client, dataset: Option<&str>, limit: u32, json: bool) -> Result<()> {
    let runs = client.pipeline_runs(dataset, limit).await?;
    if json {
        return print_json(&serde_json::json!({ "pipeline_runs": runs }));
    }
    println!(
        "{:<24} {:<16} {:<10} {:<16} {:<28}",
        "PIPELINE RUN", "DATASET", "STATE", "MODEL", "CREATED"
    );
    for r in &runs {
        let model = if r.model_version > 0 {
            format!("{} v{}", r.model, r.model_version)
        } else {
            "-".into()
        };
        println!(
            "{:<24} {:<16} {:<10} {:<16} {:<28}",
            r.id, r.dataset, r.state, model, r.created_at
        );
    }
    Ok(())
}

async fn show(client: &Client, id: &str, json: bool) -> Result<()> {
    let r = client.pipeline_run(id).await?;
    let training = if r.model_version > 0 {
        let mv = client
            .model_version(&r.model, u64::from(r.model_version))
            .await?;
        Some(client.run(&mv.run_id).await?)
    } else {
        None
    };
    if json {
        return print_json(&RunWithTraining {
            run: &r,
            training_run: training.as_ref(),
        });
    }
    println!("pipeline run {}  [{}]", r.id, r.state);
    println!("  dataset   {}  spec {}", r.dataset, r.spec_digest);
    println!(
        "  batch     {} ({} bytes, {} rows) by {}",
        r.batch_sha256, r.size_bytes, r.rows, r.submitted_by
    );
    println!("  report    {}", r.report_sha256);
    for s in &r.stages {
        println!(
            "  {:<11} {:<10} {} → {}  {}",
            s.name, s.status, s.started_at, s.finished_at, s.detail
        );
    }
    for reason in &r.reasons {
        println!("  reason: {reason}");
    }
    if let Some(t) = &training {
        println!("  training run {}", t.id);
        for (k, v) in &t.metrics {
            println!("    metric {k} = {}", number(*v));
        }
        for (k, v) in t
            .params
            .iter()
            .filter(|(k, _)| !k.starts_with("importance."))
        {
            println!("    param  {k} = {v}");
        }
        for a in &t.artifacts {
            println!("    artifact {} {}", a.name, a.sha256);
        }
    }
    Ok(())
}
