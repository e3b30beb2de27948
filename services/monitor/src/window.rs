//! One window of live traffic: its samples while open, and what closing it
//! produces (the drift report, its HTML page, the policy's decisions and the
//! events that carry them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use modelbus_core::Context;
use modelbus_core::config::MonitorConfig;
use modelbus_core::events::{
    DriftDetected, Envelope, MonitorWindowClosed, PredictionRecord, WindowDecision,
};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_featurize::drift::multivariate::{MultivariateDrift, PcaWindow};
use modelbus_featurize::drift::{self, DatasetDrift, DriftOptions};
use modelbus_featurize::features::Cell;
use modelbus_featurize::sample::{FeatureKind, FeatureSampler};
use modelbus_models::monitoring::{IndexedPrediction, PREDICTION_COLUMN};
use serde_json::Value;

use crate::{Loaded, SOURCE};

/// What a window is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Environment.
    pub environment: Environment,
    /// Model.
    pub model: ModelName,
    /// Version.
    pub version: u32,
}

/// An open window.
pub struct Window {
    /// Its key.
    pub key: Key,
    /// Its id: environment, model, version and its first prediction's id.
    pub id: String,
    /// Time of its first prediction (as logged).
    pub opened: String,
    /// When this process opened it (for `monitor.window_duration`).
    pub started: Instant,
    /// Predictions added.
    pub rows: u64,
    /// Predictions serving dropped while it was open.
    pub dropped: u64,
    model_sha256: Sha256Digest,
    loaded: Arc<Loaded>,
    sampler: FeatureSampler,
    /// Each prediction's id, entity, time and probability: the window's
    /// index, stored at close so labels can be joined to it.
    index: Vec<IndexedPrediction>,
    /// Running PCA reconstruction errors, when the reference has a PCA.
    pca: Option<PcaWindow>,
    /// Scratch buffer of one encoded record.
    encoded: Vec<f64>,
    /// Logged records kept for retraining (JSON lines of id and input), up
    /// to `monitor.max_record_bytes`.
    records: Vec<u8>,
    /// Their limit.
    max_record_bytes: usize,
}

/// [`KeptRecord`] as written.
#[derive(serde::Serialize)]
struct KeptRecordRef<'a> {
    id: &'a str,
    input: &'a serde_json::Map<String, Value>,
}

/// One logged record as a window keeps it for retraining.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptRecord {
    pub(crate) id: String,
    pub(crate) input: serde_json::Map<String, Value>,
}

/// Unix milliseconds of a logged record's time (0 when it does not parse:
/// serving writes RFC 3339, and such a record is still counted).
fn time_ms(text: &str) -> i64 {
    modelbus_dataset::labels::parse_time_ms(text).unwrap_or(0)
}

/// A cell of a logged record: the spec's null markers are nulls.
fn cell_of<'a>(v: Option<&'a Value>, nulls: &[String]) -> Cell<'a> {
    match v {
        Some(Value::String(s)) if nulls.iter().any(|n| n == s) => Cell::Null,
        Some(Value::String(s)) => Cell::Text(s),
        Some(Value::Number(n)) => n.as_f64().map(Cell::Num).unwrap_or(Cell::Null),
        Some(Value::Bool(b)) => Cell::Bool(*b),
        _ => Cell::Null,
    }
}

impl Window {
    /// Opens a window with `first` as its first record (not yet added).
    pub(crate) fn open(
        key: Key,
        first: &PredictionRecord,
        loaded: Arc<Loaded>,
        max_record_bytes: u64,
    ) -> Self {
        let mut sampler = FeatureSampler::from_transform(&loaded.transform);
        sampler.add_column(PREDICTION_COLUMN, FeatureKind::Numeric);
        Self {
            id: format!(
                "{}/{}/{}/{}",
                key.environment, key.model, key.version, first.prediction_id
            ),
            opened: first.time.clone(),
            started: Instant::now(),
            rows: 0,
            dropped: 0,
            model_sha256: first.model_sha256,
            key,
            sampler,
            index: Vec::new(),
            pca: loaded
                .reference
                .multivariate
                .as_ref()
                .filter(|p| p.features == loaded.transform.feature_names())
                .map(|_| PcaWindow::default()),
            encoded: Vec::new(),
            records: Vec::new(),
            max_record_bytes: usize::try_from(max_record_bytes).unwrap_or(usize::MAX),
            loaded,
        }
    }

