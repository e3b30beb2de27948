//! The bus against a real nats-server: delivery, retries with backoff, dead
//! letters, de-duplication, KV, and the refusal of servers older than 2.10.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use modelbus_core::CancellationToken;
use modelbus_core::bus::{Bus, BusError, DLQ_STREAM, EVENTS_STREAM, HandlerError};
use modelbus_core::config::BusConfig;
use modelbus_core::events::{BatchSubmitted, DeadLetter, Envelope, EventPayload};
use modelbus_core::ids::{DatasetName, Sha256Digest};
use modelbus_testkit::TestNats;

fn config() -> BusConfig {
    BusConfig {
        max_deliver: 3,
        ack_wait: Duration::from_secs(2),
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        duplicate_window: Duration::from_secs(60),
    }
}

fn event(key: &str) -> Envelope<BatchSubmitted> {
    Envelope::new(
        "/test",
        key,
        BatchSubmitted {
            dataset: DatasetName::parse("d").unwrap(),
            spec_digest: Sha256Digest::of(b"spec"),
            batch_sha256: Sha256Digest::of(key.as_bytes()),
            size_bytes: 1,
            submitted_by: "test".into(),
        },
    )
}

/// Runs a consumer in the background until the returned token is cancelled.
fn spawn_consumer<F, Fut>(bus: &Bus, name: &'static str, handler: F) -> CancellationToken
where
    F: Fn(modelbus_core::bus::Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let stop = CancellationToken::new();
    let bus = bus.clone();
    let s = stop.clone();
    tokio::spawn(async move {
        bus.consume(name, &[&BatchSubmitted::subject()], s, || {}, handler)
            .await
            .unwrap();
    });
    stop
}

async fn dead_letter(bus: &Bus, consumer: &str) -> Option<DeadLetter> {
    let stream = bus.jetstream().get_stream(DLQ_STREAM).await.unwrap();
    for _ in 0..200 {
        if let Ok(m) = stream
            .get_last_raw_message_by_subject(&format!("modelbus_dlq.{consumer}"))
            .await
        {
            return Some(serde_json::from_slice(&m.payload).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn events_are_delivered_decoded_and_acked() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = spawn_consumer(&bus, "c1", move |d| {
        let tx = tx.clone();
        async move {
            let e = d.decode::<BatchSubmitted>()?;
            tx.send((e.id.clone(), d.delivered)).unwrap();
            Ok(())
        }
    });
    let e = event("a");
    bus.publish(&e).await.unwrap();
    let (id, delivered) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, e.id);
    assert_eq!(delivered, 1);
    // Acked: not delivered again after the ack wait.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .is_err()
    );
    stop.cancel();
}

#[tokio::test]
async fn retries_with_backoff_then_dead_letters_with_the_last_error() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let stop = spawn_consumer(&bus, "flaky", move |d| {
        let c = c.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            Err(HandlerError::Retry(format!(
                "dependency down (attempt {n}, delivery {})",
                d.delivered
            )))
        }
    });
    let e = event("b").with_pipeline_run(Some(modelbus_core::ids::PipelineRunId::for_batch(
        &Sha256Digest::of(b"s"),
        &Sha256Digest::of(b"b"),
    )));
    bus.publish(&e).await.unwrap();
    let letter = dead_letter(&bus, "flaky").await.expect("dead letter");
    assert_eq!(letter.deliveries, 3);
    assert!(letter.error.contains("attempt 3"), "{}", letter.error);
    assert_eq!(letter.subject, "modelbus.data.batch.submitted");
    assert_eq!(letter.pipelinerun, e.pipelinerun);
    assert!(letter.original.contains(&e.id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "exactly max_deliver attempts"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_then_succeeds() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let stop = spawn_consumer(&bus, "recovers", move |_d| {
        let c = c.clone();
        async move {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(HandlerError::Retry("first attempt fails".into()))
            } else {
                Ok(())
            }
        }
    });
    bus.publish(&event("c")).await.unwrap();
    for _ in 0..200 {
        if calls.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let dlq = bus.jetstream().get_stream(DLQ_STREAM).await.unwrap();
    assert!(
        dlq.get_last_raw_message_by_subject("modelbus_dlq.recovers")
            .await
            .is_err()
    );
    stop.cancel();
}

#[tokio::test]
async fn undecodable_and_rejected_events_are_dead_lettered_at_once() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let stop = spawn_consumer(&bus, "strict", move |d| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            d.decode::<BatchSubmitted>()?;
            Ok(())
        }
    });
    bus.publish_raw(
        &BatchSubmitted::subject(),
        "garbage-1",
        None,
        bytes::Bytes::from_static(b"{not json"),
    )
    .await
    .unwrap();
    let letter = dead_letter(&bus, "strict").await.expect("dead letter");
    assert_eq!(letter.deliveries, 1, "a permanent error is not retried");
    assert!(
        letter.error.contains("not a JSON CloudEvent"),
        "{}",
        letter.error
    );
    assert_eq!(letter.original, "{not json");
    // The consumer keeps going: the next valid event is handled.
    bus.publish(&event("d")).await.unwrap();
    for _ in 0..200 {
        if calls.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    stop.cancel();
}

#[tokio::test]
async fn republishing_the_same_event_id_is_deduplicated() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let e = event("e");
    bus.publish(&e).await.unwrap();
    bus.publish(&e).await.unwrap();
    let mut stream = bus.jetstream().get_stream(EVENTS_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    bus.publish(&event("f")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn kv_buckets_are_created_once_and_reopened() {
    let nats = TestNats::start().await;
    let bus = Bus::connect(nats.url(), "test", config()).await.unwrap();
    let kv = bus.kv("deployments", 8).await.unwrap();
    kv.put("staging.m", bytes::Bytes::from_static(b"v1"))
        .await
        .unwrap();
    let again = bus.kv("deployments", 8).await.unwrap();
    assert_eq!(
        again.get("staging.m").await.unwrap().unwrap(),
        bytes::Bytes::from_static(b"v1")
    );
}

/// Debian's nats-server 2.9.10 (installed on the machine, see scripts/bootstrap.sh)
/// cannot create KV buckets: connecting to it must fail with a clear message.
#[tokio::test]
async fn a_server_older_than_2_10_is_refused_with_a_clear_message() {
    let old = std::env::var("MODELBUS_TEST_OLD_NATS_SERVER")
        .unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    let version = modelbus_core::nats_server::binary_version(std::path::Path::new(&old))
        .unwrap_or_else(|| panic!("no old nats-server at {old}: install Debian's nats-server (scripts/bootstrap.sh does) or set MODELBUS_TEST_OLD_NATS_SERVER"));
    let parsed = modelbus_core::bus::parse_version(&version).unwrap();
    assert!(
        parsed < (2, 10),
        "{old} is {version}, not an old server: point MODELBUS_TEST_OLD_NATS_SERVER at a 2.9 binary"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = modelbus_core::nats_server::free_port().unwrap();
    let mut child = tokio::process::Command::new(&old)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let err = Bus::connect(&format!("nats://127.0.0.1:{port}"), "test", config())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::ServerTooOld { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("2.9.10") && msg.contains("2.10 or newer"),
        "{msg}"
    );
    let _ = child.kill().await;
    // The binary finder refuses it too when it is the only candidate.
    let e = modelbus_core::nats_server::find_binary(Some(std::path::Path::new(&old))).unwrap_err();
    assert!(e.to_string().contains("2.9.10"), "{e}");
}
