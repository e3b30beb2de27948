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
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::{Envelope, FeaturesReady, ModelTrained};
use modelbus_core::ids::{ModelName, Sha256Digest};
use modelbus_dataset::table::read_all;
use modelbus_featurize::features::{Cell, FittedFeatures, cell};
use modelbus_featurize::featureset::{FeatureSet, HOLDOUT};
use modelbus_models::evaluate::{
    Comparison, Evaluation, EvaluationReport, Slice, compare, evaluate,
};
use modelbus_models::model::{ModelArtifact, Predictor};
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
    registry: modelbus_proto::Client,
}

/// The current champion: the version serving production, else staging.
struct Champion {
    version: u32,
    predictor: Predictor,
}

/// What the blocking part of training hands back.
struct Outcome {
    trained: modelbus_models::train::Trained,
    evaluation: Evaluation,
    comparison: Option<Comparison>,
    seconds: f64,
    /// Multivariate drift reference (PCA on the training rows' encoding).
    pca: Option<modelbus_featurize::drift::multivariate::PcaReference>,
}

impl Trainer {
    /// Stores what the monitor needs of this version (see
    /// `modelbus_models::monitoring`): the features' drift reference from the
    /// feature statistics, the holdout scores and figures. Statistics written
    /// before drift references existed give none.
    async fn monitoring_reference(
        &self,
        statistics: &Sha256Digest,
        spec: &modelbus_dataset::spec::DatasetSpec,
        outcome: &Outcome,
        negative_label: &str,
    ) -> Result<Option<Sha256Digest>, HandlerError> {
        let bytes = self
            .ctx
            .store
            .get(statistics)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        let stats: modelbus_featurize::features::FeatureStatistics = serde_json::from_slice(&bytes)
            .map_err(|err| {
                HandlerError::Reject(format!("feature statistics {statistics}: {err}"))
            })?;
        let Some(features) = stats.drift_reference else {
            return Ok(None);
        };
        let t = &outcome.trained;
        let ev = &outcome.evaluation;
        let reference = modelbus_models::monitoring::MonitoringReference {
            features,
            prediction: modelbus_featurize::drift::reference::NumericReference::from_values(
                t.holdout_predictions.clone(),
                0,
            ),
            holdout: modelbus_models::monitoring::HoldoutFigures {
                rows: t.metrics.n as u64,
                positives: t.metrics.positives as u64,
                roc_auc: t.metrics.roc_auc,
                pr_auc: t.metrics.pr_auc,
                log_loss: t.metrics.log_loss,
                brier: t.metrics.brier,
                ece: ev.ece,
                threshold: ev.confusion.threshold,
            },
            null_values: spec.null_values.clone(),
            positive_label: spec.target.positive.clone(),
            negative_label: negative_label.to_string(),
            calibration: modelbus_models::performance::Calibration::fit(
                &t.holdout_labels,
                &t.holdout_predictions,
                5,
            ),
            multivariate: outcome.pca.clone(),
        };
        let stored = self
            .ctx
            .store
            .put(reference.to_bytes().into())
            .await
            .map_err(HandlerError::retry)?;
        Ok(Some(stored.sha256))
    }

