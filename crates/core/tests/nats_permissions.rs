//! The per-service NATS permissions of `deploy/nats/permissions.conf`, against the
//! pinned nats-server started with that very file: every service user can do its
//! normal work through [`Bus`], and none but the deployer can write deployment
//! state, none but the registry can publish `approval.granted`, and a wrong
//! password is refused. Nothing here is mocked; a rule missing from the file makes
//! a negative test fail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use modelbus_core::CancellationToken;
use modelbus_core::bus::{Bus, BusError, DLQ_STREAM, EVENTS_STREAM, HandlerError};
use modelbus_core::config::{BusConfig, NatsCredentials, Secret};
use modelbus_core::deploy::{DEPLOYMENTS_BUCKET, DesiredState, NONCES_BUCKET, deployment_key};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::nats_server::{find_binary, free_port};
use modelbus_core::online::ONLINE_BUCKET;
use modelbus_testkit::repo_root;
use tokio::process::{Child, Command};

/// Every user `permissions.conf` defines.
const USERS: [&str; 7] = [
    "registry", "ingest", "features", "trainer", "deployer", "serving", "monitor",
];

/// The events each service publishes (crates/core/src/events.rs, DESIGN.md),
/// planned ones included.
const PUBLISHES: [(&str, &[&str]); 7] = [
    (
        "registry",
        &[
            "modelbus.model.candidate",
            "modelbus.model.rejected",
            "modelbus.approval.granted",
            "modelbus.rollback.requested",
        ],
    ),
    (
        "ingest",
        &[
            "modelbus.data.batch.submitted",
            "modelbus.data.batch.validated",
            "modelbus.data.batch.rejected",
            "modelbus.notification.raised",
        ],
    ),
    ("features", &["modelbus.features.ready"]),
    ("trainer", &["modelbus.model.trained"]),
    (
        "deployer",
        &[
            "modelbus.approval.refused",
            "modelbus.deployment.started",
            "modelbus.deployment.completed",
            "modelbus.deployment.rolled_back",
        ],
    ),
    (
        "serving",
        &["modelbus.serving.model.loaded", "modelbus.serving.stats"],
    ),
    (
        "monitor",
        &[
            "modelbus.monitor.window.closed",
            "modelbus.drift.detected",
            "modelbus.notification.delivered",
        ],
    ),
];

/// The notifier's filter (crates/notify, hosted by the monitor).
const NOTIFIER_SUBJECTS: &[&str] = &[
    "modelbus.drift.detected",
    "modelbus.performance.degraded",
    "modelbus.notification.raised",
    "modelbus.data.batch.rejected",
    "modelbus.deployment.rolled_back",
    "modelbus.approval.refused",
];

/// A nats-server running the repository's `deploy/nats/permissions.conf` on a free
/// port with a temporary store; killed on drop.
struct SecuredNats {
    url: String,
    passwords: HashMap<&'static str, String>,
    dir: tempfile::TempDir,
    _child: Child,
}

impl SecuredNats {
    async fn start() -> Self {
        let pinned = repo_root().join(".tools/bin/nats-server");
        let binary = find_binary(pinned.exists().then_some(pinned.as_path()))
            .unwrap_or_else(|e| panic!("test harness: {e}"));
        let dir = tempfile::tempdir().expect("temporary NATS dir");
        let port = free_port().expect("free port");
        // nats-server resolves `include` relative to the including file, so the
        // repository's file is linked beside the generated top-level config.
        std::os::unix::fs::symlink(permissions_conf(), dir.path().join("permissions.conf"))
            .expect("link permissions.conf");
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\ninclude permissions.conf\n",
                dir.path().join("js").display().to_string()
            ),
        )
        .unwrap();
        let passwords: HashMap<&'static str, String> = USERS
            .iter()
            .map(|u| (*u, format!("p{}", uuid::Uuid::new_v4().simple())))
            .collect();
        let log = dir.path().join("nats-server.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&conf).arg("-l").arg(&log);
        for (user, pw) in &passwords {
            cmd.env(password_var(user), pw);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                panic!(
                    "nats-server with deploy/nats/permissions.conf exited with {status}: {err} {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "nats-server not listening");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            url: format!("nats://127.0.0.1:{port}"),
            passwords,
            dir,
            _child: child,
        }
    }

    fn creds(&self, user: &'static str) -> NatsCredentials {
        NatsCredentials::new(user, Some(Secret::new(self.passwords[user].clone())))
    }

    async fn try_bus(&self, user: &'static str) -> Result<Bus, BusError> {
        Bus::connect_with(&self.url, user, config(), Some(&self.creds(user))).await
    }

    async fn bus(&self, user: &'static str) -> Bus {
        self.try_bus(user)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }
}

fn permissions_conf() -> PathBuf {
    repo_root().join("deploy/nats/permissions.conf")
}

