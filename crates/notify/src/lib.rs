//! Notifications: what needs a person, delivered where people look.
//!
//! The notifier reads the events that need someone (`drift.detected`,
//! `performance.degraded`, validation warnings from `notification.raised`,
//! `data.batch.rejected`, `deployment.rolled_back`, `approval.refused`) from
//! `MODELBUS_EVENTS` through its durable consumer `notifier`, turns each into
//! a [`Notification`], and hands it to every receiver of
//! `[[notifications.receivers]]` that wants its kind, in the receiver's
//! format: Prometheus Alertmanager's v2 alerts API, a Slack-compatible
//! incoming webhook, or a CloudEvent signed as Standard Webhooks specifies
//! ([`signature`]).
//!
//! Monitoring never waits for a receiver: each receiver has its own bounded
//! queue and worker task; the consumer only pushes (a full queue drops the
//! notification and counts it), so a receiver that is down or slow holds up
//! neither the consumer nor the other receivers. A worker retries with
//! exponential backoff and jitter (honouring `Retry-After` on 429 and 503;
//! other 4xx answers are final), skips a repeat of what it delivered less
//! than the receiver's `repeat_interval` ago, and records every outcome:
//! `modelbus_notifications_total{receiver,format,outcome}`,
//! `modelbus_notification_delivery_seconds{receiver}` (event published to
//! delivered), a log line and a `notification.delivered` event.
//!
//! `https://` receivers are reached over TLS (rustls with the ring provider),
//! trusting the system's root certificates and the receiver's `ca_file`, if
//! any (a private CA).
//!
//! The monitor process hosts the notifier (`modelbus_monitor::run`).
#![forbid(unsafe_code)]

mod deliver;
pub mod format;
pub mod notification;
pub mod signature;
mod tls;

use std::sync::Arc;

use modelbus_core::Context;
use modelbus_core::bus::{BusError, Delivery};
use modelbus_core::config::{ConfigError, ReceiverConfig, ReceiverFormat};
use time::OffsetDateTime;
use tokio::sync::mpsc;

pub use deliver::SOURCE;
pub use notification::{Notification, Severity, classify};
pub use signature::{SignatureError, verify_signature};

/// Name of the notifier's durable consumer on `MODELBUS_EVENTS`, and of its
/// readiness component.
pub const CONSUMER: &str = "notifier";

/// Notifications one receiver's queue holds; beyond, new ones are dropped
/// and counted (`modelbus_notifications_dropped_total{receiver}`).
pub const QUEUE_CAPACITY: usize = 1024;

