//! `POST /v1/tokens`, `GET /v1/tokens` and `DELETE /v1/tokens/{id}`: the tenant's
//! API tokens, each with a scope and an optional expiry; the secret is shown once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use shared::ids::TokenId;
use shared::model::{AuditAction, Unknown};
use shared::store::NewToken;
use shared::tokens::{ApiToken, check_token_name};

use crate::AppState;
use crate::audit;
use crate::auth::{Admin, Caller};
use crate::body::{NewTokenBody, TokenBody, TokenCreatedBody, TokenPage};
use crate::error::{ApiError, ErrorBody};
use crate::pages::PageQuery;

/// Creates a token of the caller's tenant; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    request_body(content = NewTokenBody, content_type = "application/json"),
    responses(
        (status = 201, description = "the token, with its secret (shown only this once)", body = TokenCreatedBody),
        (status = 400, description = "an invalid body: an unknown scope or field, a name too long, an expiry in the past", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "tokens",
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TokenCreatedBody>), ApiError> {
    let body = crate::deployments::body_bytes(body)?;
    let asked: NewTokenBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadBody(format!("invalid token request: {err}")))?;
    if let Some(name) = &asked.name {
        check_token_name(name).map_err(|err| ApiError::BadBody(err.to_string()))?;
    }
    if let Some(expires_at) = asked.expires_at
        && expires_at <= Utc::now()
    {
        return Err(ApiError::BadBody(format!(
            "`expires_at` {expires_at} has passed: give a time in the future, or none for a token that does not expire"
        )));
    }
    let secret = ApiToken::generate();
    let token = state
        .backends
        .store
        .create_token(
            caller.tenant,
            &NewToken {
                name: asked.name,
                scope: asked.scope,
                expires_at: asked.expires_at,
                hash: secret.hash(),
            },
        )
        .await?;
    audit::record(&state, &caller, AuditAction::TokenCreated, token.id).await;
    tracing::info!(tenant = %caller.tenant, token = %token.id, scope = %token.scope, "token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreatedBody {
            info: TokenBody::from(&token),
            token: secret.reveal().to_owned(),
        }),
    ))
}

/// The tenant's tokens, newest first, revoked and expired ones too (never their
/// secrets).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of tokens, newest first", body = crate::body::PageBody<crate::body::TokenBody>),
        (status = 400, description = "an invalid cursor, limit or query parameter", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "tokens",
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TokenPage>, ApiError> {
    let Query(query) = query?;
    let page = state
        .backends
        .store
        .tokens(caller.tenant, query.request()?)
        .await?;
    Ok(Json(TokenPage::from(&page)))
}

/// Revokes one of the tenant's tokens: it is refused from now on. Revoking it again
/// changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    params(("id" = String, Path, description = "the token's id")),
    responses(
        (status = 200, description = "the token, revoked", body = TokenBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 404, description = "no such token for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "tokens",
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<String>,
) -> Result<Json<TokenBody>, ApiError> {
    let not_found = || ApiError::NotFound(Unknown::Token(id.clone()));
    let token: TokenId = id.parse().map_err(|_| not_found())?;
    let revoked = state
        .backends
        .store
        .revoke_token(caller.tenant, token)
        .await?
        .ok_or_else(not_found)?;
    audit::record(&state, &caller, AuditAction::TokenRevoked, revoked.id).await;
    tracing::info!(tenant = %caller.tenant, token = %revoked.id, "token revoked");
    Ok(Json(TokenBody::from(&revoked)))
}
