//! One error vocabulary for both transports: each code maps to a gRPC status and
//! an HTTP status. Client errors say precisely what was wrong; internal errors are
//! logged once with their cause and reach the caller as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No valid bearer token came with the request.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's principal lacks the role the operation needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// Storage or another dependency failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// Short code shared by both transports.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "not_found",
            RegistryError::InvalidArgument(_) => "invalid_argument",
            RegistryError::FailedPrecondition(_) => "failed_precondition",
            RegistryError::Unauthenticated(_) => "unauthenticated",
            RegistryError::PermissionDenied(_) => "permission_denied",
            RegistryError::Internal(_) => "internal",
        }
    }

    fn public_message(&self) -> String {
        match self {
            RegistryError::Internal(cause) => {
                tracing::error!(%cause, "internal registry error");
                "internal error; see the registry's log".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::Internal(format!("database: {e}"))
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(e: RegistryError) -> Self {
        let msg = e.public_message();
        match e {
            RegistryError::NotFound(_) => tonic::Status::not_found(msg),
            RegistryError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            RegistryError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            RegistryError::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            RegistryError::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            RegistryError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = match &self {
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            RegistryError::FailedPrecondition(_) => StatusCode::CONFLICT,
            RegistryError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            RegistryError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.public_message() } });
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme to use.
            return (
                status,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"modelbus\"",
                )],
                Json(body),
            )
                .into_response();
        }
        (status, Json(body)).into_response()
    }
}
