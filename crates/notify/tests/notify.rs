//! The notifier against real parts only: a pinned nats-server per test, a real
//! Prometheus Alertmanager (Debian's `prometheus-alertmanager`, started by the
//! test harness) and HTTP receivers this test runs (axum), which record what
//! they get and answer as told: at once, late, with an error, or after
//! checking the signature; over plain HTTP or over TLS with a certificate
//! from a CA made for the test (rcgen).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt as _;
use modelbus_core::artifact::ArtifactStore;
use modelbus_core::bus::Bus;
use modelbus_core::config::{Config, NotificationKind, ReceiverConfig, ReceiverFormat, SecretRef};
use modelbus_core::events::{self, BatchRejected, DriftDetected, Envelope, NotificationDelivered};
use modelbus_core::ids::{DatasetName, Environment, ModelName, Sha256Digest};
use modelbus_core::ops::Readiness;
use modelbus_core::{CancellationToken, Context};
use modelbus_notify::signature::{self, SignatureError};
use modelbus_testkit::{TestAlertmanager, TestNats};

// ---------------------------------------------------------------------------
// Receivers run by the test

/// How a test receiver answers its `n`th request (from 0).
#[derive(Clone)]
struct Reply {
    status: u16,
    delay: Duration,
    retry_after: Option<&'static str>,
}

impl Reply {
    fn ok() -> Self {
        Self {
            status: 200,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }
}

type Answer = Arc<dyn Fn(usize, &HeaderMap, &[u8]) -> Reply + Send + Sync>;

/// One request a test receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// An HTTP receiver on a free port that records every request.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    /// TLS handshakes that failed (TLS receivers).
    handshake_errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hook {
    /// The receiver's app: records every request, answers as `answer` says.
    fn app(got: Arc<Mutex<Vec<Got>>>, answer: Answer) -> axum::Router {
        axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (got, answer) = (got.clone(), answer.clone());
                async move {
                    let n = {
                        let mut got = got.lock().unwrap();
                        got.push(Got {
                            path: uri.path().to_string(),
                            headers: headers.clone(),
                            body: body.clone(),
                        });
                        got.len() - 1
                    };
                    let reply = answer(n, &headers, &body);
                    tokio::time::sleep(reply.delay).await;
                    let mut h = HeaderMap::new();
                    if let Some(r) = reply.retry_after {
                        h.insert("retry-after", r.parse().unwrap());
                    }
                    (StatusCode::from_u16(reply.status).unwrap(), h, "answer")
                }
            },
        )
    }

    async fn start(answer: Answer) -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = Self::app(got.clone(), answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Self {
            url,
            got,
            handshake_errors: Arc::default(),
            stop,
        }
    }

    /// The same receiver over TLS (rustls, HTTP/1.1) on 127.0.0.1, its URL
    /// naming `host`; a handshake that fails is recorded in
    /// `handshake_errors`.
    async fn start_tls(answer: Answer, tls: Arc<rustls::ServerConfig>, host: &str) -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let handshake_errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Self::app(got.clone(), answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{host}:{}", listener.local_addr().unwrap().port());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stop = CancellationToken::new();
        let (s, errors) = (stop.clone(), handshake_errors.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (acceptor, app, errors) = (acceptor.clone(), app.clone(), errors.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                });
            }
        });
        Self {
            url,
            got,
            handshake_errors,
            stop,
        }
    }

    async fn ok() -> Self {
        Self::start(Arc::new(|_: usize, _: &HeaderMap, _: &[u8]| Reply::ok())).await
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (at most `within`).
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} got {} request(s) within {within:?}, expected {n}",
                self.url,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The notifier on a real bus

fn receiver(name: &str, format: ReceiverFormat, url: &str) -> ReceiverConfig {
    ReceiverConfig {
        name: name.into(),
        format,
        url: url.into(),
        events: NotificationKind::ALL.to_vec(),
        secret: None,
        ca_file: None,
        repeat_interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
        max_attempts: 3,
        backoff: Duration::from_millis(50),
    }
}

