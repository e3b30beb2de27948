//! `--json` prints the registry's answer itself: the CLI decodes answers into
//! the registry's record types, and what it prints back must be the answer as
//! sent, pretty-printed with its keys sorted, byte for byte.

use serde_json::{Value, json};

use crate::harness::{Db, TestPlatform, cli};

/// The registry's answer to `GET path`, as `--json` has always printed it.
async fn pretty(t: &TestPlatform, path: &str) -> (Value, String) {
    let v = t.client.get_json(path).await.unwrap();
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    (v, text)
}

fn stdout_of(t: &TestPlatform, args: &[&str]) -> String {
    let (code, out, err) = cli(t, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_the_registrys_answer_pretty_printed() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let run = t.deploy_telco().await;
    let id = run["id"].as_str().unwrap();
    // Someone on the roster, so the list has a record to print.
    let key = t.dir.path().join("alice.pem");
    let (code, _, err) = cli(
        &t,
        &["keygen", "--id", "alice", "--out", key.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let public = t.dir.path().join("alice.pem.pub");
    let (code, _, err) = cli(
        &t,
        &[
            "approvers",
            "add",
            "--id",
            "alice",
            "--public-key-file",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");

    for (args, path) in [
        (
            vec!["models", "show", "telco-churn", "--json"],
            "/v1/models/telco-churn",
        ),
        (
            vec!["models", "show", "telco-churn", "--version", "1", "--json"],
            "/v1/models/telco-churn/versions/1",
        ),
        (
            vec!["deployments", "--model", "telco-churn", "--json"],
            "/v1/models/telco-churn/deployments",
        ),
        (vec!["runs", "list", "--json"], "/v1/pipeline-runs?limit=20"),
        (vec!["tokens", "list", "--json"], "/v1/tokens"),
        (vec!["approvers", "list", "--json"], "/v1/approvers"),
    ] {
        let (_, expected) = pretty(&t, path).await;
        assert_eq!(stdout_of(&t, &args), expected, "{args:?}");
    }

    // Lists the CLI pages through print the items under their key.
    for (args, path, key) in [
        (vec!["models", "list", "--json"], "/v1/models", "models"),
        (
            vec!["datasets", "list", "--json"],
            "/v1/datasets",
            "datasets",
        ),
    ] {
        let (v, _) = pretty(&t, path).await;
        let expected = serde_json::to_string_pretty(&json!({ key: v[key] })).unwrap() + "\n";
        assert_eq!(stdout_of(&t, &args), expected, "{args:?}");
    }

    // A run with its training run.
    let (mut v, _) = pretty(&t, &format!("/v1/pipeline-runs/{id}")).await;
    let version = t.client.model_version("telco-churn", 1).await.unwrap();
    let (training, _) = pretty(
        &t,
        &format!("/v1/runs/{}", version["run_id"].as_str().unwrap()),
    )
    .await;
    v["training_run"] = training;
    let expected = serde_json::to_string_pretty(&v).unwrap() + "\n";
    assert_eq!(stdout_of(&t, &["runs", "show", id, "--json"]), expected);
}
