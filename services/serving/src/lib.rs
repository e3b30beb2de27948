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

/// What one model name answers with in an environment.
#[derive(Debug)]
pub struct Slot {
    /// The version the desired state names.
    pub current: Arc<Served>,
    /// During a canary, the version answering the traffic `current` does not get.
    pub stable: Option<Arc<Served>>,
    /// Percent of entities `current` answers (100 outside a canary).
    pub traffic_percent: u8,
}

impl Slot {
    /// One version for everything.
    pub fn single(served: Served) -> Self {
        Self {
            current: Arc::new(served),
            stable: None,
            traffic_percent: 100,
        }
    }

    /// Whether requests are split between two versions.
    pub fn is_split(&self) -> bool {
        self.stable.is_some() && self.traffic_percent < 100
    }

    /// The version that answers a record: by the stable hash of its entity id
    /// (of the whole record when it has none), so one customer always gets the
    /// same version during a canary.
    pub fn route(&self, rec: &Map<String, Value>) -> &Arc<Served> {
        let Some(stable) = self.stable.as_ref().filter(|_| self.traffic_percent < 100) else {
            return &self.current;
        };
        let entity_col = &self.current.predictor.artifact().input.entity_column;
        let key = match rec.get(entity_col) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => Value::Object(rec.clone()).to_string(),
        };
        if modelbus_core::deploy::traffic_bucket(&key) < self.traffic_percent {
            &self.current
        } else {
            stable
        }
    }
}

/// The models served in one environment; swapped atomically per model.
#[derive(Debug)]
pub struct EnvState {
    /// The environment.
    pub environment: Environment,
    models: RwLock<HashMap<String, Arc<Slot>>>,
    /// The online feature store, for requests that give only an entity id.
    online: RwLock<Option<async_nats::jetstream::kv::Store>>,
    /// Requests per served version since the last `serving.stats`.
    window: std::sync::Mutex<HashMap<(String, u32, String), Window>>,
    /// Bounds on one request's size.
    pub limits: RequestLimits,
}

/// Bounds on what one prediction request may ask for, checked before any work
/// (`serving.max_rows_per_request`, `max_inputs_per_request`,
/// `max_cells_per_request`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most records per request.
    pub max_rows: usize,
    /// Most OIP v2 input tensors per request.
    pub max_inputs: usize,
    /// Most cells (rows × columns) per OIP v2 request.
    pub max_cells: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        let c = modelbus_core::config::ServingConfig::default();
        Self::from_config(&c)
    }
}

impl RequestLimits {
    /// The limits a serving configuration sets.
    pub fn from_config(c: &modelbus_core::config::ServingConfig) -> Self {
        Self {
            max_rows: c.max_rows_per_request,
            max_inputs: c.max_inputs_per_request,
            max_cells: c.max_cells_per_request,
        }
    }
}

/// Requests of one served version in the current statistics window.
#[derive(Debug, Default)]
struct Window {
    requests: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
    histogram: modelbus_core::latency::Histogram,
}

/// Latencies kept per window for the p99 (a reservoir would do for more).
const MAX_LATENCIES: usize = 100_000;

impl EnvState {
    /// An environment with nothing loaded.
    pub fn new(environment: Environment) -> Self {
        Self::with_limits(environment, RequestLimits::default())
    }

    /// An environment with nothing loaded and the given request bounds.
    pub fn with_limits(environment: Environment, limits: RequestLimits) -> Self {
        Self {
            environment,
            models: RwLock::new(HashMap::new()),
            online: RwLock::new(None),
            window: std::sync::Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// The version the desired state names under `name` (during a canary, the new one).
    pub fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.slot(name).map(|s| s.current.clone())
    }

    /// What answers under `name`: one version, or two during a canary.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.models.read().ok().and_then(|m| m.get(name).cloned())
    }

