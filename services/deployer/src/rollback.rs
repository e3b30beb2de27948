//! Signed rollbacks: an operator's `rollback.requested`, checked like an
//! approval (signature by a key of the deployer's own configuration with the
//! `operator` or `admin` role, exact model, version, environment and digest, in
//! force, unused nonce), whose target must be a version this environment has
//! served before. Then the desired state returns to it at once, any rollout in
//! progress stops, and `deployment.rolled_back` says who and why.

use futures::StreamExt as _;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::deploy::{DesiredState, deployment_key};
use modelbus_core::events::{DeploymentRolledBack, Envelope, RollbackRequested};
use modelbus_core::signing::StatementKind;

use crate::{Deployer, Expected, Refusal, SOURCE, now_rfc3339};

/// A rollback that passed every check.
struct Verified {
    operator: String,
    nonce: String,
    comment: String,
    /// The state that served the target version before.
    target: DesiredState,
}

impl Deployer {
    pub(crate) async fn on_rollback(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = crate::decode_counted::<RollbackRequested>(d)?;
        let r = &e.data;
        match self.verify_rollback(&e).await {
            Ok(v) => self.apply_rollback(&e, v).await,
            Err(Refusal(crate::ALREADY_APPLIED, why)) => {
                crate::ignore_redelivery(&e, &why);
                Ok(())
            }
            Err(Refusal(label, reason)) => {
                self.refuse_event(
                    &e,
                    &r.model,
                    r.to_version,
                    r.environment,
                    Refusal(label, format!("rollback refused: {reason}")),
                )
                .await
            }
        }
    }

    async fn verify_rollback(&self, e: &Envelope<RollbackRequested>) -> Result<Verified, Refusal> {
        let r = &e.data;
        let (st, trusted) = self.check_statement(
            &r.envelope,
            "the rollback",
            StatementKind::Rollback,
            &Expected {
                model: &r.model,
                version: r.to_version,
                environment: r.environment,
                digest: &r.to_model_sha256,
            },
            time::OffsetDateTime::now_utc(),
        )?;
        if r.operator != trusted.id {
            return Err(Refusal(
                "signer_mismatch",
                format!(
                    "the event names operator {:?}, the statement is signed by {}",
                    r.operator, trusted.id
                ),
            ));
        }
        let p = &st.predicate;
        let key = deployment_key(r.environment, &r.model);
        match self.nonce_use(&p.nonce, &e.id, &key).await {
            crate::NonceUse::Free | crate::NonceUse::PendingForThisEvent => {}
            crate::NonceUse::AppliedByThisEvent => {
                return Err(Refusal(
                    crate::ALREADY_APPLIED,
                    "the rollback was applied before".into(),
                ));
            }
            crate::NonceUse::Other => {
                return Err(Refusal(
                    "replayed_nonce",
                    format!("nonce {} was already used", p.nonce),
                ));
            }
        }
        let current = self.current(r.environment, &r.model).await;
        if let Some(c) = &current
            && !c.in_rollout()
            && c.version == r.to_version
            && c.model_sha256 == r.to_model_sha256
        {
            return Err(Refusal(
                "no_change",
                format!(
                    "{} already serves v{} in {}",
                    r.model, c.version, r.environment
                ),
            ));
        }
        let target = self
            .served_before(&key, r.to_version, &r.to_model_sha256)
            .await
            .ok_or_else(|| {
                Refusal(
                    "not_served_before",
                    format!(
                        "{} v{} ({}) has not been deployed to {}: a rollback returns to a version served before",
                        r.model, r.to_version, r.to_model_sha256, r.environment
                    ),
                )
            })?;
        self.ctx
            .store
            .get(&r.to_model_sha256)
            .await
            .map_err(|err| {
                Refusal(
                    "artifact_mismatch",
                    format!("model artifact {}: {err}", r.to_model_sha256),
                )
            })?;
        Ok(Verified {
            operator: trusted.id.clone(),
            nonce: p.nonce.clone(),
            comment: p.comment.clone(),
            target,
        })
    }

    /// The last state of `key`'s history (the deployer's own writes) that served
    /// `version` with artifact `digest`, alone or as the previous version of a rollout.
    async fn served_before(
        &self,
        key: &str,
        version: u32,
        digest: &modelbus_core::ids::Sha256Digest,
    ) -> Option<DesiredState> {
        let mut history = self.deployments.history(key).await.ok()?;
        let mut found = None;
        while let Some(Ok(entry)) = history.next().await {
            let Ok(state) = serde_json::from_slice::<DesiredState>(&entry.value) else {
                continue;
            };
            let candidates = std::iter::once(&state).chain(state.previous.as_deref());
            if let Some(s) = candidates
                .into_iter()
                .find(|s| s.version == version && s.model_sha256 == *digest)
            {
                found = Some(s.clone());
            }
        }
        found
    }

    async fn apply_rollback(
        &self,
        e: &Envelope<RollbackRequested>,
        v: Verified,
    ) -> Result<(), HandlerError> {
        let r = &e.data;
        if let Some(n) = self
            .claim_nonces(std::slice::from_ref(&v.nonce), &e.id)
            .await?
        {
            return self
                .refuse_event(
                    e,
                    &r.model,
                    r.to_version,
                    r.environment,
                    Refusal(
                        "replayed_nonce",
                        format!("rollback refused: nonce {n} was used concurrently"),
                    ),
                )
                .await;
        }
        let key = deployment_key(r.environment, &r.model);
        let from_version = self
            .current(r.environment, &r.model)
            .await
            .map_or(0, |c| c.version);
        let state = DesiredState {
            approved_by: vec![v.operator.clone()],
            nonces: vec![v.nonce.clone()],
            updated_at: now_rfc3339(),
            traceparent: modelbus_core::telemetry::current_traceparent(),
            previous: None,
            traffic_percent: 100,
            ..v.target
        };
        let revision = self.write_state(&key, &state).await?;
        self.mark_applied(&state.nonces, &e.id).await;
        metrics::counter!("modelbus_deployer_rollbacks_total", "environment" => r.environment.as_str(), "trigger" => "manual").increment(1);
        tracing::warn!(model = %r.model, env = %r.environment, from_version, to_version = r.to_version, operator = %v.operator, revision, "signed rollback applied");
        let reason = if v.comment.trim().is_empty() {
            format!("rollback signed by {}", v.operator)
        } else {
            v.comment.clone()
        };
        let out = Envelope::new(
            SOURCE,
            &format!("rolled_back/{key}/{revision}"),
            DeploymentRolledBack {
                environment: r.environment,
                model: r.model.clone(),
                from_version,
                to_version: r.to_version,
                reason,
                automatic: false,
                operator: v.operator,
            },
        )
        .with_subject(r.model.as_str());
        self.ctx.bus.publish_caused(out, e).await.map(|_| ())
    }
}
