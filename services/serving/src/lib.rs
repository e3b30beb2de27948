//! Serving: one prediction endpoint per environment (staging, production). Each
//! watches the `deployments` KV bucket for its environment, loads the model
//! artifact it names (refusing bytes that do not hash to the approved digest) and
//! swaps it in atomically: requests in flight finish on the model they started
//! with, new requests get the new one, none is dropped.
//!
//! APIs: `POST /v1/models/{name}:predict` with raw records, and the Open
//! Inference Protocol v2 REST endpoints (`/v2/health/*`, `/v2/models/{name}`,
//! `/v2/models/{name}/ready`, `/v2/models/{name}/infer`). A record that does not
//! fit the model's input schema gets a 400 naming the field.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use modelbus_core::Context;
use modelbus_core::deploy::{DEPLOYMENTS_BUCKET, DesiredState};
use modelbus_core::events::{Envelope, ServingModelLoaded};
use modelbus_core::ids::Environment;
use modelbus_ml::model::{ModelArtifact, Predictor};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tracing::Instrument;

/// Source attribute of serving's events.
pub const SOURCE: &str = "/modelbus/serving";

/// Errors that stop serving.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Start-up failed.
    #[error("{0}")]
    Fatal(String),
}

/// A model being served.
#[derive(Debug)]
pub struct Served {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Artifact digest.
    pub model_sha256: String,
    /// When this replica loaded it.
    pub loaded_at: String,
    /// The loaded model.
    pub predictor: Predictor,
}

/// The models served in one environment; swapped atomically per model.
#[derive(Debug)]
pub struct EnvState {
    /// The environment.
    pub environment: Environment,
    models: RwLock<HashMap<String, Arc<Served>>>,
    /// The online feature store, for requests that give only an entity id.
    online: RwLock<Option<async_nats::jetstream::kv::Store>>,
    /// Requests per served version since the last `serving.stats`.
    window: std::sync::Mutex<HashMap<(String, u32, String), Window>>,
}

/// Requests of one served version in the current statistics window.
#[derive(Debug, Default)]
struct Window {
    requests: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
}

/// Latencies kept per window for the p99 (a reservoir would do for more).
const MAX_LATENCIES: usize = 100_000;

impl EnvState {
    /// An environment with nothing loaded.
    pub fn new(environment: Environment) -> Self {
        Self {
            environment,
            models: RwLock::new(HashMap::new()),
            online: RwLock::new(None),
            window: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The model currently served under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.models.read().ok().and_then(|m| m.get(name).cloned())
    }

    /// Installs a model: the swap is a single pointer replacement under the lock.
    pub fn install(&self, served: Served) {
        if let Ok(mut m) = self.models.write() {
            metrics::gauge!("modelbus_serving_model_version", "environment" => self.environment.as_str(), "model" => served.model.clone())
                .set(f64::from(served.version));
            m.insert(served.model.clone(), Arc::new(served));
        }
    }

    /// Removes a model.
    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.models.write() {
            m.remove(name);
        }
    }

    /// Sets the online feature store.
    pub fn set_online(&self, kv: async_nats::jetstream::kv::Store) {
        if let Ok(mut o) = self.online.write() {
            *o = Some(kv);
        }
    }

    /// Completes records that lack feature values from the online store: a record
    /// with the entity column but missing required features is merged over the
    /// entity's latest stored record (values in the request win).
    pub async fn resolve(
        &self,
        served: &Served,
        recs: &mut [Map<String, Value>],
    ) -> Result<(), Response> {
        let artifact = served.predictor.artifact();
        let entity_col = &artifact.input.entity_column;
        let required: Vec<&str> = artifact
            .input
            .columns
            .iter()
            .filter(|c| c.role == modelbus_ml::model::InputRole::Feature && !c.nullable)
            .map(|c| c.name.as_str())
            .collect();
        let kv = self.online.read().ok().and_then(|o| o.clone());
        for (i, rec) in recs.iter_mut().enumerate() {
            let incomplete = required.iter().any(|c| !rec.contains_key(*c));
            let Some(id) = rec.get(entity_col) else {
                continue;
            };
            if !incomplete {
                continue;
            }
            let id = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let Some(kv) = &kv else {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the online feature store is not available",
                ));
            };
            let key = modelbus_core::online::entity_key(&artifact.dataset, &id);
            let stored = match kv.get(&key).await {
                Ok(Some(bytes)) => serde_json::from_slice::<modelbus_core::online::OnlineRecord>(
                    &bytes,
                )
                .map_err(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("online record of {id:?} is unreadable: {e}"),
                    )
                })?,
                Ok(None) => {
                    metrics::counter!("modelbus_serving_unknown_entities_total", "environment" => self.environment.as_str()).increment(1);
                    return Err(error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "instances[{i}]: entity {entity_col} = {id:?} is not in the online feature store of dataset {:?}; send its feature values instead",
                            artifact.dataset
                        ),
                    ));
                }
                Err(e) => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("online feature store: {e}"),
                    ));
                }
            };
            let mut merged = stored.record;
            for (k, v) in std::mem::take(rec) {
                merged.insert(k, v);
            }
            *rec = merged;
        }
        Ok(())
    }

    /// Names of the served models.
    pub fn names(&self) -> Vec<String> {
        self.models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn not_served(env: &EnvState, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "model {name:?} is not deployed in {} (served here: {:?})",
            env.environment,
            env.names()
        ),
    )
}

