//! `modelbus labels submit`: sends ground truth for earlier predictions to
//! ingest. The registry joins each label to its prediction (by prediction id,
//! or to the entity's latest prediction within `monitor.label_window` before
//! the label's time) and the monitor recomputes the realised performance of
//! the windows they belong to.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::print_json;
use crate::client::Client;

/// `modelbus labels …`
#[derive(clap::Subcommand)]
pub enum LabelsCmd {
    /// Submits a label CSV: `prediction_id` or the spec's entity column, the
    /// target column with the spec's classes, optionally `event_time` (RFC 3339).
    Submit {
        /// Dataset whose models' predictions the labels belong to.
        #[arg(long)]
        dataset: String,
        /// The CSV file.
        file: PathBuf,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

impl LabelsCmd {
    /// Runs the subcommand.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            LabelsCmd::Submit {
                dataset,
                file,
                json,
            } => {
                let resp = client.submit_labels(&dataset, &file).await?;
                if json {
                    print_json(&resp)?;
                } else {
                    eprintln!(
                        "submitted {} labels for {dataset} ({} by prediction id, {} by entity) as {}",
                        resp["rows"],
                        resp["by_prediction_id"],
                        resp["by_entity"],
                        resp["labels_id"].as_str().unwrap_or("?")
                    );
                    eprintln!(
                        "the registry joins them to logged predictions; `modelbus monitor status --model M` shows realised performance"
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
