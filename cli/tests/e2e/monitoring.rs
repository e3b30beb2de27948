//! The post-deployment loop: the prediction log serving writes for the monitor.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use modelbus_core::events::{InferenceLogged, decode_on};
use serde_json::Value;

use crate::harness::{Db, TestPlatform, telco_records};

/// Every record on the inference stream, read from the start until `want`
/// records arrived or the deadline passed.
async fn logged(t: &TestPlatform, want: usize, wait: Duration) -> Vec<(String, InferenceLogged)> {
    let js = async_nats::jetstream::new(t.nats().await);
    let stream = js
        .get_stream(modelbus_core::bus::INFERENCE_STREAM)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let mut records = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while records < want {
        let next = tokio::time::timeout_at(deadline, messages.next()).await;
        let Ok(Some(Ok(m))) = next else { break };
        let e = decode_on::<InferenceLogged>(&m.subject, &m.payload).unwrap();
        records += e.data.records.len();
        out.push((m.subject.to_string(), e.data));
    }
    out
}

async fn predictions_are_logged_with_the_ids_clients_get(db: Db) {
    let t = TestPlatform::start_with(db, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
    })
    .await;
    t.deploy_telco().await;
    let v1 = t.predict_sample().await;
    let recs = telco_records(3);
    let columns: Vec<String> = recs[0].as_object().unwrap().keys().cloned().collect();
    let inputs: Vec<Value> = columns
        .iter()
        .map(|c| serde_json::json!({ "name": c, "shape": [3], "datatype": "BYTES", "data": recs.iter().map(|r| r[c].clone()).collect::<Vec<_>>() }))
        .collect();
    let v2: Value = t
        .http
        .post(format!("{}/v2/models/telco-churn/infer", t.staging()))
        .json(&serde_json::json!({ "inputs": inputs }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every prediction carries an id: v1 per prediction, v2 in the parameters.
    let mut answered: HashMap<String, f64> = HashMap::new();
    for p in v1["predictions"].as_array().unwrap() {
        answered.insert(
            p["prediction_id"].as_str().unwrap().to_string(),
            p["probability"].as_f64().unwrap(),
        );
    }
    let v2_ids = v2["parameters"]["prediction_ids"].as_array().unwrap();
    assert_eq!(v2_ids.len(), 3, "{v2}");
    for (id, p) in v2_ids
        .iter()
        .zip(v2["outputs"][0]["data"].as_array().unwrap())
    {
        answered.insert(id.as_str().unwrap().to_string(), p.as_f64().unwrap());
    }
    assert_eq!(answered.len(), 8, "ids are unique");

    let batches = logged(&t, 8, Duration::from_secs(20)).await;
    let mut seen = 0;
    for (subject, b) in &batches {
        assert_eq!(subject, "modelbus_inference.inference.logged");
        assert_eq!(b.environment.as_str(), "staging");
        assert_eq!(b.dropped_before, 0);
        for r in &b.records {
            let p = answered
                .get(&r.prediction_id)
                .unwrap_or_else(|| panic!("{} was not answered", r.prediction_id));
            assert_eq!(*p, r.probability);
            assert_eq!(r.model.as_str(), "telco-churn");
            assert_eq!(r.version, 1);
            assert!(r.label == "Yes" || r.label == "No");
            let entity = r.entity.as_deref().unwrap();
            assert_eq!(r.input["customerID"], entity);
            assert!(r.input.contains_key("MonthlyCharges") && r.input.contains_key("Contract"));
            seen += 1;
        }
    }
    assert_eq!(
        seen, 8,
        "every answered prediction is logged once: {batches:#?}"
    );
    // Batching: 8 predictions from two requests did not become 8 events.
    assert!(batches.len() <= 2, "{} events", batches.len());
    assert!(
        t.metric_appears("modelbus_serving_logged_total").await,
        "the logged counter is exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_are_logged_with_the_ids_clients_get_sqlite() {
    predictions_are_logged_with_the_ids_clients_get(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_at_zero_logs_nothing_but_still_answers_with_ids() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.log_sample_rate = 0.0;
        c.serving.log_flush_interval = Duration::from_millis(50);
    })
    .await;
    t.deploy_telco().await;
    let v1 = t.predict_sample().await;
    assert!(v1["predictions"][0]["prediction_id"].as_str().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batches = logged(&t, 1, Duration::from_secs(1)).await;
    assert!(batches.is_empty(), "{batches:#?}");
}
