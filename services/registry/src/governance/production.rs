//! The production promotion decision: the policy input from the registry's
//! own records, the verdict, and the signed grant through the outbox; refused
//! grants decided again with a back-off.

use modelbus_core::events::{ApprovalGranted, Envelope};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{
    DecisionPredicate, DecisionStatement, DsseEnvelope, PublicKey, verify_envelope,
};
use time::OffsetDateTime;

use crate::store::{OutboxEvent, Promotion};
use crate::{Registry, RegistryError};

use super::*;

/// How long a signed production decision stays valid: a grant the deployer
/// has not applied by then is decided again.
pub const DECISION_TTL: time::Duration = time::Duration::hours(1);

/// What a production decision is made from, with what the grant carries.
pub struct ProductionInput {
    /// The production policy's input.
    pub input: serde_json::Value,
    /// Envelopes of the approvals that count.
    pub approvals: Vec<DsseEnvelope>,
    /// Their nonces, sorted.
    pub approval_nonces: Vec<String>,
    /// Every signed rejection of the version for production.
    pub rejections: Vec<DsseEnvelope>,
    /// Who submitted the version's batch, from the registry's own records.
    pub author: String,
    /// Whether the version's promotion gates passed.
    pub gates_passed: bool,
}

impl Registry {
    /// What the production policy is given about a version: its gates, its staging
    /// soak and error rate, and every approval and rejection with the outcome of
    /// checking it now (signature against the current roster, expiry, revocation).
    pub async fn production_input(
        &self,
        model: &str,
        version: u32,
    ) -> Result<ProductionInput, RegistryError> {
        let cfg = self.promotion_config();
        let v = self.model_version(model, version).await?;
        let now = OffsetDateTime::now_utc();
        // Staging soak: from the first time staging served this version until now,
        // or until staging moved on to another version.
        let timeline = self.store.deployment_events(model).await?;
        let mut start: Option<OffsetDateTime> = None;
        let mut end: Option<OffsetDateTime> = None;
        for ev in &timeline {
            if ev["environment"] != "staging" {
                continue;
            }
            let at = ev["at"].as_str().and_then(parse_time);
            let this = ev["version"].as_u64() == Some(u64::from(version));
            match (ev["kind"].as_str(), this, start) {
                (Some("completed"), true, None) => start = at,
                (Some("completed"), false, Some(_)) | (Some("rolled_back"), true, Some(_))
                    if end.is_none() =>
                {
                    end = at
                }
                (Some("completed"), true, Some(_)) => end = None,
                _ => {}
            }
        }
        let (deployed, soaked) = match start {
            Some(s) => (true, (end.unwrap_or(now) - s).whole_seconds().max(0)),
            None => (false, 0),
        };
        let totals = match start {
            Some(s) => {
                self.store
                    .serving_totals("staging", model, version, &rfc3339(s))
                    .await?
            }
            None => Default::default(),
        };
        let error_rate = if totals.requests == 0 {
            0.0
        } else {
            totals.errors as f64 / totals.requests as f64
        };
        let mut approvals = Vec::new();
        let mut rejections = Vec::new();
        let mut valid_envelopes = Vec::new();
        let mut valid_nonces = Vec::new();
        let mut rejection_envelopes = Vec::new();
        for d in self
            .store
            .signed_decisions(model, version, "production")
            .await?
        {
            let roster = self.store.approver(&d.signer).await?;
            let envelope: Option<DsseEnvelope> = serde_json::from_str(&d.envelope).ok();
            let signature_valid = match (&roster, &envelope) {
                (Some(r), Some(env)) => PublicKey::from_pem(&r.public_key, "roster key")
                    .ok()
                    .is_some_and(|k| verify_envelope(env, &[k]).is_ok()),
                _ => false,
            };
            let expired = parse_time(&d.expires_at).is_none_or(|t| t <= now);
            let revoked = roster.as_ref().is_none_or(|r| !r.revoked_at.is_empty());
            let role = roster.as_ref().map(|r| r.role.as_str()).unwrap_or("none");
            let item = serde_json::json!({
                "approver": d.signer, "role": role, "signature_valid": signature_valid,
                "expired": expired, "revoked": revoked, "nonce": d.nonce,
                "expires_at": d.expires_at, "comment": d.comment,
            });
            if d.kind == "reject" {
                if let Some(env) = envelope {
                    rejection_envelopes.push(env);
                }
                rejections.push(item);
            } else if d.kind == "approve" {
                let counts = signature_valid
                    && !expired
                    && !revoked
                    && role == "approver"
                    && d.signer != v.author
                    && v.author.strip_prefix(crate::UNVERIFIED_PREFIX) != Some(d.signer.as_str());
                if counts && let Some(env) = envelope {
                    valid_envelopes.push(env);
                    valid_nonces.push(d.nonce.clone());
                }
                approvals.push(item);
            }
        }
        let input = serde_json::json!({
            "environment": "production",
            "model": model,
            "version": version,
            "model_sha256": v.model_sha256,
            "author": v.author,
            "gates": {
                "passed": v.decision.as_ref().is_some_and(|d| d.allow),
                "status": v.status,
            },
            "staging": {
                "deployed": deployed,
                "soaked_seconds": soaked,
                "required_soak_seconds": cfg.staging_soak.as_secs(),
                "requests": totals.requests,
                "errors": totals.errors,
                "error_rate": error_rate,
                "max_error_rate": cfg.max_staging_error_rate,
                "min_requests": cfg.min_staging_requests,
            },
            "approvals": approvals,
            "rejections": rejections,
            "min_approvals": cfg.min_approvals,
            "now": rfc3339(now),
        });
        valid_nonces.sort();
        Ok(ProductionInput {
            input,
            approvals: valid_envelopes,
            approval_nonces: valid_nonces,
            rejections: rejection_envelopes,
            author: v.author.clone(),
            gates_passed: v.decision.as_ref().is_some_and(|d| d.allow),
        })
    }

