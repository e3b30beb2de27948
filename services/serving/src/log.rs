//! The prediction log: every answered prediction becomes a
//! [`PredictionRecord`], batched by count, size and time into
//! `inference.logged` events on the `MODELBUS_INFERENCE` stream for the
//! monitor.
//!
//! A request never waits for the log: records go into a bounded queue
//! (`serving.log_buffer_records`) with `try_send`, and a record that finds it
//! full is dropped and counted (`modelbus_serving_log_dropped_total`; the next
//! batch says how many in `dropped_before`). Sampling (`serving.log_sample_rate`)
//! is decided by the prediction id alone: the first 8 bytes of the SHA-256 of
//! its text (the hyphenated UUID) as a fraction of 2^64, logged when below the
//! rate, so anyone holding an id can tell whether it was logged (a UUIDv7's
//! own low bits are partly a counter, not random enough to sample by).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use modelbus_core::Context;
use modelbus_core::events::{Envelope, InferenceLogged, PredictionRecord};
use modelbus_core::ids::Environment;
use tokio::sync::mpsc;

use crate::SOURCE;

/// A new prediction id (UUIDv7: time-ordered, 62 random bits).
pub fn new_prediction_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Whether the prediction with this id is logged at `rate`.
pub fn sampled(id: &uuid::Uuid, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let digest = modelbus_core::ids::Sha256Digest::of(id.to_string().as_bytes());
    let bits = u64::from_be_bytes(digest.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    (bits as f64) / 18_446_744_073_709_551_616.0 < rate
}

/// One environment's handle on the log (cheap to clone).
#[derive(Debug, Clone)]
pub struct PredictionLog {
    tx: mpsc::Sender<PredictionRecord>,
    sample_rate: f64,
    dropped: Arc<AtomicU64>,
    environment: Environment,
}

impl PredictionLog {
    /// Whether the prediction with this id is logged.
    pub fn wants(&self, id: &uuid::Uuid) -> bool {
        sampled(id, self.sample_rate)
    }

    /// Queues a record without waiting; a full queue drops it, counted.
    pub fn push(&self, record: PredictionRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("modelbus_serving_log_dropped_total", "environment" => self.environment.as_str())
                .increment(1);
        }
    }
}

/// An upper estimate of a record's size as JSON, without serialising it (the
/// batch is serialised once, when it is published): the fixed fields, then
/// each input's key and value with quotes, separators and escapes allowed for.
fn size_of(record: &PredictionRecord) -> usize {
    const FIXED: usize = 320;
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.len() * 2 + 2,
        serde_json::Value::Number(_) => 24,
        serde_json::Value::Bool(_) => 5,
        serde_json::Value::Null => 4,
        // Records are flat; a nested value (refused by the model) counts large.
        other => other.to_string().len() * 2,
    };
    FIXED
        + record.entity.as_ref().map_or(0, |e| e.len() * 2)
        + record.label.len() * 2
        + record
            .input
            .iter()
            .map(|(k, v)| k.len() * 2 + 4 + value(v))
            .sum::<usize>()
}

/// Opens the log of one environment: the handle requests push to, and the
/// task that publishes batches until shutdown (then flushes what it holds).
pub fn open(
    ctx: &Context,
    environment: Environment,
    replica: String,
) -> (PredictionLog, impl std::future::Future<Output = ()> + use<>) {
    let c = &ctx.config.serving;
    // Exported from the start (at 0), so the first drop is an increase.
    metrics::counter!("modelbus_serving_log_dropped_total", "environment" => environment.as_str())
        .increment(0);
    let (tx, rx) = mpsc::channel(c.log_buffer_records);
    let dropped = Arc::new(AtomicU64::new(0));
    let log = PredictionLog {
        tx,
        sample_rate: c.log_sample_rate,
        dropped: dropped.clone(),
        environment,
    };
    let task = publish(ctx.clone(), rx, environment, replica, dropped);
    (log, task)
}

async fn publish(
    ctx: Context,
    mut rx: mpsc::Receiver<PredictionRecord>,
    environment: Environment,
    replica: String,
    dropped: Arc<AtomicU64>,
) {
    let c = ctx.config.serving.clone();
    if let Err(e) = ctx
        .bus
        .ensure_inference_stream(c.log_max_age, c.log_max_bytes)
        .await
    {
        tracing::error!(error = %e, "cannot create the prediction-log stream; predictions are not logged");
    }
    let mut batch: Vec<PredictionRecord> = Vec::with_capacity(c.log_batch_records);
    // Records are taken from the queue in bursts (one wake-up for everything
    // queued, not one per record), then cut into batches by count and size.
    let mut received: Vec<PredictionRecord> = Vec::with_capacity(c.log_batch_records);
    let mut bytes = 0usize;
    // When the batch being filled must go out: the flush interval after its
    // first record.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut open = true;
    while open {
        let n = match deadline {
            None => tokio::select! {
                n = rx.recv_many(&mut received, c.log_batch_records) => n,
                _ = ctx.shutdown.cancelled() => 0,
            },
            Some(at) => tokio::select! {
                n = rx.recv_many(&mut received, c.log_batch_records) => n,
                _ = tokio::time::sleep_until(at) => {
                    flush(&ctx, environment, &replica, &dropped, &mut batch).await;
                    (bytes, deadline) = (0, None);
                    continue;
                }
            },
        };
        if n == 0 {
            // Shutting down, or every handle is gone: take what is queued.
            rx.close();
            while let Ok(r) = rx.try_recv() {
                received.push(r);
            }
            open = false;
        }
        for r in received.drain(..) {
            let size = size_of(&r);
            if !batch.is_empty() && bytes + size > c.log_batch_bytes {
                flush(&ctx, environment, &replica, &dropped, &mut batch).await;
                (bytes, deadline) = (0, None);
            }
            if batch.is_empty() {
                deadline = Some(tokio::time::Instant::now() + c.log_flush_interval);
            }
            bytes += size;
            batch.push(r);
            if batch.len() >= c.log_batch_records {
                flush(&ctx, environment, &replica, &dropped, &mut batch).await;
                (bytes, deadline) = (0, None);
            }
        }
    }
    flush(&ctx, environment, &replica, &dropped, &mut batch).await;
}