    /// Adds one record.
    pub(crate) fn add(&mut self, r: &PredictionRecord) {
        let nulls = &self.loaded.reference.null_values;
        let cells: Vec<Cell<'_>> = self
            .sampler
            .inputs
            .iter()
            .map(|name| {
                if name == PREDICTION_COLUMN {
                    Cell::Num(r.probability)
                } else {
                    cell_of(r.input.get(name), nulls)
                }
            })
            .collect();
        self.sampler.add_cells(&cells);
        self.rows += 1;
        if self.records.len() < self.max_record_bytes {
            let before = self.records.len();
            // Written from references: the record is not copied to be kept.
            let kept = serde_json::to_writer(
                &mut self.records,
                &KeptRecordRef {
                    id: &r.prediction_id,
                    input: &r.input,
                },
            );
            if kept.is_ok() && self.records.len() <= self.max_record_bytes {
                self.records.push(b'\n');
            } else {
                self.records.truncate(before);
                self.max_record_bytes = before; // full: keep no more
                metrics::counter!("modelbus_monitor_records_not_kept_total").increment(1);
            }
        } else if self.max_record_bytes > 0 {
            metrics::counter!("modelbus_monitor_records_not_kept_total").increment(1);
        }
        if let (Some(pca), Some(window)) = (&self.loaded.reference.multivariate, &mut self.pca) {
            // The sampler's inputs are the transform's, then `@probability`:
            // the same cells, read once.
            let t = &self.loaded.transform;
            let n = t.inputs.len().min(cells.len());
            self.encoded.clear();
            t.encode_row(&cells[..n], &mut self.encoded);
            pca.add(&self.encoded, window);
        }
        if r.prediction_id.len() <= 64 && r.probability.is_finite() {
            self.index.push(IndexedPrediction {
                id: r.prediction_id.clone(),
                entity: r.entity.clone().filter(|e| e.len() <= 256),
                time_ms: time_ms(&r.time),
                p: r.probability,
            });
        }
    }
}

/// A closed window, evaluated: the bytes to store and the events to publish.
pub(crate) struct Evaluated {
    pub(crate) event: MonitorWindowClosed,
    pub(crate) drift: Option<DriftDetected>,
    report: Vec<u8>,
    html: Vec<u8>,
    index: Vec<u8>,
    records: Vec<u8>,
    /// Estimated performance decided degraded (its reasons), if so.
    pub(crate) degraded: Vec<String>,
}

/// The drift report as stored: the window and its drift.
#[derive(serde::Serialize)]
struct Report<'a> {
    window_id: &'a str,
    environment: Environment,
    model: &'a str,
    version: u32,
    opened: &'a str,
    closed: &'a str,
    closed_by: &'a str,
    rows: u64,
    dropped: u64,
    drift: &'a DatasetDrift,
    #[serde(skip_serializing_if = "Option::is_none")]
    multivariate: Option<&'a MultivariateDrift>,
    decisions: &'a [WindowDecision],
    policy_digest: &'a str,
}