    /// Loads the champion of `model`, if there is one.
    async fn champion(&self, model: &str) -> Result<Option<Champion>, HandlerError> {
        let m = match self
            .registry
            .clone()
            .get_model(pb::GetModelRequest {
                name: model.to_string(),
            })
            .await
        {
            Ok(m) => m.into_inner(),
            Err(st) if st.code() == tonic::Code::NotFound => return Ok(None),
            Err(st) => return Err(modelbus_stage::registry_error(st)),
        };
        let Some(version) = m
            .aliases
            .get("production")
            .or_else(|| m.aliases.get("staging"))
            .copied()
        else {
            return Ok(None);
        };
        let Some(v) = m.versions.iter().find(|v| v.version == version) else {
            return Ok(None);
        };
        let digest = Sha256Digest::parse(&v.model_sha256).map_err(HandlerError::reject)?;
        let bytes = self
            .ctx
            .store
            .get(&digest)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        match ModelArtifact::from_bytes(&bytes).and_then(Predictor::new) {
            Ok(predictor) => Ok(Some(Champion { version, predictor })),
            Err(err) => {
                tracing::warn!(%err, version, "champion cannot be loaded; no comparison");
                Ok(None)
            }
        }
    }

    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<FeaturesReady>()?;
        let f = &e.data;
        let mut registry = self.registry.clone();
        let spec = modelbus_stage::fetch_spec(&registry, &f.spec_digest)
            .await?
            .spec;
        let fs_bytes = self
            .ctx
            .store
            .get(&f.feature_set_sha256)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        let fitted_bytes = self
            .ctx
            .store
            .get(&f.transform_sha256)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        let mut fitted: FittedFeatures = serde_json::from_slice(&fitted_bytes).map_err(|err| {
            HandlerError::Reject(format!("transform {}: {err}", f.transform_sha256))
        })?;
        fitted.transform = fitted.transform.prepare().map_err(HandlerError::Reject)?;
        let model_name = spec.model_name().to_string();
        let champion = self.champion(&model_name).await?;
        // The raw rows give the slices and let the champion encode with its own transform.
        let raw = if champion.is_some() || !spec.evaluation.slices.is_empty() {
            Some(
                self.ctx
                    .store
                    .open_read(&f.batch_sha256)
                    .await
                    .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?,
            )
        } else {
            None
        };
        let spec_for_task = spec.clone();
        let negative_label = fitted.negative_label.clone();
        let window_rows = usize::try_from(self.ctx.config.monitor.window_rows).unwrap_or(1_000);
        let outcome = tokio::task::spawn_blocking(move || -> Result<Outcome, String> {
            let spec = spec_for_task;
            let fs = FeatureSet::from_parquet(fs_bytes).map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let trained = modelbus_models::train::train(
                &spec,
                &fitted.transform,
                &fs,
                &fitted.negative_label,
            )
            .map_err(|e| e.to_string())?;
            let seconds = started.elapsed().as_secs_f64();
            let holdout_rows: Vec<usize> = fs
                .split
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == HOLDOUT)
                .map(|(i, _)| i)
                .collect();
            let chunks = match raw {
                Some(r) => read_all(r, std::sync::Arc::new(spec.clone()), 65_536)
                    .map_err(|e| e.to_string())?,
                None => Vec::new(),
            };
            let index = |n: &str| spec.columns.iter().position(|c| c.name == n);
            let slice_values: Vec<(String, Vec<String>)> = spec
                .evaluation
                .slices
                .iter()
                .map(|col| {
                    let ci = index(col);
                    let mut values = Vec::with_capacity(holdout_rows.len());
                    let mut want = holdout_rows.iter().peekable();
                    let mut base = 0usize;
                    for chunk in &chunks {
                        let n = chunk.batch.num_rows();
                        while let Some(&&r) = want.peek() {
                            if r >= base + n {
                                break;
                            }
                            want.next();
                            values.push(match ci.map(|ci| cell(chunk, ci, r - base)) {
                                Some(Cell::Text(s)) => s.to_string(),
                                Some(Cell::Num(v)) => format!("{v}"),
                                Some(Cell::Bool(b)) => b.to_string(),
                                _ => "(null)".to_string(),
                            });
                        }
                        base += n;
                    }
                    (col.clone(), values)
                })
                .collect();
            let slices: Vec<Slice<'_>> = slice_values
                .iter()
                .map(|(c, v)| Slice {
                    column: c,
                    values: v,
                })
                .collect();
            let config = spec.evaluation.config(spec.model.seed);
            let y = &trained.holdout_labels;
            let p = &trained.holdout_predictions;
            let evaluation = evaluate(y, p, &slices, &trained.importance, &config);
            let comparison = match &champion {
                Some(c) => match c
                    .predictor
                    .predict_chunk_rows(&chunks, &index, &holdout_rows)
                {
                    Ok(pc) => Some(compare(
                        y,
                        p,
                        &pc,
                        spec.model_name(),
                        c.version,
                        &slices,
                        &config,
                    )),
                    Err(err) => {
                        tracing::warn!(%err, "the champion cannot score this batch; no comparison");
                        None
                    }
                },
                None => None,
            };
            let (x_train, _, _) = fs.split_rows(modelbus_featurize::featureset::TRAIN);
            let pca = modelbus_featurize::drift::multivariate::PcaReference::fit(
                &x_train,
                &fs.names,
                window_rows,
                spec.model.seed,
            );
            Ok(Outcome {
                trained,
                evaluation,
                comparison,
                seconds,
                pca,
            })
        })
        .await
        .map_err(|e| HandlerError::Retry(format!("training task: {e}")))?
        .map_err(HandlerError::Reject)?;
        let trained = &outcome.trained;
        let seconds = outcome.seconds;
        metrics::histogram!("modelbus_trainer_fit_seconds", "algorithm" => trained.artifact.algorithm.to_string()).record(seconds);
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
        let ev = &outcome.evaluation;
        let mut metrics_map: std::collections::HashMap<String, f64> =
            std::collections::HashMap::new();
        metrics_map.insert("roc_auc".into(), trained.metrics.roc_auc);
        metrics_map.insert("roc_auc_low".into(), ev.roc_auc_interval.low);
        metrics_map.insert("roc_auc_high".into(), ev.roc_auc_interval.high);
        metrics_map.insert("pr_auc".into(), trained.metrics.pr_auc);
        metrics_map.insert("log_loss".into(), trained.metrics.log_loss);
        metrics_map.insert("brier".into(), trained.metrics.brier);
        metrics_map.insert("ece".into(), ev.ece);
        metrics_map.insert("threshold".into(), ev.confusion.threshold);
        metrics_map.insert("f1".into(), ev.confusion.f1);
        metrics_map.insert("holdout_rows".into(), trained.metrics.n as f64);
        metrics_map.insert("holdout_positives".into(), trained.metrics.positives as f64);
        metrics_map.insert("fit_seconds".into(), seconds);
        if let Some(c) = &outcome.comparison {
            metrics_map.insert("champion_version".into(), f64::from(c.champion_version));
            metrics_map.insert("delta_roc_auc".into(), c.delta_roc_auc);
        }
        metrics_map.retain(|_, v| v.is_finite());
        let mut params: std::collections::HashMap<String, String> =
            trained.params.clone().into_iter().collect();
        for (name, gain) in trained.importance.iter().take(200) {
            params.insert(format!("importance.{name}"), format!("{gain:.6}"));
        }
        let mut artifacts = vec![
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
        ];
        if let Some(st) = &f.statistics_sha256 {
            artifacts.push(pb::Artifact {
                name: "feature_statistics".into(),
                sha256: st.to_hex(),
            });
            if let Some(sha) = self
                .monitoring_reference(st, &spec, &outcome, &negative_label)
                .await?
            {
                artifacts.push(pb::Artifact {
                    name: "monitoring_reference".into(),
                    sha256: sha.to_hex(),
                });
            }
        }
        let registered = registry
            .register_model_version(pb::RegisterModelVersionRequest {
                model: model_name.clone(),
                dataset: spec.name.clone(),
                model_sha256: artifact.sha256.to_hex(),
                algorithm: trained.artifact.algorithm.to_string(),
                metrics: metrics_map,
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
                artifacts,
                author: f.submitted_by.clone(),
                evaluation_sha256: String::new(),
                evaluation_html_sha256: String::new(),
            })
            .await
            .map_err(modelbus_stage::registry_error)?
            .into_inner();
        let version = registered
            .version
            .ok_or_else(|| HandlerError::Retry("registry returned no version".into()))?;
        // The report names the version, so it is written once the version is known.
        let report = EvaluationReport {
            model: model_name.clone(),
            version: version.version,
            evaluation: outcome.evaluation.clone(),
            comparison: outcome.comparison.clone(),
        };
        let report_json = self
            .ctx
            .store
            .put(
                serde_json::to_vec_pretty(&report)
                    .map_err(HandlerError::retry)?
                    .into(),
            )
            .await
            .map_err(HandlerError::retry)?;
        let report_html = self
            .ctx
            .store
            .put(
                modelbus_models::evaluation_html::render(&report)
                    .into_bytes()
                    .into(),
            )
            .await
            .map_err(HandlerError::retry)?;
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
                evaluation_sha256: Some(report_json.sha256),
                evaluation_html_sha256: Some(report_html.sha256),
            },
        )
        .with_subject(model.as_str());
        self.ctx.bus.publish_caused(out, &e).await?;
        tracing::info!(
            model = %model, version = version.version, created = registered.created,
            roc_auc = trained.metrics.roc_auc, ece = outcome.evaluation.ece, seconds,
            champion = outcome.comparison.as_ref().map(|c| c.champion_version),
            "model trained, evaluated and registered"
        );
        Ok(())
    }
}

/// Runs the trainer until `ctx.shutdown`; `ops` serves its operations endpoints.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), TrainerError> {
    let registry =
        modelbus_stage::registry_client(&ctx, modelbus_core::auth::ServiceIdentity::Trainer)
            .map_err(|e| TrainerError::Fatal(e.to_string()))?;
    let svc = Trainer {
        ctx: ctx.clone(),
        registry,
    };
    modelbus_core::ops::run_consumer_service(
        &ctx,
        ops,
        None,
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
