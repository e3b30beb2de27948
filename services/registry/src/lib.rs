//! The registry: datasets and spec versions, pipeline runs and their stages,
//! training runs, registered models, versions with lineage, gate decisions and
//! aliases, over gRPC (with reflection) and an HTTP JSON API with the same
//! operations. It follows every event on the bus to keep each pipeline run's
//! timeline, applies a version's gates when it is trained, and signs staging
//! promotions with its automation key.
//!
//! The registry never writes deployment state: it only publishes
//! `approval.granted`; the deployer decides.
#![forbid(unsafe_code)]

pub mod error;
pub mod evidence;
pub mod governance;
pub mod grpc;
pub mod http;
mod labels;
pub mod outbox;
pub mod pipeline;
pub use modelbus_policy as policy;
pub mod store;
pub mod types;

use std::sync::Arc;

use modelbus_core::Context;
use modelbus_core::signing::KeyPair;
use modelbus_dataset::spec::DatasetSpec;
use tokio::net::TcpListener;

pub use error::RegistryError;
pub use store::Store;
use types::*;

/// Author of a version registered without a pipeline run.
pub const UNKNOWN_AUTHOR: &str = "unknown";

pub use modelbus_core::auth::UNVERIFIED_PREFIX;

/// Name of the automation approver.
pub const AUTOMATION_APPROVER: &str = "registry-automation";

/// Actor of the audit entries recording monitoring decisions.
pub const MONITOR_PRINCIPAL: &str = "modelbus-monitor";

/// The registry's operations, shared by both APIs and the event handlers.
#[derive(Clone, Debug)]
pub struct Registry {
    /// Metadata store.
    pub store: Store,
    /// Key that signs staging promotions.
    automation: Arc<KeyPair>,
    /// Artifact store (validation reports).
    artifacts: modelbus_core::artifact::ArtifactStore,
    /// Promotion policies.
    policies: Arc<policy::PolicySet>,
    /// Configuration and bus, when running as a service (absent in store-only tests).
    runtime: Option<Runtime>,
    /// Wakes the outbox relay after a commit.
    outbox: outbox::Outbox,
}

/// What the registry needs from its host process to decide and announce
/// governance events (the outbox relay publishes them).
#[derive(Clone, Debug)]
struct Runtime {
    config: Arc<modelbus_core::config::Config>,
}

impl Registry {
    /// A registry over a store.
    pub fn new(
        store: Store,
        automation: KeyPair,
        artifacts: modelbus_core::artifact::ArtifactStore,
        policies: policy::PolicySet,
    ) -> Self {
        Self {
            store,
            automation: Arc::new(automation),
            artifacts,
            policies: Arc::new(policies),
            runtime: None,
            outbox: outbox::Outbox::default(),
        }
    }

    /// Gives the registry its configuration, so it can decide promotions and
    /// accept rollbacks (whose events the outbox relay publishes).
    pub fn with_runtime(mut self, config: Arc<modelbus_core::config::Config>) -> Self {
        self.runtime = Some(Runtime { config });
        self
    }

    /// The `limit` of a list request: `default` when not given; 0 or above
    /// `registry.max_list_limit` is refused, so no request reads a whole
    /// table at once.
    pub fn list_limit(&self, requested: Option<u32>, default: u32) -> Result<u32, RegistryError> {
        let max = self
            .runtime
            .as_ref()
            .map_or(1000, |r| r.config.registry.max_list_limit);
        match requested {
            None => Ok(default.min(max)),
            Some(0) => Err(RegistryError::InvalidArgument(
                "limit must be at least 1".into(),
            )),
            Some(n) if n > max => Err(RegistryError::InvalidArgument(format!(
                "limit {n} is above the largest page this registry serves ({max}, registry.max_list_limit): page with `after`"
            ))),
            Some(n) => Ok(n),
        }
    }

    /// Most audit entries one evidence bundle may carry.
    pub fn max_evidence_entries(&self) -> u32 {
        self.runtime
            .as_ref()
            .map_or(100_000, |r| r.config.registry.max_evidence_entries)
    }

    /// Promotion settings in force.
    pub fn promotion_config(&self) -> modelbus_core::config::PromotionConfig {
        self.runtime
            .as_ref()
            .map(|r| r.config.promotion.clone())
            .unwrap_or_default()
    }

    /// Parses, checks and registers a spec; `actor` is the principal applying it.
    pub async fn apply_spec(
        &self,
        toml: &str,
        source_name: &str,
        actor: &str,
    ) -> Result<(SpecVersion, bool), RegistryError> {
        let source = if source_name.is_empty() {
            "spec.toml"
        } else {
            source_name
        };
        let parsed = DatasetSpec::parse(toml, source)
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let json = serde_json::to_value(&parsed.spec).unwrap_or_default();
        let (sv, created) = self
            .store
            .apply_spec(&parsed.spec.name, &parsed.digest, toml, &json)
            .await?;
        if created {
            self.store
                .append_audit(
                    actor,
                    "spec.applied",
                    &format!("dataset/{}", sv.dataset),
                    &serde_json::json!({ "digest": sv.digest, "version": sv.version, "source": source }),
                    Some(&format!("spec.applied/{}", sv.digest)),
                )
                .await?;
        }
        Ok((sv, created))
    }

