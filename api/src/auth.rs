//! Bearer-token authentication: every request names its tenant by a token, which the
//! store knows only by its hash.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shared::ids::TenantId;
use shared::tokens::hash_token;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) tenant: TenantId,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::MissingToken)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::MissingToken)?;
        let tenant = state
            .backends
            .store
            .tenant_by_token(&hash_token(token))
            .await?
            .ok_or(ApiError::InvalidToken)?;
        tracing::Span::current().record("tenant", tracing::field::display(tenant));
        Ok(Caller { tenant })
    }
}
