//! Deployer: the only writer of deployment state. It trusts nothing on the bus:
//! every approval envelope is verified against public keys from the deployer's own
//! configuration, its statement must name exactly the model, version, environment
//! and artifact digest of the event, must not be expired, and its nonce must not
//! have been used; the artifact must exist and hash to that digest. Only then is
//! the desired state written to the `deployments` KV bucket. Every refusal is
//! logged, counted (`modelbus_deployer_refusals_total`) and published as
//! `approval.refused`.
#![forbid(unsafe_code)]

mod rollback;
mod rollout;

use std::path::PathBuf;

use async_nats::jetstream::kv;
use modelbus_core::Context;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::config::Config;
use modelbus_core::deploy::{DEPLOYMENTS_BUCKET, DesiredState, NONCES_BUCKET, deployment_key};
use modelbus_core::events::{
    ApprovalGranted, ApprovalRefused, DeploymentCompleted, DeploymentStarted, Envelope,
    EventPayload, RollbackRequested, ServingModelLoaded, ServingStats,
};
use modelbus_core::ids::Environment;
use modelbus_core::ids::Sha256Digest;
use modelbus_core::signing::StatementKind;
use modelbus_core::signing::{PublicKey, Statement, verify_envelope};
use tokio::net::TcpListener;

/// Source attribute of the deployer's events.
pub const SOURCE: &str = "/modelbus/deployer";
/// Durable consumer name.
pub const CONSUMER: &str = "deployer";
/// Id of the registry's automation key.
pub const AUTOMATION: &str = "registry-automation";
/// Clock skew tolerated on `issued_at`.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Errors that stop the deployer.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The trusted keys cannot be loaded.
    #[error("deployer configuration: {0}")]
    Config(String),
    /// Start-up or serving failed.
    #[error("{0}")]
    Fatal(String),
}

/// A key the deployer trusts, with the environments it may approve.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Approver id from configuration.
    pub id: String,
    /// The key.
    pub key: PublicKey,
    /// Environments it may approve.
    pub environments: Vec<Environment>,
    /// What its signatures may do.
    pub role: modelbus_core::auth::Role,
}

/// Loads the trusted keys from configuration; with none configured, the registry's
/// automation public key from the state dir, for staging.
pub fn trusted_keys(config: &Config) -> Result<Vec<Trusted>, DeployerError> {
    let mut entries: Vec<(String, PathBuf, Vec<Environment>, modelbus_core::auth::Role)> = config
        .deployer
        .trusted_keys
        .iter()
        .map(|k| {
            (
                k.id.clone(),
                k.public_key_file.clone(),
                k.environments.clone(),
                k.role,
            )
        })
        .collect();
    if !entries.iter().any(|e| e.0 == AUTOMATION) {
        // The registry's automation key signs staging promotions unless the
        // configuration names it explicitly (with another path or scope).
        let path = modelbus_core::signing::public_key_path(&config.automation_key_path());
        entries.push((
            AUTOMATION.into(),
            path,
            vec![Environment::Staging],
            modelbus_core::auth::Role::Approver,
        ));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (id, path, environments, role))| {
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                DeployerError::Config(format!(
                    "deployer.trusted_keys[{i}] ({id}): cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let key = PublicKey::from_pem(
                &pem,
                &format!("deployer.trusted_keys[{i}] ({})", path.display()),
            )
            .map_err(|e| DeployerError::Config(e.to_string()))?;
            Ok(Trusted {
                id,
                key,
                environments,
                role,
            })
        })
        .collect()
}

#[derive(Clone)]
struct Deployer {
    ctx: Context,
    trusted: Vec<Trusted>,
    deployments: kv::Store,
    nonces: kv::Store,
    policies: std::sync::Arc<modelbus_policy::PolicySet>,
    stats: Stats,
    rollouts: rollout::Running,
}

/// Serving statistics windows the deployer has seen, per environment and
/// artifact: its own evidence for soak checks.
type Stats = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<(Environment, Sha256Digest), Vec<StatsWindow>>>,
>;

/// One statistics window.
#[derive(Debug, Clone)]
pub(crate) struct StatsWindow {
    replica: String,
    end: time::OffsetDateTime,
    requests: u64,
    errors: u64,
    p99_ms: f64,
    /// Latencies per bucket; `None` from a replica that sent none.
    histogram: Option<modelbus_core::latency::Histogram>,
}

/// Decodes a signed request; an undecodable one is counted as a `malformed`
/// refusal before the bus dead-letters it.
fn decode_counted<T: EventPayload>(d: &Delivery) -> Result<Envelope<T>, HandlerError> {
    d.decode::<T>().inspect_err(|err| {
        metrics::counter!("modelbus_deployer_refusals_total", "reason" => "malformed").increment(1);
        tracing::warn!(error = %err, event = T::NAME, "refused an undecodable event");
    })
}