fn password_var(user: &str) -> String {
    format!("MODELBUS_NATS_{}_PASSWORD", user.to_ascii_uppercase())
}

fn config() -> BusConfig {
    BusConfig {
        max_deliver: 2,
        ack_wait: Duration::from_secs(2),
        backoff: vec![Duration::from_millis(50)],
        duplicate_window: Duration::from_secs(60),
    }
}

/// A JetStream context on `bus`'s connection (same user, same reply inbox) that
/// gives up after a second: a refused request is dropped by the server and never
/// answered.
fn impatient(bus: &Bus) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .ack_timeout(Duration::from_secs(1))
        .build(bus.client().clone())
}

fn desired(version: u32) -> DesiredState {
    DesiredState {
        environment: Environment::Staging,
        model: ModelName::parse("churn").unwrap(),
        version,
        model_sha256: Sha256Digest::of(format!("model v{version}").as_bytes()),
        approved_by: vec!["registry-automation".into()],
        nonces: vec![format!("nonce-{version}")],
        pipelinerun: None,
        updated_at: "2026-01-01T00:00:00Z".into(),
        traceparent: None,
        previous: None,
        traffic_percent: 100,
    }
}

fn staging_churn() -> String {
    deployment_key(Environment::Staging, &ModelName::parse("churn").unwrap())
}

/// Starts `bus.consume` in the background; deliveries' subjects go to the
/// returned receiver. The `trainer` consumer rejects a payload containing
/// `poison`, as a failing service would, so that it is dead-lettered.
async fn consume(
    bus: &Bus,
    name: &'static str,
    subjects: &'static [&'static str],
) -> (
    tokio::sync::mpsc::UnboundedReceiver<String>,
    CancellationToken,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let stop = CancellationToken::new();
    let (bus, s) = (bus.clone(), stop.clone());
    tokio::spawn(async move {
        let r = bus
            .consume(
                name,
                subjects,
                s,
                move || {
                    let _ = ready_tx.send(());
                },
                move |d| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(d.subject.clone());
                        if name == "trainer" && d.payload.windows(6).any(|w| w == b"poison") {
                            return Err(HandlerError::reject("poisoned on purpose"));
                        }
                        Ok(())
                    }
                },
            )
            .await;
        if let Err(e) = r {
            panic!("consumer {name}: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .unwrap_or_else(|_| panic!("consumer {name} not ready"))
        .unwrap();
    (rx, stop)
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing delivered"))
        .unwrap()
}

async fn publish(bus: &Bus, subject: &str, payload: &str) -> Result<(), BusError> {
    bus.publish_raw(
        subject,
        &uuid::Uuid::new_v4().to_string(),
        None,
        payload.to_string().into(),
    )
    .await
    .map(|_| ())
}

/// Messages the events stream holds on `subject`, as the registry (which may read
/// the stream's info) sees them.
async fn stored_on(registry: &Bus, subject: &str) -> usize {
    let stream = registry
        .jetstream()
        .get_stream(EVENTS_STREAM)
        .await
        .unwrap();
    let mut subjects = stream.info_with_subjects(subject).await.unwrap();
    let mut n = 0;
    while let Some(s) = subjects.next().await {
        let (s, count) = s.unwrap();
        if s == subject {
            n += count;
        }
    }
    n
}

fn assert_denied(err: &BusError, user: &str, subject: &str) {
    match err {
        BusError::PermissionDenied {
            user: u,
            subject: s,
            ..
        } => {
            assert_eq!((u.as_str(), s.as_str()), (user, subject), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(user) && msg.contains(subject), "{msg}");
        }
        other => panic!("{user} on {subject}: expected a permission error, got: {other}"),
    }
}

// ---------------------------------------------------------------------------
// (a) every service can do its normal work

#[tokio::test]
async fn each_service_publishes_its_own_events_and_consumes_through_its_own_consumer() {
    let nats = SecuredNats::start().await;
    // The registry starts first and creates the shared streams; everyone else
    // then connects (the streams are ensured: they exist).
    let registry = nats.bus("registry").await;
    let mut buses = HashMap::new();
    for user in USERS {
        buses.insert(user, nats.bus(user).await);
    }
    assert_eq!(buses["trainer"].user(), Some("trainer"));

    // Each service's consumer, with the filter subjects its code uses.
    let (mut ingest_rx, _s1) = consume(
        &buses["ingest"],
        "ingest",
        &["modelbus.data.batch.submitted"],
    )
    .await;
    let (mut features_rx, _s2) = consume(
        &buses["features"],
        "features",
        &["modelbus.data.batch.validated"],
    )
    .await;
    let (mut trainer_rx, _s3) =
        consume(&buses["trainer"], "trainer", &["modelbus.features.ready"]).await;
    let (mut deployer_rx, _s4) = consume(
        &buses["deployer"],
        "deployer",
        &["modelbus.approval.granted", "modelbus.serving.model.loaded"],
    )
    .await;
    let (mut registry_rx, _s5) = consume(&registry, "registry", &["modelbus.>"]).await;
    let (mut monitor_rx, _s6) = consume(&buses["monitor"], "monitor", &["modelbus.>"]).await;
    // The monitor hosts the notifier, with a consumer of its own.
    let (mut notifier_rx, _s7) = consume(&buses["monitor"], "notifier", NOTIFIER_SUBJECTS).await;

    // Every service publishes every event type it owns, and the stream acks it.
    for (user, subjects) in PUBLISHES {
        for subject in subjects {
            publish(&buses[user], subject, "{}")
                .await
                .unwrap_or_else(|e| panic!("{user} cannot publish {subject}: {e}"));
        }
    }
    let expected: Vec<&str> = PUBLISHES
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    for (name, rx) in [("registry", &mut registry_rx), ("monitor", &mut monitor_rx)] {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            seen.push(next(rx, name).await);
        }
        seen.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(seen, want, "{name} follows every event");
    }
    let mut want: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|s| NOTIFIER_SUBJECTS.contains(s))
        .collect();
    want.sort();
    let mut seen = Vec::new();
    while seen.len() < want.len() {
        seen.push(next(&mut notifier_rx, "notifier").await);
    }
    seen.sort();
    assert_eq!(seen, want, "the notifier reads what it notifies about");
    assert_eq!(
        next(&mut ingest_rx, "ingest").await,
        "modelbus.data.batch.submitted"
    );
    assert_eq!(
        next(&mut features_rx, "features").await,
        "modelbus.data.batch.validated"
    );
    assert_eq!(
        next(&mut trainer_rx, "trainer").await,
        "modelbus.features.ready"
    );
    let mut got = vec![
        next(&mut deployer_rx, "deployer").await,
        next(&mut deployer_rx, "deployer").await,
    ];
    got.sort();
    assert_eq!(
        got,
        ["modelbus.approval.granted", "modelbus.serving.model.loaded"]
    );

    // A handler that rejects an event dead-letters it on its own subject, and the
    // registry's dead-letter consumer receives it.
    let (letters_tx, mut letters) = tokio::sync::mpsc::unbounded_channel();
    let (bus, stop) = (registry.clone(), CancellationToken::new());
    let s = stop.clone();
    tokio::spawn(async move {
        bus.consume_dead_letters("registry-dlq", s, move |l| {
            let tx = letters_tx.clone();
            async move {
                let _ = tx.send(l);
            }
        })
        .await
        .unwrap();
    });
    publish(
        &buses["features"],
        "modelbus.features.ready",
        r#"{"poison":true}"#,
    )
    .await
    .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(10), letters.recv())
        .await
        .expect("a dead letter")
        .unwrap();
    assert_eq!(letter.consumer, "trainer");
    assert!(letter.error.contains("poisoned on purpose"), "{letter:?}");
    stop.cancel();
}

