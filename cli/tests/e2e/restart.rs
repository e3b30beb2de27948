//! `modelbus up` as a real process: restarting on the same state dir keeps
//! everything, and a kill during training ends in exactly one version.

use std::path::Path;
use std::time::Duration;

use modelbus_testkit::{TestNats, repo_root, telco_csv};
use serde_json::Value;

use crate::harness::{Up, ports};

/// URL of the embedded nats-server `modelbus up` started for a state dir.
fn nats_url(state: &Path) -> String {
    let log = std::fs::read_to_string(state.join("nats/nats-server.log")).unwrap();
    let port = log
        .lines()
        .filter_map(|l| l.split("Listening for client connections on ").nth(1))
        .next_back()
        .and_then(|a| a.trim().rsplit(':').next())
        .unwrap()
        .to_string();
    format!("nats://127.0.0.1:{port}")
}

/// A connection to that server as its local administrator (the password file
/// in the state dir); anonymous clients are refused.
async fn nats_admin(state: &Path) -> async_nats::Client {
    let url = nats_url(state);
    let anonymous = async_nats::connect(&url).await;
    assert!(
        anonymous.is_err(),
        "the embedded nats-server let an anonymous client in"
    );
    let password = std::fs::read_to_string(
        state
            .join("nats")
            .join(modelbus_core::nats_server::LOCAL_ADMIN_PASSWORD_FILE),
    )
    .unwrap();
    async_nats::ConnectOptions::with_user_and_password(
        modelbus_core::nats_server::LOCAL_ADMIN.into(),
        password,
    )
    .connect(&url)
    .await
    .unwrap()
}

