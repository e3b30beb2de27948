//! Live performance: estimated when a window closes (CBPE from its
//! probabilities), realised whenever labels join it (`labels.joined`, from
//! the registry, which keeps the prediction index and the labels).

use std::collections::BTreeSet;

use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::{
    Envelope, LabelsJoined, PerformanceDegraded, PerformanceFigures, WindowDecision,
    WindowPerformance,
};
use modelbus_core::ids::{Environment, ModelName};
use modelbus_models::monitoring::HoldoutFigures;
use modelbus_models::performance::{Estimated, Realised};
use modelbus_proto::registry::v1 as pb;
use serde_json::Value;

use crate::{Monitor, SOURCE};

/// Most windows one `labels.joined` may make the monitor recompute.
const MAX_WINDOWS: usize = 10_000;

/// Estimated figures as the bus carries them.
pub(crate) fn estimated_figures(e: &Estimated) -> PerformanceFigures {
    PerformanceFigures {
        rows: e.rows,
        positives: e.positive_rate.unwrap_or(0.0) * e.rows as f64,
        roc_auc: e.roc_auc,
        accuracy: e.accuracy,
        precision: e.precision,
        recall: e.recall,
        f1: e.f1,
        threshold: e.threshold,
        tp: e.confusion.tp,
        fp: e.confusion.fp,
        tn: e.confusion.tn,
        fn_: e.confusion.fn_,
        ..PerformanceFigures::default()
    }
}

/// Realised figures as the bus carries them.
pub(crate) fn realised_figures(r: &Realised) -> PerformanceFigures {
    PerformanceFigures {
        rows: r.rows,
        positives: r.positives as f64,
        roc_auc: r.roc_auc,
        pr_auc: r.pr_auc,
        log_loss: r.log_loss,
        brier: r.brier,
        ece: r.ece,
        accuracy: r.accuracy,
        precision: r.precision,
        recall: r.recall,
        f1: r.f1,
        threshold: r.threshold,
        tp: r.confusion.tp,
        fp: r.confusion.fp,
        tn: r.confusion.tn,
        fn_: r.confusion.fn_,
    }
}

/// The holdout's figures as the policy reads them.
pub(crate) fn holdout_json(h: &HoldoutFigures) -> Value {
    let num = |v: f64| {
        if v.is_finite() {
            Value::from(v)
        } else {
            Value::Null
        }
    };
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("roc_auc", h.roc_auc),
        ("pr_auc", h.pr_auc),
        ("log_loss", h.log_loss),
        ("brier", h.brier),
        ("ece", h.ece),
    ] {
        // An undefined figure is a missing key: the policy's comparisons on
        // it are then undefined, so they decide nothing.
        if v.is_finite() {
            m.insert(k.into(), num(v));
        }
    }
    m.insert("rows".into(), h.rows.into());
    m.insert("threshold".into(), num(h.threshold));
    Value::Object(m)
}

/// Performance gauges of one window (per environment, model, version, metric, source).
pub(crate) fn record_gauges(
    environment: Environment,
    model: &ModelName,
    version: u32,
    source: &'static str,
    f: &PerformanceFigures,
) {
    let figures = [
        ("roc_auc", f.roc_auc),
        ("pr_auc", f.pr_auc),
        ("log_loss", f.log_loss),
        ("brier", f.brier),
        ("ece", f.ece),
        ("accuracy", f.accuracy),
        ("f1", f.f1),
    ];
    for (metric, v) in figures {
        if let Some(v) = v {
            metrics::gauge!("modelbus_monitor_performance",
                "environment" => environment.as_str(), "model" => model.as_str().to_string(),
                "version" => version.to_string(), "metric" => metric, "source" => source)
            .set(v);
        }
    }
}

/// The holdout's figures as gauges (what live figures are compared with).
pub(crate) fn record_holdout(
    environment: Environment,
    model: &ModelName,
    version: u32,
    h: &HoldoutFigures,
) {
    let finite = |v: f64| v.is_finite().then_some(v);
    let figures = PerformanceFigures {
        roc_auc: finite(h.roc_auc),
        pr_auc: finite(h.pr_auc),
        log_loss: finite(h.log_loss),
        brier: finite(h.brier),
        ece: finite(h.ece),
        ..PerformanceFigures::default()
    };
    record_gauges(environment, model, version, "holdout", &figures);
}

impl Monitor {
    /// Recomputes the realised performance of every window a join of labels
    /// changed, asks the policy, and publishes the outcome.
    pub(crate) async fn handle_labels(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<LabelsJoined>()?;
        let j = &e.data;
        if j.windows.len() > MAX_WINDOWS {
            return Err(HandlerError::Reject(format!(
                "labels.joined lists {} windows (at most {MAX_WINDOWS})",
                j.windows.len()
            )));
        }
        for (outcome, n) in [
            ("joined", j.joined),
            ("pending", j.pending),
            ("outside_window", j.outside_window),
            ("duplicate", j.duplicate),
        ] {
            metrics::counter!("modelbus_monitor_labels_total", "outcome" => outcome).increment(n);
        }
        let unique: BTreeSet<&String> = j.windows.iter().collect();
        for window in unique {
            self.window_performance(window, &j.labels_id).await?;
        }
        Ok(())
    }

