//! Ingest: where batches enter. Producers upload CSV over HTTP (streamed to the
//! artifact store, never held whole in memory) or put the object themselves and
//! publish `data.batch.submitted`. Every submitted batch is validated in one
//! streaming pass against its dataset's spec; the JSON report is stored as an
//! artifact and the outcome published as `data.batch.validated` or
//! `data.batch.rejected`. Rejected batches stay in the store (quarantine): ingest
//! never deletes a batch.
#![forbid(unsafe_code)]

mod quality;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::TryStreamExt;
use modelbus_core::Context;
use modelbus_core::artifact::{ArtifactError, ArtifactStore};
use modelbus_core::auth::{Permission, Principal};
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::{
    BatchRejected, BatchSubmitted, BatchValidated, Envelope, LabelsObserved, NotificationRaised,
};
use modelbus_core::ids::{DatasetName, PipelineRunId, Sha256Digest};
use modelbus_dataset::spec::DatasetSpec;
use modelbus_dataset::validate::{ValidationReport, validate_csv};
use modelbus_proto::registry::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Source attribute of ingest's events.
pub const SOURCE: &str = "/modelbus/ingest";
/// Durable consumer name.
pub const CONSUMER: &str = "ingest";

type Registry = modelbus_proto::Client;

/// Why a stored batch could not be validated (as opposed to a batch that was
/// validated and failed).
#[derive(Debug, thiserror::Error)]
pub enum StoredBatchError {
    /// The batch is missing, or its stored bytes are not the batch (truncated
    /// or altered: [`ArtifactError::Corrupt`]), or reading it failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The validation task itself failed.
    #[error("validation task failed: {0}")]
    Task(String),
}

/// Validates a stored batch in one streaming pass. The bytes are checked
/// against the batch's digest as they are read, and the report is returned only
/// when all of them were the batch's: a truncated or altered object fails with
/// [`ArtifactError::Corrupt`] instead of yielding a report on a prefix of the
/// data (which could pass under the whole batch's digest).
pub async fn validate_stored(
    store: &ArtifactStore,
    batch: &Sha256Digest,
    spec: Arc<DatasetSpec>,
    chunk_rows: usize,
) -> Result<ValidationReport, StoredBatchError> {
    let mut reader = store.open_read(batch).await?;
    let (report, integrity) = tokio::task::spawn_blocking(move || {
        let report = validate_csv(&mut reader, spec, chunk_rows);
        // Reads what validation left (it stops at a structural error) so the
        // digest is always checked.
        (report, reader.finish())
    })
    .await
    .map_err(|e| StoredBatchError::Task(e.to_string()))?;
    integrity?;
    Ok(report)
}

