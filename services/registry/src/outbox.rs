//! The outbox relay: publishes, in order, the events the registry committed
//! with its decisions (see [`crate::store::WriteTx`]), and marks each one
//! published once the stream acknowledged it. A publish that fails is retried
//! with backoff (up to 30 s apart) and nothing behind it overtakes it; an
//! acknowledgement lost in a crash is harmless, because the stream answers the
//! next attempt as a duplicate of the same identity.

use std::sync::Arc;
use std::time::Duration;

use modelbus_core::bus::{Bus, Published};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the relay looks at the outbox without being woken (events
/// committed by another replica, or before a restart).
const SWEEP: Duration = Duration::from_secs(1);
/// Longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Events read per query.
const BATCH: u32 = 100;

/// Wakes the relay after a commit; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Tells the relay that an event was committed.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// Publishes the outbox until `shutdown`.
pub async fn relay(store: Store, bus: Bus, outbox: Outbox, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = match publish_pending(&store, &bus).await {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                SWEEP
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "outbox: publishing failed");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Publishes every pending event in order; stops at the first failure.
async fn publish_pending(store: &Store, bus: &Bus) -> Result<(), String> {
    loop {
        let batch = store
            .pending_outbox(BATCH)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        if let Ok(n) = store.outbox_backlog().await {
            metrics::gauge!("modelbus_registry_outbox_backlog").set(n as f64);
        }
        if batch.is_empty() {
            return Ok(());
        }
        for e in batch {
            let traceparent = (!e.traceparent.is_empty()).then_some(e.traceparent.as_str());
            match bus
                .publish_raw(&e.subject, &e.msg_id, traceparent, e.payload.into())
                .await
            {
                Ok(outcome) => {
                    let duplicate = outcome == Published::Duplicate;
                    metrics::counter!("modelbus_registry_outbox_published_total", "subject" => e.subject.clone())
                        .increment(1);
                    if duplicate {
                        tracing::info!(event = %e.msg_id, "outbox: the stream already held this event");
                    }
                    store
                        .outbox_published(e.seq, duplicate)
                        .await
                        .map_err(|err| format!("marking {} published: {err}", e.msg_id))?;
                }
                Err(err) => {
                    metrics::counter!("modelbus_registry_outbox_failures_total").increment(1);
                    let message = err.to_string();
                    if let Err(mark) = store.outbox_failed(e.seq, &message).await {
                        tracing::warn!(error = %mark, "outbox: cannot record a failed attempt");
                    }
                    return Err(format!(
                        "{} on {} (attempt {}): {message}",
                        e.msg_id,
                        e.subject,
                        e.attempts + 1
                    ));
                }
            }
        }
    }
}
