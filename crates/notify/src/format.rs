//! The three wire formats of a notification: Alertmanager's v2 alerts,
//! Slack-compatible incoming webhooks and CloudEvents (structured mode).

use std::time::Duration;

use modelbus_core::config::{NotificationKind, ReceiverFormat};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::notification::Notification;

/// `source` of the CloudEvents the notifier sends.
pub const CLOUDEVENTS_SOURCE: &str = "/modelbus/notifier";

/// Where a receiver of `format` configured with `url` is posted to:
/// Alertmanager's `{url}/api/v2/alerts` (unless `url` already ends so), the
/// URL itself otherwise.
pub fn endpoint(format: ReceiverFormat, url: &str) -> String {
    match format {
        ReceiverFormat::Alertmanager => {
            let base = url.trim_end_matches('/');
            if base.ends_with("/api/v2/alerts") {
                base.to_string()
            } else {
                format!("{base}/api/v2/alerts")
            }
        }
        _ => url.to_string(),
    }
}

/// The `Content-Type` of a format's body.
pub fn content_type(format: ReceiverFormat) -> &'static str {
    match format {
        ReceiverFormat::Cloudevents => "application/cloudevents+json",
        _ => "application/json",
    }
}

/// The body of a notification in a receiver's format. `registry` is the
/// registry's HTTP base URL (links to reports and models); `repeat_interval`
/// is how long an Alertmanager alert lasts unless sent again.
pub fn body(
    format: ReceiverFormat,
    n: &Notification,
    registry: &str,
    repeat_interval: Duration,
) -> Vec<u8> {
    let v = match format {
        ReceiverFormat::Alertmanager => alertmanager(n, registry, repeat_interval),
        ReceiverFormat::Slack => slack(n, registry),
        ReceiverFormat::Cloudevents => cloudevent(n, registry),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `ModelbusDrift`, `ModelbusValidationWarning`, ...: the `alertname`.
pub fn alert_name(kind: NotificationKind) -> String {
    let camel: String = kind
        .as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("Modelbus{camel}")
}

/// The registry page a notification comes from: its model, else its
/// dataset, else the list of models.
fn generator_url(n: &Notification, registry: &str) -> String {
    match (&n.model, &n.dataset) {
        (Some(m), _) => format!("{registry}/v1/models/{m}"),
        (None, Some(d)) => format!("{registry}/v1/datasets/{d}"),
        _ => format!("{registry}/v1/models"),
    }
}

fn report_url(n: &Notification, registry: &str) -> Option<String> {
    n.report_path.as_ref().map(|p| format!("{registry}{p}"))
}

/// One alert for `POST /api/v2/alerts`: labels name the alert (Alertmanager
/// routes, groups and silences on them), annotations explain it, and it ends
/// `repeat_interval` after the event unless sent again.
fn alertmanager(n: &Notification, registry: &str, repeat_interval: Duration) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), alert_name(n.kind).into());
    labels.insert("severity".into(), n.severity.as_str().into());
    labels.insert("service".into(), "modelbus".into());
    labels.insert("kind".into(), n.kind.as_str().into());
    // Alertmanager tells alerts apart by their labels: absent values are
    // left out rather than sent empty.
    if let Some(m) = &n.model {
        labels.insert("model".into(), m.clone().into());
    }
    if let Some(v) = n.version {
        labels.insert("version".into(), v.to_string().into());
    }
    if let Some(e) = &n.environment {
        labels.insert("environment".into(), e.clone().into());
    }
    if let Some(d) = &n.dataset {
        labels.insert("dataset".into(), d.clone().into());
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), n.title.clone().into());
    annotations.insert("description".into(), n.details.join("\n").into());
    if let Some(r) = report_url(n, registry) {
        annotations.insert("report".into(), r.into());
    }
    annotations.insert("event_id".into(), n.event_id.clone().into());
    let ends = n.time + repeat_interval;
    json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(n.time),
        "endsAt": rfc3339(ends),
        "generatorURL": generator_url(n, registry),
    }])
}

/// Escapes text for Slack's mrkdwn (`&`, `<`, `>`).
pub fn mrkdwn_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's limit on a section's text.
const SLACK_SECTION: usize = 2900;

