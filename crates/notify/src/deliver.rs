//! Delivery to one receiver: its own queue and worker task, retries with
//! backoff, de-duplication of repeats, and the record of every outcome
//! (metrics, a log line, a `notification.delivered` event).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelbus_core::CancellationToken;
use modelbus_core::bus::Bus;
use modelbus_core::config::ReceiverConfig;
use modelbus_core::events::{Envelope, NotificationDelivered};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::format;
use crate::notification::Notification;
use crate::signature;

/// Longest wait between two attempts, `Retry-After` included.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// Most de-duplication keys a receiver remembers (older ones are forgotten
/// first once their interval has passed).
const MAX_REMEMBERED: usize = 10_000;
/// Most bytes of a refusing answer kept in the error.
const MAX_ANSWER: usize = 512;
/// Longest the record of an outcome waits for the bus.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The source of the notifier's own events.
pub const SOURCE: &str = "/modelbus/notifier";

/// A receiver with what delivering to it needs.
pub(crate) struct Target {
    /// Its configuration.
    pub cfg: ReceiverConfig,
    /// Where bodies are posted.
    pub endpoint: String,
    /// The HMAC key (CloudEvents receivers).
    pub key: Option<Vec<u8>>,
    /// Its HTTP client, with its timeout.
    pub client: reqwest::Client,
    /// The registry's HTTP base URL, for links.
    pub registry: String,
}

/// How one notification ended at one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// `delivered`, `failed` or `deduplicated`.
    pub outcome: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// Status of the last answer.
    pub status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// What one attempt found.
enum Attempt {
    Delivered(u16),
    /// Worth another attempt, after `after` if the receiver said so.
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Refused for good (a 4xx other than 429, a redirect).
    Refused {
        status: u16,
        error: String,
    },
}

/// An error with its causes, without the URL (a webhook's URL may be its
/// credential, and reqwest's own message names it), at most 300 characters.
fn describe(e: &reqwest::Error) -> String {
    let mut parts = vec![reqwest_kind(e).to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ").chars().take(300).collect()
}

fn reqwest_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "error reading the answer"
    } else if e.is_builder() {
        "cannot build the request"
    } else if e.is_request() {
        "error sending the request"
    } else {
        "HTTP error"
    }
}

/// The delay `Retry-After` asks for: seconds, or an HTTP date.
pub(crate) fn retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, fmt)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// The wait before attempt `attempt + 1`: `base × 2^(attempt-1)`, at most
/// [`MAX_DELAY`], of which a random half (so receivers coming back are not
/// hit by every notifier at once).
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_DELAY);
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as f64 / f64::from(u32::MAX);
    full / 2 + full.mul_f64(0.5 * random)
}

