//! Running services in one process: `modelbus up` runs them all, `modelbus
//! <service>` runs one. Configuration is validated and every listener bound before
//! anything starts, so a bad value or a taken port fails fast with the key named.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use modelbus_core::artifact::ArtifactStore;
use modelbus_core::bus::Bus;
use modelbus_core::config::Config;
use modelbus_core::nats_server::{EmbeddedNats, find_binary};
use modelbus_core::ops::Readiness;
use modelbus_core::{CancellationToken, Context};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The services `modelbus up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Datasets, runs, models (gRPC + HTTP).
    Registry,
    /// Batch intake and validation.
    Ingest,
    /// Feature sets.
    Features,
    /// Training and evaluation.
    Trainer,
    /// Signed-approval verification and deployment state.
    Deployer,
    /// Prediction endpoints.
    Serving,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: [Service; 6] = [
        Service::Registry,
        Service::Ingest,
        Service::Features,
        Service::Trainer,
        Service::Deployer,
        Service::Serving,
    ];

    fn name(self) -> &'static str {
        match self {
            Service::Registry => "registry",
            Service::Ingest => "ingest",
            Service::Features => "features",
            Service::Trainer => "trainer",
            Service::Deployer => "deployer",
            Service::Serving => "serving",
        }
    }
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {key} = {addr}"))
}

/// Listeners bound before any service starts.
struct Bound {
    registry_http: Option<TcpListener>,
    registry_grpc: Option<TcpListener>,
    ingest: Option<TcpListener>,
    features: Option<TcpListener>,
    trainer: Option<TcpListener>,
    deployer: Option<TcpListener>,
    staging: Option<TcpListener>,
    production: Option<TcpListener>,
}

/// A running set of services.
pub struct Platform {
    /// Cancel to stop everything.
    pub shutdown: CancellationToken,
    /// Readiness of every component.
    pub readiness: Readiness,
    /// The configuration in force, with bound addresses filled in (port 0 resolved).
    pub config: Arc<Config>,
    tasks: Vec<(&'static str, JoinHandle<Result<()>>)>,
}

impl Platform {
    /// Waits until every component is ready, or fails after `timeout` naming the
    /// ones that are not.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.readiness.is_ready() {
                return Ok(());
            }
            if let Some((name, t)) = self.tasks.iter().find(|(_, t)| t.is_finished()) {
                let _ = t;
                bail!("service {name} stopped during start-up (see the log above)");
            }
            if tokio::time::Instant::now() > deadline {
                let waiting: Vec<String> = self
                    .readiness
                    .report()
                    .into_iter()
                    .filter(|(_, r)| !r)
                    .map(|(k, _)| k)
                    .collect();
                bail!("not ready after {timeout:?}: waiting for {waiting:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs until a service fails or `shutdown` is cancelled, then stops the rest.
    pub async fn run_until_stopped(mut self) -> Result<()> {
        let mut failure = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if let Some(i) = self.tasks.iter().position(|(_, t)| t.is_finished()) {
                let (name, t) = self.tasks.remove(i);
                match t.await {
                    Ok(Ok(())) if self.shutdown.is_cancelled() => {}
                    Ok(Ok(())) => failure = Some(anyhow::anyhow!("service {name} stopped")),
                    Ok(Err(e)) => failure = Some(e.context(format!("service {name} failed"))),
                    Err(e) => failure = Some(anyhow::anyhow!("service {name} panicked: {e}")),
                }
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        self.shutdown.cancel();
        for (name, t) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(service = name, error = %e, "stopped with an error")
                }
                Ok(Err(e)) => tracing::warn!(service = name, error = %e, "task failed"),
                Err(_) => tracing::warn!(service = name, "did not stop within 10s"),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops everything and waits for it.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.run_until_stopped().await
    }
}

impl Drop for Platform {
    /// Dropping the platform stops its services (tests rely on this).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts `services` in this process. Binds every listener first, then connects
/// to NATS (or starts the embedded server), then starts the services.
pub async fn start(config: Config, services: &[Service]) -> Result<Platform> {
    config.validate()?;
    // Install the metrics recorder before anything records.
    modelbus_core::telemetry::prometheus();
    modelbus_core::telemetry::describe_metrics();
    let want = |s: Service| services.contains(&s);
    let c = &config;
    let mut bound = Bound {
        registry_http: None,
        registry_grpc: None,
        ingest: None,
        features: None,
        trainer: None,
        deployer: None,
        staging: None,
        production: None,
    };
    if want(Service::Registry) {
        bound.registry_http = Some(bind("registry.http_addr", c.registry.http_addr).await?);
        bound.registry_grpc = Some(bind("registry.grpc_addr", c.registry.grpc_addr).await?);
    }
    if want(Service::Ingest) {
        bound.ingest = Some(bind("ingest.http_addr", c.ingest.http_addr).await?);
    }
    if want(Service::Features) {
        bound.features = Some(bind("features.ops_addr", c.features.ops_addr).await?);
    }
    if want(Service::Trainer) {
        bound.trainer = Some(bind("trainer.ops_addr", c.trainer.ops_addr).await?);
    }
    if want(Service::Deployer) {
        bound.deployer = Some(bind("deployer.ops_addr", c.deployer.ops_addr).await?);
    }
    if want(Service::Serving) {
        bound.staging = Some(bind("serving.staging_addr", c.serving.staging_addr).await?);
        bound.production = Some(bind("serving.production_addr", c.serving.production_addr).await?);
    }
    // Resolve port-0 addresses so clients in this process can reach them.
    let mut config = config.clone();
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(a) = local(&bound.registry_http) {
        config.registry.http_addr = a;
    }
    if let Some(a) = local(&bound.registry_grpc) {
        config.registry.grpc_addr = a;
    }
    if let Some(a) = local(&bound.ingest) {
        config.ingest.http_addr = a;
    }
    if let Some(a) = local(&bound.features) {
        config.features.ops_addr = a;
    }
    if let Some(a) = local(&bound.trainer) {
        config.trainer.ops_addr = a;
    }
    if let Some(a) = local(&bound.deployer) {
        config.deployer.ops_addr = a;
    }
    if let Some(a) = local(&bound.staging) {
        config.serving.staging_addr = a;
    }
    if let Some(a) = local(&bound.production) {
        config.serving.production_addr = a;
    }

    modelbus_core::fsutil::create_private_dir(&config.general.state_dir).with_context(|| {
        format!(
            "cannot create state dir {}",
            config.general.state_dir.display()
        )
    })?;
    if want(Service::Registry) && config.registry.automation_key.is_none() {
        modelbus_core::signing::load_or_create_key(&config.automation_key_path())
            .context("registry automation key")?;
    }

    let shutdown = CancellationToken::new();
    let mut tasks: Vec<(&'static str, JoinHandle<Result<()>>)> = Vec::new();
    // The embedded server runs the shipped per-service permissions: each
    // service below logs in as its own user, as in a deployment.
    let mut logins: Option<Vec<(&'static str, modelbus_core::config::NatsCredentials)>> = None;
    let nats_url = match &config.nats.url {
        Some(url) => url.clone(),
        None => {
            let binary = find_binary(config.nats.server_binary.as_deref())?;
            let store = config.general.state_dir.join("nats");
            let server = EmbeddedNats::start_secured(&binary, &store).await?;
            let url = server.url().to_string();
            logins = Some(
                modelbus_core::nats_server::SERVICE_USERS
                    .iter()
                    .filter_map(|u| server.credentials(u).map(|c| (*u, c)))
                    .collect(),
            );
            tracing::info!(%url, binary = %binary.display(), "started embedded nats-server (per-service users)");
            let s = shutdown.clone();
            tasks.push((
                "nats-server",
                tokio::spawn(async move {
                    server.supervise(s).await;
                    Ok(())
                }),
            ));
            url
        }
    };
    config.nats.url = Some(nats_url.clone());
    // Each container of a deployment runs one service as its own NATS user
    // (deploy/nats/permissions.conf); without nats.user, no credentials. On
    // the embedded server the registry's login comes first: it creates the
    // shared streams the others may only read.
    let login = |user: &str| {
        logins
            .as_ref()
            .and_then(|l| l.iter().find(|(u, _)| *u == user).map(|(_, c)| c.clone()))
    };
    let credentials = match login("registry") {
        Some(c) => Some(c),
        None => config.nats_credentials()?,
    };
    let bus = Bus::connect_with(
        &nats_url,
        "modelbus",
        config.bus.clone(),
        credentials.as_ref(),
    )
    .await?;
    let store = ArtifactStore::open(&config.artifact_location())?;
    let readiness = Readiness::new();
    let config = Arc::new(config);
    let ctx = Context {
        bus,
        store,
        config: config.clone(),
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
    };
    for s in Service::ALL {
        if !want(s) {
            continue;
        }
        let mut ctx = ctx.clone();
        if let Some(c) = login(s.name()) {
            ctx.bus = Bus::connect_with(
                &nats_url,
                &format!("modelbus-{}", s.name()),
                ctx.config.bus.clone(),
                Some(&c),
            )
            .await
            .with_context(|| format!("{} cannot connect to the embedded nats-server", s.name()))?;
        }
        let task: JoinHandle<Result<()>> = match s {
            Service::Registry => {
                let listeners = modelbus_registry::Listeners {
                    http: bound.registry_http.take().context("registry listener")?,
                    grpc: bound.registry_grpc.take().context("registry listener")?,
                };
                tokio::spawn(async move { Ok(modelbus_registry::run(ctx, listeners).await?) })
            }
            Service::Ingest => {
                let l = bound.ingest.take().context("ingest listener")?;
                tokio::spawn(async move { Ok(modelbus_ingest::run(ctx, l).await?) })
            }
            Service::Features => {
                let l = bound.features.take().context("features listener")?;
                tokio::spawn(async move { Ok(modelbus_features::run(ctx, l).await?) })
            }
            Service::Trainer => {
                let l = bound.trainer.take().context("trainer listener")?;
                tokio::spawn(async move { Ok(modelbus_trainer::run(ctx, l).await?) })
            }
            Service::Deployer => {
                let l = bound.deployer.take().context("deployer listener")?;
                tokio::spawn(async move { Ok(modelbus_deployer::run(ctx, l).await?) })
            }
            Service::Serving => {
                let listeners = modelbus_serving::Listeners {
                    staging: bound.staging.take().context("staging listener")?,
                    production: bound.production.take().context("production listener")?,
                };
                tokio::spawn(async move { Ok(modelbus_serving::run(ctx, listeners).await?) })
            }
        };
        tasks.push((s.name(), task));
    }
    Ok(Platform {
        shutdown,
        readiness,
        config,
        tasks,
    })
}

/// Applies every `*.toml` under `dir` through the registry's HTTP API.
pub async fn apply_dataset_dir(
    registry_http: &str,
    dir: &std::path::Path,
    token: Option<&str>,
) -> Result<Vec<String>> {
    let mut applied = Vec::new();
    if !dir.is_dir() {
        return Ok(applied);
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let client = crate::client::Client::new(registry_http, "", token);
    for f in files {
        let out = client.apply_spec(&f).await?;
        applied.push(format!(
            "{} v{} ({})",
            out["spec"]["dataset"].as_str().unwrap_or("?"),
            out["spec"]["version"],
            f.display()
        ));
    }
    Ok(applied)
}
