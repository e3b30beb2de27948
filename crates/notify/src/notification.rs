//! From an event on the bus to a notification: what it is about, how serious
//! it is, a title, the reasons, and what tells it apart from a repeat.

use modelbus_core::config::NotificationKind;
use modelbus_core::events::{
    self, ApprovalRefused, BatchRejected, DecodeError, DeploymentRolledBack, DriftDetected,
    Envelope, EventPayload, NotificationRaised,
};
use modelbus_core::ids::{Environment, ModelName, PipelineRunId};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// Name of `performance.degraded`, read from the raw envelope (by name, not
/// by payload type, so the notifier reads whatever fields it carries of
/// `environment`, `model`, `version`, `window_id` and `reasons`).
pub const PERFORMANCE_DEGRADED: &str = "performance.degraded";

/// The `kind` of a `notification.raised` that is a validation warning.
pub const VALIDATION_WARNING: &str = "validation_warning";

/// Each event the notifier reads and the kind of notification it makes.
pub const EVENTS: [(&str, NotificationKind); 6] = [
    (DriftDetected::NAME, NotificationKind::Drift),
    (PERFORMANCE_DEGRADED, NotificationKind::Performance),
    (
        NotificationRaised::NAME,
        NotificationKind::ValidationWarning,
    ),
    (BatchRejected::NAME, NotificationKind::Rejection),
    (DeploymentRolledBack::NAME, NotificationKind::Rollback),
    (ApprovalRefused::NAME, NotificationKind::SignatureRefused),
];

/// The subjects of [`EVENTS`] (`modelbus.<name>`): the notifier's consumer
/// filter.
pub fn subjects() -> Vec<String> {
    EVENTS
        .iter()
        .map(|(n, _)| format!("modelbus.{n}"))
        .collect()
}

/// Most reasons a notification carries (the event keeps them all).
const MAX_DETAILS: usize = 20;
/// Longest reason or title kept, in characters.
const MAX_LINE: usize = 500;

/// How serious a notification is: Alertmanager's `severity` label, Slack's
/// marker, the CloudEvent's `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// For information.
    Info,
    /// Someone should look.
    Warning,
    /// Someone should act now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One thing to tell people, made from one event; every receiver renders it
/// in its own format.
#[derive(Debug, Clone)]
pub struct Notification {
    /// What it is about.
    pub kind: NotificationKind,
    /// How serious it is.
    pub severity: Severity,
    /// One line.
    pub title: String,
    /// The reasons, one line each (at most 20).
    pub details: Vec<String>,
    /// Model concerned.
    pub model: Option<String>,
    /// Its version (for a rollback, the version taken out of service).
    pub version: Option<u32>,
    /// Environment concerned.
    pub environment: Option<String>,
    /// Dataset concerned.
    pub dataset: Option<String>,
    /// Path of the report behind it on the registry's HTTP API.
    pub report_path: Option<String>,
    /// What else tells two notifications of the same kind and subject apart
    /// (a rollback's target version).
    pub distinct: String,
    /// Id of the event it was made from.
    pub event_id: String,
    /// That event's name (`drift.detected`).
    pub event_name: String,
    /// When that event was published.
    pub time: OffsetDateTime,
    /// Its pipeline run, if any.
    pub pipelinerun: Option<PipelineRunId>,
    /// Its payload, as published.
    pub data: serde_json::Value,
}

impl Notification {
    /// What the notification is about for people and CloudEvents' `subject`:
    /// the model, else the dataset.
    pub fn subject(&self) -> Option<&str> {
        self.model.as_deref().or(self.dataset.as_deref())
    }

