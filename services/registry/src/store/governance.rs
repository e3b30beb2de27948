//! Governance tables: the hash-chained audit log, API tokens, the approver
//! roster, signed decisions (approvals, rejections, rollbacks), promotion
//! decisions and serving statistics.

use modelbus_core::audit::AuditEntry;
use modelbus_core::auth::{Principal, Role};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now, u32_of};
use crate::error::RegistryError;

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Owner.
    pub principal: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked (empty: active).
    pub revoked_at: String,
}

/// A roster entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approver {
    /// Approver id (the principal name of the person's token).
    pub id: String,
    /// SPKI PEM public key.
    pub public_key: String,
    /// Its key id (`SHA256:<hex>`).
    pub key_id: String,
    /// `approver`, `operator` or `admin`.
    pub role: Role,
    /// Who added it.
    pub added_by: String,
    /// When.
    pub added_at: String,
    /// When it was revoked (empty: active).
    pub revoked_at: String,
    /// Who revoked it.
    pub revoked_by: String,
}

/// A signed approval, rejection or rollback as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedDecision {
    /// The statement's nonce (accepted once).
    pub nonce: String,
    /// `approve`, `reject` or `rollback`.
    pub kind: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Environment.
    pub environment: String,
    /// Artifact digest the statement names.
    pub model_sha256: String,
    /// Approver id that signed.
    pub signer: String,
    /// Key that signed.
    pub key_id: String,
    /// Principal whose token submitted it.
    pub submitted_by: String,
    /// Signed at.
    pub issued_at: String,
    /// Void after.
    pub expires_at: String,
    /// Signer's comment.
    pub comment: String,
    /// The DSSE envelope (JSON).
    pub envelope: String,
    /// When the registry accepted it.
    pub created_at: String,
}

/// A promotion-policy decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Target environment.
    pub environment: String,
    /// Whether the policy allowed it.
    pub allow: bool,
    /// Why not (or why).
    pub reasons: Vec<String>,
    /// Digest of the policy bundle that decided.
    pub policy_digest: String,
    /// The policy input, for the record.
    pub input: serde_json::Value,
    /// When.
    pub decided_at: String,
    /// Id of the `approval.granted` event, once published.
    pub granted_event: String,
}

/// Totals of serving statistics over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingTotals {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed with a server-side error.
    pub errors: u64,
    /// Worst p99 latency over the windows, milliseconds.
    pub max_p99_ms: f64,
    /// Windows counted.
    pub windows: u64,
}

pub(super) fn audit_row(r: &AnyRow) -> Result<AuditEntry, RegistryError> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEntry {
        seq: u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(0),
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        // An unparseable detail is kept as a string: verification then fails on
        // that entry's hash, naming it, instead of the export failing.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn roles_of(s: &str) -> Vec<Role> {
    serde_json::from_str(s).unwrap_or_default()
}

