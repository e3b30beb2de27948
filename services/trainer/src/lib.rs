//! Trainer: fits the spec's learner (LightGBM boosted trees, or the logistic
//! baseline) on a feature set's training rows, evaluates it on the holdout
//! (ROC AUC, PR AUC, log loss, Brier), stores the model artifact and registers the
//! run and the version through the registry's gRPC API with its lineage: batch,
//! spec, report and feature-set digests, code revision and seed.
//!
//! Training is deterministic and registration is keyed by the model digest, so a
//! redelivered `features.ready` (or a restart mid-training) ends in the same single
//! version.
#![forbid(unsafe_code)]

use modelbus_core::Context;
use modelbus_core::artifact::ArtifactError;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::{Envelope, FeaturesReady, ModelTrained};
use modelbus_core::ids::{ModelName, Sha256Digest};
use modelbus_ml::features::FittedFeatures;
use modelbus_ml::featureset::FeatureSet;
use modelbus_ml::spec::DatasetSpec;
use modelbus_proto::registry::v1 as pb;
use tokio::net::TcpListener;

/// Source attribute of the trainer's events.
pub const SOURCE: &str = "/modelbus/trainer";
/// Durable consumer name.
pub const CONSUMER: &str = "trainer";

/// Errors that stop the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// Start-up or serving failed.
    #[error("{0}")]
    Fatal(String),
}

#[derive(Clone)]
struct Trainer {
    ctx: Context,
    registry: modelbus_proto::RegistryServiceClient<tonic::transport::Channel>,
}

fn registry_err(st: tonic::Status) -> HandlerError {
    match st.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => {
            HandlerError::Reject(st.message().to_string())
        }
        _ => HandlerError::Retry(format!("registry: {st}")),
    }
}

fn store_err(e: ArtifactError) -> HandlerError {
    match e {
        ArtifactError::NotFound(_) | ArtifactError::Corrupt { .. } => {
            HandlerError::Reject(e.to_string())
        }
        other => HandlerError::Retry(other.to_string()),
    }
}

