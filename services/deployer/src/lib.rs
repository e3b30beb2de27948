//! Deployer: the only writer of deployment state. It trusts nothing on the bus:
//! every approval envelope is verified against public keys from the deployer's own
//! configuration, its statement must name exactly the model, version, environment
//! and artifact digest of the event, must not be expired, and its nonce must not
//! have been used; the artifact must exist and hash to that digest. Only then is
//! the desired state written to the `deployments` KV bucket. Every refusal is
//! logged, counted (`modelbus_deployer_refusals_total`) and published as
//! `approval.refused`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use async_nats::jetstream::kv;
use modelbus_core::Context;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::config::Config;
use modelbus_core::deploy::{DEPLOYMENTS_BUCKET, DesiredState, NONCES_BUCKET, deployment_key};
use modelbus_core::events::{
    ApprovalGranted, ApprovalRefused, DeploymentCompleted, DeploymentStarted, Envelope,
    EventPayload, ServingModelLoaded,
};
use modelbus_core::ids::Environment;
use modelbus_core::signing::{PublicKey, Statement, verify_envelope};
use tokio::net::TcpListener;

/// Source attribute of the deployer's events.
pub const SOURCE: &str = "/modelbus/deployer";
/// Durable consumer name.
pub const CONSUMER: &str = "deployer";
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
}

