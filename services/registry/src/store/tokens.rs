//! API tokens (only their SHA-256 is stored).

use modelbus_core::auth::{Principal, Role};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now};
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

pub(super) fn roles_of(s: &str) -> Vec<Role> {
    serde_json::from_str(s).unwrap_or_default()
}

pub(super) fn token_row(r: &AnyRow) -> Result<TokenInfo, RegistryError> {
    Ok(TokenInfo {
        id: r.try_get("id")?,
        principal: r.try_get("principal")?,
        roles: roles_of(&r.try_get::<String, _>("roles")?),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
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
}