impl Trainer {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<FeaturesReady>()?;
        let f = &e.data;
        let mut registry = self.registry.clone();
        let spec = registry
            .get_spec(pb::GetSpecRequest {
                dataset: String::new(),
                digest: f.spec_digest.to_hex(),
            })
            .await
            .map_err(registry_err)?
            .into_inner();
        let spec = DatasetSpec::parse(&spec.toml, "registered spec")
            .map_err(HandlerError::reject)?
            .spec;
        let fs_bytes = self
            .ctx
            .store
            .get(&f.feature_set_sha256)
            .await
            .map_err(store_err)?;
        let fitted_bytes = self
            .ctx
            .store
            .get(&f.transform_sha256)
            .await
            .map_err(store_err)?;
        let fitted: FittedFeatures = serde_json::from_slice(&fitted_bytes).map_err(|err| {
            HandlerError::Reject(format!("transform {}: {err}", f.transform_sha256))
        })?;
        let started = std::time::Instant::now();
        let spec_for_task = spec.clone();
        let trained = tokio::task::spawn_blocking(move || {
            let fs = FeatureSet::from_parquet(fs_bytes).map_err(|e| e.to_string())?;
            modelbus_ml::train::train(
                &spec_for_task,
                &fitted.transform,
                &fs,
                &fitted.negative_label,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| HandlerError::Retry(format!("training task: {e}")))?
        .map_err(HandlerError::Reject)?;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("modelbus_trainer_fit_seconds", "algorithm" => spec.model.algorithm.to_string()).record(seconds);
        let artifact = self
            .ctx
            .store
            .put(trained.artifact.to_bytes().into())
            .await
            .map_err(HandlerError::retry)?;

        let report_sha256 = match &e.pipelinerun {
            Some(run) => registry
                .get_pipeline_run(pb::GetPipelineRunRequest {
                    id: run.to_string(),
                })
                .await
                .map(|r| r.into_inner().report_sha256)
                .unwrap_or_default(),
            None => String::new(),
        };
        let mut metrics_map: std::collections::HashMap<String, f64> =
            std::collections::HashMap::new();
        metrics_map.insert("roc_auc".into(), trained.metrics.roc_auc);
        metrics_map.insert("pr_auc".into(), trained.metrics.pr_auc);
        metrics_map.insert("log_loss".into(), trained.metrics.log_loss);
        metrics_map.insert("brier".into(), trained.metrics.brier);
        metrics_map.insert("holdout_rows".into(), trained.metrics.n as f64);
        metrics_map.insert("holdout_positives".into(), trained.metrics.positives as f64);
        metrics_map.insert("fit_seconds".into(), seconds);
        let mut params: std::collections::HashMap<String, String> =
            trained.params.clone().into_iter().collect();
        for (name, gain) in trained.importance.iter().take(200) {
            params.insert(format!("importance.{name}"), format!("{gain:.6}"));
        }
        let model_name = spec.model_name().to_string();
        let registered = registry
            .register_model_version(pb::RegisterModelVersionRequest {
                model: model_name.clone(),
                dataset: spec.name.clone(),
                model_sha256: artifact.sha256.to_hex(),
                algorithm: spec.model.algorithm.to_string(),
                metrics: metrics_map.clone(),
                params,
                lineage: Some(pb::Lineage {
                    pipeline_run: e
                        .pipelinerun
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    batch_sha256: f.batch_sha256.to_hex(),
                    spec_digest: f.spec_digest.to_hex(),
                    report_sha256,
                    feature_set_sha256: f.feature_set_sha256.to_hex(),
                    transform_sha256: f.transform_sha256.to_hex(),
                    code_revision: self.ctx.config.code_revision(),
                    seed: f.seed,
                }),
                artifacts: vec![
                    pb::Artifact {
                        name: "model".into(),
                        sha256: artifact.sha256.to_hex(),
                    },
                    pb::Artifact {
                        name: "feature_set".into(),
                        sha256: f.feature_set_sha256.to_hex(),
                    },
                    pb::Artifact {
                        name: "transform".into(),
                        sha256: f.transform_sha256.to_hex(),
                    },
                ],
                author: f.submitted_by.clone(),
            })
            .await
            .map_err(registry_err)?
            .into_inner();
        let version = registered
            .version
            .ok_or_else(|| HandlerError::Retry("registry returned no version".into()))?;
        // Metrics as registered (the first registration wins on a redelivery).
        let metrics: std::collections::BTreeMap<String, f64> =
            version.metrics.clone().into_iter().collect();
        let model = ModelName::parse(&model_name).map_err(HandlerError::reject)?;
        let digest = Sha256Digest::parse(&version.model_sha256).map_err(HandlerError::reject)?;
        // Keyed by run too: another run may land on this same version.
        let run_key = e
            .pipelinerun
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let out = Envelope::new(
            SOURCE,
            &format!("{model}/{}/{run_key}", version.version),
            ModelTrained {
                dataset: f.dataset.clone(),
                model: model.clone(),
                version: version.version,
                run_id: version.run_id.clone(),
                model_sha256: digest,
                algorithm: version.algorithm.clone(),
                metrics,
            },
        )
        .with_subject(model.as_str())
        .caused_by(&e);
        self.ctx
            .bus
            .publish(&out)
            .await
            .map_err(HandlerError::retry)?;
        tracing::info!(
            model = %model, version = version.version, created = registered.created,
            roc_auc = trained.metrics.roc_auc, seconds, "model trained and registered"
        );
        Ok(())
    }
}

/// Runs the trainer until `ctx.shutdown`; `ops` serves its operations endpoints.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), TrainerError> {
    let registry = modelbus_proto::connect_lazy(&ctx.config.registry_grpc_url())
        .map_err(|e| TrainerError::Fatal(format!("registry URL: {e}")))?;
    let svc = Trainer {
        ctx: ctx.clone(),
        registry,
    };
    modelbus_core::ops::run_consumer_service(
        &ctx,
        ops,
        CONSUMER,
        &["modelbus.features.ready"],
        |d| {
            let svc = svc.clone();
            async move { svc.handle(&d).await }
        },
    )
    .await
    .map_err(|e| TrainerError::Fatal(e.to_string()))
}
