//! Rollouts end to end: a canary moves traffic through its weight steps with
//! each customer pinned to one version by the stable hash of their id, and
//! finishes; a new version that breaches its latency objective is rolled back
//! automatically; an operator's signed rollback returns to an earlier version,
//! while replayed or never-served rollback targets are refused by the deployer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use modelbus_core::config::{RolloutStrategy, TrustedKey};
use modelbus_core::deploy::traffic_bucket;
use modelbus_core::events::{Envelope, RollbackRequested};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{ApprovalPredicate, KeyPair, Statement, StatementKind, new_nonce};
use serde_json::{Value, json};

use crate::harness::{Db, TestPlatform, cli, telco_records};
use modelbus_cli::platform::{self, Service};

/// Applies a spec whose champion comparison cannot block a second version
/// trained on fewer rows, and submits the Telco rows without the last `drop`.
async fn second_version(t: &TestPlatform, drop: usize) -> Value {
    let spec = std::fs::read_to_string(modelbus_testkit::telco_spec()).unwrap();
    let relaxed = t.dir.path().join("relaxed.toml");
    std::fs::write(
        &relaxed,
        spec.replace("max_roc_auc_drop = 0.01", "max_roc_auc_drop = 1.0"),
    )
    .unwrap();
    t.client.apply_spec(&relaxed).await.unwrap();
    let text = std::fs::read_to_string(modelbus_testkit::telco_csv()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let file = t.dir.path().join(format!("without-{drop}.csv"));
    std::fs::write(&file, lines[..lines.len() - drop].join("\n")).unwrap();
    let run = t.submit_and_wait(&file).await;
    assert_eq!(run["state"], "deployed", "{run:#}");
    run
}

/// What staging serves for the model: (version, canary).
async fn staging_state(t: &TestPlatform) -> (u64, Value) {
    let v: Value = t
        .http
        .get(format!("{}/v1/models/telco-churn", t.staging()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["model_version"].as_u64().unwrap_or(0),
        v["canary"].clone(),
    )
}

/// Waits until staging serves `version` alone; returns how long it took.
async fn wait_alone(t: &TestPlatform, version: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        let (v, canary) = staging_state(t).await;
        if v == version && canary.is_null() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "staging never served v{version} alone: {:?}",
        staging_state(t).await
    );
}

async fn predict(t: &TestPlatform, records: &[Value]) -> Value {
    let r = t
        .http
        .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
        .json(&json!({ "instances": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_pins_each_customer_then_finishes_and_an_operator_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let olga = KeyPair::generate().unwrap();
    let olga_file = dir.path().join("olga.pem");
    modelbus_core::signing::write_private(&olga_file, &olga.to_pem().unwrap()).unwrap();
    let olga_pub = modelbus_core::signing::public_key_path(&olga_file);
    std::fs::write(&olga_pub, olga.public().to_pem()).unwrap();
    let t = TestPlatform::start_with(Db::Postgres, |c| {
        c.serving.stats_interval = Duration::from_millis(200);
        c.rollout.staging.strategy = RolloutStrategy::Canary;
        c.rollout.staging.steps = vec![50, 100];
        c.rollout.staging.bake = Duration::from_secs(3);
        c.rollout.staging.max_p99_ms = 60_000.0;
        c.deployer.trusted_keys = vec![TrustedKey {
            id: "olga".into(),
            public_key_file: olga_pub.clone(),
            environments: vec![Environment::Staging],
            role: modelbus_core::auth::Role::Operator,
        }];
    })
    .await;
    let v1 = t.deploy_telco().await;
    assert_eq!(v1["model_version"], 1);
    // Nothing served before: the first version takes all traffic at once.
    assert!(staging_state(&t).await.1.is_null());

    // Keep v2's staging approval as it went over the bus, to republish it later.
    let nats = t.nats().await;
    let mut granted = nats.subscribe("modelbus.approval.granted").await.unwrap();
    nats.flush().await.unwrap();
    let started = Instant::now();
    let run = second_version(&t, 500).await;
    assert_eq!(run["model_version"], 2);
    let v2_grant = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), granted.next())
            .await
            .expect("v2's approval")
            .unwrap();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        if v["data"]["version"] == 2 {
            break msg.payload;
        }
    };
    // The run completes at the first step: half the customers on v2.
    let (version, canary) = staging_state(&t).await;
    assert_eq!(version, 2);
    assert_eq!(canary["traffic_percent"], 50, "{canary}");
    assert_eq!(canary["previous_version"], 1, "{canary}");
    let records = telco_records(40);
    let expected: Vec<u64> = records
        .iter()
        .map(|r| {
            if traffic_bucket(r["customerID"].as_str().unwrap()) < 50 {
                2
            } else {
                1
            }
        })
        .collect();
    assert!(expected.contains(&1) && expected.contains(&2));
    for (rec, want) in records.iter().zip(&expected).take(12) {
        for _ in 0..2 {
            let v = predict(&t, std::slice::from_ref(rec)).await;
            assert_eq!(v["model_version"], *want, "{rec} -> {v}");
        }
    }
    // One request for all of them: each record answered by its own version.
    let v = predict(&t, &records).await;
    assert!(v["model_version"].is_null(), "{v}");
    let got: Vec<u64> = v["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(got, expected);
    // 50% baked: all traffic on v2, still watched; 100% baked: the rollout is over.
    let rest = wait_alone(&t, 2, Duration::from_secs(30)).await;
    let at_full = started.elapsed();
    let kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .unwrap();
    let mut finished = false;
    for _ in 0..300 {
        let entry = kv.get("staging.telco-churn").await.unwrap().unwrap();
        let state: Value = serde_json::from_slice(&entry).unwrap();
        if state.get("previous").is_none() {
            assert_eq!(state["version"], 2);
            assert_eq!(state["traffic_percent"], 100);
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished, "the rollout never finished");
    eprintln!(
        "canary [50, 100] with 3 s bake: submit to 100% {:.1} s (first step {:.1} s), to finished {:.1} s",
        at_full.as_secs_f64(),
        rest.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(predict(&t, &records).await["model_version"], 2);
    let timeline = t
        .client
        .get_json("/v1/models/telco-churn/deployments")
        .await
        .unwrap();
    let details: Vec<String> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["version"] == 2)
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("canary at 50%")),
        "{details:?}"
    );

    // An operator's signed rollback, through the CLI, returns to v1 at once.
    let (code, out, err) = cli(
        &t,
        &["approvers", "add", "--id", "olga", "--public-key-file"]
            .into_iter()
            .chain([olga_pub.to_str().unwrap(), "--role", "operator"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let nats = t.nats().await;
    let mut rolled = nats
        .subscribe("modelbus.deployment.rolled_back")
        .await
        .unwrap();
    let mut refused = nats.subscribe("modelbus.approval.refused").await.unwrap();
    nats.flush().await.unwrap();
    let olga_token = t
        .client
        .post_json(
            "/v1/tokens",
            &json!({ "name": "olga", "roles": "operator" }),
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let signed = Instant::now();
    let (code, out, err) = cli(
        &t,
        &[
            "--token",
            &olga_token,
            "rollback",
            "--env",
            "staging",
            "--key",
            olga_file.to_str().unwrap(),
            "--reason",
            "v2 misbehaves",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("to v1"), "{out}");
    wait_alone(&t, 1, Duration::from_secs(20)).await;
    eprintln!(
        "signed rollback: CLI start to staging serving v1 alone {:.0} ms",
        signed.elapsed().as_secs_f64() * 1000.0
    );
    let msg = tokio::time::timeout(Duration::from_secs(10), rolled.next())
        .await
        .unwrap()
        .unwrap();
    let e: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(e["data"]["automatic"], false, "{e}");
    assert_eq!(e["data"]["operator"], "olga", "{e}");
    assert_eq!(e["data"]["from_version"], 2, "{e}");
    assert_eq!(e["data"]["to_version"], 1, "{e}");
    assert_eq!(e["data"]["reason"], "v2 misbehaves", "{e}");

    // The same signed rollback replayed on the bus, and a properly signed one
    // for a version staging never served: both refused by the deployer.
    let m = t.client.model("telco-churn").await.unwrap();
    let digest_of = |v: u64| {
        Sha256Digest::parse(
            m["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["version"] == v)
                .unwrap()["model_sha256"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    let bus = modelbus_core::bus::Bus::connect(t.nats.url(), "test", t.config.bus.clone())
        .await
        .unwrap();
    let rollback = |version: u32, digest: Sha256Digest, nonce: String| {
        let now = time::OffsetDateTime::now_utc();
        let st = Statement::of_kind(
            StatementKind::Rollback,
            &digest,
            ApprovalPredicate {
                model: ModelName::parse("telco-churn").unwrap(),
                version,
                environment: Environment::Staging,
                approver: "olga".into(),
                issued_at: now,
                expires_at: now + time::Duration::hours(1),
                nonce,
                comment: String::new(),
            },
        );
        Envelope::new(
            "/attacker",
            &new_nonce(),
            RollbackRequested {
                environment: Environment::Staging,
                model: ModelName::parse("telco-churn").unwrap(),
                to_version: version,
                to_model_sha256: digest,
                operator: "olga".into(),
                envelope: olga.sign_statement(&st),
            },
        )
    };
    let used = t
        .client
        .get_json("/v1/models/telco-churn/versions/1/approvals")
        .await
        .unwrap()["decisions"][0]["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    for (what, event, reason) in [
        (
            "replayed nonce",
            rollback(1, digest_of(1), used),
            "already used",
        ),
        (
            "never served",
            rollback(9, Sha256Digest::of(b"never deployed"), new_nonce()),
            "has not been deployed",
        ),
    ] {
        bus.publish(&event).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(15), refused.next())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        let text = v["data"]["reason"].as_str().unwrap();
        assert!(text.contains(reason), "{what}: {text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(staging_state(&t).await, (1, Value::Null), "nothing changed");

    // v2's approval, republished after the rollback (as a redelivery, or a
    // republish past the duplicate window, would bring it): its nonce was
    // applied before, so it must not undo the operator's rollback. Before the
    // fix its `pending:` claim let it write v2 back.
    let staging_kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .unwrap();
    let before = staging_kv
        .entry("staging.telco-churn")
        .await
        .unwrap()
        .unwrap()
        .revision;
    nats.publish("modelbus.approval.granted", v2_grant)
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let ignored = t
        .metric_appears("modelbus_deployer_redeliveries_ignored_total 1")
        .await;
    assert!(
        ignored,
        "the republished approval was not recognised as applied"
    );
    assert_eq!(
        staging_state(&t).await,
        (1, Value::Null),
        "the rollback was undone"
    );
    let after = staging_kv
        .entry("staging.telco-churn")
        .await
        .unwrap()
        .unwrap()
        .revision;
    assert_eq!(after, before, "the staging state was rewritten");

    // `modelbus deployments` shows the canary steps and the rollback.
    let (code, out, err) = cli(
        &t,
        &["deployments", "--model", "telco-churn", "--env", "staging"],
    );
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "canary at 50% of traffic",
        "rolled_back",
        "back to v1: v2 misbehaves",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    // The registry records it all: alias, timeline, audit; the deployer counts it.
    let m = t.client.model("telco-churn").await.unwrap();
    assert_eq!(m["aliases"]["staging"], 1, "{m}");
    let audit = t.client.audit_all().await.unwrap();
    let rb = audit
        .iter()
        .find(|e| e.action == "deployment.rolled_back")
        .expect("the rollback is audited");
    assert_eq!(rb.actor, "olga");
    assert!(audit.iter().any(|e| e.action == "rollback.accepted"));
    assert!(
        audit
            .iter()
            .filter(|e| e.action == "approval.refused")
            .count()
            >= 2
    );
    let metrics = t.metrics().await;
    assert!(
        metrics.contains(
            "modelbus_deployer_rollbacks_total{environment=\"staging\",trigger=\"manual\"} 1"
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("modelbus_deployer_r"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("modelbus_deployer_refusals_total{reason=\"replayed_nonce\"}"));
    assert!(metrics.contains("modelbus_deployer_refusals_total{reason=\"not_served_before\"}"));

    // The evidence of v1 holds the rollback, and verifies offline with the keys
    // the auditor holds (olga's and the registry's automation key).
    let automation_pub = modelbus_core::signing::public_key_path(&t.config.automation_key_path());
    let out_dir = dir.path().join("evidence-v1");
    let (code, out, err) = cli(
        &t,
        &[
            "evidence",
            "--model",
            "telco-churn",
            "--version",
            "1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // The registry kept the bundle as an artifact and audited who exported it.
    let kept = out
        .split("artifact sha256:")
        .nth(1)
        .expect("the artifact digest is printed")
        .trim()
        .to_string();
    let exported = t
        .client
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.action == "evidence.exported")
        .expect("the export is audited");
    assert_eq!(
        (exported.actor.as_str(), exported.subject.as_str()),
        ("admin", "model/telco-churn/v1")
    );
    assert_eq!(exported.detail["sha256"], kept.as_str());
    // The same state exported again is the same bundle: no new artifact, no
    // new audit entry.
    let again_dir = dir.path().join("evidence-v1-again");
    let (code, out, err) = cli(
        &t,
        &[
            "evidence",
            "--model",
            "telco-churn",
            "--version",
            "1",
            "--out",
            again_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&kept),
        "a second export made another bundle: {out}"
    );
    assert_eq!(
        std::fs::read(again_dir.join("evidence.json")).unwrap(),
        std::fs::read(out_dir.join("evidence.json")).unwrap()
    );
    let exports = t
        .client
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "evidence.exported")
        .count();
    assert_eq!(exports, 1, "an identical export was audited again");
    let stored = t
        .client
        .get_json(&format!("/v1/reports/{kept}"))
        .await
        .unwrap();
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("evidence.json")).unwrap())
            .unwrap();
    assert_eq!(stored, written);
    let (code, out, err) = cli(
        &t,
        &[
            "evidence",
            "verify",
            out_dir.to_str().unwrap(),
            "--trusted-key",
            olga_pub.to_str().unwrap(),
            "--trusted-key",
            automation_pub.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollback by olga"), "{out}");
}

/// A platform whose staging rollouts are canaries [50, 100] with a 20 s bake,
/// judged on at least 5 requests with the objectives `objectives` sets, serving
/// v1 and, at the first step, a second version trained without the last
/// `drop` rows; with a subscription to `deployment.rolled_back`.
async fn watched_canary(
    objectives: impl FnOnce(&mut modelbus_core::config::RolloutPolicy),
    drop: usize,
) -> (TestPlatform, async_nats::Subscriber) {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.stats_interval = Duration::from_millis(200);
        c.rollout.staging.strategy = RolloutStrategy::Canary;
        c.rollout.staging.steps = vec![50, 100];
        c.rollout.staging.bake = Duration::from_secs(20);
        c.rollout.staging.min_requests = 5;
        objectives(&mut c.rollout.staging);
    })
    .await;
    t.deploy_telco().await;
    let nats = t.nats().await;
    let rolled = nats
        .subscribe("modelbus.deployment.rolled_back")
        .await
        .unwrap();
    nats.flush().await.unwrap();
    second_version(&t, drop).await;
    assert_eq!(staging_state(&t).await.0, 2);
    (t, rolled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_breaches_its_latency_objective_is_rolled_back_automatically() {
    // An objective no real request can meet: the new version breaches it with
    // its first measured requests.
    let (t, mut rolled) = watched_canary(|r| r.max_p99_ms = 0.000_001, 700).await;
    // Traffic for every customer: half of it reaches v2, which is too slow.
    let records = telco_records(30);
    let load = Instant::now();
    let mut served_v2 = 0;
    let event = loop {
        assert!(
            load.elapsed() < Duration::from_secs(30),
            "no automatic rollback"
        );
        let v = predict(&t, &records[..10]).await;
        served_v2 += v["model_versions"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| **x == 2).count());
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), rolled.next()).await
        {
            break serde_json::from_slice::<Value>(&msg.payload).unwrap();
        }
    };
    eprintln!(
        "automatic rollback: first request to rolled_back {:.0} ms",
        load.elapsed().as_secs_f64() * 1000.0
    );
    assert!(served_v2 > 0);
    let d = &event["data"];
    assert_eq!(d["automatic"], true, "{event}");
    assert_eq!(d["from_version"], 2);
    assert_eq!(d["to_version"], 1);
    assert!(
        d["reason"].as_str().unwrap().contains("p99 latency"),
        "{event}"
    );
    wait_alone(&t, 1, Duration::from_secs(10)).await;
    assert_eq!(predict(&t, &records).await["model_version"], 1);
    let mut alias = Value::Null;
    for _ in 0..100 {
        alias = t.client.model("telco-churn").await.unwrap()["aliases"]["staging"].clone();
        if alias == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alias, 1);
    let audit = t.client.audit_all().await.unwrap();
    let rb = audit
        .iter()
        .find(|e| e.action == "deployment.rolled_back")
        .expect("audited");
    assert_eq!(rb.actor, "deployer");
    assert_eq!(rb.detail["automatic"], true);
    let rollbacks = crate::harness::series_value(
        &t.metrics().await,
        "modelbus_deployer_rollbacks_total{environment=\"staging\",trigger=\"automatic\"}",
    );
    assert!(rollbacks.is_some_and(|n| n >= 1.0), "{rollbacks:?}");
}

/// The staging desired state as JSON.
async fn staging_kv(t: &TestPlatform) -> Value {
    let kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .unwrap();
    let entry = kv.get("staging.telco-churn").await.unwrap().unwrap();
    serde_json::from_slice(&entry).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_canary_resumes_when_the_deployer_restarts() {
    let bake = Duration::from_secs(3);
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::Deployer)
        .collect();
    let t = TestPlatform::start_services(
        Db::Sqlite,
        |c| {
            c.serving.stats_interval = Duration::from_millis(200);
            c.rollout.staging.strategy = RolloutStrategy::Canary;
            c.rollout.staging.steps = vec![20, 100];
            c.rollout.staging.bake = bake;
        },
        &others,
    )
    .await;
    let deployer = platform::start((*t.config).clone(), &[Service::Deployer])
        .await
        .unwrap();
    deployer.wait_ready(Duration::from_secs(30)).await.unwrap();
    t.deploy_telco().await;
    second_version(&t, 400).await;
    let state = staging_kv(&t).await;
    assert_eq!(
        (state["version"].as_u64(), state["traffic_percent"].as_u64()),
        (Some(2), Some(20))
    );
    // The deployer stops in the middle of the first step: nothing moves.
    deployer.stop().await.unwrap();
    tokio::time::sleep(bake + Duration::from_millis(500)).await;
    let held = staging_kv(&t).await;
    assert_eq!(held["traffic_percent"], 20, "{held}");
    assert_eq!(held["previous"]["version"], 1, "{held}");
    assert_eq!(staging_state(&t).await.1["traffic_percent"], 20);
    // A new deployer resumes the step (its bake starts again), then finishes.
    let restarted = Instant::now();
    let deployer = platform::start((*t.config).clone(), &[Service::Deployer])
        .await
        .unwrap();
    let mut last = Value::Null;
    for _ in 0..200 {
        last = staging_kv(&t).await;
        if last.get("previous").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.get("previous").is_none(), "never finished: {last}");
    assert_eq!(last["version"], 2);
    // Two bakes: the resumed 20% step and the 100% step.
    assert!(restarted.elapsed() >= bake * 2, "{:?}", restarted.elapsed());
    wait_alone(&t, 2, Duration::from_secs(5)).await;
    deployer.stop().await.unwrap();
}

/// The governance bench (the figures of the closing notes) runs end to end and
/// prints its medians.
#[test]
fn the_governance_bench_runs_and_prints_its_medians() {
    let out = std::process::Command::new(crate::harness::modelbus_bin())
        .args(["bench", "governance", "--runs", "1", "--bake", "400ms"])
        .current_dir(modelbus_testkit::repo_root())
        .env_remove("NATS_URL")
        .env_remove("MODELBUS_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "run 1: v2 sign → production",
        "second signature → new version answering in production, median of 1:",
        "signed rollback → previous version answering alone, median:",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

/// The error-rate objective, end to end: while a new version serves half the
/// customers, the online feature store's records of some customers are
/// corrupted, so entity-only requests fail on the server side (HTTP 500) for
/// whichever version answers them. The new version's error rate breaches its
/// objective and the deployer returns to the previous version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_requests_is_rolled_back_on_its_error_rate() {
    let (t, mut rolled) = watched_canary(
        |r| {
            r.max_error_rate = 0.2;
            r.max_p99_ms = 60_000.0;
        },
        600,
    )
    .await;
    let nats = t.nats().await;
    // Customers that v2 answers (their bucket is below 50), with their online
    // records made unreadable.
    let online = async_nats::jetstream::new(nats.clone())
        .get_key_value(modelbus_core::online::ONLINE_BUCKET)
        .await
        .unwrap();
    let ids: Vec<String> = telco_records(200)
        .iter()
        .map(|r| r["customerID"].as_str().unwrap().to_string())
        .filter(|id| traffic_bucket(id) < 50)
        .take(10)
        .collect();
    assert_eq!(ids.len(), 10);
    for id in &ids {
        online
            .put(
                modelbus_core::online::entity_key("telco-churn", id),
                "{not json".into(),
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    let event = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "no rollback");
        for id in &ids {
            let r = t
                .http
                .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
                .json(&json!({ "instances": [{ "customerID": id }] }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 500, "{}", r.text().await.unwrap());
        }
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), rolled.next()).await
        {
            break serde_json::from_slice::<Value>(&msg.payload).unwrap();
        }
    };
    eprintln!(
        "automatic rollback on error rate: first failing request to rolled_back {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let d = &event["data"];
    assert_eq!(d["automatic"], true, "{event}");
    assert_eq!(
        (d["from_version"].as_u64(), d["to_version"].as_u64()),
        (Some(2), Some(1))
    );
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.starts_with("error rate 1.0000"), "{reason}");
    assert!(reason.contains("above the objective 0.2"), "{reason}");
    wait_alone(&t, 1, Duration::from_secs(10)).await;
}
