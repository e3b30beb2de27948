//! API tokens: the first admin token and each service's token on first
//! start, tokens minted and revoked by admins, all audited.

use std::path::PathBuf;

use modelbus_core::auth::{self, Permission, Principal, Role, ServiceIdentity};
use modelbus_core::config::Config;

use crate::store::TokenInfo;
use crate::{Registry, RegistryError};

use super::*;

impl Registry {
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
    pub(super) async fn register_configured_service_token(
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

    pub(super) async fn mint(
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
    pub(super) async fn store_token(
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
}
