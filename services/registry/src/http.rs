//! The HTTP JSON API: the same operations as the gRPC API, under `/v1`.

use axum::extract::{Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use modelbus_core::auth::{Permission, Principal};
use modelbus_core::signing::{DsseEnvelope, StatementKind};
use serde::Deserialize;

use crate::{Registry, RegistryError};

type ApiResult<T> = Result<Json<T>, RegistryError>;

/// The permission an API route needs; `None`: any valid token. Unknown routes
/// need `Read`, so a route added without an entry here is never public.
pub fn permission(method: &Method, route: &str) -> Option<Permission> {
    use Permission::*;
    Some(match (method.as_str(), route) {
        (_, "/v1/whoami") => return None,
        ("POST", "/v1/datasets") => ApplySpec,
        (
            "GET",
            "/v1/datasets"
            | "/v1/datasets/{name}"
            | "/v1/datasets/{name}/spec"
            | "/v1/specs/{digest}",
        ) => ReadSpecs,
        (_, "/v1/tokens" | "/v1/tokens/revoke" | "/v1/approvers" | "/v1/approvers/{id}/revoke") => {
            Admin
        }
        ("POST", "/v1/approvals") => Approve,
        ("POST", "/v1/rollbacks") => Rollback,
        _ => Read,
    })
}

/// Authenticates every API request and checks the route's permission; the
/// principal is handed to the handler as an extension.
async fn require(
    State(r): State<Registry>,
    route: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Result<Response, RegistryError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let route = route.map(|m| m.as_str().to_string()).unwrap_or_default();
    let principal = match permission(req.method(), &route) {
        Some(p) => r.authorize(header.as_deref(), p).await?,
        None => r.authenticate(header.as_deref()).await?,
    };
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Routes of the HTTP API; every one needs a bearer token.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/revoke", post(revoke_tokens))
        .route("/v1/approvers", get(list_approvers).post(add_approver))
        .route("/v1/approvers/{id}/revoke", post(revoke_approver))
        .route("/v1/approvals", post(submit_approval))
        .route("/v1/rollbacks", post(submit_rollback))
        .route(
            "/v1/models/{name}/versions/{version}/approvals",
            get(version_approvals),
        )
        .route("/v1/audit", get(audit_entries))
        .route(
            "/v1/models/{name}/versions/{version}/evidence",
            get(version_evidence),
        )
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
        .route("/v1/models/{name}/windows", get(windows))
        .route("/v1/windows/pages/{sha256}", get(window_page))
        .route("/v1/reports/{sha256}", get(report))
        .route("/v1/batches/{sha256}/report.json", get(batch_report_json))
        .route("/v1/batches/{sha256}/report.html", get(batch_report_html))
        .route_layer(axum::middleware::from_fn_with_state(
            registry.clone(),
            require,
        ))
        .with_state(registry)
}

async fn whoami(Extension(p): Extension<Principal>) -> Json<Principal> {
    Json(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    name: String,
    roles: String,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::InvalidArgument(format!("{what}: invalid JSON body: {e}")))
}

#[tracing::instrument(skip_all)]
async fn create_token(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, RegistryError> {
    let b: NewTokenBody = json_body(&body, "token request {name, roles}")?;
    let (info, token) = r.create_token(&by, &b.name, &b.roles).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": token, "info": info })),
    ))
}