    /// A spec by digest, or the latest of a dataset.
    pub async fn get_spec(
        &self,
        dataset: &str,
        digest: &str,
    ) -> Result<SpecVersion, RegistryError> {
        let found = if !digest.is_empty() {
            self.store.spec_by_digest(digest).await?
        } else if !dataset.is_empty() {
            self.store.latest_spec(dataset).await?
        } else {
            return Err(RegistryError::InvalidArgument(
                "give a dataset or a digest".into(),
            ));
        };
        found.ok_or_else(|| {
            RegistryError::NotFound(if digest.is_empty() {
                format!(
                    "no spec registered for dataset {dataset:?} (run `modelbus datasets apply`)"
                )
            } else {
                format!("no spec version with digest {digest}")
            })
        })
    }

    /// Creates (or finds) the pipeline run of a batch. `submitted_by` is
    /// trusted as given: callers are the ingest service (over gRPC, with the
    /// principal of the token that uploaded) or the registry's own consumer,
    /// which marks names read from a bus event [`UNVERIFIED_PREFIX`].
    pub async fn create_pipeline_run(
        &self,
        dataset: &str,
        spec_digest: &str,
        batch_sha256: &str,
        size_bytes: u64,
        submitted_by: &str,
    ) -> Result<(PipelineRun, bool), RegistryError> {
        let spec = modelbus_core::ids::Sha256Digest::parse(spec_digest)
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let batch = modelbus_core::ids::Sha256Digest::parse(batch_sha256)
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let sv = self
            .store
            .spec_by_digest(&spec.to_hex())
            .await?
            .ok_or_else(|| {
                RegistryError::NotFound(format!("no spec version with digest {spec}"))
            })?;
        if sv.dataset != dataset {
            return Err(RegistryError::InvalidArgument(format!(
                "spec {spec} belongs to dataset {:?}, not {dataset:?}",
                sv.dataset
            )));
        }
        let id = modelbus_core::ids::PipelineRunId::for_batch(&spec, &batch);
        let who = if submitted_by.is_empty() {
            "anonymous"
        } else {
            submitted_by
        };
        self.store
            .create_pipeline_run(
                id.as_str(),
                dataset,
                &spec.to_hex(),
                &batch.to_hex(),
                size_bytes,
                who,
            )
            .await
    }