fn token_row(r: &AnyRow) -> Result<TokenInfo, RegistryError> {
    Ok(TokenInfo {
        id: r.try_get("id")?,
        principal: r.try_get("principal")?,
        roles: roles_of(&r.try_get::<String, _>("roles")?),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn approver_row(r: &AnyRow) -> Result<Approver, RegistryError> {
    let role: String = r.try_get("role")?;
    Ok(Approver {
        id: r.try_get("id")?,
        public_key: r.try_get("public_key")?,
        key_id: r.try_get("key_id")?,
        role: role
            .parse()
            .map_err(|e| RegistryError::Internal(format!("approvers.role: {e}")))?,
        added_by: r.try_get("added_by")?,
        added_at: r.try_get("added_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revoked_by: r.try_get("revoked_by")?,
    })
}

fn decision_row(r: &AnyRow) -> Result<SignedDecision, RegistryError> {
    Ok(SignedDecision {
        nonce: r.try_get("nonce")?,
        kind: r.try_get("kind")?,
        model: r.try_get("model")?,
        version: u32_of(r.try_get("version")?),
        environment: r.try_get("environment")?,
        model_sha256: r.try_get("model_sha256")?,
        signer: r.try_get("signer")?,
        key_id: r.try_get("key_id")?,
        submitted_by: r.try_get("submitted_by")?,
        issued_at: r.try_get("issued_at")?,
        expires_at: r.try_get("expires_at")?,
        comment: r.try_get("comment")?,
        envelope: r.try_get("envelope")?,
        created_at: r.try_get("created_at")?,
    })
}

fn promotion_row(r: &AnyRow) -> Result<Promotion, RegistryError> {
    Ok(Promotion {
        model: r.try_get("model")?,
        version: u32_of(r.try_get("version")?),
        environment: r.try_get("environment")?,
        allow: r.try_get::<i64, _>("allow_promotion")? != 0,
        reasons: serde_json::from_str(&r.try_get::<String, _>("reasons")?).unwrap_or_default(),
        policy_digest: r.try_get("policy_digest")?,
        input: serde_json::from_str(&r.try_get::<String, _>("input")?).unwrap_or_default(),
        decided_at: r.try_get("decided_at")?,
        granted_event: r.try_get("granted_event")?,
    })
}

impl Store {
    // ---- audit log ----

    /// Appends an entry to the audit chain in its own write transaction. With
    /// a `dedup_key`, appending the same key again returns the entry already
    /// written (redelivered events, retried requests). Writes that must land
    /// with their audit entry use [`WriteTx::append_audit`] instead.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
        dedup_key: Option<&str>,
    ) -> Result<AuditEntry, RegistryError> {
        let mut tx = self.begin_write().await?;
        let entry = tx
            .append_audit(actor, action, subject, detail, dedup_key)
            .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Audit entries that may concern `model` v`version`, oldest first: those
    /// whose subject is the version (but not the exports of its evidence),
    /// rollbacks of the model, spec applications and roster changes. The caller
    /// narrows them by their detail; this reads no other entry, so assembling
    /// evidence costs what the version's own history costs, not the log's.
    pub async fn audit_about_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE (subject = $1 AND action <> 'evidence.exported') \
             OR (action = 'deployment.rolled_back' AND subject LIKE $2) \
             OR action = 'spec.applied' OR action LIKE 'roster.%' ORDER BY seq",
        )
        .bind(format!("model/{model}/v{version}"))
        .bind(format!("model/{model}/%"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_row).collect()
    }

    // ---- tokens ----

    /// Stores a new token's hash.
    pub async fn create_token(
        &self,
        id: &str,
        principal: &str,
        roles: &[Role],
        token_sha256: &str,
        created_by: &str,
    ) -> Result<TokenInfo, RegistryError> {
        let at = now();
        sqlx::query(
            "INSERT INTO api_tokens (id, principal, roles, token_sha256, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(principal)
        .bind(serde_json::to_string(roles).unwrap_or_else(|_| "[]".into()))
        .bind(token_sha256)
        .bind(created_by)
        .bind(&at)
        .execute(&self.pool)
        .await?;
        Ok(TokenInfo {
            id: id.into(),
            principal: principal.into(),
            roles: roles.to_vec(),
            created_by: created_by.into(),
            created_at: at,
            revoked_at: String::new(),
        })
    }

    /// The stored hash and revocation time of a token id, whatever its state.
    pub async fn token(&self, id: &str) -> Result<Option<(String, String)>, RegistryError> {
        let row = sqlx::query("SELECT token_sha256, revoked_at FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("token_sha256")?, r.try_get("revoked_at")?)))
            .transpose()
    }

    /// The principal a token id was issued to (revoked or not).
    pub async fn principal_of_token(&self, id: &str) -> Result<Option<String>, RegistryError> {
        let row = sqlx::query("SELECT principal FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("principal")?)).transpose()
    }

    /// The principal of an active token with this hash.
    pub async fn principal_by_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<Principal>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, principal, roles FROM api_tokens WHERE token_sha256 = $1 AND revoked_at = ''",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Principal {
                name: r.try_get("principal")?,
                roles: roles_of(&r.try_get::<String, _>("roles")?),
                token_id: r.try_get("id")?,
            })
        })
        .transpose()
    }

    /// Every token, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, RegistryError> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_row).collect()
    }

    /// Revokes tokens by id, or every token of a principal; returns those revoked.
    pub async fn revoke_tokens(
        &self,
        id: Option<&str>,
        principal: Option<&str>,
        by: &str,
    ) -> Result<Vec<TokenInfo>, RegistryError> {
        let rows = sqlx::query(
            // An absent selector is bound as '' and matches nothing (ids and
            // principals are never empty). PostgreSQL refuses NUL in text, so
            // no sentinel character may stand in for "none".
            "SELECT * FROM api_tokens WHERE revoked_at = '' \
             AND (($1 <> '' AND id = $1) OR ($2 <> '' AND principal = $2))",
        )
        .bind(id.unwrap_or(""))
        .bind(principal.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let mut t = token_row(r)?;
            let at = now();
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at = ''",
            )
            .bind(&at)
            .bind(by)
            .bind(&t.id)
            .execute(&self.pool)
            .await?;
            t.revoked_at = at;
            out.push(t);
        }
        Ok(out)
    }

    /// Whether an active token of this principal exists.
    pub async fn has_active_token(&self, principal: &str) -> Result<bool, RegistryError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_tokens WHERE principal = $1 AND revoked_at = ''",
        )
        .bind(principal)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    // ---- approver roster ----

    /// Adds an approver, or re-admits a revoked one with a new key.
    pub async fn add_approver(
        &self,
        id: &str,
        public_key: &str,
        key_id: &str,
        role: Role,
        by: &str,
    ) -> Result<Approver, RegistryError> {
        if let Some(existing) = self.approver(id).await? {
            if existing.revoked_at.is_empty() {
                return Err(RegistryError::FailedPrecondition(format!(
                    "approver {id:?} is already on the roster (role {}, key {}); revoke it first to change its key",
                    existing.role, existing.key_id
                )));
            }
            sqlx::query(
                "UPDATE approvers SET public_key = $1, key_id = $2, role = $3, added_by = $4, \
                 added_at = $5, revoked_at = '', revoked_by = '' WHERE id = $6",
            )
            .bind(public_key)
            .bind(key_id)
            .bind(role.as_str())
            .bind(by)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO approvers (id, public_key, key_id, role, added_by, added_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(public_key)
            .bind(key_id)
            .bind(role.as_str())
            .bind(by)
            .bind(now())
            .execute(&self.pool)
            .await?;
        }
        self.approver(id)
            .await?
            .ok_or_else(|| RegistryError::Internal(format!("approver {id} vanished")))
    }

    /// One roster entry (revoked ones too).
    pub async fn approver(&self, id: &str) -> Result<Option<Approver>, RegistryError> {
        sqlx::query("SELECT * FROM approvers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(approver_row)
            .transpose()
    }

    /// The whole roster.
    pub async fn list_approvers(&self) -> Result<Vec<Approver>, RegistryError> {
        let rows = sqlx::query("SELECT * FROM approvers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(approver_row).collect()
    }

    /// Revokes an approver.
    pub async fn revoke_approver(&self, id: &str, by: &str) -> Result<Approver, RegistryError> {
        let existing = self
            .approver(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no approver {id:?} on the roster")))?;
        if !existing.revoked_at.is_empty() {
            return Err(RegistryError::FailedPrecondition(format!(
                "approver {id:?} was already revoked at {} by {}",
                existing.revoked_at, existing.revoked_by
            )));
        }
        sqlx::query("UPDATE approvers SET revoked_at = $1, revoked_by = $2 WHERE id = $3")
            .bind(now())
            .bind(by)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.approver(id)
            .await?
            .ok_or_else(|| RegistryError::Internal(format!("approver {id} vanished")))
    }

    // ---- signed decisions ----

    /// Records a signed decision; `Ok(false)` if its nonce was already used.
    pub async fn insert_signed_decision(&self, d: &SignedDecision) -> Result<bool, RegistryError> {
        let mut tx = self.begin_write().await?;
        let inserted = tx.insert_signed_decision(d).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// The decision recorded under a nonce.
    pub async fn signed_decision(
        &self,
        nonce: &str,
    ) -> Result<Option<SignedDecision>, RegistryError> {
        sqlx::query("SELECT * FROM signed_decisions WHERE nonce = $1")
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(decision_row)
            .transpose()
    }

    /// Signed decisions on a version (every environment when `environment` is empty).
    pub async fn signed_decisions(
        &self,
        model: &str,
        version: u32,
        environment: &str,
    ) -> Result<Vec<SignedDecision>, RegistryError> {
        let rows = sqlx::query(
            "SELECT * FROM signed_decisions WHERE model = $1 AND version = $2 \
             AND ($3 = '' OR environment = $3) ORDER BY created_at",
        )
        .bind(model)
        .bind(i64::from(version))
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision_row).collect()
    }

    /// Versions with approvals for `environment` whose promotion is not granted yet.
    pub async fn pending_promotions(
        &self,
        environment: &str,
    ) -> Result<Vec<(String, u32)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT DISTINCT d.model AS model, d.version AS version FROM signed_decisions d \
             LEFT JOIN promotions p ON p.model = d.model AND p.version = d.version \
             AND p.environment = d.environment \
             WHERE d.environment = $1 AND d.kind = 'approve' \
             AND (p.granted_event IS NULL OR p.granted_event = '')",
        )
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("model")?, u32_of(r.try_get("version")?))))
            .collect()
    }

    /// Approvals the registry's automation key signed for a version (staging).
    pub async fn automation_approvals(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let rows = sqlx::query(
            "SELECT environment, approver, key_id, envelope, created_at FROM approvals \
             WHERE model = $1 AND version = $2 ORDER BY created_at",
        )
        .bind(model)
        .bind(i64::from(version))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let envelope: String = r.try_get("envelope")?;
                Ok(serde_json::json!({
                    "environment": r.try_get::<String, _>("environment")?,
                    "approver": r.try_get::<String, _>("approver")?,
                    "key_id": r.try_get::<String, _>("key_id")?,
                    "envelope": serde_json::from_str::<serde_json::Value>(&envelope).unwrap_or_default(),
                    "created_at": r.try_get::<String, _>("created_at")?,
                }))
            })
            .collect()
    }

    // ---- promotions ----

    /// Records the latest policy decision, keeping `granted_event` once set.
    pub async fn save_promotion(&self, p: &Promotion) -> Result<(), RegistryError> {
        let mut tx = self.begin_write().await?;
        tx.save_promotion(p).await?;
        tx.commit().await
    }

    /// Marks a promotion granted; `false` if another writer granted it first.
    pub async fn mark_promotion_granted(
        &self,
        model: &str,
        version: u32,
        environment: &str,
        event_id: &str,
    ) -> Result<bool, RegistryError> {
        let mut tx = self.begin_write().await?;
        let swapped = tx
            .swap_promotion_grant(model, version, environment, "", event_id)
            .await?;
        tx.commit().await?;
        Ok(swapped)
    }

    /// Makes a granted promotion pending again after the deployer refused the
    /// grant `event_id`, so it is decided anew (with fresh evidence) instead of
    /// staying stuck; false when it was not that grant's.
    pub async fn reopen_promotion(
        &self,
        model: &str,
        version: u32,
        environment: &str,
        event_id: &str,
    ) -> Result<bool, RegistryError> {
        let mut tx = self.begin_write().await?;
        let swapped = tx
            .swap_promotion_grant(model, version, environment, event_id, "")
            .await?;
        tx.commit().await?;
        Ok(swapped)
    }

    /// The latest promotion decision of a version for an environment.
    pub async fn promotion(
        &self,
        model: &str,
        version: u32,
        environment: &str,
    ) -> Result<Option<Promotion>, RegistryError> {
        sqlx::query(
            "SELECT * FROM promotions WHERE model = $1 AND version = $2 AND environment = $3",
        )
        .bind(model)
        .bind(i64::from(version))
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(promotion_row)
        .transpose()
    }

    // ---- serving statistics ----

    /// Records one statistics window (once per event).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_serving_stats(
        &self,
        event_id: &str,
        environment: &str,
        model: &str,
        version: u32,
        requests: u64,
        errors: u64,
        p99_ms: f64,
        window_end: &str,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO serving_stats (event_id, environment, model, version, requests, errors, p99_ms, window_end) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .bind(i64::try_from(requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(errors).unwrap_or(i64::MAX))
        .bind(p99_ms)
        .bind(window_end)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Totals of a version's statistics windows ending at or after `since`.
    pub async fn serving_totals(
        &self,
        environment: &str,
        model: &str,
        version: u32,
        since: &str,
    ) -> Result<ServingTotals, RegistryError> {
        let rows = sqlx::query(
            "SELECT requests, errors, p99_ms FROM serving_stats WHERE environment = $1 AND model = $2 \
             AND version = $3 AND window_end >= $4",
        )
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut t = ServingTotals::default();
        for r in &rows {
            // Counts come from events: saturate, never overflow.
            t.requests = t
                .requests
                .saturating_add(u64::try_from(r.try_get::<i64, _>("requests")?).unwrap_or(0));
            t.errors = t
                .errors
                .saturating_add(u64::try_from(r.try_get::<i64, _>("errors")?).unwrap_or(0));
            t.max_p99_ms = t.max_p99_ms.max(r.try_get::<f64, _>("p99_ms")?);
            t.windows += 1;
        }
        Ok(t)
    }

    /// When a digest was first reported serving in an environment, from the
    /// deployment timeline.
    pub async fn first_completed(
        &self,
        environment: &str,
        model: &str,
        version: u32,
    ) -> Result<Option<String>, RegistryError> {
        let row = sqlx::query(
            "SELECT MIN(at) AS at FROM deployment_events WHERE environment = $1 AND model = $2 \
             AND version = $3 AND kind = 'completed'",
        )
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<String>, _>("at")?)
    }
}
