//! Retraining on labelled live traffic (`[monitor.retrain]` in a dataset's
//! spec).
//!
//! When the monitoring policy decides `drift.detected` or
//! `performance.degraded` for a model whose spec asks for it, the monitor
//! assembles a training batch from the logged records that have labels (the
//! windows' kept records joined with their labels, newest windows first),
//! optionally after the rows of the version's own training batch, stores it
//! and submits it as `data.batch.submitted`, exactly as a producer that puts
//! an object and publishes would. The batch then goes through validation,
//! gates and champion/challenger like any other, so it reaches staging by
//! itself at most; production still needs the usual signatures. The run's
//! `submitted_by` names the decision and the window that caused it.
//!
//! A request waits while there are fewer than `min_labels` labelled records
//! (it is retried after each join of labels), and is dropped when a retrain
//! of the dataset is already running, so one cause starts one run. Waiting
//! requests live in memory: a restart forgets them (the next decision asks
//! again).

use std::collections::HashMap;

use modelbus_core::events::{BatchSubmitted, Envelope};
use modelbus_core::ids::{DatasetName, Sha256Digest};
use modelbus_dataset::spec::DatasetSpec;
use modelbus_proto::registry::v1 as pb;
use serde_json::Value;

use crate::window::KeptRecord;
use crate::{Monitor, SOURCE};

/// Who a retraining batch is submitted by (the start of its run's `submitted_by`).
pub const SUBMITTER: &str = "modelbus-monitor";
/// Largest training batch read back to be included.
const MAX_TRAINING_BATCH: u64 = 256 * 1024 * 1024;
/// Labelled windows read at most.
const MAX_WINDOWS: u32 = 1_000;

/// A decision that asked for a retrain, not yet acted on.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) kind: String,
    pub(crate) window_id: String,
    pub(crate) version: u32,
}

/// What a retrain attempt did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The spec does not ask for it (or not for this decision).
    NotConfigured,
    /// A retrain of the dataset is running.
    AlreadyRunning,
    /// Too few labelled records yet.
    WaitingForLabels(u64),
    /// Submitted as this batch.
    Submitted(Sha256Digest),
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

impl Monitor {
    /// Records a decision that may ask for a retrain and tries it in the
    /// background (never on the consumer's path).
    pub(crate) fn request_retrain(&self, model: &str, request: Request) {
        if let Ok(mut m) = self.retrains.lock() {
            if m.len() >= 10_000 {
                return;
            }
            m.entry(model.to_string()).or_insert(request);
        }
        self.spawn_retrain(model);
    }

    /// Tries a waiting request of `model` again (labels joined).
    pub(crate) fn spawn_retrain(&self, model: &str) {
        let waiting = self
            .retrains
            .lock()
            .map(|m| m.contains_key(model))
            .unwrap_or(false);
        if !waiting {
            return;
        }
        let m = self.clone();
        let model = model.to_string();
        tokio::spawn(async move {
            let _serial = m.retrain_lock.lock().await;
            match m.retrain(&model).await {
                Ok(outcome) => {
                    let label = match &outcome {
                        Outcome::NotConfigured => "not_configured",
                        Outcome::AlreadyRunning => "already_running",
                        Outcome::WaitingForLabels(_) => "waiting_for_labels",
                        Outcome::Submitted(_) => "submitted",
                    };
                    metrics::counter!("modelbus_monitor_retrains_total", "outcome" => label)
                        .increment(1);
                    tracing::info!(model, ?outcome, "retrain request");
                    if !matches!(outcome, Outcome::WaitingForLabels(_))
                        && let Ok(mut w) = m.retrains.lock()
                    {
                        w.remove(&model);
                    }
                }
                Err(e) => {
                    metrics::counter!("modelbus_monitor_retrains_total", "outcome" => "failed")
                        .increment(1);
                    tracing::warn!(model, error = %e, "retrain attempt failed; it is retried after the next labels");
                }
            }
        });
    }

