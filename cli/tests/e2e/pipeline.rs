//! The whole pipeline on the Telco data ends with a staging model that serves.

use std::time::Duration;

use crate::harness::{Db, TestPlatform, cli, telco_records};
use modelbus_testkit::telco_csv;
use serde_json::Value;

async fn whole_pipeline(db: Db) {
    let t = TestPlatform::start(db).await;
    let run = t.deploy_telco().await;
    // Every stage ran and succeeded, in order.
    let stages: Vec<(&str, &str)> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("validation", "succeeded"),
            ("features", "succeeded"),
            ("training", "succeeded"),
            ("gates", "succeeded"),
            ("deployment", "succeeded"),
        ]
    );
    assert_eq!(run["rows"], 7043);

    // The version carries lineage and metrics; the staging alias points at it.
    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["aliases"]["staging"], 1);
    let v = &model["versions"][0];
    assert_eq!(v["status"], "candidate");
    let auc = v["metrics"]["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.82, "holdout ROC AUC {auc}");
    for key in [
        "pipeline_run",
        "batch_sha256",
        "spec_digest",
        "feature_set_sha256",
        "code_revision",
        "report_sha256",
    ] {
        assert!(
            !v["lineage"][key].as_str().unwrap_or("").is_empty(),
            "lineage {key} missing: {v:#}"
        );
    }
    assert_eq!(v["lineage"]["seed"], 42);
    assert_eq!(
        v["lineage"]["batch_sha256"],
        "88be4b93fbe0cc83421af1c503794c97c342eca914c1576db7c276e61d61358a"
    );
    let training = t.client.run(v["run_id"].as_str().unwrap()).await.unwrap();
    // Both candidates were cross-validated; the winner's name is recorded.
    assert!(
        training["params"]["candidate"].as_str().is_some(),
        "{training:#}"
    );
    assert!(
        training["params"]["selection.logistic.validation_roc_auc"]
            .as_str()
            .is_some(),
        "{training:#}"
    );
    assert!(
        training["params"]["selection.gbdt.validation_roc_auc"]
            .as_str()
            .is_some(),
        "{training:#}"
    );
    assert_eq!(
        training["artifacts"].as_array().unwrap().len(),
        5,
        "model, feature set, transform, statistics, monitoring reference"
    );

    // The validation report is stored and shaped like GE's.
    let report = t
        .http
        .get(format!(
            "{}/v1/reports/{}",
            t.config.registry_http_url(),
            run["report_sha256"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(report["success"], true);
    assert!(report["results"].as_array().unwrap().len() > 20);

    // Staging serves it: raw records in, probabilities and labels out.
    let p = t.predict_sample().await;
    assert_eq!(p["model_version"], 1);
    let preds = p["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 5);
    for pr in preds {
        let prob = pr["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&prob));
        assert!(pr["label"] == "Yes" || pr["label"] == "No");
    }
    // Open Inference Protocol v2.
    let ready = t
        .http
        .get(format!("{}/v2/health/ready", t.staging()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let meta: Value = t
        .http
        .get(format!("{}/v2/models/telco-churn", t.staging()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["versions"][0], "1");
    let recs = telco_records(3);
    let inputs = crate::harness::oip_inputs(&recs);
    let infer: Value = t
        .http
        .post(format!("{}/v2/models/telco-churn/infer", t.staging()))
        .json(&serde_json::json!({ "id": "req-1", "inputs": inputs }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(infer["id"], "req-1", "the request's id is echoed");
    assert_eq!(
        infer["parameters"]["prediction_ids"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "every row has its prediction id: {infer}"
    );
    let probs = infer["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(probs.len(), 3);
    assert_eq!(
        probs[0], p["predictions"][0]["probability"],
        "v1 and v2 APIs agree"
    );
    // A record that does not fit the schema gets a 400 naming the field.
    let mut bad = telco_records(1);
    bad[0]["MonthlyCharges"] = Value::String("a lot".into());
    let r = t
        .http
        .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
        .json(&serde_json::json!({ "instances": bad }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("MonthlyCharges"),
        "{body}"
    );
    // An unseen category still answers.
    let mut novel = telco_records(1);
    novel[0]["PaymentMethod"] = Value::String("Crypto".into());
    let r = t
        .http
        .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
        .json(&serde_json::json!({ "instances": novel }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Readiness and metrics.
    let ready = t
        .http
        .get(format!("{}/readyz", t.config.registry_http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = t.metrics().await;
    assert!(
        metrics.contains("modelbus_events_handled_total"),
        "{metrics}"
    );
    assert!(metrics.contains("modelbus_serving_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pipeline_sqlite() {
    whole_pipeline(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pipeline_postgres() {
    whole_pipeline(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_json_and_resubmission_returns_the_existing_run() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let file = telco_csv();
    let (code, out, err) = cli(
        &t,
        &[
            "submit",
            "--dataset",
            "telco-churn",
            file.to_str().unwrap(),
            "--wait",
            "--json",
        ],
    );
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "deployed");
    assert_eq!(v["model"]["name"], "telco-churn");
    assert_eq!(v["model"]["version"], 1);
    assert!(v["model"]["metrics"]["roc_auc"].as_f64().unwrap() > 0.8);
    assert_eq!(v["reasons"], serde_json::json!([]));

    // Same bytes, same spec: the existing run, no second training.
    let again = t.client.submit("telco-churn", &file).await.unwrap();
    assert_eq!(again["pipeline_run"], v["pipeline_run"]);
    assert_eq!(again["created"], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["versions"].as_array().unwrap().len(), 1);

    let (code, out, _) = cli(&t, &["runs", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(v["pipeline_run"].as_str().unwrap()) && out.contains("deployed"),
        "{out}"
    );
    let (code, out, _) = cli(&t, &["models", "show", "telco-churn", "--version", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("gate min_roc_auc passed"), "{out}");
    let (code, out, _) = cli(&t, &["datasets", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("telco-churn"), "{out}");
}

/// A new version is swapped in while requests keep coming: none fails, and once a
/// request saw the new version no later request sees the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_swapped_in_without_dropping_requests() {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let url = format!("{}/v1/models/telco-churn:predict", t.staging());
    let body = serde_json::json!({ "instances": telco_records(3) });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let http = t.http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("request sent");
                assert_eq!(r.status(), 200, "a request failed during the swap");
                let v: Value = r.json().await.unwrap();
                seen.push(v["model_version"].as_u64().unwrap());
            }
            seen
        })
    };
    // A second batch (the Telco rows without the last 500) trains version 2. The
    // champion scored on it saw some of its rows in training, so the comparison
    // favours it; this test is about the swap, not the gate.
    let spec = std::fs::read_to_string(modelbus_testkit::telco_spec()).unwrap();
    let relaxed = t.dir.path().join("relaxed.toml");
    std::fs::write(
        &relaxed,
        spec.replace("max_roc_auc_drop = 0.01", "max_roc_auc_drop = 1.0"),
    )
    .unwrap();
    t.client.apply_spec(&relaxed).await.unwrap();
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let smaller = t.dir.path().join("smaller.csv");
    std::fs::write(&smaller, lines[..lines.len() - 500].join("\n")).unwrap();
    let run = t.submit_and_wait(&smaller).await;
    assert_eq!(run["state"], "deployed", "{run:#}");
    assert_eq!(run["model_version"], 2);
    t.wait_serving("telco-churn", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = load.await.unwrap();
    assert!(seen.len() > 10, "only {} requests", seen.len());
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(seen.last(), Some(&2));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "went back to an old version: {seen:?}"
    );
    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["aliases"]["staging"], 2);
}

/// The same rows re-exported with other line endings are other bytes, hence a new
/// pipeline run, but they train the very same model: the run must still end
/// deployed, on the existing version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_that_lands_on_an_existing_version_still_completes() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let first = t.deploy_telco().await;
    let lf = std::fs::read_to_string(telco_csv())
        .unwrap()
        .replace("\r\n", "\n");
    let file = t.dir.path().join("telco-lf.csv");
    std::fs::write(&file, lf).unwrap();
    let second = t.submit_and_wait(&file).await;
    assert_ne!(second["id"], first["id"], "other bytes, other run");
    assert_eq!(second["state"], "deployed", "{second:#}");
    assert_eq!(
        second["model_version"], 1,
        "same data and seed: the same version"
    );
    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["versions"].as_array().unwrap().len(), 1);
    assert_eq!(model["aliases"]["staging"], 1);
    t.wait_serving("telco-churn", 1).await;
}
