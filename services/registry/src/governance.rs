//! Governance: who may call the APIs (bearer tokens with roles), the approver
//! roster, signed approvals, rejections and rollbacks, the production promotion
//! decision, and the audit log every one of them lands in.
//!
//! The registry checks every signature against its roster and decides with the
//! production policy; when the policy allows, it publishes `approval.granted`
//! carrying every valid envelope. The deployer verifies them again against its
//! own configuration: the registry can refuse a promotion, never force one.

use std::path::PathBuf;

use modelbus_core::auth::{self, Permission, Principal, Role, ServiceIdentity};
use modelbus_core::config::Config;
use modelbus_core::events::{ApprovalGranted, Envelope, RollbackRequested};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{
    DecisionPredicate, DecisionStatement, DsseEnvelope, PublicKey, SigningError, Statement,
    StatementKind, peek_statement, verify_envelope,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{Approver, OutboxEvent, Promotion, SignedDecision, TokenInfo};
use crate::{Registry, RegistryError};

/// Source attribute of governance events.
const SOURCE: &str = "/modelbus/registry";
/// Principal of the first admin token.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// Clock skew tolerated on `issued_at`.
const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

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

/// What a submitted signed statement led to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubmitOutcome {
    /// The decision as recorded.
    pub decision: SignedDecision,
    /// The production promotion decision after it (approvals and rejections).
    pub promotion: Option<Promotion>,
    /// Sequence number of its audit entry.
    pub audit_seq: u64,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Writes a secret file readable by its owner only, replacing any old one
/// atomically and durably.
fn write_secret(path: &std::path::Path, text: &str) -> Result<(), RegistryError> {
    let err = |e: std::io::Error| {
        RegistryError::Internal(format!("cannot write {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        modelbus_core::fsutil::create_private_dir(dir).map_err(err)?;
    }
    modelbus_core::fsutil::write_private_file(
        path,
        format!("{text}\n").as_bytes(),
        modelbus_core::fsutil::Existing::Replace,
    )
    .map_err(err)
}

impl Registry {
    // ---- authentication ----

    /// The principal of an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, RegistryError> {
        let fail = |reason: &'static str, msg: String| {
            metrics::counter!("modelbus_auth_failures_total", "reason" => reason).increment(1);
            RegistryError::Unauthenticated(msg)
        };
        let Some(header) = header else {
            return Err(fail(
                "missing",
                "no bearer token: pass --token or set MODELBUS_TOKEN (`Authorization: Bearer <token>`)".into(),
            ));
        };
        let Some(token) = auth::bearer(header) else {
            return Err(fail(
                "malformed",
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        };
        let Some(id) = auth::token_id(token) else {
            return Err(fail(
                "malformed",
                "the bearer token is not a modelbus token (mbt_<id>_<secret>)".into(),
            ));
        };
        match self
            .store
            .principal_by_token(&auth::token_sha256(token))
            .await?
        {
            Some(p) => Ok(p),
            None => Err(fail("unknown", format!("token {id} is unknown or revoked"))),
        }
    }

    /// Authenticates and checks that the principal may do `p`.
    pub async fn authorize(
        &self,
        header: Option<&str>,
        p: Permission,
    ) -> Result<Principal, RegistryError> {
        let principal = self.authenticate(header).await?;
        if let Err(msg) = principal.require(p) {
            metrics::counter!("modelbus_auth_denials_total", "permission" => p.as_str())
                .increment(1);
            // Attempts at governance (signing, rolling back, administering) by
            // someone without the role are evidence too.
            if matches!(
                p,
                Permission::Approve | Permission::Rollback | Permission::Admin
            ) {
                let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
                if let Err(e) = self
                    .store
                    .append_audit(
                        &principal.name,
                        "access.denied",
                        &format!("permission/{}", p.as_str()),
                        &serde_json::json!({ "roles": roles, "token_id": principal.token_id, "message": msg }),
                        None,
                    )
                    .await
                {
                    tracing::error!(error = %e, "cannot audit a denied request");
                }
            }
            return Err(RegistryError::PermissionDenied(msg));
        }
        Ok(principal)
    }

    /// On first start: a token for each platform service (unless configured)
    /// and a first admin token, each written to the state dir (mode 0600).
    /// Returns the admin token's path when it wrote one.
    pub async fn bootstrap_tokens(
        &self,
        config: &Config,
    ) -> Result<Option<PathBuf>, RegistryError> {
        for service in ServiceIdentity::ALL {
            if let Some(reference) = config.auth.token_of(service) {
                self.register_configured_service_token(service, reference)
                    .await?;
                continue;
            }
            let path = config.service_token_path(service);
            let valid = match std::fs::read_to_string(&path) {
                Ok(t) => self
                    .store
                    .principal_by_token(&auth::token_sha256(t.trim()))
                    .await?
                    .is_some_and(|p| p.name == service.principal()),
                Err(_) => false,
            };
            if !valid {
                let (_, token) = self
                    .mint(&service.principal(), &[service.role()], "registry")
                    .await?;
                write_secret(&path, &token)?;
            }
        }
        let path = config.admin_token_path();
        if path.exists() || self.store.has_active_token(ADMIN_PRINCIPAL).await? {
            // An admin exists: never mint another behind their back.
            return Ok(None);
        }
        let (_, token) = self
            .mint(ADMIN_PRINCIPAL, &[Role::Admin], "registry")
            .await?;
        write_secret(&path, &token)?;
        Ok(Some(path))
    }

    /// Makes a service's configured token valid (a deployment generates it
    /// into a secret the service and the registry read): stored hashed for
    /// the service's principal, with the service's role only, on first
    /// sight. A token id already known is left alone, so a revoked
    /// configured token stays revoked; one known under another principal is
    /// refused, so one service's token can never be registered as another's.
    async fn register_configured_service_token(
        &self,
        service: ServiceIdentity,
        reference: &modelbus_core::config::SecretRef,
    ) -> Result<(), RegistryError> {
        let key = Config::service_token_key(service);
        let bad = |why: String| RegistryError::InvalidArgument(format!("{key}: {why}"));
        let secret = reference.resolve(&key).map_err(|e| bad(e.to_string()))?;
        let token = secret.expose().trim();
        let id = auth::token_id(token).ok_or_else(|| {
            bad("not a modelbus token (mbt_<12 hex>_<64 hex>; `modelbus tokens create` or `openssl rand -hex` make the parts)".into())
        })?;
        let sha256 = auth::token_sha256(token);
        match self.store.token(id).await? {
            Some(existing) if existing.0 != sha256 => {
                Err(bad(format!("its id {id} belongs to another token already")))
            }
            Some((_, revoked_at)) => {
                let holder = self.store.principal_of_token(id).await?;
                if holder.as_deref() != Some(service.principal().as_str()) {
                    return Err(bad(format!(
                        "token {id} belongs to {}, not to {}: give each service its own token",
                        holder.unwrap_or_default(),
                        service.principal()
                    )));
                }
                if !revoked_at.is_empty() {
                    tracing::warn!(token_id = id, service = service.name(), %revoked_at, "a configured service token was revoked: the service will be refused");
                }
                Ok(())
            }
            None => {
                self.store_token(
                    id,
                    &service.principal(),
                    &[service.role()],
                    &sha256,
                    "configuration",
                )
                .await?;
                Ok(())
            }
        }
    }

    async fn mint(
        &self,
        name: &str,
        roles: &[Role],
        by: &str,
    ) -> Result<(TokenInfo, String), RegistryError> {
        auth::check_name(name).map_err(RegistryError::InvalidArgument)?;
        let t = auth::mint_token().map_err(|e| RegistryError::Internal(e.to_string()))?;
        let info = self.store_token(&t.id, name, roles, &t.sha256, by).await?;
        Ok((info, t.token))
    }

    /// Stores a token's hash for `principal` and audits its creation by `by`.
    async fn store_token(
        &self,
        id: &str,
        principal: &str,
        roles: &[Role],
        sha256: &str,
        by: &str,
    ) -> Result<TokenInfo, RegistryError> {
        let info = self
            .store
            .create_token(id, principal, roles, sha256, by)
            .await?;
        self.store
            .append_audit(
                by,
                "token.created",
                &format!("principal/{principal}"),
                &serde_json::json!({ "token_id": id, "roles": roles }),
                Some(&format!("token.created/{id}")),
            )
            .await?;
        Ok(info)
    }

    /// Creates a token (admin only); returns it once.
    pub async fn create_token(
        &self,
        by: &Principal,
        name: &str,
        roles: &str,
    ) -> Result<(TokenInfo, String), RegistryError> {
        by.require(Permission::Admin)
            .map_err(RegistryError::PermissionDenied)?;
        let roles = auth::parse_roles(roles)
            .map_err(|e| RegistryError::InvalidArgument(format!("roles: {e}")))?;
        self.mint(name, &roles, &by.name).await
    }

    /// Revokes a token by id, or every token of a principal (admin only).
    pub async fn revoke_tokens(
        &self,
        by: &Principal,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<TokenInfo>, RegistryError> {
        by.require(Permission::Admin)
            .map_err(RegistryError::PermissionDenied)?;
        if id.is_none() && name.is_none() {
            return Err(RegistryError::InvalidArgument(
                "give the token id or the principal name to revoke".into(),
            ));
        }
        let revoked = self.store.revoke_tokens(id, name, &by.name).await?;
        if revoked.is_empty() {
            return Err(RegistryError::NotFound(format!(
                "no active token with {}",
                id.map(|i| format!("id {i:?}"))
                    .unwrap_or_else(|| format!("principal {:?}", name.unwrap_or_default()))
            )));
        }
        for t in &revoked {
            self.store
                .append_audit(
                    &by.name,
                    "token.revoked",
                    &format!("principal/{}", t.principal),
                    &serde_json::json!({ "token_id": t.id }),
                    Some(&format!("token.revoked/{}", t.id)),
                )
                .await?;
        }
        Ok(revoked)
    }

    // ---- roster ----

    /// Adds an approver to the roster (admin only).
    pub async fn add_approver(
        &self,
        by: &Principal,
        id: &str,
        public_key_pem: &str,
        role: &str,
    ) -> Result<Approver, RegistryError> {
        by.require(Permission::Admin)
            .map_err(RegistryError::PermissionDenied)?;
        auth::check_name(id).map_err(RegistryError::InvalidArgument)?;
        let role: Role = role
            .parse()
            .map_err(|e| RegistryError::InvalidArgument(format!("role: {e}")))?;
        if !matches!(role, Role::Approver | Role::Operator | Role::Admin) {
            return Err(RegistryError::InvalidArgument(format!(
                "role {role} cannot sign: approvers are approver, operator or admin"
            )));
        }
        let key = PublicKey::from_pem(public_key_pem, "public key")
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let a = self
            .store
            .add_approver(id, &key.to_pem(), key.id(), role, &by.name)
            .await?;
        self.store
            .append_audit(
                &by.name,
                "roster.added",
                &format!("approver/{id}"),
                &serde_json::json!({ "role": role, "key_id": key.id() }),
                None,
            )
            .await?;
        Ok(a)
    }

    /// Revokes an approver (admin only): their approvals stop counting.
    pub async fn revoke_approver(
        &self,
        by: &Principal,
        id: &str,
    ) -> Result<Approver, RegistryError> {
        by.require(Permission::Admin)
            .map_err(RegistryError::PermissionDenied)?;
        let a = self.store.revoke_approver(id, &by.name).await?;
        self.store
            .append_audit(
                &by.name,
                "roster.revoked",
                &format!("approver/{id}"),
                &serde_json::json!({ "key_id": a.key_id }),
                None,
            )
            .await?;
        Ok(a)
    }

    // ---- signed statements ----

    /// Records a refusal in the audit log and the metrics, and returns the error.
    async fn refuse(
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

    async fn check_statement(
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
    async fn accept(
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
    fn rollback_event(
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
    fn grant_event(
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
    async fn regrant_wait(
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