    /// Decides a production promotion with the policy, records the decision and,
    /// when allowed for the first time, grants it: the decision, the grant
    /// mark, their audit entries and the `approval.granted` event commit in
    /// one transaction, and the outbox relay publishes the event. `audit`
    /// records the decision itself (on submissions; the periodic re-check only
    /// records grants).
    pub async fn decide_production(
        &self,
        model: &str,
        version: u32,
        audit: bool,
    ) -> Result<Promotion, RegistryError> {
        let prepared = self.production_input(model, version).await?;
        let input = prepared.input.clone();
        let verdict = self
            .policies
            .evaluate_production(&input)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let previous = self.store.promotion(model, version, "production").await?;
        let mut p = Promotion {
            model: model.into(),
            version,
            environment: "production".into(),
            allow: verdict.allow,
            reasons: verdict.reasons.clone(),
            policy_digest: verdict.policy_digest.clone(),
            input: input.clone(),
            decided_at: crate::store::now(),
            granted_event: previous
                .as_ref()
                .map(|p| p.granted_event.clone())
                .unwrap_or_default(),
        };
        let grant = if verdict.allow && p.granted_event.is_empty() {
            Some(self.grant_event(model, version, prepared, &verdict, &p.decided_at)?)
        } else {
            None
        };
        let subject = format!("model/{model}/v{version}");
        let mut tx = self.store.begin_write().await?;
        tx.save_promotion(&p).await?;
        if audit {
            tx.append_audit(
                "registry",
                "promotion.decided",
                &subject,
                &serde_json::json!({
                    "environment": "production", "allow": verdict.allow,
                    "reasons": verdict.reasons, "policy_digest": verdict.policy_digest,
                }),
                None,
            )
            .await?;
        }
        let mut granted = false;
        if let Some((event_id, event)) = &grant
            && tx
                .swap_promotion_grant(model, version, "production", "", event_id)
                .await?
        {
            tx.append_audit(
                "registry",
                "approval.granted",
                &subject,
                &serde_json::json!({
                    "environment": "production", "event_id": event_id,
                    "approvers": input["approvals"].as_array().map(|a| a.iter()
                        .filter(|x| x["signature_valid"] == true && x["expired"] == false && x["revoked"] == false)
                        .map(|x| x["approver"].clone()).collect::<Vec<_>>()),
                    "policy_digest": verdict.policy_digest,
                }),
                Some(&format!("approval.granted/{event_id}")),
            )
            .await?;
            tx.enqueue(event).await?;
            granted = true;
        }
        tx.commit().await?;
        if granted && let Some((event_id, _)) = grant {
            self.outbox.notify();
            tracing::info!(model, version, event = %event_id, "production promotion granted");
            p.granted_event = event_id;
        }
        Ok(p)
    }

