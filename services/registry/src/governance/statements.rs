//! Signed approvals, rejections and rollbacks: checked against the roster,
//! accepted once per nonce with their audit entry (and, for a rollback, its
//! event) in one transaction, refusals audited.

use modelbus_core::auth::{Permission, Principal, Role};
use modelbus_core::events::{Envelope, RollbackRequested};
use modelbus_core::ids::{Environment, Sha256Digest};
use modelbus_core::signing::{
    DsseEnvelope, PublicKey, SigningError, Statement, StatementKind, peek_statement,
    verify_envelope,
};
use time::OffsetDateTime;

use crate::store::{OutboxEvent, Promotion, SignedDecision};
use crate::{Registry, RegistryError};

use super::*;

/// What a submitted signed statement led to (also what the CLI reads back).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SubmitOutcome {
    /// The decision as recorded.
    pub decision: SignedDecision,
    /// The production promotion decision after it (approvals and rejections).
    pub promotion: Option<Promotion>,
    /// Sequence number of its audit entry.
    pub audit_seq: u64,
}

impl Registry {
    // ---- signed statements ----

    /// Records a refusal in the audit log and the metrics, and returns the error.
    pub(super) async fn refuse(
        &self,
        by: &Principal,
        label: &'static str,
        error: RegistryError,
        statement: Option<&Statement>,
    ) -> RegistryError {
        metrics::counter!("modelbus_registry_approval_refusals_total", "reason" => label)
            .increment(1);
        tracing::warn!(principal = %by.name, reason = label, error = %error, "signed statement refused");
        let (subject, detail) = match statement {
            Some(st) => (
                format!("model/{}/v{}", st.predicate.model, st.predicate.version),
                serde_json::json!({
                    "reason": label, "message": error.to_string(),
                    "kind": st.kind().map(|k| k.as_str()),
                    "signer": st.predicate.approver, "environment": st.predicate.environment,
                    "nonce": st.predicate.nonce, "submitted_by": by.name,
                }),
            ),
            None => (
                "approvals".to_string(),
                serde_json::json!({ "reason": label, "message": error.to_string(), "submitted_by": by.name }),
            ),
        };
        if let Err(e) = self
            .store
            .append_audit(&by.name, "approval.refused", &subject, &detail, None)
            .await
        {
            return e;
        }
        error
    }

    /// Verifies and records a signed approval, rejection or rollback submitted by
    /// `by`, then acts on it: a production decision for approvals and rejections,
    /// a `rollback.requested` event for rollbacks.
    pub async fn submit_signed(
        &self,
        by: &Principal,
        envelope: &DsseEnvelope,
        expected: &[StatementKind],
    ) -> Result<SubmitOutcome, RegistryError> {
        let (st, digest) = match peek_statement(envelope) {
            Ok(x) => x,
            Err(e) => {
                return Err(self
                    .refuse(
                        by,
                        "malformed",
                        RegistryError::InvalidArgument(e.to_string()),
                        None,
                    )
                    .await);
            }
        };
        let Some(kind) = st.kind().filter(|k| expected.contains(k)) else {
            let msg = format!(
                "this endpoint takes {} statements, not {:?}",
                expected
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                st.predicate_type
            );
            return Err(self
                .refuse(
                    by,
                    "wrong_kind",
                    RegistryError::InvalidArgument(msg),
                    Some(&st),
                )
                .await);
        };
        match self.check_statement(by, envelope, &st, &digest, kind).await {
            Ok(decision) => self.accept(by, decision, &st, kind).await,
            Err((label, e)) => Err(self.refuse(by, label, e, Some(&st)).await),
        }
    }

