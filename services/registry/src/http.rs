//! The HTTP JSON API: the same operations as the gRPC API, under `/v1`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;

use crate::{Registry, RegistryError};

type ApiResult<T> = Result<Json<T>, RegistryError>;

/// Routes of the HTTP API.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v1/datasets", get(list_datasets).post(apply_spec))
        .route("/v1/datasets/{name}", get(get_dataset))
        .route("/v1/datasets/{name}/spec", get(latest_spec))
        .route("/v1/specs/{digest}", get(spec_by_digest))
        .route("/v1/pipeline-runs", get(list_pipeline_runs))
        .route("/v1/pipeline-runs/{id}", get(get_pipeline_run))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(get_model))
        .route("/v1/models/{name}/versions/{version}", get(get_version))
        .route(
            "/v1/models/{name}/versions/{version}/evaluation",
            get(evaluation_json),
        )
        .route(
            "/v1/models/{name}/versions/{version}/evaluation.html",
            get(evaluation_html),
        )
        .route("/v1/models/{name}/deployments", get(deployments))
        .route("/v1/reports/{sha256}", get(report))
        .route("/v1/batches/{sha256}/report.json", get(batch_report_json))
        .route("/v1/batches/{sha256}/report.html", get(batch_report_html))
        .with_state(registry)
}

#[tracing::instrument(skip_all)]
async fn list_datasets(State(r): State<Registry>) -> ApiResult<serde_json::Value> {
    Ok(Json(
        serde_json::json!({ "datasets": r.store.list_datasets().await? }),
    ))
}

/// `POST /v1/datasets` with the spec's TOML as the body; `X-Modelbus-Source`
/// names the file in error messages.
#[tracing::instrument(skip_all)]
async fn apply_spec(
    State(r): State<Registry>,
    headers: HeaderMap,
    body: String,
) -> Result<impl IntoResponse, RegistryError> {
    let source = headers
        .get("x-modelbus-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("spec.toml")
        .to_string();
    let (spec, created) = r.apply_spec(&body, &source).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({ "created": created, "spec": spec })),
    ))
}

#[tracing::instrument(skip_all, fields(dataset = %name))]
async fn get_dataset(
    State(r): State<Registry>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let versions = r.store.spec_versions(&name).await?;
    if versions.is_empty() {
        return Err(RegistryError::NotFound(format!("no dataset {name:?}")));
    }
    let summary: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| serde_json::json!({ "version": v.version, "digest": v.digest, "created_at": v.created_at }))
        .collect();
    Ok(Json(
        serde_json::json!({ "name": name, "latest": versions[0], "versions": summary }),
    ))
}

#[tracing::instrument(skip_all, fields(dataset = %name))]
async fn latest_spec(
    State(r): State<Registry>,
    Path(name): Path<String>,
) -> ApiResult<crate::types::SpecVersion> {
    Ok(Json(r.get_spec(&name, "").await?))
}

#[tracing::instrument(skip_all)]
async fn spec_by_digest(
    State(r): State<Registry>,
    Path(digest): Path<String>,
) -> ApiResult<crate::types::SpecVersion> {
    Ok(Json(r.get_spec("", &digest).await?))
}

#[derive(Deserialize)]
struct RunsQuery {
    dataset: Option<String>,
    limit: Option<u32>,
}