/// Compares the window with its reference and asks the policy what it means.
pub(crate) fn evaluate(
    w: Window,
    closed_by: &str,
    c: &MonitorConfig,
    policies: &modelbus_policy::PolicySet,
) -> Result<Evaluated, String> {
    let closed = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (rows, samples) = w.sampler.finish();
    let options = DriftOptions {
        drift_share: c.drift_share,
        min_rows: c.min_rows,
        ..DriftOptions::default()
    };
    let report = drift::compare(
        &w.loaded.drift,
        rows,
        samples.into_iter().map(|(f, s)| (f.name, s)).collect(),
        &options,
    )
    .map_err(|e| e.to_string())?;
    let columns: Vec<Value> = report
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "column": c.column, "method": c.method.name(), "score": c.score,
                "threshold": c.threshold, "drifted": c.drifted,
            })
        })
        .collect();
    let multivariate: Option<MultivariateDrift> = match (&w.loaded.reference.multivariate, &w.pca) {
        (Some(r), Some(pw)) => r.result(pw),
        _ => None,
    };
    let probabilities: Vec<f64> = w.index.iter().map(|p| p.p).collect();
    let estimated =
        crate::performance::estimated_figures(&w.loaded.reference.estimate(&probabilities));
    let input = serde_json::json!({
        "performance": {
            "holdout": crate::performance::holdout_json(&w.loaded.reference.holdout),
            "estimated": estimated,
        },
        "multivariate": multivariate,
        "environment": w.key.environment,
        "model": w.key.model,
        "version": w.key.version,
        "window": {"rows": w.rows, "dropped": w.dropped},
        "drift": {
            "share": report.share,
            "drift_share": report.drift_share,
            "drifted": report.drifted,
            "columns": columns,
        },
        "settings": {"min_rows": c.min_rows},
    });
    let decisions: Vec<WindowDecision> = policies
        .evaluate_monitoring(&input)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| WindowDecision {
            kind: d.kind,
            reason: d.reason,
        })
        .collect();
    let policy_digest = policies.digest();
    let json = serde_json::to_vec(&Report {
        window_id: &w.id,
        environment: w.key.environment,
        model: w.key.model.as_str(),
        version: w.key.version,
        opened: &w.opened,
        closed: &closed,
        closed_by,
        rows: w.rows,
        dropped: w.dropped,
        drift: &report,
        multivariate: multivariate.as_ref(),
        decisions: &decisions,
        policy_digest: &policy_digest,
    })
    .map_err(|e| e.to_string())?;
    let title = format!(
        "{} v{} in {}, window of {} predictions from {}",
        w.key.model, w.key.version, w.key.environment, w.rows, w.opened
    );
    let html = drift::html::render(&title, &report).into_bytes();
    let drifted_columns: Vec<String> = report
        .columns
        .iter()
        .filter(|c| c.drifted)
        .map(|c| c.column.clone())
        .collect();
    let scores: BTreeMap<String, f64> = report
        .columns
        .iter()
        .map(|c| (c.column.clone(), c.score))
        .collect();
    record_metrics(&w.key, &report);
    if let Some(m) = &multivariate {
        metrics::gauge!("modelbus_monitor_reconstruction_error", "environment" => w.key.environment.as_str(), "model" => w.key.model.as_str().to_string())
            .set(m.error);
    }
    crate::performance::record_gauges(
        w.key.environment,
        &w.key.model,
        w.key.version,
        "estimated",
        &estimated,
    );
    crate::performance::record_holdout(
        w.key.environment,
        &w.key.model,
        w.key.version,
        &w.loaded.reference.holdout,
    );
    let mut index = Vec::with_capacity(w.index.len() * 96);
    for p in &w.index {
        if serde_json::to_writer(&mut index, p).is_ok() {
            index.push(b'\n');
        }
    }
    let degraded: Vec<String> = decisions
        .iter()
        .filter(|d| d.kind == "performance.degraded")
        .map(|d| d.reason.clone())
        .collect();
    let report_sha256 = Sha256Digest::of(&json);
    let reasons: Vec<String> = decisions
        .iter()
        .filter(|d| d.kind == "drift.detected")
        .map(|d| d.reason.clone())
        .collect();
    let drift = (!reasons.is_empty()).then(|| DriftDetected {
        window_id: w.id.clone(),
        environment: w.key.environment,
        model: w.key.model.clone(),
        version: w.key.version,
        model_sha256: w.model_sha256,
        reasons,
        drifted_columns: drifted_columns.clone(),
        report_sha256,
        policy_digest: policy_digest.clone(),
    });
    Ok(Evaluated {
        event: MonitorWindowClosed {
            window_id: w.id,
            environment: w.key.environment,
            model: w.key.model,
            version: w.key.version,
            model_sha256: w.model_sha256,
            opened: w.opened,
            closed,
            closed_by: closed_by.to_string(),
            rows: w.rows,
            dropped: w.dropped,
            drift_share: report.share,
            dataset_drift: report.drifted,
            drifted_columns,
            scores,
            report_sha256,
            html_sha256: Sha256Digest::of(&html),
            decisions,
            policy_digest,
            estimated: Some(estimated),
            index_sha256: (!index.is_empty()).then(|| Sha256Digest::of(&index)),
            records_sha256: (!w.records.is_empty()).then(|| Sha256Digest::of(&w.records)),
        },
        drift,
        report: json,
        html,
        index,
        records: w.records,
        degraded,
    })
}