    pub(super) async fn check_statement(
        &self,
        by: &Principal,
        envelope: &DsseEnvelope,
        st: &Statement,
        digest: &Sha256Digest,
        kind: StatementKind,
    ) -> Result<SignedDecision, (&'static str, RegistryError)> {
        let p = &st.predicate;
        let needed = match kind {
            StatementKind::Approve | StatementKind::Reject => Permission::Approve,
            StatementKind::Rollback => Permission::Rollback,
        };
        by.require(needed)
            .map_err(|m| ("forbidden", RegistryError::PermissionDenied(m)))?;
        if p.approver != by.name {
            return Err((
                "not_signer",
                RegistryError::PermissionDenied(format!(
                    "{} may not submit a statement signed as {:?}: each person submits their own",
                    by.name, p.approver
                )),
            ));
        }
        let roster = self
            .store
            .approver(&p.approver)
            .await
            .map_err(|e| ("internal", e))?
            .ok_or_else(|| {
                (
                    "unknown_approver",
                    RegistryError::PermissionDenied(format!(
                        "{:?} is not on the approver roster (modelbus approvers add)",
                        p.approver
                    )),
                )
            })?;
        if !roster.revoked_at.is_empty() {
            return Err((
                "revoked",
                RegistryError::PermissionDenied(format!(
                    "approver {:?} was revoked at {} by {}",
                    roster.id, roster.revoked_at, roster.revoked_by
                )),
            ));
        }
        let role_ok = match kind {
            StatementKind::Approve | StatementKind::Reject => roster.role == Role::Approver,
            StatementKind::Rollback => matches!(roster.role, Role::Operator | Role::Admin),
        };
        if !role_ok {
            return Err((
                "wrong_role",
                RegistryError::PermissionDenied(format!(
                    "{:?} is on the roster as {}, which may not sign a {}",
                    roster.id,
                    roster.role,
                    kind.as_str()
                )),
            ));
        }
        let key = PublicKey::from_pem(&roster.public_key, "roster key")
            .map_err(|e| ("internal", RegistryError::Internal(e.to_string())))?;
        let (_, key_id) = verify_envelope(envelope, &[key]).map_err(|e| match e {
            SigningError::UnknownKey(ids) => (
                "unknown_key",
                RegistryError::PermissionDenied(format!(
                    "not signed by {}'s key {} (signed by {ids})",
                    roster.id, roster.key_id
                )),
            ),
            SigningError::BadSignature(_) => (
                "bad_signature",
                RegistryError::PermissionDenied(format!(
                    "the signature by {}'s key does not verify: the statement was changed or forged",
                    roster.id
                )),
            ),
            other => ("malformed", RegistryError::InvalidArgument(other.to_string())),
        })?;
        let version = self
            .model_version(p.model.as_str(), p.version)
            .await
            .map_err(|e| ("unknown_version", e))?;
        if version.model_sha256 != digest.to_hex() {
            return Err((
                "digest_mismatch",
                RegistryError::InvalidArgument(format!(
                    "the statement is about artifact {digest}, but {} v{} is {}",
                    p.model, p.version, version.model_sha256
                )),
            ));
        }
        if kind == StatementKind::Approve
            && (version.author == p.approver
                || version.author.strip_prefix(crate::UNVERIFIED_PREFIX)
                    == Some(p.approver.as_str()))
        {
            return Err((
                "author_approval",
                RegistryError::PermissionDenied(format!(
                    "{} submitted the batch that trained {} v{}: an author may not approve their own version",
                    p.approver, p.model, p.version
                )),
            ));
        }
        let subject_name = format!("{}/v{}", p.model, p.version);
        if st.subject.first().map(|s| s.name.as_str()) != Some(subject_name.as_str()) {
            return Err((
                "subject_mismatch",
                RegistryError::InvalidArgument(format!(
                    "subject name {:?} does not match the predicate ({subject_name})",
                    st.subject
                        .first()
                        .map(|s| s.name.clone())
                        .unwrap_or_default()
                )),
            ));
        }
        if kind != StatementKind::Rollback && p.environment != Environment::Production {
            return Err((
                "environment",
                RegistryError::InvalidArgument(format!(
                    "people approve production; {} promotions are signed by the registry when the gates pass",
                    p.environment
                )),
            ));
        }
        let now = OffsetDateTime::now_utc();
        if p.expires_at <= now {
            return Err((
                "expired",
                RegistryError::InvalidArgument(format!(
                    "the statement expired at {}",
                    rfc3339(p.expires_at)
                )),
            ));
        }
        if p.issued_at > now + MAX_CLOCK_SKEW {
            return Err((
                "not_yet_valid",
                RegistryError::InvalidArgument(format!(
                    "the statement is issued in the future ({})",
                    rfc3339(p.issued_at)
                )),
            ));
        }
        let max = self.promotion_config().max_approval_validity;
        if (p.expires_at - p.issued_at).unsigned_abs() > max {
            return Err((
                "too_long",
                RegistryError::InvalidArgument(format!(
                    "the statement is valid for longer than promotion.max_approval_validity ({})",
                    humantime::format_duration(max)
                )),
            ));
        }
        if p.nonce.is_empty()
            || p.nonce.len() > 128
            || !p.nonce.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err((
                "malformed",
                RegistryError::InvalidArgument("the nonce must be 1-128 letters or digits".into()),
            ));
        }
        Ok(SignedDecision {
            nonce: p.nonce.clone(),
            kind: kind.as_str().into(),
            model: p.model.to_string(),
            version: p.version,
            environment: p.environment.as_str().into(),
            model_sha256: digest.to_hex(),
            signer: p.approver.clone(),
            key_id,
            submitted_by: by.name.clone(),
            issued_at: rfc3339(p.issued_at),
            expires_at: rfc3339(p.expires_at),
            comment: p.comment.clone(),
            envelope: serde_json::to_string(envelope).unwrap_or_default(),
            created_at: crate::store::now(),
        })
    }

    /// Records an accepted statement: the decision, its audit entry and (for
    /// a rollback) the `rollback.requested` event commit in one transaction,
    /// so a crash or a bus outage can neither burn the nonce without the event
    /// nor leave a decision without its audit entry. Approvals and rejections
    /// then decide the production promotion.
    pub(super) async fn accept(
        &self,
        by: &Principal,
        decision: SignedDecision,
        st: &Statement,
        kind: StatementKind,
    ) -> Result<SubmitOutcome, RegistryError> {
        let event = match kind {
            StatementKind::Rollback => Some(self.rollback_event(&decision, st)?),
            StatementKind::Approve | StatementKind::Reject => None,
        };
        let mut tx = self.store.begin_write().await?;
        if !tx.insert_signed_decision(&decision).await? {
            drop(tx);
            return Err(self
                .refuse(
                    by,
                    "replayed_nonce",
                    RegistryError::FailedPrecondition(format!(
                        "nonce {} was already used: sign a new statement",
                        decision.nonce
                    )),
                    Some(st),
                )
                .await);
        }
        let subject = format!("model/{}/v{}", decision.model, decision.version);
        let entry = tx
            .append_audit(
                &by.name,
                match kind {
                    StatementKind::Approve => "approval.accepted",
                    StatementKind::Reject => "rejection.accepted",
                    StatementKind::Rollback => "rollback.accepted",
                },
                &subject,
                &serde_json::json!({
                    "signer": decision.signer, "key_id": decision.key_id,
                    "environment": decision.environment, "model_sha256": decision.model_sha256,
                    "nonce": decision.nonce, "expires_at": decision.expires_at,
                    "comment": decision.comment,
                }),
                Some(&format!("signed/{}", decision.nonce)),
            )
            .await?;
        if let Some(event) = &event {
            tx.enqueue(event).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.outbox.notify();
        }
        metrics::counter!("modelbus_registry_signed_accepted_total", "kind" => kind.as_str())
            .increment(1);
        let promotion = match kind {
            StatementKind::Approve | StatementKind::Reject => Some(
                self.decide_production(&decision.model, decision.version, true)
                    .await?,
            ),
            StatementKind::Rollback => None,
        };
        Ok(SubmitOutcome {
            decision,
            promotion,
            audit_seq: entry.seq,
        })
    }

    /// The `rollback.requested` event of an accepted rollback.
    pub(super) fn rollback_event(
        &self,
        d: &SignedDecision,
        st: &Statement,
    ) -> Result<OutboxEvent, RegistryError> {
        if self.runtime.is_none() {
            return Err(RegistryError::FailedPrecondition(
                "the registry runs without a bus".into(),
            ));
        }
        let envelope: DsseEnvelope = serde_json::from_str(&d.envelope)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let digest = Sha256Digest::parse(&d.model_sha256)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let event = Envelope::new(
            SOURCE,
            &format!("rollback/{}", d.nonce),
            RollbackRequested {
                environment: st.predicate.environment,
                model: st.predicate.model.clone(),
                to_version: d.version,
                to_model_sha256: digest,
                operator: d.signer.clone(),
                envelope,
            },
        )
        .with_subject(d.model.as_str());
        Ok(OutboxEvent::of(&event))
    }
}
