//! `modelbus models`: registered models, listed, or one with its versions, or
//! one version with its lineage and gate decisions.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use modelbus_registry::types::{Lineage, ModelVersion, RegisteredModel};

use super::{metric, number, print_json};
use crate::client::Client;

/// `modelbus models ...`.
#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Lists registered models.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a model, or one version with its lineage and gate decisions.
    Show {
        /// Model name.
        name: String,
        /// Version.
        #[arg(long)]
        version: Option<u64>,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ModelsCmd {
    /// Runs it.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            ModelsCmd::List { json } => {
                let models = client.models().await?;
                if json {
                    print_json(&serde_json::json!({ "models": models }))?;
                } else {
                    print_list(&models);
                }
            }
            ModelsCmd::Show {
                name,
                version: Some(n),
                json,
            } => {
                let v = client.model_version(&name, n).await?;
                if json {
                    print_json(&v)?;
                } else {
                    print_version(&v);
                }
            }
            ModelsCmd::Show {
                name,
                version: None,
                json,
            } => {
                let m = client.model(&name).await?;
                if json {
                    print_json(&m)?;
                } else {
                    print_model(&m);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_list(models: &[RegisteredModel]) {
    println!("{:<24} {:>8} {:<24}", "MODEL", "VERSIONS", "ALIASES");
    for m in models {
        let aliases: Vec<String> = m.aliases.iter().map(|(k, v)| format!("{k}=v{v}")).collect();
        println!(
            "{:<24} {:>8} {:<24}",
            m.name,
            m.versions.len(),
            aliases.join(" ")
        );
    }
}

/// A lineage's fields by name, in the order `models show --version` lists them.
fn lineage_fields(l: &Lineage) -> [(&'static str, String); 8] {
    [
        ("batch_sha256", l.batch_sha256.clone()),
        ("code_revision", l.code_revision.clone()),
        ("feature_set_sha256", l.feature_set_sha256.clone()),
        ("pipeline_run", l.pipeline_run.clone()),
        ("report_sha256", l.report_sha256.clone()),
        ("seed", l.seed.to_string()),
        ("spec_digest", l.spec_digest.clone()),
        ("transform_sha256", l.transform_sha256.clone()),
    ]
}

fn print_version(v: &ModelVersion) {
    println!(
        "{} v{} [{}] {}",
        v.model, v.version, v.status, v.model_sha256
    );
    println!("  algorithm {}  author {}", v.algorithm, v.author);
    for (k, m) in &v.metrics {
        println!("  metric {k} = {}", number(*m));
    }
    for (k, l) in lineage_fields(&v.lineage) {
        println!("  lineage {k} = {l}");
    }
    for g in &v.gate_checks {
        println!(
            "  gate {} {}: {}",
            g.gate,
            if g.passed { "passed" } else { "FAILED" },
            g.detail
        );
    }
}

fn print_model(m: &RegisteredModel) {
    println!("{} (dataset {})", m.name, m.dataset);
    for (k, a) in &m.aliases {
        println!("  alias {k} → v{a}");
    }
    println!(
        "  {:>7} {:<10} {:<9} {:>8} {:>8} {:<28}",
        "VERSION", "STATUS", "ALGO", "ROC_AUC", "PR_AUC", "CREATED"
    );
    for mv in &m.versions {
        println!(
            "  {:>7} {:<10} {:<9} {:>8} {:>8} {:<28}",
            mv.version.to_string(),
            mv.status,
            mv.algorithm,
            metric(Some(&mv.metrics), "roc_auc"),
            metric(Some(&mv.metrics), "pr_auc"),
            mv.created_at
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_lists_every_field_in_the_order_of_its_json() {
        let listed: Vec<&str> = lineage_fields(&Lineage::default())
            .iter()
            .map(|(k, _)| *k)
            .collect();
        let json = serde_json::to_value(Lineage::default()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(listed, fields);
    }
}
