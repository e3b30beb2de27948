//! The event bus over NATS JetStream.
//!
//! One stream, `MODELBUS_EVENTS`, holds every event on `modelbus.>`; each service
//! reads it through its own durable pull consumer with explicit acks. A handler
//! that fails is retried with backoff up to `max_deliver`; then, or at once for an
//! event that can never be handled, the event goes to `MODELBUS_DLQ` with the last
//! error. Publishing sets `Nats-Msg-Id` to the event id, so a republished event is
//! dropped by the server within the duplicate window.
//!
//! A server may give each service its own user with narrow permissions
//! (`deploy/nats/permissions.conf`). The server only reports a refused publish or
//! subscription asynchronously (`-ERR 'Permissions Violation ...'`) and drops the
//! message, so the bus listens for those reports and fails the operation that
//! caused one at once, naming the user and the subject, instead of waiting for a
//! reply that will never come.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{BusConfig, NatsCredentials};
use crate::events::{DeadLetter, DecodeError, Envelope, EventPayload};
use crate::ids::PipelineRunId;

/// Stream of the prediction log (`modelbus_inference.>`), with its own
/// retention (`serving.log_max_age`, `serving.log_max_bytes`).
pub const INFERENCE_STREAM: &str = "MODELBUS_INFERENCE";

/// Stream holding every event.
pub const EVENTS_STREAM: &str = "MODELBUS_EVENTS";
/// Stream holding dead letters.
pub const DLQ_STREAM: &str = "MODELBUS_DLQ";
/// Subject prefix of dead letters (`modelbus_dlq.<consumer>`).
pub const DLQ_PREFIX: &str = "modelbus_dlq";
/// Oldest server accepted: KV buckets and multi-filter consumers need 2.10.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);
/// Prefix of the JetStream API subjects the bus uses.
const JS_API: &str = "$JS.API";

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
    /// The server refused the credentials (wrong user or password, or none given
    /// to a server that requires them).
    #[error(
        "NATS at {url} refused to authenticate {}: {reason}; check nats.user and \
         nats.password (MODELBUS_NATS__USER, MODELBUS_NATS__PASSWORD) against the \
         server's authorization block (deploy/nats/permissions.conf)",
        user.as_deref().map(|u| format!("user `{u}`")).unwrap_or_else(|| "a client without credentials".into())
    )]
    Unauthorized {
        /// The URL.
        url: String,
        /// The user presented, if any.
        user: Option<String>,
        /// The server's answer.
        reason: String,
    },
    /// The user's permissions do not allow a subject the operation needs; the
    /// server dropped the message.
    #[error(
        "NATS user `{user}` may not {action} `{subject}` (while trying to {op}); the server's \
         permissions (deploy/nats/permissions.conf) do not allow it"
    )]
    PermissionDenied {
        /// The user (`(no user)` for a client without credentials).
        user: String,
        /// `publish to`, `subscribe to` or `use as reply subject`.
        action: String,
        /// The refused subject.
        subject: String,
        /// What was being done.
        op: String,
    },
    /// A stream modelbus uses is defined to move messages to or from other
    /// subjects or streams, which modelbus never does (see
    /// [`check_stream_definition`]).
    #[error(
        "stream {stream} {what}; modelbus never defines a stream that way, and it can route \
         messages around the NATS permissions (e.g. into the deployments bucket): refusing to use \
         it. Inspect it (`nats stream info {stream}`) and recreate it"
    )]
    UnexpectedStreamDefinition {
        /// The stream.
        stream: String,
        /// What is wrong with it.
        what: String,
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
    /// Decodes the event as `T`; a mismatch is a permanent error. It must have
    /// arrived on `T`'s subject with `T`'s type: a misrouted event is counted
    /// (`modelbus_events_misrouted_total`) and refused.
    pub fn decode<T: EventPayload>(&self) -> Result<Envelope<T>, HandlerError> {
        crate::events::decode_on::<T>(&self.subject, &self.payload).map_err(|e| {
            if matches!(e, DecodeError::Misrouted { .. }) {
                self.count_misrouted();
            }
            HandlerError::from(e)
        })
    }

    /// The event name its subject carries (`modelbus.<name>`): what a handler
    /// dispatches on, since NATS permissions, not the payload, decide who may
    /// publish it.
    pub fn event_name(&self) -> Option<&str> {
        crate::events::event_name_of(&self.subject)
    }

    /// Checks that the event's `type` is the one its subject carries, counting
    /// a mismatch.
    pub fn check_route(&self) -> Result<(), DecodeError> {
        let ty = self.event_type().unwrap_or_default();
        crate::events::check_route(&self.subject, &ty).inspect_err(|_| self.count_misrouted())
    }

    fn count_misrouted(&self) {
        // Only known subjects become label values: a sender may not mint series.
        let subject = match self.event_name() {
            Some(n) if crate::events::EVENT_NAMES.contains(&n) => self.subject.clone(),
            _ => "other".to_string(),
        };
        metrics::counter!("modelbus_events_misrouted_total", "subject" => subject).increment(1);
        tracing::warn!(subject = %self.subject, "refused an event whose type does not belong to its subject");
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

/// A permission violation the server reported on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// `publish to`, `subscribe to` or `use as reply subject`.
    action: &'static str,
    /// The refused subject.
    subject: String,
}

impl Violation {
    /// Parses the server's `Permissions Violation for Publish to "x"`,
    /// `... for Subscription to "x"` and `... for Publish with Reply of "x"`.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.find("Permissions Violation for ")? + 26..];
        let action = if rest.starts_with("Subscription") {
            "subscribe to"
        } else if rest.starts_with("Publish with Reply") {
            "use as reply subject"
        } else if rest.starts_with("Publish") {
            "publish to"
        } else {
            return None;
        };
        let start = rest.find('"')? + 1;
        let len = rest[start..].find('"')?;
        Some(Self {
            action,
            subject: rest[start..start + len].to_string(),
        })
    }
}