#[tokio::test]
async fn serving_writes_the_prediction_log_and_only_the_monitor_reads_it() {
    let nats = SecuredNats::start().await;
    let _registry = nats.bus("registry").await;
    let serving = nats.bus("serving").await;
    let monitor = nats.bus("monitor").await;
    let day = Duration::from_secs(86_400);
    // Either may create the stream and set its retention.
    serving.ensure_inference_stream(day, 1 << 30).await.unwrap();
    monitor
        .ensure_inference_stream(2 * day, 1 << 30)
        .await
        .unwrap();
    let subject = "modelbus_inference.inference.logged";
    publish(&serving, subject, "{}").await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (m, s) = (monitor.clone(), stop.clone());
    tokio::spawn(async move {
        m.consume_stream(
            modelbus_core::bus::INFERENCE_STREAM,
            "monitor",
            &[subject],
            s,
            || {},
            move |d| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(d.subject.clone());
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    });
    assert_eq!(next(&mut rx, "the monitor's log consumer").await, subject);
    stop.cancel();
    // Nobody else writes the log, and the monitor does not write it either.
    for user in ["ingest", "features", "trainer", "deployer", "monitor"] {
        let bus = nats.bus(user).await;
        let err = publish(&bus, subject, "{}").await.unwrap_err();
        assert_denied(&err, user, subject);
    }
}

#[tokio::test]
async fn the_deployer_owns_its_buckets_and_serving_and_monitor_read_and_watch_them() {
    let nats = SecuredNats::start().await;
    let _registry = nats.bus("registry").await;
    let deployer = nats.bus("deployer").await;
    let deployments = deployer.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
    let nonces = deployer.kv(NONCES_BUCKET, 1).await.unwrap();
    let key = staging_churn();
    deployments
        .put(&key, serde_json::to_vec(&desired(1)).unwrap().into())
        .await
        .unwrap();
    // What the deployer does with nonces: create once, read back.
    nonces.create("nonce-1", "pending".into()).await.unwrap();
    assert!(nonces.create("nonce-1", "again".into()).await.is_err());
    assert_eq!(
        nonces.get("nonce-1").await.unwrap().as_deref(),
        Some(&b"pending"[..])
    );
    let rev = deployments.entry(&key).await.unwrap().unwrap().revision;
    deployments
        .update(&key, serde_json::to_vec(&desired(2)).unwrap().into(), rev)
        .await
        .unwrap();
    // The history of a key, where a rollback finds the previous version.
    let versions: Vec<u32> = deployments
        .history(&key)
        .await
        .unwrap()
        .map(|e| {
            serde_json::from_slice::<DesiredState>(&e.unwrap().value)
                .unwrap()
                .version
        })
        .collect()
        .await;
    assert_eq!(versions, [1, 2]);

    for user in ["serving", "monitor"] {
        let bus = nats.bus(user).await;
        // Opens (never creates) the bucket, as serving's `watch` does.
        let kv = bus.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
        let got: DesiredState =
            serde_json::from_slice(&kv.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(got.version, 2, "{user}");
        let mut watch = kv.watch_with_history("staging.>").await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.key, key);
        let keys: Vec<String> = kv
            .keys()
            .await
            .unwrap()
            .filter_map(|k| async move { k.ok() })
            .collect()
            .await;
        assert_eq!(keys, vec![key.clone()], "{user}");
        // A new desired state reaches the watcher.
        deployments
            .put(&key, serde_json::to_vec(&desired(3)).unwrap().into())
            .await
            .unwrap();
        let mut seen = 0;
        while seen != 3 {
            let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap_or_else(|_| panic!("{user}: the watch saw no update"))
                .unwrap()
                .unwrap();
            seen = serde_json::from_slice::<DesiredState>(&e.value)
                .unwrap()
                .version;
        }
        deployments
            .put(&key, serde_json::to_vec(&desired(2)).unwrap().into())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn features_writes_the_online_store_and_serving_reads_it() {
    let nats = SecuredNats::start().await;
    let _registry = nats.bus("registry").await;
    let features = nats.bus("features").await;
    let online = features.kv(ONLINE_BUCKET, 1).await.unwrap();
    online
        .put("telco-churn.0001", r#"{"entity":"0001"}"#.into())
        .await
        .unwrap();
    let serving = nats.bus("serving").await;
    let kv = serving.kv(ONLINE_BUCKET, 1).await.unwrap();
    assert_eq!(
        kv.get("telco-churn.0001").await.unwrap().as_deref(),
        Some(&br#"{"entity":"0001"}"#[..])
    );
    // Serving reads it but cannot write it.
    let err = publish(&serving, "$KV.online-features.telco-churn.0001", "{}")
        .await
        .unwrap_err();
    assert_denied(&err, "serving", "$KV.online-features.telco-churn.0001");
}

// ---------------------------------------------------------------------------
// (b) only the deployer writes deployment state

#[tokio::test]
async fn no_other_service_can_write_delete_or_purge_deployment_state() {
    let nats = SecuredNats::start().await;
    let registry = nats.bus("registry").await;
    let deployer = nats.bus("deployer").await;
    let deployments = deployer.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
    let nonces = deployer.kv(NONCES_BUCKET, 1).await.unwrap();
    let key = staging_churn();
    let original = serde_json::to_vec(&desired(1)).unwrap();
    deployments
        .put(&key, original.clone().into())
        .await
        .unwrap();
    nonces.create("nonce-1", "used".into()).await.unwrap();
    let forged = serde_json::to_vec(&desired(666)).unwrap();

    let mut others = vec![("registry", registry)];
    for user in ["ingest", "features", "trainer", "serving", "monitor"] {
        others.push((user, nats.bus(user).await));
    }
    let mut attempts = Vec::new();
    for (user, bus) in &others {
        let (key, forged) = (&key, &forged);
        // A put is a publish on $KV.deployments.<key>: refused, with the user and
        // subject named.
        let subject = format!("$KV.deployments.{key}");
        let err = publish(bus, &subject, std::str::from_utf8(forged).unwrap())
            .await
            .unwrap_err();
        assert_denied(&err, user, &subject);
        let err = publish(bus, "$KV.deployments.production.churn", "{}")
            .await
            .unwrap_err();
        assert_denied(&err, user, "$KV.deployments.production.churn");
        let err = publish(bus, "$KV.approval-nonces.nonce-2", "used")
            .await
            .unwrap_err();
        assert_denied(&err, user, "$KV.approval-nonces.nonce-2");

        attempts.push(async move {
            let js = impatient(bus);
            // Through the KV API, for those who may open the bucket at all.
            if let Ok(kv) = js.get_key_value(DEPLOYMENTS_BUCKET).await {
                let (put, create, delete, purge) = tokio::join!(
                    kv.put(&key, forged.clone().into()),
                    kv.create("production.churn", forged.clone().into()),
                    kv.delete(&key),
                    kv.purge(&key),
                );
                assert!(put.is_err(), "{user}: KV put into deployments succeeded");
                assert!(
                    create.is_err(),
                    "{user}: KV create in deployments succeeded"
                );
                assert!(
                    delete.is_err(),
                    "{user}: KV delete in deployments succeeded"
                );
                assert!(purge.is_err(), "{user}: KV purge in deployments succeeded");
            }
            // Through the JetStream API: purge, delete the stream, delete a
            // message, reconfigure it (e.g. to source forged entries), replace it.
            let empty = serde_json::json!({});
            let requests = [
                ("STREAM.PURGE.KV_deployments", empty.clone()),
                ("STREAM.DELETE.KV_deployments", empty.clone()),
                (
                    "STREAM.MSG.DELETE.KV_deployments",
                    serde_json::json!({"seq": 1}),
                ),
                ("STREAM.PURGE.KV_approval-nonces", empty.clone()),
                ("STREAM.DELETE.KV_approval-nonces", empty.clone()),
                (
                    "STREAM.MSG.DELETE.KV_approval-nonces",
                    serde_json::json!({"seq": 1}),
                ),
                (
                    "STREAM.UPDATE.KV_deployments",
                    serde_json::json!({"name": "KV_deployments",
                        "subjects": ["$KV.deployments.>"],
                        "sources": [{"name": EVENTS_STREAM}]}),
                ),
                (
                    "STREAM.CREATE.KV_deployments",
                    serde_json::json!({"name": "KV_deployments",
                        "subjects": ["$KV.deployments.>"]}),
                ),
            ];
            let answers = futures::future::join_all(requests.iter().map(|(api, body)| {
                let js = js.clone();
                async move {
                    let r: Result<serde_json::Value, _> = js.request(*api, body).await;
                    (*api, r)
                }
            }))
            .await;
            for (api, r) in answers {
                assert!(
                    r.is_err(),
                    "{user}: $JS.API.{api} was answered: {:?}",
                    r.unwrap()
                );
            }
            // A stream of its own that would republish into the bucket's subjects.
            let r = js
                .create_stream(stream::Config {
                    name: format!("FORGE_{user}"),
                    subjects: vec![format!("forge.{user}.>")],
                    republish: Some(stream::Republish {
                        source: format!("forge.{user}.>"),
                        destination: "$KV.deployments.>".into(),
                        headers_only: false,
                    }),
                    ..Default::default()
                })
                .await;
            assert!(
                r.is_err(),
                "{user} created a stream republishing into deployments"
            );
        });
    }
    futures::future::join_all(attempts).await;

    // The deployer reads exactly what it wrote; nothing else appeared.
    assert_eq!(
        deployments.get(&key).await.unwrap().as_deref(),
        Some(&original[..])
    );
    assert!(deployments.get("production.churn").await.unwrap().is_none());
    let mut st = deployer
        .jetstream()
        .get_stream("KV_deployments")
        .await
        .unwrap();
    assert_eq!(st.info().await.unwrap().state.messages, 1);
    assert!(st.cached_info().config.sources.is_none());
    assert_eq!(
        nonces.get("nonce-1").await.unwrap().as_deref(),
        Some(&b"used"[..])
    );
    assert!(nonces.get("nonce-2").await.unwrap().is_none());
}

#[tokio::test]
async fn stream_configuration_cannot_smuggle_writes_into_deployment_state() {
    let nats = SecuredNats::start().await;
    let registry = nats.bus("registry").await;
    let deployer = nats.bus("deployer").await;
    let deployments = deployer.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
    let key = staging_churn();
    let original = serde_json::to_vec(&desired(1)).unwrap();
    deployments
        .put(&key, original.clone().into())
        .await
        .unwrap();
    let forged = serde_json::to_vec(&desired(666)).unwrap();

    // The registry may create the events stream, but only while it does not
    // exist: a second definition with a republish into the bucket is refused.
    let js = impatient(&registry);
    let r = js
        .create_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec!["modelbus.>".into()],
            republish: Some(stream::Republish {
                source: "modelbus.approval.granted".into(),
                destination: format!("$KV.deployments.{key}"),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await;
    assert!(r.is_err(), "the events stream was redefined");
    publish(
        &registry,
        "modelbus.approval.granted",
        std::str::from_utf8(&forged).unwrap(),
    )
    .await
    .unwrap();

    // A push consumer may name any deliver subject, but the server does not store
    // what it delivers: ingest's own consumer pointed at the bucket writes nothing.
    let ingest = nats.bus("ingest").await;
    publish(
        &ingest,
        "modelbus.data.batch.submitted",
        std::str::from_utf8(&forged).unwrap(),
    )
    .await
    .unwrap();
    let events = ingest.jetstream().get_stream(EVENTS_STREAM).await.unwrap();
    let r = events
        .create_consumer(consumer::push::Config {
            durable_name: Some("ingest".into()),
            deliver_subject: format!("$KV.deployments.{key}"),
            filter_subjects: vec!["modelbus.data.batch.submitted".into()],
            ..Default::default()
        })
        .await;
    // Created: the point is where it delivers, not whether it may exist.
    r.expect("ingest creates its own consumer");
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        deployments.get(&key).await.unwrap().as_deref(),
        Some(&original[..])
    );
    let mut st = deployer
        .jetstream()
        .get_stream("KV_deployments")
        .await
        .unwrap();
    assert_eq!(st.info().await.unwrap().state.messages, 1);
    let cfg = registry
        .jetstream()
        .get_stream(EVENTS_STREAM)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert!(cfg.republish.is_none());
}

#[tokio::test]
async fn a_republishing_stream_bypasses_permissions_so_the_bus_refuses_one() {
    let nats = SecuredNats::start().await;
    // A registry that, on an empty server, defines the events stream itself with
    // a republish of approvals into the deployment bucket (it may create that
    // stream: it starts first).
    let registry_client = async_nats::ConnectOptions::new()
        .user_and_password("registry".into(), nats.passwords["registry"].clone())
        .custom_inbox_prefix("_INBOX_registry")
        .connect(&nats.url)
        .await
        .unwrap();
    let key = staging_churn();
    jetstream::new(registry_client.clone())
        .create_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec!["modelbus.>".into()],
            republish: Some(stream::Republish {
                source: "modelbus.approval.granted".into(),
                destination: format!("$KV.deployments.{key}"),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await
        .expect("the registry may create the events stream while it does not exist");

    // The server does what the definition says, whatever the registry's
    // permissions: with the bucket in place, an approval lands in it.
    let deployer_client = async_nats::ConnectOptions::new()
        .user_and_password("deployer".into(), nats.passwords["deployer"].clone())
        .custom_inbox_prefix("_INBOX_deployer")
        .connect(&nats.url)
        .await
        .unwrap();
    let deployments = jetstream::new(deployer_client)
        .create_key_value(kv::Config {
            bucket: DEPLOYMENTS_BUCKET.into(),
            history: 64,
            ..Default::default()
        })
        .await
        .unwrap();
    let forged = serde_json::to_vec(&desired(666)).unwrap();
    jetstream::new(registry_client)
        .publish("modelbus.approval.granted", forged.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut landed = None;
    for _ in 0..40 {
        landed = deployments.get(&key).await.unwrap();
        if landed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(landed.as_deref(), Some(&forged[..]));

    // Which is why creating streams is reserved, and why every service's bus
    // refuses such a stream: the deployer does not start on it.
    for user in ["deployer", "serving", "registry"] {
        let err = nats.try_bus(user).await.unwrap_err();
        assert!(
            matches!(err, BusError::UnexpectedStreamDefinition { .. })
                && err.to_string().contains(&format!(
                    "stream MODELBUS_EVENTS republishes modelbus.approval.granted to $KV.deployments.{key}"
                )),
            "{user}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// (c) only the registry publishes approvals

#[tokio::test]
async fn only_the_registry_can_publish_approval_granted_or_rollback_requested() {
    let nats = SecuredNats::start().await;
    let registry = nats.bus("registry").await;
    let mut bypasses = Vec::new();
    for user in [
        "ingest", "features", "trainer", "deployer", "serving", "monitor",
    ] {
        let bus = nats.bus(user).await;
        for subject in ["modelbus.approval.granted", "modelbus.rollback.requested"] {
            let err = publish(&bus, subject, r#"{"forged":true}"#)
                .await
                .unwrap_err();
            assert_denied(&err, user, subject);
            // Nor through a context of its own, bypassing the bus's checks.
            let js = impatient(&bus);
            bypasses.push(async move {
                let stored = match js.publish(subject, "{}".into()).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                assert!(!stored, "{user} stored {subject}");
            });
        }
    }
    futures::future::join_all(bypasses).await;
    assert_eq!(stored_on(&registry, "modelbus.approval.granted").await, 0);
    assert_eq!(stored_on(&registry, "modelbus.rollback.requested").await, 0);
    // The registry itself may, and the count shows it.
    publish(&registry, "modelbus.approval.granted", "{}")
        .await
        .unwrap();
    assert_eq!(stored_on(&registry, "modelbus.approval.granted").await, 1);
}

#[tokio::test]
async fn services_cannot_publish_each_others_events_or_use_each_others_consumers() {
    let nats = SecuredNats::start().await;
    let registry = nats.bus("registry").await;
    let deployer = nats.bus("deployer").await;
    let ingest = nats.bus("ingest").await;
    let trainer = nats.bus("trainer").await;
    let (mut deployer_rx, _stop) = consume(
        &deployer,
        "deployer",
        &["modelbus.approval.granted", "modelbus.serving.model.loaded"],
    )
    .await;

    // Someone else's event type and someone else's dead letters.
    let err = publish(&trainer, "modelbus.data.batch.validated", "{}")
        .await
        .unwrap_err();
    assert_denied(&err, "trainer", "modelbus.data.batch.validated");
    let err = publish(&trainer, "modelbus_dlq.deployer", "{}")
        .await
        .unwrap_err();
    assert_denied(&err, "trainer", "modelbus_dlq.deployer");
    let err = publish(&ingest, "modelbus.serving.model.loaded", "{}")
        .await
        .unwrap_err();
    assert_denied(&err, "ingest", "modelbus.serving.model.loaded");

    // Pulling from the deployer's consumer would hide approvals from it.
    // (A consume that is allowed runs until cancelled: give it five seconds.)
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        trainer.consume(
            "deployer",
            &["modelbus.approval.granted"],
            CancellationToken::new(),
            || {},
            |_| async { Ok(()) },
        ),
    )
    .await
    .expect("trainer is consuming through the deployer's consumer")
    .unwrap_err();
    assert_denied(
        &err,
        "trainer",
        "$JS.API.CONSUMER.CREATE.MODELBUS_EVENTS.deployer",
    );
    let js = impatient(&trainer);
    let r: Result<serde_json::Value, _> = js
        .request(
            "CONSUMER.MSG.NEXT.MODELBUS_EVENTS.deployer",
            &serde_json::json!({"batch": 1, "expires": 500_000_000}),
        )
        .await;
    assert!(r.is_err(), "trainer pulled from the deployer's consumer");
    let r: Result<serde_json::Value, _> = js
        .request(
            "CONSUMER.DELETE.MODELBUS_EVENTS.deployer",
            &serde_json::json!({}),
        )
        .await;
    assert!(r.is_err(), "trainer deleted the deployer's consumer");

    // Nor read what is delivered to another service: its inbox is its own.
    let mut spy = ingest
        .client()
        .subscribe("_INBOX_deployer.>")
        .await
        .unwrap();
    let mut spy_all = ingest.client().subscribe("modelbus.>").await.unwrap();
    publish(&registry, "modelbus.approval.granted", "{}")
        .await
        .unwrap();
    assert_eq!(
        next(&mut deployer_rx, "deployer").await,
        "modelbus.approval.granted"
    );
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! {
            m = spy.next() => m,
            m = spy_all.next() => m,
        }
    })
    .await;
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "ingest read another service's traffic: {leaked:?}"
    );
}

// ---------------------------------------------------------------------------
// (d) credentials and start-up order

#[tokio::test]
async fn only_the_deployer_replays_serving_stats_and_nothing_else() {
    let nats = SecuredNats::start().await;
    let _registry = nats.bus("registry").await;
    let serving = nats.bus("serving").await;
    publish(&serving, "modelbus.serving.stats", "{\"window\":1}")
        .await
        .unwrap();
    let deployer = nats.bus("deployer").await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    for _ in 0..2 {
        // Twice: the first replay leaves nothing behind that breaks the next.
        let got = deployer
            .replay("deployer-stats", "modelbus.serving.stats", since)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][..], b"{\"window\":1}");
    }
    // Its replay consumer reads serving.stats only.
    let err = deployer
        .replay("deployer-stats", "modelbus.approval.granted", since)
        .await
        .unwrap_err();
    assert_denied(
        &err,
        "deployer",
        "$JS.API.CONSUMER.CREATE.MODELBUS_EVENTS.deployer-stats.modelbus.approval.granted",
    );
    // Nobody else may read through it, or replay under another name.
    let trainer = nats.bus("trainer").await;
    let err = trainer
        .replay("deployer-stats", "modelbus.serving.stats", since)
        .await
        .unwrap_err();
    assert_denied(
        &err,
        "trainer",
        "$JS.API.CONSUMER.CREATE.MODELBUS_EVENTS.deployer-stats.modelbus.serving.stats",
    );
    let err = deployer
        .replay("other", "modelbus.serving.stats", since)
        .await
        .unwrap_err();
    assert_denied(
        &err,
        "deployer",
        "$JS.API.CONSUMER.CREATE.MODELBUS_EVENTS.other.modelbus.serving.stats",
    );
}

#[tokio::test]
async fn a_wrong_password_or_no_credentials_are_refused_at_connect() {
    let nats = SecuredNats::start().await;
    let wrong = NatsCredentials::new("deployer", Some(Secret::new("not-the-password")));
    let err = Bus::connect_with(&nats.url, "t", config(), Some(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("user `deployer`") && msg.contains("nats.password") && msg.contains(&nats.url),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "password echoed: {msg}");
    // Another user's password does not open the deployer either.
    let swapped = NatsCredentials::new(
        "deployer",
        Some(Secret::new(nats.passwords["serving"].clone())),
    );
    assert!(matches!(
        Bus::connect_with(&nats.url, "t", config(), Some(&swapped)).await,
        Err(BusError::Unauthorized { .. })
    ));
    let unknown = NatsCredentials::new("admin", Some(Secret::new("admin")));
    assert!(matches!(
        Bus::connect_with(&nats.url, "t", config(), Some(&unknown)).await,
        Err(BusError::Unauthorized { .. })
    ));
    let err = Bus::connect(&nats.url, "t", config()).await.unwrap_err();
    assert!(err.to_string().contains("without credentials"), "{err}");
    // The right one works.
    nats.bus("deployer").await;
}

#[tokio::test]
async fn only_the_registry_or_deployer_create_the_streams_and_only_owners_their_buckets() {
    let nats = SecuredNats::start().await;
    // Before the registry has run, another service cannot create the streams and
    // says which subject its user lacks.
    for user in ["ingest", "features", "trainer", "serving", "monitor"] {
        let err = nats.try_bus(user).await.unwrap_err();
        assert_denied(
            &err,
            user,
            &format!("$JS.API.STREAM.CREATE.{EVENTS_STREAM}"),
        );
    }
    // The deployer may (a deployer that starts first still works).
    let deployer = nats.bus("deployer").await;
    assert!(deployer.jetstream().get_stream(EVENTS_STREAM).await.is_ok());
    let registry = nats.bus("registry").await;
    assert!(registry.jetstream().get_stream(DLQ_STREAM).await.is_ok());

    // Serving never creates `deployments`: before the deployer has, it is told.
    let serving = nats.bus("serving").await;
    for bucket in [DEPLOYMENTS_BUCKET, ONLINE_BUCKET] {
        let err = serving.kv(bucket, 1).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, BusError::PermissionDenied { .. })
                && msg.contains("serving")
                && msg.contains(&format!(
                    "create KV bucket {bucket}, which does not exist yet"
                )),
            "{msg}"
        );
    }
    // Nor does anyone else but its owner; and nobody opens a bucket it has no
    // business reading.
    let trainer = nats.bus("trainer").await;
    let err = trainer.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap_err();
    assert_denied(&err, "trainer", "$JS.API.STREAM.INFO.KV_deployments");
    let features = nats.bus("features").await;
    let err = features.kv(NONCES_BUCKET, 1).await.unwrap_err();
    assert_denied(&err, "features", "$JS.API.STREAM.INFO.KV_approval-nonces");
    deployer.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
    serving.kv(DEPLOYMENTS_BUCKET, 64).await.unwrap();
}

// ---------------------------------------------------------------------------
// the shipped files

#[test]
fn the_shipped_server_config_is_valid_and_needs_every_password() {
    let pinned = repo_root().join(".tools/bin/nats-server");
    let binary = find_binary(pinned.exists().then_some(pinned.as_path()))
        .unwrap_or_else(|e| panic!("test harness: {e}"));
    let conf = repo_root().join("deploy/nats/nats.conf");
    let check = |skip: Option<&str>| {
        let mut cmd = std::process::Command::new(&binary);
        cmd.arg("-t").arg("-c").arg(&conf);
        for user in USERS {
            cmd.env_remove(password_var(user));
            if Some(user) != skip {
                cmd.env(password_var(user), "pTest");
            }
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (ok, out) = check(None);
    assert!(ok, "deploy/nats/nats.conf: {out}");
    // A missing password stops the server instead of leaving a user open.
    let (ok, out) = check(Some("deployer"));
    assert!(
        !ok && out.contains("MODELBUS_NATS_DEPLOYER_PASSWORD"),
        "{out}"
    );
}

#[test]
fn the_kubernetes_config_map_carries_the_shipped_files() {
    let manifest = std::fs::read_to_string(repo_root().join("k8s/base/nats.yaml")).unwrap();
    for file in ["nats.conf", "permissions.conf"] {
        let shipped = std::fs::read_to_string(repo_root().join("deploy/nats").join(file)).unwrap();
        let embedded = block_scalar(&manifest, file)
            .unwrap_or_else(|| panic!("k8s/base/nats.yaml has no `{file}: |` entry"));
        assert!(
            embedded == shipped,
            "k8s/base/nats.yaml's {file} differs from deploy/nats/{file}; copy it again"
        );
    }
}

/// The value of a YAML literal block scalar `key: |` (indentation removed).
fn block_scalar(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml.lines();
    let head = lines.find(|l| l.trim_start() == format!("{key}: |"))?;
    let key_indent = head.len() - head.trim_start().len();
    let mut out = String::new();
    let mut indent = None;
    for l in lines {
        if l.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let n = l.len() - l.trim_start().len();
        if n <= key_indent {
            break;
        }
        let i = *indent.get_or_insert(n);
        out.push_str(l.get(i..).unwrap_or(""));
        out.push('\n');
    }
    // Blank lines after the block belong to no one.
    while out.ends_with("\n\n") {
        out.pop();
    }
    Some(out)
}
