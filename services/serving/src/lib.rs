//! Serving: one prediction endpoint per environment (staging, production). Each
//! watches the `deployments` KV bucket for its environment, loads the model
//! artifact it names (refusing bytes that do not hash to the approved digest) and
//! swaps it in atomically: requests in flight finish on the model they started
//! with, new requests get the new one, none is dropped.
//!
//! APIs: `POST /v1/models/{name}:predict` with raw records, and the Open
//! Inference Protocol v2 REST endpoints (`/v2/health/*`, `/v2/models/{name}`,
//! `/v2/models/{name}/ready`, `/v2/models/{name}/infer`). A record that does not
//! fit the model's input schema gets a 400 naming the field. Every answered
//! prediction gets an id (returned to the client) and is logged for the
//! monitor ([`log`]).
#![forbid(unsafe_code)]

mod auth;
mod env;
pub mod log;
mod oip;
mod respond;
mod slot;
mod v1;
mod watch;

pub use auth::TokenCheck;
pub use env::{EnvState, RequestLimits};
pub use slot::{Served, Slot};

// Every module sees the others' crate-visible items through `use crate::*`.
#[allow(unused_imports)]
use {auth::*, env::*, log::*, oip::*, respond::*, slot::*, v1::*, watch::*};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use modelbus_core::Context;
use modelbus_core::ids::Environment;
use tokio::net::TcpListener;

/// Source attribute of serving's events.
pub const SOURCE: &str = "/modelbus/serving";

/// Errors that stop serving.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Start-up failed.
    #[error("{0}")]
    Fatal(String),
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
        if ctx.config.serving.log_predictions {
            let (log, publisher) = log::open(&ctx, env, replica.clone());
            state.set_log(log);
            tasks.push(tokio::spawn(async move {
                publisher.await;
                Ok(())
            }));
        }
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
    use axum::http::StatusCode;
    use axum::response::Response;
    use modelbus_core::ids::Environment;
    use modelbus_core::ids::Sha256Digest;
    use modelbus_dataset::spec::ColumnType;
    use modelbus_models::model::{InputColumn, InputRole, InputSchema};
    use serde_json::Value;

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
