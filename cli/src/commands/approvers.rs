//! `modelbus approvers`: the roster of people who may sign approvals and
//! rollbacks (admin).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::print_json;
use crate::client::Client;

/// `modelbus approvers ...`.
#[derive(Subcommand)]
pub enum ApproversCmd {
    /// Adds a person to the roster.
    Add {
        /// Approver id: the principal name of their API token.
        #[arg(long)]
        id: String,
        /// Their public key (from `modelbus keygen`).
        #[arg(long)]
        public_key_file: PathBuf,
        /// approver, operator or admin.
        #[arg(long, default_value = "approver")]
        role: String,
    },
    /// Lists the roster.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revokes an approver: their approvals stop counting.
    Revoke {
        /// Approver id.
        #[arg(long)]
        id: String,
    },
}

impl ApproversCmd {
    /// Runs it.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            ApproversCmd::Add {
                id,
                public_key_file,
                role,
            } => {
                let pem = std::fs::read_to_string(&public_key_file)
                    .with_context(|| format!("cannot read {}", public_key_file.display()))?;
                let a = client.add_approver(&id, &pem, &role).await?;
                println!("added {} as {} (key {})", a.id, a.role, a.key_id);
            }
            ApproversCmd::List { json } => {
                let approvers = client.approvers().await?;
                if json {
                    print_json(&serde_json::json!({ "approvers": approvers }))?;
                } else {
                    println!("{:<24} {:<9} {:<72} REVOKED", "ID", "ROLE", "KEY");
                    for a in &approvers {
                        println!(
                            "{:<24} {:<9} {:<72} {}",
                            a.id,
                            a.role.as_str(),
                            a.key_id,
                            a.revoked_at
                        );
                    }
                }
            }
            ApproversCmd::Revoke { id } => {
                let a = client.revoke_approver(&id).await?;
                println!("revoked {} at {}", a.id, a.revoked_at);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
