//! API errors: `{"error": {"code", "message", "details"}}`. 4xx explain the problem;
//! 5xx are generic to the client and logged once with their cause.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use scheduler::SubmitError;
use serde::Serialize;
use shared::manifest::ManifestErrors;
use shared::model::{Scope, Unknown};
use shared::release::{Moved, StatusError};
use shared::store::StoreError;
use utoipa::ToSchema;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the bearer token is not valid: unknown, revoked or expired")]
    InvalidToken,
    /// The token made more requests than its rate limit allows.
    #[error("too many requests from this token: try again in {} ms", retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },
    /// A webhook delivery whose signature is missing, wrong, too old or used
    /// before.
    #[error("{0}")]
    BadSignature(String),
    /// The token is valid, but its scope does not allow the request.
    #[error(
        "this token's scope `{scope}` does not allow this: it needs `{needed}` (see `drover token create --scope`)"
    )]
    Forbidden { scope: Scope, needed: Scope },
    /// An unknown deployment, app, release or component; another tenant's is as
    /// absent as one that never existed.
    #[error(transparent)]
    NotFound(#[from] Unknown),
    #[error("invalid app name `{name}`: {reason}")]
    InvalidAppName { name: String, reason: String },
    #[error("the manifest is invalid ({} problems)", .0.len())]
    InvalidManifest(ManifestErrors),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("failed to read the request body: {0}")]
    BadBody(String),
    #[error("invalid `{header}` header: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("invalid `{parameter}` query parameter: {reason}")]
    BadQuery {
        parameter: &'static str,
        reason: String,
    },
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The request does not fit the resource's state (cancelling a finished
    /// deployment, retrying one that did not fail).
    #[error("{0}")]
    Conflict(String),
    /// What the app runs changed since the saved plan was made.
    #[error("{message}")]
    PlanStale { message: String, moved: Vec<Moved> },
    /// The driver could not say what runs (its status step failed).
    #[error("failed to ask the driver what runs: {0}")]
    Driver(#[from] StatusError),
    /// Something on our side; the client learns nothing more.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid_manifest`.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Structured details, or `null`: every manifest problem with its line and
    /// column (an array), what moved since a saved plan (`{"moved": [...]}`).
    pub details: serde_json::Value,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MissingToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::InvalidAppName { .. } => (StatusCode::BAD_REQUEST, "invalid_app_name"),
            ApiError::InvalidManifest(_) => (StatusCode::BAD_REQUEST, "invalid_manifest"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BadHeader { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BadQuery { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PlanStale { .. } => (StatusCode::CONFLICT, "plan_stale"),
            ApiError::Driver(_) => (StatusCode::BAD_GATEWAY, "driver_failed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<QueryRejection> for ApiError {
    /// A query string that does not parse (`?prune=maybe`, `?strategy=fast`).
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadQuery {
            parameter: "query",
            reason: rejection.body_text(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::IdempotencyKeyReused { .. } => {
                ApiError::IdempotencyKeyReused(err.to_string())
            }
            SubmitError::Unknown(unknown) => ApiError::NotFound(unknown),
            SubmitError::NothingObserved | SubmitError::NotRunning { .. } => {
                ApiError::Conflict(err.to_string())
            }
            SubmitError::PlanStale { ref moved, .. } => ApiError::PlanStale {
                message: err.to_string(),
                moved: moved.clone(),
            },
            SubmitError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(Box::new(err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let details = match &self {
            ApiError::InvalidManifest(errors) => {
                serde_json::to_value(errors).unwrap_or(serde_json::Value::Null)
            }
            ApiError::PlanStale { moved, .. } => serde_json::json!({ "moved": moved }),
            _ => serde_json::Value::Null,
        };
        let message = match &self {
            // The whole list, one problem per line, as the CLI prints it.
            ApiError::InvalidManifest(errors) => format!("invalid manifest:\n{errors}"),
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    details,
                },
            }),
        )
            .into_response();
        if let ApiError::RateLimited { retry_after } = &self {
            // Whole seconds, rounded up: a client that waits that long gets in.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::UNAUTHORIZED && !matches!(self, ApiError::BadSignature(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
