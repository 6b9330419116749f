//! Bearer-token authentication: every request names its tenant by a token, which the
//! store knows only by its hash, and each route needs a scope of the token
//! (`Caller<Read>`, `Caller<Deploy>`, `Caller<Admin>`): a token without it is 403.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shared::ids::{TenantId, TokenId};
use shared::model::Scope;
use shared::tokens::hash_token;

use crate::AppState;
use crate::error::ApiError;
use crate::limits::Limited;

/// The scope a route needs, as a type: [`Read`], [`Deploy`] or [`Admin`].
pub(crate) trait Needs {
    const SCOPE: Scope;
}

/// Reads: apps, deployments, releases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Read;

/// Starts, cancels, retries and rolls back deployments; adopts; records updates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deploy;

/// Manages the tenant's tokens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}

impl Needs for Deploy {
    const SCOPE: Scope = Scope::Deploy;
}

impl Needs for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The authenticated tenant of a request, whose token has at least the scope `N`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<N = Read> {
    pub(crate) tenant: TenantId,
    /// The token it presented (for the audit trail).
    pub(crate) token: TokenId,
    scope: Scope,
    needs: PhantomData<N>,
}

impl<N> Caller<N> {
    /// Refuses a token whose scope does not grant `needed`, beyond what the route
    /// itself needs (a request that asks for more than its route's least).
    pub(crate) fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope.grants(needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                scope: self.scope,
                needed,
            })
        }
    }
}

impl<N: Needs + Send + Sync> FromRequestParts<AppState> for Caller<N> {
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
        let grant = state
            .backends
            .store
            .grant(&hash_token(token))
            .await?
            .ok_or(ApiError::InvalidToken)?;
        tracing::Span::current().record("tenant", tracing::field::display(grant.tenant));
        let caller = Caller {
            tenant: grant.tenant,
            token: grant.token,
            scope: grant.scope,
            needs: PhantomData,
        };
        state.rate_limit(Limited::Token(grant.token))?;
        caller.require(N::SCOPE)?;
        Ok(caller)
    }
}
