//! Saved plans: `POST /v1/apps/{app}/plans` keeps a plan, `GET /v1/plans/{id}`
//! shows it, `POST /v1/plans/{id}/apply` runs exactly it, unless the app changed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::ids::PlanId;
use shared::model::{AuditAction, Unknown};

use crate::AppState;
use crate::audit;
use crate::auth::{Caller, Deploy};
use crate::body::{DeploymentBody, SavedPlanBody};
use crate::deployments::{
    PlanQuery, Planning, accepted, app_name, load, manifest_body, submission_span,
};
use crate::error::{ApiError, ErrorBody};

/// Plans the manifest in the body against what the app runs, as a deployment
/// request would, and keeps the plan; nothing is deployed. Apply it with
/// `POST /v1/plans/{id}/apply`.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/plans",
    params(
        ("app" = String, Path, description = "the app's name (a DNS label)", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        PlanQuery,
    ),
    request_body(content((shared::manifest::Manifest = "application/yaml"), (shared::manifest::Manifest = "application/json")), description = "the manifest, as YAML or JSON, at most 1 MiB"),
    responses(
        (status = 201, description = "the plan was saved", body = SavedPlanBody),
        (status = 400, description = "invalid app name, manifest or query", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody),
        (status = 502, description = "the driver's status step failed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path(app): Path<String>,
    query: Result<Query<PlanQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let app = app_name(&app)?;
    let (manifest, _) = manifest_body(body)?;
    let planning = Planning::new(&state, &app, &manifest, &query).await?;
    let saved = scheduler::save_plan(
        state.backends.store.as_ref(),
        caller.tenant,
        &app,
        manifest,
        &planning.options(),
        query.policies(),
    )
    .await?;
    tracing::info!(tenant = %caller.tenant, app = %app, plan = %saved.id, "plan saved");
    let location = format!("/v1/plans/{}", saved.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SavedPlanBody::from(&saved)),
    )
        .into_response())
}

/// A saved plan.
#[utoipa::path(
    get,
    path = "/v1/plans/{id}",
    params(("id" = String, Path, description = "the plan's id")),
    responses(
        (status = 200, description = "the plan", body = SavedPlanBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "no such plan for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SavedPlanBody>, ApiError> {
    let id = plan_id(&id)?;
    let saved = state
        .backends
        .store
        .saved_plan(caller.tenant, id)
        .await?
        .ok_or_else(|| Unknown::Plan(id.to_string()))?;
    Ok(Json(SavedPlanBody::from(&saved)))
}

/// Starts the deployment of a saved plan: exactly its tasks, with its policies.
/// Refused with 409 when what the app runs changed since the plan was made; the
/// details name each component that moved. Applying a plan again answers with
/// the deployment it started the first time.
#[utoipa::path(
    post,
    path = "/v1/plans/{id}/apply",
    params(("id" = String, Path, description = "the plan's id")),
    responses(
        (status = 202, description = "the deployment was created (or, applied before, found)", body = DeploymentBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such plan for this tenant", body = ErrorBody),
        (status = 409, description = "the app changed since the plan was made; `details.moved` lists each component that moved", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn apply(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = plan_id(&id)?;
    let submitted = scheduler::apply_plan(&state.backends, caller.tenant, id).await?;
    if !submitted.existing {
        audit::record(&state, &caller, AuditAction::PlanApplied, submitted.id).await;
        submission_span(submitted.id).in_scope(|| {
            tracing::info!(tenant = %caller.tenant, plan = %id, "plan applied");
        });
    }
    let deployment = load(&state, caller.tenant, submitted.id).await?;
    Ok(accepted(&state, &deployment))
}

/// The plan id in a path: one that does not parse names no plan.
fn plan_id(id: &str) -> Result<PlanId, ApiError> {
    id.parse().map_err(|_| Unknown::Plan(id.to_owned()).into())
}