#[derive(Deserialize)]
struct PredictRequest {
    instances: Vec<Value>,
}

fn records(instances: Vec<Value>) -> Result<Vec<Map<String, Value>>, String> {
    instances
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(format!(
                "instances[{i}]: expected an object of column values, got {other}"
            )),
        })
        .collect()
}

fn observe(env: &EnvState, model: &str, status: &str, started: Instant, rows: usize) {
    if let Some(served) = env.get(model)
        && let Ok(mut w) = env.window.lock()
    {
        let w = w
            .entry((
                served.model.clone(),
                served.version,
                served.model_sha256.clone(),
            ))
            .or_default();
        w.requests += 1;
        // Client mistakes (bad input, unknown entity) are not the model's errors.
        if !matches!(status, "ok" | "bad_request" | "not_found") {
            w.errors += 1;
        }
        if w.latencies_ms.len() < MAX_LATENCIES {
            w.latencies_ms
                .push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let labels = [
        ("environment", env.environment.as_str().to_string()),
        ("model", model.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!("modelbus_serving_requests_total", &labels).increment(1);
    metrics::histogram!("modelbus_serving_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    if status == "ok" {
        metrics::counter!("modelbus_serving_predictions_total", "environment" => env.environment.as_str(), "model" => model.to_string())
            .increment(rows as u64);
    }
}

/// `POST /v1/models/{name}:predict`.
async fn predict_v1(
    State(env): State<Arc<EnvState>>,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let Some(name) = target.strip_suffix(":predict") else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action in {target:?}: use /v1/models/{{name}}:predict"),
        );
    };
    let Some(served) = env.get(name) else {
        return not_served(&env, name);
    };
    let req: PredictRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            observe(&env, name, "bad_request", started, 0);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid request body: {e} (expected {{\"instances\": [{{column: value}}]}})"
                ),
            );
        }
    };
    let mut recs = match records(req.instances) {
        Ok(r) => r,
        Err(message) => {
            observe(&env, name, "bad_request", started, 0);
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if let Err(resp) = env.resolve(&served, &mut recs).await {
        observe(&env, name, "not_found", started, 0);
        return resp;
    }
    match served.predictor.predict_records(&recs) {
        Ok(preds) => {
            observe(&env, name, "ok", started, preds.len());
            Json(serde_json::json!({
                "model": served.model,
                "model_version": served.version,
                "model_sha256": served.model_sha256,
                "predictions": preds,
            }))
            .into_response()
        }
        Err(e) => {
            observe(&env, name, "bad_request", started, 0);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// `GET /v1/models/{name}`: what is served.
async fn model_v1(State(env): State<Arc<EnvState>>, Path(name): Path<String>) -> Response {
    let Some(s) = env.get(&name) else {
        return not_served(&env, &name);
    };
    Json(serde_json::json!({
        "model": s.model,
        "environment": env.environment,
        "model_version": s.version,
        "model_sha256": s.model_sha256,
        "loaded_at": s.loaded_at,
        "algorithm": s.predictor.artifact().algorithm,
        "input": s.predictor.artifact().input,
    }))
    .into_response()
}

async fn v2_live() -> Response {
    Json(serde_json::json!({ "live": true })).into_response()
}

async fn v2_ready(State(env): State<Arc<EnvState>>) -> Response {
    // The server is ready to take requests once it runs; per-model readiness is
    // /v2/models/{name}/ready.
    Json(serde_json::json!({ "ready": true, "models": env.names() })).into_response()
}

fn oip_datatype(ty: modelbus_ml::spec::ColumnType) -> &'static str {
    match ty {
        modelbus_ml::spec::ColumnType::Int => "INT64",
        modelbus_ml::spec::ColumnType::Float => "FP64",
        modelbus_ml::spec::ColumnType::String => "BYTES",
        modelbus_ml::spec::ColumnType::Bool => "BOOL",
    }
}

/// `GET /v2/models/{name}`: OIP model metadata.
async fn v2_metadata(State(env): State<Arc<EnvState>>, Path(name): Path<String>) -> Response {
    let Some(s) = env.get(&name) else {
        return not_served(&env, &name);
    };
    let inputs: Vec<Value> = s
        .predictor
        .artifact()
        .input
        .columns
        .iter()
        .filter(|c| c.role != modelbus_ml::model::InputRole::Target)
        .map(|c| serde_json::json!({ "name": c.name, "datatype": oip_datatype(c.ty), "shape": [-1] }))
        .collect();
    Json(serde_json::json!({
        "name": s.model,
        "versions": [s.version.to_string()],
        "platform": "modelbus",
        "inputs": inputs,
        "outputs": [
            { "name": "probability", "datatype": "FP64", "shape": [-1] },
            { "name": "label", "datatype": "BYTES", "shape": [-1] },
        ],
    }))
    .into_response()
}

async fn v2_model_ready(State(env): State<Arc<EnvState>>, Path(name): Path<String>) -> Response {
    match env.get(&name) {
        Some(s) => Json(
            serde_json::json!({ "name": name, "ready": true, "version": s.version.to_string() }),
        )
        .into_response(),
        None => not_served(&env, &name),
    }
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferTensor>,
}

#[derive(Deserialize)]
struct InferTensor {
    name: String,
    shape: Vec<i64>,
    #[serde(default)]
    datatype: String,
    data: Value,
}

/// Turns OIP column tensors (one per input column, shape `[N]` or `[N, 1]`) into records.
fn tensors_to_records(inputs: Vec<InferTensor>) -> Result<Vec<Map<String, Value>>, String> {
    let mut n: Option<usize> = None;
    let mut columns = Vec::new();
    for t in inputs {
        let rows = match t.shape.as_slice() {
            [r] | [r, 1] if *r >= 0 => *r as usize,
            other => {
                return Err(format!(
                    "input {:?}: shape {other:?} is not [N] or [N, 1]",
                    t.name
                ));
            }
        };
        let data: Vec<Value> = match t.data {
            Value::Array(a) => a
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(inner) => inner,
                    other => vec![other],
                })
                .collect(),
            other => {
                return Err(format!(
                    "input {:?}: data must be an array, got {other}",
                    t.name
                ));
            }
        };
        if data.len() != rows {
            return Err(format!(
                "input {:?}: shape says {rows} rows, data has {}",
                t.name,
                data.len()
            ));
        }
        if let Some(prev) = n
            && prev != rows
        {
            return Err(format!(
                "input {:?} has {rows} rows, other inputs have {prev}",
                t.name
            ));
        }
        n = Some(rows);
        let _ = t.datatype;
        columns.push((t.name, data));
    }
    let n = n.unwrap_or(0);
    let mut out = vec![Map::new(); n];
    for (name, data) in columns {
        for (i, v) in data.into_iter().enumerate() {
            out[i].insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// `POST /v2/models/{name}/infer`.
async fn v2_infer(
    State(env): State<Arc<EnvState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let Some(served) = env.get(&name) else {
        return not_served(&env, &name);
    };
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            observe(&env, &name, "bad_request", started, 0);
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid inference request: {e}"),
            );
        }
    };
    let id = req.id.clone();
    let mut recs = match tensors_to_records(req.inputs) {
        Ok(r) => r,
        Err(m) => {
            observe(&env, &name, "bad_request", started, 0);
            return error(StatusCode::BAD_REQUEST, m);
        }
    };
    if let Err(resp) = env.resolve(&served, &mut recs).await {
        observe(&env, &name, "not_found", started, 0);
        return resp;
    }
    match served.predictor.predict_records(&recs) {
        Ok(preds) => {
            observe(&env, &name, "ok", started, preds.len());
            let n = preds.len();
            let probs: Vec<f64> = preds.iter().map(|p| p.probability).collect();
            let labels: Vec<&str> = preds.iter().map(|p| p.label.as_str()).collect();
            let mut resp = serde_json::json!({
                "model_name": served.model,
                "model_version": served.version.to_string(),
                "outputs": [
                    { "name": "probability", "shape": [n], "datatype": "FP64", "data": probs },
                    { "name": "label", "shape": [n], "datatype": "BYTES", "data": labels },
                ],
            });
            if let Some(id) = id {
                resp["id"] = id.into();
            }
            Json(resp).into_response()
        }
        Err(e) => {
            observe(&env, &name, "bad_request", started, 0);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// Routes of one environment's endpoint (without operations endpoints).
pub fn router(env: Arc<EnvState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/models/{target}", post(predict_v1).get(model_v1))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{name}", get(v2_metadata))
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route("/v2/models/{name}/infer", post(v2_infer))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(env)
}

/// Loads the artifact a desired state names, checking its digest.
async fn load(ctx: &Context, desired: &DesiredState) -> Result<Served, String> {
    let bytes = ctx
        .store
        .get(&desired.model_sha256)
        .await
        .map_err(|e| format!("model artifact: {e}"))?;
    let predictor = tokio::task::spawn_blocking(move || {
        ModelArtifact::from_bytes(&bytes)
            .and_then(Predictor::new)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    if predictor.artifact().model_name != desired.model.as_str() {
        return Err(format!(
            "artifact is model {:?}, desired state names {:?}",
            predictor.artifact().model_name,
            desired.model
        ));
    }
    Ok(Served {
        model: desired.model.to_string(),
        version: desired.version,
        model_sha256: desired.model_sha256.to_hex(),
        loaded_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        predictor,
    })
}

/// Loads (unless already served) and announces the model a desired state names.
async fn apply_desired(
    ctx: &Context,
    env: &EnvState,
    desired: &DesiredState,
    key: &str,
    revision: u64,
    replica: &str,
) {
    let current = env.get(desired.model.as_str());
    let same = current.as_ref().is_some_and(|c| {
        c.model_sha256 == desired.model_sha256.to_hex() && c.version == desired.version
    });
    if !same {
        match load(ctx, desired).await {
            Ok(served) => {
                tracing::info!(env = %env.environment, model = %desired.model, version = desired.version, "model swapped in");
                env.install(served);
            }
            Err(e) => {
                metrics::counter!("modelbus_serving_load_failures_total", "environment" => env.environment.as_str()).increment(1);
                tracing::error!(env = %env.environment, model = %desired.model, error = %e, "cannot load model; keeping the current one");
                return;
            }
        }
    }
    let loaded = Envelope::new(
        SOURCE,
        // One report per desired-state write: a rewrite of the same version (a new
        // run landing on it) is reported again.
        &format!("{key}/{revision}/{replica}"),
        ServingModelLoaded {
            environment: env.environment,
            model: desired.model.clone(),
            version: desired.version,
            model_sha256: desired.model_sha256,
            replica: replica.to_string(),
            revision,
        },
    )
    .with_subject(desired.model.as_str())
    .with_pipeline_run(desired.pipelinerun.clone());
    if let Err(e) = ctx.bus.publish(&loaded).await {
        tracing::warn!(error = %e, "cannot report the loaded model");
    }
}

/// Follows the desired state of one environment until shutdown.
async fn watch(
    ctx: Context,
    env: Arc<EnvState>,
    replica: String,
    component: String,
) -> Result<(), ServingError> {
    let kv = ctx
        .bus
        .kv(DEPLOYMENTS_BUCKET, 64)
        .await
        .map_err(|e| ServingError::Fatal(e.to_string()))?;
    let prefix = format!("{}.", env.environment.as_str());
    let mut watcher = kv
        .watch_with_history(format!("{prefix}>"))
        .await
        .map_err(|e| ServingError::Fatal(format!("watch deployments: {e}")))?;
    let initial = match kv.keys().await {
        Ok(keys) => {
            keys.filter_map(|k| async move { k.ok() })
                .filter(|k| futures::future::ready(k.starts_with(&prefix)))
                .count()
                .await
        }
        Err(_) => 0,
    };
    let mut seen = 0usize;
    if initial == 0 {
        ctx.readiness.set(&component, true);
    }
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            n = watcher.next() => n,
        };
        let Some(entry) = next else {
            return Err(ServingError::Fatal("deployments watch ended".into()));
        };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "deployments watch error");
                continue;
            }
        };
        let name = entry
            .key
            .strip_prefix(&prefix)
            .unwrap_or(&entry.key)
            .to_string();
        match entry.operation {
            async_nats::jetstream::kv::Operation::Put => {
                match serde_json::from_slice::<DesiredState>(&entry.value) {
                    Ok(desired) if desired.environment == env.environment => {
                        let span = tracing::info_span!("swap_model", env = %env.environment, model = %desired.model, version = desired.version);
                        modelbus_core::telemetry::set_remote_parent(
                            &span,
                            desired.traceparent.as_deref(),
                        );
                        apply_desired(&ctx, &env, &desired, &entry.key, entry.revision, &replica)
                            .instrument(span)
                            .await;
                    }
                    Ok(_) => {
                        tracing::warn!(key = %entry.key, "desired state for another environment under this prefix; ignored")
                    }
                    Err(e) => {
                        tracing::error!(key = %entry.key, error = %e, "invalid desired state; ignored")
                    }
                }
            }
            async_nats::jetstream::kv::Operation::Delete
            | async_nats::jetstream::kv::Operation::Purge => {
                tracing::info!(env = %env.environment, model = %name, "model undeployed");
                env.remove(&name);
            }
        }
        seen += 1;
        if seen >= initial {
            ctx.readiness.set(&component, true);
        }
    }
}

/// Publishes one `serving.stats` per served version every `serving.stats_interval`.
async fn publish_stats(ctx: Context, env: Arc<EnvState>, replica: String) {
    let interval = ctx.config.serving.stats_interval;
    loop {
        let started = time::OffsetDateTime::now_utc();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let windows: Vec<((String, u32, String), Window)> = match env.window.lock() {
            Ok(mut w) => w.drain().collect(),
            Err(_) => continue,
        };
        let end = time::OffsetDateTime::now_utc();
        let end_text = end
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        for ((model, version, sha), mut w) in windows {
            let (Ok(model), Ok(sha)) = (
                modelbus_core::ids::ModelName::parse(&model),
                modelbus_core::ids::Sha256Digest::parse(&sha),
            ) else {
                continue;
            };
            w.latencies_ms.sort_by(f64::total_cmp);
            let p99 = if w.latencies_ms.is_empty() {
                0.0
            } else {
                let i = ((w.latencies_ms.len() as f64) * 0.99).ceil() as usize;
                w.latencies_ms[i.clamp(1, w.latencies_ms.len()) - 1]
            };
            let e = Envelope::new(
                SOURCE,
                &format!(
                    "stats/{}/{model}/{version}/{replica}/{end_text}",
                    env.environment
                ),
                modelbus_core::events::ServingStats {
                    environment: env.environment,
                    model: model.clone(),
                    version,
                    model_sha256: sha,
                    replica: replica.clone(),
                    requests: w.requests,
                    errors: w.errors,
                    p99_ms: p99,
                    window_end: end_text.clone(),
                    window_ms: u64::try_from((end - started).whole_milliseconds()).unwrap_or(0),
                },
            )
            .with_subject(model.as_str());
            if let Err(err) = ctx.bus.publish(&e).await {
                tracing::warn!(error = %err, "cannot publish serving.stats");
            }
        }
    }
}

/// Bound listeners of serving.
pub struct Listeners {
    /// Staging endpoint.
    pub staging: TcpListener,
    /// Production endpoint.
    pub production: TcpListener,
}

/// Runs both endpoints until `ctx.shutdown`.
pub async fn run(ctx: Context, listeners: Listeners) -> Result<(), ServingError> {
    let replica = ctx
        .config
        .serving
        .replica_id
        .clone()
        .unwrap_or_else(|| format!("serving-{}", std::process::id()));
    let max_body = ctx.config.serving.max_request_bytes;
    let mut tasks = Vec::new();
    for (env, listener) in [
        (Environment::Staging, listeners.staging),
        (Environment::Production, listeners.production),
    ] {
        let component = format!("serving-{env}");
        ctx.readiness.register(&component);
        let state = Arc::new(EnvState::new(env));
        match ctx.bus.kv(modelbus_core::online::ONLINE_BUCKET, 1).await {
            Ok(kv) => state.set_online(kv),
            Err(e) => {
                tracing::warn!(error = %e, "no online feature store: entity-only requests will fail")
            }
        }
        let app = router(state.clone(), max_body)
            .merge(modelbus_core::ops::ops_router(ctx.readiness.clone()));
        let shutdown = ctx.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            modelbus_core::ops::serve(listener, app, shutdown)
                .await
                .map_err(|e| ServingError::Fatal(format!("HTTP server: {e}")))
        }));
        let stats = tokio::spawn(publish_stats(ctx.clone(), state.clone(), replica.clone()));
        tasks.push(tokio::spawn(async move {
            let _ = stats.await;
            Ok(())
        }));
        tasks.push(tokio::spawn(watch(
            ctx.clone(),
            state,
            replica.clone(),
            component,
        )));
    }
    for t in tasks {
        t.await.map_err(|e| ServingError::Fatal(e.to_string()))??;
    }
    Ok(())
}
