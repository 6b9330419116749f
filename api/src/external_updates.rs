//! `POST /v1/apps/{app}/components/{component}/external-updates` (DESIGN.md 5.5).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use scheduler::ExternalOutcome;
use shared::model::{AuditAction, Unknown};
use shared::names::{AppName, ComponentName};
use shared::release::ExternalUpdate;

use crate::AppState;
use crate::audit;
use crate::auth::{Caller, Deploy};
use crate::body::{ExternalUpdateAnswer, ExternalUpdateRequest};
use crate::deployments::wire;
use crate::error::{ApiError, ErrorBody};

/// Records a new artifact of a component, announced from outside, as the app's
/// next release; when the component declares `on-update: {deploy: true}`, a
/// deployment of that component alone deploys it instead (and its success is the
/// release). The same update again records nothing more.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/components/{component}/external-updates",
    params(
        ("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("component" = String, Path, description = "the component's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
    ),
    request_body(content = ExternalUpdateRequest, description = "the new artifact"),
    responses(
        (status = 201, description = "recorded as a release, not deployed", body = ExternalUpdateAnswer),
        (status = 202, description = "recorded; a deployment of the component deploys it", body = ExternalUpdateAnswer),
        (status = 400, description = "an invalid body, artifact, version or sha", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such app or component for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "releases",
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path((app, component)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = crate::deployments::body_bytes(body)?;
    let not_found = || Unknown::Component {
        app: app.clone(),
        component: component.clone(),
    };
    let app_name = AppName::new(&app).map_err(|_| not_found())?;
    let component_name = ComponentName::new(&component).map_err(|_| not_found())?;
    let request: ExternalUpdateRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadBody(format!(
            "expected JSON like {{\"artifact\": \"registry.example/api@sha256:…\", \"version\": \"1.4.2\"}}: {err}"
        ))
    })?;
    let update = ExternalUpdate::new(
        component_name,
        request.artifact,
        request.version,
        request.sha,
    )
    .map_err(|err| ApiError::BadBody(err.to_string()))?;
    let store = state.backends.store.as_ref();
    let outcome = scheduler::external_update(store, caller.tenant, &app_name, update).await?;
    let target = format!("{app}/{component}");
    audit::record(&state, &caller, AuditAction::ExternalUpdate, target).await;
    Ok(match outcome {
        ExternalOutcome::Recorded { release, duplicate } => (
            StatusCode::CREATED,
            Json(ExternalUpdateAnswer {
                message: "recorded, not deployed".to_owned(),
                release: Some(release),
                deployment: None,
                duplicate,
            }),
        )
            .into_response(),
        ExternalOutcome::Deploying {
            submitted,
            duplicate,
        } => {
            let deployment = store
                .deployment(caller.tenant, submitted.id)
                .await?
                .ok_or_else(|| Unknown::Deployment(submitted.id.to_string()))?;
            (
                StatusCode::ACCEPTED,
                Json(ExternalUpdateAnswer {
                    message: "recorded, deploying".to_owned(),
                    release: None,
                    deployment: Some(wire(&state, &deployment)),
                    duplicate,
                }),
            )
                .into_response()
        }
    })
}
