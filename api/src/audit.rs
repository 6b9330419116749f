//! The audit trail: `GET /v1/audit`, and [`record`], which the routes that change
//! something call once it is done.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use shared::ids::{TenantId, TokenId};
use shared::model::AuditAction;
use shared::store::NewAuditEntry;

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::body::AuditPage;
use crate::error::{ApiError, ErrorBody};
use crate::pages::PageQuery;

/// Notes in the tenant's audit trail that the caller's token did `action` to
/// `target`. It is written after the change it records has committed: should
/// writing it fail, the change stands and the failure is logged.
pub(crate) async fn record<N>(
    state: &AppState,
    caller: &Caller<N>,
    action: AuditAction,
    target: impl ToString,
) {
    record_for(state, caller.tenant, Some(caller.token), action, target).await;
}

/// Like [`record`], for what `tenant` did with `token`, or without one (a signed
/// webhook delivery).
pub(crate) async fn record_for(
    state: &AppState,
    tenant: TenantId,
    token: Option<TokenId>,
    action: AuditAction,
    target: impl ToString,
) {
    let entry = NewAuditEntry {
        tenant,
        token,
        action,
        target: target.to_string(),
    };
    if let Err(err) = state.backends.store.record_audit(&entry).await {
        tracing::warn!(error = %err, action = %action, target = %entry.target, "failed to write the audit trail");
    }
}

/// Who did what through the API, and when, newest first: deployments started,
/// cancelled and retried, rollbacks, adoptions, external updates, tokens made and
/// revoked.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of the audit trail, newest first", body = crate::body::PageBody<crate::body::AuditEntryBody>),
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
) -> Result<Json<AuditPage>, ApiError> {
    let Query(query) = query?;
    let page = state
        .backends
        .store
        .audit(caller.tenant, query.request()?)
        .await?;
    Ok(Json(AuditPage::from(&page)))
}
