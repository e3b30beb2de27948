//! What the registry accepts reaches the bus: a signed rollback, its audit
//! entry and its `rollback.requested` commit in one transaction (nothing of
//! it when any part fails), and the outbox relay publishes the event once
//! the bus is back, however long it was away. On SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use modelbus_core::auth::{Principal, Role};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{
    ApprovalPredicate, DsseEnvelope, KeyPair, Statement, StatementKind, new_nonce,
};
use modelbus_registry::Registry;
use modelbus_registry::store::Store;
use modelbus_registry::types::{Lineage, NewModelVersion};
use modelbus_testkit::{TestNats, TestPostgres};
use sqlx::Row;

struct Setup {
    registry: Registry,
    olga: KeyPair,
    digest: Sha256Digest,
    _dir: tempfile::TempDir,
    _pg: Option<TestPostgres>,
}

async fn setup(postgres: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = if postgres {
        let pg = TestPostgres::create().await;
        (pg.url().to_string(), Some(pg))
    } else {
        (
            format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
            None,
        )
    };
    let store = Store::connect(&url).await.unwrap();
    let mut config = modelbus_core::config::Config::default();
    config.general.state_dir = dir.path().to_path_buf();
    let registry = Registry::new(
        store,
        KeyPair::generate().unwrap(),
        modelbus_core::artifact::ArtifactStore::local(&dir.path().join("artifacts")).unwrap(),
        modelbus_registry::policy::PolicySet::default_set(),
    )
    .with_runtime(Arc::new(config));
    let digest = Sha256Digest::of(b"model bytes");
    registry
        .store
        .register_model_version(&NewModelVersion {
            model: "churn".into(),
            dataset: "churn".into(),
            model_sha256: digest.to_hex(),
            algorithm: "logistic_regression".into(),
            metrics: BTreeMap::new(),
            params: BTreeMap::new(),
            lineage: Lineage {
                pipeline_run: "pr-1".into(),
                ..Default::default()
            },
            artifacts: Vec::new(),
            author: "pat".into(),
            evaluation_sha256: String::new(),
            evaluation_html_sha256: String::new(),
        })
        .await
        .unwrap();
    let admin = Principal {
        name: "admin".into(),
        roles: vec![Role::Admin],
        token_id: "t0".into(),
    };
    let olga = KeyPair::generate().unwrap();
    registry
        .add_approver(&admin, "olga", &olga.public().to_pem(), "operator")
        .await
        .unwrap();
    Setup {
        registry,
        olga,
        digest,
        _dir: dir,
        _pg: pg,
    }
}

fn rollback(s: &Setup) -> DsseEnvelope {
    let now = time::OffsetDateTime::now_utc();
    s.olga.sign_statement(&Statement::of_kind(
        StatementKind::Rollback,
        &s.digest,
        ApprovalPredicate {
            model: ModelName::parse("churn").unwrap(),
            version: 1,
            environment: Environment::Staging,
            approver: "olga".into(),
            issued_at: now,
            expires_at: now + time::Duration::hours(1),
            nonce: new_nonce(),
            comment: "bad canary".into(),
        },
    ))
}

fn olga() -> Principal {
    Principal {
        name: "olga".into(),
        roles: vec![Role::Operator],
        token_id: "t1".into(),
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>("n")
        .unwrap()
}

async fn accepted_entries(store: &Store) -> i64 {
    count(
        store,
        "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'rollback.accepted'",
    )
    .await
}

async fn a_rollback_commits_whole_and_reaches_a_bus_that_was_down(postgres: bool) {
    let s = setup(postgres).await;
    let store = &s.registry.store;
    let kinds = [StatementKind::Rollback];

    // A commit that fails at its last part (the outbox) leaves nothing: no
    // decision (the nonce is not burnt), no audit entry.
    sqlx::query("ALTER TABLE outbox RENAME TO outbox_away")
        .execute(store.pool())
        .await
        .unwrap();
    let envelope = rollback(&s);
    assert!(
        s.registry
            .submit_signed(&olga(), &envelope, &kinds)
            .await
            .is_err()
    );
    assert_eq!(
        count(store, "SELECT COUNT(*) AS n FROM signed_decisions").await,
        0
    );
    assert_eq!(accepted_entries(store).await, 0);
    sqlx::query("ALTER TABLE outbox_away RENAME TO outbox")
        .execute(store.pool())
        .await
        .unwrap();

    // The same envelope, once the store is whole: decision, audit entry and
    // event, together; the event waits in the outbox (no relay runs yet).
    let out = s
        .registry
        .submit_signed(&olga(), &envelope, &kinds)
        .await
        .unwrap();
    assert_eq!(out.decision.kind, "rollback");
    assert_eq!(accepted_entries(store).await, 1);
    let pending = store.pending_outbox(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].subject, "modelbus.rollback.requested");
    // Resending it is a replay, and adds no second event.
    assert!(
        s.registry
            .submit_signed(&olga(), &envelope, &kinds)
            .await
            .is_err()
    );
    assert_eq!(store.pending_outbox(10).await.unwrap().len(), 1);

    // The relay runs against a bus that goes away: it keeps the event and
    // counts its attempts...
    let mut nats = TestNats::start().await;
    let bus = modelbus_core::bus::Bus::connect(nats.url(), "registry", Default::default())
        .await
        .unwrap();
    nats.kill().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(modelbus_registry::outbox::relay(
        store.clone(),
        bus.clone(),
        Default::default(),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempts = count(store, "SELECT MAX(attempts) AS n FROM outbox").await;
        if attempts > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);

    // ...and publishes it once the bus is back.
    nats.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not publish after the bus came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    relay.await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("MODELBUS_EVENTS").await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject("modelbus.rollback.requested")
        .await
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(event["data"]["operator"], "olga");
    assert_eq!(event["data"]["to_version"], 1);
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1, "the event was stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rollback_commits_whole_and_reaches_a_bus_that_was_down() {
    a_rollback_commits_whole_and_reaches_a_bus_that_was_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rollback_commits_whole_and_reaches_a_bus_that_was_down() {
    a_rollback_commits_whole_and_reaches_a_bus_that_was_down(true).await;
}