/// Loads the trusted keys from configuration; with none configured, the registry's
/// automation public key from the state dir, for staging.
pub fn trusted_keys(config: &Config) -> Result<Vec<Trusted>, DeployerError> {
    let mut entries: Vec<(String, PathBuf, Vec<Environment>)> = config
        .deployer
        .trusted_keys
        .iter()
        .map(|k| {
            (
                k.id.clone(),
                k.public_key_file.clone(),
                k.environments.clone(),
            )
        })
        .collect();
    if entries.is_empty() {
        let path = modelbus_core::signing::public_key_path(&config.automation_key_path());
        entries.push((
            "registry-automation".into(),
            path,
            vec![Environment::Staging],
        ));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (id, path, environments))| {
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
}

/// Value recorded for a nonce while its approval is being applied.
fn pending_marker(event_id: &str) -> String {
    format!("pending:{event_id}")
}

/// Why an approval was refused: the metric label and the message.
struct Refusal(&'static str, String);

impl Deployer {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        match d.event_type().as_deref() {
            Some(t) if t == ApprovalGranted::event_type() => self.on_approval(d).await,
            Some(t) if t == ServingModelLoaded::event_type() => self.on_loaded(d).await,
            _ => Ok(()),
        }
    }

    async fn on_approval(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = match d.decode::<ApprovalGranted>() {
            Ok(e) => e,
            Err(err) => {
                metrics::counter!("modelbus_deployer_refusals_total", "reason" => "malformed")
                    .increment(1);
                tracing::warn!(error = %err, "refused an undecodable approval.granted");
                return Err(err);
            }
        };
        match self.verify(&e).await {
            Ok(verified) => self.apply(&e, verified).await,
            Err(refusal) => self.refuse(&e, refusal).await,
        }
    }

    /// Logs, counts and publishes a refusal.
    async fn refuse(
        &self,
        e: &Envelope<ApprovalGranted>,
        Refusal(label, reason): Refusal,
    ) -> Result<(), HandlerError> {
        metrics::counter!("modelbus_deployer_refusals_total", "reason" => label).increment(1);
        tracing::warn!(model = %e.data.model, version = e.data.version, env = %e.data.environment, %reason, "approval refused");
        let out = Envelope::new(
            SOURCE,
            &e.id,
            ApprovalRefused {
                model: e.data.model.clone(),
                version: e.data.version,
                environment: e.data.environment,
                reason,
            },
        )
        .with_subject(e.data.model.as_str())
        .caused_by(e);
        self.ctx
            .bus
            .publish(&out)
            .await
            .map_err(HandlerError::retry)
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
        let keys: Vec<PublicKey> = self.trusted.iter().map(|t| t.key.clone()).collect();
        let now = time::OffsetDateTime::now_utc();
        let current = self.current(g.environment, &g.model).await;
        let mut approvers = Vec::new();
        let mut nonces = Vec::new();
        let mut replay_of_current = true;
        for (i, env) in g.approvals.iter().enumerate() {
            let (payload, key_id) = verify_envelope(env, &keys).map_err(|err| {
                let label = match err {
                    modelbus_core::signing::SigningError::UnknownKey(_) => "unknown_key",
                    modelbus_core::signing::SigningError::BadSignature(_) => "bad_signature",
                    _ => "malformed",
                };
                Refusal(label, format!("approval {i}: {err}"))
            })?;
            let (st, digest) = Statement::parse(&payload)
                .map_err(|err| Refusal("malformed", format!("approval {i}: {err}")))?;
            let p = &st.predicate;
            let trusted = self
                .trusted
                .iter()
                .find(|t| t.key.id() == key_id)
                .ok_or_else(|| {
                    Refusal(
                        "unknown_key",
                        format!("approval {i}: key {key_id} is not trusted"),
                    )
                })?;
            if digest != g.model_sha256 {
                return Err(Refusal(
                    "digest_mismatch",
                    format!(
                        "approval {i} is for artifact {digest}, the event deploys {}",
                        g.model_sha256
                    ),
                ));
            }
            if p.model != g.model || p.version != g.version {
                return Err(Refusal(
                    "subject_mismatch",
                    format!(
                        "approval {i} is for {} v{}, the event deploys {} v{}",
                        p.model, p.version, g.model, g.version
                    ),
                ));
            }
            if p.environment != g.environment {
                return Err(Refusal(
                    "environment_mismatch",
                    format!(
                        "approval {i} is for {}, the event deploys to {}",
                        p.environment, g.environment
                    ),
                ));
            }
            if !trusted.environments.contains(&g.environment) {
                return Err(Refusal(
                    "key_not_allowed",
                    format!(
                        "approval {i}: key of {} may not approve {}",
                        trusted.id, g.environment
                    ),
                ));
            }
            if p.expires_at <= now {
                return Err(Refusal(
                    "expired",
                    format!("approval {i} expired at {}", p.expires_at),
                ));
            }
            if p.issued_at > now + MAX_CLOCK_SKEW {
                return Err(Refusal(
                    "not_yet_valid",
                    format!("approval {i} is issued in the future ({})", p.issued_at),
                ));
            }
            if p.nonce.is_empty()
                || !p.nonce.chars().all(|c| c.is_ascii_alphanumeric())
                || p.nonce.len() > 128
            {
                return Err(Refusal(
                    "malformed",
                    format!("approval {i}: nonce must be 1-128 letters or digits"),
                ));
            }
            let already_current = current.as_ref().is_some_and(|c| {
                c.nonces.contains(&p.nonce)
                    && c.version == g.version
                    && c.model_sha256 == g.model_sha256
            });
            replay_of_current &= already_current;
            if !already_current
                && let Some(used) = self.nonces.get(&p.nonce).await.ok().flatten()
                && used != pending_marker(&e.id).as_bytes()
            {
                // Only the same event, retried after a crash between recording the
                // nonce and writing the state, may find its own pending marker.
                return Err(Refusal(
                    "replayed_nonce",
                    format!("approval {i}: nonce {} was already used", p.nonce),
                ));
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
        // The artifact must exist and be exactly what was approved.
        self.ctx.store.get(&g.model_sha256).await.map_err(|err| {
            Refusal(
                "artifact_mismatch",
                format!("model artifact {}: {err}", g.model_sha256),
            )
        })?;
        Ok((approvers, nonces, replay_of_current))
    }

    async fn current(
        &self,
        env: Environment,
        model: &modelbus_core::ids::ModelName,
    ) -> Option<DesiredState> {
        let bytes = self
            .deployments
            .get(deployment_key(env, model))
            .await
            .ok()
            .flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn apply(
        &self,
        e: &Envelope<ApprovalGranted>,
        (approvers, nonces, replay): (Vec<String>, Vec<String>, bool),
    ) -> Result<(), HandlerError> {
        let g = &e.data;
        let key = deployment_key(g.environment, &g.model);
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
            for n in &nonces {
                // `create` fails if the key exists: of two deployers racing on one
                // approval, only one records it.
                if let Err(err) = self.nonces.create(n, pending_marker(&e.id).into()).await {
                    let ours = self
                        .nonces
                        .get(n)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|v| v == pending_marker(&e.id).as_bytes());
                    if !matches!(err.kind(), kv::CreateErrorKind::AlreadyExists) {
                        return Err(HandlerError::retry(err));
                    }
                    if !ours {
                        return self
                            .refuse(
                                e,
                                Refusal(
                                    "replayed_nonce",
                                    format!("nonce {n} was used concurrently"),
                                ),
                            )
                            .await;
                    }
                }
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
                updated_at: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            };
            self.deployments
                .put(
                    &key,
                    serde_json::to_vec(&state)
                        .map_err(HandlerError::retry)?
                        .into(),
                )
                .await
                .map_err(HandlerError::retry)?
        };
        metrics::counter!("modelbus_deployer_deployments_total", "environment" => g.environment.as_str()).increment(1);
        tracing::info!(model = %g.model, version = g.version, env = %g.environment, revision, "desired state written");
        let out = Envelope::new(
            SOURCE,
            &format!("{key}/{}/{}", g.version, g.model_sha256),
            DeploymentStarted {
                environment: g.environment,
                model: g.model.clone(),
                version: g.version,
                model_sha256: g.model_sha256,
                revision,
            },
        )
        .with_subject(g.model.as_str())
        .caused_by(e);
        self.ctx
            .bus
            .publish(&out)
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
    }
}

/// Runs the deployer until `ctx.shutdown`; `ops` serves its operations endpoints.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), DeployerError> {
    metrics::describe_counter!(
        "modelbus_deployer_refusals_total",
        "Approvals the deployer refused, by reason"
    );
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
    let svc = Deployer {
        ctx: ctx.clone(),
        trusted,
        deployments,
        nonces,
    };
    modelbus_core::ops::run_consumer_service(
        &ctx,
        ops,
        CONSUMER,
        &["modelbus.approval.granted", "modelbus.serving.model.loaded"],
        |d| {
            let svc = svc.clone();
            async move { svc.handle(&d).await }
        },
    )
    .await
    .map_err(|e| DeployerError::Fatal(e.to_string()))
}
