//! A redelivered event never makes a second model version or a second deployment.

use std::time::Duration;

use crate::harness::{Db, TestPlatform};
use modelbus_core::bus::EVENTS_STREAM;
use serde_json::Value;

/// Republishes the last event on `subject` under a fresh id, so the bus's
/// de-duplication does not drop it: exactly what a redelivery after the duplicate
/// window looks like to a handler. Returns the new message's stream sequence.
async fn redeliver(t: &TestPlatform, subject: &str) -> u64 {
    let js = async_nats::jetstream::new(t.nats().await);
    let mut stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let last = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    let mut event: Value = serde_json::from_slice(&last.payload).unwrap();
    let new_id = format!("redelivered-{}", uuid_like());
    event["id"] = Value::String(new_id.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", new_id.as_str());
    let ack = js
        .publish_with_headers(
            subject.to_string(),
            headers,
            serde_json::to_vec(&event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = stream.info().await;
    ack.sequence
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Waits until a consumer has acknowledged everything up to `seq`.
async fn drained(t: &TestPlatform, consumer: &str, seq: u64) {
    let js = async_nats::jetstream::new(t.nats().await);
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    for _ in 0..400 {
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(consumer).await.unwrap();
        let info = c.info().await.unwrap();
        if info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("consumer {consumer} never acknowledged stream sequence {seq}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_events_do_not_create_a_second_version_or_deployment() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let run = t.deploy_telco().await;
    let kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .unwrap();
    let before = kv.entry("staging.telco-churn").await.unwrap().unwrap();

    // The trainer sees features.ready again: it trains the same model again, and
    // the registry answers with the existing version.
    let seq = redeliver(&t, "modelbus.features.ready").await;
    drained(&t, "trainer", seq).await;
    // The registry sees model.trained again: same decision, the stored approval again.
    let seq = redeliver(&t, "modelbus.model.trained").await;
    drained(&t, "registry", seq).await;
    // The deployer sees the same approval again: nothing to do, no refusal.
    let seq = redeliver(&t, "modelbus.approval.granted").await;
    drained(&t, "deployer", seq).await;
    let seq = redeliver(&t, "modelbus.data.batch.validated").await;
    drained(&t, "features", seq).await;
    let seq = redeliver(&t, "modelbus.deployment.completed").await;
    drained(&t, "registry", seq).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["versions"].as_array().unwrap().len(), 1, "{model:#}");
    assert_eq!(model["aliases"]["staging"], 1);
    let after = kv.entry("staging.telco-churn").await.unwrap().unwrap();
    assert_eq!(
        after.revision, before.revision,
        "the desired state was not rewritten"
    );
    let js = async_nats::jetstream::new(t.nats().await);
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    assert!(
        stream
            .get_last_raw_message_by_subject("modelbus.approval.refused")
            .await
            .is_err(),
        "a redelivered approval must not be refused as a replay"
    );
    let again = t
        .client
        .pipeline_run(run["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(again["state"], "deployed");
    let timeline = t
        .http
        .get(format!(
            "{}/v1/models/telco-churn/deployments",
            t.config.registry_http_url()
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let completed = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "completed")
        .count();
    assert!(completed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_dead_lettered_and_the_service_keeps_running() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let js = async_nats::jetstream::new(t.nats().await);
    // A features.ready whose data is missing fields, for a run that exists.
    let resp = t
        .client
        .submit("telco-churn", &modelbus_testkit::telco_csv())
        .await
        .unwrap();
    let run_id = resp["pipeline_run"].as_str().unwrap().to_string();
    t.client
        .wait_run(&run_id, Duration::from_secs(60))
        .await
        .unwrap();
    let bad = serde_json::json!({
        "specversion": "1.0", "id": "bad-1", "source": "/test", "type": "io.modelbus.features.ready.v1",
        "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json", "pipelinerun": run_id,
        "data": { "dataset": "telco-churn" }
    });
    js.publish(
        "modelbus.features.ready",
        serde_json::to_vec(&bad).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let dlq = js.get_stream("MODELBUS_DLQ").await.unwrap();
    let mut letter = None;
    for _ in 0..200 {
        if let Ok(m) = dlq
            .get_last_raw_message_by_subject("modelbus_dlq.trainer")
            .await
        {
            letter = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let letter: Value = serde_json::from_slice(&letter.expect("dead letter").payload).unwrap();
    assert!(
        letter["error"].as_str().unwrap().contains("missing field"),
        "{letter:#}"
    );
    assert_eq!(letter["consumer"], "trainer");
    // The service keeps running: the pipeline still works afterwards.
    let ready = t
        .http
        .get(format!("{}/readyz", t.config.registry_http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
