//! Forged or mismatched approvals are refused by the deployer: logged, counted,
//! published as `approval.refused`, and the deployed model is unchanged.

use std::time::Duration;

use futures::StreamExt;
use modelbus_core::events::{ApprovalGranted, Envelope};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{ApprovalPredicate, KeyPair, Statement, new_nonce};
use serde_json::Value;

use crate::harness::{Db, TestPlatform};

fn predicate(version: u32, env: Environment, ttl: time::Duration) -> ApprovalPredicate {
    let now = time::OffsetDateTime::now_utc();
    ApprovalPredicate {
        model: ModelName::parse("telco-churn").unwrap(),
        version,
        environment: env,
        approver: "registry-automation".into(),
        issued_at: now - time::Duration::minutes(1),
        expires_at: now + ttl,
        nonce: new_nonce(),
        comment: String::new(),
    }
}

async fn publish(t: &TestPlatform, g: ApprovalGranted) {
    let bus = modelbus_core::bus::Bus::connect(t.nats.url(), "test", t.config.bus.clone())
        .await
        .unwrap();
    let e = Envelope::new("/attacker", &new_nonce(), g);
    bus.publish(&e).await.unwrap();
}

/// Publishes an approval and returns the deployer's refusal reason.
async fn refused(t: &TestPlatform, g: ApprovalGranted) -> String {
    let nats = t.nats().await;
    let mut sub = nats.subscribe("modelbus.approval.refused").await.unwrap();
    nats.flush().await.unwrap();
    publish(t, g).await;
    let msg = tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("a refusal")
        .unwrap();
    let v: Value = serde_json::from_slice(&msg.payload).unwrap();
    v["data"]["reason"].as_str().unwrap().to_string()
}

/// A platform with Telco v1 in staging, what the tests compare against and the
/// registry's automation key (which the deployer trusts for staging).
struct Deployed {
    t: TestPlatform,
    digest: Sha256Digest,
    kv: async_nats::jetstream::kv::Store,
    before: async_nats::jetstream::kv::Entry,
    automation: KeyPair,
}