    /// Installs a model (or a canary pair): the swap is a single pointer
    /// replacement under the lock.
    pub fn install(&self, slot: Slot) {
        if let Ok(mut m) = self.models.write() {
            let model = slot.current.model.clone();
            metrics::gauge!("modelbus_serving_model_version", "environment" => self.environment.as_str(), "model" => model.clone())
                .set(f64::from(slot.current.version));
            metrics::gauge!("modelbus_serving_traffic_percent", "environment" => self.environment.as_str(), "model" => model.clone())
                .set(f64::from(if slot.is_split() { slot.traffic_percent } else { 100 }));
            m.insert(model, Arc::new(slot));
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
            if let Err(e) = modelbus_core::online::check_entity_id(&id) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("instances[{i}]: {entity_col}: {e}"),
                ));
            }
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

    /// Counts one request of the version `key` (model, version, artifact) in
    /// the statistics window, when it reached the model (see [`reached_model`]).
    fn record(&self, key: (String, u32, String), status: &str, latency_ms: f64) {
        if !reached_model(status) {
            return;
        }
        let Ok(mut windows) = self.window.lock() else {
            return;
        };
        let w = windows.entry(key).or_default();
        w.requests = w.requests.saturating_add(1);
        if status != "ok" {
            w.errors = w.errors.saturating_add(1);
        }
        if w.latencies_ms.len() < MAX_LATENCIES {
            w.latencies_ms.push(latency_ms);
        }
        w.histogram.record(latency_ms);
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

fn records(
    instances: Vec<Value>,
    limits: &RequestLimits,
) -> Result<Vec<Map<String, Value>>, Refused> {
    if instances.len() > limits.max_rows {
        return Err(too_large(format!(
            "{} instances in one request; at most {} are accepted (serving.max_rows_per_request)",
            instances.len(),
            limits.max_rows
        )));
    }
    instances
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(Refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "instances[{i}]: expected an object of column values, got {}",
                    json_kind(&other)
                ),
            )),
        })
        .collect()
}

/// What a JSON value is, for error messages that must not echo a huge value.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A request refused before any work: its status and message.
#[derive(Debug)]
struct Refused(StatusCode, String);

impl From<Refused> for Response {
    fn from(r: Refused) -> Self {
        error(r.0, r.1)
    }
}

fn too_large(message: String) -> Refused {
    Refused(StatusCode::PAYLOAD_TOO_LARGE, message)
}

/// The request-status label of an error response.
fn status_label(resp: &Response) -> &'static str {
    match resp.status() {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "error",
    }
}

/// Whether a request with this status label is evidence about the version:
/// it was answered (`ok`) or failed on the server's side. A client's mistake
/// (malformed body, unknown field, unknown entity, too large) never reached
/// the model, so it neither dilutes the error rate nor counts as traffic
/// towards a soak's minimum.
fn reached_model(status: &str) -> bool {
    !matches!(status, "bad_request" | "not_found")
}

