//! The event bus over NATS JetStream.
//!
//! One stream, `MODELBUS_EVENTS`, holds every event on `modelbus.>`; each service
//! reads it through its own durable pull consumer with explicit acks. A handler
//! that fails is retried with backoff up to `max_deliver`; then, or at once for an
//! event that can never be handled, the event goes to `MODELBUS_DLQ` with the last
//! error. Publishing sets `Nats-Msg-Id` to the event id, so a republished event is
//! dropped by the server within the duplicate window.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::BusConfig;
use crate::events::{DeadLetter, DecodeError, Envelope, EventPayload, decode};
use crate::ids::PipelineRunId;

/// Stream holding every event.
pub const EVENTS_STREAM: &str = "MODELBUS_EVENTS";
/// Stream holding dead letters.
pub const DLQ_STREAM: &str = "MODELBUS_DLQ";
/// Subject prefix of dead letters (`modelbus_dlq.<consumer>`).
pub const DLQ_PREFIX: &str = "modelbus_dlq";
/// Oldest server accepted: KV buckets and multi-filter consumers need 2.10.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Could not connect.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server is too old.
    #[error(
        "NATS server at {url} is version {version}; modelbus needs {}.{} or newer (KV buckets, \
         multi-subject consumers). Run scripts/bootstrap.sh and use .tools/bin/nats-server, or \
         unset NATS_URL to let `modelbus up` start its own",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    ServerTooOld {
        /// The URL.
        url: String,
        /// Reported version.
        version: String,
    },
    /// A JetStream operation failed.
    #[error("JetStream {op}: {reason}")]
    JetStream {
        /// What was being done.
        op: String,
        /// Why it failed.
        reason: String,
    },
}

fn js_err(op: impl Into<String>) -> impl FnOnce(String) -> BusError {
    let op = op.into();
    move |reason| BusError::JetStream { op, reason }
}

/// How a handler failed, which decides what happens to the event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (a dependency is down): redelivered with backoff, then
    /// dead-lettered after `max_deliver` attempts.
    #[error("{0}")]
    Retry(String),
    /// Can never succeed (undecodable event, refers to nothing): dead-lettered now.
    #[error("{0}")]
    Reject(String),
}

impl HandlerError {
    /// A retryable error from anything displayable, with its cause chain.
    pub fn retry(e: impl std::fmt::Display) -> Self {
        Self::Retry(e.to_string())
    }
    /// A permanent error.
    pub fn reject(e: impl std::fmt::Display) -> Self {
        Self::Reject(e.to_string())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        HandlerError::Reject(e.to_string())
    }
}

/// One delivery of an event to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Subject it was published on.
    pub subject: String,
    /// Raw CloudEvent JSON.
    pub payload: Bytes,
    /// Delivery attempt, from 1.
    pub delivered: i64,
    /// Sequence in the events stream.
    pub stream_sequence: u64,
}

impl Delivery {
    /// Decodes the event as `T`; a mismatch is a permanent error.
    pub fn decode<T: EventPayload>(&self) -> Result<Envelope<T>, HandlerError> {
        Ok(decode::<T>(&self.payload)?)
    }

    /// The CloudEvents `type`, if the payload is JSON with one.
    pub fn event_type(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(rename = "type")]
            t: String,
        }
        serde_json::from_slice::<T>(&self.payload).ok().map(|t| t.t)
    }

    fn peek(&self) -> (Option<String>, Option<PipelineRunId>, Option<String>) {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(rename = "type")]
            t: Option<String>,
            pipelinerun: Option<PipelineRunId>,
            traceparent: Option<String>,
        }
        match serde_json::from_slice::<P>(&self.payload) {
            Ok(p) => (p.t, p.pipelinerun, p.traceparent),
            Err(_) => (None, None, None),
        }
    }
}

/// A connected bus handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BusConfig,
}

