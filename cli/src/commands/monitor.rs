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
                let (windows, performance) = client
                    .windows_with_performance(&model, environment.as_deref(), limit)
                    .await?;
                if json {
                    print_json(&serde_json::json!({
                        "model": model, "windows": windows, "performance": performance,
                    }))?;
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
                    let fig = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
                    if let Some(e) = &w.estimated {
                        println!(
                            "    estimated (CBPE)  ROC AUC {}  accuracy {}  F1 {}",
                            fig(e.roc_auc),
                            fig(e.accuracy),
                            fig(e.f1)
                        );
                    }
                    if let Some(p) = performance.get(&w.window_id) {
                        let r = &p.realised;
                        println!(
                            "    realised          ROC AUC {}  accuracy {}  F1 {}  PR AUC {}  log loss {}  Brier {}  ECE {}  ({} labels, coverage {:.0}%)",
                            fig(r.roc_auc),
                            fig(r.accuracy),
                            fig(r.f1),
                            fig(r.pr_auc),
                            fig(r.log_loss),
                            fig(r.brier),
                            fig(r.ece),
                            r.rows,
                            p.label_coverage * 100.0
                        );
                        println!(
                            "    confusion at {:.2}: tp {} fp {} tn {} fn {}",
                            r.threshold, r.tp, r.fp, r.tn, r.fn_
                        );
                        for d in &p.decisions {
                            println!("    {}: {}", d.kind, d.reason);
                        }
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
