//! `modelbus keygen`: a new ed25519 key pair for signing approvals or rollbacks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::governance;

/// Arguments of `modelbus keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Approver id the key is for (printed with the key).
    #[arg(long)]
    id: String,
    /// Private key file (mode 0600); the public key goes to FILE.pub.
    #[arg(long)]
    out: PathBuf,
}

impl KeygenArgs {
    /// Writes both keys and prints the public one.
    pub fn run(self) -> Result<ExitCode> {
        let out = &self.out;
        let (public, key_id) = governance::keygen(out)?;
        eprintln!(
            "wrote {} (private, mode 0600) and {} for {} (key {key_id})",
            out.display(),
            modelbus_core::signing::public_key_path(out).display(),
            self.id
        );
        print!("{public}");
        Ok(ExitCode::SUCCESS)
    }
}
