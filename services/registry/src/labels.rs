//! Ground truth joined to logged predictions.
//!
//! The registry keeps the prediction index (every prediction of a closed
//! window, from the monitor's index artifact) and the labels, because joining
//! them is a query and "first label wins" is a primary key: two registry
//! replicas, or a redelivered event, cannot label one prediction twice.
//!
//! A label names its prediction by id, or by entity (the entity's latest
//! prediction at or before the label's time). A prediction older than
//! `monitor.label_window` before the label is not labelled (counted
//! `outside_window`). A label whose prediction is not indexed yet (its window
//! is still open) is kept pending and joined when that window closes, or
//! dropped once older than the label window. Each join is audited under the
//! dataset and announced as `labels.joined` (through the outbox), listing the
//! windows whose realised performance the monitor must recompute.

use modelbus_core::bus::HandlerError;
use modelbus_core::events::{
    Envelope, LabelsJoined, LabelsObserved, MonitorWindowClosed, WindowPerformance,
};
use modelbus_dataset::labels::from_json_lines;

use crate::pipeline::SOURCE;
use crate::store::{IndexedPrediction, JoinCounts, Joined, OutboxEvent};
use crate::{Registry, RegistryError};

/// Most labels one submission may carry (ingest's ceiling).
const MAX_LABELS: usize = 10_000_000;
/// Most predictions one window's index may list (monitor.window_rows' ceiling).
const MAX_INDEX: usize = 1_000_000;
/// Most windows one `labels.joined` lists.
const MAX_WINDOWS: usize = 10_000;
/// Pending labels re-tried when a window of their dataset is indexed.
const PENDING_BATCH: u32 = 100_000;