/// Acknowledges a redelivered event whose state was written before: counted and
/// logged, never applied again (a newer state may have replaced it).
pub(crate) fn ignore_redelivery<T>(e: &Envelope<T>, why: &str) {
    metrics::counter!("modelbus_deployer_redeliveries_ignored_total").increment(1);
    tracing::info!(event = %e.id, event_type = %e.event_type, %why, "redelivered event ignored");
}

/// What some statistics windows add up to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    /// Requests that reached the model.
    pub(crate) requests: u64,
    /// Of which failed on the server's side.
    pub(crate) errors: u64,
    /// The worst window's own p99 (reported, not judged).
    pub(crate) worst_p99_ms: f64,
    /// Latencies of every window that sent a histogram, pooled.
    pub(crate) latencies: modelbus_core::latency::Histogram,
}

impl Totals {
    /// The p99 over every pooled request, once at least `min_samples` were
    /// measured: a few slow requests do not make a p99.
    pub(crate) fn pooled_p99(&self, min_samples: u64) -> Option<f64> {
        (self.latencies.total() >= min_samples.max(1))
            .then(|| self.latencies.quantile(0.99))
            .flatten()
    }
}

/// Adds up some statistics windows (saturating: the counts come from events).
fn totals<'a>(windows: impl Iterator<Item = &'a StatsWindow>) -> Totals {
    windows.fold(Totals::default(), |mut t, w| {
        t.requests = t.requests.saturating_add(w.requests);
        t.errors = t.errors.saturating_add(w.errors);
        t.worst_p99_ms = t.worst_p99_ms.max(w.p99_ms);
        if let Some(h) = &w.histogram {
            t.latencies.merge(h);
        }
        t
    })
}

/// The deployer's short-lived consumer that replays `serving.stats` at start.
pub const STATS_REPLAY: &str = "deployer-stats";

/// Windows kept per artifact.
const MAX_WINDOWS: usize = 10_000;

/// Artifacts whose statistics are kept (per environment).
const MAX_STATS_ARTIFACTS: usize = 1_000;

/// How long statistics windows are kept: longer than any soak or bake needs.
const STATS_RETENTION: time::Duration = time::Duration::days(2);

/// Value recorded for a nonce while its approval is being applied.
fn pending_marker(event_id: &str) -> String {
    format!("pending:{event_id}")
}

/// Value recorded for a nonce once its event's state is written.
fn applied_marker(event_id: &str) -> String {
    format!("applied:{event_id}")
}

/// Where a nonce stands for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceUse {
    /// Never seen.
    Free,
    /// Claimed by this event, whose state was never written (it crashed in
    /// between): the event may go on.
    PendingForThisEvent,
    /// This event's state was written already: a redelivery, to be ignored.
    AppliedByThisEvent,
    /// Used by another event: a replay.
    Other,
}

/// Label of the refusal that is no refusal: a redelivered event whose state
/// was written before. It is acknowledged and counted, never re-applied.
const ALREADY_APPLIED: &str = "already_applied";

/// Why an approval was refused: the metric label and the message.
struct Refusal(&'static str, String);

/// The refusal of an envelope `what` whose signature did not verify.
fn signature_refusal(err: &modelbus_core::signing::SigningError, what: &str) -> Refusal {
    use modelbus_core::signing::SigningError;
    let label = match err {
        SigningError::UnknownKey(_) => "unknown_key",
        SigningError::BadSignature(_) => "bad_signature",
        _ => "malformed",
    };
    Refusal(label, format!("{what}: {err}"))
}

/// What a signed statement must name to count for an event.
struct Expected<'a> {
    model: &'a modelbus_core::ids::ModelName,
    version: u32,
    environment: Environment,
    digest: &'a Sha256Digest,
}

