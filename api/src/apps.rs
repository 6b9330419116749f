//! `GET /v1/apps` and `GET /v1/apps/{app}`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use shared::model::Unknown;

use crate::AppState;
use crate::auth::Caller;
use crate::body::{AppDetailBody, AppPage};
use crate::error::{ApiError, ErrorBody};
use crate::pages::AppPageQuery;
use crate::releases::app_name;

/// The tenant's apps, by name.
#[utoipa::path(
    get,
    path = "/v1/apps",
    params(AppPageQuery),
    responses(
        (status = 200, description = "a page of apps, by name", body = crate::body::PageBody<crate::body::AppBody>),
        (status = 400, description = "an invalid cursor, limit or query parameter", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "apps",
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AppPageQuery>, QueryRejection>,
) -> Result<Json<AppPage>, ApiError> {
    let Query(query) = query?;
    let page = state
        .backends
        .store
        .apps(caller.tenant, query.request()?)
        .await?;
    Ok(Json(AppPage::from(&page)))
}

/// One app: its active release, its policies and what it runs now.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}",
    params(("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)),
    responses(
        (status = 200, description = "the app", body = AppDetailBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such app for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "apps",
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<AppDetailBody>, ApiError> {
    let name = app_name(&app)?;
    let store = state.backends.store.as_ref();
    let summary = store
        .app(caller.tenant, &name)
        .await?
        .ok_or(Unknown::App(app))?;
    let current = store.current_state(caller.tenant, &name).await?;
    Ok(Json(AppDetailBody::new(&summary, &current)))
}