/// An incoming-webhook message: `text` for notifications and clients
/// without blocks, `blocks` with the title, the reasons and a context line.
fn slack(n: &Notification, registry: &str) -> Value {
    let marker = match n.severity {
        crate::notification::Severity::Critical => ":rotating_light:",
        crate::notification::Severity::Warning => ":warning:",
        crate::notification::Severity::Info => ":information_source:",
    };
    let title = mrkdwn_escape(&n.title);
    let mut section = format!("{marker} *{title}*");
    for d in &n.details {
        let next = format!("\n• {}", mrkdwn_escape(d));
        if section.len() + next.len() > SLACK_SECTION {
            section.push_str("\n• …");
            break;
        }
        section.push_str(&next);
    }
    let mut context: Vec<String> = Vec::new();
    if let Some(m) = &n.model {
        context.push(format!("model *{}*", mrkdwn_escape(m)));
    }
    if let Some(v) = n.version {
        context.push(format!("version *{v}*"));
    }
    if let Some(e) = &n.environment {
        context.push(format!("environment *{}*", mrkdwn_escape(e)));
    }
    if let Some(d) = &n.dataset {
        context.push(format!("dataset *{}*", mrkdwn_escape(d)));
    }
    if let Some(r) = report_url(n, registry) {
        context.push(format!("<{r}|report>"));
    }
    context.push(format!("`{}` {}", n.event_name, rfc3339(n.time)));
    json!({
        "text": format!("[{}] {}", n.severity.as_str().to_uppercase(), n.title),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]},
        ],
    })
}

/// A CloudEvent in structured mode: type `io.modelbus.<event name>`, the
/// modelbus event's id and time, and as data the notification with the
/// event's payload under `event`.
fn cloudevent(n: &Notification, registry: &str) -> Value {
    let mut ce = json!({
        "specversion": "1.0",
        "id": n.event_id,
        "source": CLOUDEVENTS_SOURCE,
        "type": format!("io.modelbus.{}", n.event_name),
        "time": rfc3339(n.time),
        "datacontenttype": "application/json",
        "data": {
            "kind": n.kind.as_str(),
            "severity": n.severity.as_str(),
            "summary": n.title,
            "details": n.details,
            "model": n.model,
            "version": n.version,
            "environment": n.environment,
            "dataset": n.dataset,
            "report": report_url(n, registry),
            "event": n.data,
        },
    });
    if let Some(s) = n.subject() {
        ce["subject"] = s.into();
    }
    ce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Severity;

    fn sample() -> Notification {
        Notification {
            kind: NotificationKind::ValidationWarning,
            severity: Severity::Warning,
            title: "2 warning(s) <validating>".into(),
            details: vec!["a & b".into(), "c".into()],
            model: None,
            version: None,
            environment: None,
            dataset: Some("telco-churn".into()),
            report_path: Some("/v1/batches/ab/report.html".into()),
            distinct: String::new(),
            event_id: "e1".into(),
            event_name: "notification.raised".into(),
            time: time::macros::datetime!(2026-01-02 03:04:05 UTC),
            pipelinerun: None,
            data: json!({"x": 1}),
        }
    }

    #[test]
    fn alertmanager_alerts_carry_routing_labels_and_end_after_the_interval() {
        let v: Value = serde_json::from_slice(&body(
            ReceiverFormat::Alertmanager,
            &sample(),
            "http://r:7070",
            Duration::from_secs(3600),
        ))
        .unwrap();
        let a = &v[0];
        assert_eq!(a["labels"]["alertname"], "ModelbusValidationWarning");
        assert_eq!(a["labels"]["dataset"], "telco-churn");
        assert_eq!(a["labels"]["service"], "modelbus");
        assert!(a["labels"].get("model").is_none());
        assert_eq!(a["startsAt"], "2026-01-02T03:04:05Z");
        assert_eq!(a["endsAt"], "2026-01-02T04:04:05Z");
        assert_eq!(a["generatorURL"], "http://r:7070/v1/datasets/telco-churn");
        assert_eq!(
            a["annotations"]["report"],
            "http://r:7070/v1/batches/ab/report.html"
        );
        assert_eq!(
            endpoint(ReceiverFormat::Alertmanager, "http://am:9093/"),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(
            endpoint(ReceiverFormat::Alertmanager, "http://am/api/v2/alerts"),
            "http://am/api/v2/alerts"
        );
    }

    #[test]
    fn slack_text_is_escaped() {
        let v: Value = serde_json::from_slice(&body(
            ReceiverFormat::Slack,
            &sample(),
            "http://r",
            Duration::ZERO,
        ))
        .unwrap();
        let section = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;validating&gt;"), "{section}");
        assert!(section.contains("• a &amp; b"), "{section}");
        assert!(v["text"].as_str().unwrap().starts_with("[WARNING]"));
    }

    #[test]
    fn cloudevents_are_structured_mode_events() {
        let v: Value = serde_json::from_slice(&body(
            ReceiverFormat::Cloudevents,
            &sample(),
            "http://r",
            Duration::ZERO,
        ))
        .unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.modelbus.notification.raised");
        assert_eq!(v["subject"], "telco-churn");
        assert_eq!(v["data"]["kind"], "validation_warning");
        assert_eq!(v["data"]["event"]["x"], 1);
        assert_eq!(alert_name(NotificationKind::Drift), "ModelbusDrift");
    }
}
