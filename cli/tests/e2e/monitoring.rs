//! The post-deployment loop: the prediction log serving writes for the monitor.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use modelbus_core::events::{InferenceLogged, decode_on};
use serde_json::Value;

use crate::harness::{Db, TestPlatform, shifted, telco_records, telco_truth};

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
    let inputs = crate::harness::oip_inputs(&recs);
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

/// Waits until the registry holds `n` windows of the model.
async fn windows(t: &TestPlatform, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = t
            .client
            .get_json("/v1/models/telco-churn/windows?environment=staging")
            .await
            .unwrap();
        let list = w["windows"].as_array().cloned().unwrap_or_default();
        if list.len() >= n || tokio::time::Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn live_traffic_is_compared_with_the_training_reference(db: Db) {
    let t = TestPlatform::start_with(db, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 500;
        c.monitor.window_duration = Duration::from_secs(600);
    })
    .await;
    t.deploy_telco().await;
    let records = telco_records(1000);
    // A window as the training rows were: no drift, no decision.
    t.predict(&records[..500]).await;
    let first = windows(&t, 1).await;
    assert_eq!(first.len(), 1, "{first:#?}");
    let w = &first[0];
    assert_eq!(w["rows"], 500);
    assert_eq!(w["closed_by"], "rows");
    assert_eq!(w["version"], 1);
    assert!(w["decisions"].as_array().unwrap().is_empty(), "{w:#}");
    assert!(w["drifted_columns"].as_array().unwrap().is_empty(), "{w:#}");
    assert!(
        w["scores"]["MonthlyCharges"].as_f64().unwrap() < 0.1,
        "{w:#}"
    );
    assert!(
        w["scores"].get("@probability").is_some(),
        "prediction drift is measured"
    );

    // The same customers with monthly charges × 1.10 + 5 and a third of the
    // contracts switched to two years.
    t.predict(&shifted(&records[500..])).await;
    let both = windows(&t, 2).await;
    assert_eq!(both.len(), 2, "{both:#?}");
    let w = &both[0];
    let drifted: Vec<&str> = w["drifted_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(drifted.contains(&"MonthlyCharges"), "{w:#}");
    assert!(drifted.contains(&"Contract"), "{w:#}");
    let reasons: Vec<&str> = w["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("feature drift") && r.contains("MonthlyCharges")),
        "{reasons:?}"
    );

    // The report and its page are served; the decision is in the audit chain.
    let report = t
        .client
        .get_json(&format!(
            "/v1/reports/{}",
            w["report_sha256"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let col = report["drift"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "MonthlyCharges")
        .unwrap()
        .clone();
    assert_eq!(col["method"], "wasserstein");
    assert_eq!(col["threshold"], 0.1);
    assert!(col["drifted"].as_bool().unwrap());
    let page = t
        .http
        .get(format!(
            "{}/v1/windows/pages/{}",
            t.config.registry_http_url(),
            w["html_sha256"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(page.text().await.unwrap().contains("MonthlyCharges"));
    // Any other digest is not served as a page.
    let other = t
        .http
        .get(format!(
            "{}/v1/windows/pages/{}",
            t.config.registry_http_url(),
            w["report_sha256"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let audit = t.client.audit_all().await.unwrap();
    let decision = audit
        .iter()
        .find(|e| e.action == "monitoring.drift_detected")
        .expect("the drift decision is audited");
    assert_eq!(decision.subject, "model/telco-churn/v1");
    // And the CLI shows it.
    let (code, out, err) =
        crate::harness::cli(&t, &["monitor", "status", "--model", "telco-churn"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("drifted: ") && out.contains("MonthlyCharges"),
        "{out}"
    );
    assert!(out.contains("drift.detected: feature drift"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_is_compared_with_the_training_reference_sqlite() {
    live_traffic_is_compared_with_the_training_reference(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_is_compared_with_the_training_reference_postgres() {
    live_traffic_is_compared_with_the_training_reference(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_log_batches_are_dead_lettered_and_the_monitor_keeps_working() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 200;
        c.monitor.min_rows = 50;
    })
    .await;
    t.deploy_telco().await;
    let js = async_nats::jetstream::new(t.nats().await);
    let subject = "modelbus_inference.inference.logged";
    // Not JSON; a CloudEvent whose records are not records; a record with a
    // probability that is not a number.
    let envelope = |data: Value| {
        serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "id": format!("bad-{data}"), "source": "/test",
            "type": "io.modelbus.inference.logged.v1", "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json", "data": data,
        }))
        .unwrap()
    };
    let bad = [
        b"not json at all".to_vec(),
        envelope(serde_json::json!({ "environment": "staging", "replica": "x", "records": [42] })),
        envelope(
            serde_json::json!({ "environment": "staging", "replica": "x", "records": [{
            "prediction_id": "p", "time": "t", "model": "telco-churn", "version": 1,
            "model_sha256": "00", "input": {}, "probability": "high", "label": "Yes"
        }] }),
        ),
    ];
    for payload in bad {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dlq = js.get_stream("MODELBUS_DLQ").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let info = dlq.get_info().await.unwrap();
        let mut letters = Vec::new();
        for seq in 1..=info.state.last_sequence {
            if let Ok(m) = dlq.get_raw_message(seq).await
                && m.subject.as_str() == "modelbus_dlq.monitor"
            {
                letters.push(serde_json::from_slice::<Value>(&m.payload).unwrap());
            }
        }
        if letters.len() >= 3 || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 3, "{letters:#?}");
    for l in &letters {
        assert_eq!(l["consumer"], "monitor");
        assert!(!l["error"].as_str().unwrap().is_empty(), "{l:#}");
    }
    assert!(
        t.metric_appears("modelbus_events_dead_lettered_total{consumer=\"monitor\"} 3")
            .await,
        "dead letters are counted (the series exists at 0 from the start)"
    );
    // The monitor still windows real traffic.
    t.predict(&telco_records(200)).await;
    let w = windows(&t, 1).await;
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0]["rows"], 200);
}

/// ROC AUC by counting pairs (ties one half): the test's own reference.
fn auc(p: &[f64], y: &[bool]) -> f64 {
    let (mut won, mut pairs) = (0.0, 0.0);
    for i in 0..p.len() {
        for j in 0..p.len() {
            if y[i] && !y[j] {
                pairs += 1.0;
                won += if p[i] > p[j] {
                    1.0
                } else if p[i] == p[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    won / pairs
}

async fn post_labels(t: &TestPlatform, csv: impl Into<Vec<u8>>) -> (u16, Value) {
    let r = t
        .http
        .post(format!(
            "{}/v1/datasets/telco-churn/labels",
            t.config.ingest_url()
        ))
        .header("content-type", "text/csv")
        .body(csv.into())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The realised performance of `window` once it covers `rows` labels.
async fn realised(t: &TestPlatform, window: &str, rows: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = t
            .client
            .get_json("/v1/models/telco-churn/windows?environment=staging")
            .await
            .unwrap();
        let p = &w["performance"][window];
        if p["realised"]["rows"].as_u64() == Some(rows) {
            return p.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "window {window} never had {rows} labels: {:#}",
            w["performance"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn labels_join_predictions_and_revise_their_windows(db: Db) {
    let t = TestPlatform::start_with(db, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 400;
        c.monitor.window_duration = Duration::from_secs(600);
    })
    .await;
    t.deploy_telco().await;
    let truth = telco_truth(450);
    let records = telco_records(450);
    let answer = t.predict(&records[..400]).await;
    let preds = answer["predictions"].as_array().unwrap();
    let ids: Vec<String> = preds
        .iter()
        .map(|p| p["prediction_id"].as_str().unwrap().to_string())
        .collect();
    let probs: Vec<f64> = preds
        .iter()
        .map(|p| p["probability"].as_f64().unwrap())
        .collect();
    let first = windows(&t, 1).await;
    assert_eq!(first.len(), 1, "{first:#?}");
    let window = first[0]["window_id"].as_str().unwrap().to_string();
    // Estimated performance (CBPE) is there before any label.
    let est = first[0]["estimated"]["roc_auc"].as_f64().unwrap();
    assert!((0.6..1.0).contains(&est), "{:#}", first[0]);
    assert!(first[0]["index_sha256"].as_str().is_some());

    // Bad files are refused whole, naming what is wrong; nothing is joined.
    let bad: [(&[u8], &str); 4] = [
        (b"Churn\nYes\n", "no id column"),
        (
            b"customerID,Churn\nx,Yes\ny,Maybe\n",
            "row 2: Churn \"Maybe\"",
        ),
        (b"customerID,Churn\nx,Yes\n\xff,No\n", "UTF-8"),
        (b"customerID,Churn\nx,Yes\ny,No,1\n", "row 2: 3 fields"),
    ];
    for (csv, want) in bad {
        let (status, body) = post_labels(&t, csv.to_vec()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or(&body.to_string())
                .contains(want)
                || body.to_string().contains(want),
            "{want}: {body}"
        );
    }

    // Three quarters by prediction id (over HTTP)...
    let mut csv = String::from("prediction_id,Churn\n");
    for (id, (_, churn)) in ids.iter().zip(&truth).take(300) {
        csv.push_str(&format!("{id},{churn}\n"));
    }
    let submitted = std::time::Instant::now();
    let (status, body) = post_labels(&t, csv).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rows"], 300);
    let p = realised(&t, &window, 300).await;
    // A measurement for the closing note, not a timed assertion.
    eprintln!(
        "labels submitted → realised performance served: {} ms",
        submitted.elapsed().as_millis()
    );
    let metrics = t.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("modelbus_monitor_window_publish_seconds"))
    {
        eprintln!("{line}");
    }
    let y: Vec<bool> = truth.iter().map(|(_, c)| c == "Yes").collect();
    let want = auc(&probs[..300], &y[..300]);
    let got = p["realised"]["roc_auc"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "realised {got}, computed {want}");
    assert!((p["label_coverage"].as_f64().unwrap() - 0.75).abs() < 1e-9);

    // ...the rest late, by entity, through the CLI: the window is revised.
    // A label for a prediction labelled already is a duplicate (first wins).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.csv");
    let mut csv = String::from("customerID,Churn\n");
    for (entity, churn) in &truth[300..400] {
        csv.push_str(&format!("{entity},{churn}\n"));
    }
    let flipped = if truth[0].1 == "Yes" { "No" } else { "Yes" };
    csv.push_str(&format!("{},{flipped}\n", truth[0].0));
    std::fs::write(&file, csv).unwrap();
    let (code, out, err) = crate::harness::cli(
        &t,
        &[
            "labels",
            "submit",
            "--dataset",
            "telco-churn",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let resp: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resp["by_entity"], 101, "{resp}");
    let p = realised(&t, &window, 400).await;
    let want = auc(&probs, &y[..400]);
    let got = p["realised"]["roc_auc"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "realised {got}, computed {want}");
    assert_eq!(p["label_coverage"], 1.0);
    let r = &p["realised"];
    let confusion = ["tp", "fp", "tn", "fn"]
        .iter()
        .map(|k| r[k].as_f64().unwrap())
        .sum::<f64>();
    assert_eq!(confusion, 400.0, "{r:#}");

    // Labels for predictions whose window is still open wait for it.
    let more = t.predict(&records[400..450]).await;
    let mut csv = String::from("prediction_id,Churn\n");
    for (p, (_, churn)) in more["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&truth[400..])
    {
        csv.push_str(&format!(
            "{},{churn}\n",
            p["prediction_id"].as_str().unwrap()
        ));
    }
    let (status, _) = post_labels(&t, csv).await;
    assert_eq!(status, 202);
    // Close that window: 350 more predictions.
    t.predict(&telco_records(350)).await;
    let both = windows(&t, 2).await;
    let second = both[0]["window_id"].as_str().unwrap().to_string();
    assert_ne!(second, window);
    realised(&t, &second, 50).await;

    // Each join is audited under the dataset, and the CLI shows both figures.
    let audit = t.client.audit_all().await.unwrap();
    let joins: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "labels.joined")
        .collect();
    assert!(joins.len() >= 3, "{joins:#?}");
    assert!(joins.iter().all(|e| e.subject == "dataset/telco-churn"));
    let dup = joins
        .iter()
        .find(|e| e.detail["duplicate"] == 1)
        .expect("the flipped label is a duplicate");
    assert_eq!(dup.detail["joined"], 100, "{:#}", dup.detail);
    let (code, out, err) =
        crate::harness::cli(&t, &["monitor", "status", "--model", "telco-churn"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("estimated (CBPE)") && out.contains("realised"),
        "{out}"
    );
    assert!(
        t.metric_appears("modelbus_monitor_performance{").await,
        "performance is exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_predictions_and_revise_their_windows_sqlite() {
    labels_join_predictions_and_revise_their_windows(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_predictions_and_revise_their_windows_postgres() {
    labels_join_predictions_and_revise_their_windows(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_with_labels_retrains_through_the_pipeline_into_staging_at_most() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 400;
        c.monitor.window_duration = Duration::from_secs(600);
    })
    .await;
    t.deploy_telco().await;
    // The dataset asks to be retrained on drift, with 300 labelled records.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("telco-churn.toml");
    let text = std::fs::read_to_string(modelbus_testkit::telco_spec()).unwrap();
    std::fs::write(
        &spec,
        format!("{text}\n[monitor.retrain]\nmin_labels = 300\n"),
    )
    .unwrap();
    t.client.apply_spec(&spec).await.unwrap();

    let truth = telco_truth(400);
    let answer = t.predict(&shifted(&telco_records(400))).await;
    let w = windows(&t, 1).await;
    assert!(
        w[0]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "drift.detected"),
        "{:#}",
        w[0]
    );
    let window = w[0]["window_id"].as_str().unwrap().to_string();
    // Without labels the request waits: no run yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_monitor = |runs: &Value| -> Vec<Value> {
        runs["pipeline_runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["submitted_by"]
                    .as_str()
                    .unwrap_or("")
                    .contains("modelbus-monitor: retrain")
            })
            .cloned()
            .collect()
    };
    let runs = t
        .client
        .pipeline_runs(Some("telco-churn"), 50)
        .await
        .unwrap();
    assert!(by_monitor(&runs).is_empty(), "{runs:#}");

    let mut csv = String::from("prediction_id,Churn\n");
    for (p, (_, churn)) in answer["predictions"].as_array().unwrap().iter().zip(&truth) {
        csv.push_str(&format!(
            "{},{churn}\n",
            p["prediction_id"].as_str().unwrap()
        ));
    }
    let (status, body) = post_labels(&t, csv).await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs = t
            .client
            .pipeline_runs(Some("telco-churn"), 50)
            .await
            .unwrap();
        if let Some(r) = by_monitor(&runs).first() {
            break r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retraining run: {runs:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Its lineage names the decision and the window that caused it.
    let by = run["submitted_by"].as_str().unwrap();
    assert!(
        by.contains("drift.detected") && by.contains(&window),
        "{by}"
    );
    let done = t
        .client
        .wait_run(run["id"].as_str().unwrap(), Duration::from_secs(300))
        .await
        .unwrap();
    // Through validation, gates and champion/challenger like any batch: it
    // ends deployed to staging or rejected, never in production.
    let state = done["state"].as_str().unwrap();
    assert!(state == "deployed" || state == "rejected", "{done:#}");
    // The training batch is included, each customer once: the 400 labelled
    // customers' newer records replace their training rows.
    assert_eq!(done["rows"], 7_043, "{done:#}");
    let model = t.client.model("telco-churn").await.unwrap();
    assert!(model["aliases"].get("production").is_none(), "{model:#}");
    // One cause, one run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = t
        .client
        .pipeline_runs(Some("telco-churn"), 50)
        .await
        .unwrap();
    assert_eq!(by_monitor(&runs).len(), 1, "{runs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_labels_observed_events_are_dead_lettered_and_change_nothing() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 200;
    })
    .await;
    t.deploy_telco().await;
    let js = async_nats::jetstream::new(t.nats().await);
    let envelope = |id: &str, data: Value| {
        serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "id": id, "source": "/test",
            "type": "io.modelbus.labels.observed.v1", "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json", "data": data,
        }))
        .unwrap()
    };
    let missing = "0".repeat(64);
    let bad = [
        b"{ not json".to_vec(),
        // Not a labels id, and labels that were never stored.
        envelope(
            "bad-1",
            serde_json::json!({"labels_id": "x", "dataset": "telco-churn",
                "labels_sha256": missing, "rows": 1, "submitted_by": "mallory"}),
        ),
        envelope(
            "bad-2",
            serde_json::json!({"labels_id": "01a23cb8-dadb-7291-8286-6c5cfa1cb838",
                "dataset": "telco-churn", "labels_sha256": missing, "rows": 1,
                "submitted_by": "mallory"}),
        ),
    ];
    for payload in bad {
        js.publish("modelbus.labels.observed", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dlq = js.get_stream("MODELBUS_DLQ").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let info = dlq.get_info().await.unwrap();
        let mut letters = Vec::new();
        for seq in 1..=info.state.last_sequence {
            if let Ok(m) = dlq.get_raw_message(seq).await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if v["subject"] == "modelbus.labels.observed" {
                    letters.push(v);
                }
            }
        }
        if letters.len() >= 3 || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 3, "{letters:#?}");
    let errors: Vec<&str> = letters
        .iter()
        .map(|l| l["error"].as_str().unwrap())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("not a UUID")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("not stored")),
        "{errors:?}"
    );
    // Nothing was joined or audited, and real labels still join.
    let audit = t.client.audit_all().await.unwrap();
    assert!(!audit.iter().any(|e| e.action == "labels.joined"));
    let answer = t.predict(&telco_records(200)).await;
    let w = windows(&t, 1).await;
    let window = w[0]["window_id"].as_str().unwrap().to_string();
    let mut csv = String::from("prediction_id,Churn\n");
    for (p, (_, churn)) in answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(telco_truth(200))
    {
        csv.push_str(&format!(
            "{},{churn}\n",
            p["prediction_id"].as_str().unwrap()
        ));
    }
    let (status, _) = post_labels(&t, csv).await;
    assert_eq!(status, 202);
    realised(&t, &window, 200).await;
}
