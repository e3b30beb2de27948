//! Following the `deployments` KV bucket: loading the artifact a desired
//! state names (digest-checked), swapping it in, reporting it loaded; and
//! opening the online feature store.

use std::sync::Arc;

use futures::StreamExt;
use modelbus_core::Context;
use modelbus_core::deploy::{DEPLOYMENTS_BUCKET, DesiredState};
use modelbus_core::events::{Envelope, ServingModelLoaded};
use modelbus_models::model::{ModelArtifact, Predictor};
use tracing::Instrument;

use crate::*;

/// Loads the artifact a desired state names, checking its digest.
pub(crate) async fn load(ctx: &Context, desired: &DesiredState) -> Result<Served, String> {
    let bytes = ctx
        .store
        .get(&desired.model_sha256)
        .await
        .map_err(|e| format!("model artifact: {e}"))?;
    let predictor = tokio::task::spawn_blocking(move || {
        ModelArtifact::from_bytes(&bytes)
            .and_then(Predictor::new)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    if predictor.artifact().model_name != desired.model.as_str() {
        return Err(format!(
            "artifact is model {:?}, desired state names {:?}",
            predictor.artifact().model_name,
            desired.model
        ));
    }
    Ok(Served {
        model: desired.model.to_string(),
        version: desired.version,
        model_sha256: desired.model_sha256.to_hex(),
        loaded_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        predictor,
    })
}

/// The loaded model for `desired`: the one already served when it is the same
/// version and artifact, else freshly loaded.
pub(crate) async fn loaded(
    ctx: &Context,
    existing: Option<&Slot>,
    desired: &DesiredState,
) -> Result<Arc<Served>, String> {
    let hex = desired.model_sha256.to_hex();
    let reuse = existing.and_then(|slot| {
        std::iter::once(&slot.current)
            .chain(slot.stable.iter())
            .find(|s| s.model_sha256 == hex && s.version == desired.version)
            .cloned()
    });
    match reuse {
        Some(s) => Ok(s),
        None => load(ctx, desired).await.map(Arc::new),
    }
}

/// Loads (unless already served) and announces the model a desired state
/// names, with the previous version beside it during a canary.
pub(crate) async fn apply_desired(
    ctx: &Context,
    env: &EnvState,
    desired: &DesiredState,
    key: &str,
    revision: u64,
    replica: &str,
) {
    let existing = env.slot(desired.model.as_str());
    let slot = async {
        let current = loaded(ctx, existing.as_deref(), desired).await?;
        let stable = match &desired.previous {
            Some(prev) if desired.is_split() => Some(
                loaded(ctx, existing.as_deref(), prev)
                    .await
                    .map_err(|e| format!("previous version v{}: {e}", prev.version))?,
            ),
            _ => None,
        };
        Ok::<_, String>(Slot {
            current,
            stable,
            traffic_percent: desired.traffic_percent.min(100),
        })
    }
    .await;
    match slot {
        Ok(slot) => {
            let changed = existing.as_ref().is_none_or(|e| {
                !Arc::ptr_eq(&e.current, &slot.current)
                    || e.traffic_percent != slot.traffic_percent
                    || e.is_split() != slot.is_split()
            });
            if changed {
                tracing::info!(env = %env.environment, model = %desired.model, version = desired.version,
                    traffic_percent = slot.traffic_percent, split = slot.is_split(), "model swapped in");
            }
            env.install(slot);
        }
        Err(e) => {
            metrics::counter!("modelbus_serving_load_failures_total", "environment" => env.environment.as_str()).increment(1);
            tracing::error!(env = %env.environment, model = %desired.model, error = %e, "cannot load model; keeping the current one");
            return;
        }
    }
    let loaded = Envelope::new(
        SOURCE,
        // One report per desired-state write: a rewrite of the same version (a new
        // run landing on it) is reported again.
        &format!("{key}/{revision}/{replica}"),
        ServingModelLoaded {
            environment: env.environment,
            model: desired.model.clone(),
            version: desired.version,
            model_sha256: desired.model_sha256,
            replica: replica.to_string(),
            revision,
            traffic_percent: if desired.is_split() {
                desired.traffic_percent
            } else {
                100
            },
        },
    )
    .with_subject(desired.model.as_str())
    .with_pipeline_run(desired.pipelinerun.clone());
    if let Err(e) = ctx.bus.publish(&loaded).await {
        tracing::warn!(error = %e, "cannot report the loaded model");
    }
}

/// Follows the desired state of one environment until shutdown.
pub(crate) async fn watch(
    ctx: Context,
    env: Arc<EnvState>,
    replica: String,
    component: String,
) -> Result<(), ServingError> {
    // The deployer creates the bucket (with NATS permissions, serving may not):
    // wait for it rather than fail when serving starts first.
    let Some(kv) = wait_for_bucket(
        &ctx,
        DEPLOYMENTS_BUCKET,
        64,
        std::time::Duration::from_secs(5),
        "deployments bucket not available yet",
    )
    .await
    else {
        return Ok(());
    };
    let prefix = format!("{}.", env.environment.as_str());
    let mut watcher = kv
        .watch_with_history(format!("{prefix}>"))
        .await
        .map_err(|e| ServingError::Fatal(format!("watch deployments: {e}")))?;
    let initial = match kv.keys().await {
        Ok(keys) => {
            keys.filter_map(|k| async move { k.ok() })
                .filter(|k| futures::future::ready(k.starts_with(&prefix)))
                .count()
                .await
        }
        Err(_) => 0,
    };
    let mut seen = 0usize;
    if initial == 0 {
        ctx.readiness.set(&component, true);
    }
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            n = watcher.next() => n,
        };
        let Some(entry) = next else {
            return Err(ServingError::Fatal("deployments watch ended".into()));
        };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "deployments watch error");
                continue;
            }
        };
        let name = entry
            .key
            .strip_prefix(&prefix)
            .unwrap_or(&entry.key)
            .to_string();
        match entry.operation {
            async_nats::jetstream::kv::Operation::Put => {
                match serde_json::from_slice::<DesiredState>(&entry.value) {
                    Ok(desired) if desired.environment == env.environment => {
                        let span = tracing::info_span!("swap_model", env = %env.environment, model = %desired.model, version = desired.version);
                        modelbus_core::telemetry::set_remote_parent(
                            &span,
                            desired.traceparent.as_deref(),
                        );
                        apply_desired(&ctx, &env, &desired, &entry.key, entry.revision, &replica)
                            .instrument(span)
                            .await;
                    }
                    Ok(_) => {
                        tracing::warn!(key = %entry.key, "desired state for another environment under this prefix; ignored")
                    }
                    Err(e) => {
                        tracing::error!(key = %entry.key, error = %e, "invalid desired state; ignored")
                    }
                }
            }
            async_nats::jetstream::kv::Operation::Delete
            | async_nats::jetstream::kv::Operation::Purge => {
                tracing::info!(env = %env.environment, model = %name, "model undeployed");
                env.remove(&name);
            }
        }
        seen += 1;
        if seen >= initial {
            ctx.readiness.set(&component, true);
        }
    }
}

/// Opens the online feature store, retrying until it exists: serving may start
/// before the features service has created it.
pub(crate) async fn open_online(ctx: Context, env: Arc<EnvState>) -> Result<(), ServingError> {
    if let Some(kv) = wait_for_bucket(
        &ctx,
        modelbus_core::online::ONLINE_BUCKET,
        1,
        std::time::Duration::from_secs(10),
        "online feature store not available yet: entity-only requests answer 503 until it is",
    )
    .await
    {
        env.set_online(kv);
    }
    Ok(())
}

/// Opens a KV bucket another service creates, retrying with backoff (up to
/// `max_delay` apart, each failure logged as `waiting`) until it exists; `None`
/// on shutdown.
pub(crate) async fn wait_for_bucket(
    ctx: &Context,
    bucket: &str,
    history: i64,
    max_delay: std::time::Duration,
    waiting: &str,
) -> Option<async_nats::jetstream::kv::Store> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match ctx.bus.kv(bucket, history).await {
            Ok(kv) => return Some(kv),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "{waiting}"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max_delay);
    }
}