    /// The de-duplication key at `receiver`: receiver, kind, model and
    /// version or dataset, environment, what else distinguishes it, and a
    /// digest of its sorted reasons with every number left out, so the same
    /// drift found again with other scores is a repeat, and drift of other
    /// columns is not.
    pub fn dedup_key(&self, receiver: &str) -> String {
        let mut reasons: Vec<String> = self.details.iter().map(|d| without_numbers(d)).collect();
        reasons.sort();
        reasons.dedup();
        let digest = Sha256::digest(reasons.join("\n").as_bytes());
        format!(
            "{receiver}|{}|{}@{}|{}|{}|{}|{}",
            self.kind.as_str(),
            self.model.as_deref().unwrap_or(""),
            self.version.map(|v| v.to_string()).unwrap_or_default(),
            self.dataset.as_deref().unwrap_or(""),
            self.environment.as_deref().unwrap_or(""),
            self.distinct,
            hex_prefix(&digest, 16),
        )
    }
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// `s` with every number (digits, with a decimal point or exponent inside)
/// replaced by `#`.
pub fn without_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let digit_at = |j: usize| chars.get(j).is_some_and(|c| c.is_ascii_digit());
            while i < chars.len() {
                if chars[i].is_ascii_digit() {
                    i += 1;
                } else if matches!(chars[i], '.' | 'e' | 'E') && digit_at(i + 1) {
                    i += 2;
                } else if matches!(chars[i], 'e' | 'E')
                    && matches!(chars.get(i + 1), Some('-' | '+'))
                    && digit_at(i + 2)
                {
                    i += 3;
                } else {
                    break;
                }
            }
            out.push('#');
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn line(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.chars().count() <= MAX_LINE {
        s
    } else {
        let mut t: String = s.chars().take(MAX_LINE - 1).collect();
        t.push('…');
        t
    }
}

fn lines(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().take(MAX_DETAILS).map(|s| line(s)).collect();
    if v.len() > MAX_DETAILS {
        out.push(format!("… and {} more", v.len() - MAX_DETAILS));
    }
    out
}

/// Why an event could not become a notification.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The event does not decode (its envelope or payload).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The envelope of any event, its `data` left as JSON, with the checks
/// [`events::decode`] makes: CloudEvents 1.0, the subject's type, an id.
fn raw_envelope(subject: &str, payload: &[u8]) -> Result<Envelope<serde_json::Value>, DecodeError> {
    let raw: Envelope<serde_json::Value> =
        serde_json::from_slice(payload).map_err(DecodeError::NotCloudEvent)?;
    if raw.specversion != events::SPEC_VERSION {
        return Err(DecodeError::Attribute {
            attribute: "specversion",
            reason: format!(
                "expected {:?}, got {:?}",
                events::SPEC_VERSION,
                raw.specversion.chars().take(20).collect::<String>()
            ),
        });
    }
    events::check_route(subject, &raw.event_type)?;
    if raw.id.is_empty() {
        return Err(DecodeError::Attribute {
            attribute: "id",
            reason: "must not be empty".into(),
        });
    }
    Ok(raw)
}

fn base<T>(
    e: &Envelope<T>,
    kind: NotificationKind,
    name: &str,
    data: serde_json::Value,
) -> Notification {
    Notification {
        kind,
        severity: Severity::Warning,
        title: String::new(),
        details: Vec::new(),
        model: None,
        version: None,
        environment: None,
        dataset: None,
        report_path: None,
        distinct: String::new(),
        event_id: e.id.clone(),
        event_name: name.to_string(),
        time: e.time,
        pipelinerun: e.pipelinerun.clone(),
        data,
    }
}

/// The notification an event on `subject` makes, if it makes one (a
/// `notification.raised` of another kind than validation warnings makes
/// none, and neither does an event the notifier does not read).
pub fn classify(subject: &str, payload: &[u8]) -> Result<Option<Notification>, ClassifyError> {
    let Some(name) = events::event_name_of(subject) else {
        return Ok(None);
    };
    let Some((_, kind)) = EVENTS.iter().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    let raw = raw_envelope(subject, payload)?;
    let data = raw.data.clone();
    let n = match kind {
        NotificationKind::Drift => {
            let e = events::decode_on::<DriftDetected>(subject, payload)?;
            let d = &e.data;
            let mut details = lines(&d.reasons);
            if !d.drifted_columns.is_empty() {
                details.push(line(&format!(
                    "drifted columns: {}",
                    d.drifted_columns.join(", ")
                )));
            }
            Notification {
                title: line(&format!(
                    "Drift in {} v{} ({})",
                    d.model, d.version, d.environment
                )),
                details,
                model: Some(d.model.to_string()),
                version: Some(d.version),
                environment: Some(d.environment.to_string()),
                report_path: Some(format!("/v1/reports/{}", d.report_sha256)),
                ..base(&e, *kind, name, data)
            }
        }
        NotificationKind::Performance => {
            let d = &raw.data;
            let model = d["model"]
                .as_str()
                .and_then(|m| ModelName::parse(m).ok())
                .map(|m| m.to_string());
            let version = d["version"].as_u64().and_then(|v| u32::try_from(v).ok());
            let environment = d["environment"]
                .as_str()
                .and_then(|s| serde_json::from_value::<Environment>(s.into()).ok())
                .map(|e| e.to_string());
            let reasons: Vec<String> = d["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let basis = d["basis"].as_str().map(|b| format!(", {}", line(b)));
            Notification {
                severity: Severity::Critical,
                title: line(&format!(
                    "{} v{} performs worse than its evaluation ({}{})",
                    model.as_deref().unwrap_or("(unnamed model)"),
                    version.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
                    environment.as_deref().unwrap_or("?"),
                    basis.unwrap_or_default()
                )),
                details: lines(&reasons),
                model,
                version,
                environment,
                ..base(&raw, *kind, name, data)
            }
        }
        NotificationKind::ValidationWarning => {
            let e = events::decode_on::<NotificationRaised>(subject, payload)?;
            if e.data.kind != VALIDATION_WARNING {
                return Ok(None);
            }
            let d = &e.data;
            Notification {
                severity: match d.severity.as_str() {
                    "info" => Severity::Info,
                    "error" | "critical" => Severity::Critical,
                    _ => Severity::Warning,
                },
                title: line(&d.title),
                details: lines(&d.details),
                dataset: d.dataset.as_ref().map(|d| d.to_string()),
                ..base(&e, *kind, name, data)
            }
        }
        NotificationKind::Rejection => {
            let e = events::decode_on::<BatchRejected>(subject, payload)?;
            let d = &e.data;
            Notification {
                title: line(&format!(
                    "A batch of {} was rejected ({} failed check(s)); it stays in quarantine",
                    d.dataset,
                    d.reasons.len()
                )),
                details: lines(&d.reasons),
                dataset: Some(d.dataset.to_string()),
                report_path: Some(format!("/v1/batches/{}/report.html", d.batch_sha256)),
                ..base(&e, *kind, name, data)
            }
        }
        NotificationKind::Rollback => {
            let e = events::decode_on::<DeploymentRolledBack>(subject, payload)?;
            let d = &e.data;
            let to = if d.to_version == 0 {
                "nothing (it no longer serves the model)".to_string()
            } else {
                format!("v{}", d.to_version)
            };
            let who = if d.automatic {
                "automatic: the deployer's own decision".to_string()
            } else {
                format!("requested by operator {}", line(&d.operator))
            };
            Notification {
                severity: Severity::Critical,
                title: line(&format!(
                    "{} in {} rolled back from v{} to {to}",
                    d.model, d.environment, d.from_version
                )),
                details: vec![line(&d.reason), who],
                model: Some(d.model.to_string()),
                version: Some(d.from_version),
                environment: Some(d.environment.to_string()),
                distinct: format!("to v{}", d.to_version),
                ..base(&e, *kind, name, data)
            }
        }
        NotificationKind::SignatureRefused => {
            let e = events::decode_on::<ApprovalRefused>(subject, payload)?;
            let d = &e.data;
            Notification {
                severity: Severity::Critical,
                title: line(&format!(
                    "Refused a signed statement for {} v{} in {}",
                    d.model, d.version, d.environment
                )),
                details: vec![line(&d.reason)],
                model: Some(d.model.to_string()),
                version: Some(d.version),
                environment: Some(d.environment.to_string()),
                ..base(&e, *kind, name, data)
            }
        }
    };
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_core::ids::Sha256Digest;

    fn drift(reasons: &[&str], columns: &[&str]) -> Vec<u8> {
        Envelope::new(
            "/modelbus/monitor",
            &format!("{reasons:?}"),
            DriftDetected {
                window_id: "w1".into(),
                environment: Environment::Production,
                model: ModelName::parse("telco-churn").unwrap(),
                version: 3,
                model_sha256: Sha256Digest::of(b"m"),
                reasons: reasons.iter().map(|s| s.to_string()).collect(),
                drifted_columns: columns.iter().map(|s| s.to_string()).collect(),
                report_sha256: Sha256Digest::of(b"r"),
                policy_digest: "p".into(),
            },
        )
        .to_json()
    }

    #[test]
    fn drift_becomes_a_notification_about_its_model() {
        let n = classify(
            "modelbus.drift.detected",
            &drift(
                &["feature drift: Contract (jensenshannon 0.2004, threshold 0.1)"],
                &["Contract"],
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.kind, NotificationKind::Drift);
        assert_eq!(n.title, "Drift in telco-churn v3 (production)");
        assert_eq!(n.model.as_deref(), Some("telco-churn"));
        assert_eq!(n.environment.as_deref(), Some("production"));
        assert!(n.details.iter().any(|d| d == "drifted columns: Contract"));
        assert_eq!(
            n.report_path,
            Some(format!("/v1/reports/{}", Sha256Digest::of(b"r")))
        );
    }

    #[test]
    fn repeats_differ_only_in_numbers() {
        let a = classify(
            "modelbus.drift.detected",
            &drift(
                &["Contract (jensenshannon 0.2004, threshold 0.1)"],
                &["Contract"],
            ),
        )
        .unwrap()
        .unwrap();
        let b = classify(
            "modelbus.drift.detected",
            &drift(
                &["Contract (jensenshannon 0.31, threshold 0.1)"],
                &["Contract"],
            ),
        )
        .unwrap()
        .unwrap();
        let c = classify(
            "modelbus.drift.detected",
            &drift(&["tenure (wasserstein 0.2, threshold 0.1)"], &["tenure"]),
        )
        .unwrap()
        .unwrap();
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(a.dedup_key("am"), b.dedup_key("am"));
        assert_ne!(a.dedup_key("am"), c.dedup_key("am"));
        assert_ne!(a.dedup_key("am"), a.dedup_key("chat"));
        assert_eq!(without_numbers("p 0.05 < 1e-3, 12 rows"), "p # < #, # rows");
    }

    #[test]
    fn performance_is_read_from_the_raw_envelope() {
        let v = serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "/modelbus/monitor",
            "type": "io.modelbus.performance.degraded.v1", "time": "2026-01-02T03:04:05Z",
            "datacontenttype": "application/json",
            "data": {"window_id": "w", "environment": "staging", "model": "m1", "version": 2,
                     "basis": "realised", "reasons": ["roc_auc 0.61 below 0.7"], "policy_digest": "x"}
        });
        let n = classify(
            "modelbus.performance.degraded",
            &serde_json::to_vec(&v).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.kind, NotificationKind::Performance);
        assert_eq!(
            (n.model.as_deref(), n.version, n.environment.as_deref()),
            (Some("m1"), Some(2), Some("staging"))
        );
        assert_eq!(n.details, vec!["roc_auc 0.61 below 0.7".to_string()]);
        assert!(n.title.contains("realised"), "{}", n.title);
    }

    #[test]
    fn other_notifications_and_misrouted_events_make_none() {
        let other = Envelope::new(
            "/x",
            "k",
            NotificationRaised {
                severity: "info".into(),
                kind: "something_else".into(),
                title: "t".into(),
                details: vec![],
                dataset: None,
            },
        )
        .to_json();
        assert!(
            classify("modelbus.notification.raised", &other)
                .unwrap()
                .is_none()
        );
        assert!(classify("modelbus.model.trained", b"{}").unwrap().is_none());
        // A drift event on the rollback subject is refused, not read as drift.
        assert!(classify("modelbus.deployment.rolled_back", &drift(&[], &[])).is_err());
        assert!(classify("modelbus.drift.detected", b"not json").is_err());
    }
}