    /// A pipeline run.
    pub async fn pipeline_run(&self, id: &str) -> Result<PipelineRun, RegistryError> {
        self.store
            .pipeline_run(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no pipeline run {id:?}")))
    }

    /// Registers a model version after checking its fields.
    pub async fn register_model_version(
        &self,
        v: NewModelVersion,
        actor: &str,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        modelbus_core::ids::ModelName::parse(&v.model)
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        modelbus_core::ids::Sha256Digest::parse(&v.model_sha256)
            .map_err(|e| RegistryError::InvalidArgument(format!("model_sha256: {e}")))?;
        if v.dataset.is_empty() {
            return Err(RegistryError::InvalidArgument("dataset is required".into()));
        }
        // Separation of duties rests on the author: it comes from the registry's
        // own record of who submitted the batch, never from the caller, which
        // only relays what it read on the bus.
        let mut v = v;
        v.author = if v.lineage.pipeline_run.is_empty() {
            UNKNOWN_AUTHOR.to_string()
        } else {
            self.pipeline_run(&v.lineage.pipeline_run)
                .await
                .map_err(|e| match e {
                    RegistryError::NotFound(m) => {
                        RegistryError::InvalidArgument(format!("lineage.pipeline_run: {m}"))
                    }
                    other => other,
                })?
                .submitted_by
        };
        let (mv, created) = self.store.register_model_version(&v).await?;
        if created {
            self.store
                .append_audit(
                    actor,
                    "version.registered",
                    &format!("model/{}/v{}", mv.model, mv.version),
                    &serde_json::json!({
                        "model_sha256": mv.model_sha256,
                        "author": mv.author,
                        "algorithm": mv.algorithm,
                        "pipeline_run": mv.lineage.pipeline_run,
                        "batch_sha256": mv.lineage.batch_sha256,
                        "spec_digest": mv.lineage.spec_digest,
                    }),
                    Some(&format!(
                        "version.registered/{}/{}",
                        mv.model, mv.model_sha256
                    )),
                )
                .await?;
        }
        if !v.lineage.pipeline_run.is_empty() {
            self.store
                .set_run_model(&v.lineage.pipeline_run, &mv.model, mv.version)
                .await?;
        }
        Ok((mv, created))
    }

    /// A registered model.
    pub async fn model(&self, name: &str) -> Result<RegisteredModel, RegistryError> {
        self.store
            .model(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no registered model {name:?}")))
    }

    /// One version.
    pub async fn model_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<ModelVersion, RegistryError> {
        self.store
            .model_version(name, version)
            .await?
            .ok_or_else(|| {
                RegistryError::NotFound(format!("model {name:?} has no version {version}"))
            })
    }

    /// A training run.
    pub async fn run(&self, id: &str) -> Result<TrainingRun, RegistryError> {
        self.store
            .run(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no run {id:?}")))
    }

    /// A JSON report (validation, evaluation) from the artifact store. An
    /// artifact above [`MAX_REPORT_BYTES`] is refused before it is read: the
    /// route takes any digest, and a raw batch of gigabytes is not a report.
    pub async fn report(&self, report_sha256: &str) -> Result<serde_json::Value, RegistryError> {
        let d = modelbus_core::ids::Sha256Digest::parse(report_sha256)
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let missing = |e: modelbus_core::artifact::ArtifactError| match e {
            modelbus_core::artifact::ArtifactError::NotFound(_) => {
                RegistryError::NotFound(e.to_string())
            }
            other => RegistryError::Internal(other.to_string()),
        };
        let size = self.artifacts.size(&d).await.map_err(missing)?;
        if size > MAX_REPORT_BYTES {
            return Err(RegistryError::InvalidArgument(format!(
                "artifact {d} has {size} bytes: not a report (reports are at most {MAX_REPORT_BYTES} bytes)"
            )));
        }
        let bytes = self.artifacts.get(&d).await.map_err(|e| match e {
            modelbus_core::artifact::ArtifactError::NotFound(_) => {
                RegistryError::NotFound(e.to_string())
            }
            other => RegistryError::Internal(other.to_string()),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Internal(format!("report {d}: {e}")))
    }
}

/// Largest artifact the registry reads as a JSON report.
pub const MAX_REPORT_BYTES: u64 = 32 * 1024 * 1024;

/// Bound listeners of the registry.
pub struct Listeners {
    /// HTTP JSON API and operations endpoints.
    pub http: TcpListener,
    /// gRPC API.
    pub grpc: TcpListener,
}

/// Runs the registry until `ctx.shutdown`: both APIs and its event consumers.
pub async fn run(ctx: Context, listeners: Listeners) -> Result<(), RegistryError> {
    ctx.readiness.register("registry");
    let db_url = ctx.config.database_url();
    tracing::info!(database = %db_url.masked(), "opening registry database");
    let store = Store::connect(db_url.expose()).await?;
    let key = load_automation_key(&ctx.config)?;
    let policies = match &ctx.config.registry.policies_dir {
        Some(dir) => {
            policy::PolicySet::load_dir(dir).map_err(|e| RegistryError::Internal(e.to_string()))?
        }
        None => policy::PolicySet::default_set(),
    };
    tracing::info!(policy = %policies.digest(), "promotion policy loaded");
    let registry =
        Registry::new(store, key, ctx.store.clone(), policies).with_runtime(ctx.config.clone());
    if let Some(path) = registry.bootstrap_tokens(&ctx.config).await? {
        tracing::info!(path = %path.display(), "first admin token written");
    }

    let http_router =
        http::router(registry.clone()).merge(modelbus_core::ops::ops_router(ctx.readiness.clone()));
    let shutdown = ctx.shutdown.clone();
    let (stop_http, limits) = (shutdown.clone(), ctx.config.http.clone());
    let http_task = tokio::spawn(async move {
        modelbus_core::ops::serve(listeners.http, http_router, stop_http, &limits).await
    });
    let (grpc_registry, stop_grpc, grpc_limits) =
        (registry.clone(), shutdown.clone(), ctx.config.http.clone());
    let grpc_task = tokio::spawn(async move {
        grpc::serve(grpc_registry, listeners.grpc, stop_grpc, &grpc_limits).await
    });
    let promotions = tokio::spawn(registry.clone().promotion_loop(shutdown.clone()));
    let relay = tokio::spawn(outbox::relay(
        registry.store.clone(),
        ctx.bus.clone(),
        registry.outbox.clone(),
        shutdown.clone(),
    ));
    let events_ready = ctx.readiness.clone();
    let events = pipeline::run_consumers(registry, ctx.clone(), move || {
        events_ready.set("registry", true)
    });
    let (h, g, e) = tokio::join!(http_task, grpc_task, events);
    promotions.abort();
    // The relay stops on shutdown; what it did not publish stays in the
    // outbox for the next start.
    let _ = relay.await;
    h.map_err(|e| RegistryError::Internal(e.to_string()))?
        .map_err(|e| RegistryError::Internal(format!("HTTP server: {e}")))?;
    g.map_err(|e| RegistryError::Internal(e.to_string()))??;
    e
}

/// Loads the automation key from its secret reference, creating the default key
/// file on first start.
pub fn load_automation_key(
    config: &modelbus_core::config::Config,
) -> Result<KeyPair, RegistryError> {
    let reference = config.automation_key_ref();
    if config.registry.automation_key.is_none() {
        return modelbus_core::signing::load_or_create_key(&config.automation_key_path())
            .map_err(|e| RegistryError::Internal(e.to_string()));
    }
    let secret = reference
        .resolve("registry.automation_key")
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
    KeyPair::from_pem(secret.expose(), "registry.automation_key")
        .map_err(|e| RegistryError::Internal(e.to_string()))
}
