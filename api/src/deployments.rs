//! `POST /v1/apps/{app}/deployments`, `GET /v1/deployments` and `GET /v1/deployments/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use scheduler::Policies;
use scheduler::planner::{self, PlanOptions};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::ids::{DeploymentId, TenantId};
use shared::manifest::{MAX_MANIFEST_BYTES, Manifest};
use shared::model::{AuditAction, ConcurrencyPolicy, DeploymentState, Scope, Strategy, Unknown};
use shared::names::{AppName, ComponentName};
use shared::release::Observed;
use shared::store::{Deployment, DeploymentFilter, Idempotency};
use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use utoipa::IntoParams;

use crate::AppState;
use crate::audit;
use crate::auth::{Caller, Deploy};
use crate::body::{DeploymentBody, DeploymentPage, PlanBody};
use crate::error::{ApiError, ErrorBody};
use crate::follow::Wait;
use crate::pages::page_request;
use crate::progress::{Progress, Seen};
use chrono::{DateTime, Utc};

/// The header that makes a retried request return the first deployment.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// How a deployment request (or a saved plan) is planned, and the policies its
/// deployment runs with.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PlanQuery {
    /// Delete the components that are deployed but no longer in the manifest.
    #[serde(default)]
    pub(crate) prune: bool,
    /// `queue` or `cancel-in-progress`: the app's concurrency policy from now on
    /// (default: the app's current one, at first `queue`).
    #[param(inline)]
    concurrency: Option<ConcurrencyPolicy>,
    /// `rolling`, `recreate`, `blue-green` or `canary`: how this deployment's
    /// deploys roll out, and the app's strategy from now on (default: the app's,
    /// at first `rolling`).
    #[param(inline)]
    strategy: Option<Strategy>,
    /// Should it fail, deploy the release it started from again, automatically.
    #[serde(default)]
    auto_rollback: bool,
    /// Deploy these components only (comma-separated); the others stay as the
    /// active release has them.
    #[param(
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(,[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
    )]
    components: Option<String>,
}

impl PlanQuery {
    pub(crate) fn policies(&self) -> Policies {
        Policies {
            concurrency: self.concurrency,
            strategy: self.strategy,
            auto_rollback: self.auto_rollback,
        }
    }
}

/// Whether a deployment request only asks for the plan.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OnlyPlan {
    /// Return the plan and change nothing.
    #[serde(default)]
    only_plan: bool,
}

/// What a request plans with: the components it selects and what runs, as the
/// driver reports it.
pub(crate) struct Planning {
    only: Option<BTreeSet<ComponentName>>,
    observed: Option<Observed>,
    prune: bool,
}

impl Planning {
    pub(crate) async fn new(
        state: &AppState,
        app: &AppName,
        manifest: &Manifest,
        query: &PlanQuery,
    ) -> Result<Self, ApiError> {
        let only = match &query.components {
            Some(names) => {
                Some(
                    manifest
                        .select(names.split(','))
                        .map_err(|err| ApiError::BadQuery {
                            parameter: "components",
                            reason: err.to_string(),
                        })?,
                )
            }
            None => None,
        };
        Ok(Self {
            only,
            observed: state.observe(app).await?,
            prune: query.prune,
        })
    }

    pub(crate) fn options(&self) -> PlanOptions<'_> {
        PlanOptions {
            prune: self.prune,
            observed: self.observed.as_ref(),
            only: self.only.as_ref(),
        }
    }
}