#[tracing::instrument(skip_all)]
async fn list_pipeline_runs(
    State(r): State<Registry>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<serde_json::Value> {
    let runs = r
        .store
        .list_pipeline_runs(q.dataset.as_deref(), q.limit.unwrap_or(50))
        .await?;
    Ok(Json(serde_json::json!({ "pipeline_runs": runs })))
}

#[tracing::instrument(skip_all, fields(pipelinerun = %id))]
async fn get_pipeline_run(
    State(r): State<Registry>,
    Path(id): Path<String>,
) -> ApiResult<crate::types::PipelineRun> {
    Ok(Json(r.pipeline_run(&id).await?))
}

#[tracing::instrument(skip_all, fields(run = %id))]
async fn get_run(
    State(r): State<Registry>,
    Path(id): Path<String>,
) -> ApiResult<crate::types::Run> {
    Ok(Json(r.run(&id).await?))
}

#[tracing::instrument(skip_all)]
async fn list_models(State(r): State<Registry>) -> ApiResult<serde_json::Value> {
    Ok(Json(
        serde_json::json!({ "models": r.store.list_models().await? }),
    ))
}

#[tracing::instrument(skip_all, fields(model = %name))]
async fn get_model(
    State(r): State<Registry>,
    Path(name): Path<String>,
) -> ApiResult<crate::types::RegisteredModel> {
    Ok(Json(r.model(&name).await?))
}

#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn get_version(
    State(r): State<Registry>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<crate::types::ModelVersion> {
    let v: u32 = version.parse().map_err(|_| {
        RegistryError::InvalidArgument(format!("version {version:?} is not a positive integer"))
    })?;
    Ok(Json(r.model_version(&name, v).await?))
}

fn parse_version(version: &str) -> Result<u32, RegistryError> {
    version.parse().map_err(|_| {
        RegistryError::InvalidArgument(format!("version {version:?} is not a positive integer"))
    })
}

#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn evaluation_json(
    State(r): State<Registry>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let v = r.model_version(&name, parse_version(&version)?).await?;
    if v.evaluation_sha256.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "{name} v{version} has no evaluation report"
        )));
    }
    Ok(Json(r.report(&v.evaluation_sha256).await?))
}

#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn evaluation_html(
    State(r): State<Registry>,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, RegistryError> {
    let v = r.model_version(&name, parse_version(&version)?).await?;
    if v.evaluation_html_sha256.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "{name} v{version} has no evaluation report"
        )));
    }
    let html = r.artifact_text(&v.evaluation_html_sha256).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    ))
}

#[tracing::instrument(skip_all, fields(model = %name))]
async fn deployments(
    State(r): State<Registry>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    r.model(&name).await?;
    Ok(Json(
        serde_json::json!({ "model": name, "timeline": r.store.deployment_events(&name).await? }),
    ))
}

#[derive(Deserialize)]
struct BatchQuery {
    spec_digest: Option<String>,
}

/// The validation report of a batch: of its latest run, or of its run under `?spec_digest=`.
async fn batch_report(
    r: &Registry,
    sha: &str,
    q: &BatchQuery,
) -> Result<serde_json::Value, RegistryError> {
    let batch = modelbus_core::ids::Sha256Digest::parse(sha)
        .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
    let runs = r.store.runs_for_batch(&batch.to_hex()).await?;
    let run = runs
        .iter()
        .find(|run| {
            q.spec_digest
                .as_deref()
                .is_none_or(|d| run.spec_digest == d)
        })
        .ok_or_else(|| RegistryError::NotFound(format!("no pipeline run for batch {batch}")))?;
    if run.report_sha256.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "batch {batch} is not validated yet (run {} is {})",
            run.id, run.state
        )));
    }
    r.report(&run.report_sha256).await
}

#[tracing::instrument(skip_all)]
async fn batch_report_json(
    State(r): State<Registry>,
    Path(sha): Path<String>,
    Query(q): Query<BatchQuery>,
) -> ApiResult<serde_json::Value> {
    Ok(Json(batch_report(&r, &sha, &q).await?))
}

/// The validation report as a self-contained page (GE's data docs).
#[tracing::instrument(skip_all)]
async fn batch_report_html(
    State(r): State<Registry>,
    Path(sha): Path<String>,
    Query(q): Query<BatchQuery>,
) -> Result<impl IntoResponse, RegistryError> {
    let value = batch_report(&r, &sha, &q).await?;
    let report: modelbus_ml::validate::ValidationReport = serde_json::from_value(value)
        .map_err(|e| RegistryError::Internal(format!("validation report: {e}")))?;
    let html = modelbus_ml::validation_html::render(&report);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    ))
}

#[tracing::instrument(skip_all)]
async fn report(
    State(r): State<Registry>,
    Path(sha): Path<String>,
) -> ApiResult<serde_json::Value> {
    Ok(Json(r.report(&sha).await?))
}