#[tracing::instrument(skip_all)]
async fn list_tokens(State(r): State<Registry>) -> ApiResult<serde_json::Value> {
    Ok(Json(
        serde_json::json!({ "tokens": r.store.list_tokens().await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeTokenBody {
    id: Option<String>,
    name: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn revoke_tokens(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    body: axum::body::Bytes,
) -> ApiResult<serde_json::Value> {
    let b: RevokeTokenBody = json_body(&body, "revocation {id} or {name}")?;
    let revoked = r
        .revoke_tokens(&by, b.id.as_deref(), b.name.as_deref())
        .await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

#[tracing::instrument(skip_all)]
async fn list_approvers(State(r): State<Registry>) -> ApiResult<serde_json::Value> {
    Ok(Json(
        serde_json::json!({ "approvers": r.store.list_approvers().await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApproverBody {
    id: String,
    public_key: String,
    role: String,
}

#[tracing::instrument(skip_all)]
async fn add_approver(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, RegistryError> {
    let b: NewApproverBody = json_body(&body, "approver {id, public_key, role}")?;
    let a = r.add_approver(&by, &b.id, &b.public_key, &b.role).await?;
    Ok((StatusCode::CREATED, Json(a)))
}

#[tracing::instrument(skip_all, fields(approver = %id))]
async fn revoke_approver(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<crate::store::Approver> {
    Ok(Json(r.revoke_approver(&by, &id).await?))
}

async fn submit(
    r: &Registry,
    by: &Principal,
    body: &[u8],
    kinds: &[StatementKind],
) -> Result<Response, RegistryError> {
    let envelope: DsseEnvelope =
        json_body(body, "DSSE envelope {payloadType, payload, signatures}")?;
    let outcome = r.submit_signed(by, &envelope, kinds).await?;
    Ok((StatusCode::CREATED, Json(outcome)).into_response())
}

/// `POST /v1/approvals`: a signed approval or rejection (DSSE envelope).
#[tracing::instrument(skip_all)]
async fn submit_approval(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, RegistryError> {
    submit(
        &r,
        &by,
        &body,
        &[StatementKind::Approve, StatementKind::Reject],
    )
    .await
}

/// `POST /v1/rollbacks`: a signed rollback (DSSE envelope).
#[tracing::instrument(skip_all)]
async fn submit_rollback(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, RegistryError> {
    submit(&r, &by, &body, &[StatementKind::Rollback]).await
}

#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn version_approvals(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let v = parse_version(&version)?;
    r.model_version(&name, v).await?;
    let mut decisions = r.store.signed_decisions(&name, v, "").await?;
    let mut automation = r.store.automation_approvals(&name, v).await?;
    // The signed envelopes themselves only for those who sign or administer:
    // a viewer sees who decided what and when, not material to re-wrap.
    let sees_envelopes = by.can(Permission::Approve) || by.can(Permission::Admin);
    if !sees_envelopes {
        for d in &mut decisions {
            d.envelope.clear();
        }
        for a in &mut automation {
            if let Some(obj) = a.as_object_mut() {
                obj.remove("envelope");
            }
        }
    }
    Ok(Json(serde_json::json!({
        "model": name,
        "version": v,
        "decisions": decisions,
        "automation": automation,
        "envelopes_redacted": !sees_envelopes,
        "promotion": r.store.promotion(&name, v, "production").await?,
    })))
}

/// `GET /v1/models/{name}/versions/{version}/evidence`: the version's evidence bundle.
#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn version_evidence(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let v = parse_version(&version)?;
    let (evidence, sha256) = r.export_evidence(&name, v, &by.name).await?;
    Ok(([("x-modelbus-artifact-sha256", sha256)], Json(evidence)).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/audit?after=SEQ&limit=N`: audit entries in chain order.
#[tracing::instrument(skip_all)]
async fn audit_entries(
    State(r): State<Registry>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<serde_json::Value> {
    let limit = r.list_limit(q.limit, 1000)?;
    let entries = r.store.audit_entries(q.after.unwrap_or(0), limit).await?;
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// `?limit=N&after=NAME` of the lists ordered by name.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    #[serde(default)]
    after: String,
}

/// `GET /v1/datasets?limit=N&after=NAME`: datasets by name, one page.
#[tracing::instrument(skip_all)]
async fn list_datasets(
    State(r): State<Registry>,
    Query(q): Query<PageQuery>,
) -> ApiResult<serde_json::Value> {
    let limit = r.list_limit(q.limit, 100)?;
    let datasets = r.store.list_datasets(&q.after, limit).await?;
    let next = crate::grpc::next_after(&datasets, limit, |d| &d.name);
    Ok(Json(
        serde_json::json!({ "datasets": datasets, "next_after": next }),
    ))
}

/// `POST /v1/datasets` with the spec's TOML as the body; `X-Modelbus-Source`
/// names the file in error messages.
#[tracing::instrument(skip_all)]
async fn apply_spec(
    State(r): State<Registry>,
    Extension(by): Extension<Principal>,
    headers: HeaderMap,
    body: String,
) -> Result<impl IntoResponse, RegistryError> {
    let source = headers
        .get("x-modelbus-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("spec.toml")
        .to_string();
    let (spec, created) = r.apply_spec(&body, &source, &by.name).await?;
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
    let limit = r.list_limit(q.limit, 50)?;
    let runs = r
        .store
        .list_pipeline_runs(q.dataset.as_deref(), limit)
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
) -> ApiResult<crate::types::TrainingRun> {
    Ok(Json(r.run(&id).await?))
}

/// `GET /v1/models?limit=N&after=NAME`: models by name, one page.
#[tracing::instrument(skip_all)]
async fn list_models(
    State(r): State<Registry>,
    Query(q): Query<PageQuery>,
) -> ApiResult<serde_json::Value> {
    let limit = r.list_limit(q.limit, 100)?;
    let models = r.store.list_models(&q.after, limit).await?;
    let next = crate::grpc::next_after(&models, limit, |m| &m.name);
    Ok(Json(
        serde_json::json!({ "models": models, "next_after": next }),
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

/// The evaluation report as a page, rendered now from the stored JSON (as the
/// data docs are): the page is what this registry's code makes of the
/// report, never HTML someone else stored.
#[tracing::instrument(skip_all, fields(model = %name, version))]
async fn evaluation_html(
    State(r): State<Registry>,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, RegistryError> {
    let v = r.model_version(&name, parse_version(&version)?).await?;
    if v.evaluation_sha256.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "{name} v{version} has no evaluation report"
        )));
    }
    let value = r.report(&v.evaluation_sha256).await?;
    let report: modelbus_models::evaluate::EvaluationReport = serde_json::from_value(value)
        .map_err(|e| RegistryError::Internal(format!("evaluation report: {e}")))?;
    let html = modelbus_models::evaluation_html::render(&report);
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
struct WindowsQuery {
    environment: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/models/{name}/windows?environment=E&limit=N`: the monitor's
/// latest windows of a model, newest first.
async fn windows(
    State(r): State<Registry>,
    Path(name): Path<String>,
    Query(q): Query<WindowsQuery>,
) -> ApiResult<serde_json::Value> {
    let limit = r.list_limit(q.limit, 20)?;
    if let Some(e) = &q.environment {
        e.parse::<modelbus_core::ids::Environment>()
            .map_err(|err| RegistryError::InvalidArgument(format!("environment: {err}")))?;
    }
    r.model(&name).await?;
    let windows = r
        .store
        .windows(&name, q.environment.as_deref(), limit)
        .await?;
    // Realised performance, per window that labels joined (the latest
    // `monitor.window.performance`).
    let mut performance = serde_json::Map::new();
    for (w, p) in &windows {
        if let Some(v) = p
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        {
            performance.insert(w.window_id.clone(), v);
        }
    }
    let windows: Vec<&modelbus_core::events::MonitorWindowClosed> =
        windows.iter().map(|(w, _)| w).collect();
    Ok(Json(
        serde_json::json!({ "model": name, "windows": windows, "performance": performance }),
    ))
}

/// `GET /v1/windows/pages/{sha256}`: a window's drift report as its
/// self-contained HTML page (only pages the monitor published for a window).
async fn window_page(
    State(r): State<Registry>,
    Path(sha): Path<String>,
) -> Result<impl IntoResponse, RegistryError> {
    let d = modelbus_core::ids::Sha256Digest::parse(&sha)
        .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
    if !r.store.is_window_page(&d.to_hex()).await? {
        return Err(RegistryError::NotFound(format!(
            "{d} is not the page of a monitoring window"
        )));
    }
    let bytes = r.artifacts.get(&d).await.map_err(|e| match e {
        modelbus_core::artifact::ArtifactError::NotFound(_) => {
            RegistryError::NotFound(e.to_string())
        }
        other => RegistryError::Internal(other.to_string()),
    })?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        bytes,
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
    let report: modelbus_dataset::validate::ValidationReport = serde_json::from_value(value)
        .map_err(|e| RegistryError::Internal(format!("validation report: {e}")))?;
    let html = modelbus_dataset::validation_html::render(&report);
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
