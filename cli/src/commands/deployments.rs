//! `modelbus deployments`: a model's deployment timeline.

use std::process::ExitCode;

use anyhow::Result;

use super::print_json;
use crate::client::Client;

/// Arguments of `modelbus deployments`.
#[derive(clap::Args)]
pub struct DeploymentsArgs {
    /// Model.
    #[arg(long)]
    model: String,
    /// Only this environment (`staging` or `production`).
    #[arg(long = "env")]
    environment: Option<String>,
    /// Prints JSON.
    #[arg(long)]
    json: bool,
}

impl DeploymentsArgs {
    /// Prints the timeline, oldest first.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let model = &self.model;
        let events: Vec<_> = client
            .deployments(model)
            .await?
            .into_iter()
            .filter(|e| {
                self.environment
                    .as_deref()
                    .is_none_or(|env| e.environment == env)
            })
            .collect();
        if self.json {
            print_json(&serde_json::json!({ "model": model, "timeline": events }))?;
        } else if events.is_empty() {
            println!("{model} has no deployment events");
        } else {
            for e in &events {
                // The version is not padded: it never was (it printed as a JSON value).
                println!(
                    "{:<30} {:<10} v{} {:<11} {}",
                    e.at, e.environment, e.version, e.kind, e.detail
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
