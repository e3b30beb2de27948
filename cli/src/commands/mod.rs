//! The `modelbus` command line: the global options, the command groups (each
//! module owns its arguments and how it runs), and [`command`], which adds one
//! `modelbus <service>` subcommand per row of [`crate::platform::SERVICES`].
//!
//! A new command is a module here with its `clap` arguments and a `run`, and
//! one variant of [`Cmd`] that hands over to it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand};
use modelbus_core::config::Config;
use modelbus_core::signing::StatementKind;

use crate::client::Client;
use crate::platform::SERVICES;

pub mod approve;
pub mod approvers;
pub mod audit;
pub mod bench;
pub mod config;
pub mod datasets;
pub mod deployments;
pub mod drift;
pub mod evidence;
pub mod keygen;
pub mod labels;
pub mod models;
pub mod monitor;
pub mod policies;
pub mod rollback;
pub mod runs;
pub mod schemas;
pub mod submit;
pub mod tokens;
pub mod up;
pub mod validate;

/// The command line of every command but `modelbus <service>` (see [`command`]).
#[derive(Parser)]
#[command(
    name = "modelbus",
    version,
    about = "From a dropped data batch to a validated, trained, approved and served model."
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub globals: Globals,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Options every command takes (`modelbus <service>` too): where the
/// configuration and state are, and the API token.
#[derive(clap::Args)]
pub struct Globals {
    /// Configuration file (TOML); every key can also be set as MODELBUS_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "MODELBUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (SQLite registry, artifacts, NATS store, keys); default ./.modelbus.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// API bearer token (`modelbus up` writes the first admin token to
    /// <state-dir>/admin.token; `modelbus tokens create` makes more).
    #[arg(long, global = true, env = "MODELBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Globals {
    /// The configuration in force: the file (and environment), with
    /// `--state-dir` over both.
    pub fn load_config(&self) -> Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.state_dir {
            c.general.state_dir = dir.clone();
        }
        Ok(c)
    }

    /// A client of the registry and ingest that `config` names, with the token.
    pub fn client(&self, config: &Config) -> Client {
        Client::new(
            &config.registry_http_url(),
            &config.ingest_url(),
            self.token.as_deref(),
        )
    }
}

