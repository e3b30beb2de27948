//! What every prediction route shares: error bodies, request refusals, the
//! request metrics and statistics, and routing records across a canary split.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::*;

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub(crate) fn not_served(env: &EnvState, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "model {name:?} is not deployed in {} (served here: {:?})",
            env.environment,
            env.names()
        ),
    )
}

/// What a JSON value is, for error messages that must not echo a huge value.
pub(crate) fn json_kind(v: &Value) -> &'static str {
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
pub(crate) struct Refused(pub(crate) StatusCode, pub(crate) String);

impl From<Refused> for Response {
    fn from(r: Refused) -> Self {
        error(r.0, r.1)
    }
}

pub(crate) fn too_large(message: String) -> Refused {
    Refused(StatusCode::PAYLOAD_TOO_LARGE, message)
}

/// The request-status label of an error response.
pub(crate) fn status_label(resp: &Response) -> &'static str {
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
pub(crate) fn reached_model(status: &str) -> bool {
    !matches!(status, "bad_request" | "not_found")
}

/// Counts a request in the Prometheus metrics and, when it reached the model
/// (see [`reached_model`]), against the version that answered it (its
/// statistics window).
pub(crate) fn observe(
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
    // Per version too: during a canary, the two versions' latency, errors
    // and share of traffic side by side.
    let version = served.map(|s| s.version.to_string()).unwrap_or_default();
    let labels = [
        ("environment", env.environment.as_str().to_string()),
        ("model", model.to_string()),
        ("version", version.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("modelbus_serving_requests_total", &labels).increment(1);
    metrics::histogram!("modelbus_serving_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    if status == "ok" {
        metrics::counter!("modelbus_serving_predictions_total", "environment" => env.environment.as_str(), "model" => model.to_string(), "version" => version)
            .increment(rows as u64);
    }
}

/// Predictions of one request, each with the version that answered it.
pub(crate) struct Answered {
    pub(crate) predictions: Vec<modelbus_models::model::Prediction>,
    /// Each prediction's id, in request order.
    pub(crate) ids: Vec<uuid::Uuid>,
    pub(crate) served_by: Vec<Arc<Served>>,
    pub(crate) split: bool,
}

impl Answered {
    /// The version that answered every record, if one did.
    pub(crate) fn uniform(&self) -> Option<&Served> {
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
pub(crate) async fn predict_split(
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
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| new_prediction_id()).collect();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    for (served, idx, mut group) in groups {
        if let Err(resp) = env.resolve(&served, &mut group).await {
            observe(env, Some(&served), name, status_label(&resp), started, 0);
            return Err(resp);
        }
        match served.predictor.predict_records(&group) {
            Ok(preds) => {
                observe(env, Some(&served), name, "ok", started, preds.len());
                let parsed = (
                    modelbus_core::ids::ModelName::parse(&served.model),
                    modelbus_core::ids::Sha256Digest::parse(&served.model_sha256),
                );
                if let (Some(log), (Ok(model), Ok(sha))) = (env.log.get(), parsed) {
                    let entity_column = &served.predictor.artifact().input.entity_column;
                    for ((j, p), rec) in idx.iter().zip(&preds).zip(group) {
                        if !log.wants(&ids[*j]) {
                            continue;
                        }
                        let entity = match rec.get(entity_column) {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(Value::Number(n)) => Some(n.to_string()),
                            _ => None,
                        };
                        log.push(modelbus_core::events::PredictionRecord {
                            prediction_id: ids[*j].to_string(),
                            time: now.clone(),
                            model: model.clone(),
                            version: served.version,
                            model_sha256: sha,
                            entity,
                            input: rec,
                            probability: p.probability,
                            label: p.label.clone(),
                        });
                    }
                }
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
        ids,
        served_by: served_by.into_iter().flatten().collect(),
        split: slot.is_split(),
    })
}
