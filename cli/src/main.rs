//! `modelbus`: configuration, telemetry and shutdown wiring around the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use modelbus_cli::client::Client;
use modelbus_cli::platform::{self, Service};
use modelbus_core::config::Config;
use serde_json::Value;

/// mimalloc keeps freed memory for reuse: the per-chunk Arrow buffers of streaming
/// validation no longer go back to the kernel (and come back page-faulted) each
/// chunk, which cost ~12% of the time in TLB shootdowns on two threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "modelbus",
    version,
    about = "From a dropped data batch to a validated, trained, approved and served model."
)]
struct Cli {
    /// Configuration file (TOML); every key can also be set as MODELBUS_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "MODELBUS_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (SQLite registry, artifacts, NATS store, keys); default ./.modelbus.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// API bearer token (`modelbus up` writes the first admin token to
    /// <state-dir>/admin.token; `modelbus tokens create` makes more).
    #[arg(long, global = true, env = "MODELBUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every service in this process (the development and demo set-up).
    Up {
        /// Dataset specs applied at start.
        #[arg(long, default_value = "config/datasets")]
        datasets_dir: PathBuf,
    },
    /// Runs the registry alone.
    Registry,
    /// Runs ingest alone.
    Ingest,
    /// Runs the features service alone.
    Features,
    /// Runs the trainer alone.
    Trainer,
    /// Runs the deployer alone.
    Deployer,
    /// Runs serving alone.
    Serving,
    /// Submits a CSV batch for a dataset.
    Submit {
        /// Dataset name.
        #[arg(long)]
        dataset: String,
        /// CSV file.
        file: PathBuf,
        /// Waits for the run to end: exit 0 deployed, 3 rejected, 1 otherwise.
        #[arg(long)]
        wait: bool,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "10m")]
        timeout: humantime::Duration,
    },
    /// Dataset specs.
    Datasets {
        #[command(subcommand)]
        cmd: DatasetsCmd,
    },
    /// Pipeline runs.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
    },
    /// Registered models.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Writes the JSON Schema of every event payload.
    Schemas {
        /// Output directory.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
    /// Prints the effective configuration with secrets masked.
    Config,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Validates a CSV file against a dataset's expectations locally, without the
    /// pipeline (like a Great Expectations checkpoint run); exit 3 when it fails.
    Validate {
        /// Dataset whose registered spec is used.
        #[arg(long)]
        dataset: Option<String>,
        /// A spec file instead of the registered spec (works offline).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// CSV file.
        file: PathBuf,
        /// Prints the JSON report.
        #[arg(long)]
        json: bool,
        /// Also writes the HTML data docs here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Promotion policies.
    Policies {
        #[command(subcommand)]
        cmd: PoliciesCmd,
    },
    /// Writes a new ed25519 key pair for signing approvals or rollbacks.
    Keygen {
        /// Approver id the key is for (printed with the key).
        #[arg(long)]
        id: String,
        /// Private key file (mode 0600); the public key goes to FILE.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// API tokens (admin).
    Tokens {
        #[command(subcommand)]
        cmd: TokensCmd,
    },
    /// The roster of people who may sign approvals and rollbacks (admin).
    Approvers {
        #[command(subcommand)]
        cmd: ApproversCmd,
    },
    /// Signs and submits an approval to promote a version.
    Approve(SignArgs),
    /// Signs and submits a rejection: the version may not be promoted.
    Reject(SignArgs),
    /// Signs and submits a rollback to an earlier version (operators).
    Rollback {
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
    },
    /// A model's deployment timeline: every desired-state write (with canary
    /// steps), completion, rollback and refusal, oldest first.
    Deployments {
        /// Model.
        #[arg(long)]
        model: String,
        /// Only this environment (`staging` or `production`).
        #[arg(long = "env")]
        environment: Option<String>,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Writes the compliance bundle of one model version (`evidence.json`,
    /// `evidence.html`, `SHA256SUMS`); `evidence verify DIR` checks one offline.
    #[command(args_conflicts_with_subcommands = true)]
    Evidence {
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
    },
}

#[derive(Subcommand)]
enum EvidenceCmd {
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

#[derive(clap::Args)]
struct SignArgs {
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

#[derive(Subcommand)]
enum TokensCmd {
    /// Creates a token and prints it (once).
    Create {
        /// Principal name (a person's approver id, or a service's name).
        #[arg(long)]
        name: String,
        /// Roles, comma-separated: viewer, producer, approver, operator, admin, service.
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

#[derive(Subcommand)]
enum ApproversCmd {
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

#[derive(Subcommand)]
enum AuditCmd {
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

#[derive(Subcommand)]
enum DatasetsCmd {
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

#[derive(Subcommand)]
enum RunsCmd {
    /// Lists pipeline runs, newest first.
    List {
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a pipeline run with its stages and its training run.
    Show {
        /// Pipeline run id (`pr-...`).
        id: String,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
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

#[derive(Subcommand)]
enum PoliciesCmd {
    /// Runs the Rego unit tests (`test_*` rules in `*_test.rego`) of a policy directory.
    Test {
        /// Policy directory (default: the policy shipped in the binary).
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Cost of governance: second signature → production, a canary, a signed
    /// rollback; medians over several runs on an embedded platform.
    Governance {
        /// Timed runs (one more fills production first).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// CSV file (default: the shipped Telco file).
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Bake time of each canary step.
        #[arg(long, default_value = "1s")]
        bake: humantime::Duration,
    },
    /// Submit → staging-serving latency over several runs, with the per-stage breakdown.
    Pipeline {
        /// Runs to time.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// CSV file (default: the shipped Telco file).
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
    },
    /// Validation speed: a file against a spec's expectations, CSV parsing included.
    Validate {
        /// CSV file.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Rows per chunk (as `ingest.chunk_rows`).
        #[arg(long, default_value_t = 16_384)]
        chunk_rows: usize,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Model quality and fit time: k-fold stratified CV of the spec's candidates.
    Train {
        /// CSV file.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Writes a seeded Telco-shaped CSV of any size (for the benchmarks).
    Generate {
        /// Rows to write.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Source file sampled from.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        from: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut c = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.state_dir {
        c.general.state_dir = dir.clone();
    }
    Ok(c)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(config: Config, services: &[Service], datasets_dir: Option<PathBuf>) -> Result<()> {
    let _telemetry = modelbus_core::telemetry::init(
        &config.telemetry,
        if services.len() > 1 { "up" } else { "service" },
    )?;
    modelbus_core::telemetry::describe_metrics();
    let p = platform::start(config, services).await?;
    let stop = p.shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    p.wait_ready(Duration::from_secs(60)).await?;
    let c = p.config.clone();
    let admin_token = std::fs::read_to_string(c.admin_token_path()).ok();
    if let Some(dir) = datasets_dir {
        for line in
            platform::apply_dataset_dir(&c.registry_http_url(), &dir, admin_token.as_deref())
                .await?
        {
            eprintln!("applied dataset spec {line}");
        }
    }
    if services.len() > 1 {
        eprintln!(
            "modelbus is up (state dir {})",
            c.general.state_dir.display()
        );
        eprintln!(
            "  registry  HTTP {}  gRPC {}",
            c.registry_http_url(),
            c.registry_grpc_url()
        );
        eprintln!("  ingest    {}", c.ingest_url());
        eprintln!(
            "  serving   staging http://{}  production http://{}",
            c.serving.staging_addr, c.serving.production_addr
        );
        eprintln!(
            "  NATS      {}",
            modelbus_core::config::mask_url(c.nats.url.as_deref().unwrap_or(""))
        );
        if c.admin_token_path().exists() {
            eprintln!(
                "  admin token in {} (export MODELBUS_TOKEN=$(cat {}))",
                c.admin_token_path().display(),
                c.admin_token_path().display()
            );
        }
        eprintln!("Ctrl-C stops.");
    }
    p.run_until_stopped().await
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn metric(v: &Value, k: &str) -> String {
    v["metrics"][k]
        .as_f64()
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "-".into())
}

async fn submit(
    client: &Client,
    dataset: &str,
    file: &std::path::Path,
    wait: bool,
    json: bool,
    timeout: Duration,
) -> Result<ExitCode> {
    let resp = client.submit(dataset, file).await?;
    let id = resp["pipeline_run"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !json {
        eprintln!(
            "submitted {} ({} bytes, sha256 {}) as pipeline run {id}{}",
            file.display(),
            resp["size_bytes"],
            resp["batch_sha256"].as_str().unwrap_or(""),
            if resp["created"] == Value::Bool(false) {
                " (already submitted: existing run)"
            } else {
                ""
            }
        );
    }
    if !wait {
        if json {
            print_json(&serde_json::json!({
                "pipeline_run": id, "batch_sha256": resp["batch_sha256"], "state": resp["state"], "created": resp["created"],
            }));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let run = client.wait_run(&id, timeout).await?;
    let state = run["state"].as_str().unwrap_or("failed").to_string();
    let mut model = Value::Null;
    if let (Some(name), Some(v)) = (run["model"].as_str(), run["model_version"].as_u64())
        && !name.is_empty()
        && v > 0
    {
        let mv = client.model_version(name, v).await?;
        model = serde_json::json!({ "name": name, "version": v, "model_sha256": mv["model_sha256"], "metrics": mv["metrics"], "status": mv["status"] });
    }
    if json {
        print_json(&serde_json::json!({
            "pipeline_run": id,
            "batch_sha256": run["batch_sha256"],
            "state": state,
            "model": model,
            "reasons": run["reasons"],
            "stages": run["stages"],
        }));
    } else {
        for s in run["stages"].as_array().into_iter().flatten() {
            eprintln!(
                "  {:<11} {:<10} {}",
                s["name"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
                s["detail"].as_str().unwrap_or("")
            );
        }
        match state.as_str() {
            "deployed" => eprintln!(
                "deployed {} v{} to staging (roc_auc {}, pr_auc {})",
                model["name"].as_str().unwrap_or(""),
                model["version"],
                metric(&model, "roc_auc"),
                metric(&model, "pr_auc")
            ),
            other => {
                eprintln!("run ended {other}:");
                for r in run["reasons"].as_array().into_iter().flatten() {
                    eprintln!("  - {}", r.as_str().unwrap_or(""));
                }
            }
        }
    }
    Ok(match state.as_str() {
        "deployed" => ExitCode::SUCCESS,
        "rejected" => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}

/// The spec text of a dataset: from a file, or the registered latest version.
async fn spec_text(
    client: &Client,
    dataset: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<(String, String)> {
    match (file, dataset) {
        (Some(f), _) => Ok((
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
            f.display().to_string(),
        )),
        (None, Some(d)) => {
            let v = client.dataset_spec(d).await?;
            Ok((
                v["toml"].as_str().unwrap_or_default().to_string(),
                format!("registered spec of {d} v{}", v["version"]),
            ))
        }
        (None, None) => anyhow::bail!("give --dataset NAME (its registered spec) or --spec FILE"),
    }
}

async fn validate(
    client: &Client,
    dataset: Option<&str>,
    spec_file: Option<&std::path::Path>,
    file: &std::path::Path,
    json: bool,
    html: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let (text, source) = spec_text(client, dataset, spec_file).await?;
    let parsed = modelbus_dataset::spec::DatasetSpec::parse(&text, &source)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let started = std::time::Instant::now();
    let mut report = tokio::task::spawn_blocking(move || {
        modelbus_dataset::validate::validate_csv(
            std::io::BufReader::with_capacity(1 << 20, f),
            std::sync::Arc::new(parsed.spec),
            65_536,
        )
    })
    .await?;
    let elapsed = started.elapsed();
    report.spec_digest = modelbus_core::ids::Sha256Digest::of(text.as_bytes()).to_hex();
    if let Some(h) = html {
        std::fs::write(h, modelbus_dataset::validation_html::render(&report))
            .with_context(|| format!("cannot write {}", h.display()))?;
    }
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        for r in &report.results {
            println!(
                "{} {:<52} {:<22} {}",
                if r.success {
                    "ok  "
                } else if r.severity == modelbus_dataset::spec::Severity::Warning {
                    "WARN"
                } else {
                    "FAIL"
                },
                r.expectation,
                r.kwargs
                    .get("column")
                    .and_then(|c| c.as_str())
                    .unwrap_or(""),
                if r.success { String::new() } else { r.reason() }
            );
        }
        println!(
            "{}: {} rows, {}/{} expectations met, {} warning(s), in {:.3}s",
            if report.success { "PASSED" } else { "FAILED" },
            report.rows,
            report.statistics.successful_expectations,
            report.statistics.evaluated_expectations,
            report.warnings().len(),
            elapsed.as_secs_f64()
        );
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
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

async fn import_ge(
    client: &Client,
    suite: &std::path::Path,
    dataset: &str,
    spec_file: Option<&std::path::Path>,
    out: Option<&std::path::Path>,
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
            let v = client.apply_spec(tmp.path()).await?;
            println!(
                "registered {} version {} ({})",
                dataset,
                v["spec"]["version"],
                v["spec"]["digest"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_env(s: &str) -> Result<modelbus_core::ids::Environment> {
    s.parse().map_err(|e| anyhow::anyhow!("--env {s:?}: {e}"))
}

async fn sign_and_submit(
    client: &Client,
    kind: modelbus_core::signing::StatementKind,
    a: &SignArgs,
) -> Result<ExitCode> {
    use modelbus_cli::governance as g;
    let key = g::read_key(&a.key)?;
    let envelope = g::sign(
        client,
        kind,
        &a.model,
        a.version,
        parse_env(&a.environment)?,
        &key,
        g::parse_validity(&a.expires)?,
        &a.comment,
    )
    .await?;
    let out = client
        .post_json("/v1/approvals", &serde_json::to_value(&envelope)?)
        .await?;
    if a.json {
        print_json(&out);
    } else {
        println!("{}", g::describe_outcome(&out));
    }
    Ok(ExitCode::SUCCESS)
}

async fn governance(client: &Client, cmd: Cmd) -> Result<ExitCode> {
    use modelbus_cli::governance as g;
    use modelbus_core::signing::StatementKind;
    match cmd {
        Cmd::Keygen { id, out } => {
            let (public, key_id) = g::keygen(&out)?;
            eprintln!(
                "wrote {} (private, mode 0600) and {} for {id} (key {key_id})",
                out.display(),
                modelbus_core::signing::public_key_path(&out).display()
            );
            print!("{public}");
        }
        Cmd::Tokens {
            cmd: TokensCmd::Create { name, role },
        } => {
            let v = client
                .post_json(
                    "/v1/tokens",
                    &serde_json::json!({ "name": name, "roles": role }),
                )
                .await?;
            eprintln!(
                "token {} for {} ({}); it is shown once:",
                v["info"]["id"].as_str().unwrap_or(""),
                name,
                role
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        Cmd::Tokens {
            cmd: TokensCmd::List { json },
        } => {
            let v = client.get_json("/v1/tokens").await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<14} {:<24} {:<28} {:<28} REVOKED",
                    "ID", "PRINCIPAL", "ROLES", "CREATED"
                );
                for t in v["tokens"].as_array().into_iter().flatten() {
                    let roles: Vec<&str> = t["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str())
                        .collect();
                    println!(
                        "{:<14} {:<24} {:<28} {:<28} {}",
                        t["id"].as_str().unwrap_or(""),
                        t["principal"].as_str().unwrap_or(""),
                        roles.join(","),
                        t["created_at"].as_str().unwrap_or(""),
                        t["revoked_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Tokens {
            cmd: TokensCmd::Revoke { id, name },
        } => {
            let v = client
                .post_json(
                    "/v1/tokens/revoke",
                    &serde_json::json!({ "id": id, "name": name }),
                )
                .await?;
            for t in v["revoked"].as_array().into_iter().flatten() {
                println!(
                    "revoked token {} of {}",
                    t["id"].as_str().unwrap_or(""),
                    t["principal"].as_str().unwrap_or("")
                );
            }
        }
        Cmd::Approvers {
            cmd:
                ApproversCmd::Add {
                    id,
                    public_key_file,
                    role,
                },
        } => {
            let pem = std::fs::read_to_string(&public_key_file)
                .with_context(|| format!("cannot read {}", public_key_file.display()))?;
            let a = client
                .post_json(
                    "/v1/approvers",
                    &serde_json::json!({ "id": id, "public_key": pem, "role": role }),
                )
                .await?;
            println!(
                "added {} as {} (key {})",
                a["id"].as_str().unwrap_or(""),
                a["role"].as_str().unwrap_or(""),
                a["key_id"].as_str().unwrap_or("")
            );
        }
        Cmd::Approvers {
            cmd: ApproversCmd::List { json },
        } => {
            let v = client.get_json("/v1/approvers").await?;
            if json {
                print_json(&v);
            } else {
                println!("{:<24} {:<9} {:<72} REVOKED", "ID", "ROLE", "KEY");
                for a in v["approvers"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<9} {:<72} {}",
                        a["id"].as_str().unwrap_or(""),
                        a["role"].as_str().unwrap_or(""),
                        a["key_id"].as_str().unwrap_or(""),
                        a["revoked_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Approvers {
            cmd: ApproversCmd::Revoke { id },
        } => {
            let a = client
                .post_json(
                    &format!("/v1/approvers/{id}/revoke"),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "revoked {} at {}",
                a["id"].as_str().unwrap_or(""),
                a["revoked_at"].as_str().unwrap_or("")
            );
        }
        Cmd::Approve(a) => return sign_and_submit(client, StatementKind::Approve, &a).await,
        Cmd::Reject(a) => return sign_and_submit(client, StatementKind::Reject, &a).await,
        Cmd::Rollback {
            environment,
            model,
            to_version,
            key,
            reason,
            expires,
        } => {
            let env = parse_env(&environment)?;
            let key = g::read_key(&key)?;
            let (model, version) =
                g::rollback_target(client, env, model.as_deref(), to_version).await?;
            let envelope = g::sign(
                client,
                StatementKind::Rollback,
                &model,
                version,
                env,
                &key,
                g::parse_validity(&expires)?,
                &reason,
            )
            .await?;
            let out = client
                .post_json("/v1/rollbacks", &serde_json::to_value(&envelope)?)
                .await?;
            println!(
                "rollback of {model} in {env} to v{version} requested (audit entry {}); the deployer verifies and applies it",
                out["audit_seq"]
            );
        }
        Cmd::Audit {
            cmd: AuditCmd::Verify { json },
        } => {
            let (check, entries) = g::audit_verify(client).await?;
            let (code, v) = match check {
                g::AuditCheck::Intact { entries, head } => (
                    ExitCode::SUCCESS,
                    serde_json::json!({ "intact": true, "entries": entries, "head": head }),
                ),
                g::AuditCheck::Broken(b) => (
                    ExitCode::from(3),
                    serde_json::json!({
                        "intact": false, "entries": entries.len(),
                        "first_bad_entry": b.seq, "reason": b.reason,
                    }),
                ),
            };
            if json {
                print_json(&v);
            } else if v["intact"] == true {
                println!(
                    "audit log intact: {} entries, head {}",
                    v["entries"],
                    v["head"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "audit log BROKEN at entry {}: {}",
                    v["first_bad_entry"],
                    v["reason"].as_str().unwrap_or("")
                );
            }
            return Ok(code);
        }
        Cmd::Audit {
            cmd: AuditCmd::Export { out },
        } => {
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
        }
        _ => anyhow::bail!("internal error: not a governance command"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = load_config(&cli)?;
    let client = Client::new(
        &config.registry_http_url(),
        &config.ingest_url(),
        cli.token.as_deref(),
    );
    match cli.cmd {
        cmd @ (Cmd::Keygen { .. }
        | Cmd::Tokens { .. }
        | Cmd::Approvers { .. }
        | Cmd::Approve(_)
        | Cmd::Reject(_)
        | Cmd::Rollback { .. }
        | Cmd::Audit { .. }) => return governance(&client, cmd).await,
        Cmd::Deployments {
            model,
            environment,
            json,
        } => {
            let v = client
                .get_json(&format!("/v1/models/{model}/deployments"))
                .await?;
            let events: Vec<&Value> = v["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    environment
                        .as_deref()
                        .is_none_or(|env| e["environment"] == env)
                })
                .collect();
            if json {
                print_json(&serde_json::json!({ "model": model, "timeline": events }));
            } else if events.is_empty() {
                println!("{model} has no deployment events");
            } else {
                for e in events {
                    println!(
                        "{:<30} {:<10} v{:<4} {:<11} {}",
                        e["at"].as_str().unwrap_or(""),
                        e["environment"].as_str().unwrap_or(""),
                        e["version"],
                        e["kind"].as_str().unwrap_or(""),
                        e["detail"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Evidence {
            cmd:
                Some(EvidenceCmd::Verify {
                    dir,
                    trusted_keys,
                    json,
                }),
            ..
        } => {
            let (e, findings) = modelbus_cli::evidence::verify_dir(&dir, &trusted_keys)?;
            let ok = modelbus_cli::evidence::all_ok(&findings);
            if json {
                print_json(&serde_json::json!({
                    "model": e.model, "version": e.version, "ok": ok, "findings": findings,
                }));
            } else {
                modelbus_cli::evidence::print_findings(&findings);
                println!(
                    "evidence of {} v{}: {}",
                    e.model,
                    e.version,
                    if ok { "verified" } else { "FAILED" }
                );
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        Cmd::Evidence {
            cmd: None,
            model,
            version,
            out,
        } => {
            let (Some(model), Some(version), Some(out)) = (model, version, out) else {
                anyhow::bail!(
                    "evidence needs --model, --version and --out (or `evidence verify DIR`)"
                );
            };
            let x = modelbus_cli::evidence::export(&client, &model, version, &out).await?;
            let e = &x.evidence;
            modelbus_cli::evidence::print_findings(&x.findings);
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
            if !modelbus_cli::evidence::all_ok(&x.findings) {
                return Ok(ExitCode::from(3));
            }
        }
        Cmd::Up { datasets_dir } => {
            serve(config, &Service::ALL, Some(datasets_dir)).await?;
        }
        Cmd::Registry => serve(config, &[Service::Registry], None).await?,
        Cmd::Ingest => serve(config, &[Service::Ingest], None).await?,
        Cmd::Features => serve(config, &[Service::Features], None).await?,
        Cmd::Trainer => serve(config, &[Service::Trainer], None).await?,
        Cmd::Deployer => serve(config, &[Service::Deployer], None).await?,
        Cmd::Serving => serve(config, &[Service::Serving], None).await?,
        Cmd::Submit {
            dataset,
            file,
            wait,
            json,
            timeout,
        } => {
            return submit(&client, &dataset, &file, wait, json, timeout.into()).await;
        }
        Cmd::Datasets {
            cmd: DatasetsCmd::Apply { files },
        } => {
            for f in files {
                let out = match client.apply_spec(&f).await {
                    Ok(out) => out,
                    Err(e) if modelbus_cli::client::ApiError::is_invalid_input(&e) => {
                        eprintln!("error: {e:#}");
                        return Ok(ExitCode::from(3));
                    }
                    Err(e) => return Err(e),
                };
                let s = &out["spec"];
                println!(
                    "{} {} version {} ({})",
                    if out["created"] == Value::Bool(true) {
                        "registered"
                    } else {
                        "unchanged:"
                    },
                    s["dataset"].as_str().unwrap_or(""),
                    s["version"],
                    s["digest"].as_str().unwrap_or("")
                );
            }
        }
        Cmd::Datasets {
            cmd: DatasetsCmd::List { json },
        } => {
            let v = client.datasets().await?;
            if json {
                print_json(&v);
            } else {
                println!("{:<24} {:>7} {:<64}", "DATASET", "VERSION", "SPEC DIGEST");
                for d in v["datasets"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:>7} {:<64}",
                        d["name"].as_str().unwrap_or(""),
                        d["latest_version"].to_string(),
                        d["latest_digest"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Runs {
            cmd:
                RunsCmd::List {
                    dataset,
                    limit,
                    json,
                },
        } => {
            let v = client.pipeline_runs(dataset.as_deref(), limit).await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<24} {:<16} {:<10} {:<16} {:<28}",
                    "PIPELINE RUN", "DATASET", "STATE", "MODEL", "CREATED"
                );
                for r in v["pipeline_runs"].as_array().into_iter().flatten() {
                    let model = match r["model_version"].as_u64() {
                        Some(n) if n > 0 => format!("{} v{n}", r["model"].as_str().unwrap_or("")),
                        _ => "-".into(),
                    };
                    println!(
                        "{:<24} {:<16} {:<10} {:<16} {:<28}",
                        r["id"].as_str().unwrap_or(""),
                        r["dataset"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        model,
                        r["created_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Runs {
            cmd: RunsCmd::Show { id, json },
        } => {
            let mut r = client.pipeline_run(&id).await?;
            let mut training = Value::Null;
            if let (Some(name), Some(v)) = (r["model"].as_str(), r["model_version"].as_u64())
                && v > 0
            {
                let mv = client.model_version(name, v).await?;
                if let Some(run_id) = mv["run_id"].as_str() {
                    training = client.run(run_id).await?;
                }
            }
            if json {
                r["training_run"] = training;
                print_json(&r);
            } else {
                println!(
                    "pipeline run {}  [{}]",
                    r["id"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or("")
                );
                println!(
                    "  dataset   {}  spec {}",
                    r["dataset"].as_str().unwrap_or(""),
                    r["spec_digest"].as_str().unwrap_or("")
                );
                println!(
                    "  batch     {} ({} bytes, {} rows) by {}",
                    r["batch_sha256"].as_str().unwrap_or(""),
                    r["size_bytes"],
                    r["rows"],
                    r["submitted_by"].as_str().unwrap_or("")
                );
                println!("  report    {}", r["report_sha256"].as_str().unwrap_or("-"));
                for s in r["stages"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<11} {:<10} {} → {}  {}",
                        s["name"].as_str().unwrap_or(""),
                        s["status"].as_str().unwrap_or(""),
                        s["started_at"].as_str().unwrap_or(""),
                        s["finished_at"].as_str().unwrap_or(""),
                        s["detail"].as_str().unwrap_or("")
                    );
                }
                for reason in r["reasons"].as_array().into_iter().flatten() {
                    println!("  reason: {}", reason.as_str().unwrap_or(""));
                }
                if !training.is_null() {
                    println!("  training run {}", training["id"].as_str().unwrap_or(""));
                    for (k, v) in training["metrics"].as_object().into_iter().flatten() {
                        println!("    metric {k} = {v}");
                    }
                    for (k, v) in training["params"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| !k.starts_with("importance."))
                    {
                        println!("    param  {k} = {}", v.as_str().unwrap_or(""));
                    }
                    for a in training["artifacts"].as_array().into_iter().flatten() {
                        println!(
                            "    artifact {} {}",
                            a["name"].as_str().unwrap_or(""),
                            a["sha256"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        Cmd::Models {
            cmd: ModelsCmd::List { json },
        } => {
            let v = client.models().await?;
            if json {
                print_json(&v);
            } else {
                println!("{:<24} {:>8} {:<24}", "MODEL", "VERSIONS", "ALIASES");
                for m in v["models"].as_array().into_iter().flatten() {
                    let aliases: Vec<String> = m["aliases"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}=v{v}"))
                        .collect();
                    println!(
                        "{:<24} {:>8} {:<24}",
                        m["name"].as_str().unwrap_or(""),
                        m["versions"].as_array().map(|a| a.len()).unwrap_or(0),
                        aliases.join(" ")
                    );
                }
            }
        }
        Cmd::Models {
            cmd:
                ModelsCmd::Show {
                    name,
                    version,
                    json,
                },
        } => {
            let v = match version {
                Some(n) => client.model_version(&name, n).await?,
                None => client.model(&name).await?,
            };
            if json {
                print_json(&v);
            } else if version.is_some() {
                println!(
                    "{} v{} [{}] {}",
                    v["model"].as_str().unwrap_or(""),
                    v["version"],
                    v["status"].as_str().unwrap_or(""),
                    v["model_sha256"].as_str().unwrap_or("")
                );
                println!(
                    "  algorithm {}  author {}",
                    v["algorithm"].as_str().unwrap_or(""),
                    v["author"].as_str().unwrap_or("")
                );
                for (k, m) in v["metrics"].as_object().into_iter().flatten() {
                    println!("  metric {k} = {m}");
                }
                for (k, l) in v["lineage"].as_object().into_iter().flatten() {
                    println!(
                        "  lineage {k} = {}",
                        l.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| l.to_string())
                    );
                }
                for g in v["gate_checks"].as_array().into_iter().flatten() {
                    println!(
                        "  gate {} {}: {}",
                        g["gate"].as_str().unwrap_or(""),
                        if g["passed"] == Value::Bool(true) {
                            "passed"
                        } else {
                            "FAILED"
                        },
                        g["detail"].as_str().unwrap_or("")
                    );
                }
            } else {
                println!(
                    "{} (dataset {})",
                    v["name"].as_str().unwrap_or(""),
                    v["dataset"].as_str().unwrap_or("")
                );
                for (k, a) in v["aliases"].as_object().into_iter().flatten() {
                    println!("  alias {k} → v{a}");
                }
                println!(
                    "  {:>7} {:<10} {:<9} {:>8} {:>8} {:<28}",
                    "VERSION", "STATUS", "ALGO", "ROC_AUC", "PR_AUC", "CREATED"
                );
                for mv in v["versions"].as_array().into_iter().flatten() {
                    println!(
                        "  {:>7} {:<10} {:<9} {:>8} {:>8} {:<28}",
                        mv["version"].to_string(),
                        mv["status"].as_str().unwrap_or(""),
                        mv["algorithm"].as_str().unwrap_or(""),
                        metric(mv, "roc_auc"),
                        metric(mv, "pr_auc"),
                        mv["created_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Schemas { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, schema) in modelbus_core::events::schemas() {
                let path = out.join(format!("{name}.schema.json"));
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")?;
                println!("{}", path.display());
            }
        }
        Cmd::Config => print!("{}", config.to_redacted_toml()),
        Cmd::Bench {
            cmd:
                BenchCmd::Governance {
                    runs,
                    data,
                    spec,
                    bake,
                },
        } => {
            modelbus_cli::bench::governance(config, runs, &data, &spec, bake.into()).await?;
        }
        Cmd::Bench {
            cmd: BenchCmd::Pipeline { runs, data, spec },
        } => {
            modelbus_cli::bench::pipeline(config, runs, &data, &spec).await?;
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Validate {
                    data,
                    spec,
                    runs,
                    chunk_rows,
                    json,
                },
        } => {
            modelbus_cli::bench::validate(&data, &spec, runs, chunk_rows, json)?;
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Train {
                    data,
                    spec,
                    folds,
                    json,
                },
        } => {
            modelbus_cli::bench::train(&data, &spec, folds, json)?;
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Generate {
                    rows,
                    seed,
                    from,
                    out,
                },
        } => {
            let bytes = modelbus_cli::bench::generate(&from, rows, seed, &out)?;
            eprintln!("wrote {rows} rows ({bytes} bytes) to {}", out.display());
        }
        Cmd::Validate {
            dataset,
            spec,
            file,
            json,
            html,
        } => {
            return validate(
                &client,
                dataset.as_deref(),
                spec.as_deref(),
                &file,
                json,
                html.as_deref(),
            )
            .await;
        }
        Cmd::Policies {
            cmd: PoliciesCmd::Test { dir },
        } => {
            let set = match &dir {
                Some(d) => modelbus_registry::policy::PolicySet::load_dir(d)?,
                None => modelbus_registry::policy::PolicySet::default_set(),
            };
            let outcomes = set.run_tests()?;
            let failed = outcomes.iter().filter(|o| !o.passed).count();
            for o in &outcomes {
                println!("{} {}", if o.passed { "PASS" } else { "FAIL" }, o.name);
            }
            println!(
                "{} passed, {failed} failed (policy {})",
                outcomes.len() - failed,
                set.digest()
            );
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Datasets {
            cmd:
                DatasetsCmd::ImportGe {
                    suite,
                    dataset,
                    spec,
                    out,
                    append,
                    allow_unmapped,
                },
        } => {
            return import_ge(
                &client,
                &suite,
                &dataset,
                spec.as_deref(),
                out.as_deref(),
                append,
                allow_unmapped,
            )
            .await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