    async fn window_performance(
        &self,
        window_id: &str,
        labels_id: &str,
    ) -> Result<(), HandlerError> {
        let w = match self
            .registry
            .clone()
            .get_window_labels(pb::GetWindowLabelsRequest {
                window_id: window_id.to_string(),
            })
            .await
        {
            Ok(w) => w.into_inner(),
            Err(st) if st.code() == tonic::Code::NotFound => {
                tracing::warn!(
                    window_id,
                    "labels joined a window the registry does not know"
                );
                return Ok(());
            }
            Err(st) => return Err(modelbus_stage::registry_error(st)),
        };
        let model = ModelName::parse(&w.model).map_err(HandlerError::reject)?;
        let environment: Environment = w.environment.parse().map_err(HandlerError::reject)?;
        let Ok(loaded) = self.reference(&w.model, w.version).await? else {
            return Ok(());
        };
        if w.probabilities.len() != w.positive.len() {
            return Err(HandlerError::Reject(format!(
                "window {window_id}: {} probabilities, {} labels",
                w.probabilities.len(),
                w.positive.len()
            )));
        }
        let y: Vec<f64> = w.positive.iter().map(|&p| f64::from(u8::from(p))).collect();
        let realised = realised_figures(&modelbus_models::performance::realised(
            &y,
            &w.probabilities,
            loaded.reference.holdout.threshold,
        ));
        let coverage = if w.rows == 0 {
            0.0
        } else {
            (realised.rows as f64 / w.rows as f64).min(1.0)
        };
        let estimated: Option<PerformanceFigures> = if w.estimated_json.is_empty() {
            None
        } else {
            serde_json::from_str(&w.estimated_json).ok()
        };
        let c = &self.ctx.config.monitor;
        let input = serde_json::json!({
            "environment": environment,
            "model": model,
            "version": w.version,
            "window": {"rows": w.rows, "dropped": 0},
            "drift": {"share": 0.0, "drift_share": c.drift_share, "drifted": false, "columns": []},
            "settings": {"min_rows": c.min_rows},
            "performance": {
                "holdout": holdout_json(&loaded.reference.holdout),
                "estimated": estimated,
                "realised": realised,
                "label_coverage": coverage,
            },
        });
        let decisions: Vec<WindowDecision> = self
            .policies
            .evaluate_monitoring(&input)
            .map_err(|err| HandlerError::Retry(format!("monitoring policy: {err}")))?
            .into_iter()
            .map(|d| WindowDecision {
                kind: d.kind,
                reason: d.reason,
            })
            .collect();
        let policy_digest = self.policies.digest();
        record_gauges(environment, &model, w.version, "live", &realised);
        metrics::gauge!("modelbus_monitor_label_coverage", "environment" => environment.as_str(), "model" => model.as_str().to_string())
            .set(coverage);
        let key = format!("performance/{window_id}/{labels_id}");
        let reasons: Vec<String> = decisions
            .iter()
            .filter(|d| d.kind == "performance.degraded")
            .map(|d| d.reason.clone())
            .collect();
        let event = Envelope::new(
            SOURCE,
            &key,
            WindowPerformance {
                window_id: window_id.to_string(),
                environment,
                model: model.clone(),
                version: w.version,
                window_rows: w.rows,
                label_coverage: coverage,
                realised,
                decisions,
                policy_digest: policy_digest.clone(),
            },
        )
        .with_subject(model.as_str());
        self.ctx
            .bus
            .publish(&event)
            .await
            .map_err(HandlerError::retry)?;
        let degraded = !reasons.is_empty();
        if degraded {
            publish_degraded(
                &self.ctx,
                &format!("degraded/{key}"),
                window_id,
                environment,
                &model,
                w.version,
                "realised",
                reasons,
                policy_digest,
            )
            .await
            .map_err(HandlerError::Retry)?;
            self.request_retrain(
                model.as_str(),
                crate::retrain::Request {
                    kind: "performance.degraded".into(),
                    window_id: window_id.to_string(),
                    version: w.version,
                },
            );
        } else {
            // A request waiting for labels may have enough now.
            self.spawn_retrain(model.as_str());
        }
        Ok(())
    }
}

/// Publishes `performance.degraded` (the id derives from `key`: a retry is
/// one event).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish_degraded(
    ctx: &modelbus_core::Context,
    key: &str,
    window_id: &str,
    environment: Environment,
    model: &ModelName,
    version: u32,
    basis: &str,
    reasons: Vec<String>,
    policy_digest: String,
) -> Result<(), String> {
    let event = Envelope::new(
        SOURCE,
        key,
        PerformanceDegraded {
            window_id: window_id.to_string(),
            environment,
            model: model.clone(),
            version,
            basis: basis.to_string(),
            reasons,
            policy_digest,
        },
    )
    .with_subject(model.as_str());
    ctx.bus.publish(&event).await.map_err(|e| e.to_string())?;
    metrics::counter!("modelbus_monitor_performance_degraded_total",
        "environment" => environment.as_str(), "model" => model.as_str().to_string())
    .increment(1);
    Ok(())
}