struct Platform {
    _nats: TestNats,
    _dir: tempfile::TempDir,
    ctx: Context,
    delivered: async_nats::Subscriber,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

/// A delivery outcome's receiver, event, outcome, attempts and status.
fn summary(o: &NotificationDelivered) -> (&str, &str, &str, u32, Option<u16>) {
    (
        o.receiver.as_str(),
        o.event_id.as_str(),
        o.outcome.as_str(),
        o.attempts,
        o.status,
    )
}

impl Platform {
    /// A nats-server, a bus, and the notifier running with `receivers`,
    /// ready (its consumer exists).
    async fn start(receivers: Vec<ReceiverConfig>) -> Self {
        let nats = TestNats::start().await;
        let mut config = Config::default();
        config.notifications.receivers = receivers;
        config.validate().expect("a valid test configuration");
        let bus = Bus::connect(nats.url(), "notify-test", config.bus.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            bus,
            store: ArtifactStore::local(dir.path()).unwrap(),
            config: Arc::new(config),
            readiness: Readiness::new(),
            shutdown: CancellationToken::new(),
        };
        let delivered = ctx
            .bus
            .client()
            .subscribe("modelbus.notification.delivered")
            .await
            .unwrap();
        let c = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = modelbus_notify::run(c).await {
                panic!("notifier: {e}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while ctx.readiness.report().get(modelbus_notify::CONSUMER) != Some(&true) {
            assert!(Instant::now() < deadline, "the notifier is not ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            _nats: nats,
            _dir: dir,
            ctx,
            delivered,
        }
    }

    /// The next `notification.delivered` event.
    async fn next_outcome(&mut self, within: Duration) -> NotificationDelivered {
        let m = tokio::time::timeout(within, self.delivered.next())
            .await
            .unwrap_or_else(|_| panic!("no notification.delivered within {within:?}"))
            .unwrap();
        events::decode::<NotificationDelivered>(&m.payload)
            .unwrap()
            .data
    }

    /// The next `n` outcomes, sorted by receiver and event.
    async fn outcomes(&mut self, n: usize, within: Duration) -> Vec<NotificationDelivered> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            out.push(self.next_outcome(left).await);
        }
        out.sort_by(|a, b| (&a.receiver, &a.event_id).cmp(&(&b.receiver, &b.event_id)));
        out
    }
}

fn drift(version: u32, reasons: &[&str], columns: &[&str]) -> Envelope<DriftDetected> {
    Envelope::new(
        "/modelbus/monitor",
        &uuid::Uuid::new_v4().to_string(),
        DriftDetected {
            window_id: format!("production/telco-churn/{version}/w"),
            environment: Environment::Production,
            model: ModelName::parse("telco-churn").unwrap(),
            version,
            model_sha256: Sha256Digest::of(b"model"),
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
            drifted_columns: columns.iter().map(|s| s.to_string()).collect(),
            report_sha256: Sha256Digest::of(b"report"),
            policy_digest: "policy".into(),
        },
    )
    .with_subject("telco-churn")
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

// ---------------------------------------------------------------------------
// (1) drift → notifier → a real Alertmanager → its webhook

#[tokio::test]
async fn drift_reaches_alertmanager_with_its_labels_and_alertmanager_routes_it() {
    let webhook = Hook::ok().await;
    let am = TestAlertmanager::start(&format!("{}/alertmanager", webhook.url)).await;
    let mut p = Platform::start(vec![receiver(
        "alertmanager",
        ReceiverFormat::Alertmanager,
        am.url(),
    )])
    .await;

    let e = drift(
        3,
        &["feature drift: Contract (jensenshannon 0.2004, threshold 0.1)"],
        &["Contract"],
    );
    p.ctx.bus.publish(&e).await.unwrap();

    let outcome = p.next_outcome(Duration::from_secs(10)).await;
    assert_eq!(
        (
            outcome.receiver.as_str(),
            outcome.outcome.as_str(),
            outcome.attempts,
            outcome.status
        ),
        ("alertmanager", "delivered", 1, Some(200)),
        "{outcome:?}"
    );
    assert_eq!(
        (outcome.kind.as_str(), outcome.event_id.as_str()),
        ("drift", e.id.as_str())
    );

    // Alertmanager routed the alert to its webhook receiver, labels intact.
    let got = webhook.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].path, "/alertmanager");
    let msg = json(&got[0].body);
    assert_eq!(msg["receiver"], "test");
    assert_eq!(msg["status"], "firing");
    let alert = &msg["alerts"][0];
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "ModelbusDrift");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["service"], "modelbus");
    assert_eq!(labels["model"], "telco-churn");
    assert_eq!(labels["version"], "3");
    assert_eq!(labels["environment"], "production");
    assert_eq!(
        alert["annotations"]["summary"],
        "Drift in telco-churn v3 (production)"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("Contract (jensenshannon 0.2004"),
        "{alert}"
    );
    assert!(
        alert["annotations"]["report"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/reports/{}", Sha256Digest::of(b"report"))),
        "{alert}"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with("/v1/models/telco-churn"),
        "{alert}"
    );

    // And holds it as active, ending a repeat interval after the event.
    let alerts: serde_json::Value = modelbus_core::http::client()
        .unwrap()
        .get(format!("{}/api/v2/alerts", am.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = &alerts[0];
    assert_eq!(held["status"]["state"], "active");
    let ends = time::OffsetDateTime::parse(
        held["endsAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expected = e.time + Duration::from_secs(3600);
    assert!(
        (ends - expected).abs() < time::Duration::seconds(1),
        "{held}"
    );
}

// ---------------------------------------------------------------------------
// (2) signed CloudEvents

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver's answer that checks the signature itself and refuses a bad
/// one (401).
fn verifying() -> Answer {
    Arc::new(|_: usize, headers: &HeaderMap, body: &[u8]| {
        match signature::verify_signature(SECRET, headers, body, Duration::from_secs(300)) {
            Ok(()) => Reply::ok(),
            Err(_) => Reply {
                status: 401,
                ..Reply::ok()
            },
        }
    })
}

/// A `cloudevents` receiver of rejections at `{url}/hook`, signing with
/// [`SECRET`] (written to a file in `dir`).
fn signed_receiver(name: &str, url: &str, dir: &std::path::Path) -> ReceiverConfig {
    let secret_file = dir.join(format!("{name}.secret"));
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut ce = receiver(name, ReceiverFormat::Cloudevents, &format!("{url}/hook"));
    ce.secret = Some(SecretRef::file(&secret_file));
    ce.events = vec![NotificationKind::Rejection];
    ce
}

fn rejected() -> Envelope<BatchRejected> {
    Envelope::new(
        "/modelbus/ingest",
        &format!("{}/rejected", uuid::Uuid::new_v4()),
        BatchRejected {
            dataset: DatasetName::parse("telco-churn").unwrap(),
            spec_digest: Sha256Digest::of(b"spec"),
            batch_sha256: Sha256Digest::of(b"batch"),
            report_sha256: Sha256Digest::of(b"validation"),
            reasons: vec![
                "column tenure: expect_column_values_to_not_be_null failed on 12 rows".into(),
            ],
        },
    )
}

#[tokio::test]
async fn cloudevents_are_signed_and_the_receiver_verifies_them() {
    let hook = Hook::start(verifying()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Platform::start(vec![signed_receiver("ce", &hook.url, dir.path())]).await;

    // Not wanted by the receiver: never sent.
    p.ctx.bus.publish(&drift(1, &["x"], &["x"])).await.unwrap();
    let e = rejected();
    p.ctx.bus.publish(&e).await.unwrap();

    let outcome = p.next_outcome(Duration::from_secs(10)).await;
    assert_eq!(
        (
            outcome.receiver.as_str(),
            outcome.kind.as_str(),
            outcome.outcome.as_str(),
            outcome.status
        ),
        ("ce", "rejection", "delivered", Some(200)),
        "{outcome:?}"
    );
    let got = hook.got();
    assert_eq!(got.len(), 1, "only the rejection is sent");
    let req = &got[0];
    assert_eq!(req.headers["content-type"], "application/cloudevents+json");
    assert_eq!(req.headers[signature::ID_HEADER], e.id.as_str());
    assert!(
        req.headers[signature::SIGNATURE_HEADER]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
    let ev = json(&req.body);
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "io.modelbus.data.batch.rejected");
    assert_eq!(ev["source"], "/modelbus/notifier");
    assert_eq!(ev["id"], e.id.as_str());
    assert_eq!(ev["subject"], "telco-churn");
    assert_eq!(ev["data"]["kind"], "rejection");
    assert_eq!(ev["data"]["dataset"], "telco-churn");
    assert_eq!(
        ev["data"]["event"]["batch_sha256"],
        Sha256Digest::of(b"batch").to_hex()
    );

    // What the receiver got verifies; a changed body or another secret does not.
    let tolerance = Duration::from_secs(300);
    assert_eq!(
        signature::verify_signature(SECRET, &req.headers, &req.body, tolerance),
        Ok(())
    );
    let mut tampered = req.body.to_vec();
    let at = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[at] = b'2';
    assert_eq!(
        signature::verify_signature(SECRET, &req.headers, &tampered, tolerance),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        signature::verify_signature("another secret", &req.headers, &req.body, tolerance),
        Err(SignatureError::Mismatch)
    );
}

// ---------------------------------------------------------------------------
// (3) a receiver that is down or slow holds up nobody

#[tokio::test]
async fn down_or_slow_receivers_never_hold_up_the_others_and_failures_are_retried_then_recorded() {
    let good = Hook::ok().await;
    let slow = Hook::start(Arc::new(|_: usize, _: &HeaderMap, _: &[u8]| Reply {
        delay: Duration::from_secs(30),
        ..Reply::ok()
    }))
    .await;
    // Busy once (503, Retry-After: 0), then fine.
    let flaky = Hook::start(Arc::new(|n: usize, _: &HeaderMap, _: &[u8]| {
        if n.is_multiple_of(2) {
            Reply {
                status: 503,
                retry_after: Some("0"),
                ..Reply::ok()
            }
        } else {
            Reply::ok()
        }
    }))
    .await;
    let refusing = Hook::start(Arc::new(|_: usize, _: &HeaderMap, _: &[u8]| Reply {
        status: 400,
        ..Reply::ok()
    }))
    .await;
    // Nothing listens there.
    let closed = modelbus_core::nats_server::free_port().unwrap();

    let mut slow_cfg = receiver("slow", ReceiverFormat::Slack, &slow.url);
    slow_cfg.timeout = Duration::from_millis(700);
    slow_cfg.max_attempts = 2;
    let mut p = Platform::start(vec![
        receiver(
            "down",
            ReceiverFormat::Slack,
            &format!("http://127.0.0.1:{closed}/hook"),
        ),
        slow_cfg,
        receiver("good", ReceiverFormat::Slack, &good.url),
        receiver("flaky", ReceiverFormat::Slack, &flaky.url),
        receiver("refusing", ReceiverFormat::Slack, &refusing.url),
    ])
    .await;

    let started = Instant::now();
    let first = drift(1, &["Contract drifted"], &["Contract"]);
    let second = drift(1, &["tenure drifted"], &["tenure"]);
    p.ctx.bus.publish(&first).await.unwrap();
    p.ctx.bus.publish(&second).await.unwrap();
    // Both reach the good receiver while the slow one still holds the first.
    good.wait_for(2, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "the good receiver waited {took:?}, as long as the slow one's timeout"
    );

    // 5 receivers × 2 events; the slow one needs 2 × 700 ms per event.
    let outcomes = p.outcomes(10, Duration::from_secs(15)).await;
    let of = |receiver: &str, event: &str| {
        outcomes
            .iter()
            .find(|o| o.receiver == receiver && o.event_id == event)
            .unwrap_or_else(|| panic!("no outcome for {receiver}: {outcomes:#?}"))
            .clone()
    };
    for e in [first.id.as_str(), second.id.as_str()] {
        let good = of("good", e);
        assert_eq!((good.outcome.as_str(), good.attempts), ("delivered", 1));
        let down = of("down", e);
        assert_eq!(
            (down.outcome.as_str(), down.attempts, down.status),
            ("failed", 3, None)
        );
        assert!(
            down.error.as_deref().unwrap().contains("connect"),
            "{down:?}"
        );
        let slow = of("slow", e);
        assert_eq!((slow.outcome.as_str(), slow.attempts), ("failed", 2));
        assert!(
            slow.error.as_deref().unwrap().contains("timed out"),
            "{slow:?}"
        );
        let flaky = of("flaky", e);
        assert_eq!(
            (flaky.outcome.as_str(), flaky.attempts, flaky.status),
            ("delivered", 2, Some(200))
        );
        let refused = of("refusing", e);
        assert_eq!(
            (refused.outcome.as_str(), refused.attempts, refused.status),
            ("failed", 1, Some(400)),
            "no retry on a 4xx"
        );
        assert!(
            refused
                .error
                .as_deref()
                .unwrap()
                .contains("HTTP 400: answer"),
            "{refused:?}"
        );
    }
    assert_eq!(
        slow.got().len(),
        4,
        "the slow receiver was tried twice per event"
    );
    assert_eq!(refusing.got().len(), 2, "once per event");
}

// ---------------------------------------------------------------------------
// (4) repeats within the repeat interval

#[tokio::test]
async fn repeats_within_the_repeat_interval_are_deduplicated() {
    let hook = Hook::ok().await;
    let mut p = Platform::start(vec![receiver("chat", ReceiverFormat::Slack, &hook.url)]).await;

    // Old news (older than the repeat interval) is not sent at all.
    let mut old = drift(
        2,
        &["Contract (jensenshannon 0.5, threshold 0.1)"],
        &["Contract"],
    );
    old.time -= Duration::from_secs(2 * 3600);
    // The same drift twice (other scores), then drift of another column.
    let a = drift(
        2,
        &["Contract (jensenshannon 0.2004, threshold 0.1)"],
        &["Contract"],
    );
    let b = drift(
        2,
        &["Contract (jensenshannon 0.3117, threshold 0.1)"],
        &["Contract"],
    );
    let c = drift(
        2,
        &["tenure (wasserstein 0.21, threshold 0.1)"],
        &["tenure"],
    );
    for e in [&old, &a, &b, &c] {
        p.ctx.bus.publish(e).await.unwrap();
    }
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(p.next_outcome(Duration::from_secs(10)).await);
    }
    let seen: Vec<(&str, &str, u32)> = outcomes
        .iter()
        .map(|o| (o.event_id.as_str(), o.outcome.as_str(), o.attempts))
        .collect();
    assert_eq!(
        seen,
        vec![
            (a.id.as_str(), "delivered", 1),
            (b.id.as_str(), "deduplicated", 0),
            (c.id.as_str(), "delivered", 1),
        ]
    );
    let got = hook.got();
    assert_eq!(got.len(), 2, "the repeat and the old news were not sent");
    let first = json(&got[0].body);
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .starts_with("[WARNING] Drift in telco-churn v2")
    );
    let section = first["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        section.contains("Contract (jensenshannon 0.2004"),
        "{section}"
    );
    assert!(
        json(&got[1].body)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("tenure")
    );
}

// ---------------------------------------------------------------------------
// (5) bad configuration

#[tokio::test]
async fn a_receiver_url_that_does_not_parse_is_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modelbus.toml");
    std::fs::write(
        &path,
        "[[notifications.receivers]]\nname = \"am\"\nformat = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
         [[notifications.receivers]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"hooks.example.com/services/x y\"\n",
    )
    .unwrap();
    let e = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
    assert!(e.contains("notifications.receivers[1].url"), "{e}");
    assert!(
        !e.contains("services/x"),
        "the URL (maybe a credential) is echoed: {e}"
    );
}

#[tokio::test]
async fn a_ca_file_that_does_not_exist_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let nats = TestNats::start().await;
    let mut config = Config::default();
    let mut chat = receiver(
        "chat",
        ReceiverFormat::Slack,
        "https://hooks.example.com/services/T0/B0/x",
    );
    chat.ca_file = Some(missing.clone());
    config.notifications.receivers = vec![
        receiver("am", ReceiverFormat::Alertmanager, "http://127.0.0.1:9093"),
        chat,
    ];
    config.validate().unwrap();
    let ctx = Context {
        bus: Bus::connect(nats.url(), "notify-test", config.bus.clone())
            .await
            .unwrap(),
        store: ArtifactStore::local(dir.path()).unwrap(),
        config: Arc::new(config),
        readiness: Readiness::new(),
        shutdown: CancellationToken::new(),
    };
    let e = modelbus_notify::run(ctx.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notifications.receivers[1].ca_file")
            && e.contains(&missing.display().to_string()),
        "{e}"
    );
    assert_eq!(
        ctx.readiness.report().get(modelbus_notify::CONSUMER),
        Some(&false),
        "a notifier that cannot run shows in /readyz"
    );
}

// ---------------------------------------------------------------------------
// (6) https receivers

/// A private CA and a server certificate it signed for `localhost` and
/// 127.0.0.1, made for one test.
struct TestCa {
    /// The CA's certificate, PEM: what a receiver's `ca_file` holds.
    ca_pem: String,
    /// A TLS server configuration presenting the server certificate (and
    /// the CA's, as a chain).
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "modelbus test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();

        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        Self {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

#[tokio::test]
async fn an_https_receiver_trusted_through_its_ca_file_gets_signed_cloudevents() {
    let ca = TestCa::new();
    let hook = Hook::start_tls(verifying(), ca.server.clone(), "localhost").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let mut ce = signed_receiver("ce-tls", &hook.url, dir.path());
    ce.ca_file = Some(ca_file);
    let mut p = Platform::start(vec![ce]).await;

    let e = rejected();
    p.ctx.bus.publish(&e).await.unwrap();
    let outcome = p.next_outcome(Duration::from_secs(10)).await;
    assert_eq!(
        summary(&outcome),
        ("ce-tls", e.id.as_str(), "delivered", 1, Some(200)),
        "{outcome:?}"
    );
    let got = hook.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = &got[0];
    assert_eq!(req.path, "/hook");
    assert_eq!(req.headers["content-type"], "application/cloudevents+json");
    assert_eq!(req.headers[signature::ID_HEADER], e.id.as_str());
    assert_eq!(
        signature::verify_signature(SECRET, &req.headers, &req.body, Duration::from_secs(300)),
        Ok(())
    );
    let ev = json(&req.body);
    assert_eq!(ev["id"], e.id.as_str());
    assert_eq!(ev["data"]["kind"], "rejection");
    assert!(
        hook.handshake_errors.lock().unwrap().is_empty(),
        "{:?}",
        hook.handshake_errors
    );
}

#[tokio::test]
async fn an_https_receiver_without_its_ca_file_is_not_trusted_and_the_failure_is_recorded() {
    let ca = TestCa::new();
    let hook = Hook::start_tls(verifying(), ca.server.clone(), "127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut ce = signed_receiver("ce-untrusted", &hook.url, dir.path());
    ce.max_attempts = 2;
    let mut p = Platform::start(vec![ce]).await;

    let e = rejected();
    p.ctx.bus.publish(&e).await.unwrap();
    let outcome = p.next_outcome(Duration::from_secs(10)).await;
    assert_eq!(
        summary(&outcome),
        ("ce-untrusted", e.id.as_str(), "failed", 2, None),
        "{outcome:?}"
    );
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.contains("certificate") && !error.contains("/hook"),
        "{error}"
    );
    assert!(
        hook.got().is_empty(),
        "nothing was sent over an untrusted connection"
    );
    // The handshakes did happen, and the client ended them.
    let refused = hook.handshake_errors.lock().unwrap().clone();
    assert_eq!(refused.len(), 2, "{refused:?}");
}
