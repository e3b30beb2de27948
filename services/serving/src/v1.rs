//! The v1 API: `POST /v1/models/{name}:predict` with raw records (or entity
//! ids), and `GET /v1/models/{name}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::*;

#[derive(Deserialize)]
pub(crate) struct PredictRequest {
    pub(crate) instances: Vec<Value>,
}

pub(crate) fn records(
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

/// `POST /v1/models/{name}:predict`.
pub(crate) async fn predict_v1(
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
        "predictions": answered
            .predictions
            .iter()
            .zip(&answered.ids)
            .map(|(p, id)| serde_json::json!({
                "probability": p.probability,
                "label": p.label,
                "prediction_id": id.to_string(),
            }))
            .collect::<Vec<_>>(),
    });
    if answered.split {
        out["model_versions"] = answered.served_by.iter().map(|s| s.version).collect();
    }
    Json(out).into_response()
}

/// `GET /v1/models/{name}`: what is served.
pub(crate) async fn model_v1(
    State(env): State<Arc<EnvState>>,
    Path(name): Path<String>,
) -> Response {
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
