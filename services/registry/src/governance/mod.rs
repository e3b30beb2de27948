//! Governance: who may call the APIs (bearer tokens with roles), the approver
//! roster, signed approvals, rejections and rollbacks, the production promotion
//! decision, and the audit log every one of them lands in.
//!
//! The registry checks every signature against its roster and decides with the
//! production policy; when the policy allows, it publishes `approval.granted`
//! carrying every valid envelope. The deployer verifies them again against its
//! own configuration: the registry can refuse a promotion, never force one.

use modelbus_core::auth::{self, Permission, Principal};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Registry, RegistryError};

mod production;
mod roster;
mod statements;
mod tokens;

pub use production::*;
pub use statements::*;

/// Source attribute of governance events.
const SOURCE: &str = "/modelbus/registry";
/// Principal of the first admin token.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// Clock skew tolerated on `issued_at`.
const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

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
}
