//! The monitor: reads the prediction log (`inference.logged` on the
//! `MODELBUS_INFERENCE` stream), keeps one window per environment, model and
//! version, and closes it after `monitor.window_rows` predictions or
//! `monitor.window_duration` after its first one, whichever comes first.
//!
//! A closed window's features and predicted probabilities are compared with
//! the served version's training reference (the `monitoring_reference`
//! artifact of its training run; no training rows are read), column by column
//! with Evidently's methods ([`modelbus_featurize::drift`]). The report is
//! stored as JSON and as a self-contained HTML page; the monitoring policy
//! (`policies/monitoring.rego`) decides what it means; the window is
//! published as `monitor.window.closed` (the registry keeps and audits it) and,
//! when the policy says so, `drift.detected`.
//!
//! Records are added to their window only once every reference the batch needs
//! is loaded, so a batch is either counted whole or retried whole. A window
//! still open when the process stops is closed with what it has
//! (`closed_by = "shutdown"`).
#![forbid(unsafe_code)]

mod performance;
mod retrain;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelbus_core::Context;
use modelbus_core::bus::{Delivery, HandlerError, INFERENCE_STREAM};
use modelbus_core::events::{InferenceLogged, PredictionRecord};
use modelbus_core::ids::Environment;
use modelbus_featurize::features::FittedFeatures;
use modelbus_models::monitoring::MonitoringReference;
use modelbus_proto::registry::v1 as pb;
use tokio::net::TcpListener;

pub use window::{Key, Window};

/// Source attribute of the monitor's events.
pub const SOURCE: &str = "/modelbus/monitor";
/// Durable consumer name on the inference stream.
pub const CONSUMER: &str = "monitor";

/// Errors that stop the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Start-up or the consumer failed.
    #[error("{0}")]
    Fatal(String),
    /// The configuration (a policy directory) cannot be used.
    #[error("configuration: {0}")]
    Config(String),
}

/// What the monitor needs of one served version.
#[derive(Debug)]
pub struct Loaded {
    /// The training reference, features and prediction.
    pub reference: MonitoringReference,
    /// The same as one drift reference (features then `@probability`).
    pub drift: modelbus_featurize::drift::DriftReference,
    /// The fitted transform (derived features are computed from inputs).
    pub transform: modelbus_featurize::features::FeatureTransform,
}

/// A version's reference, or why it has none (cached either way).
type Cached = Result<Arc<Loaded>, String>;

