//! `modelbus monitor status`: the monitor's latest windows of a model.

use std::process::ExitCode;

use anyhow::Result;

use super::print_json;
use crate::client::Client;

/// `modelbus monitor` subcommands.
#[derive(clap::Subcommand)]
pub enum MonitorCmd {
    /// The latest windows of live traffic: rows, drift share, drifted columns,
    /// the policy's decisions, and where the reports are.
    Status {
        /// Model.
        #[arg(long)]
        model: String,
        /// Only this environment (`staging` or `production`).
        #[arg(long = "env")]
        environment: Option<String>,
        /// Windows to show.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

impl MonitorCmd {
    /// Runs the subcommand.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            MonitorCmd::Status {
                model,
                environment,
                limit,
                json,
            } => {
                let windows = client
                    .windows(&model, environment.as_deref(), limit)
                    .await?;
                if json {
                    print_json(&serde_json::json!({ "model": model, "windows": windows }))?;
                    return Ok(ExitCode::SUCCESS);
                }
                if windows.is_empty() {
                    println!("{model}: no monitoring window closed yet");
                }
                for w in &windows {
                    println!(
                        "{} {:<10} v{:<3} {:>6} rows ({} dropped) closed by {:<8} drift share {:.2}{}{}",
                        w.closed,
                        w.environment,
                        w.version,
                        w.rows,
                        w.dropped,
                        w.closed_by,
                        w.drift_share,
                        if w.dataset_drift {
                            " DATASET DRIFT"
                        } else {
                            ""
                        },
                        if w.drifted_columns.is_empty() {
                            String::new()
                        } else {
                            format!("; drifted: {}", w.drifted_columns.join(", "))
                        }
                    );
                    for d in &w.decisions {
                        println!("    {}: {}", d.kind, d.reason);
                    }
                    println!(
                        "    report /v1/reports/{}  page /v1/windows/pages/{}",
                        w.report_sha256, w.html_sha256
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
