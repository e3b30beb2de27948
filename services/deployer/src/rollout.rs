//! Rollouts: after the deployer writes a new version with the one it replaces
//! kept as `previous`, it moves traffic through the configured canary steps
//! (or, for a direct rollout, keeps all of it on the new version), watches the
//! new version's error rate and p99 latency from `serving.stats` during each
//! step's bake time, and either finishes (drops `previous`) or returns to the
//! previous version and publishes `deployment.rolled_back`.
//!
//! Every write is a compare-and-set on the desired state's revision, made only
//! while the entry still names the rollout's artifact: an approval or a signed
//! rollback that lands meanwhile wins, and the rollout stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use modelbus_core::config::{RolloutPolicy, RolloutStrategy};
use modelbus_core::deploy::DesiredState;
use modelbus_core::events::{DeploymentRolledBack, DeploymentStarted, Envelope};
use modelbus_core::ids::{Environment, Sha256Digest};
use tokio_util::sync::CancellationToken;

use crate::{Deployer, SOURCE, now_rfc3339};

/// Rollouts in progress, by deployment key, each with the id of its task.
#[derive(Clone, Default)]
pub(crate) struct Running(Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>);

impl Running {
    /// Stops the rollout of `key`, if one runs.
    pub(crate) fn stop(&self, key: &str) {
        if let Ok(mut m) = self.0.lock()
            && let Some((_, token)) = m.remove(key)
        {
            token.cancel();
        }
    }

    /// Registers a new rollout of `key`, stopping the one it replaces.
    fn register(&self, key: &str, token: CancellationToken) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = self.0.lock()
            && let Some((_, old)) = m.insert(key.to_string(), (id, token))
        {
            old.cancel();
        }
        id
    }

    /// Forgets the rollout `id` of `key` once it ended.
    fn finished(&self, key: &str, id: u64) {
        if let Ok(mut m) = self.0.lock()
            && m.get(key).is_some_and(|(i, _)| *i == id)
        {
            m.remove(key);
        }
    }
}

/// The traffic steps of a policy: its canary steps, or all at once.
pub(crate) fn steps(policy: &RolloutPolicy) -> Vec<u8> {
    match policy.strategy {
        RolloutStrategy::Canary if !policy.steps.is_empty() => policy.steps.clone(),
        _ => vec![100],
    }
}

