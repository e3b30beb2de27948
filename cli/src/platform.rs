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

/// A service's entry point: its context and its bound listeners (in the
/// order of [`ServiceSpec::listeners`]).
pub type RunFn = fn(Context, Vec<TcpListener>) -> ServiceFuture;
/// What a running service returns.
pub type ServiceFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// One listener of a service: its configuration key and where its address
/// lives in the configuration.
#[derive(Clone, Copy)]
pub struct ListenerSpec {
    /// Dotted configuration key (`registry.http_addr`).
    pub key: &'static str,
    /// The address in a configuration.
    pub addr: fn(&mut Config) -> &mut SocketAddr,
}

impl ListenerSpec {
    /// The environment variable that sets it (`MODELBUS_REGISTRY__HTTP_ADDR`).
    pub fn env_var(&self) -> String {
        format!("MODELBUS_{}", self.key.to_uppercase().replace('.', "__"))
    }
}

/// Everything `modelbus up`, `modelbus <service>`, readiness and the test
/// harness know about a service: one row of [`SERVICES`].
pub struct ServiceSpec {
    /// Which service.
    pub service: Service,
    /// Its name: the `modelbus` subcommand, its NATS user on the embedded
    /// server, its task name.
    pub name: &'static str,
    /// One line for `modelbus --help` (no final period, like the other
    /// commands' help).
    pub about: &'static str,
    /// Its listeners, bound before anything starts.
    pub listeners: &'static [ListenerSpec],
    /// Starts it.
    pub run: RunFn,
}

/// Declares the services: the [`Service`] enum and the [`SERVICES`] table,
/// in start order. A new service is one entry here (and its crate).
macro_rules! services {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal, $about:literal,
        [$($key:literal => $($field:ident).+),* $(,)?],
        $run:expr;
    )*) => {
        /// The services `modelbus up` runs (see [`SERVICES`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum Service {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Service {
            /// Every service, in start order.
            pub const ALL: [Service; [$(Service::$variant,)*].len()] = [$(Service::$variant,)*];

            /// Its row of [`SERVICES`].
            pub fn spec(self) -> &'static ServiceSpec {
                SERVICES
                    .iter()
                    .find(|s| s.service == self)
                    .unwrap_or(&SERVICES[0])
            }

            /// Its name.
            pub fn name(self) -> &'static str {
                self.spec().name
            }
        }

        /// Every service, in start order.
        pub static SERVICES: &[ServiceSpec] = &[$(
            ServiceSpec {
                service: Service::$variant,
                name: $name,
                about: $about,
                listeners: &[$(ListenerSpec {
                    key: $key,
                    addr: {
                        fn addr(c: &mut Config) -> &mut SocketAddr {
                            &mut c.$($field).+
                        }
                        addr
                    },
                },)*],
                run: $run,
            },
        )*];
    };
}

/// Takes the next bound listener of a service.
fn next(l: &mut std::vec::IntoIter<TcpListener>, what: &str) -> Result<TcpListener> {
    l.next()
        .with_context(|| format!("internal error: no {what} listener"))
}

services! {
    /// Datasets, runs, models (gRPC + HTTP).
    Registry = "registry", "Runs the registry alone",
        ["registry.http_addr" => registry.http_addr, "registry.grpc_addr" => registry.grpc_addr],
        |ctx, l| Box::pin(async move {
            let mut l = l.into_iter();
            let listeners = modelbus_registry::Listeners {
                http: next(&mut l, "registry HTTP")?,
                grpc: next(&mut l, "registry gRPC")?,
            };
            Ok(modelbus_registry::run(ctx, listeners).await?)
        });
    /// Batch intake and validation.
    Ingest = "ingest", "Runs ingest alone",
        ["ingest.http_addr" => ingest.http_addr],
        |ctx, l| Box::pin(async move {
            let l = next(&mut l.into_iter(), "ingest")?;
            Ok(modelbus_ingest::run(ctx, l).await?)
        });
    /// Feature sets.
    Features = "features", "Runs the features service alone",
        ["features.ops_addr" => features.ops_addr],
        |ctx, l| Box::pin(async move {
            let l = next(&mut l.into_iter(), "features")?;
            Ok(modelbus_features::run(ctx, l).await?)
        });
    /// Training and evaluation.
    Trainer = "trainer", "Runs the trainer alone",
        ["trainer.ops_addr" => trainer.ops_addr],
        |ctx, l| Box::pin(async move {
            let l = next(&mut l.into_iter(), "trainer")?;
            Ok(modelbus_trainer::run(ctx, l).await?)
        });
    /// Signed-approval verification and deployment state.
    Deployer = "deployer", "Runs the deployer alone",
        ["deployer.ops_addr" => deployer.ops_addr],
        |ctx, l| Box::pin(async move {
            let l = next(&mut l.into_iter(), "deployer")?;
            Ok(modelbus_deployer::run(ctx, l).await?)
        });
    /// Prediction endpoints.
    Serving = "serving", "Runs serving alone",
        ["serving.staging_addr" => serving.staging_addr, "serving.production_addr" => serving.production_addr],
        |ctx, l| Box::pin(async move {
            let mut l = l.into_iter();
            let listeners = modelbus_serving::Listeners {
                staging: next(&mut l, "staging")?,
                production: next(&mut l, "production")?,
            };
            Ok(modelbus_serving::run(ctx, listeners).await?)
        });
    /// Drift of live traffic against the training reference.
    Monitor = "monitor", "Runs the monitor alone",
        ["monitor.ops_addr" => monitor.ops_addr],
        |ctx, l| Box::pin(async move {
            let l = next(&mut l.into_iter(), "monitor")?;
            Ok(modelbus_monitor::run(ctx, l).await?)
        });
}

/// The service named `name` (a `modelbus` subcommand), if there is one.
pub fn service_named(name: &str) -> Option<Service> {
    SERVICES.iter().find(|s| s.name == name).map(|s| s.service)
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {key} = {addr}"))
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
    // Bind every listener first, so a taken port fails before anything starts,
    // and resolve port-0 addresses so clients in this process can reach them.
    let mut config = config.clone();
    let mut bound: Vec<(Service, Vec<TcpListener>)> = Vec::new();
    for spec in SERVICES.iter().filter(|s| want(s.service)) {
        let mut listeners = Vec::new();
        for l in spec.listeners {
            let listener = bind(l.key, *(l.addr)(&mut config)).await?;
            if let Ok(a) = listener.local_addr() {
                *(l.addr)(&mut config) = a;
            }
            listeners.push(listener);
        }
        bound.push((spec.service, listeners));
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
    for (s, listeners) in bound {
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
        let task: JoinHandle<Result<()>> = tokio::spawn((s.spec().run)(ctx, listeners));
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
        let spec = client.apply_spec(&f).await?.spec;
        applied.push(format!(
            "{} v{} ({})",
            spec.dataset,
            spec.version,
            f.display()
        ));
    }
    Ok(applied)
}