impl Deployer {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        // The subject decides the handler: NATS permissions say who may publish
        // on it. Each handler's decode also insists the `type` is the subject's,
        // so an approval sent on `serving.stats` is refused, not applied.
        match d.event_name() {
            Some(ApprovalGranted::NAME) => self.on_approval(d).await,
            Some(ServingModelLoaded::NAME) => self.on_loaded(d).await,
            Some(ServingStats::NAME) => self.on_stats(d),
            Some(RollbackRequested::NAME) => self.on_rollback(d).await,
            _ => Ok(()),
        }
    }

    async fn on_approval(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = decode_counted::<ApprovalGranted>(d)?;
        match self.verify(&e).await {
            Ok(verified) => self.apply(&e, verified).await,
            Err(Refusal(ALREADY_APPLIED, why)) => {
                ignore_redelivery(&e, &why);
                Ok(())
            }
            Err(refusal) => self.refuse(&e, refusal).await,
        }
    }

    /// Logs, counts and publishes the refusal of an approval.
    async fn refuse(
        &self,
        e: &Envelope<ApprovalGranted>,
        refusal: Refusal,
    ) -> Result<(), HandlerError> {
        let g = &e.data;
        self.refuse_event(e, &g.model, g.version, g.environment, refusal)
            .await
    }

    /// Logs, counts and publishes a refusal (`approval.refused`) of the approval
    /// or rollback carried by `e`.
    async fn refuse_event<T>(
        &self,
        e: &Envelope<T>,
        model: &modelbus_core::ids::ModelName,
        version: u32,
        environment: Environment,
        Refusal(label, reason): Refusal,
    ) -> Result<(), HandlerError> {
        metrics::counter!("modelbus_deployer_refusals_total", "reason" => label).increment(1);
        tracing::warn!(%model, version, env = %environment, event = %e.event_type, %reason, "refused");
        let out = Envelope::new(
            SOURCE,
            &e.id,
            ApprovalRefused {
                model: model.clone(),
                version,
                environment,
                reason,
            },
        )
        .with_subject(model.as_str());
        self.ctx.bus.publish_caused(out, e).await.map(|_| ())
    }

    /// Verifies every envelope; returns (approver ids, nonces) of the valid ones.
    async fn verify(
        &self,
        e: &Envelope<ApprovalGranted>,
    ) -> Result<(Vec<String>, Vec<String>, bool), Refusal> {
        let g = &e.data;
        if g.approvals.is_empty() {
            return Err(Refusal(
                "no_approvals",
                "the event carries no approval envelopes".into(),
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let current = self.current(g.environment, &g.model).await;
        let mut approvers = Vec::new();
        let mut nonces = Vec::new();
        let mut replay_of_current = true;
        for (i, env) in g.approvals.iter().enumerate() {
            let (st, trusted) = self.check_statement(
                env,
                &format!("approval {i}"),
                StatementKind::Approve,
                &Expected {
                    model: &g.model,
                    version: g.version,
                    environment: g.environment,
                    digest: &g.model_sha256,
                },
                now,
            )?;
            let p = &st.predicate;
            let already_current = current.as_ref().is_some_and(|c| {
                c.nonces.contains(&p.nonce)
                    && c.version == g.version
                    && c.model_sha256 == g.model_sha256
            });
            replay_of_current &= already_current;
            if !already_current {
                match self
                    .nonce_use(&p.nonce, &e.id, &deployment_key(g.environment, &g.model))
                    .await
                {
                    NonceUse::Free | NonceUse::PendingForThisEvent => {}
                    NonceUse::AppliedByThisEvent => {
                        return Err(Refusal(
                            ALREADY_APPLIED,
                            format!(
                                "approval {i} was applied before and a newer decision replaced it"
                            ),
                        ));
                    }
                    NonceUse::Other => {
                        return Err(Refusal(
                            "replayed_nonce",
                            format!("approval {i}: nonce {} was already used", p.nonce),
                        ));
                    }
                }
            }
            if approvers.contains(&trusted.id) {
                return Err(Refusal(
                    "duplicate_approver",
                    format!("approval {i}: {} approved twice", trusted.id),
                ));
            }
            approvers.push(trusted.id.clone());
            nonces.push(p.nonce.clone());
        }
        if g.environment == Environment::Production {
            let decision = self.check_decision(g, &nonces, now)?;
            self.policy_check(e, &approvers, &decision, now).await?;
        }
        // The artifact must exist and be exactly what was approved.
        self.ctx.store.get(&g.model_sha256).await.map_err(|err| {
            Refusal(
                "artifact_mismatch",
                format!("model artifact {}: {err}", g.model_sha256),
            )
        })?;
        Ok((approvers, nonces, replay_of_current))
    }

    /// Checks one signed statement against the deployer's own trusted keys: a
    /// valid signature by a known key, of the expected kind, naming exactly the
    /// expected model, version, environment and artifact, in force now, with a
    /// well-formed nonce, signed by the key of the approver it names, whose
    /// configured role may sign this kind. `what` names it in refusals.
    fn check_statement(
        &self,
        env: &modelbus_core::signing::DsseEnvelope,
        what: &str,
        kind: StatementKind,
        expected: &Expected<'_>,
        now: time::OffsetDateTime,
    ) -> Result<(Statement, &Trusted), Refusal> {
        use modelbus_core::auth::Role;
        let keys: Vec<PublicKey> = self.trusted.iter().map(|t| t.key.clone()).collect();
        let (payload, key_id) =
            verify_envelope(env, &keys).map_err(|err| signature_refusal(&err, what))?;
        let (st, digest) = Statement::parse(&payload)
            .map_err(|err| Refusal("malformed", format!("{what}: {err}")))?;
        if st.kind() != Some(kind) {
            return Err(Refusal(
                "wrong_kind",
                format!(
                    "{what} is a {:?} statement, not a {kind:?}",
                    st.predicate_type
                ),
            ));
        }
        let p = &st.predicate;
        let trusted = self
            .trusted
            .iter()
            .find(|t| t.key.id() == key_id)
            .ok_or_else(|| {
                Refusal(
                    "unknown_key",
                    format!("{what}: key {key_id} is not trusted"),
                )
            })?;
        if digest != *expected.digest {
            return Err(Refusal(
                "digest_mismatch",
                format!(
                    "{what} is for artifact {digest}, the event names {}",
                    expected.digest
                ),
            ));
        }
        if p.model != *expected.model || p.version != expected.version {
            return Err(Refusal(
                "subject_mismatch",
                format!(
                    "{what} is for {} v{}, the event names {} v{}",
                    p.model, p.version, expected.model, expected.version
                ),
            ));
        }
        if p.environment != expected.environment {
            return Err(Refusal(
                "environment_mismatch",
                format!(
                    "{what} is for {}, the event names {}",
                    p.environment, expected.environment
                ),
            ));
        }
        if !trusted.environments.contains(&expected.environment) {
            return Err(Refusal(
                "key_not_allowed",
                format!(
                    "{what}: the key of {} is not trusted for {}",
                    trusted.id, expected.environment
                ),
            ));
        }
        if p.expires_at <= now {
            return Err(Refusal(
                "expired",
                format!("{what} expired at {}", p.expires_at),
            ));
        }
        if p.issued_at > now + MAX_CLOCK_SKEW {
            return Err(Refusal(
                "not_yet_valid",
                format!("{what} is issued in the future ({})", p.issued_at),
            ));
        }
        if p.nonce.is_empty()
            || !p.nonce.chars().all(|c| c.is_ascii_alphanumeric())
            || p.nonce.len() > 128
        {
            return Err(Refusal(
                "malformed",
                format!("{what}: nonce must be 1-128 letters or digits"),
            ));
        }
        let allowed = match kind {
            StatementKind::Approve => matches!(trusted.role, Role::Approver | Role::Admin),
            StatementKind::Rollback => matches!(trusted.role, Role::Operator | Role::Admin),
            StatementKind::Reject => false,
        };
        if !allowed {
            return Err(Refusal(
                "key_not_allowed",
                format!(
                    "{what}: {} is configured as {}, which may not sign a {kind:?}",
                    trusted.id, trusted.role
                ),
            ));
        }
        if p.approver != trusted.id {
            return Err(Refusal(
                "signer_mismatch",
                format!(
                    "{what} names {:?} but is signed with the key of {}",
                    p.approver, trusted.id
                ),
            ));
        }
        Ok((st, trusted))
    }

    /// Re-decides a production promotion with the production policy, on evidence
    /// the deployer holds itself: the approvals it verified, the staging state
    /// it wrote and the serving statistics it received.
    /// The registry's signed decision a production grant must carry, checked
    /// against the automation key from the deployer's own configuration: it
    /// must name this artifact, model, version and environment, be in force,
    /// and have counted exactly the approvals the deployer verified. Only from
    /// it does the deployer take what it cannot establish itself: the author,
    /// whether the gates passed, and the signed rejections.
    fn check_decision(
        &self,
        g: &ApprovalGranted,
        nonces: &[String],
        now: time::OffsetDateTime,
    ) -> Result<modelbus_core::signing::DecisionPredicate, Refusal> {
        let env = g.signed_decision.as_ref().ok_or_else(|| {
            Refusal(
                "unsigned_decision",
                "a production grant must carry the registry's signed decision".into(),
            )
        })?;
        let automation = self
            .trusted
            .iter()
            .find(|t| t.id == AUTOMATION)
            .ok_or_else(|| {
                Refusal(
                    "unknown_key",
                    format!("no key {AUTOMATION:?} is configured to check the registry's decision"),
                )
            })?;
        let (payload, _) = verify_envelope(env, std::slice::from_ref(&automation.key))
            .map_err(|err| signature_refusal(&err, "the registry's decision"))?;
        let (st, digest) = modelbus_core::signing::DecisionStatement::parse(&payload)
            .map_err(|err| Refusal("malformed", format!("the registry's decision: {err}")))?;
        let p = st.predicate;
        if digest != g.model_sha256
            || p.model != g.model
            || p.version != g.version
            || p.environment != g.environment
        {
            return Err(Refusal(
                "subject_mismatch",
                format!(
                    "the registry's decision is for {} v{} in {} ({digest}), the event names {} v{} in {} ({})",
                    p.model,
                    p.version,
                    p.environment,
                    g.model,
                    g.version,
                    g.environment,
                    g.model_sha256
                ),
            ));
        }
        if p.expires_at <= now {
            return Err(Refusal(
                "expired",
                format!("the registry's decision expired at {}", p.expires_at),
            ));
        }
        if p.issued_at > now + MAX_CLOCK_SKEW {
            return Err(Refusal(
                "not_yet_valid",
                format!(
                    "the registry's decision is issued in the future ({})",
                    p.issued_at
                ),
            ));
        }
        let mut counted = nonces.to_vec();
        counted.sort();
        if p.approval_nonces != counted {
            return Err(Refusal(
                "decision_mismatch",
                "the registry's decision counted other approvals than the event carries".into(),
            ));
        }
        Ok(p)
    }

    /// The rejections of a signed decision as the production policy reads them,
    /// each checked against the deployer's own keys: one that does not verify,
    /// or does not name this version, counts as invalid (it cannot block).
    fn rejections(
        &self,
        decision: &modelbus_core::signing::DecisionPredicate,
        digest: &Sha256Digest,
        now: time::OffsetDateTime,
    ) -> Vec<serde_json::Value> {
        let keys: Vec<PublicKey> = self.trusted.iter().map(|t| t.key.clone()).collect();
        decision
            .rejections
            .iter()
            .map(|env| {
                let checked = verify_envelope(env, &keys)
                    .ok()
                    .and_then(|(payload, key_id)| {
                        let (st, d) = Statement::parse(&payload).ok()?;
                        let p = st.predicate.clone();
                        let signer = self.trusted.iter().find(|t| t.key.id() == key_id)?;
                        let matches = st.kind() == Some(StatementKind::Reject)
                            && d == *digest
                            && p.model == decision.model
                            && p.version == decision.version
                            && p.environment == decision.environment
                            && p.approver == signer.id;
                        matches.then_some((p, signer))
                    });
                match checked {
                    Some((p, signer)) => serde_json::json!({
                        "approver": signer.id, "role": signer.role.as_str(),
                        "signature_valid": true, "revoked": false,
                        "expired": p.expires_at <= now, "comment": p.comment,
                    }),
                    None => serde_json::json!({
                        "approver": "(unverified)", "signature_valid": false,
                        "revoked": true, "expired": true,
                    }),
                }
            })
            .collect()
    }

    async fn policy_check(
        &self,
        e: &Envelope<ApprovalGranted>,
        approvers: &[String],
        decision: &modelbus_core::signing::DecisionPredicate,
        now: time::OffsetDateTime,
    ) -> Result<(), Refusal> {
        let g = &e.data;
        let cfg = &self.ctx.config.promotion;
        let approvals: Vec<serde_json::Value> = approvers
            .iter()
            .map(|a| {
                let role = self
                    .trusted
                    .iter()
                    .find(|t| &t.id == a)
                    .map(|t| t.role.as_str())
                    .unwrap_or("none");
                serde_json::json!({
                    "approver": a, "role": role, "signature_valid": true,
                    "expired": false, "revoked": false,
                })
            })
            .collect();
        let input = serde_json::json!({
            "environment": "production",
            "model": g.model,
            "version": g.version,
            "model_sha256": g.model_sha256.to_hex(),
            "author": decision.author,
            "gates": { "passed": decision.gates_passed },
            "staging": self.staging_view(&g.model, &g.model_sha256).await,
            "approvals": approvals,
            "rejections": self.rejections(decision, &g.model_sha256, now),
            "min_approvals": cfg.min_approvals,
        });
        let verdict = self
            .policies
            .evaluate_production(&input)
            .map_err(|err| Refusal("policy", format!("production policy: {err}")))?;
        if verdict.allow {
            Ok(())
        } else {
            Err(Refusal(
                "policy",
                format!(
                    "the production policy denies it: {}",
                    verdict.reasons.join("; ")
                ),
            ))
        }
    }

    /// What the deployer itself knows of `digest` in staging: since when the
    /// desired state has named it without interruption, and the statistics
    /// serving reported for it since.
    async fn staging_view(
        &self,
        model: &modelbus_core::ids::ModelName,
        digest: &Sha256Digest,
    ) -> serde_json::Value {
        use futures::StreamExt as _;
        let cfg = &self.ctx.config.promotion;
        let key = deployment_key(Environment::Staging, model);
        let mut entries = Vec::new();
        if let Ok(mut h) = self.deployments.history(&key).await {
            while let Some(Ok(entry)) = h.next().await {
                entries.push(entry);
            }
        }
        let mut since: Option<time::OffsetDateTime> = None;
        for entry in entries.iter().rev() {
            let same = matches!(entry.operation, kv::Operation::Put)
                && serde_json::from_slice::<DesiredState>(&entry.value)
                    .is_ok_and(|d| d.model_sha256 == *digest);
            if !same {
                break;
            }
            since = Some(entry.created);
        }
        let Some(since) = since else {
            return serde_json::json!({
                "deployed": false, "soaked_seconds": 0,
                "required_soak_seconds": cfg.staging_soak.as_secs(),
                "requests": 0, "errors": 0, "error_rate": 0.0,
                "max_error_rate": cfg.max_staging_error_rate, "min_requests": cfg.min_staging_requests,
            });
        };
        let t = self
            .stats
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&(Environment::Staging, *digest))
                    .map(|w| totals(w.iter().filter(|w| w.end >= since)))
            })
            .unwrap_or_default();
        let (requests, errors, max_p99) = (t.requests, t.errors, t.worst_p99_ms);
        let now = time::OffsetDateTime::now_utc();
        serde_json::json!({
            "deployed": true,
            "soaked_seconds": (now - since).whole_seconds().max(0),
            "required_soak_seconds": cfg.staging_soak.as_secs(),
            "requests": requests,
            "errors": errors,
            "max_p99_ms": max_p99,
            "error_rate": if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            "max_error_rate": cfg.max_staging_error_rate,
            "min_requests": cfg.min_staging_requests,
        })
    }

    /// Keeps a serving statistics window.
    fn on_stats(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<ServingStats>()?;
        self.keep_stats(&e.data)
            .map_err(|err| HandlerError::Reject(format!("serving.stats: {err}")))
    }

    /// Rebuilds the statistics windows of the recent past from the event stream,
    /// so a restarted deployer judges soaks and rollouts on the evidence it had.
    async fn replay_stats(&self) {
        let window = (self.ctx.config.promotion.staging_soak * 2
            + std::time::Duration::from_secs(600))
        .min(std::time::Duration::from_secs(86_400));
        let since = time::OffsetDateTime::now_utc() - window;
        match self
            .ctx
            .bus
            .replay(STATS_REPLAY, "modelbus.serving.stats", since)
            .await
        {
            Ok(payloads) => {
                let kept = payloads
                    .iter()
                    .filter_map(|p| modelbus_core::events::decode::<ServingStats>(p).ok())
                    .filter(|e| self.keep_stats(&e.data).is_ok())
                    .count();
                tracing::info!(windows = kept, since = %since, "serving statistics replayed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot replay serving statistics: soak and rollout evidence starts empty")
            }
        }
    }

    /// Adds one window, once (the replay and the consumer may both deliver it).
    /// Windows older than [`STATS_RETENTION`] are dropped, and at most
    /// [`MAX_STATS_ARTIFACTS`] artifacts are tracked (the least recently
    /// reported goes first), so the map is bounded whatever is published.
    fn keep_stats(&self, s: &ServingStats) -> Result<(), String> {
        let end = time::OffsetDateTime::parse(
            &s.window_end,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| format!("window_end {:?}: {e}", s.window_end))?;
        if s.errors > s.requests {
            return Err(format!("{} errors in {} requests", s.errors, s.requests));
        }
        if !(s.p99_ms.is_finite() && s.p99_ms >= 0.0) {
            return Err(format!("p99_ms {} is not a latency", s.p99_ms));
        }
        if s.replica.is_empty() || s.replica.len() > 256 {
            return Err("replica must be 1 to 256 bytes".into());
        }
        let histogram = if s.latency_histogram.is_empty() {
            None
        } else {
            Some(
                modelbus_core::latency::Histogram::from_counts(s.latency_histogram.clone())
                    .map_err(|e| e.to_string())?,
            )
        };
        let now = time::OffsetDateTime::now_utc();
        if end < now - STATS_RETENTION {
            return Ok(());
        }
        if let Ok(mut m) = self.stats.lock() {
            let key = (s.environment, s.model_sha256);
            if !m.contains_key(&key) && m.len() >= MAX_STATS_ARTIFACTS {
                for w in m.values_mut() {
                    w.retain(|x| x.end >= now - STATS_RETENTION);
                }
                m.retain(|_, w| !w.is_empty());
                if m.len() >= MAX_STATS_ARTIFACTS
                    && let Some(oldest) = m
                        .iter()
                        .min_by_key(|(_, w)| w.last().map(|x| x.end))
                        .map(|(k, _)| *k)
                {
                    m.remove(&oldest);
                }
            }
            let w = m.entry(key).or_default();
            if w.iter().any(|x| x.end == end && x.replica == s.replica) {
                return Ok(());
            }
            w.push(StatsWindow {
                replica: s.replica.clone(),
                end,
                requests: s.requests,
                errors: s.errors,
                p99_ms: s.p99_ms,
                histogram,
            });
            if w.len() > MAX_WINDOWS {
                let extra = w.len() - MAX_WINDOWS;
                w.drain(..extra);
            }
        }
        Ok(())
    }

    async fn current(
        &self,
        env: Environment,
        model: &modelbus_core::ids::ModelName,
    ) -> Option<DesiredState> {
        self.entry(&deployment_key(env, model))
            .await
            .ok()
            .flatten()
            .map(|(_, s)| s)
    }

    /// What the nonces bucket says of `nonce` for the event `event_id` about
    /// the deployment `key`. A nonce is claimed as `pending:<event>` before the
    /// state is written and marked `applied:<event>` after; a pending claim of
    /// the same event whose state is in the key's history was applied too (the
    /// deployer stopped between the write and the mark). So a redelivered or
    /// republished approval or rollback can never write its state a second
    /// time over a newer decision.
    async fn nonce_use(&self, nonce: &str, event_id: &str, key: &str) -> NonceUse {
        let Ok(Some(used)) = self.nonces.get(nonce).await else {
            return NonceUse::Free;
        };
        if used == applied_marker(event_id).as_bytes() {
            return NonceUse::AppliedByThisEvent;
        }
        if used != pending_marker(event_id).as_bytes() {
            return NonceUse::Other;
        }
        if self.history_carries_nonce(key, nonce).await {
            NonceUse::AppliedByThisEvent
        } else {
            NonceUse::PendingForThisEvent
        }
    }

    /// Whether any state in `key`'s KV history was written for `nonce`.
    async fn history_carries_nonce(&self, key: &str, nonce: &str) -> bool {
        use futures::StreamExt as _;
        let Ok(mut history) = self.deployments.history(key).await else {
            return false;
        };
        while let Some(Ok(entry)) = history.next().await {
            if serde_json::from_slice::<DesiredState>(&entry.value)
                .is_ok_and(|s| s.nonces.iter().any(|n| n == nonce))
            {
                return true;
            }
        }
        false
    }

    /// Marks `nonces` as applied by `event_id` once its state is written.
    async fn mark_applied(&self, nonces: &[String], event_id: &str) {
        for n in nonces {
            if let Err(e) = self.nonces.put(n, applied_marker(event_id).into()).await {
                // The pending claim and the KV history still say it was applied.
                tracing::warn!(nonce = %n, error = %e, "cannot mark a nonce applied");
            }
        }
    }

    /// Records `nonces` as used by event `event_id`; returns a nonce another
    /// event recorded first. `create` fails if the key exists: of two deployers
    /// racing on one statement, only one records it.
    async fn claim_nonces(
        &self,
        nonces: &[String],
        event_id: &str,
    ) -> Result<Option<String>, HandlerError> {
        let marker = pending_marker(event_id);
        for n in nonces {
            if let Err(err) = self.nonces.create(n, marker.clone().into()).await {
                if !matches!(err.kind(), kv::CreateErrorKind::AlreadyExists) {
                    return Err(HandlerError::retry(err));
                }
                let ours = self
                    .nonces
                    .get(n)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == marker.as_bytes());
                if !ours {
                    return Ok(Some(n.clone()));
                }
            }
        }
        Ok(None)
    }

    async fn apply(
        &self,
        e: &Envelope<ApprovalGranted>,
        (approvers, nonces, replay): (Vec<String>, Vec<String>, bool),
    ) -> Result<(), HandlerError> {
        let g = &e.data;
        let key = deployment_key(g.environment, &g.model);
        let mut traffic_percent = 100;
        let revision = if replay {
            // A redelivered approval that is already the desired state: nothing to write.
            self.deployments
                .entry(&key)
                .await
                .ok()
                .flatten()
                .map(|en| en.revision)
                .unwrap_or(0)
        } else {
            if let Some(n) = self.claim_nonces(&nonces, &e.id).await? {
                return self
                    .refuse(
                        e,
                        Refusal("replayed_nonce", format!("nonce {n} was used concurrently")),
                    )
                    .await;
            }
            // The version to fall back on while the new one is watched: the one
            // serving before, or, when this approval supersedes a rollout still in
            // progress, the one that rollout started from.
            let policy = self.ctx.config.rollout.of(g.environment);
            let stable = self
                .current(g.environment, &g.model)
                .await
                .map(|c| match c.previous {
                    Some(p) => *p,
                    None => c,
                })
                .filter(|s| s.model_sha256 != g.model_sha256)
                .filter(|_| !policy.bake.is_zero());
            if stable.is_some() {
                traffic_percent = rollout::steps(policy)[0];
            }
            let state = DesiredState {
                environment: g.environment,
                model: g.model.clone(),
                version: g.version,
                model_sha256: g.model_sha256,
                approved_by: approvers,
                nonces,
                pipelinerun: e.pipelinerun.clone(),
                traceparent: modelbus_core::telemetry::current_traceparent(),
                updated_at: now_rfc3339(),
                previous: stable.map(Box::new),
                traffic_percent,
            };
            let revision = self.write_state(&key, &state).await?;
            self.mark_applied(&state.nonces, &e.id).await;
            if state.in_rollout() {
                self.start_rollout(key.clone(), state, 0);
            }
            revision
        };
        metrics::counter!("modelbus_deployer_deployments_total", "environment" => g.environment.as_str()).increment(1);
        tracing::info!(model = %g.model, version = g.version, env = %g.environment, revision, "desired state written");
        let out = Envelope::new(
            SOURCE,
            // The revision makes a redeploy of the same version (after a
            // rollback) a new event rather than a duplicate of the first.
            &format!("{key}/{}/{}/{revision}", g.version, g.model_sha256),
            DeploymentStarted {
                environment: g.environment,
                model: g.model.clone(),
                version: g.version,
                model_sha256: g.model_sha256,
                revision,
                traffic_percent,
            },
        )
        .with_subject(g.model.as_str());
        self.ctx.bus.publish_caused(out, e).await.map(|_| ())
    }

    /// Writes a desired state decided by an approval or a signed rollback; a
    /// rollout still watching the key stops first, since this write replaces it.
    async fn write_state(&self, key: &str, state: &DesiredState) -> Result<u64, HandlerError> {
        self.rollouts.stop(key);
        self.deployments
            .put(
                key,
                serde_json::to_vec(state)
                    .map_err(HandlerError::retry)?
                    .into(),
            )
            .await
            .map_err(HandlerError::retry)
    }

    async fn on_loaded(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<ServingModelLoaded>()?;
        let l = &e.data;
        let Some(desired) = self.current(l.environment, &l.model).await else {
            return Ok(());
        };
        if desired.version != l.version || desired.model_sha256 != l.model_sha256 {
            // A replica reporting an older state: the newer one will report too.
            return Ok(());
        }
        // One completion per desired-state write, for the run that wrote it (serving
        // copies the run from the state it loaded).
        let key = format!("{}/{}", deployment_key(l.environment, &l.model), l.revision);
        let run = e.pipelinerun.clone().or(desired.pipelinerun.clone());
        let mut out = Envelope::new(
            SOURCE,
            &key,
            DeploymentCompleted {
                environment: l.environment,
                model: l.model.clone(),
                version: l.version,
                model_sha256: l.model_sha256,
                traffic_percent: l.traffic_percent,
            },
        )
        .with_subject(l.model.as_str())
        .caused_by(&e);
        out.pipelinerun = run;
        self.ctx
            .bus
            .publish(&out)
            .await
            .map_err(HandlerError::retry)
            .map(|_| ())
    }
}