/// Every command but `modelbus <service>`, in the order `--help` lists them.
#[derive(Subcommand)]
pub enum Cmd {
    /// Runs every service in this process (the development and demo set-up).
    Up(up::UpArgs),
    /// Submits a CSV batch for a dataset.
    Submit(submit::SubmitArgs),
    /// Dataset specs.
    Datasets {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: datasets::DatasetsCmd,
    },
    /// Pipeline runs.
    Runs {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Registered models.
    Models {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: models::ModelsCmd,
    },
    /// Ground truth for earlier predictions.
    Labels {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: labels::LabelsCmd,
    },
    /// Runs the monitor alone; `monitor status` shows what it saw of live traffic.
    Monitor {
        /// Its subcommand (none runs the monitor service).
        #[command(subcommand)]
        cmd: Option<monitor::MonitorCmd>,
    },
    /// Writes the JSON Schema of every event payload.
    Schemas(schemas::SchemasArgs),
    /// Prints the effective configuration with secrets masked.
    Config,
    /// Benchmarks.
    Bench {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Validates a CSV file against a dataset's expectations locally, without the
    /// pipeline (like a Great Expectations checkpoint run); exit 3 when it fails.
    Validate(validate::ValidateArgs),
    /// Data drift between a reference and a current CSV file, locally (like an
    /// Evidently data drift report); exit 3 when any column or the data set drifts.
    Drift(drift::DriftArgs),
    /// Promotion policies.
    Policies {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: policies::PoliciesCmd,
    },
    /// Writes a new ed25519 key pair for signing approvals or rollbacks.
    Keygen(keygen::KeygenArgs),
    /// API tokens (admin).
    Tokens {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: tokens::TokensCmd,
    },
    /// The roster of people who may sign approvals and rollbacks (admin).
    Approvers {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: approvers::ApproversCmd,
    },
    /// Signs and submits an approval to promote a version.
    Approve(approve::SignArgs),
    /// Signs and submits a rejection: the version may not be promoted.
    Reject(approve::SignArgs),
    /// Signs and submits a rollback to an earlier version (operators).
    Rollback(rollback::RollbackArgs),
    /// A model's deployment timeline: every desired-state write (with canary
    /// steps), completion, rollback and refusal, oldest first.
    Deployments(deployments::DeploymentsArgs),
    /// The tamper-evident audit log.
    Audit {
        /// Its subcommand.
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// Writes the compliance bundle of one model version (`evidence.json`,
    /// `evidence.html`, `SHA256SUMS`); `evidence verify DIR` checks one offline.
    #[command(args_conflicts_with_subcommands = true)]
    Evidence(evidence::EvidenceArgs),
}

impl Cmd {
    /// Runs the command with the configuration in force and a client of the
    /// APIs it names; the exit code says how it ended.
    pub async fn run(self, config: Config, client: Client) -> Result<ExitCode> {
        let client = &client;
        match self {
            Cmd::Up(a) => a.run(config).await,
            Cmd::Submit(a) => a.run(client).await,
            Cmd::Datasets { cmd } => cmd.run(client).await,
            Cmd::Runs { cmd } => cmd.run(client).await,
            Cmd::Models { cmd } => cmd.run(client).await,
            Cmd::Monitor { cmd: Some(cmd) } => cmd.run(client).await,
            // Dispatched as the service before the command line is derived.
            Cmd::Monitor { cmd: None } => {
                anyhow::bail!("`modelbus monitor` without a subcommand runs the monitor service")
            }
            Cmd::Schemas(a) => a.run(),
            Cmd::Config => Ok(config::run(&config)),
            Cmd::Bench { cmd } => cmd.run(config).await,
            Cmd::Validate(a) => a.run(client).await,
            Cmd::Drift(a) => a.run(client).await,
            Cmd::Labels { cmd } => cmd.run(client).await,
            Cmd::Policies { cmd } => cmd.run(),
            Cmd::Keygen(a) => a.run(),
            Cmd::Tokens { cmd } => cmd.run(client).await,
            Cmd::Approvers { cmd } => cmd.run(client).await,
            Cmd::Approve(a) => a.run(client, StatementKind::Approve).await,
            Cmd::Reject(a) => a.run(client, StatementKind::Reject).await,
            Cmd::Rollback(a) => a.run(client).await,
            Cmd::Deployments(a) => a.run(client).await,
            Cmd::Audit { cmd } => cmd.run(client).await,
            Cmd::Evidence(a) => a.run(client).await,
        }
    }
}

/// The whole command line: [`Cli`] plus one subcommand per row of
/// [`SERVICES`], listed right after `up` (dispatch them with
/// [`crate::platform::service_named`] before deriving [`Cli`] from the matches).
pub fn command() -> clap::Command {
    // Make room for the services right after `up`: the commands after it move
    // down by as many places.
    let cli = Cli::command();
    let up = cli
        .find_subcommand("up")
        .map_or(0, clap::Command::get_display_order);
    let mut cmd = cli.mut_subcommands(|c| {
        let order = c.get_display_order();
        if order > up {
            c.display_order(order + SERVICES.len())
        } else {
            c
        }
    });
    for (i, spec) in SERVICES.iter().enumerate() {
        // A service whose name is also a command group (`monitor status`) is
        // that group run without a subcommand.
        if cmd.find_subcommand(spec.name).is_some() {
            cmd = cmd.mut_subcommand(spec.name, |c| c.display_order(up + 1 + i));
            continue;
        }
        cmd = cmd.subcommand(
            clap::Command::new(spec.name)
                .about(spec.about)
                .display_order(up + 1 + i),
        );
    }
    cmd
}

/// Prints `v` as pretty JSON with its keys sorted: what `--json` printed when it
/// pretty-printed the registry's answers as `serde_json::Value`s, so the same
/// bytes.
pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let value = serde_json::to_value(v)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// A number as JSON writes it (`0.5`, `1.0`, `1e-7`): how metrics print.
pub(crate) fn number(x: f64) -> String {
    serde_json::Value::from(x).to_string()
}

/// A metric with four decimals, or `-` when there is none.
pub(crate) fn metric(metrics: Option<&BTreeMap<String, f64>>, name: &str) -> String {
    metrics
        .and_then(|m| m.get(name))
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "-".into())
}

/// Parses `--env`.
pub(crate) fn parse_env(s: &str) -> Result<modelbus_core::ids::Environment> {
    s.parse().map_err(|e| anyhow::anyhow!("--env {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_service_after_up() {
        let help = command().render_help().to_string();
        let names: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut expected = vec!["up"];
        expected.extend(SERVICES.iter().map(|s| s.name));
        expected.push("submit");
        assert_eq!(names[..expected.len()], expected[..], "{help}");
    }

    #[test]
    fn monitor_alone_is_the_service_and_with_a_subcommand_a_command() {
        let m = command()
            .try_get_matches_from(["modelbus", "monitor"])
            .unwrap();
        let (name, sub) = m.subcommand().unwrap();
        assert_eq!(name, "monitor");
        assert!(sub.subcommand_name().is_none());
        assert_eq!(
            crate::platform::service_named(name),
            Some(crate::platform::Service::Monitor)
        );
        let m = command()
            .try_get_matches_from(["modelbus", "monitor", "status", "--model", "m"])
            .unwrap();
        assert_eq!(m.subcommand().unwrap().1.subcommand_name(), Some("status"));
        use clap::FromArgMatches as _;
        assert!(Cli::from_arg_matches(&m).is_ok());
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn a_service_subcommand_takes_the_global_options() {
        use clap::FromArgMatches as _;
        let m = command()
            .try_get_matches_from(["modelbus", "trainer", "--state-dir", "/tmp/x"])
            .unwrap();
        assert_eq!(
            m.subcommand_name().and_then(crate::platform::service_named),
            Some(crate::platform::Service::Trainer)
        );
        let g = Globals::from_arg_matches(&m).unwrap();
        assert_eq!(g.state_dir, Some(PathBuf::from("/tmp/x")));
    }
}
