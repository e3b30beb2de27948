//! `modelbus audit`: the tamper-evident audit log, verified or exported.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::print_json;
use crate::client::Client;
use crate::governance::{self as g, AuditCheck};

/// `modelbus audit ...`.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Recomputes the hash chain and names the first entry that was changed,
    /// removed or reordered; exit 3 if the chain is broken.
    Verify {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Writes every entry as JSON lines.
    Export {
        /// File (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

impl AuditCmd {
    /// Runs it; `verify` exits 3 when the chain is broken.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            AuditCmd::Verify { json } => verify(client, json).await,
            AuditCmd::Export { out } => {
                let entries = client.audit_all().await?;
                let mut text = String::new();
                for e in &entries {
                    text.push_str(&serde_json::to_string(e)?);
                    text.push('\n');
                }
                match out {
                    Some(path) => {
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!("wrote {} entries to {}", entries.len(), path.display());
                    }
                    None => print!("{text}"),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

async fn verify(client: &Client, json: bool) -> Result<ExitCode> {
    let (check, entries) = g::audit_verify(client).await?;
    match check {
        AuditCheck::Intact { entries, head } => {
            if json {
                print_json(
                    &serde_json::json!({ "intact": true, "entries": entries, "head": head }),
                )?;
            } else {
                println!("audit log intact: {entries} entries, head {head}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCheck::Broken(b) => {
            if json {
                print_json(&serde_json::json!({
                    "intact": false, "entries": entries.len(),
                    "first_bad_entry": b.seq, "reason": b.reason,
                }))?;
            } else {
                println!("audit log BROKEN at entry {}: {}", b.seq, b.reason);
            }
            Ok(ExitCode::from(3))
        }
    }
}