    /// The `approval.granted` event for production, with the approvals that
    /// counted and the registry's decision signed with its automation key:
    /// the deployer takes the author, the gates and the rejections from that
    /// signature only. The event id is derived from the approvals and the
    /// decision's time, so a decision made again after a refusal is a new
    /// event, not a duplicate the stream drops.
    pub(super) fn grant_event(
        &self,
        model: &str,
        version: u32,
        prepared: ProductionInput,
        verdict: &crate::policy::Verdict,
        decided_at: &str,
    ) -> Result<(String, OutboxEvent), RegistryError> {
        if self.runtime.is_none() {
            return Err(RegistryError::FailedPrecondition(
                "the registry runs without a bus".into(),
            ));
        }
        let input = &prepared.input;
        let digest = Sha256Digest::parse(input["model_sha256"].as_str().unwrap_or_default())
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let name = ModelName::parse(model).map_err(|e| RegistryError::Internal(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let decision = self.automation.sign_decision(&DecisionStatement::new(
            &digest,
            DecisionPredicate {
                model: name.clone(),
                version,
                environment: Environment::Production,
                author: prepared.author.clone(),
                gates_passed: prepared.gates_passed,
                approval_nonces: prepared.approval_nonces.clone(),
                rejections: prepared.rejections,
                policy_digest: verdict.policy_digest.clone(),
                issued_at: now,
                expires_at: now + DECISION_TTL,
            },
        ));
        let event = Envelope::new(
            SOURCE,
            &format!(
                "{model}/{version}/production/{}/{decided_at}",
                prepared.approval_nonces.join(",")
            ),
            ApprovalGranted {
                model: name,
                version,
                model_sha256: digest,
                environment: Environment::Production,
                approvals: prepared.approvals,
                author: prepared.author,
                decision: Some(serde_json::json!({
                    "allow": verdict.allow, "reasons": verdict.reasons,
                    "ignored": verdict.ignored, "policy_digest": verdict.policy_digest,
                })),
                signed_decision: Some(decision),
            },
        )
        .with_subject(model);
        Ok((event.id.clone(), OutboxEvent::of(&event)))
    }

    /// Whether a version whose production grants the deployer refused must wait
    /// before it is decided again: `interval × 2^refusals` after the last
    /// refusal, at most ten minutes, so a deployer that keeps refusing is not
    /// flooded with grants.
    pub(super) async fn regrant_wait(
        &self,
        model: &str,
        version: u32,
        interval: std::time::Duration,
    ) -> Result<bool, RegistryError> {
        let refusals: Vec<OffsetDateTime> = self
            .store
            .deployment_events(model)
            .await?
            .iter()
            .filter(|ev| {
                ev["kind"] == "refused"
                    && ev["environment"] == "production"
                    && ev["version"].as_u64() == Some(u64::from(version))
            })
            .filter_map(|ev| ev["at"].as_str().and_then(parse_time))
            .collect();
        let Some(last) = refusals.iter().max() else {
            return Ok(false);
        };
        let exp = u32::try_from(refusals.len().min(10)).unwrap_or(10);
        let wait = interval
            .saturating_mul(2u32.saturating_pow(exp))
            .min(std::time::Duration::from_secs(600));
        let wait = time::Duration::try_from(wait).unwrap_or(time::Duration::minutes(10));
        Ok(OffsetDateTime::now_utc() < *last + wait)
    }

    /// Re-decides pending production promotions every `promotion.evaluate_interval`
    /// (approvals that wait for the staging soak to finish), until `shutdown`.
    pub async fn promotion_loop(self, shutdown: tokio_util::sync::CancellationToken) {
        let interval = self.promotion_config().evaluate_interval;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let pending = match self.store.pending_promotions("production").await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list pending promotions");
                    continue;
                }
            };
            for (model, version) in pending {
                match self.regrant_wait(&model, version, interval).await {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(e) => {
                        tracing::warn!(%model, version, error = %e, "cannot read the deployment timeline");
                        continue;
                    }
                }
                if let Err(e) = self.decide_production(&model, version, false).await {
                    tracing::warn!(%model, version, error = %e, "cannot decide promotion");
                }
            }
        }
    }
}