/// The window's figures as Prometheus gauges (per environment, model, column).
fn record_metrics(key: &Key, report: &DatasetDrift) {
    let env = key.environment.as_str();
    let model = key.model.as_str().to_string();
    metrics::gauge!("modelbus_monitor_drift_share", "environment" => env, "model" => model.clone())
        .set(report.share);
    metrics::gauge!("modelbus_monitor_window_rows", "environment" => env, "model" => model.clone())
        .set(report.current_rows as f64);
    metrics::gauge!("modelbus_monitor_model_version", "environment" => env, "model" => model.clone())
        .set(f64::from(key.version));
    for c in &report.columns {
        metrics::gauge!("modelbus_monitor_drift_score", "environment" => env, "model" => model.clone(), "column" => c.column.clone())
            .set(c.score);
        metrics::gauge!("modelbus_monitor_column_drifted", "environment" => env, "model" => model.clone(), "column" => c.column.clone())
            .set(if c.drifted { 1.0 } else { 0.0 });
    }
}

/// Stores the report and its page, then publishes the window and, if any,
/// the drift decision (ids derive from the window: a retry stores one copy).
pub(crate) async fn publish(ctx: &Context, e: &Evaluated) -> Result<(), String> {
    ctx.store
        .put(e.report.clone().into())
        .await
        .map_err(|err| err.to_string())?;
    ctx.store
        .put(e.html.clone().into())
        .await
        .map_err(|err| err.to_string())?;
    for bytes in [&e.index, &e.records] {
        if !bytes.is_empty() {
            ctx.store
                .put(bytes.clone().into())
                .await
                .map_err(|err| err.to_string())?;
        }
    }
    let key = format!("window/{}", e.event.window_id);
    let closed = Envelope::new(SOURCE, &key, e.event.clone()).with_subject(e.event.model.as_str());
    ctx.bus
        .publish(&closed)
        .await
        .map_err(|err| err.to_string())?;
    if let Some(d) = &e.drift {
        let env = Envelope::new(SOURCE, &format!("drift/{}", d.window_id), d.clone())
            .with_subject(d.model.as_str());
        ctx.bus.publish(&env).await.map_err(|err| err.to_string())?;
        metrics::counter!("modelbus_monitor_drift_detected_total", "environment" => d.environment.as_str(), "model" => d.model.as_str().to_string())
            .increment(1);
    }
    if !e.degraded.is_empty() {
        crate::performance::publish_degraded(
            ctx,
            &format!("degraded/{}", e.event.window_id),
            &e.event.window_id,
            e.event.environment,
            &e.event.model,
            e.event.version,
            "estimated",
            e.degraded.clone(),
            e.event.policy_digest.clone(),
        )
        .await?;
    }
    Ok(())
}