/// Parses `major.minor` out of a server version string.
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut it = v.trim_start_matches('v').split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Bus {
    /// Connects, refuses servers older than 2.10, and makes sure the streams exist.
    pub async fn connect(url: &str, name: &str, config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let version = client.server_info().version;
        match parse_version(&version) {
            Some(v) if v >= MIN_SERVER_VERSION => {}
            _ => {
                return Err(BusError::ServerTooOld {
                    url: url.to_string(),
                    version,
                });
            }
        }
        let js = jetstream::new(client.clone());
        let bus = Self { client, js, config };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// The underlying client, for request/reply and plain subscriptions.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Consumption settings in force.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    async fn ensure_streams(&self) -> Result<(), BusError> {
        for (name, subjects) in [
            (EVENTS_STREAM, vec!["modelbus.>".to_string()]),
            (DLQ_STREAM, vec![format!("{DLQ_PREFIX}.>")]),
        ] {
            let cfg = stream::Config {
                name: name.to_string(),
                subjects,
                storage: stream::StorageType::File,
                duplicate_window: self.config.duplicate_window,
                ..Default::default()
            };
            self.js
                .get_or_create_stream(cfg)
                .await
                .map_err(|e| js_err(format!("create stream {name}"))(e.to_string()))?;
        }
        Ok(())
    }

    /// Publishes an event and waits until the stream has stored it.
    pub async fn publish<T: EventPayload>(&self, env: &Envelope<T>) -> Result<(), BusError> {
        self.publish_raw(
            &T::subject(),
            &env.id,
            env.traceparent.as_deref(),
            env.to_json().into(),
        )
        .await?;
        metrics::counter!("modelbus_events_published_total", "type" => T::NAME).increment(1);
        tracing::debug!(event = T::NAME, id = %env.id, "published");
        Ok(())
    }

    /// Publishes raw bytes on a subject with a message id (tests use this to put
    /// arbitrary, even invalid, events on the bus).
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        traceparent: Option<&str>,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        if let Some(tp) = traceparent {
            headers.insert("traceparent", tp);
        }
        self.js
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|e| js_err(format!("publish {subject}"))(e.to_string()))?
            .await
            .map_err(|e| js_err(format!("publish {subject} (ack)"))(e.to_string()))?;
        Ok(())
    }

    /// Opens a KV bucket, creating it if missing.
    pub async fn kv(&self, bucket: &str, history: i64) -> Result<kv::Store, BusError> {
        if let Ok(store) = self.js.get_key_value(bucket).await {
            return Ok(store);
        }
        self.js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| js_err(format!("create KV bucket {bucket}"))(e.to_string()))
    }

    /// Creates (or updates) a durable pull consumer on the events stream.
    async fn consumer(
        &self,
        name: &str,
        subjects: &[&str],
    ) -> Result<consumer::PullConsumer, BusError> {
        let stream = self
            .js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| js_err("get events stream")(e.to_string()))?;
        let cfg = consumer::pull::Config {
            durable_name: Some(name.to_string()),
            description: Some(format!("modelbus {name} service")),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: self.config.max_deliver,
            filter_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        match stream.create_consumer(cfg.clone()).await {
            Ok(c) => Ok(c),
            // An existing consumer whose config cannot be updated in place keeps working.
            Err(create_err) => stream
                .get_consumer(name)
                .await
                .map_err(|_| js_err(format!("create consumer {name}"))(create_err.to_string())),
        }
    }

    /// Runs a consumer until `shutdown`: each event is handed to `handler`, acked on
    /// success, retried with backoff on [`HandlerError::Retry`], dead-lettered on
    /// [`HandlerError::Reject`] or after the last attempt. While a handler runs, the
    /// event's ack deadline is extended so long work (training) is not redelivered.
    /// Calls `on_ready` once the consumer exists.
    pub async fn consume<H, Fut>(
        &self,
        name: &str,
        subjects: &[&str],
        shutdown: CancellationToken,
        on_ready: impl FnOnce(),
        handler: H,
    ) -> Result<(), BusError>
    where
        H: Fn(Delivery) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let consumer = self.consumer(name, subjects).await?;
        on_ready();
        tracing::info!(consumer = name, ?subjects, "consuming");
        loop {
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(1)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "cannot pull; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    n = messages.next() => n,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(consumer = name, error = %e, "pull error");
                        continue;
                    }
                    None => break,
                };
                let (delivered, stream_sequence) = match msg.info() {
                    Ok(i) => (i.delivered, i.stream_sequence),
                    Err(_) => (1, 0),
                };
                let delivery = Delivery {
                    subject: msg.subject.to_string(),
                    payload: msg.payload.clone(),
                    delivered,
                    stream_sequence,
                };
                let (event_type, run, traceparent) = delivery.peek();
                let event_type = event_type.unwrap_or_else(|| "(undecodable)".into());
                let span = tracing::info_span!(
                    "handle_event",
                    consumer = name,
                    event_type = %event_type,
                    pipelinerun = run.as_ref().map(|r| r.as_str()).unwrap_or(""),
                    delivered,
                );
                crate::telemetry::set_remote_parent(&span, traceparent.as_deref());
                let started = Instant::now();
                let work = handler(delivery.clone()).instrument(span.clone());
                let outcome = {
                    let progress_every = self.config.ack_wait / 3;
                    let mut ticker =
                        tokio::time::interval(progress_every.max(Duration::from_millis(200)));
                    ticker.tick().await;
                    tokio::pin!(work);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            r = &mut work => break r,
                            _ = ticker.tick() => {
                                let _ = msg.ack_with(AckKind::Progress).await;
                            }
                        }
                    }
                };
                metrics::histogram!("modelbus_event_handle_seconds", "consumer" => name.to_string(), "type" => event_type.clone())
                    .record(started.elapsed().as_secs_f64());
                let _enter = span.enter();
                let result_label = match outcome {
                    Ok(()) => {
                        if let Err(e) = msg.ack().await {
                            tracing::warn!(error = %e, "ack failed; the event will be redelivered");
                        }
                        "ok"
                    }
                    Err(HandlerError::Retry(reason)) if delivered < self.config.max_deliver => {
                        let idx =
                            (delivered.max(1) as usize - 1).min(self.config.backoff.len() - 1);
                        let delay = self.config.backoff[idx];
                        tracing::warn!(%reason, ?delay, "handler failed; will retry");
                        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                        "retry"
                    }
                    Err(e) => {
                        tracing::error!(reason = %e, "handler failed for good; dead-lettering");
                        let letter = DeadLetter {
                            consumer: name.to_string(),
                            subject: delivery.subject.clone(),
                            stream_sequence,
                            deliveries: delivered,
                            error: e.to_string(),
                            pipelinerun: run.clone(),
                            original: String::from_utf8_lossy(&delivery.payload).into_owned(),
                        };
                        let id = format!("{name}-{stream_sequence}");
                        match self
                            .publish_raw(
                                &format!("{DLQ_PREFIX}.{name}"),
                                &id,
                                None,
                                serde_json::to_vec(&letter).unwrap_or_default().into(),
                            )
                            .await
                        {
                            Ok(()) => {
                                let _ = msg.ack_with(AckKind::Term).await;
                                metrics::counter!("modelbus_events_dead_lettered_total", "consumer" => name.to_string())
                                    .increment(1);
                            }
                            Err(pe) => {
                                // Keep the event rather than lose it: redeliver later.
                                tracing::error!(error = %pe, "cannot dead-letter; will redeliver");
                                let _ = msg
                                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                                    .await;
                            }
                        }
                        "dead_lettered"
                    }
                };
                metrics::counter!("modelbus_events_handled_total", "consumer" => name.to_string(), "type" => event_type, "outcome" => result_label)
                    .increment(1);
            }
        }
    }

    /// Runs a consumer over the dead-letter stream (the registry marks runs failed).
    pub async fn consume_dead_letters<H, Fut>(
        &self,
        name: &str,
        shutdown: CancellationToken,
        handler: H,
    ) -> Result<(), BusError>
    where
        H: Fn(DeadLetter) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| js_err("get DLQ stream")(e.to_string()))?;
        let consumer = stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| js_err("create DLQ consumer")(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| js_err("pull DLQ")(e.to_string()))?;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = messages.next() => n,
            };
            match next {
                Some(Ok(msg)) => {
                    if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&msg.payload) {
                        handler(letter).await;
                    }
                    let _ = msg.ack().await;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "DLQ pull error"),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("2.11.0-beta.1"), Some((2, 11)));
        assert!(parse_version("x").is_none());
        assert!((2, 9) < MIN_SERVER_VERSION);
    }
}
