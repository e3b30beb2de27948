//! One environment's state: what it serves, its request limits, and the
//! statistics windows per served version that `serving.stats` reports.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use axum::response::Response;
use modelbus_core::Context;
use modelbus_core::events::Envelope;
use modelbus_core::ids::Environment;
use serde_json::{Map, Value};

use crate::*;

/// The models served in one environment; swapped atomically per model.
#[derive(Debug)]
pub struct EnvState {
    /// The environment.
    pub environment: Environment,
    pub(crate) models: RwLock<HashMap<String, Arc<Slot>>>,
    /// The online feature store, for requests that give only an entity id.
    pub(crate) online: RwLock<Option<async_nats::jetstream::kv::Store>>,
    /// Requests per served version since the last `serving.stats`.
    pub(crate) window: std::sync::Mutex<HashMap<(String, u32, String), Window>>,
    /// Bounds on one request's size.
    pub limits: RequestLimits,
    /// Where answered predictions are logged (unset: not logged).
    pub(crate) log: std::sync::OnceLock<PredictionLog>,
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
pub(crate) struct Window {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) histogram: modelbus_core::latency::Histogram,
}

/// Latencies kept per window for the p99 (a reservoir would do for more).
pub(crate) const MAX_LATENCIES: usize = 100_000;

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
            log: std::sync::OnceLock::new(),
        }
    }

    /// Logs this environment's predictions from now on (once).
    pub fn set_log(&self, log: PredictionLog) {
        let _ = self.log.set(log);
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
            .filter(|c| c.role == modelbus_models::model::InputRole::Feature && !c.nullable)
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
    pub(crate) fn record(&self, key: (String, u32, String), status: &str, latency_ms: f64) {
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

/// Publishes one `serving.stats` per served version every `serving.stats_interval`.
pub(crate) async fn publish_stats(ctx: Context, env: Arc<EnvState>, replica: String) {
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
