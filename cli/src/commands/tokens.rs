//! `modelbus tokens`: API tokens (admin).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::print_json;
use crate::client::Client;

/// `modelbus tokens ...`.
#[derive(Subcommand)]
pub enum TokensCmd {
    /// Creates a token and prints it (once).
    Create {
        /// Principal name (a person's approver id, or a service's name).
        #[arg(long)]
        name: String,
        /// Roles, comma-separated: viewer, producer, approver, operator, admin,
        /// ingest-service, features-service, trainer-service, serving-service.
        #[arg(long)]
        role: String,
    },
    /// Lists tokens (never their secrets).
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token by id, or every token of a principal.
    Revoke {
        /// Token id.
        #[arg(long, conflicts_with = "name")]
        id: Option<String>,
        /// Principal name.
        #[arg(long)]
        name: Option<String>,
    },
}

impl TokensCmd {
    /// Runs it.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            TokensCmd::Create { name, role } => {
                let t = client.create_token(&name, &role).await?;
                eprintln!(
                    "token {} for {} ({}); it is shown once:",
                    t.info.id, name, role
                );
                println!("{}", t.token);
            }
            TokensCmd::List { json } => {
                let tokens = client.tokens().await?;
                if json {
                    print_json(&serde_json::json!({ "tokens": tokens }))?;
                } else {
                    println!(
                        "{:<14} {:<24} {:<28} {:<28} REVOKED",
                        "ID", "PRINCIPAL", "ROLES", "CREATED"
                    );
                    for t in &tokens {
                        let roles: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
                        println!(
                            "{:<14} {:<24} {:<28} {:<28} {}",
                            t.id,
                            t.principal,
                            roles.join(","),
                            t.created_at,
                            t.revoked_at
                        );
                    }
                }
            }
            TokensCmd::Revoke { id, name } => {
                for t in client.revoke_tokens(id.as_deref(), name.as_deref()).await? {
                    println!("revoked token {} of {}", t.id, t.principal);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
