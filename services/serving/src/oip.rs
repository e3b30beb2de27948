//! The Open Inference Protocol v2 REST API: health, model metadata and
//! readiness, and `infer` with column tensors.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::*;

pub(crate) async fn v2_live() -> Response {
    Json(serde_json::json!({ "live": true })).into_response()
}

pub(crate) async fn v2_ready(State(env): State<Arc<EnvState>>) -> Response {
    // The server is ready to take requests once it runs; per-model readiness is
    // /v2/models/{name}/ready.
    Json(serde_json::json!({ "ready": true, "models": env.names() })).into_response()
}

pub(crate) fn oip_datatype(ty: modelbus_dataset::spec::ColumnType) -> &'static str {
    match ty {
        modelbus_dataset::spec::ColumnType::Int => "INT64",
        modelbus_dataset::spec::ColumnType::Float => "FP64",
        modelbus_dataset::spec::ColumnType::String => "BYTES",
        modelbus_dataset::spec::ColumnType::Bool => "BOOL",
    }
}

/// `GET /v2/models/{name}`: OIP model metadata.
pub(crate) async fn v2_metadata(
    State(env): State<Arc<EnvState>>,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = env.get(&name) else {
        return not_served(&env, &name);
    };
    let inputs: Vec<Value> = s
        .predictor
        .artifact()
        .input
        .columns
        .iter()
        .filter(|c| c.role != modelbus_models::model::InputRole::Target)
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

pub(crate) async fn v2_model_ready(
    State(env): State<Arc<EnvState>>,
    Path(name): Path<String>,
) -> Response {
    match env.get(&name) {
        Some(s) => Json(
            serde_json::json!({ "name": name, "ready": true, "version": s.version.to_string() }),
        )
        .into_response(),
        None => not_served(&env, &name),
    }
}

#[derive(Deserialize)]
pub(crate) struct InferRequest {
    #[serde(default)]
    pub(crate) id: Option<String>,
    pub(crate) inputs: Vec<InferTensor>,
}

#[derive(Deserialize)]
pub(crate) struct InferTensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<i64>,
    #[serde(default)]
    pub(crate) datatype: String,
    pub(crate) data: Value,
}

/// A client-given name as it may appear in an error message: at most 64
/// characters, so a multi-megabyte name is not echoed back.
pub(crate) fn shown(name: &str) -> String {
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
pub(crate) fn tensors_to_records(
    inputs: Vec<InferTensor>,
    schema: &modelbus_models::model::InputSchema,
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
            .find(|c| c.name == t.name && c.role != modelbus_models::model::InputRole::Target)
        else {
            return Err(bad(format!(
                "input {}: not an input of this model (inputs: {})",
                shown(&t.name),
                schema
                    .columns
                    .iter()
                    .filter(|c| c.role != modelbus_models::model::InputRole::Target)
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
pub(crate) async fn v2_infer(
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
    let ids: Vec<String> = answered.ids.iter().map(|i| i.to_string()).collect();
    resp["parameters"] = serde_json::json!({ "prediction_ids": ids });
    if answered.split {
        let versions: Vec<u32> = answered.served_by.iter().map(|s| s.version).collect();
        resp["parameters"]["model_versions"] = versions.into();
    }
    // The request's id is echoed; without one, a single row's response is
    // identified by its prediction id.
    match (id, ids.as_slice()) {
        (Some(id), _) => resp["id"] = id.into(),
        (None, [only]) => resp["id"] = only.clone().into(),
        (None, _) => {}
    }
    Json(resp).into_response()
}
