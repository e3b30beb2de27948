//! `modelbus schemas`: writes the JSON Schema of every event payload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

/// Arguments of `modelbus schemas`.
#[derive(clap::Args)]
pub struct SchemasArgs {
    /// Output directory.
    #[arg(long, default_value = "schemas")]
    out: PathBuf,
}

impl SchemasArgs {
    /// Writes one `<event>.schema.json` per payload and prints each path.
    pub fn run(self) -> Result<ExitCode> {
        let out = &self.out;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for (name, schema) in modelbus_core::events::schemas() {
            let path = out.join(format!("{name}.schema.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")?;
            println!("{}", path.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}
