//! Signed approvals, rejections and rollbacks, and the promotion decisions
//! made on them.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, u32_of};
use crate::error::RegistryError;

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

pub(super) fn decision_row(r: &AnyRow) -> Result<SignedDecision, RegistryError> {
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

pub(super) fn promotion_row(r: &AnyRow) -> Result<Promotion, RegistryError> {
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
}