/// How often a step's statistics are checked: as often as serving reports
/// (a breach is acted on within about one statistics window), at most every second.
fn tick(policy: &RolloutPolicy, stats_interval: Duration) -> Duration {
    (policy.bake / 10)
        .min(stats_interval)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Fewest latencies a p99 verdict rests on: below 100, a 99th percentile is
/// just the slowest request.
pub(crate) const MIN_P99_SAMPLES: u64 = 100;

/// The objective breached by the windows that ended after `since`, if any:
/// the error rate first, then the worst p99; no verdict on fewer than
/// `min_requests` requests.
fn judge(
    windows: &[crate::StatsWindow],
    since: time::OffsetDateTime,
    policy: &RolloutPolicy,
    percent: u8,
) -> Option<String> {
    let t = crate::totals(windows.iter().filter(|w| w.end > since));
    let (requests, errors) = (t.requests, t.errors);
    if requests == 0 || requests < policy.min_requests {
        return None;
    }
    let rate = errors as f64 / requests as f64;
    if rate > policy.max_error_rate {
        return Some(format!(
            "error rate {rate:.4} ({errors} of {requests} requests) at {percent}% of traffic is above the objective {}",
            policy.max_error_rate
        ));
    }
    // Judged over every request of the step, once there are enough of them
    // for a 99th percentile to mean something.
    if let Some(p99) = t.pooled_p99(policy.min_requests.max(MIN_P99_SAMPLES))
        && p99 > policy.max_p99_ms
    {
        return Some(format!(
            "p99 latency {p99:.3} ms ({} requests pooled) at {percent}% of traffic is above the objective {} ms",
            t.latencies.total(),
            policy.max_p99_ms
        ));
    }
    None
}

/// What a compare-and-set on a rollout's desired state found.
enum Cas {
    /// Written at this revision.
    Written(u64, Box<DesiredState>),
    /// The entry no longer names this rollout: someone else decided.
    Superseded,
}

impl Deployer {
    /// Starts watching the rollout `state` (already written) from step `from`.
    pub(crate) fn start_rollout(&self, key: String, state: DesiredState, from: usize) {
        let token = self.ctx.shutdown.child_token();
        let id = self.rollouts.register(&key, token.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match me.run_rollout(&key, &state, from, &token).await {
                Ok(outcome) => {
                    tracing::info!(%key, version = state.version, outcome, seconds = started.elapsed().as_secs_f64(), "rollout ended")
                }
                Err(e) => {
                    tracing::error!(%key, version = state.version, error = %e, "rollout stopped; the desired state stays as it is until the deployer restarts")
                }
            }
            me.rollouts.finished(&key, id);
        });
    }

    /// Resumes the rollouts a previous deployer process left in progress: each
    /// restarts the bake of the step it was in (windows that ended before the
    /// restart are not judged against it).
    pub(crate) async fn resume_rollouts(&self) {
        use futures::StreamExt as _;
        let Ok(keys) = self.deployments.keys().await else {
            return;
        };
        let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
        for key in keys {
            let Some(state) = self.entry(&key).await.ok().flatten().map(|(_, s)| s) else {
                continue;
            };
            if !state.in_rollout() {
                continue;
            }
            let steps = steps(self.ctx.config.rollout.of(state.environment));
            let from = steps
                .iter()
                .position(|s| *s >= state.traffic_percent)
                .unwrap_or(steps.len() - 1);
            tracing::info!(%key, version = state.version, traffic_percent = state.traffic_percent, "resuming rollout");
            self.start_rollout(key, state, from);
        }
    }

    /// The desired state under `key` with its revision.
    pub(crate) async fn entry(&self, key: &str) -> Result<Option<(u64, DesiredState)>, String> {
        let Some(entry) = self
            .deployments
            .entry(key)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if !matches!(entry.operation, kv::Operation::Put) {
            return Ok(None);
        }
        let state = serde_json::from_slice(&entry.value)
            .map_err(|e| format!("desired state {key}: {e}"))?;
        Ok(Some((entry.revision, state)))
    }

    /// Changes the rollout of `digest` under `key` with `f`, unless another
    /// write replaced it. Transient failures are retried a few times.
    async fn cas(
        &self,
        key: &str,
        digest: &Sha256Digest,
        f: impl Fn(&mut DesiredState),
    ) -> Result<Cas, String> {
        let mut last = String::new();
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let (revision, mut state) = match self.entry(key).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(Cas::Superseded),
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if state.model_sha256 != *digest || !state.in_rollout() {
                return Ok(Cas::Superseded);
            }
            f(&mut state);
            state.updated_at = now_rfc3339();
            state.traceparent = modelbus_core::telemetry::current_traceparent();
            let bytes = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
            match self.deployments.update(key, bytes.into(), revision).await {
                Ok(rev) => return Ok(Cas::Written(rev, Box::new(state))),
                Err(e) if matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision) => {
                    // Someone wrote in between: look again.
                    last = e.to_string();
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("cannot write the desired state {key}: {last}"))
    }

    /// Runs the steps of a rollout from `from`; returns how it ended.
    async fn run_rollout(
        &self,
        key: &str,
        state: &DesiredState,
        from: usize,
        token: &CancellationToken,
    ) -> Result<&'static str, String> {
        let env = state.environment;
        let policy = self.ctx.config.rollout.of(env).clone();
        let steps = steps(&policy);
        let digest = state.model_sha256;
        for (i, &percent) in steps.iter().enumerate().skip(from) {
            if i > from {
                match self
                    .cas(key, &digest, |s| s.traffic_percent = percent)
                    .await?
                {
                    Cas::Superseded => return Ok("superseded"),
                    Cas::Written(revision, st) => {
                        tracing::info!(%key, version = st.version, percent, "canary step");
                        self.publish_started(key, &st, revision).await;
                    }
                }
            }
            let step_start = time::OffsetDateTime::now_utc();
            let deadline = Instant::now() + policy.bake;
            loop {
                if let Some(reason) = self.breach(env, &digest, step_start, &policy, percent) {
                    return self.roll_back_automatically(key, &digest, reason).await;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::select! {
                    _ = token.cancelled() => return Ok("stopped"),
                    _ = tokio::time::sleep(tick(&policy, self.ctx.config.serving.stats_interval).min(deadline - now)) => {}
                }
            }
        }
        match self
            .cas(key, &digest, |s| {
                s.previous = None;
                s.traffic_percent = 100;
            })
            .await?
        {
            Cas::Superseded => Ok("superseded"),
            Cas::Written(..) => {
                metrics::counter!("modelbus_deployer_rollouts_total", "environment" => env.as_str(), "outcome" => "completed").increment(1);
                Ok("completed")
            }
        }
    }

    /// The objective the new version breaches in this step, if any, from the
    /// statistics windows serving reported for it since the step began.
    fn breach(
        &self,
        env: Environment,
        digest: &Sha256Digest,
        since: time::OffsetDateTime,
        policy: &RolloutPolicy,
        percent: u8,
    ) -> Option<String> {
        let m = self.stats.lock().ok()?;
        judge(m.get(&(env, *digest))?, since, policy, percent)
    }

    /// Returns `key` to the version the rollout started from.
    async fn roll_back_automatically(
        &self,
        key: &str,
        digest: &Sha256Digest,
        reason: String,
    ) -> Result<&'static str, String> {
        let from = std::sync::Mutex::new(None);
        let cas = self
            .cas(key, digest, |s| {
                if let Some(prev) = s.previous.take() {
                    if let Ok(mut f) = from.lock() {
                        *f = Some(s.version);
                    }
                    *s = *prev;
                    s.previous = None;
                    s.traffic_percent = 100;
                }
            })
            .await?;
        let (revision, state) = match cas {
            Cas::Superseded => return Ok("superseded"),
            Cas::Written(rev, st) => (rev, st),
        };
        let from_version = from.lock().ok().and_then(|f| *f).unwrap_or(0);
        let env = state.environment;
        metrics::counter!("modelbus_deployer_rollbacks_total", "environment" => env.as_str(), "trigger" => "automatic").increment(1);
        metrics::counter!("modelbus_deployer_rollouts_total", "environment" => env.as_str(), "outcome" => "rolled_back").increment(1);
        tracing::warn!(%key, from_version, to_version = state.version, %reason, "automatic rollback");
        let event = Envelope::new(
            SOURCE,
            &format!("rolled_back/{key}/{revision}"),
            DeploymentRolledBack {
                environment: env,
                model: state.model.clone(),
                from_version,
                to_version: state.version,
                reason,
                automatic: true,
                operator: String::new(),
            },
        )
        .with_subject(state.model.as_str())
        .with_pipeline_run(state.pipelinerun.clone());
        if let Err(e) = self.ctx.bus.publish(&event).await {
            // The rollback is in force; only its announcement failed.
            tracing::error!(error = %e, "cannot publish deployment.rolled_back");
        }
        Ok("rolled_back")
    }

    /// Announces a desired-state write.
    pub(crate) async fn publish_started(&self, key: &str, st: &DesiredState, revision: u64) {
        let event = Envelope::new(
            SOURCE,
            &format!("{key}/{}/{}/{revision}", st.version, st.model_sha256),
            DeploymentStarted {
                environment: st.environment,
                model: st.model.clone(),
                version: st.version,
                model_sha256: st.model_sha256,
                revision,
                traffic_percent: if st.is_split() {
                    st.traffic_percent
                } else {
                    100
                },
            },
        )
        .with_subject(st.model.as_str())
        .with_pipeline_run(st.pipelinerun.clone());
        if let Err(e) = self.ctx.bus.publish(&event).await {
            tracing::warn!(error = %e, "cannot publish deployment.started");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatsWindow;

    /// A window whose every request took `p99_ms`.
    fn window(secs_ago: i64, requests: u64, errors: u64, p99_ms: f64) -> StatsWindow {
        let mut h = modelbus_core::latency::Histogram::default();
        for _ in 0..requests {
            h.record(p99_ms);
        }
        StatsWindow {
            replica: "r".into(),
            end: time::OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago),
            requests,
            errors,
            p99_ms,
            histogram: Some(h),
        }
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            max_error_rate: 0.05,
            max_p99_ms: 100.0,
            min_requests: 50,
            ..RolloutPolicy::default()
        }
    }

    #[test]
    fn judges_only_this_steps_windows_and_only_with_enough_requests() {
        let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
        // Errors before the step began do not count against it.
        let w = [window(60, 100, 100, 10.0), window(10, 100, 1, 20.0)];
        assert_eq!(judge(&w, since, &policy(), 10), None);
        // Too few requests for a verdict, however bad.
        let w = [window(10, 10, 10, 5000.0)];
        assert_eq!(judge(&w, since, &policy(), 10), None);
    }

    #[test]
    fn a_few_slow_requests_do_not_make_the_p99() {
        let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
        // Before: the worst window's own p99 (5 requests, 900 ms) was judged and
        // rolled the version back although 99.5 % of requests were fast.
        let w = [window(20, 995, 0, 5.0), window(5, 5, 0, 900.0)];
        assert_eq!(judge(&w, since, &policy(), 10), None);
        // Fewer than 100 latencies: no p99 verdict even above min_requests.
        let lenient = RolloutPolicy {
            min_requests: 10,
            ..policy()
        };
        let w = [window(5, 60, 0, 900.0)];
        assert_eq!(judge(&w, since, &lenient, 10), None);
        let w = [window(5, 100, 0, 900.0)];
        assert!(judge(&w, since, &lenient, 10).is_some());
    }

    #[test]
    fn names_the_breached_objective_with_its_figures() {
        let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
        let w = [window(20, 60, 2, 30.0), window(5, 40, 4, 40.0)];
        let why = judge(&w, since, &policy(), 10).unwrap();
        assert!(
            why.starts_with("error rate 0.0600 (6 of 100 requests) at 10%"),
            "{why}"
        );
        let w = [window(20, 60, 0, 30.0), window(5, 40, 0, 140.0)];
        let why = judge(&w, since, &policy(), 50).unwrap();
        assert!(
            why.starts_with("p99 latency 1") && why.contains("ms (100 requests pooled) at 50%"),
            "{why}"
        );
        let w = [window(20, 60, 3, 100.0)];
        assert_eq!(
            judge(&w, since, &policy(), 50),
            None,
            "at the objective is not above it"
        );
    }
}