/// The monitor's shared state.
#[derive(Clone)]
pub struct Monitor {
    ctx: Context,
    registry: modelbus_proto::Client,
    policies: Arc<modelbus_policy::PolicySet>,
    references: Arc<Mutex<HashMap<(String, u32), Cached>>>,
    windows: Arc<Mutex<HashMap<Key, Window>>>,
    /// Retrain requests waiting for labels, per model.
    retrains: Arc<Mutex<HashMap<String, retrain::Request>>>,
    /// One retrain attempt at a time (two would both see none running).
    retrain_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Monitor {
    /// The reference of `model` version `version`, loaded once.
    async fn reference(&self, model: &str, version: u32) -> Result<Cached, HandlerError> {
        let key = (model.to_string(), version);
        if let Some(c) = self
            .references
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(c);
        }
        let loaded = self.load(model, version).await?;
        if let Err(why) = &loaded {
            tracing::warn!(model, version, reason = %why, "no monitoring reference: its predictions are counted, not compared");
        }
        if let Ok(mut m) = self.references.lock() {
            // Bounded: one entry per served version; old ones are rarely many,
            // but the map is cleared rather than grown without end.
            if m.len() >= 4_096 {
                m.clear();
            }
            m.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    async fn load(&self, model: &str, version: u32) -> Result<Cached, HandlerError> {
        let mut registry = self.registry.clone();
        let v = match registry
            .get_model_version(pb::GetModelVersionRequest {
                model: model.to_string(),
                version,
            })
            .await
        {
            Ok(v) => v.into_inner(),
            Err(st) if st.code() == tonic::Code::NotFound => {
                return Ok(Err(format!("{model} v{version} is not registered")));
            }
            Err(st) => return Err(modelbus_stage::registry_error(st)),
        };
        let run = registry
            .get_run(pb::GetRunRequest { id: v.run_id })
            .await
            .map_err(modelbus_stage::registry_error)?
            .into_inner();
        let artifact = |name: &str| {
            run.artifacts
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| modelbus_core::ids::Sha256Digest::parse(&a.sha256).ok())
        };
        let (Some(reference), Some(transform)) =
            (artifact("monitoring_reference"), artifact("transform"))
        else {
            return Ok(Err(format!(
                "the training run of {model} v{version} stored no monitoring reference (trained before monitoring existed)"
            )));
        };
        let get = |d| {
            let store = self.ctx.store.clone();
            async move {
                store
                    .get(&d)
                    .await
                    .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))
            }
        };
        let reference = match MonitoringReference::from_slice(&get(reference).await?) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("monitoring reference {reference}: {e}"))),
        };
        let fitted: FittedFeatures = match serde_json::from_slice(&get(transform).await?) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("transform {transform}: {e}"))),
        };
        Ok(Ok(Arc::new(Loaded {
            drift: reference.drift_reference(),
            reference,
            transform: fitted.transform,
        })))
    }

    /// Handles one batch of logged predictions.
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<InferenceLogged>()?;
        let batch = e.data;
        metrics::counter!("modelbus_monitor_records_total", "environment" => batch.environment.as_str())
            .increment(batch.records.len() as u64);
        // Load every reference first: a failure retries the whole batch
        // before any of its records was counted.
        let mut refs: HashMap<(String, u32), Cached> = HashMap::new();
        for r in &batch.records {
            let k = (r.model.as_str().to_string(), r.version);
            if let std::collections::hash_map::Entry::Vacant(slot) = refs.entry(k) {
                let (model, version) = slot.key().clone();
                slot.insert(self.reference(&model, version).await?);
            }
        }
        let to_close = self.add(
            batch.environment,
            batch.dropped_before,
            &batch.records,
            &refs,
        );
        for (w, by) in to_close {
            self.spawn_close(w, by);
        }
        Ok(())
    }

    /// Adds records to their windows; returns the windows that filled up.
    fn add(
        &self,
        environment: Environment,
        dropped: u64,
        records: &[PredictionRecord],
        refs: &HashMap<(String, u32), Cached>,
    ) -> Vec<(Window, &'static str)> {
        let c = &self.ctx.config.monitor;
        let mut full = Vec::new();
        let Ok(mut windows) = self.windows.lock() else {
            return full;
        };
        let mut touched: Vec<Key> = Vec::new();
        for r in records {
            let Some(Ok(loaded)) = refs.get(&(r.model.as_str().to_string(), r.version)) else {
                metrics::counter!("modelbus_monitor_records_skipped_total", "reason" => "no_reference")
                    .increment(1);
                continue;
            };
            let key = Key {
                environment,
                model: r.model.clone(),
                version: r.version,
            };
            if !windows.contains_key(&key) {
                if windows.len() >= c.max_open_windows {
                    metrics::counter!("modelbus_monitor_records_skipped_total", "reason" => "too_many_windows")
                        .increment(1);
                    continue;
                }
                windows.insert(
                    key.clone(),
                    Window::open(key.clone(), r, loaded.clone(), c.max_record_bytes),
                );
            }
            if let Some(w) = windows.get_mut(&key) {
                w.add(r);
                if !touched.contains(&key) {
                    touched.push(key.clone());
                }
                if w.rows >= c.window_rows
                    && let Some(w) = windows.remove(&key)
                {
                    full.push((w, "rows"));
                }
            }
        }
        if dropped > 0 {
            for k in &touched {
                if let Some(w) = windows.get_mut(k) {
                    w.dropped += dropped;
                }
            }
        }
        full
    }

    /// Closes a window in its own task: its statistics are computed off the
    /// consumer, and a failure to store or publish is retried there, never by
    /// redelivering records already counted.
    fn spawn_close(&self, w: Window, closed_by: &'static str) {
        let m = self.clone();
        tokio::spawn(async move { m.close(w, closed_by).await });
    }

    async fn close(&self, w: Window, closed_by: &'static str) {
        let closing = std::time::Instant::now();
        let c = self.ctx.config.monitor.clone();
        let policies = self.policies.clone();
        let evaluated =
            tokio::task::spawn_blocking(move || window::evaluate(w, closed_by, &c, &policies))
                .await;
        let evaluated = match evaluated {
            Ok(Ok(e)) => e,
            Ok(Err(err)) => {
                metrics::counter!("modelbus_monitor_windows_total", "outcome" => "failed")
                    .increment(1);
                tracing::error!(error = %err, "cannot evaluate a window");
                return;
            }
            Err(err) => {
                tracing::error!(error = %err, "window evaluation task failed");
                return;
            }
        };
        for attempt in 0..5u32 {
            match window::publish(&self.ctx, &evaluated).await {
                Ok(()) => {
                    metrics::counter!("modelbus_monitor_windows_total", "outcome" => "closed")
                        .increment(1);
                    // Window closed → its result stored and published.
                    metrics::histogram!("modelbus_monitor_window_publish_seconds")
                        .record(closing.elapsed().as_secs_f64());
                    let e = &evaluated.event;
                    for (asked, kind) in [
                        (evaluated.drift.is_some(), "drift.detected"),
                        (!evaluated.degraded.is_empty(), "performance.degraded"),
                    ] {
                        if asked {
                            self.request_retrain(
                                e.model.as_str(),
                                retrain::Request {
                                    kind: kind.into(),
                                    window_id: e.window_id.clone(),
                                    version: e.version,
                                },
                            );
                        }
                    }
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "cannot store or publish a window; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
        metrics::counter!("modelbus_monitor_windows_total", "outcome" => "failed").increment(1);
        tracing::error!(window = %evaluated.event.window_id, "gave up publishing a window");
    }

    /// Closes every window open for `monitor.window_duration` or longer.
    fn close_due(&self) {
        let limit = self.ctx.config.monitor.window_duration;
        let due: Vec<Window> = match self.windows.lock() {
            Ok(mut w) => {
                let keys: Vec<Key> = w
                    .iter()
                    .filter(|(_, w)| w.started.elapsed() >= limit)
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.into_iter().filter_map(|k| w.remove(&k)).collect()
            }
            Err(_) => Vec::new(),
        };
        for w in due {
            self.spawn_close(w, "time");
        }
    }
}

/// Runs the monitor until `ctx.shutdown`.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), MonitorError> {
    let registry =
        modelbus_stage::registry_client(&ctx, modelbus_core::auth::ServiceIdentity::Monitor)
            .map_err(|e| MonitorError::Fatal(e.to_string()))?;
    let policies = match &ctx.config.registry.policies_dir {
        Some(dir) => modelbus_policy::PolicySet::load_dir(dir)
            .map_err(|e| MonitorError::Config(e.to_string()))?,
        None => modelbus_policy::PolicySet::default_set(),
    };
    let s = &ctx.config.serving;
    ctx.bus
        .ensure_inference_stream(s.log_max_age, s.log_max_bytes)
        .await
        .map_err(|e| MonitorError::Fatal(e.to_string()))?;
    let monitor = Monitor {
        ctx: ctx.clone(),
        registry,
        policies: Arc::new(policies),
        references: Arc::new(Mutex::new(HashMap::new())),
        windows: Arc::new(Mutex::new(HashMap::new())),
        retrains: Arc::new(Mutex::new(HashMap::new())),
        retrain_lock: Arc::new(tokio::sync::Mutex::new(())),
    };
    let ticker = {
        let m = monitor.clone();
        let every = (ctx.config.monitor.window_duration / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let stop = ctx.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => m.close_due(),
                }
            }
        })
    };
    // Labels joined by the registry: realised performance, on the events
    // stream (its own consumer, so a slow recomputation never holds up the
    // prediction log).
    let labels = {
        let m = monitor.clone();
        let ctx2 = ctx.clone();
        ctx.readiness.register("monitor-labels");
        tokio::spawn(async move {
            let subject = <modelbus_core::events::LabelsJoined as modelbus_core::events::EventPayload>::subject();
            let readiness = ctx2.readiness.clone();
            let result = ctx2
                .bus
                .consume(
                    CONSUMER,
                    &[subject.as_str()],
                    ctx2.shutdown.clone(),
                    move || readiness.set("monitor-labels", true),
                    move |d| {
                        let m = m.clone();
                        async move { m.handle_labels(&d).await }
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the monitor's labels consumer stopped");
            }
        })
    };
    // Notifications (`crates/notify`): their own consumer `notifier` and one
    // worker per receiver, so a receiver that is down or slow never holds up
    // monitoring. Nothing runs without `[[notifications.receivers]]`.
    let notifier = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            if let Err(e) = modelbus_notify::run(ctx).await {
                tracing::error!(error = %e, "the notifier stopped; notifications are not delivered");
            }
        }
    });
    let subject = <InferenceLogged as modelbus_core::events::EventPayload>::subject();
    let m = monitor.clone();
    let result = modelbus_core::ops::run_stream_consumer_service(
        &ctx,
        ops,
        None,
        CONSUMER,
        INFERENCE_STREAM,
        &[subject.as_str()],
        move |d| {
            let m = m.clone();
            async move { m.handle(&d).await }
        },
    )
    .await
    .map_err(|e| MonitorError::Fatal(e.to_string()));
    ticker.abort();
    labels.abort();
    notifier.abort();
    // Close what is open with what it has, while the bus may still take it.
    let open: Vec<Window> = match monitor.windows.lock() {
        Ok(mut w) => w.drain().map(|(_, w)| w).collect(),
        Err(_) => Vec::new(),
    };
    // All at once, and for at most a few seconds: stopping must stay quick.
    let closing: Vec<_> = open
        .into_iter()
        .map(|w| {
            let m = monitor.clone();
            tokio::spawn(async move { m.close(w, "shutdown").await })
        })
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        for c in closing {
            let _ = c.await;
        }
    })
    .await;
    result
}

