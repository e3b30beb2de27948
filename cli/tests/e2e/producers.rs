//! Producers that skip the HTTP upload: they put the object in the artifact
//! store themselves and publish `data.batch.submitted` on NATS.

use std::time::Duration;

use modelbus_core::events::{BatchSubmitted, Envelope};
use modelbus_core::ids::{DatasetName, PipelineRunId, Sha256Digest};
use modelbus_testkit::telco_csv;

use crate::harness::{Db, TestPlatform};

async fn publish_submitted(t: &TestPlatform, batch: Sha256Digest, size: u64) -> PipelineRunId {
    let spec = t.client.datasets().await.unwrap()["datasets"][0]["latest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = Sha256Digest::parse(&spec).unwrap();
    let bus = modelbus_core::bus::Bus::connect(t.nats.url(), "producer", t.config.bus.clone())
        .await
        .unwrap();
    let run = PipelineRunId::for_batch(&spec, &batch);
    let e = Envelope::new(
        "/producer/nightly-export",
        run.as_str(),
        BatchSubmitted {
            dataset: DatasetName::parse("telco-churn").unwrap(),
            spec_digest: spec,
            batch_sha256: batch,
            size_bytes: size,
            submitted_by: "nightly-export".into(),
        },
    )
    .with_pipeline_run(Some(run.clone()));
    bus.publish(&e).await.unwrap();
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_put_plus_an_event_runs_the_pipeline() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let store =
        modelbus_core::artifact::ArtifactStore::open(&t.config.artifact_location()).unwrap();
    let bytes = std::fs::read(telco_csv()).unwrap();
    let stored = store.put(bytes.into()).await.unwrap();
    let run = publish_submitted(&t, stored.sha256, stored.size).await;
    let r = t
        .client
        .wait_run(run.as_str(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(r["state"], "deployed", "{r:#}");
    // Nobody authenticated the name a bus event gives: it is recorded as
    // claimed, and that name still may not approve the version.
    assert_eq!(r["submitted_by"], "unverified:nightly-export");
    let v = t.client.model_version("telco-churn", 1).await.unwrap();
    assert_eq!(v["author"], "unverified:nightly-export");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_missing_object_is_dead_lettered_and_its_run_fails() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let missing = Sha256Digest::of(b"never stored");
    let run = publish_submitted(&t, missing, 12).await;
    let r = t
        .client
        .wait_run(run.as_str(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(r["state"], "failed", "{r:#}");
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("not in the artifact store") && reasons.contains("ingest"),
        "{reasons}"
    );
    // Nothing else moved.
    assert!(t.client.model("telco-churn").await.is_err());
}