async fn deployed() -> Deployed {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let digest = Sha256Digest::parse(
        t.client.model("telco-churn").await.unwrap()["versions"][0]["model_sha256"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .unwrap();
    let before = kv.entry("staging.telco-churn").await.unwrap().unwrap();
    let automation = KeyPair::from_pem(
        &std::fs::read_to_string(t.config.automation_key_path()).unwrap(),
        "test",
    )
    .unwrap();
    Deployed {
        t,
        digest,
        kv,
        before,
        automation,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_mismatched_approvals_are_refused() {
    let Deployed {
        t,
        digest,
        kv,
        before,
        automation,
    } = deployed().await;
    let model = ModelName::parse("telco-churn").unwrap();
    let grant = |env: Environment, approvals| ApprovalGranted {
        model: model.clone(),
        version: 1,
        model_sha256: digest,
        environment: env,
        approvals,
        author: "producer".into(),
        decision: None,
        signed_decision: None,
    };

    // A key the deployer does not trust.
    let forger = KeyPair::generate().unwrap();
    let env = forger.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    let r = refused(&t, grant(Environment::Staging, vec![env])).await;
    assert!(r.contains("no signature by a trusted key"), "{r}");

    // A trusted signature over a statement that was changed afterwards.
    let good = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    let mut tampered = good.clone();
    let mut st: Value = serde_json::from_slice(&base64_decode(&tampered.payload)).unwrap();
    st["predicate"]["version"] = 2.into();
    tampered.payload = base64_encode(&serde_json::to_vec(&st).unwrap());
    let r = refused(&t, grant(Environment::Staging, vec![tampered])).await;
    assert!(r.contains("does not verify"), "{r}");

    // A trusted signature for another artifact.
    let other = Sha256Digest::of(b"another model");
    let env = automation.sign_statement(&Statement::approval(
        &other,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    let r = refused(&t, grant(Environment::Staging, vec![env])).await;
    assert!(r.contains("is for artifact"), "{r}");

    // A trusted signature for another version.
    let env = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(7, Environment::Staging, time::Duration::hours(1)),
    ));
    let r = refused(&t, grant(Environment::Staging, vec![env])).await;
    assert!(r.contains("v7"), "{r}");

    // The automation key may not approve production.
    let env = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Production, time::Duration::hours(1)),
    ));
    let r = refused(&t, grant(Environment::Production, vec![env])).await;
    assert!(r.contains("not trusted for production"), "{r}");

    // An expired approval.
    let env = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::minutes(-1)),
    ));
    let r = refused(&t, grant(Environment::Staging, vec![env])).await;
    assert!(r.contains("expired"), "{r}");

    // A replayed nonce: a first valid approval is accepted, then a second one, then
    // the first one again is refused.
    let first = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    publish(&t, grant(Environment::Staging, vec![first.clone()])).await;
    let second = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    publish(&t, grant(Environment::Staging, vec![second])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = refused(&t, grant(Environment::Staging, vec![first])).await;
    assert!(r.contains("already used"), "{r}");

    // Still version 1 of the same artifact, still served.
    let after = kv.entry("staging.telco-churn").await.unwrap().unwrap();
    let state: Value = serde_json::from_slice(&after.value).unwrap();
    assert_eq!(state["version"], 1);
    assert_eq!(state["model_sha256"], before_digest(&before));
    assert!(kv.entry("production.telco-churn").await.unwrap().is_none());
    t.wait_serving("telco-churn", 1).await;
    let metrics = t.metrics().await;
    for reason in [
        "unknown_key",
        "bad_signature",
        "digest_mismatch",
        "subject_mismatch",
        "key_not_allowed",
        "expired",
        "replayed_nonce",
    ] {
        assert!(
            metrics.contains(&format!(
                "modelbus_deployer_refusals_total{{reason=\"{reason}\"}}"
            )),
            "no refusal counted for {reason}"
        );
    }
    // The registry records the refusals in the model's deployment timeline (its
    // consumer may still be catching up with the last ones).
    let mut timeline = Value::Null;
    let mut refusals = 0;
    for _ in 0..100 {
        timeline = t
            .http
            .get(format!(
                "{}/v1/models/telco-churn/deployments",
                t.config.registry_http_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        refusals = timeline["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "refused")
            .count();
        if refusals >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refusals >= 7, "{timeline:#}");
}

fn before_digest(e: &async_nats::jetstream::kv::Entry) -> Value {
    serde_json::from_slice::<Value>(&e.value).unwrap()["model_sha256"].clone()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Publishes `payload` raw on `subject`, as any NATS user with publish rights
/// on that subject could.
async fn publish_on(t: &TestPlatform, subject: &str, payload: Vec<u8>) {
    let nats = t.nats().await;
    nats.publish(subject.to_string(), payload.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_type_is_not_its_subjects_is_refused_and_audited() {
    let Deployed {
        t,
        digest,
        kv,
        before,
        automation,
    } = deployed().await;
    // A genuinely valid approval (trusted key, fresh nonce), wrapped as
    // `approval.granted` but sent on the subject serving publishes stats on:
    // before the fix the deployer chose its approval handler from the type and
    // rewrote the staging state.
    let approval = automation.sign_statement(&Statement::approval(
        &digest,
        predicate(1, Environment::Staging, time::Duration::hours(1)),
    ));
    let grant = Envelope::new(
        "/attacker",
        &new_nonce(),
        ApprovalGranted {
            model: ModelName::parse("telco-churn").unwrap(),
            version: 1,
            model_sha256: digest,
            environment: Environment::Staging,
            approvals: vec![approval],
            author: "producer".into(),
            decision: None,
            signed_decision: None,
        },
    );
    publish_on(&t, "modelbus.serving.stats", grant.to_json()).await;
    // A well-formed `deployment.completed` for production, sent on the same
    // subject, aimed at the registry's alias handler.
    let completed = Envelope::new(
        "/attacker",
        &new_nonce(),
        modelbus_core::events::DeploymentCompleted {
            environment: Environment::Production,
            model: ModelName::parse("telco-churn").unwrap(),
            version: 1,
            model_sha256: digest,
            traffic_percent: 100,
        },
    );
    publish_on(&t, "modelbus.serving.stats", completed.to_json()).await;

    // Both are audited by the registry, which sees every subject.
    let mut misrouted = Vec::new();
    for _ in 0..200 {
        let audit = t.client.audit_all().await.unwrap();
        misrouted = audit
            .into_iter()
            .filter(|e| e.action == "event.misrouted")
            .map(|e| e.detail)
            .collect();
        if misrouted.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(misrouted.len(), 2, "{misrouted:#?}");
    let details = serde_json::to_string(&misrouted).unwrap();
    assert!(
        details.contains("io.modelbus.approval.granted.v1")
            && details.contains("io.modelbus.deployment.completed.v1")
            && details.contains("carries only \\\"io.modelbus.serving.stats.v1\\\""),
        "{details}"
    );
    // The deployer counted and refused its copy; the state is untouched.
    let counted = t
        .metric_appears("modelbus_events_misrouted_total{subject=\"modelbus.serving.stats\"}")
        .await;
    assert!(counted, "no misrouted event counted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = kv.entry("staging.telco-churn").await.unwrap().unwrap();
    assert_eq!(
        after.revision, before.revision,
        "the staging state was rewritten"
    );
    let model = t.client.model("telco-churn").await.unwrap();
    assert!(
        model["aliases"].get("production").is_none(),
        "a forged deployment.completed moved the production alias: {model:#}"
    );
}