/// Why the notifier cannot run.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A receiver cannot be used as configured.
    #[error("invalid configuration value `{key}`: {reason}")]
    Config {
        /// Dotted key, e.g. `notifications.receivers[0].url`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A receiver's secret cannot be read.
    #[error(transparent)]
    Secret(#[from] ConfigError),
    /// The consumer failed.
    #[error("notifier consumer: {0}")]
    Bus(#[from] BusError),
}

/// The notifier: one queue per receiver, fed by the consumer.
#[derive(Clone)]
pub struct Notifier {
    receivers: Arc<Vec<Receiver>>,
}

struct Receiver {
    cfg: ReceiverConfig,
    queue: mpsc::Sender<Arc<Notification>>,
}

impl Notifier {
    /// Checks the receivers (secrets resolved, CA files read), and starts one worker per receiver until `ctx.shutdown`.
    pub fn start(ctx: &Context) -> Result<Self, NotifyError> {
        let registry = ctx.config.registry_http_url();
        let mut receivers = Vec::new();
        for (i, cfg) in ctx.config.notifications.receivers.iter().enumerate() {
            let key = |k: &str| format!("notifications.receivers[{i}].{k}");
            let signing_key = match (&cfg.format, &cfg.secret) {
                (ReceiverFormat::Cloudevents, Some(secret)) => {
                    let s = secret.resolve(&key("secret"))?;
                    let k =
                        signature::signing_key(s.expose()).map_err(|e| NotifyError::Config {
                            key: key("secret"),
                            reason: e.to_string(),
                        })?;
                    if k.is_empty() {
                        return Err(NotifyError::Config {
                            key: key("secret"),
                            reason: "resolves to an empty secret".into(),
                        });
                    }
                    Some(k)
                }
                (ReceiverFormat::Cloudevents, None) => {
                    return Err(NotifyError::Config {
                        key: key("secret"),
                        reason: "a cloudevents receiver needs a secret".into(),
                    });
                }
                _ => None,
            };
            let https = cfg
                .url
                .trim()
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("https"));
            let tls = tls::client_config(https, cfg.ca_file.as_deref()).map_err(|reason| {
                NotifyError::Config {
                    key: key("ca_file"),
                    reason,
                }
            })?;
            // Not `modelbus_core::http::client_builder`: this client gets its
            // TLS configuration ready-made (ring, its own roots), so it needs
            // no process-wide rustls provider.
            #[allow(clippy::disallowed_methods)]
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("modelbus-notifier/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| NotifyError::Config {
                    key: key("url"),
                    reason: format!("cannot build its HTTP client: {e}"),
                })?;
            let target = Arc::new(deliver::Target {
                cfg: cfg.clone(),
                endpoint: format::endpoint(cfg.format, cfg.url.trim()),
                key: signing_key,
                client,
                registry: registry.clone(),
            });
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(deliver::worker(
                target,
                rx,
                ctx.bus.clone(),
                ctx.shutdown.clone(),
            ));
            tracing::info!(
                receiver = %cfg.name, format = cfg.format.as_str(), url = %cfg.display_url(),
                events = ?cfg.events.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "notification receiver ready"
            );
            receivers.push(Receiver {
                cfg: cfg.clone(),
                queue: tx,
            });
        }
        Ok(Self {
            receivers: Arc::new(receivers),
        })
    }

    /// Hands the notification an event makes, if any, to every receiver that
    /// wants its kind, without waiting. Never fails: the notifier does not
    /// dead-letter pipeline events (a dead letter would mark their run
    /// failed); one it cannot read is logged and counted
    /// (`modelbus_notifications_unreadable_total`).
    pub fn dispatch(&self, d: &Delivery) {
        if d.check_route().is_err() {
            // Counted by `check_route`; the registry audits it.
            return;
        }
        let n = match classify(&d.subject, &d.payload) {
            Ok(Some(n)) => Arc::new(n),
            Ok(None) => return,
            Err(e) => {
                metrics::counter!("modelbus_notifications_unreadable_total").increment(1);
                tracing::warn!(subject = %d.subject, error = %e, "cannot read an event to notify about; skipped");
                return;
            }
        };
        self.offer(n);
    }

    /// Queues `n` for every receiver that wants its kind: skipped (outcome
    /// `expired`) where it is older than the receiver's repeat interval (an
    /// Alertmanager alert would already have ended: a notifier that starts
    /// late, or for the first time, does not page about old news), dropped
    /// where the queue is full.
    pub fn offer(&self, n: Arc<Notification>) {
        let age = OffsetDateTime::now_utc() - n.time;
        for r in self.receivers.iter() {
            if !r.cfg.events.contains(&n.kind) {
                continue;
            }
            let outcome = |o: &'static str| {
                metrics::counter!(
                    "modelbus_notifications_total",
                    "receiver" => r.cfg.name.clone(),
                    "format" => r.cfg.format.as_str(),
                    "outcome" => o
                )
                .increment(1);
            };
            if age > r.cfg.repeat_interval {
                outcome("expired");
                tracing::info!(receiver = %r.cfg.name, event_id = %n.event_id, kind = n.kind.as_str(),
                    "event older than the receiver's repeat_interval: not notified");
                continue;
            }
            match r.queue.try_send(n.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    outcome("dropped");
                    metrics::counter!("modelbus_notifications_dropped_total", "receiver" => r.cfg.name.clone())
                        .increment(1);
                    tracing::warn!(receiver = %r.cfg.name, event_id = %n.event_id, kind = n.kind.as_str(),
                        "receiver's queue is full (down or slow): notification dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// Runs the notifier until `ctx.shutdown`: nothing when no receiver is
/// configured; otherwise the receivers' workers and the durable consumer
/// [`CONSUMER`] on the subjects of [`notification::EVENTS`]. The readiness
/// component `notifier` turns ready once the consumer exists.
pub async fn run(ctx: Context) -> Result<(), NotifyError> {
    if ctx.config.notifications.receivers.is_empty() {
        return Ok(());
    }
    ctx.readiness.register(CONSUMER);
    let notifier = Notifier::start(&ctx)?;
    let subjects = notification::subjects();
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let readiness = ctx.readiness.clone();
    ctx.bus
        .consume(
            CONSUMER,
            &subjects,
            ctx.shutdown.clone(),
            move || readiness.set(CONSUMER, true),
            move |d| {
                notifier.dispatch(&d);
                async { Ok(()) }
            },
        )
        .await?;
    Ok(())
}
