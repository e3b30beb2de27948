//! The approver roster.

use modelbus_core::auth::Role;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now};
use crate::error::RegistryError;

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

pub(super) fn approver_row(r: &AnyRow) -> Result<Approver, RegistryError> {
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

impl Store {
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
}