impl Target {
    /// One POST of `body`.
    async fn attempt(&self, n: &Notification, body: &[u8]) -> Attempt {
        let mut req = self
            .client
            .post(&self.endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                format::content_type(self.cfg.format),
            )
            .body(body.to_vec());
        if let Some(key) = &self.key {
            let ts = OffsetDateTime::now_utc().unix_timestamp();
            req = req
                .header(signature::ID_HEADER, &n.event_id)
                .header(signature::TIMESTAMP_HEADER, ts.to_string())
                .header(
                    signature::SIGNATURE_HEADER,
                    signature::sign(key, &n.event_id, ts, body),
                );
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    error: describe(&e),
                    after: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Delivered(status.as_u16());
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, OffsetDateTime::now_utc()));
        // What the receiver said, for the record (bounded).
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER {
            match resp.chunk().await {
                Ok(Some(c)) => answer.extend_from_slice(&c),
                _ => break,
            }
        }
        answer.truncate(MAX_ANSWER);
        let said = String::from_utf8_lossy(&answer)
            .trim()
            .replace(['\n', '\r'], " ");
        let error = if said.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {said}", status.as_u16())
        };
        let code = status.as_u16();
        match code {
            429 | 503 => Attempt::Retry {
                status: Some(code),
                error,
                after,
            },
            _ if status.is_server_error() => Attempt::Retry {
                status: Some(code),
                error,
                after: None,
            },
            _ => Attempt::Refused {
                status: code,
                error,
            },
        }
    }

    /// Delivers `n` with up to `max_attempts` attempts; `None` when the
    /// process stopped first.
    pub(crate) async fn deliver(
        &self,
        n: &Notification,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        let body = format::body(self.cfg.format, n, &self.registry, self.cfg.repeat_interval);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = self.attempt(n, &body) => r,
            };
            let (status, error, after) = match result {
                Attempt::Delivered(status) => {
                    return Some(Outcome {
                        outcome: "delivered",
                        attempts,
                        status: Some(status),
                        error: None,
                    });
                }
                Attempt::Refused { status, error } => {
                    return Some(Outcome {
                        outcome: "failed",
                        attempts,
                        status: Some(status),
                        error: Some(error),
                    });
                }
                Attempt::Retry {
                    status,
                    error,
                    after,
                } => (status, error, after),
            };
            if attempts >= self.cfg.max_attempts {
                return Some(Outcome {
                    outcome: "failed",
                    attempts,
                    status,
                    error: Some(error),
                });
            }
            let delay = after
                .unwrap_or_else(|| backoff(self.cfg.backoff, attempts))
                .min(MAX_DELAY);
            tracing::debug!(receiver = %self.cfg.name, attempts, ?delay, %error, "notification not delivered yet; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Records an outcome: metrics, a log line and a `notification.delivered`
    /// event (whose failure is logged, never retried).
    async fn record(&self, n: &Notification, o: &Outcome, bus: &Bus) {
        let receiver = self.cfg.name.clone();
        metrics::counter!(
            "modelbus_notifications_total",
            "receiver" => receiver.clone(),
            "format" => self.cfg.format.as_str(),
            "outcome" => o.outcome
        )
        .increment(1);
        let age = (OffsetDateTime::now_utc() - n.time)
            .as_seconds_f64()
            .max(0.0);
        match o.outcome {
            "delivered" => {
                metrics::histogram!("modelbus_notification_delivery_seconds", "receiver" => receiver.clone())
                    .record(age);
                tracing::info!(
                    receiver = %receiver, kind = n.kind.as_str(), event_id = %n.event_id,
                    attempts = o.attempts, status = o.status, seconds_since_event = age,
                    "notification delivered"
                );
            }
            "failed" => tracing::warn!(
                receiver = %receiver, url = %self.cfg.display_url(), kind = n.kind.as_str(),
                event_id = %n.event_id, attempts = o.attempts, status = o.status,
                error = o.error.as_deref().unwrap_or(""),
                "notification not delivered"
            ),
            _ => tracing::info!(
                receiver = %receiver, kind = n.kind.as_str(), event_id = %n.event_id,
                outcome = o.outcome, "notification not sent: a repeat within the receiver's repeat_interval"
            ),
        }
        let mut e = Envelope::new(
            SOURCE,
            &format!("{receiver}/{}/{}", n.event_id, o.outcome),
            NotificationDelivered {
                receiver,
                kind: n.kind.as_str().to_string(),
                event_id: n.event_id.clone(),
                outcome: o.outcome.to_string(),
                attempts: o.attempts,
                status: o.status,
                error: o.error.clone(),
            },
        )
        .with_pipeline_run(n.pipelinerun.clone());
        e.causationid = Some(n.event_id.clone());
        if let Some(s) = n.subject() {
            e = e.with_subject(s);
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, bus.publish(&e)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot publish notification.delivered")
            }
            Err(_) => tracing::warn!("publishing notification.delivered timed out"),
        }
    }
}

/// What a receiver sent lately: de-duplication keys and when.
#[derive(Default)]
pub(crate) struct Sent(HashMap<String, Instant>);

impl Sent {
    /// Whether `key` was delivered less than `interval` ago.
    pub(crate) fn is_repeat(&self, key: &str, interval: Duration) -> bool {
        self.0.get(key).is_some_and(|t| t.elapsed() < interval)
    }

    /// Remembers a delivery, forgetting what no longer counts.
    pub(crate) fn remember(&mut self, key: String, interval: Duration) {
        if self.0.len() >= MAX_REMEMBERED {
            self.0.retain(|_, t| t.elapsed() < interval);
            if self.0.len() >= MAX_REMEMBERED {
                self.0.clear();
            }
        }
        self.0.insert(key, Instant::now());
    }
}

/// The worker of one receiver: takes notifications from its queue in order,
/// skips repeats, delivers the rest and records every outcome, until
/// `shutdown`.
pub(crate) async fn worker(
    target: Arc<Target>,
    mut queue: mpsc::Receiver<Arc<Notification>>,
    bus: Bus,
    shutdown: CancellationToken,
) {
    let mut sent = Sent::default();
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = queue.recv() => match n {
                Some(n) => n,
                None => return,
            },
        };
        let key = n.dedup_key(&target.cfg.name);
        let outcome = if sent.is_repeat(&key, target.cfg.repeat_interval) {
            Outcome {
                outcome: "deduplicated",
                attempts: 0,
                status: None,
                error: None,
            }
        } else {
            match target.deliver(&n, &shutdown).await {
                Some(o) => o,
                None => return,
            }
        };
        if outcome.outcome == "delivered" {
            sent.remember(key, target.cfg.repeat_interval);
        }
        target.record(&n, &outcome, &bus).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Fri, 02 Jan 2026 03:04:35 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Fri, 02 Jan 2026 03:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        let base = Duration::from_millis(100);
        for attempt in 1..=4u32 {
            let full = base * (1 << (attempt - 1));
            let d = backoff(base, attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert!(backoff(Duration::from_secs(60), 30) <= MAX_DELAY);
    }

    #[test]
    fn repeats_are_remembered_for_their_interval() {
        let mut s = Sent::default();
        assert!(!s.is_repeat("k", Duration::from_secs(60)));
        s.remember("k".into(), Duration::from_secs(60));
        assert!(s.is_repeat("k", Duration::from_secs(60)));
        assert!(!s.is_repeat("k", Duration::ZERO));
    }
}
