//! Bearer tokens on the model routes (`serving.require_token`), checked with
//! the registry and cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use modelbus_core::Context;

use crate::*;

/// Checks bearer tokens with the registry when `serving.require_token` is on,
/// remembering accepted ones for `serving.token_cache`.
pub struct TokenCheck {
    registry: modelbus_proto::Client,
    ttl: std::time::Duration,
    accepted: std::sync::Mutex<HashMap<String, Instant>>,
}

impl TokenCheck {
    /// A check against the registry at `ctx`'s configured gRPC address.
    pub fn new(ctx: &Context) -> Result<Self, ServingError> {
        let registry = modelbus_proto::connect_lazy(
            &ctx.config.registry_grpc_url(),
            ctx.config
                .service_token_source(modelbus_core::auth::ServiceIdentity::Serving),
        )
        .map_err(|e| ServingError::Fatal(format!("registry URL: {e}")))?;
        Ok(Self {
            registry,
            ttl: ctx.config.serving.token_cache,
            accepted: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Whether `header` carries a token of a principal allowed to read.
    async fn check(&self, header: Option<&str>) -> Result<(), Response> {
        let Some(token) = header.and_then(modelbus_core::auth::bearer) else {
            metrics::counter!("modelbus_auth_failures_total", "reason" => "missing").increment(1);
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <token>` (serving.require_token is on)",
            ));
        };
        let key = modelbus_core::ids::Sha256Digest::of(token.as_bytes()).to_hex();
        if let Ok(m) = self.accepted.lock()
            && m.get(&key).is_some_and(|at| at.elapsed() < self.ttl)
        {
            return Ok(());
        }
        let p = self
            .registry
            .clone()
            .authenticate(modelbus_proto::registry::v1::AuthenticateRequest {
                token: token.to_string(),
            })
            .await
            .map_err(|st| match st.code() {
                tonic::Code::Unauthenticated => error(StatusCode::UNAUTHORIZED, st.message()),
                tonic::Code::PermissionDenied => error(StatusCode::FORBIDDEN, st.message()),
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the token with the registry: {}", st.message()),
                ),
            })?
            .into_inner();
        let principal = modelbus_core::auth::Principal {
            name: p.name,
            roles: p.roles.iter().filter_map(|r| r.parse().ok()).collect(),
            token_id: p.token_id,
        };
        principal
            .require(modelbus_core::auth::Permission::Read)
            .map_err(|m| error(StatusCode::FORBIDDEN, m))?;
        if let Ok(mut m) = self.accepted.lock() {
            if m.len() > 10_000 {
                m.retain(|_, at| at.elapsed() < self.ttl);
            }
            m.insert(key, Instant::now());
        }
        Ok(())
    }
}

pub(crate) async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match check.check(header.as_deref()).await {
        Ok(()) => next.run(req).await,
        Err(resp) => resp,
    }
}
