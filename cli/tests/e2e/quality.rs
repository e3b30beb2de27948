//! Data and model quality end to end: warnings, data docs, evaluation reports,
//! champion/challenger, policy decisions, online features, and the CLI tools that
//! work without the pipeline.

use std::time::Duration;

use futures::StreamExt;
use modelbus_testkit::{repo_root, telco_csv, telco_spec};
use serde_json::Value;

use crate::harness::{Db, TestPlatform, cli, telco_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_do_not_reject_but_are_reported_counted_and_notified() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let nats = t.nats().await;
    let mut notes = nats
        .subscribe("modelbus.notification.raised")
        .await
        .unwrap();
    nats.flush().await.unwrap();
    // Monthly charges raised by 40: their mean leaves [50, 80] (a warning), nothing else fails.
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for l in lines.iter_mut().skip(1) {
        let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
        let m: f64 = f[18].parse().unwrap();
        f[18] = format!("{:.2}", m + 40.0);
        if let Ok(total) = f[19].parse::<f64>() {
            f[19] = format!("{:.2}", total + 40.0 * (1.0 + f[5].parse::<f64>().unwrap()));
        }
        *l = f.join(",");
    }
    let file = t.dir.path().join("pricier.csv");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let run = t.submit_and_wait(&file).await;
    assert_ne!(
        run["state"], "rejected",
        "a warning must not reject: {run:#}"
    );
    let msg = tokio::time::timeout(Duration::from_secs(10), notes.next())
        .await
        .expect("a notification")
        .unwrap();
    let n: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(n["data"]["kind"], "validation_warning");
    assert!(
        n["data"]["details"]
            .to_string()
            .contains("expect_column_mean_to_be_between"),
        "{n:#}"
    );
    assert_eq!(n["pipelinerun"], run["id"]);
    let metrics = t.metrics().await;
    assert!(
        metrics.contains("modelbus_ingest_validation_warnings_total{dataset=\"telco-churn\"} 1"),
        "{metrics}"
    );
    // The data docs show it.
    let html = t
        .http
        .get(format!(
            "{}/v1/batches/{}/report.html",
            t.config.registry_http_url(),
            run["batch_sha256"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = html.text().await.unwrap();
    assert!(
        body.contains("expect_column_mean_to_be_between") && body.contains("warning"),
        "HTML lacks the warning"
    );
    let missing = t
        .http
        .get(format!(
            "{}/v1/batches/{}/report.html",
            t.config.registry_http_url(),
            "0".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_carry_an_evaluation_report_a_policy_decision_and_a_champion_comparison() {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let base = t.config.registry_http_url();
    let v1: Value = t
        .http
        .get(format!(
            "{base}/v1/models/telco-churn/versions/1/evaluation"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ev = &v1["evaluation"];
    assert!(ev["roc_auc_interval"]["low"].as_f64().unwrap() < ev["roc_auc"].as_f64().unwrap());
    assert!(ev["ece"].as_f64().unwrap() < 0.05);
    assert_eq!(ev["reliability"].as_array().unwrap().len(), 10);
    let slices: Vec<&str> = ev["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["column"].as_str().unwrap())
        .collect();
    assert!(
        slices.contains(&"Contract") && slices.contains(&"InternetService"),
        "{slices:?}"
    );
    assert!(
        v1["comparison"].is_null(),
        "the first version has no champion"
    );
    let html = t
        .http
        .get(format!(
            "{base}/v1/models/telco-churn/versions/1/evaluation.html"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().await.unwrap().contains("Month-to-month"));
    let version = t.client.model_version("telco-churn", 1).await.unwrap();
    assert_eq!(version["decision"]["allow"], true);
    assert_eq!(
        version["decision"]["policy_digest"].as_str().unwrap().len(),
        64
    );
    let gates: Vec<&str> = version["gate_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    for g in [
        "min_roc_auc",
        "max_ece",
        "validation",
        "slice_min_roc_auc[Contract=Month-to-month]",
    ] {
        assert!(gates.contains(&g), "{g} missing from {gates:?}");
    }
    // A second version (another seed) is compared with the champion on the same holdout.
    let spec = std::fs::read_to_string(telco_spec()).unwrap();
    let other = t.dir.path().join("seed7.toml");
    std::fs::write(
        &other,
        spec.replace("seed = 42", "seed = 7")
            .replace("max_roc_auc_drop = 0.01", "max_roc_auc_drop = 1.0"),
    )
    .unwrap();
    t.client.apply_spec(&other).await.unwrap();
    let run = t.submit_and_wait(&telco_csv()).await;
    assert_eq!(run["model_version"], 2, "{run:#}");
    let v2: Value = t
        .http
        .get(format!(
            "{base}/v1/models/telco-churn/versions/2/evaluation"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &v2["comparison"];
    assert_eq!(c["champion_version"], 1, "{v2:#}");
    let delta = c["delta_roc_auc"].as_f64().unwrap();
    let champion_auc = c["champion"]["roc_auc"].as_f64().unwrap();
    assert!((v2["evaluation"]["roc_auc"].as_f64().unwrap() - champion_auc - delta).abs() < 1e-9);
    let (code, out, _) = cli(&t, &["models", "show", "telco-churn", "--version", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("max_roc_auc_drop"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_looks_up_entities_in_the_online_store() {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let url = format!("{}/v1/models/telco-churn:predict", t.staging());
    let full = telco_records(1);
    let by_value: Value = t
        .http
        .post(&url)
        .json(&serde_json::json!({ "instances": full }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_id = t
        .http
        .post(&url)
        .json(&serde_json::json!({ "instances": [{ "customerID": full[0]["customerID"] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_id.status(), 200);
    let by_id: Value = by_id.json().await.unwrap();
    for key in ["probability", "label"] {
        assert_eq!(
            by_id["predictions"][0][key], by_value["predictions"][0][key],
            "the stored record is the same row"
        );
    }
    assert_ne!(
        by_id["predictions"][0]["prediction_id"], by_value["predictions"][0]["prediction_id"],
        "every prediction has its own id"
    );
    // A value in the request overrides the stored one.
    let overridden: Value = t
        .http
        .post(&url)
        .json(&serde_json::json!({ "instances": [{ "customerID": full[0]["customerID"], "Contract": "Two year" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(
        overridden["predictions"][0]["probability"],
        by_value["predictions"][0]["probability"]
    );
    let unknown = t
        .http
        .post(&url)
        .json(&serde_json::json!({ "instances": [{ "customerID": "0000-NOONE" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("0000-NOONE"),
        "{body}"
    );
    // A missing optional field still answers.
    let mut partial = telco_records(1);
    partial[0].as_object_mut().unwrap().remove("TotalCharges");
    let r = t
        .http
        .post(&url)
        .json(&serde_json::json!({ "instances": partial }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_import_ge_work_from_the_cli() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let csv = telco_csv();
    let (code, out, err) = cli(
        &t,
        &[
            "validate",
            "--dataset",
            "telco-churn",
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("PASSED"), "{out}");
    let bad = t.dir.path().join("bad.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replacen(",Female,", ",Femme,", 1);
    std::fs::write(&bad, text).unwrap();
    let html = t.dir.path().join("docs.html");
    let (code, out, _) = cli(
        &t,
        &[
            "validate",
            "--spec",
            telco_spec().to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["success"], false);
    assert!(std::fs::read_to_string(&html).unwrap().contains("Femme"));

    // The bench suite (43 GE expectations) imports cleanly and registers version 2.
    let suite = repo_root().join("bench/telco_suite.json");
    let (code, out, err) = cli(
        &t,
        &[
            "datasets",
            "import-ge",
            suite.to_str().unwrap(),
            "--dataset",
            "telco-churn",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("version 2"), "{out}");
    assert!(err.contains("43 expectation(s) mapped"), "{err}");
    // A suite with an expectation modelbus cannot map is refused, naming it.
    let partial = t.dir.path().join("partial.json");
    std::fs::write(
        &partial,
        r#"{"name": "s", "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "gender"}},
            {"type": "expect_column_values_to_be_dateutil_parseable", "kwargs": {"column": "tenure"}}
        ]}"#,
    )
    .unwrap();
    let (code, _out, err) = cli(
        &t,
        &[
            "datasets",
            "import-ge",
            partial.to_str().unwrap(),
            "--dataset",
            "telco-churn",
        ],
    );
    assert_eq!(code, 3);
    assert!(
        err.contains("expect_column_values_to_be_dateutil_parseable") && err.contains("NOT MAPPED"),
        "{err}"
    );
    let ds = t.client.datasets().await.unwrap();
    assert_eq!(
        ds["datasets"][0]["latest_version"], 2,
        "the refused import registered nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_at_apply_with_file_line_and_reason() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let spec = std::fs::read_to_string(telco_spec()).unwrap();
    let cases = [
        (
            "TotalCharges / (tenure + 1)",
            "TotalCharges / (tenure + ",
            "expected",
        ),
        (
            "TotalCharges / (tenure + 1)",
            "TotalCharges / (tenur + 1)",
            "unknown column \"tenur\"",
        ),
        ("'^[0-9]{4}-[A-Z]{5}$'", "'^[0-9]{4-[A-Z]{5}$'", "regex"),
        (
            "slices = [\"Contract\", \"InternetService\"]",
            "slices = [\"Contrat\", \"InternetService\"]",
            "Contrat",
        ),
    ];
    for (from, to, reason) in cases {
        assert!(spec.contains(from), "{from}");
        let text = spec.replacen(from, to, 1);
        let line = text.lines().position(|l| l.contains(to)).unwrap() + 1;
        let file = t.dir.path().join("broken.toml");
        std::fs::write(&file, &text).unwrap();
        let (code, _out, err) = cli(&t, &["datasets", "apply", file.to_str().unwrap()]);
        assert_eq!(code, 3, "{to}: {err}");
        assert!(
            err.contains("broken.toml") && err.contains(&format!(":{line}:")),
            "{to}: line {line}: {err}"
        );
        assert!(err.contains(reason), "{to}: {err}");
    }
    let (code, out, _) = cli(&t, &["policies", "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS modelbus.promotion_test.test_a_good_model_is_allowed"),
        "{out}"
    );
}
