//! `modelbus approve` and `modelbus reject`: sign a statement about a version
//! with the approver's key and submit it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use modelbus_core::signing::StatementKind;

use super::{parse_env, print_json};
use crate::client::Client;
use crate::governance as g;

/// Arguments of `modelbus approve` and `modelbus reject`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Model.
    #[arg(long)]
    model: String,
    /// Version.
    #[arg(long)]
    version: u32,
    /// Environment.
    #[arg(long = "env", default_value = "production")]
    environment: String,
    /// Approver's private key.
    #[arg(long)]
    key: PathBuf,
    /// How long the approval stays valid.
    #[arg(long, default_value = "24h")]
    expires: String,
    /// Comment recorded with the signature.
    #[arg(long, default_value = "")]
    comment: String,
    /// Prints JSON.
    #[arg(long)]
    json: bool,
}

impl SignArgs {
    /// Signs a statement of `kind` (approve or reject), submits it and prints
    /// what it led to.
    pub async fn run(self, client: &Client, kind: StatementKind) -> Result<ExitCode> {
        let key = g::read_key(&self.key)?;
        let envelope = g::sign(
            client,
            kind,
            &self.model,
            self.version,
            parse_env(&self.environment)?,
            &key,
            g::parse_validity(&self.expires)?,
            &self.comment,
        )
        .await?;
        let outcome = client.submit_approval(&envelope).await?;
        if self.json {
            print_json(&outcome)?;
        } else {
            println!("{}", g::describe_outcome(&outcome));
        }
        Ok(ExitCode::SUCCESS)
    }
}