/// The monitor's own work on the prediction log, without the bus or the
/// registry: decoded batches into one window at a time, each closed window
/// evaluated (drift, multivariate drift, estimated performance, the policy)
/// as the service does. For `modelbus bench monitor-stream`.
pub struct Offline {
    loaded: Arc<Loaded>,
    config: modelbus_core::config::MonitorConfig,
    policies: modelbus_policy::PolicySet,
    window: Option<Window>,
    /// Windows closed so far.
    pub windows: u64,
    /// Decisions the policy took on them.
    pub decisions: u64,
}

impl Offline {
    /// A monitor of one version with this reference and transform.
    pub fn new(
        reference: MonitoringReference,
        transform: modelbus_featurize::features::FeatureTransform,
        config: modelbus_core::config::MonitorConfig,
        policies: modelbus_policy::PolicySet,
    ) -> Self {
        Self {
            loaded: Arc::new(Loaded {
                drift: reference.drift_reference(),
                reference,
                transform,
            }),
            config,
            policies,
            window: None,
            windows: 0,
            decisions: 0,
        }
    }

    /// Adds a batch, closing and evaluating every window it fills.
    pub fn feed(&mut self, batch: &InferenceLogged) -> Result<(), String> {
        for r in &batch.records {
            let key = Key {
                environment: batch.environment,
                model: r.model.clone(),
                version: r.version,
            };
            let w = self.window.get_or_insert_with(|| {
                Window::open(key, r, self.loaded.clone(), self.config.max_record_bytes)
            });
            w.add(r);
            if w.rows >= self.config.window_rows
                && let Some(full) = self.window.take()
            {
                let e = window::evaluate(full, "rows", &self.config, &self.policies)?;
                self.windows += 1;
                self.decisions += e.event.decisions.len() as u64;
            }
        }
        Ok(())
    }
}