/// Errors of ingest's HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request is wrong (unknown dataset, bad digest).
    #[error("{0}")]
    BadRequest(String),
    /// No such dataset or spec.
    #[error("{0}")]
    NotFound(String),
    /// The upload is larger than `ingest.max_batch_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// No valid bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's principal may not submit batches.
    #[error("{0}")]
    Forbidden(String),
    /// A dependency failed.
    #[error("{0}")]
    Unavailable(String),
    /// Something else failed; logged, not shown.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            IngestError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            IngestError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            IngestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            IngestError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            IngestError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            IngestError::Internal(cause) => {
                tracing::error!(%cause, "internal ingest error");
                "internal error; see the ingest log".to_string()
            }
            other => other.to_string(),
        };
        (
            status,
            Json(serde_json::json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

fn from_status(s: tonic::Status) -> IngestError {
    match s.code() {
        tonic::Code::NotFound => IngestError::NotFound(s.message().to_string()),
        tonic::Code::InvalidArgument => IngestError::BadRequest(s.message().to_string()),
        tonic::Code::Unauthenticated => IngestError::Unauthenticated(s.message().to_string()),
        tonic::Code::PermissionDenied => IngestError::Forbidden(s.message().to_string()),
        tonic::Code::Unavailable => {
            IngestError::Unavailable(format!("registry unavailable: {}", s.message()))
        }
        _ => IngestError::Internal(format!("registry: {s}")),
    }
}

/// The answer to an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// Pipeline run id.
    pub pipeline_run: String,
    /// Digest of the uploaded bytes.
    pub batch_sha256: String,
    /// Bytes received.
    pub size_bytes: u64,
    /// Dataset.
    pub dataset: String,
    /// Spec version the batch is validated against.
    pub spec_digest: String,
    /// False when the same bytes were already submitted for this spec.
    pub created: bool,
    /// The run's state now.
    pub state: String,
}

#[derive(Clone)]
struct Ingest {
    ctx: Context,
    registry: Registry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    spec_digest: Option<String>,
}

/// Who is submitting: the registry resolves the bearer token (ingest keeps no
/// token store of its own), and the principal must be allowed to submit.
async fn producer(ingest: &Ingest, headers: &HeaderMap) -> Result<Principal, IngestError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(modelbus_core::auth::bearer) else {
        metrics::counter!("modelbus_auth_failures_total", "reason" => "missing").increment(1);
        return Err(IngestError::Unauthenticated(
            "no bearer token: pass --token or set MODELBUS_TOKEN (`Authorization: Bearer <token>`)"
                .into(),
        ));
    };
    let p = ingest
        .registry
        .clone()
        .authenticate(pb::AuthenticateRequest {
            token: token.to_string(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    let principal = Principal {
        name: p.name,
        roles: p.roles.iter().filter_map(|r| r.parse().ok()).collect(),
        token_id: p.token_id,
    };
    principal
        .require(Permission::Submit)
        .map_err(IngestError::Forbidden)?;
    Ok(principal)
}

/// `POST /v1/datasets/{name}/batches` with the CSV as the body.
#[tracing::instrument(skip_all, fields(dataset = %name))]
async fn submit(
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, IngestError> {
    // Authenticate before reading a byte of the upload.
    let who = producer(&ingest, &headers).await?;
    let dataset = DatasetName::parse(&name).map_err(|e| IngestError::BadRequest(e.to_string()))?;
    let mut registry = ingest.registry.clone();
    // Resolve the spec first: an unknown dataset is refused before any byte is stored.
    let spec = registry
        .get_spec(pb::GetSpecRequest {
            dataset: dataset.to_string(),
            digest: q.spec_digest.clone().unwrap_or_default(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    if spec.dataset != dataset.as_str() {
        return Err(IngestError::BadRequest(format!(
            "spec {} belongs to dataset {:?}, not {dataset:?}",
            spec.digest, spec.dataset
        )));
    }
    let limit = ingest.ctx.config.ingest.max_batch_bytes;
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let stored = ingest
        .ctx
        .store
        .put_stream(stream, Some(limit))
        .await
        .map_err(|e| match e {
            ArtifactError::TooLarge { limit } => IngestError::TooLarge(format!(
                "batch exceeds ingest.max_batch_bytes ({limit} bytes); nothing was stored"
            )),
            ArtifactError::Source(m) => {
                IngestError::BadRequest(format!("reading the upload failed: {m}"))
            }
            other => IngestError::Internal(other.to_string()),
        })?;
    let resp = register_and_publish(
        &ingest,
        &dataset,
        &spec.digest,
        stored.sha256,
        stored.size,
        &who.name,
    )
    .await?;
    metrics::counter!("modelbus_ingest_batches_received_total", "dataset" => dataset.to_string())
        .increment(1);
    metrics::counter!("modelbus_ingest_bytes_received_total", "dataset" => dataset.to_string())
        .increment(stored.size);
    let status = if resp.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resp)))
}

async fn register_and_publish(
    ingest: &Ingest,
    dataset: &DatasetName,
    spec_digest: &str,
    batch: Sha256Digest,
    size: u64,
    who: &str,
) -> Result<SubmitResponse, IngestError> {
    let mut registry = ingest.registry.clone();
    let created = registry
        .create_pipeline_run(pb::CreatePipelineRunRequest {
            dataset: dataset.to_string(),
            spec_digest: spec_digest.to_string(),
            batch_sha256: batch.to_hex(),
            size_bytes: size,
            submitted_by: who.to_string(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    let run = created
        .run
        .ok_or_else(|| IngestError::Internal("registry returned no run".into()))?;
    // A run still at `submitted` may have been created by an upload that died
    // before publishing: publish again (same event id, so the bus de-duplicates).
    if created.created || run.state == "submitted" {
        let spec =
            Sha256Digest::parse(spec_digest).map_err(|e| IngestError::Internal(e.to_string()))?;
        let run_id =
            PipelineRunId::parse(&run.id).map_err(|e| IngestError::Internal(e.to_string()))?;
        let event = Envelope::new(
            SOURCE,
            run_id.as_str(),
            BatchSubmitted {
                dataset: dataset.clone(),
                spec_digest: spec,
                batch_sha256: batch,
                size_bytes: size,
                submitted_by: run.submitted_by.clone(),
            },
        )
        .with_subject(dataset.as_str())
        .with_pipeline_run(Some(run_id));
        ingest
            .ctx
            .bus
            .publish(&event)
            .await
            .map_err(|e| IngestError::Unavailable(format!("cannot publish to the bus: {e}")))?;
    }
    Ok(SubmitResponse {
        pipeline_run: run.id,
        batch_sha256: batch.to_hex(),
        size_bytes: size,
        dataset: dataset.to_string(),
        spec_digest: spec_digest.to_string(),
        created: created.created,
        state: run.state,
    })
}

/// What `POST /v1/datasets/{name}/labels` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelsResponse {
    /// Id of the submission (the monitor's join reports under it).
    pub labels_id: String,
    /// Dataset.
    pub dataset: String,
    /// Labels accepted.
    pub rows: u64,
    /// Of which naming a prediction id.
    pub by_prediction_id: u64,
    /// Of which naming an entity.
    pub by_entity: u64,
    /// The stored labels (JSON lines).
    pub labels_sha256: String,
}

/// `POST /v1/datasets/{name}/labels` with a label CSV as the body (see
/// `modelbus_dataset::labels`): checked whole against the dataset's latest
/// spec, stored, and announced as `labels.observed`; the registry joins them
/// to logged predictions. A bad file is refused naming the row and value, and
/// nothing is stored.
#[tracing::instrument(skip_all, fields(dataset = %name))]
async fn submit_labels(
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, IngestError> {
    let who = producer(&ingest, &headers).await?;
    let dataset = DatasetName::parse(&name).map_err(|e| IngestError::BadRequest(e.to_string()))?;
    let record = ingest
        .registry
        .clone()
        .get_spec(pb::GetSpecRequest {
            dataset: dataset.to_string(),
            digest: String::new(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    let spec = DatasetSpec::parse(&record.toml, "registered spec")
        .map_err(|e| IngestError::Internal(e.to_string()))?
        .spec;
    let c = &ingest.ctx.config.ingest;
    let limit = usize::try_from(c.max_label_bytes).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit")
        {
            IngestError::TooLarge(format!(
                "label file exceeds ingest.max_label_bytes ({limit} bytes); nothing was stored"
            ))
        } else {
            IngestError::BadRequest(format!("reading the upload failed: {e}"))
        }
    })?;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let max_rows = c.max_label_rows;
    let labels = tokio::task::spawn_blocking(move || {
        modelbus_dataset::labels::parse(&spec, &bytes, now_ms, max_rows)
    })
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))?
    .map_err(|e| {
        metrics::counter!("modelbus_ingest_label_files_total", "outcome" => "refused").increment(1);
        IngestError::BadRequest(format!("label file refused: {e}"))
    })?;
    let by_prediction_id = labels.iter().filter(|l| l.prediction_id.is_some()).count() as u64;
    let rows = labels.len() as u64;
    let stored = ingest
        .ctx
        .store
        .put(modelbus_dataset::labels::to_json_lines(&labels).into())
        .await
        .map_err(|e| IngestError::Unavailable(format!("cannot store the labels: {e}")))?;
    let labels_id = uuid::Uuid::now_v7().to_string();
    let event = Envelope::new(
        SOURCE,
        &format!("labels/{labels_id}"),
        LabelsObserved {
            labels_id: labels_id.clone(),
            dataset: dataset.clone(),
            labels_sha256: stored.sha256,
            rows,
            submitted_by: who.name.clone(),
        },
    )
    .with_subject(dataset.as_str());
    ingest
        .ctx
        .bus
        .publish(&event)
        .await
        .map_err(|e| IngestError::Unavailable(format!("cannot publish to the bus: {e}")))?;
    metrics::counter!("modelbus_ingest_label_files_total", "outcome" => "accepted").increment(1);
    metrics::counter!("modelbus_ingest_labels_total", "dataset" => dataset.to_string())
        .increment(rows);
    tracing::info!(%labels_id, rows, "labels accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(LabelsResponse {
            labels_id,
            dataset: dataset.to_string(),
            rows,
            by_prediction_id,
            by_entity: rows - by_prediction_id,
            labels_sha256: stored.sha256.to_hex(),
        }),
    ))
}

/// Routes of ingest's HTTP API (without the operations endpoints).
fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/v1/datasets/{name}/batches", post(submit))
        .route("/v1/datasets/{name}/labels", post(submit_labels))
        // Streaming: the artifact store enforces `ingest.max_batch_bytes` itself.
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

impl Ingest {
    /// Counts a batch's validation warnings and publishes a notification listing them.
    async fn notify_warnings(
        &self,
        cause: &Envelope<BatchSubmitted>,
        report: &modelbus_dataset::validate::ValidationReport,
        run: &PipelineRunId,
    ) -> Result<(), HandlerError> {
        let warnings = report.warnings();
        if warnings.is_empty() {
            return Ok(());
        }
        let dataset = cause.data.dataset.clone();
        metrics::counter!("modelbus_ingest_validation_warnings_total", "dataset" => dataset.to_string())
            .increment(warnings.len() as u64);
        tracing::warn!(pipelinerun = %run, ?warnings, "batch validated with warnings");
        let n = Envelope::new(
            SOURCE,
            &format!("{run}/warnings"),
            NotificationRaised {
                severity: "warning".into(),
                kind: "validation_warning".into(),
                title: format!(
                    "{} warning(s) validating a batch of {dataset} (run {run})",
                    warnings.len()
                ),
                details: warnings,
                dataset: Some(dataset.clone()),
            },
        )
        .with_subject(dataset.as_str())
        .with_pipeline_run(Some(run.clone()));
        self.ctx.bus.publish_caused(n, cause).await.map(|_| ())
    }

    /// Validates a submitted batch and publishes the outcome.
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<BatchSubmitted>()?;
        let s = &e.data;
        let mut registry = self.registry.clone();
        let fetched = modelbus_stage::fetch_spec(&registry, &s.spec_digest).await?;
        if fetched.record.dataset != s.dataset.as_str() {
            return Err(HandlerError::Reject(format!(
                "spec {} belongs to dataset {:?}, the event says {:?}",
                s.spec_digest, fetched.record.dataset, s.dataset
            )));
        }
        // Producers that publish on NATS directly have no run yet; the name
        // such an event gives is recorded as claimed. An upload's run exists
        // already and keeps its authenticated uploader.
        let created = registry
            .create_pipeline_run(pb::CreatePipelineRunRequest {
                dataset: s.dataset.to_string(),
                spec_digest: s.spec_digest.to_hex(),
                batch_sha256: s.batch_sha256.to_hex(),
                size_bytes: s.size_bytes,
                submitted_by: modelbus_core::auth::claimed_submitter(&s.submitted_by),
            })
            .await
            .map_err(|st| HandlerError::Retry(format!("registry: {st}")))?
            .into_inner();
        let run = created
            .run
            .ok_or_else(|| HandlerError::Retry("registry returned no run".into()))?;
        let run_id = PipelineRunId::parse(&run.id).map_err(HandlerError::reject)?;
        let spec_arc = Arc::new(fetched.spec);
        let chunk_rows = self.ctx.config.ingest.chunk_rows;
        let started = std::time::Instant::now();
        // Neither validated nor rejected on bytes that are not the batch: a
        // corrupt object is a storage fault, retried (a re-upload of the batch
        // repairs it) and dead-lettered, failing the run, when it persists.
        let report = validate_stored(&self.ctx.store, &s.batch_sha256, spec_arc, chunk_rows)
            .await
            .map_err(|err| match err {
                StoredBatchError::Artifact(e) => {
                    let missing = matches!(e, ArtifactError::NotFound(_));
                    match modelbus_stage::artifact_error(CONSUMER, e) {
                        HandlerError::Reject(m) if missing => HandlerError::Reject(format!(
                            "batch {} is not in the artifact store ({m}): put the object before publishing data.batch.submitted",
                            s.batch_sha256
                        )),
                        other => other,
                    }
                }
                other => HandlerError::Retry(other.to_string()),
            })?;
        metrics::histogram!("modelbus_ingest_validation_seconds", "dataset" => s.dataset.to_string())
            .record(started.elapsed().as_secs_f64());
        quality::record(s.dataset.as_str(), &report);
        let report_bytes = serde_json::to_vec_pretty(&report).map_err(HandlerError::retry)?;
        let stored = self
            .ctx
            .store
            .put(report_bytes.into())
            .await
            .map_err(HandlerError::retry)?;
        let key = run_id.as_str().to_string();
        if report.success {
            let out = Envelope::new(
                SOURCE,
                &key,
                BatchValidated {
                    dataset: s.dataset.clone(),
                    spec_digest: s.spec_digest,
                    batch_sha256: s.batch_sha256,
                    report_sha256: stored.sha256,
                    rows: report.rows,
                    warnings: report.warnings(),
                    submitted_by: run.submitted_by.clone(),
                },
            )
            .with_subject(s.dataset.as_str())
            .with_pipeline_run(Some(run_id.clone()));
            self.ctx.bus.publish_caused(out, &e).await?;
            metrics::counter!("modelbus_ingest_batches_validated_total", "dataset" => s.dataset.to_string()).increment(1);
            self.notify_warnings(&e, &report, &run_id).await?;
            tracing::info!(pipelinerun = %run_id, rows = report.rows, "batch validated");
        } else {
            let reasons = report.reasons();
            let out = Envelope::new(
                SOURCE,
                &key,
                BatchRejected {
                    dataset: s.dataset.clone(),
                    spec_digest: s.spec_digest,
                    batch_sha256: s.batch_sha256,
                    report_sha256: stored.sha256,
                    reasons: reasons.clone(),
                },
            )
            .with_subject(s.dataset.as_str())
            .with_pipeline_run(Some(run_id.clone()));
            self.ctx.bus.publish_caused(out, &e).await?;
            metrics::counter!("modelbus_ingest_batches_rejected_total", "dataset" => s.dataset.to_string()).increment(1);
            self.notify_warnings(&e, &report, &run_id).await?;
            tracing::warn!(pipelinerun = %run_id, ?reasons, "batch rejected and kept in quarantine");
        }
        Ok(())
    }
}

/// Runs ingest until `ctx.shutdown`: the upload API on `listener` and the
/// validation consumer.
pub async fn run(ctx: Context, listener: TcpListener) -> Result<(), IngestError> {
    let registry =
        modelbus_stage::registry_client(&ctx, modelbus_core::auth::ServiceIdentity::Ingest)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
    let ingest = Ingest {
        ctx: ctx.clone(),
        registry,
    };
    let api = router(ingest.clone());
    modelbus_core::ops::run_consumer_service(
        &ctx,
        listener,
        Some(api),
        CONSUMER,
        &["modelbus.data.batch.submitted"],
        |d| {
            let ingest = ingest.clone();
            async move { ingest.handle(&d).await }
        },
    )
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))
}