fn retry(e: RegistryError) -> HandlerError {
    HandlerError::Retry(e.to_string())
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

impl Registry {
    fn label_window_ms(&self) -> i64 {
        let w = self
            .runtime
            .as_ref()
            .map(|r| r.config.monitor.label_window)
            .unwrap_or_else(|| modelbus_core::config::MonitorConfig::default().label_window);
        i64::try_from(w.as_millis()).unwrap_or(i64::MAX)
    }

    /// Joins a submission of labels (idempotent: a redelivery finds it done).
    pub(crate) async fn on_labels_observed(
        &self,
        e: &Envelope<LabelsObserved>,
    ) -> Result<(), HandlerError> {
        let l = &e.data;
        if uuid::Uuid::parse_str(&l.labels_id).is_err() {
            return Err(HandlerError::Reject(format!(
                "labels.observed: labels_id {:?} is not a UUID",
                l.labels_id.chars().take(64).collect::<String>()
            )));
        }
        if self
            .store
            .label_batch_exists(&l.labels_id)
            .await
            .map_err(retry)?
        {
            return Ok(());
        }
        let bytes = self
            .artifacts
            .get(&l.labels_sha256)
            .await
            .map_err(|err| match err {
                modelbus_core::artifact::ArtifactError::NotFound(_) => HandlerError::Reject(
                    format!("labels.observed: labels {} are not stored", l.labels_sha256),
                ),
                other => HandlerError::Retry(other.to_string()),
            })?;
        let labels = from_json_lines(&bytes, MAX_LABELS).map_err(|why| {
            HandlerError::Reject(format!(
                "labels.observed: labels {}: {why}",
                l.labels_sha256
            ))
        })?;
        if labels.len() as u64 != l.rows {
            return Err(HandlerError::Reject(format!(
                "labels.observed: the event says {} labels, the file has {}",
                l.rows,
                labels.len()
            )));
        }
        let window_ms = self.label_window_ms();
        let dataset = l.dataset.as_str();
        let mut tx = self.store.begin_write().await.map_err(retry)?;
        let mut counts = JoinCounts::default();
        for label in &labels {
            let (joined, window) = tx
                .join_label(&l.labels_id, dataset, label, window_ms, true)
                .await
                .map_err(retry)?;
            count(&mut counts, joined, window);
        }
        if !tx
            .record_label_batch(
                &l.labels_id,
                dataset,
                &l.labels_sha256.to_hex(),
                l.rows,
                &counts,
                &l.submitted_by,
            )
            .await
            .map_err(retry)?
        {
            return Ok(()); // another replica joined it meanwhile; this rolls back
        }
        self.announce(&mut tx, &l.labels_id, dataset, l.rows, &counts)
            .await?;
        tx.commit().await.map_err(retry)?;
        self.outbox.notify();
        record_metrics(&counts);
        Ok(())
    }

    /// Audits a join and puts its `labels.joined` in the outbox.
    async fn announce(
        &self,
        tx: &mut crate::store::WriteTx,
        labels_id: &str,
        dataset: &str,
        rows: u64,
        c: &JoinCounts,
    ) -> Result<(), HandlerError> {
        tx.append_audit(
            crate::MONITOR_PRINCIPAL,
            "labels.joined",
            &format!("dataset/{dataset}"),
            &serde_json::json!({
                "labels_id": labels_id, "rows": rows, "joined": c.joined,
                "pending": c.pending, "outside_window": c.outside_window,
                "duplicate": c.duplicate, "windows": c.windows.len(),
            }),
            Some(&format!("labels.joined/{labels_id}")),
        )
        .await
        .map_err(retry)?;
        let event = Envelope::new(
            SOURCE,
            &format!("labels/{labels_id}"),
            LabelsJoined {
                labels_id: labels_id.to_string(),
                dataset: modelbus_core::ids::DatasetName::parse(dataset)
                    .map_err(HandlerError::reject)?,
                rows,
                joined: c.joined,
                pending: c.pending,
                outside_window: c.outside_window,
                duplicate: c.duplicate,
                windows: c.windows.iter().take(MAX_WINDOWS).cloned().collect(),
            },
        )
        .with_subject(dataset);
        tx.enqueue(&OutboxEvent::of(&event)).await.map_err(retry)?;
        Ok(())
    }

    /// Indexes a closed window's predictions, then joins the pending labels
    /// of its dataset that were waiting for them.
    pub(crate) async fn index_window(&self, w: &MonitorWindowClosed) -> Result<(), HandlerError> {
        let Some(index) = &w.index_sha256 else {
            return Ok(());
        };
        let Some(dataset) = self
            .store
            .model_dataset(w.model.as_str())
            .await
            .map_err(retry)?
        else {
            return Err(HandlerError::Reject(format!(
                "monitor.window.closed: model {} is not registered",
                w.model
            )));
        };
        let bytes = self.artifacts.get(index).await.map_err(|err| match err {
            modelbus_core::artifact::ArtifactError::NotFound(_) => HandlerError::Reject(format!(
                "monitor.window.closed: index {index} is not stored"
            )),
            other => HandlerError::Retry(other.to_string()),
        })?;
        let rows = parse_index(&bytes).map_err(|why| {
            HandlerError::Reject(format!("monitor.window.closed: index {index}: {why}"))
        })?;
        self.store
            .index_window(&w.window_id, &dataset, &rows)
            .await
            .map_err(retry)?;
        self.join_pending(&dataset, &w.window_id).await
    }

    /// Prunes the prediction index and joined labels older than
    /// `monitor.index_retention`, a bounded batch per closed window (ten
    /// times the default window: pruning outpaces what windows add).
    async fn prune_index(&self) -> Result<(), HandlerError> {
        const PRUNE_BATCH: i64 = 10_000;
        let retention = self
            .runtime
            .as_ref()
            .map(|r| r.config.monitor.index_retention)
            .unwrap_or_else(|| modelbus_core::config::MonitorConfig::default().index_retention);
        let before =
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let (predictions, labels) = self
            .store
            .prune_prediction_index(before, PRUNE_BATCH)
            .await
            .map_err(retry)?;
        for (table, n) in [("predictions", predictions), ("labels", labels)] {
            if n > 0 {
                metrics::counter!("modelbus_registry_index_pruned_total", "table" => table)
                    .increment(n);
            }
        }
        Ok(())
    }

    /// Re-tries a dataset's pending labels; what joins is announced under
    /// `pending/<window>` (idempotent for a redelivered window).
    async fn join_pending(&self, dataset: &str, window_id: &str) -> Result<(), HandlerError> {
        let window_ms = self.label_window_ms();
        let oldest = now_ms().saturating_sub(window_ms);
        let expired = self
            .store
            .expire_pending_labels(oldest)
            .await
            .map_err(retry)?;
        if expired > 0 {
            metrics::counter!("modelbus_registry_labels_total", "outcome" => "expired")
                .increment(expired);
        }
        self.prune_index().await?;
        let pending = self
            .store
            .pending_labels(dataset, oldest, PENDING_BATCH)
            .await
            .map_err(retry)?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin_write().await.map_err(retry)?;
        let mut counts = JoinCounts::default();
        for (labels_id, label) in &pending {
            let (joined, window) = tx
                .join_label(labels_id, dataset, label, window_ms, false)
                .await
                .map_err(retry)?;
            if joined != Joined::Unknown {
                tx.drop_pending_label(labels_id, label.row)
                    .await
                    .map_err(retry)?;
                count(&mut counts, joined, window);
            }
        }
        if counts.joined + counts.duplicate + counts.outside_window == 0 {
            return Ok(());
        }
        let id = format!("pending/{window_id}");
        self.announce(&mut tx, &id, dataset, counts.joined, &counts)
            .await?;
        tx.commit().await.map_err(retry)?;
        self.outbox.notify();
        record_metrics(&counts);
        Ok(())
    }

    /// Keeps a window's realised performance and audits what the policy
    /// decided on it.
    pub(crate) async fn on_window_performance(
        &self,
        e: &Envelope<WindowPerformance>,
    ) -> Result<(), HandlerError> {
        let p = &e.data;
        let bad = |why: String| HandlerError::Reject(format!("monitor.window.performance: {why}"));
        if !(0.0..=1.0).contains(&p.label_coverage) {
            return Err(bad(format!(
                "label_coverage {} is not in [0, 1]",
                p.label_coverage
            )));
        }
        if p.decisions.len() > 100 || p.decisions.iter().any(|d| d.reason.len() > 4096) {
            return Err(bad(
                "more than 100 decisions or a reason above 4096 bytes".into()
            ));
        }
        let Some(w) = self.store.window(&p.window_id).await.map_err(retry)? else {
            return Err(HandlerError::Retry(format!(
                "window {} is not recorded yet",
                p.window_id
            )));
        };
        if w.model != p.model || w.version != p.version || w.environment != p.environment {
            return Err(bad(format!(
                "window {} is {} v{} in {}, the event says {} v{} in {}",
                p.window_id, w.model, w.version, w.environment, p.model, p.version, p.environment
            )));
        }
        let json = serde_json::to_string(p).map_err(HandlerError::reject)?;
        self.store
            .record_window_performance(&p.window_id, &json)
            .await
            .map_err(retry)?;
        for dec in &p.decisions {
            self.store
                .append_audit(
                    crate::MONITOR_PRINCIPAL,
                    &format!("monitoring.{}", dec.kind.replace('.', "_")),
                    &format!("model/{}/v{}", p.model, p.version),
                    &serde_json::json!({
                        "window_id": p.window_id, "environment": p.environment,
                        "reason": dec.reason, "labelled": p.realised.rows,
                        "label_coverage": p.label_coverage, "policy_digest": p.policy_digest,
                    }),
                    Some(&format!("performance/{}/{}", e.id, dec.reason.len())),
                )
                .await
                .map_err(retry)?;
        }
        Ok(())
    }
}

fn count(c: &mut JoinCounts, joined: Joined, window: Option<String>) {
    match joined {
        Joined::Window => {
            c.joined += 1;
            if let Some(w) = window {
                c.windows.insert(w);
            }
        }
        Joined::Duplicate => c.duplicate += 1,
        Joined::OutsideWindow => c.outside_window += 1,
        Joined::Unknown => c.pending += 1,
    }
}

fn record_metrics(c: &JoinCounts) {
    for (outcome, n) in [
        ("joined", c.joined),
        ("pending", c.pending),
        ("outside_window", c.outside_window),
        ("duplicate", c.duplicate),
    ] {
        if n > 0 {
            metrics::counter!("modelbus_registry_labels_total", "outcome" => outcome).increment(n);
        }
    }
}

/// Reads a window's index (JSON lines of [`IndexedPrediction`]).
fn parse_index(bytes: &[u8]) -> Result<Vec<IndexedPrediction>, String> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() >= MAX_INDEX {
            return Err(format!("more than {MAX_INDEX} predictions"));
        }
        let p: IndexedPrediction =
            serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if p.id.is_empty() || p.id.len() > 64 || !p.p.is_finite() {
            return Err(format!("line {}: not a prediction", i + 1));
        }
        if p.entity.as_ref().is_some_and(|e| e.len() > 256) {
            return Err(format!("line {}: entity above 256 bytes", i + 1));
        }
        out.push(p);
    }
    Ok(out)
}