    async fn retrain(&self, model: &str) -> Result<Outcome, String> {
        let Some(req) = self
            .retrains
            .lock()
            .ok()
            .and_then(|m| m.get(model).cloned())
        else {
            return Ok(Outcome::NotConfigured);
        };
        let mut registry = self.registry.clone();
        let m = registry
            .get_model(pb::GetModelRequest {
                name: model.to_string(),
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let spec_record = registry
            .get_spec(pb::GetSpecRequest {
                dataset: m.dataset.clone(),
                digest: String::new(),
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let spec = DatasetSpec::parse(&spec_record.toml, "registered spec")
            .map_err(|e| e.to_string())?
            .spec;
        let Some(retrain) = spec.monitor.retrain.clone() else {
            return Ok(Outcome::NotConfigured);
        };
        if !retrain.on.contains(&req.kind) {
            return Ok(Outcome::NotConfigured);
        }
        let runs = registry
            .list_pipeline_runs(pb::ListPipelineRunsRequest {
                dataset: m.dataset.clone(),
                limit: 100,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner()
            .runs;
        if runs.iter().any(|r| {
            r.submitted_by.contains(SUBMITTER)
                && !matches!(r.state.as_str(), "deployed" | "rejected" | "failed")
        }) {
            return Ok(Outcome::AlreadyRunning);
        }
        let Ok(loaded) = self
            .reference(model, req.version)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "{model} v{} has no monitoring reference",
                req.version
            ));
        };
        // Labelled records, newest windows first.
        let windows = registry
            .list_labelled_windows(pb::ListLabelledWindowsRequest {
                model: model.to_string(),
                limit: MAX_WINDOWS,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner()
            .window_ids;
        let mut rows: Vec<(serde_json::Map<String, Value>, bool)> = Vec::new();
        for id in windows {
            if rows.len() as u64 >= retrain.max_records {
                break;
            }
            let w = registry
                .get_window_labels(pb::GetWindowLabelsRequest { window_id: id })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            let Ok(digest) = Sha256Digest::parse(&w.records_sha256) else {
                continue;
            };
            let bytes = self
                .ctx
                .store
                .get(&digest)
                .await
                .map_err(|e| e.to_string())?;
            let mut inputs: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(k) = serde_json::from_slice::<KeptRecord>(line) {
                    inputs.insert(k.id, k.input);
                }
            }
            for (pid, positive) in w.prediction_ids.iter().zip(&w.positive) {
                if let Some(input) = inputs.remove(pid) {
                    rows.push((input, *positive));
                }
            }
        }
        // One row per entity: the newest labelled record (windows come newest
        // first); it also replaces the entity's row in the training batch.
        let mut entities = std::collections::HashSet::new();
        rows.retain(|(input, _)| match input.get(&spec.entity_column) {
            Some(v) => entities.insert(text(Some(v))),
            None => true,
        });
        rows.truncate(usize::try_from(retrain.max_records).unwrap_or(usize::MAX));
        if (rows.len() as u64) < retrain.min_labels {
            return Ok(Outcome::WaitingForLabels(rows.len() as u64));
        }
        let columns: Vec<&str> = spec.columns.iter().map(|c| c.name.as_str()).collect();
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(&columns).map_err(|e| e.to_string())?;
        if retrain.include_training_batch {
            let entity = columns.iter().position(|c| *c == spec.entity_column);
            self.append_training_batch(
                &mut registry,
                (model, req.version),
                &columns,
                entity.map(|i| (i, &entities)),
                &mut out,
            )
            .await?;
        }
        let (positive, negative) = (
            loaded.reference.positive_label.as_str(),
            loaded.reference.negative_label.as_str(),
        );
        for (input, label) in &rows {
            let record: Vec<String> = columns
                .iter()
                .map(|c| {
                    if *c == spec.target.column {
                        (if *label { positive } else { negative }).to_string()
                    } else {
                        text(input.get(*c))
                    }
                })
                .collect();
            out.write_record(&record).map_err(|e| e.to_string())?;
        }
        let csv = out.into_inner().map_err(|e| e.to_string())?;
        let stored = self
            .ctx
            .store
            .put(csv.into())
            .await
            .map_err(|e| e.to_string())?;
        let dataset = DatasetName::parse(&m.dataset).map_err(|e| e.to_string())?;
        let spec_digest = Sha256Digest::parse(&spec_record.digest).map_err(|e| e.to_string())?;
        let event = Envelope::new(
            SOURCE,
            &format!("retrain/{}", req.window_id),
            BatchSubmitted {
                dataset: dataset.clone(),
                spec_digest,
                batch_sha256: stored.sha256,
                size_bytes: stored.size,
                // Short enough to be kept whole in the run (ingest keeps 128
                // bytes, after "unverified:" for events from the bus).
                submitted_by: format!(
                    "{SUBMITTER}: retrain on {}, window {}",
                    req.kind, req.window_id
                ),
            },
        )
        .with_subject(dataset.as_str());
        self.ctx
            .bus
            .publish(&event)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Submitted(stored.sha256))
    }

    /// Appends the rows of `model` v`version`'s training batch, in the spec's
    /// column order.
    /// Rows whose entity is in `skip` are left out (a newer labelled record
    /// replaces them).
    async fn append_training_batch(
        &self,
        registry: &mut modelbus_proto::Client,
        (model, version): (&str, u32),
        columns: &[&str],
        skip: Option<(usize, &std::collections::HashSet<String>)>,
        out: &mut csv::Writer<Vec<u8>>,
    ) -> Result<(), String> {
        let v = registry
            .get_model_version(pb::GetModelVersionRequest {
                model: model.to_string(),
                version,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let Some(batch) = v
            .lineage
            .as_ref()
            .and_then(|l| Sha256Digest::parse(&l.batch_sha256).ok())
        else {
            return Ok(());
        };
        let size = self
            .ctx
            .store
            .size(&batch)
            .await
            .map_err(|e| e.to_string())?;
        if size > MAX_TRAINING_BATCH {
            tracing::warn!(
                model,
                version,
                size,
                "training batch too large to include in a retrain"
            );
            return Ok(());
        }
        let bytes = self
            .ctx
            .store
            .get(&batch)
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = csv::Reader::from_reader(bytes.as_ref());
        let header = reader.headers().map_err(|e| e.to_string())?.clone();
        let positions: Vec<Option<usize>> = columns
            .iter()
            .map(|c| header.iter().position(|h| h == *c))
            .collect();
        for record in reader.records() {
            let record = record.map_err(|e| e.to_string())?;
            let row: Vec<&str> = positions
                .iter()
                .map(|p| p.and_then(|i| record.get(i)).unwrap_or(""))
                .collect();
            if let Some((i, entities)) = skip
                && entities.contains(row[i])
            {
                continue;
            }
            out.write_record(&row).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
