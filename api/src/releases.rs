//! `GET /v1/apps/{app}/releases` and `GET /v1/apps/{app}/releases/{version}`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use shared::model::{AuditAction, Unknown};
use shared::names::AppName;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::audit;
use crate::auth::{Caller, Deploy};
use crate::body::{AdoptionBody, DeploymentBody, ReleaseBody, ReleasePage};
use crate::deployments::{self, accepted, submission_span};
use crate::error::{ApiError, ErrorBody};
use crate::pages::ReleasePageQuery;

pub(crate) fn app_name(app: &str) -> Result<AppName, ApiError> {
    // An invalid name cannot be anyone's app.
    AppName::new(app).map_err(|_| Unknown::App(app.to_owned()).into())
}

/// The app's releases, newest first.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}/releases",
    params(("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63), ReleasePageQuery),
    responses(
        (status = 200, description = "a page of releases, newest first", body = crate::body::PageBody<crate::body::ReleaseBody>),
        (status = 400, description = "an invalid cursor or limit", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such app for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "releases",
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    query: Result<Query<ReleasePageQuery>, QueryRejection>,
) -> Result<Json<ReleasePage>, ApiError> {
    let Query(query) = query?;
    let name = app_name(&app)?;
    let page = query.request()?;
    let page = state
        .backends
        .store
        .releases(caller.tenant, &name, page)
        .await?
        .ok_or(Unknown::App(app))?;
    Ok(Json(ReleasePage::from(&page)))
}

/// Deploys a release again: every component with the artifact the release holds,
/// nothing built. Once it succeeds it is a new release with that one's content, and
/// the deployment it replaced is `rolled_back`.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/releases/{version}/rollback",
    params(
        ("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("version" = u32, Path, description = "the release to go back to"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key returns the same rollback", min_length = 1, max_length = 255),
    ),
    responses(
        (status = 202, description = "the rollback deployment (or, for a retried idempotent request, the one it started)", body = DeploymentBody),
        (status = 400, description = "an invalid `Idempotency-Key` header", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such app or release for this tenant", body = ErrorBody),
        (status = 422, description = "the idempotency key was used for another request", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "releases",
)]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path((app, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || Unknown::Release {
        app: app.clone(),
        version: version.clone(),
    };
    let name = app_name(&app)?;
    let number: u32 = version.parse().map_err(|_| not_found())?;
    let idempotency = deployments::idempotency(
        &headers,
        &[
            b"rollback\0",
            name.as_str().as_bytes(),
            &number.to_be_bytes(),
        ],
    )?;
    let store = state.backends.store.as_ref();
    let submitted =
        scheduler::submit_rollback(store, caller.tenant, &name, number, idempotency).await?;
    if !submitted.existing {
        audit::record(&state, &caller, AuditAction::RolledBack, submitted.id).await;
    }
    submission_span(submitted.id).in_scope(|| {
        tracing::info!(tenant = %caller.tenant, app = %name, to = number, "rollback submitted");
    });
    let deployment = store
        .deployment(caller.tenant, submitted.id)
        .await?
        .ok_or_else(not_found)?;
    Ok(accepted(&state, &deployment))
}

/// One release.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}/releases/{version}",
    params(
        ("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("version" = u32, Path, description = "the release's version"),
    ),
    responses(
        (status = 200, description = "the release", body = ReleaseBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such app or release for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "releases",
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<ReleaseBody>, ApiError> {
    let not_found = || Unknown::Release {
        app: app.clone(),
        version: version.clone(),
    };
    let name = app_name(&app)?;
    let number: u32 = version.parse().map_err(|_| not_found())?;
    let release = state
        .backends
        .store
        .find_release(caller.tenant, &name, number)
        .await??;
    Ok(Json(ReleaseBody::from(&release)))
}

/// Records what already runs as the app's release 1, deploying nothing: every
/// component of the manifest in the body, with the artifact and run spec the
/// driver's status step reports. An app with releases already keeps them: the
/// answer is its release 1, `existing`.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/adopt",
    params(("app" = String, Path, description = "the app's name (a DNS label)", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)),
    request_body(content((shared::manifest::Manifest = "application/yaml"), (shared::manifest::Manifest = "application/json")), description = "the manifest that describes what runs, as YAML or JSON, at most 1 MiB"),
    responses(
        (status = 201, description = "recorded as release 1", body = AdoptionBody),
        (status = 200, description = "the app had releases already; its release 1", body = AdoptionBody),
        (status = 400, description = "invalid app name or manifest", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 409, description = "the driver cannot tell what runs, or a component is not running", body = ErrorBody),
        (status = 502, description = "the driver's status step failed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "releases",
)]
pub(crate) async fn adopt(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let app = deployments::app_name(&app)?;
    let (manifest, _) = deployments::manifest_body(body)?;
    let observed = state.observe(&app).await?;
    let store = state.backends.store.as_ref();
    let adoption = scheduler::adopt(store, caller.tenant, &app, &manifest, observed).await?;
    if !adoption.existing {
        audit::record(&state, &caller, AuditAction::Adopted, &app).await;
        tracing::info!(tenant = %caller.tenant, app = %app, "app adopted as release 1");
    }
    let status = if adoption.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(AdoptionBody::from(&adoption))).into_response())
}