/// Counts a request in the Prometheus metrics and, when it reached the model
/// (see [`reached_model`]), against the version that answered it (its
/// statistics window).
fn observe(
    env: &EnvState,
    served: Option<&Served>,
    model: &str,
    status: &str,
    started: Instant,
    rows: usize,
) {
    if let Some(served) = served {
        env.record(
            (
                served.model.clone(),
                served.version,
                served.model_sha256.clone(),
            ),
            status,
            started.elapsed().as_secs_f64() * 1000.0,
        );
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

/// Predictions of one request, each with the version that answered it.
struct Answered {
    predictions: Vec<modelbus_ml::model::Prediction>,
    served_by: Vec<Arc<Served>>,
    split: bool,
}

impl Answered {
    /// The version that answered every record, if one did.
    fn uniform(&self) -> Option<&Served> {
        let first = self.served_by.first()?;
        self.served_by
            .iter()
            .all(|s| Arc::ptr_eq(s, first))
            .then_some(first.as_ref())
    }
}

/// Routes each record to its version (see [`Slot::route`]), completes it from
/// the online store and predicts; counts the request against every version
/// that answered part of it. Errors name the record by its place in the request.
async fn predict_split(
    env: &EnvState,
    slot: &Slot,
    name: &str,
    recs: Vec<Map<String, Value>>,
    started: Instant,
) -> Result<Answered, Response> {
    // Per answering version: the records' places in the request, and the records.
    type Group = (Arc<Served>, Vec<usize>, Vec<Map<String, Value>>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, rec) in recs.into_iter().enumerate() {
        let served = slot.route(&rec).clone();
        match groups.iter_mut().find(|g| Arc::ptr_eq(&g.0, &served)) {
            Some(g) => {
                g.1.push(i);
                g.2.push(rec);
            }
            None => groups.push((served, vec![i], vec![rec])),
        }
    }
    let n: usize = groups.iter().map(|g| g.1.len()).sum();
    let mut predictions = vec![None; n];
    let mut served_by: Vec<Option<Arc<Served>>> = vec![None; n];
    for (served, idx, mut group) in groups {
        if let Err(resp) = env.resolve(&served, &mut group).await {
            observe(env, Some(&served), name, status_label(&resp), started, 0);
            return Err(resp);
        }
        match served.predictor.predict_records(&group) {
            Ok(preds) => {
                observe(env, Some(&served), name, "ok", started, preds.len());
                for (j, p) in idx.iter().zip(preds) {
                    predictions[*j] = Some(p);
                    served_by[*j] = Some(served.clone());
                }
            }
            Err(mut e) => {
                observe(env, Some(&served), name, "bad_request", started, 0);
                // The index is the record's place in its group: report its place in the request.
                e.index = idx.get(e.index).copied().unwrap_or(e.index);
                return Err(error(StatusCode::BAD_REQUEST, e.to_string()));
            }
        }
    }
    Ok(Answered {
        predictions: predictions.into_iter().flatten().collect(),
        served_by: served_by.into_iter().flatten().collect(),
        split: slot.is_split(),
    })
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
    let Some(slot) = env.slot(name) else {
        return not_served(&env, name);
    };
    let req: PredictRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            observe(&env, Some(&slot.current), name, "bad_request", started, 0);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid request body: {e} (expected {{\"instances\": [{{column: value}}]}})"
                ),
            );
        }
    };
    let recs = match records(req.instances, &env.limits) {
        Ok(r) => r,
        Err(refused) => {
            observe(&env, Some(&slot.current), name, "bad_request", started, 0);
            return refused.into();
        }
    };
    let answered = match predict_split(&env, &slot, name, recs, started).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let (version, sha) = match answered.uniform() {
        Some(s) => (Value::from(s.version), Value::from(s.model_sha256.clone())),
        // A canary split this request: each prediction names its version below.
        None if !answered.served_by.is_empty() => (Value::Null, Value::Null),
        None => (
            Value::from(slot.current.version),
            Value::from(slot.current.model_sha256.clone()),
        ),
    };
    let mut out = serde_json::json!({
        "model": slot.current.model,
        "model_version": version,
        "model_sha256": sha,
        "predictions": answered.predictions,
    });
    if answered.split {
        out["model_versions"] = answered.served_by.iter().map(|s| s.version).collect();
    }
    Json(out).into_response()
}

/// `GET /v1/models/{name}`: what is served.
async fn model_v1(State(env): State<Arc<EnvState>>, Path(name): Path<String>) -> Response {
    let Some(s) = env.get(&name) else {
        return not_served(&env, &name);
    };
    let rollout = env
        .slot(&name)
        .filter(|slot| slot.is_split())
        .and_then(|slot| {
            slot.stable.as_ref().map(|stable| {
                serde_json::json!({
                    "traffic_percent": slot.traffic_percent,
                    "previous_version": stable.version,
                    "previous_sha256": stable.model_sha256,
                })
            })
        });
    Json(serde_json::json!({
        "model": s.model,
        "environment": env.environment,
        "model_version": s.version,
        "model_sha256": s.model_sha256,
        "loaded_at": s.loaded_at,
        "algorithm": s.predictor.artifact().algorithm,
        "input": s.predictor.artifact().input,
        "canary": rollout,
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

/// A client-given name as it may appear in an error message: at most 64
/// characters, so a multi-megabyte name is not echoed back.
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &name[..cut], name.len()),
        None => format!("{name:?}"),
    }
}

/// Turns OIP column tensors (one per input column, shape `[N]` or `[N, 1]`) into
/// records. Every name must be one of the model's inputs, and the counts are
/// checked against `limits` before any record is built, so what a request
/// expands to is bounded by the model's schema and the configured limits, not
/// by what the client sends.
fn tensors_to_records(
    inputs: Vec<InferTensor>,
    schema: &modelbus_ml::model::InputSchema,
    limits: &RequestLimits,
) -> Result<Vec<Map<String, Value>>, Refused> {
    let bad = |m: String| Refused(StatusCode::BAD_REQUEST, m);
    if inputs.len() > limits.max_inputs {
        return Err(too_large(format!(
            "{} input tensors in one request; at most {} are accepted (serving.max_inputs_per_request)",
            inputs.len(),
            limits.max_inputs
        )));
    }
    let mut n: Option<usize> = None;
    let mut columns: Vec<(&str, Vec<Value>)> = Vec::with_capacity(inputs.len());
    for t in inputs {
        let Some(col) = schema
            .columns
            .iter()
            .find(|c| c.name == t.name && c.role != modelbus_ml::model::InputRole::Target)
        else {
            return Err(bad(format!(
                "input {}: not an input of this model (inputs: {})",
                shown(&t.name),
                schema
                    .columns
                    .iter()
                    .filter(|c| c.role != modelbus_ml::model::InputRole::Target)
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if columns.iter().any(|(name, _)| *name == col.name) {
            return Err(bad(format!("input {:?} is given twice", col.name)));
        }
        const OIP_TYPES: [&str; 13] = [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64", "BYTES",
        ];
        if !t.datatype.is_empty() && !OIP_TYPES.contains(&t.datatype.as_str()) {
            return Err(bad(format!(
                "input {:?}: datatype {} is not an Open Inference Protocol type",
                col.name,
                shown(&t.datatype)
            )));
        }
        let rows = match t.shape.as_slice() {
            [r] | [r, 1] if *r >= 0 => usize::try_from(*r).unwrap_or(usize::MAX),
            other => {
                return Err(bad(format!(
                    "input {:?}: shape {other:?} is not [N] or [N, 1]",
                    col.name
                )));
            }
        };
        if rows > limits.max_rows {
            return Err(too_large(format!(
                "input {:?}: {rows} rows in one request; at most {} are accepted (serving.max_rows_per_request)",
                col.name, limits.max_rows
            )));
        }
        if let Some(prev) = n
            && prev != rows
        {
            return Err(bad(format!(
                "input {:?} has {rows} rows, other inputs have {prev}",
                col.name
            )));
        }
        let cells = rows.saturating_mul(columns.len() + 1);
        if cells > limits.max_cells {
            return Err(too_large(format!(
                "{cells} cells (rows × inputs) in one request; at most {} are accepted (serving.max_cells_per_request)",
                limits.max_cells
            )));
        }
        let data: Vec<Value> = match t.data {
            Value::Array(a) if a.iter().all(|v| !v.is_array()) => a,
            Value::Array(a) => {
                let mut flat = Vec::with_capacity(rows);
                for v in a {
                    match v {
                        Value::Array(inner) => flat.extend(inner),
                        other => flat.push(other),
                    }
                    if flat.len() > rows {
                        break;
                    }
                }
                flat
            }
            other => {
                return Err(bad(format!(
                    "input {:?}: data must be an array, got {}",
                    col.name,
                    json_kind(&other)
                )));
            }
        };
        if data.len() != rows {
            return Err(bad(format!(
                "input {:?}: shape says {rows} rows, data has {}{}",
                col.name,
                data.len().min(rows.saturating_add(1)),
                if data.len() > rows { " or more" } else { "" }
            )));
        }
        n = Some(rows);
        columns.push((col.name.as_str(), data));
    }
    let n = n.unwrap_or(0);
    let mut out: Vec<Map<String, Value>> = (0..n).map(|_| Map::new()).collect();
    for (name, data) in columns {
        for (rec, v) in out.iter_mut().zip(data) {
            rec.insert(name.to_string(), v);
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
    let Some(slot) = env.slot(&name) else {
        return not_served(&env, &name);
    };
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            observe(&env, Some(&slot.current), &name, "bad_request", started, 0);
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid inference request: {e}"),
            );
        }
    };
    let id = req.id.clone();
    let recs = match tensors_to_records(
        req.inputs,
        &slot.current.predictor.artifact().input,
        &env.limits,
    ) {
        Ok(r) => r,
        Err(refused) => {
            observe(&env, Some(&slot.current), &name, "bad_request", started, 0);
            return refused.into();
        }
    };
    let answered = match predict_split(&env, &slot, &name, recs, started).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let n = answered.predictions.len();
    let probs: Vec<f64> = answered.predictions.iter().map(|p| p.probability).collect();
    let labels: Vec<&str> = answered
        .predictions
        .iter()
        .map(|p| p.label.as_str())
        .collect();
    let version = answered
        .uniform()
        .map_or(slot.current.version, |s| s.version);
    let mut resp = serde_json::json!({
        "model_name": slot.current.model,
        "model_version": version.to_string(),
        "outputs": [
            { "name": "probability", "shape": [n], "datatype": "FP64", "data": probs },
            { "name": "label", "shape": [n], "datatype": "BYTES", "data": labels },
        ],
    });
    if answered.split {
        let versions: Vec<u32> = answered.served_by.iter().map(|s| s.version).collect();
        resp["parameters"] = serde_json::json!({ "model_versions": versions });
    }
    if let Some(id) = id {
        resp["id"] = id.into();
    }
    Json(resp).into_response()
}

/// Checks bearer tokens with the registry when `serving.require_token` is on,
/// remembering accepted ones for `serving.token_cache`.
pub struct TokenCheck {
    registry: modelbus_proto::Client,
    ttl: std::time::Duration,
    accepted: std::sync::Mutex<HashMap<String, Instant>>,
}

impl TokenCheck {
    /// A check against the registry at `ctx`'s configured gRPC address.
    pub fn new(ctx: &Context) -> Result<Self, ServingError> {
        let registry = modelbus_proto::connect_lazy(
            &ctx.config.registry_grpc_url(),
            ctx.config
                .service_token_source(modelbus_core::auth::ServiceIdentity::Serving),
        )
        .map_err(|e| ServingError::Fatal(format!("registry URL: {e}")))?;
        Ok(Self {
            registry,
            ttl: ctx.config.serving.token_cache,
            accepted: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Whether `header` carries a token of a principal allowed to read.
    async fn check(&self, header: Option<&str>) -> Result<(), Response> {
        let Some(token) = header.and_then(modelbus_core::auth::bearer) else {
            metrics::counter!("modelbus_auth_failures_total", "reason" => "missing").increment(1);
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <token>` (serving.require_token is on)",
            ));
        };
        let key = modelbus_core::ids::Sha256Digest::of(token.as_bytes()).to_hex();
        if let Ok(m) = self.accepted.lock()
            && m.get(&key).is_some_and(|at| at.elapsed() < self.ttl)
        {
            return Ok(());
        }
        let p = self
            .registry
            .clone()
            .authenticate(modelbus_proto::registry::v1::AuthenticateRequest {
                token: token.to_string(),
            })
            .await
            .map_err(|st| match st.code() {
                tonic::Code::Unauthenticated => error(StatusCode::UNAUTHORIZED, st.message()),
                tonic::Code::PermissionDenied => error(StatusCode::FORBIDDEN, st.message()),
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the token with the registry: {}", st.message()),
                ),
            })?
            .into_inner();
        let principal = modelbus_core::auth::Principal {
            name: p.name,
            roles: p.roles.iter().filter_map(|r| r.parse().ok()).collect(),
            token_id: p.token_id,
        };
        principal
            .require(modelbus_core::auth::Permission::Read)
            .map_err(|m| error(StatusCode::FORBIDDEN, m))?;
        if let Ok(mut m) = self.accepted.lock() {
            if m.len() > 10_000 {
                m.retain(|_, at| at.elapsed() < self.ttl);
            }
            m.insert(key, Instant::now());
        }
        Ok(())
    }
}

async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match check.check(header.as_deref()).await {
        Ok(()) => next.run(req).await,
        Err(resp) => resp,
    }
}

/// Routes of one environment's endpoint (without operations endpoints); with
/// `auth`, every model route needs a token (health routes never do).
pub fn router(env: Arc<EnvState>, max_body: usize, auth: Option<Arc<TokenCheck>>) -> Router {
    let models = Router::new()
        .route("/v1/models/{target}", post(predict_v1).get(model_v1))
        .route("/v2/models/{name}", get(v2_metadata))
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route("/v2/models/{name}/infer", post(v2_infer));
    let models = match auth {
        Some(check) => {
            models.route_layer(axum::middleware::from_fn_with_state(check, require_token))
        }
        None => models,
    };
    Router::new()
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .merge(models)
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

/// The loaded model for `desired`: the one already served when it is the same
/// version and artifact, else freshly loaded.
async fn loaded(
    ctx: &Context,
    existing: Option<&Slot>,
    desired: &DesiredState,
) -> Result<Arc<Served>, String> {
    let hex = desired.model_sha256.to_hex();
    let reuse = existing.and_then(|slot| {
        std::iter::once(&slot.current)
            .chain(slot.stable.iter())
            .find(|s| s.model_sha256 == hex && s.version == desired.version)
            .cloned()
    });
    match reuse {
        Some(s) => Ok(s),
        None => load(ctx, desired).await.map(Arc::new),
    }
}

/// Loads (unless already served) and announces the model a desired state
/// names, with the previous version beside it during a canary.
async fn apply_desired(
    ctx: &Context,
    env: &EnvState,
    desired: &DesiredState,
    key: &str,
    revision: u64,
    replica: &str,
) {
    let existing = env.slot(desired.model.as_str());
    let slot = async {
        let current = loaded(ctx, existing.as_deref(), desired).await?;
        let stable = match &desired.previous {
            Some(prev) if desired.is_split() => Some(
                loaded(ctx, existing.as_deref(), prev)
                    .await
                    .map_err(|e| format!("previous version v{}: {e}", prev.version))?,
            ),
            _ => None,
        };
        Ok::<_, String>(Slot {
            current,
            stable,
            traffic_percent: desired.traffic_percent.min(100),
        })
    }
    .await;
    match slot {
        Ok(slot) => {
            let changed = existing.as_ref().is_none_or(|e| {
                !Arc::ptr_eq(&e.current, &slot.current)
                    || e.traffic_percent != slot.traffic_percent
                    || e.is_split() != slot.is_split()
            });
            if changed {
                tracing::info!(env = %env.environment, model = %desired.model, version = desired.version,
                    traffic_percent = slot.traffic_percent, split = slot.is_split(), "model swapped in");
            }
            env.install(slot);
        }
        Err(e) => {
            metrics::counter!("modelbus_serving_load_failures_total", "environment" => env.environment.as_str()).increment(1);
            tracing::error!(env = %env.environment, model = %desired.model, error = %e, "cannot load model; keeping the current one");
            return;
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
            traffic_percent: if desired.is_split() {
                desired.traffic_percent
            } else {
                100
            },
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
    // The deployer creates the bucket (with NATS permissions, serving may not):
    // wait for it rather than fail when serving starts first.
    let Some(kv) = wait_for_bucket(
        &ctx,
        DEPLOYMENTS_BUCKET,
        64,
        std::time::Duration::from_secs(5),
        "deployments bucket not available yet",
    )
    .await
    else {
        return Ok(());
    };
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
                    latency_histogram: w.histogram.into_counts(),
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

/// Opens the online feature store, retrying until it exists: serving may start
/// before the features service has created it.
async fn open_online(ctx: Context, env: Arc<EnvState>) -> Result<(), ServingError> {
    if let Some(kv) = wait_for_bucket(
        &ctx,
        modelbus_core::online::ONLINE_BUCKET,
        1,
        std::time::Duration::from_secs(10),
        "online feature store not available yet: entity-only requests answer 503 until it is",
    )
    .await
    {
        env.set_online(kv);
    }
    Ok(())
}

/// Opens a KV bucket another service creates, retrying with backoff (up to
/// `max_delay` apart, each failure logged as `waiting`) until it exists; `None`
/// on shutdown.
async fn wait_for_bucket(
    ctx: &Context,
    bucket: &str,
    history: i64,
    max_delay: std::time::Duration,
    waiting: &str,
) -> Option<async_nats::jetstream::kv::Store> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match ctx.bus.kv(bucket, history).await {
            Ok(kv) => return Some(kv),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "{waiting}"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max_delay);
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
    let auth = if ctx.config.serving.require_token {
        Some(Arc::new(TokenCheck::new(&ctx)?))
    } else {
        None
    };
    let mut tasks = Vec::new();
    for (env, listener) in [
        (Environment::Staging, listeners.staging),
        (Environment::Production, listeners.production),
    ] {
        let component = format!("serving-{env}");
        ctx.readiness.register(&component);
        let state = Arc::new(EnvState::with_limits(
            env,
            RequestLimits::from_config(&ctx.config.serving),
        ));
        tasks.push(tokio::spawn(open_online(ctx.clone(), state.clone())));
        let app = router(state.clone(), max_body, auth.clone())
            .merge(modelbus_core::ops::ops_router(ctx.readiness.clone()));
        let (shutdown, limits) = (ctx.shutdown.clone(), ctx.config.http.clone());
        tasks.push(tokio::spawn(async move {
            modelbus_core::ops::serve(listener, app, shutdown, &limits)
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

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_core::ids::Sha256Digest;
    use modelbus_ml::model::{InputColumn, InputRole, InputSchema};
    use modelbus_ml::spec::ColumnType;

    fn schema() -> InputSchema {
        let col = |name: &str, role| InputColumn {
            name: name.into(),
            ty: ColumnType::Float,
            nullable: true,
            role,
        };
        InputSchema {
            columns: vec![
                col("id", InputRole::Entity),
                col("a", InputRole::Feature),
                col("b", InputRole::Feature),
                col("y", InputRole::Target),
            ],
            null_values: vec![],
            entity_column: "id".into(),
        }
    }

    fn tensor(name: &str, rows: i64, data: Value) -> InferTensor {
        InferTensor {
            name: name.into(),
            shape: vec![rows],
            datatype: "FP64".into(),
            data,
        }
    }

    fn body(refused: Refused) -> (StatusCode, String) {
        let resp = Response::from(refused);
        let status = resp.status();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn tensors_become_records_keyed_by_the_models_column_names() {
        let recs = tensors_to_records(
            vec![
                tensor("a", 2, serde_json::json!([1.0, 2.0])),
                tensor("b", 2, serde_json::json!([[3.0], [4.0]])),
            ],
            &schema(),
            &RequestLimits::default(),
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1]["a"], 2.0);
        assert_eq!(recs[1]["b"], 4.0);
    }

    #[test]
    fn a_huge_unknown_input_name_is_refused_without_being_echoed() {
        // Before the fix this request asked for name × rows bytes (3 MB × 1 M).
        let name = "n".repeat(3 << 20);
        let data = Value::Array(vec![Value::from(0); 1_000_000]);
        let err = tensors_to_records(
            vec![tensor(&name, 1_000_000, data)],
            &schema(),
            &RequestLimits::default(),
        )
        .unwrap_err();
        let (status, text) = body(err);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("not an input of this model"), "{text}");
        assert!(text.contains("inputs: id, a, b"), "{text}");
        assert!(
            text.len() < 1_000,
            "the name is echoed: {} bytes",
            text.len()
        );
    }

    #[test]
    fn rows_inputs_and_cells_are_capped_before_any_record_is_built() {
        let limits = RequestLimits {
            max_rows: 10,
            max_inputs: 2,
            max_cells: 15,
        };
        let rows = |n: usize| Value::Array(vec![Value::from(1.0); n]);
        let cases = [
            (
                vec![tensor("a", 11, rows(11))],
                "serving.max_rows_per_request",
            ),
            (
                vec![
                    tensor("a", 1, rows(1)),
                    tensor("b", 1, rows(1)),
                    tensor("id", 1, rows(1)),
                ],
                "serving.max_inputs_per_request",
            ),
            (
                vec![tensor("a", 8, rows(8)), tensor("b", 8, rows(8))],
                "serving.max_cells_per_request",
            ),
        ];
        for (inputs, key) in cases {
            let (status, text) = body(tensors_to_records(inputs, &schema(), &limits).unwrap_err());
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
            assert!(text.contains(key), "{text}");
        }
        // A shape larger than usize or the data: refused, never allocated.
        let (status, text) = body(
            tensors_to_records(
                vec![tensor("a", i64::MAX, rows(1))],
                &schema(),
                &RequestLimits::default(),
            )
            .unwrap_err(),
        );
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        let (status, text) = body(
            tensors_to_records(
                vec![tensor("a", 2, rows(3))],
                &schema(),
                &RequestLimits::default(),
            )
            .unwrap_err(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            text.contains("shape says 2 rows, data has 3 or more"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_and_target_inputs_are_refused() {
        let one = || serde_json::json!([1.0]);
        for inputs in [
            vec![tensor("a", 1, one()), tensor("a", 1, one())],
            vec![tensor("y", 1, one())],
        ] {
            let (status, _) =
                body(tensors_to_records(inputs, &schema(), &RequestLimits::default()).unwrap_err());
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn v1_instances_are_capped() {
        let limits = RequestLimits {
            max_rows: 2,
            ..RequestLimits::default()
        };
        let (status, text) = body(records(vec![serde_json::json!({}); 3], &limits).unwrap_err());
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text.contains("3 instances"), "{text}");
        let (status, text) =
            body(records(vec![Value::String("x".repeat(10_000))], &limits).unwrap_err());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("got a string") && text.len() < 200, "{text}");
    }

    #[test]
    fn only_requests_that_reached_the_model_count_in_the_statistics_window() {
        let env = EnvState::new(Environment::Staging);
        let key = || ("m".to_string(), 1, Sha256Digest::of(b"m").to_hex());
        for status in ["bad_request", "not_found", "bad_request"] {
            env.record(key(), status, 1.0);
        }
        assert!(
            env.window.lock().unwrap().is_empty(),
            "client mistakes were counted as traffic"
        );
        env.record(key(), "ok", 1.0);
        env.record(key(), "error", 1.0);
        env.record(key(), "unavailable", 1.0);
        let w = env.window.lock().unwrap();
        let w = w.values().next().unwrap();
        assert_eq!((w.requests, w.errors), (3, 2));
    }

    /// Property tests over the two request parsers: whatever a client sends,
    /// parsing never panics, what it builds stays within the limits, and a
    /// refusal is a 400 or 413 whose message is short. `PROPTEST_CASES=100000
    /// cargo test -p modelbus-serving proptests` runs many more cases.
    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                any::<i64>().prop_map(|i| serde_json::json!(i)),
                ".{0,40}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,12}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("a".to_string()),
                Just("b".to_string()),
                Just("id".to_string()),
                Just("y".to_string()),
                ".{0,300}",
            ]
        }

        fn tensor_json() -> impl Strategy<Value = Value> {
            (
                name(),
                prop::collection::vec(
                    prop_oneof![-3i64..60, any::<i64>()],
                    0..4,
                ),
                prop_oneof![Just("FP64".to_string()), Just(String::new()), ".{0,20}"],
                prop_oneof![
                    prop::collection::vec(any::<f64>().prop_map(|f| serde_json::json!(f)), 0..70)
                        .prop_map(Value::Array),
                    json(),
                ],
            )
                .prop_map(|(name, shape, datatype, data)| {
                    serde_json::json!({ "name": name, "shape": shape, "datatype": datatype, "data": data })
                })
        }

        fn limits() -> RequestLimits {
            RequestLimits {
                max_rows: 50,
                max_inputs: 3,
                max_cells: 120,
            }
        }

        fn short_refusal(r: Refused) -> Result<(), TestCaseError> {
            prop_assert!(
                r.0 == StatusCode::BAD_REQUEST || r.0 == StatusCode::PAYLOAD_TOO_LARGE,
                "{:?}",
                r.0
            );
            prop_assert!(r.1.len() < 1_000, "a {}-byte message", r.1.len());
            Ok(())
        }

        proptest! {
            #[test]
            fn oip_v2_requests_are_bounded_or_refused(
                inputs in prop::collection::vec(tensor_json(), 0..6),
                extra in json(),
            ) {
                let body = serde_json::json!({ "id": "r", "inputs": inputs, "parameters": extra });
                let Ok(req) = serde_json::from_value::<InferRequest>(body) else {
                    return Ok(());
                };
                let schema = schema();
                match tensors_to_records(req.inputs, &schema, &limits()) {
                    Ok(records) => {
                        prop_assert!(records.len() <= limits().max_rows);
                        let cells: usize = records.iter().map(|r| r.len()).sum();
                        prop_assert!(cells <= limits().max_cells);
                        for r in &records {
                            for k in r.keys() {
                                prop_assert!(["id", "a", "b"].contains(&k.as_str()), "{k}");
                            }
                        }
                    }
                    Err(r) => short_refusal(r)?,
                }
            }

            #[test]
            fn oip_v2_bodies_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = serde_json::from_slice::<InferRequest>(&bytes);
            }

            #[test]
            fn v1_instances_are_bounded_or_refused(instances in prop::collection::vec(json(), 0..80)) {
                match records(instances, &limits()) {
                    Ok(r) => prop_assert!(r.len() <= limits().max_rows),
                    Err(r) => short_refusal(r)?,
                }
            }
        }
    }
}