/// Plans the manifest in the body (YAML or JSON) against the app's active release
/// and starts the deployment.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/deployments",
    params(
        ("app" = String, Path, description = "the app's name (a DNS label)", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key returns the same deployment", min_length = 1, max_length = 255),
        PlanQuery,
        OnlyPlan,
    ),
    request_body(content((shared::manifest::Manifest = "application/yaml"), (shared::manifest::Manifest = "application/json")), description = "the manifest, as YAML or JSON, at most 1 MiB"),
    responses(
        (status = 202, description = "the deployment was created (or, for a retried idempotent request, found)", body = DeploymentBody),
        (status = 200, description = "with `only_plan`: the plan; nothing was written", body = PlanBody),
        (status = 400, description = "invalid app name or manifest; `details` lists every problem", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody),
        (status = 422, description = "the idempotency key was used for another request", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    query: Result<Query<PlanQuery>, QueryRejection>,
    only_plan: Result<Query<OnlyPlan>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (Query(query), Query(only_plan)) = (query?, only_plan?);
    let app = app_name(&app)?;
    let (manifest, body) = manifest_body(body)?;
    let planning = Planning::new(&state, &app, &manifest, &query).await?;
    let options = planning.options();
    let store = state.backends.store.as_ref();

    if only_plan.only_plan {
        // Planning changes nothing: a `read` token may.
        let current = store.current_state(caller.tenant, &app).await?;
        let plan = planner::plan(&app, &manifest, current.components(), &options);
        return Ok((StatusCode::OK, Json(PlanBody::from(&plan))).into_response());
    }

    caller.require(Scope::Deploy)?;
    let idempotency = deploy_idempotency(&headers, &app, &query, &body)?;
    let submitted = scheduler::submit(
        &state.backends,
        caller.tenant,
        &app,
        manifest,
        &options,
        idempotency,
        query.policies(),
    )
    .await?;
    shared::trace::record(submitted.id);
    if !submitted.existing {
        audit::record(
            &state,
            &caller,
            AuditAction::DeploymentStarted,
            submitted.id,
        )
        .await;
        submission_span(submitted.id).in_scope(|| {
            tracing::info!(
                tenant = %caller.tenant,
                app = %app,
                n_tasks = submitted.plan.tasks.len(),
                "deployment submitted"
            );
        });
    }
    let deployment = store
        .deployment(caller.tenant, submitted.id)
        .await?
        .ok_or_else(|| not_found(&submitted.id.to_string()))?;
    Ok(accepted(&state, &deployment))
}

/// The span of what the API says of a deployment it starts (a submission, a
/// retry, a rollback, a plan's apply, a hook's push), filed under its trace and
/// linked to the request's span (in the caller's trace, when it sent one).
pub(crate) fn submission_span(deployment: DeploymentId) -> tracing::Span {
    let span = tracing::info_span!(
        "submit",
        trace_id = %shared::trace::trace_id(deployment),
        %deployment,
    );
    shared::trace::join(&span, deployment);
    shared::trace::link_current(&span);
    span
}

/// Which deployments to list, and which page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this app's.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    app: Option<String>,
    /// Only those in this state.
    #[param(value_type = Option<DeploymentState>, inline)]
    state: Option<String>,
    /// Only those created at or after this time (RFC 3339, e.g.
    /// `2026-12-01T00:00:00Z`).
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
    /// Deployments per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

impl ListQuery {
    fn filter(&self) -> Result<DeploymentFilter, ApiError> {
        let bad =
            |parameter: &'static str, reason: String| ApiError::BadQuery { parameter, reason };
        let app = match &self.app {
            Some(app) => Some(AppName::new(app).map_err(|err| bad("app", err.to_string()))?),
            None => None,
        };
        let state = match &self.state {
            Some(state) => Some(state.parse::<DeploymentState>().map_err(|err| {
                bad(
                    "state",
                    format!("{err}: one of {}", names(DeploymentState::ALL)),
                )
            })?),
            None => None,
        };
        let since = match &self.since {
            Some(since) => Some(
                DateTime::parse_from_rfc3339(since)
                    .map_err(|err| {
                        bad(
                            "since",
                            format!("`{since}` is not an RFC 3339 time ({err}), e.g. 2026-12-01T00:00:00Z"),
                        )
                    })?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        Ok(DeploymentFilter { app, state, since })
    }
}

fn names(states: &[DeploymentState]) -> String {
    states
        .iter()
        .map(|state| state.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tenant's deployments, newest first, of one app, in one state or since a
/// time when asked.
#[utoipa::path(
    get,
    path = "/v1/deployments",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of deployments, newest first", body = crate::body::PageBody<crate::body::DeploymentSummaryBody>),
        (status = 400, description = "an invalid filter, cursor, limit or query parameter", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeploymentPage>, ApiError> {
    let Query(query) = query?;
    let filter = query.filter()?;
    let page = page_request(query.cursor.as_deref(), query.limit)?;
    let page = state
        .backends
        .store
        .deployments(caller.tenant, &filter, page)
        .await?;
    Ok(Json(DeploymentPage::from(&page)))
}

/// The app named in the path; an invalid name is bad input.
pub(crate) fn app_name(app: &str) -> Result<AppName, ApiError> {
    AppName::new(app).map_err(|err| ApiError::InvalidAppName {
        name: app.to_owned(),
        reason: err.to_string(),
    })
}

/// The manifest in a request's body (YAML or JSON, at most 1 MiB), with the body.
pub(crate) fn manifest_body(
    body: Result<Bytes, BytesRejection>,
) -> Result<(Manifest, Bytes), ApiError> {
    let body = body_bytes(body)?;
    let text = std::str::from_utf8(&body)
        .map_err(|err| ApiError::BadBody(format!("the manifest is not UTF-8: {err}")))?;
    let manifest = Manifest::parse(text).map_err(ApiError::InvalidManifest)?;
    Ok((manifest, body))
}

/// A request's body, at most 1 MiB: a larger one, or one that could not be read, is
/// answered in the API's error shape.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body_within(body, MAX_MANIFEST_BYTES)
}

/// A request's body, at most `limit` bytes (the route's body limit).
pub(crate) fn body_within(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge { limit },
        _ => ApiError::BadBody(rejection.body_text()),
    })
}

/// `202 Accepted` with the deployment and where to follow it.
pub(crate) fn accepted(state: &AppState, deployment: &Deployment) -> Response {
    let location = format!("/v1/deployments/{}", deployment.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(wire(state, deployment)),
    )
        .into_response()
}

/// The idempotency key of a deployment request, with a hash of everything that
/// makes the request what it is.
fn deploy_idempotency(
    headers: &HeaderMap,
    app: &AppName,
    query: &PlanQuery,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let flags = [0, u8::from(query.prune), u8::from(query.auto_rollback)];
    let concurrency = query.concurrency.map_or("", |policy| policy.as_str());
    let strategy = query.strategy.map_or("", |strategy| strategy.as_str());
    let components = query.components.as_deref().unwrap_or_default();
    idempotency(
        headers,
        &[
            app.as_str().as_bytes(),
            &flags,
            concurrency.as_bytes(),
            &[0],
            strategy.as_bytes(),
            &[0],
            components.as_bytes(),
            &[0],
            body,
        ],
    )
}

/// The request's idempotency key, if it has one, with a hash of `request` (the
/// parts that make the request what it is), so that the key reused for another
/// request is caught.
pub(crate) fn idempotency(
    headers: &HeaderMap,
    request: &[&[u8]],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = |reason: &str| ApiError::BadHeader {
        header: "Idempotency-Key",
        reason: reason.to_owned(),
    };
    let key = value
        .to_str()
        .map_err(|_| bad("must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad("must be 1 to 255 characters long"));
    }
    let mut hasher = Sha256::new();
    for part in request {
        hasher.update(part);
    }
    let request_hash = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Some(Idempotency {
        key: key.to_owned(),
        request_hash,
    }))
}

/// A deployment with its tasks.
#[utoipa::path(
    get,
    path = "/v1/deployments/{id}",
    params(("id" = String, Path, description = "the deployment's id")),
    responses(
        (status = 200, description = "the deployment", body = DeploymentBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such deployment for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentBody>, ApiError> {
    let deployment = load(&state, caller.tenant, path_id(&id)?).await?;
    Ok(Json(wire(&state, &deployment)))
}

/// The deployment's progress as Server-Sent Events, until it ends: `task` events
/// (`{"task", "state", "attempt"}`: every milestone of each task's life), then one
/// `end` event (`{"state", "release"}`), then the stream closes. Each event's id
/// says what was seen up to it: reconnect with `Last-Event-ID` to be sent what
/// followed, and nothing twice.
#[utoipa::path(
    get,
    path = "/v1/deployments/{id}/events",
    params(
        ("id" = String, Path, description = "the deployment's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received: what follows it is sent"),
    ),
    responses(
        (status = 200, description = "the events, as `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = 400, description = "a `Last-Event-ID` that is not an id of this deployment's events", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such deployment for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = path_id(&id)?;
    let wait = state.followers.wait();
    let deployment = load(&state, caller.tenant, id).await?;
    let n_tasks = deployment.tasks.len();
    let mut seen = match headers.get(LAST_EVENT_ID) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| Seen::parse(text, n_tasks))
            .ok_or_else(|| ApiError::BadHeader {
                header: "Last-Event-ID",
                reason: "not the id of an event of this deployment: pass the `id` of the last event received".to_owned(),
            })?,
        None => Seen::nothing(n_tasks),
    };
    let pending = seen.catch_up(&deployment).into();
    let follower = Follower {
        state,
        tenant: caller.tenant,
        id,
        seen,
        pending,
        wait,
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The header a reconnecting SSE client sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// One follower of a deployment: what it has seen, and the events it is yet to be
/// sent.
struct Follower {
    state: AppState,
    tenant: TenantId,
    id: DeploymentId,
    seen: Seen,
    pending: VecDeque<(Progress, String)>,
    wait: Wait,
}

impl Follower {
    /// The next event; `None` once the end was sent (or the deployment cannot be
    /// read: the client reconnects, and is sent what it missed).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some((progress, id)) = self.pending.pop_front() {
                return match SseEvent::default()
                    .event(progress.name())
                    .id(id)
                    .json_data(&progress)
                {
                    Ok(event) => Some(event),
                    Err(err) => {
                        tracing::warn!(error = %err, deployment = %self.id, "failed to write an event");
                        None
                    }
                };
            }
            if self.seen.ended() {
                return None;
            }
            self.wait.changed(self.id).await;
            match self
                .state
                .backends
                .store
                .deployment(self.tenant, self.id)
                .await
            {
                Ok(Some(deployment)) => self.pending.extend(self.seen.catch_up(&deployment)),
                Ok(None) => return None,
                Err(err) => {
                    tracing::warn!(error = %err, deployment = %self.id, "failed to follow a deployment; the client will reconnect");
                    return None;
                }
            }
        }
    }
}

/// A deployment not found; another tenant's is as absent as one that never existed.
pub(crate) fn not_found(id: &str) -> ApiError {
    Unknown::Deployment(id.to_owned()).into()
}

/// The deployment id in a path: one that does not parse names no deployment.
fn path_id(id: &str) -> Result<DeploymentId, ApiError> {
    id.parse().map_err(|_| not_found(id))
}

/// The caller's deployment.
pub(crate) async fn load(
    state: &AppState,
    tenant: TenantId,
    id: DeploymentId,
) -> Result<Deployment, ApiError> {
    shared::trace::record(id);
    state
        .backends
        .store
        .deployment(tenant, id)
        .await?
        .ok_or_else(|| not_found(&id.to_string()))
}

/// Cancels a deployment: its tasks that have not started are cancelled at once, its
/// running steps get SIGTERM (SIGKILL after the driver's grace period), and it ends
/// `cancelled` without a release once they have stopped.
#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/cancel",
    params(("id" = String, Path, description = "the deployment's id")),
    responses(
        (status = 202, description = "cancelled, or being cancelled while its running steps stop", body = DeploymentBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such deployment for this tenant", body = ErrorBody),
        (status = 409, description = "the deployment has already ended", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeploymentBody>), ApiError> {
    let deployment_id = path_id(&id)?;
    let cancellation = state
        .backends
        .store
        .cancel_deployment(caller.tenant, deployment_id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if let Some(refusal) = cancellation.refusal(deployment_id) {
        return Err(ApiError::Conflict(refusal));
    }
    state
        .backends
        .announce(&cancellation.events(caller.tenant, deployment_id))
        .await;
    audit::record(
        &state,
        &caller,
        AuditAction::DeploymentCancelled,
        deployment_id,
    )
    .await;
    tracing::info!(deployment = %deployment_id, "deployment cancelled");
    let deployment = load(&state, caller.tenant, deployment_id).await?;
    Ok((StatusCode::ACCEPTED, Json(wire(&state, &deployment))))
}

/// Runs a failed deployment's failed and skipped tasks again (a failed one as its
/// next attempt); its succeeded tasks stay done.
#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/retry",
    params(("id" = String, Path, description = "the deployment's id")),
    responses(
        (status = 202, description = "reopened: it runs again", body = DeploymentBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such deployment for this tenant", body = ErrorBody),
        (status = 409, description = "it did not fail, or its app has a newer release since", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller<Deploy>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeploymentBody>), ApiError> {
    let deployment_id = path_id(&id)?;
    let retry = state
        .backends
        .store
        .retry_deployment(caller.tenant, deployment_id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if let Some(refusal) = retry.refusal(deployment_id) {
        return Err(ApiError::Conflict(refusal));
    }
    audit::record(
        &state,
        &caller,
        AuditAction::DeploymentRetried,
        deployment_id,
    )
    .await;
    submission_span(deployment_id).in_scope(|| tracing::info!("deployment retried"));
    let deployment = load(&state, caller.tenant, deployment_id).await?;
    Ok((StatusCode::ACCEPTED, Json(wire(&state, &deployment))))
}

/// The deployment's wire form, with waiting reasons under the fleet's tenant limit.
pub(crate) fn wire(state: &AppState, deployment: &Deployment) -> DeploymentBody {
    let mut body = DeploymentBody::from(deployment);
    for task in &mut body.tasks {
        task.waiting = task
            .waiting
            .take()
            .map(|waiting| waiting.under_tenant_limit(state.tenant_limit));
    }
    body
}