/// What a publish found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The stream stored the event.
    Stored,
    /// The stream already held a message with this id within its duplicate
    /// window (the same event published again): nothing new was stored.
    Duplicate,
}

/// A connected bus handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BusConfig,
    /// The user connected as, if any.
    user: Option<String>,
    /// Prefix of this connection's reply subjects.
    inbox_prefix: String,
    /// Permission violations reported by the server, as they arrive.
    violations: tokio::sync::broadcast::Sender<Violation>,
}

/// Refuses a stream definition that moves messages elsewhere or brings them in
/// from elsewhere (`republish`, `mirror`, `sources`). modelbus never defines one,
/// and the server republishes into any subject of the account whatever the
/// permissions of the stream's creator: a user allowed to create a stream before
/// it exists could make it write into `$KV.deployments.>`. Checking every stream
/// the bus opens turns such a definition into a refusal to start.
pub fn check_stream_definition(config: &stream::Config) -> Result<(), BusError> {
    let what = if let Some(r) = &config.republish {
        format!("republishes {} to {}", r.source, r.destination)
    } else if let Some(m) = &config.mirror {
        format!("mirrors stream {}", m.name)
    } else if let Some(s) = config.sources.as_ref().filter(|s| !s.is_empty()) {
        format!(
            "sources from {}",
            s.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        return Ok(());
    };
    Err(BusError::UnexpectedStreamDefinition {
        stream: config.name.clone(),
        what,
    })
}

/// Parses `major.minor` out of a server version string.
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut it = v.trim_start_matches('v').split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Bus {
    /// Connects without credentials, refuses servers older than 2.10, and makes
    /// sure the streams exist.
    pub async fn connect(url: &str, name: &str, config: BusConfig) -> Result<Self, BusError> {
        Self::connect_with(url, name, config, None).await
    }

    /// Connects as `credentials`' user when given (the server's authorization then
    /// decides which subjects this handle may use), refuses servers older than
    /// 2.10, and makes sure the streams exist. With a user, reply subjects start
    /// with `_INBOX_<user>` so that the server can let each user read only its own
    /// replies.
    pub async fn connect_with(
        url: &str,
        name: &str,
        config: BusConfig,
        credentials: Option<&NatsCredentials>,
    ) -> Result<Self, BusError> {
        let (violations, _) = tokio::sync::broadcast::channel(64);
        let reported = violations.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let reported = reported.clone();
                async move {
                    if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) =
                        &event
                        && let Some(v) = Violation::parse(text)
                    {
                        tracing::warn!(action = v.action, subject = %v.subject, "NATS permission violation");
                        let _ = reported.send(v);
                    }
                }
            });
        let user = credentials.map(|c| c.user.clone());
        let inbox_prefix = match credentials {
            Some(c) => {
                let password = c.password.as_ref().map(|p| p.expose()).unwrap_or("");
                options = options
                    .user_and_password(c.user.clone(), password.to_string())
                    .custom_inbox_prefix(format!("_INBOX_{}", c.user));
                format!("_INBOX_{}", c.user)
            }
            None => "_INBOX".to_string(),
        };
        let client = options.connect(url).await.map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication => BusError::Unauthorized {
                url: url.to_string(),
                user: user.clone(),
                reason: e.to_string(),
            },
            _ => BusError::Connect {
                url: url.to_string(),
                reason: e.to_string(),
            },
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
        let bus = Self {
            client,
            js,
            config,
            user,
            inbox_prefix,
            violations,
        };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// The NATS user this handle is connected as, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Runs a NATS operation that sends on `subjects`, failing it with
    /// [`BusError::PermissionDenied`] as soon as the server reports that one of
    /// them, or this connection's reply inbox, is not permitted: the server drops
    /// such a message, so the operation would otherwise wait for its timeout.
    async fn guarded<T, E: std::fmt::Display>(
        &self,
        op: &str,
        subjects: &[String],
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, BusError> {
        let mut reports = self.violations.subscribe();
        let inbox = format!("{}.", self.inbox_prefix);
        let denied = async {
            loop {
                match reports.recv().await {
                    Ok(v) if subjects.contains(&v.subject) || v.subject.starts_with(&inbox) => {
                        return v;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            r = work => r.map_err(|e| BusError::JetStream { op: op.to_string(), reason: e.to_string() }),
            v = denied => Err(BusError::PermissionDenied {
                user: self.user.clone().unwrap_or_else(|| "(no user)".into()),
                action: v.action.to_string(),
                subject: v.subject,
                op: op.to_string(),
            }),
        }
    }

    /// One of the shared streams, which must exist.
    async fn stream(&self, name: &str) -> Result<stream::Stream, BusError> {
        self.guarded(
            &format!("get stream {name}"),
            &[format!("{JS_API}.STREAM.INFO.{name}")],
            self.js.get_stream(name),
        )
        .await
    }

    /// The payloads of events on `subject` published since `since`, oldest
    /// first, read through the short-lived consumer `name` (made afresh, removed
    /// afterwards): how a restarted service rebuilds what it kept in memory.
    /// NATS permissions grant it by name and subject
    /// (`$JS.API.CONSUMER.CREATE.MODELBUS_EVENTS.<name>.<subject>`, `INFO`,
    /// `MSG.NEXT` and `DELETE` of `<name>`), so the consumer can read nothing else.
    pub async fn replay(
        &self,
        name: &str,
        subject: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<bytes::Bytes>, BusError> {
        let api = |verb: &str| format!("{JS_API}.CONSUMER.{verb}.{EVENTS_STREAM}.{name}");
        let stream = self.stream(EVENTS_STREAM).await?;
        // One left by a run that stopped half-way would start at the wrong place.
        let _ = self
            .guarded(
                &format!("remove replay consumer {name}"),
                &[api("DELETE")],
                stream.delete_consumer(name),
            )
            .await;
        let op = format!("replay {subject} through {name}");
        let mut consumer = self
            .guarded(
                &op,
                &[format!("{}.{subject}", api("CREATE"))],
                stream.create_consumer(consumer::pull::Config {
                    name: Some(name.to_string()),
                    filter_subject: subject.to_string(),
                    deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: since },
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                }),
            )
            .await?;
        let mut pending = self
            .guarded(&op, &[api("INFO")], consumer.info())
            .await?
            .num_pending;
        let mut out = Vec::new();
        while pending > 0 {
            let mut batch = self
                .guarded(
                    &op,
                    &[api("MSG.NEXT")],
                    consumer
                        .fetch()
                        .max_messages(500)
                        .expires(Duration::from_secs(2))
                        .messages(),
                )
                .await?;
            let before = out.len();
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| BusError::JetStream {
                    op: op.clone(),
                    reason: e.to_string(),
                })?;
                out.push(m.payload.clone());
            }
            let got = (out.len() - before) as u64;
            if got == 0 {
                break;
            }
            pending = pending.saturating_sub(got);
        }
        let _ = self
            .guarded(&op, &[api("DELETE")], stream.delete_consumer(name))
            .await;
        Ok(out)
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
            let stream = self
                .guarded(
                    &format!("make sure stream {name} exists"),
                    &[
                        format!("{JS_API}.STREAM.INFO.{name}"),
                        format!("{JS_API}.STREAM.CREATE.{name}"),
                    ],
                    self.js.get_or_create_stream(cfg),
                )
                .await?;
            check_stream_definition(&stream.cached_info().config)?;
        }
        Ok(())
    }

    /// Creates the prediction-log stream, or brings its retention to
    /// `max_age` and `max_bytes` (oldest records dropped first): serving and the
    /// monitor both call it, so whichever starts first creates it.
    pub async fn ensure_inference_stream(
        &self,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<(), BusError> {
        let name = INFERENCE_STREAM;
        let cfg = stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{}.>", crate::events::INFERENCE_PREFIX)],
            storage: stream::StorageType::File,
            duplicate_window: self.config.duplicate_window,
            max_age,
            max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let info = self
            .guarded(
                &format!("make sure stream {name} exists"),
                &[
                    format!("{JS_API}.STREAM.INFO.{name}"),
                    format!("{JS_API}.STREAM.CREATE.{name}"),
                    format!("{JS_API}.STREAM.UPDATE.{name}"),
                ],
                self.js.create_or_update_stream(cfg),
            )
            .await?;
        check_stream_definition(&info.config)
    }

    /// Publishes an event and waits until the stream has stored it.
    ///
    /// The `Nats-Msg-Id` is the event's [`Envelope::identity`] (its name and
    /// id), and JetStream de-duplicates it across the whole stream: only a user
    /// allowed to publish on this event's subject can make it a duplicate. A
    /// duplicate acknowledgement is counted
    /// (`modelbus_events_duplicates_total`), logged and reported as
    /// [`Published::Duplicate`], so a caller that expected a new event can tell
    /// it was not stored again.
    pub async fn publish<T: EventPayload>(&self, env: &Envelope<T>) -> Result<Published, BusError> {
        let outcome = self
            .publish_raw(
                &T::subject(),
                &env.identity(),
                env.traceparent.as_deref(),
                env.to_json().into(),
            )
            .await?;
        if outcome == Published::Duplicate {
            metrics::counter!("modelbus_events_duplicates_total", "type" => T::NAME).increment(1);
            tracing::info!(event = T::NAME, id = %env.id, "the stream already holds an event with this id: not stored again");
        } else {
            metrics::counter!("modelbus_events_published_total", "type" => T::NAME).increment(1);
            tracing::debug!(event = T::NAME, id = %env.id, "published");
        }
        Ok(outcome)
    }

    /// Publishes `out` as the consequence of the event a handler is handling:
    /// marked as caused by `cause` (its causation id and pipeline run), and a
    /// failure to publish becomes a retry of `cause`, so the consequence goes
    /// out again on redelivery (its id derives from the cause, so the stream
    /// keeps one copy).
    pub async fn publish_caused<T: EventPayload, U>(
        &self,
        out: Envelope<T>,
        cause: &Envelope<U>,
    ) -> Result<Published, HandlerError> {
        self.publish(&out.caused_by(cause))
            .await
            .map_err(HandlerError::retry)
    }

    /// Publishes raw bytes on a subject with a message id (tests use this to put
    /// arbitrary, even invalid, events on the bus).
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        traceparent: Option<&str>,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        if let Some(tp) = traceparent {
            headers.insert("traceparent", tp);
        }
        let publish = async {
            self.js
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("no ack: {e}"))
        };
        let ack = self
            .guarded(
                &format!("publish {subject}"),
                &[subject.to_string()],
                publish,
            )
            .await?;
        Ok(if ack.duplicate {
            Published::Duplicate
        } else {
            Published::Stored
        })
    }

    /// Opens a KV bucket, creating it if missing. A user whose permissions do not
    /// allow creating the bucket gets [`BusError::PermissionDenied`] while the
    /// bucket does not exist yet: its owner creates it.
    pub async fn kv(&self, bucket: &str, history: i64) -> Result<kv::Store, BusError> {
        let stream = format!("KV_{bucket}");
        let info = format!("{JS_API}.STREAM.INFO.{stream}");
        match self
            .guarded(
                &format!("open KV bucket {bucket}"),
                std::slice::from_ref(&info),
                self.js.get_key_value(bucket),
            )
            .await
        {
            Ok(store) => {
                check_stream_definition(&store.stream.cached_info().config)?;
                return Ok(store);
            }
            Err(e @ BusError::PermissionDenied { .. }) => return Err(e),
            Err(_) => {}
        }
        self.guarded(
            &format!("create KV bucket {bucket}, which does not exist yet"),
            &[
                format!("{JS_API}.INFO"),
                format!("{JS_API}.STREAM.CREATE.{stream}"),
            ],
            self.js.create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history,
                storage: stream::StorageType::File,
                ..Default::default()
            }),
        )
        .await
    }

    /// Creates (or updates) a durable pull consumer on `stream_name`.
    async fn consumer(
        &self,
        stream_name: &str,
        name: &str,
        subjects: &[&str],
    ) -> Result<consumer::PullConsumer, BusError> {
        let stream = self.stream(stream_name).await?;
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
        let op = format!("create consumer {name}");
        match self
            .guarded(
                &op,
                &[format!("{JS_API}.CONSUMER.CREATE.{stream_name}.{name}")],
                stream.create_consumer(cfg.clone()),
            )
            .await
        {
            Ok(c) => Ok(c),
            Err(e @ BusError::PermissionDenied { .. }) => Err(e),
            // An existing consumer whose config cannot be updated in place keeps working.
            Err(create_err) => self
                .guarded(
                    &op,
                    &[format!("{JS_API}.CONSUMER.INFO.{stream_name}.{name}")],
                    stream.get_consumer(name),
                )
                .await
                .map_err(|_| create_err),
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
        self.consume_stream(EVENTS_STREAM, name, subjects, shutdown, on_ready, handler)
            .await
    }

    /// [`Self::consume`] on another stream (the prediction log), with the same
    /// retries and dead letters.
    pub async fn consume_stream<H, Fut>(
        &self,
        stream_name: &str,
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
        let consumer = self.consumer(stream_name, name, subjects).await?;
        // Exported from the start (at 0), so dashboards and alerts see the
        // first dead letter or redelivery as an increase.
        metrics::counter!("modelbus_events_dead_lettered_total", "consumer" => name.to_string())
            .increment(0);
        metrics::counter!("modelbus_events_redelivered_total", "consumer" => name.to_string())
            .increment(0);
        metrics::gauge!("modelbus_consumer_pending", "consumer" => name.to_string()).increment(0.0);
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
                    Ok(i) => {
                        // What waits behind this event: the consumer's lag.
                        metrics::gauge!("modelbus_consumer_pending", "consumer" => name.to_string())
                            .set(i.pending as f64);
                        (i.delivered, i.stream_sequence)
                    }
                    Err(_) => (1, 0),
                };
                if delivered > 1 {
                    metrics::counter!("modelbus_events_redelivered_total", "consumer" => name.to_string())
                        .increment(1);
                }
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
                            Ok(_) => {
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
        let stream = self.stream(DLQ_STREAM).await?;
        let consumer = self
            .guarded(
                "create DLQ consumer",
                &[
                    format!("{JS_API}.CONSUMER.INFO.{DLQ_STREAM}.{name}"),
                    format!("{JS_API}.CONSUMER.CREATE.{DLQ_STREAM}.{name}"),
                ],
                stream.get_or_create_consumer(
                    name,
                    consumer::pull::Config {
                        durable_name: Some(name.to_string()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                ),
            )
            .await?;
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
    fn permission_violations_parse() {
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Publish to "modelbus.approval.granted""#),
            Some(Violation {
                action: "publish to",
                subject: "modelbus.approval.granted".into()
            })
        );
        assert_eq!(
            Violation::parse(
                r#"permissions violation: Permissions Violation for Subscription to "_INBOX.x.*""#
            )
            .map(|v| (v.action, v.subject)),
            Some(("subscribe to", "_INBOX.x.*".to_string()))
        );
        assert_eq!(
            Violation::parse(r#"Permissions Violation for Publish with Reply of "_INBOX.r""#)
                .map(|v| v.action),
            Some("use as reply subject")
        );
        assert!(Violation::parse("Authorization Violation").is_none());
        assert!(Violation::parse("Permissions Violation for Publish to x").is_none());
    }

    #[test]
    fn streams_that_route_messages_elsewhere_are_refused() {
        let plain = stream::Config {
            name: "KV_deployments".into(),
            subjects: vec!["$KV.deployments.>".into()],
            ..Default::default()
        };
        assert!(check_stream_definition(&plain).is_ok());
        let republishing = stream::Config {
            republish: Some(stream::Republish {
                source: ">".into(),
                destination: "$KV.deployments.>".into(),
                headers_only: false,
            }),
            ..plain.clone()
        };
        let e = check_stream_definition(&republishing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KV_deployments") && e.contains("republishes > to $KV.deployments.>"),
            "{e}"
        );
        let sourcing = stream::Config {
            sources: Some(vec![stream::Source {
                name: "MODELBUS_EVENTS".into(),
                ..Default::default()
            }]),
            ..plain.clone()
        };
        assert!(
            check_stream_definition(&sourcing)
                .unwrap_err()
                .to_string()
                .contains("sources from MODELBUS_EVENTS")
        );
        let mirroring = stream::Config {
            mirror: Some(stream::Source {
                name: "X".into(),
                ..Default::default()
            }),
            ..plain
        };
        assert!(check_stream_definition(&mirroring).is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("2.11.0-beta.1"), Some((2, 11)));
        assert!(parse_version("x").is_none());
        assert!((2, 9) < MIN_SERVER_VERSION);
    }
}
