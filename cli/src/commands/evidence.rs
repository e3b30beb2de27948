//! `modelbus evidence`: writes the compliance bundle of one model version, or
//! (`evidence verify DIR`) checks one offline. The bundle itself is built and
//! checked in [`crate::evidence`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::print_json;
use crate::client::Client;
use crate::evidence::{all_ok, export, print_findings, verify_dir};

/// Arguments of `modelbus evidence`: the version to export, or a subcommand.
#[derive(clap::Args)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    cmd: Option<EvidenceCmd>,
    /// Model.
    #[arg(long, required = true)]
    model: Option<String>,
    /// Version.
    #[arg(long, required = true)]
    version: Option<u32>,
    /// Directory to write the bundle to.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
}

/// `modelbus evidence ...`.
#[derive(Subcommand)]
pub enum EvidenceCmd {
    /// Checks a bundle with no access to the platform: checksums, signatures,
    /// the audit chain segment, audit entries for every claim; exit 3 if a
    /// check fails.
    Verify {
        /// The bundle's directory.
        dir: PathBuf,
        /// A public key you hold (repeatable): every signature must be by one of them.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<PathBuf>,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

impl EvidenceArgs {
    /// Exports or verifies; exit 3 when a check fails.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        let ok = match self.cmd {
            Some(EvidenceCmd::Verify {
                dir,
                trusted_keys,
                json,
            }) => {
                let (e, findings) = verify_dir(&dir, &trusted_keys)?;
                let ok = all_ok(&findings);
                if json {
                    print_json(&serde_json::json!({
                        "model": e.model, "version": e.version, "ok": ok, "findings": findings,
                    }))?;
                } else {
                    print_findings(&findings);
                    println!(
                        "evidence of {} v{}: {}",
                        e.model,
                        e.version,
                        if ok { "verified" } else { "FAILED" }
                    );
                }
                ok
            }
            None => {
                let (Some(model), Some(version), Some(out)) = (self.model, self.version, self.out)
                else {
                    anyhow::bail!(
                        "evidence needs --model, --version and --out (or `evidence verify DIR`)"
                    );
                };
                let x = export(client, &model, version, &out).await?;
                let e = &x.evidence;
                print_findings(&x.findings);
                println!(
                    "wrote the evidence of {} v{} to {} ({} signed statements, {} audit entries){}",
                    e.model,
                    e.version,
                    out.display(),
                    e.signed.len() + e.automation.len(),
                    e.audit.entries.len(),
                    x.artifact_sha256
                        .as_deref()
                        .map(|d| format!("; the registry keeps it as artifact sha256:{d}"))
                        .unwrap_or_default()
                );
                all_ok(&x.findings)
            }
        };
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}
