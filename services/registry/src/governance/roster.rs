//! The roster of people who may sign approvals, rejections and rollbacks.

use modelbus_core::auth::{self, Permission, Principal, Role};
use modelbus_core::signing::PublicKey;

use crate::store::Approver;
use crate::{Registry, RegistryError};

impl Registry {
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
}
