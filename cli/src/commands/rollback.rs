//! `modelbus rollback`: an operator's signed request to return an environment
//! to an earlier version; the deployer verifies and applies it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use modelbus_core::signing::StatementKind;

use super::parse_env;
use crate::client::Client;
use crate::governance as g;

/// Arguments of `modelbus rollback`.
#[derive(clap::Args)]
pub struct RollbackArgs {
    /// Environment to roll back.
    #[arg(long = "env")]
    environment: String,
    /// Model (default: the one model deployed there).
    #[arg(long)]
    model: Option<String>,
    /// Version to return to (default: the one that served before the current one).
    #[arg(long)]
    to_version: Option<u32>,
    /// Operator's private key.
    #[arg(long)]
    key: PathBuf,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// How long the signed request stays valid.
    #[arg(long, default_value = "1h")]
    expires: String,
}

impl RollbackArgs {
    /// Finds the target, signs the rollback and submits it.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let env = parse_env(&self.environment)?;
        let key = g::read_key(&self.key)?;
        let (model, version) =
            g::rollback_target(client, env, self.model.as_deref(), self.to_version).await?;
        let envelope = g::sign(
            client,
            StatementKind::Rollback,
            &model,
            version,
            env,
            &key,
            g::parse_validity(&self.expires)?,
            &self.reason,
        )
        .await?;
        let outcome = client.submit_rollback(&envelope).await?;
        println!(
            "rollback of {model} in {env} to v{version} requested (audit entry {}); the deployer verifies and applies it",
            outcome.audit_seq
        );
        Ok(ExitCode::SUCCESS)
    }
}