async fn predict(up: &Up) -> Value {
    let r = modelbus_core::http::client()
        .unwrap()
        .post(format!("{}/v1/models/telco-churn:predict", up.staging()))
        .json(&serde_json::json!({ "instances": crate::harness::telco_records(5) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn wait_served(up: &Up, version: u64) {
    for _ in 0..400 {
        if let Ok(r) = modelbus_core::http::client()
            .unwrap()
            .get(format!("{}/v1/models/telco-churn", up.staging()))
            .send()
            .await
            && r.status() == 200
            && r.json::<Value>()
                .await
                .map(|v| v["model_version"].as_u64() == Some(version))
                .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("staging does not serve v{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_up_on_the_same_state_dir_keeps_runs_versions_aliases_and_the_served_model() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("up.log");
    let datasets = repo_root().join("config/datasets");
    let p = ports();
    // No NATS_URL: the embedded nats-server keeps its store under the state dir.
    let mut a = Up::start(&state, &p, None, &datasets, &log);
    a.ready(&log).await;
    let resp = a
        .client()
        .submit("telco-churn", &telco_csv())
        .await
        .unwrap();
    let run_id = resp["pipeline_run"].as_str().unwrap().to_string();
    let run = a
        .client()
        .wait_run(&run_id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(run["state"], "deployed", "{run:#}");
    // The state dir and what holds secrets in it are the owner's only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700, "state dir");
        assert_eq!(mode(&state.join("tokens")), 0o700, "tokens dir");
        assert_eq!(mode(&state.join("admin.token")), 0o600, "admin token");
        for s in modelbus_core::auth::ServiceIdentity::ALL {
            let f = state.join("tokens").join(format!("{}.token", s.name()));
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    wait_served(&a, 1).await;
    let before = predict(&a).await;
    // One trace follows the batch across services: every event of the run carries
    // the run id and a traceparent of the same trace.
    let js = async_nats::jetstream::new(nats_admin(&state).await);
    let stream = js
        .get_stream(modelbus_core::bus::EVENTS_STREAM)
        .await
        .unwrap();
    let mut trace_ids = std::collections::BTreeSet::new();
    for subject in [
        "data.batch.submitted",
        "data.batch.validated",
        "features.ready",
        "model.trained",
        "approval.granted",
        "deployment.completed",
    ] {
        let m = stream
            .get_last_raw_message_by_subject(&format!("modelbus.{subject}"))
            .await
            .unwrap();
        let e: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(e["pipelinerun"], run_id.as_str(), "{subject}");
        let tp = e["traceparent"]
            .as_str()
            .unwrap_or_else(|| panic!("{subject} has no traceparent"));
        trace_ids.insert(tp.split('-').nth(1).unwrap().to_string());
        let header = m.headers.get("traceparent").map(|h| h.to_string());
        assert_eq!(header.as_deref(), Some(tp), "{subject}: traceparent header");
    }
    assert_eq!(
        trace_ids.len(),
        1,
        "one trace across services: {trace_ids:?}"
    );
    a.terminate();

    let mut b = Up::start(&state, &p, None, &datasets, &log);
    b.ready(&log).await;
    let c = b.client();
    let run = c.pipeline_run(&run_id).await.unwrap();
    assert_eq!(run["state"], "deployed");
    assert_eq!(run["stages"].as_array().unwrap().len(), 5);
    let model = c.model("telco-churn").await.unwrap();
    assert_eq!(model["versions"].as_array().unwrap().len(), 1);
    assert_eq!(model["aliases"]["staging"], 1);
    wait_served(&b, 1).await;
    assert_eq!(
        crate::harness::answers(predict(&b).await),
        crate::harness::answers(before)
    );
    // The restarted platform still works: the same bytes map to the same run.
    let again = c.submit("telco-churn", &telco_csv()).await.unwrap();
    assert_eq!(again["pipeline_run"], run_id.as_str());
    b.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_up_during_training_finishes_the_run_exactly_once() {
    let nats = TestNats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("up.log");
    // The Telco spec with a training long enough to be killed in the middle of.
    let datasets = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    let spec =
        std::fs::read_to_string(repo_root().join("config/datasets/telco-churn.toml")).unwrap();
    let start = spec.find("[model]").unwrap();
    let end = spec.find("[evaluation]").unwrap();
    let slow = format!(
        "{}[model]\nalgorithm = \"gbdt\"\n\n[model.gbdt]\nnum_iterations = 4000\nlearning_rate = 0.005\nnum_leaves = 63\nmin_data_in_leaf = 5\nearly_stopping_rounds = 0\n\n{}",
        &spec[..start],
        spec[end..].replace("max_ece = 0.05", "max_ece = 1.0")
    );
    std::fs::write(datasets.join("telco-churn.toml"), slow).unwrap();
    let p = ports();
    let mut a = Up::start(&state, &p, Some(nats.url()), &datasets, &log);
    a.ready(&log).await;
    let resp = a
        .client()
        .submit("telco-churn", &telco_csv())
        .await
        .unwrap();
    let run_id = resp["pipeline_run"].as_str().unwrap().to_string();
    // Wait until training has started, then kill -9 in the middle of it.
    let mut training = false;
    for _ in 0..400 {
        let r = a.client().pipeline_run(&run_id).await.unwrap();
        if r["state"] == "features_ready" {
            training = true;
            break;
        }
        assert_ne!(
            r["state"], "deployed",
            "training finished before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(training, "training never started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let registry = a.registry();
    a.kill();
    assert!(
        modelbus_core::http::client()
            .unwrap()
            .get(format!("{registry}/readyz"))
            .send()
            .await
            .is_err(),
        "the process is gone"
    );

    let mut b = Up::start(&state, &p, Some(nats.url()), &datasets, &log);
    b.ready(&log).await;
    let c = b.client();
    let before = c.pipeline_run(&run_id).await.unwrap();
    assert_eq!(
        before["state"], "features_ready",
        "the kill interrupted training: {before:#}"
    );
    let run = c.wait_run(&run_id, Duration::from_secs(180)).await.unwrap();
    assert_eq!(run["state"], "deployed", "{run:#}");
    let model = c.model("telco-churn").await.unwrap();
    assert_eq!(
        model["versions"].as_array().unwrap().len(),
        1,
        "exactly one version: {model:#}"
    );
    assert_eq!(model["aliases"]["staging"], 1);
    let training = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "training")
        .count();
    assert_eq!(training, 1);
    wait_served(&b, 1).await;
    b.terminate();
}