/// Now, as RFC 3339.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Runs the deployer until `ctx.shutdown`; `ops` serves its operations endpoints.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), DeployerError> {
    metrics::describe_counter!(
        "modelbus_deployer_refusals_total",
        "Approvals and rollbacks the deployer refused, by reason"
    );
    metrics::describe_counter!(
        "modelbus_deployer_rollbacks_total",
        "Rollbacks the deployer applied, by environment and trigger (automatic, manual)"
    );
    // Exported from the start (at 0): the first rollback is then an increase
    // (dashboards annotate it, alerts see it) like every later one.
    for env in [Environment::Staging, Environment::Production] {
        for trigger in ["automatic", "manual"] {
            metrics::counter!("modelbus_deployer_rollbacks_total", "environment" => env.as_str(), "trigger" => trigger)
                .increment(0);
        }
    }
    let trusted = trusted_keys(&ctx.config)?;
    tracing::info!(
        keys = ?trusted.iter().map(|t| (&t.id, t.key.id())).collect::<Vec<_>>(),
        "trusted approval keys"
    );
    let deployments = ctx
        .bus
        .kv(DEPLOYMENTS_BUCKET, 64)
        .await
        .map_err(|e| DeployerError::Fatal(e.to_string()))?;
    let nonces = ctx
        .bus
        .kv(NONCES_BUCKET, 1)
        .await
        .map_err(|e| DeployerError::Fatal(e.to_string()))?;
    let policies = match &ctx.config.registry.policies_dir {
        Some(dir) => modelbus_policy::PolicySet::load_dir(dir)
            .map_err(|e| DeployerError::Config(e.to_string()))?,
        None => modelbus_policy::PolicySet::default_set(),
    };
    let svc = Deployer {
        ctx: ctx.clone(),
        trusted,
        deployments,
        nonces,
        policies: std::sync::Arc::new(policies),
        stats: Default::default(),
        rollouts: Default::default(),
    };
    svc.replay_stats().await;
    svc.resume_rollouts().await;
    modelbus_core::ops::run_consumer_service(
        &ctx,
        ops,
        None,
        CONSUMER,
        &[
            "modelbus.approval.granted",
            "modelbus.serving.model.loaded",
            "modelbus.serving.stats",
            "modelbus.rollback.requested",
        ],
        |d| {
            let svc = svc.clone();
            async move { svc.handle(&d).await }
        },
    )
    .await
    .map_err(|e| DeployerError::Fatal(e.to_string()))
}
