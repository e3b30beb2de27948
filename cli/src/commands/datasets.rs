//! `modelbus datasets`: registers spec files, lists datasets, and imports a
//! Great Expectations suite into a dataset's expectations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::print_json;
use crate::client::{ApiError, Client};

/// `modelbus datasets ...`.
#[derive(Subcommand)]
pub enum DatasetsCmd {
    /// Registers spec files (versioned by digest).
    Apply {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists datasets.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turns a Great Expectations 1.x suite (JSON export) into the dataset's
    /// expectations and registers the new spec version (or writes it with --out).
    /// Expectations that cannot be mapped are named; then nothing is applied unless
    /// --allow-unmapped.
    ImportGe {
        /// The suite's JSON export.
        suite: PathBuf,
        /// Dataset to import into.
        #[arg(long)]
        dataset: String,
        /// Base spec file (default: the dataset's registered spec).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Writes the resulting spec here instead of registering it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keeps the spec's own expectations and adds the suite's.
        #[arg(long)]
        append: bool,
        /// Proceeds even when some expectations cannot be mapped.
        #[arg(long)]
        allow_unmapped: bool,
    },
}

impl DatasetsCmd {
    /// Runs it; exit 3 when a spec or suite is refused as invalid.
    pub async fn run(self, client: &Client) -> Result<ExitCode> {
        match self {
            DatasetsCmd::Apply { files } => apply(client, &files).await,
            DatasetsCmd::List { json } => {
                let datasets = client.datasets().await?;
                if json {
                    print_json(&serde_json::json!({ "datasets": datasets }))?;
                } else {
                    println!("{:<24} {:>7} {:<64}", "DATASET", "VERSION", "SPEC DIGEST");
                    for d in &datasets {
                        println!(
                            "{:<24} {:>7} {:<64}",
                            d.name,
                            d.latest_version.to_string(),
                            d.latest_digest
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            DatasetsCmd::ImportGe {
                suite,
                dataset,
                spec,
                out,
                append,
                allow_unmapped,
            } => {
                import_ge(
                    client,
                    &suite,
                    &dataset,
                    spec.as_deref(),
                    out.as_deref(),
                    append,
                    allow_unmapped,
                )
                .await
            }
        }
    }
}

/// Registers each file in turn; stops with exit 3 at the first the registry
/// refuses as invalid.
async fn apply(client: &Client, files: &[PathBuf]) -> Result<ExitCode> {
    for f in files {
        let out = match client.apply_spec(f).await {
            Ok(out) => out,
            Err(e) if ApiError::is_invalid_input(&e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(3));
            }
            Err(e) => return Err(e),
        };
        println!(
            "{} {} version {} ({})",
            if out.created {
                "registered"
            } else {
                "unchanged:"
            },
            out.spec.dataset,
            out.spec.version,
            out.spec.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The spec text of a dataset and where it came from: from a file, or the
/// registered latest version.
pub(crate) async fn spec_text(
    client: &Client,
    dataset: Option<&str>,
    file: Option<&Path>,
) -> Result<(String, String)> {
    match (file, dataset) {
        (Some(f), _) => Ok((
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
            f.display().to_string(),
        )),
        (None, Some(d)) => {
            let v = client.dataset_spec(d).await?;
            Ok((v.toml, format!("registered spec of {d} v{}", v.version)))
        }
        (None, None) => anyhow::bail!("give --dataset NAME (its registered spec) or --spec FILE"),
    }
}

/// Removes the `[[expectations]]` tables from a spec's text, keeping the rest.
fn without_expectations(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("[[expectations]]") {
            skipping = true;
            continue;
        }
        if skipping && t.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `datasets import-ge`: maps the suite, checks the combined spec parses, and
/// registers it (or writes it to `out`); exit 3 when the suite cannot be
/// used.
async fn import_ge(
    client: &Client,
    suite: &Path,
    dataset: &str,
    spec_file: Option<&Path>,
    out: Option<&Path>,
    append: bool,
    allow_unmapped: bool,
) -> Result<ExitCode> {
    let json = std::fs::read_to_string(suite)
        .with_context(|| format!("cannot read {}", suite.display()))?;
    let (text, source) = spec_text(client, Some(dataset), spec_file).await?;
    let base = modelbus_dataset::spec::DatasetSpec::parse(&text, &source)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .spec;
    if base.name != dataset {
        anyhow::bail!("{source} is the spec of {:?}, not {dataset:?}", base.name);
    }
    let columns: Vec<String> = base.columns.iter().map(|c| c.name.clone()).collect();
    let imported = match modelbus_dataset::ge_import::import_ge_suite(&json, &columns) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", suite.display());
            return Ok(ExitCode::from(3));
        }
    };
    eprintln!(
        "suite {:?}: {} expectation(s) mapped",
        imported.name,
        imported.expectations.len()
    );
    for (i, note) in &imported.notes {
        eprintln!("  note: expectations[{i}]: {note}");
    }
    for (i, ty, reason) in &imported.unmapped {
        eprintln!("  NOT MAPPED: expectations[{i}] {ty}: {reason}");
    }
    if !imported.unmapped.is_empty() && !allow_unmapped {
        eprintln!(
            "{} expectation(s) cannot be mapped; nothing was applied (--allow-unmapped to proceed without them)",
            imported.unmapped.len()
        );
        return Ok(ExitCode::from(3));
    }
    let kept = if append {
        text.clone()
    } else {
        without_expectations(&text)
    };
    let result = format!(
        "{}\n# Imported from Great Expectations suite {:?} ({}).\n{}",
        kept.trim_end(),
        imported.name,
        suite.display(),
        imported.toml
    );
    // The combined spec must parse before it goes anywhere.
    if let Err(e) = modelbus_dataset::spec::DatasetSpec::parse(
        &result,
        &format!("{source} + {}", suite.display()),
    ) {
        eprintln!("error: the imported spec does not parse: {e}");
        return Ok(ExitCode::from(3));
    }
    match out {
        Some(path) => {
            std::fs::write(path, &result)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            let tmp = tempfile::NamedTempFile::new()?;
            std::fs::write(tmp.path(), &result)?;
            let spec = client.apply_spec(tmp.path()).await?.spec;
            println!(
                "registered {} version {} ({})",
                dataset, spec.version, spec.digest
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