/// Publishes one batch, retrying a few times; a batch that still cannot be
/// stored is counted as dropped (the queue keeps absorbing requests meanwhile).
async fn flush(
    ctx: &Context,
    environment: Environment,
    replica: &str,
    dropped: &AtomicU64,
    batch: &mut Vec<PredictionRecord>,
) {
    if batch.is_empty() {
        return;
    }
    let records = std::mem::take(batch);
    let n = records.len() as u64;
    let key = format!(
        "log/{environment}/{replica}/{}",
        records
            .first()
            .map(|r| r.prediction_id.as_str())
            .unwrap_or("")
    );
    let e = Envelope::new(
        SOURCE,
        &key,
        InferenceLogged {
            environment,
            replica: replica.to_string(),
            records,
            dropped_before: dropped.swap(0, Ordering::Relaxed),
        },
    );
    // Stopping: one short attempt (the server may be going away with the process).
    let (attempts, limit) = if ctx.shutdown.is_cancelled() {
        (1, Duration::from_millis(500))
    } else {
        (3, Duration::from_secs(10))
    };
    for attempt in 0..attempts {
        let outcome = tokio::time::timeout(limit, ctx.bus.publish(&e))
            .await
            .unwrap_or_else(|_| {
                Err(modelbus_core::bus::BusError::JetStream {
                    op: "publish inference.logged".into(),
                    reason: format!("no acknowledgement within {limit:?}"),
                })
            });
        match outcome {
            Ok(_) => {
                metrics::counter!("modelbus_serving_logged_total", "environment" => environment.as_str())
                    .increment(n);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, attempt, "cannot publish inference.logged");
                if attempt + 1 < attempts {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
    tracing::error!(
        records = n,
        "gave up publishing a batch of logged predictions"
    );
    dropped.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("modelbus_serving_log_dropped_total", "environment" => environment.as_str())
        .increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_and_counts_without_blocking() {
        let (tx, mut rx) = mpsc::channel(2);
        let log = PredictionLog {
            tx,
            sample_rate: 1.0,
            dropped: Arc::new(AtomicU64::new(0)),
            environment: Environment::Production,
        };
        let rec = |i: u32| PredictionRecord {
            prediction_id: format!("p{i}"),
            time: "2026-12-03T00:00:00Z".into(),
            model: modelbus_core::ids::ModelName::parse("m").unwrap(),
            version: 1,
            model_sha256: modelbus_core::ids::Sha256Digest::of(b"m"),
            entity: None,
            input: serde_json::Map::new(),
            probability: 0.5,
            label: "Yes".into(),
        };
        for i in 0..5 {
            log.push(rec(i));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().unwrap().prediction_id, "p0");
        assert_eq!(rx.try_recv().unwrap().prediction_id, "p1");
        assert!(rx.try_recv().is_err());
        // The estimate is never below the record's real size.
        let mut r = rec(0);
        r.input
            .insert("MonthlyCharges".into(), serde_json::json!(29.85));
        r.input
            .insert("Contract".into(), serde_json::json!("Month-to-\"month\""));
        r.entity = Some("7590-VHVEG".into());
        assert!(size_of(&r) >= serde_json::to_vec(&r).unwrap().len());
    }

    #[test]
    fn sampling_is_decided_by_the_id_alone_and_matches_the_rate() {
        let ids: Vec<uuid::Uuid> = (0..20_000).map(|_| new_prediction_id()).collect();
        let kept = ids.iter().filter(|i| sampled(i, 0.25)).count();
        assert!((4_500..5_500).contains(&kept), "{kept} of 20000 at 0.25");
        for id in &ids[..100] {
            assert_eq!(sampled(id, 0.25), sampled(id, 0.25));
            assert!(sampled(id, 1.0));
            assert!(!sampled(id, 0.0));
        }
        // A smaller rate keeps a subset of what a larger one keeps.
        assert!(ids.iter().all(|i| !sampled(i, 0.1) || sampled(i, 0.5)));
    }
}
