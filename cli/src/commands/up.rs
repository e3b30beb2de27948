//! `modelbus up` (every service in this process) and `modelbus <service>` (one
//! row of [`crate::platform::SERVICES`]): start, report where everything
//! listens, and run until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use modelbus_core::config::Config;

use crate::platform::{self, Service};

/// Arguments of `modelbus up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Dataset specs applied at start.
    #[arg(long, default_value = "config/datasets")]
    datasets_dir: PathBuf,
}

impl UpArgs {
    /// Runs every service until stopped.
    pub async fn run(self, config: Config) -> Result<ExitCode> {
        serve(config, &Service::ALL, Some(self.datasets_dir)).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
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

/// Runs `services` in this process until a signal or a failure stops them:
/// telemetry, start, readiness, then (for `up`) the dataset specs of
/// `datasets_dir` and where everything listens.
pub async fn serve(
    config: Config,
    services: &[Service],
    datasets_dir: Option<PathBuf>,
) -> Result<()> {
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
