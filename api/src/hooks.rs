//! Webhooks. The routes a Git host or a registry calls carry no bearer token but a
//! signature: `POST /v1/hooks/github/{app}` (GitHub's `X-Hub-Signature-256`; a
//! `push` to the hook's branch rebuilds and deploys the components built from the
//! pushed repository, at the pushed commit) and `POST /v1/hooks/registry/{app}`
//! (signed with a timestamp; an image push is an external update of the
//! components that run the image). Their bodies may be 25 MiB. A delivery's answer
//! is kept 72 hours: its redelivery gets the same answer and starts nothing.
//!
//! The routes that manage hooks (`/v1/apps/{app}/hooks`, `/v1/hooks`,
//! `/v1/hooks/{id}…`) need a token: `read` to list them, `admin` to change them.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use scheduler::planner::PlanOptions;
use scheduler::{ExternalOutcome, Policies};
use serde::Deserialize;
use shared::hooks::{
    DEFAULT_BRANCH, HookError, HookSecret, MAX_SIGNATURE_AGE_SECS, hook_branch, image_repository,
    repository_key, verify,
};
use shared::ids::HookId;
use shared::manifest::Build;
use shared::model::{AuditAction, HookKind, Unknown};
use shared::names::{AppName, ComponentName};
use shared::release::{ExternalUpdate, manifest_of};
use shared::store::{Hook, HookAnswer, Idempotency, NewHook, Rotation};

use crate::AppState;
use crate::audit;
use crate::auth::{Admin, Caller};
use crate::body::{HookBody, HookPage, HookReplyBody, HookSecretBody, NewHookBody};
use crate::deployments::{app_name, body_bytes, body_within, submission_span};
use crate::error::{ApiError, ErrorBody};
use crate::limits::Limited;
use crate::pages::PageQuery;

/// The largest webhook delivery accepted (GitHub's own limit is 25 MB).
pub(crate) const HOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;
/// How long a delivery's answer is kept, to answer its redelivery the same.
const ANSWERS_KEPT: Duration = Duration::from_secs(72 * 3600);
/// The longest delivery id accepted (GitHub's are UUIDs).
const MAX_DELIVERY_ID: usize = 128;
/// The header that marks the answer to a redelivery.
const REDELIVERY: &str = "x-drover-redelivery";

/// Makes a webhook of an app; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/hooks",
    params(("app" = String, Path, description = "the app's name (a DNS label)", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)),
    request_body(content = NewHookBody, content_type = "application/json"),
    responses(
        (status = 201, description = "the hook, with its secret (shown only this once)", body = HookSecretBody),
        (status = 400, description = "an invalid app name, kind, branch or body", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "hooks",
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<HookSecretBody>), ApiError> {
    let app = app_name(&app)?;
    let body = body_bytes(body)?;
    let asked: NewHookBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadBody(format!(
            "expected JSON like {{\"kind\": \"github\", \"branch\": \"main\"}}: {err}"
        ))
    })?;
    let branch =
        hook_branch(asked.kind, asked.branch).map_err(|err| ApiError::BadBody(err.to_string()))?;
    let secret = HookSecret::generate();
    let hook = state
        .backends
        .store
        .create_hook(
            caller.tenant,
            &NewHook {
                app,
                kind: asked.kind,
                branch,
                secret: secret.reveal().to_owned(),
            },
        )
        .await?;
    audit::record(&state, &caller, AuditAction::HookCreated, hook.id).await;
    tracing::info!(tenant = %caller.tenant, hook = %hook.id, app = %hook.app, kind = %hook.kind, "hook created");
    Ok((
        StatusCode::CREATED,
        Json(HookSecretBody {
            hook: HookBody::from(&hook),
            secret: secret.reveal().to_owned(),
        }),
    ))
}

/// The tenant's webhooks, newest first (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/hooks",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of hooks, newest first", body = crate::body::PageBody<crate::body::HookBody>),
        (status = 400, description = "an invalid cursor, limit or query parameter", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "hooks",
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<HookPage>, ApiError> {
    let Query(query) = query?;
    let page = state
        .backends
        .store
        .hooks(caller.tenant, query.request()?)
        .await?;
    Ok(Json(HookPage::from(&page)))
}

/// Rotates a hook's secret: a new one is made, and the one before stays valid
/// beside it until the rotation is finished (`DELETE
/// /v1/hooks/{id}/previous-secret`), so that the caller can be given the new one
/// without a delivery refused in between.
#[utoipa::path(
    post,
    path = "/v1/hooks/{id}/rotate",
    params(("id" = String, Path, description = "the hook's id")),
    responses(
        (status = 200, description = "the hook, with its new secret (shown only this once)", body = HookSecretBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 404, description = "no such hook for this tenant", body = ErrorBody),
        (status = 409, description = "a rotation is under way: finish it first", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "hooks",
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<String>,
) -> Result<Json<HookSecretBody>, ApiError> {
    let id = hook_id(&id)?;
    let secret = HookSecret::generate();
    let rotation = state
        .backends
        .store
        .rotate_hook_secret(caller.tenant, id, secret.reveal())
        .await?
        .ok_or_else(|| Unknown::Hook(id.to_string()))?;
    match rotation {
        Rotation::Rotated(hook) => {
            audit::record(&state, &caller, AuditAction::HookRotated, id).await;
            Ok(Json(HookSecretBody {
                hook: HookBody::from(&hook),
                secret: secret.reveal().to_owned(),
            }))
        }
        Rotation::Rotating(_) => Err(ApiError::Conflict(HookError::Rotating(id).to_string())),
    }
}

/// Finishes a rotation: only the newest secret stays valid.
#[utoipa::path(
    delete,
    path = "/v1/hooks/{id}/previous-secret",
    params(("id" = String, Path, description = "the hook's id")),
    responses(
        (status = 200, description = "the hook, with one valid secret", body = HookBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 404, description = "no such hook for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "hooks",
)]
pub(crate) async fn finish_rotation(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<String>,
) -> Result<Json<HookBody>, ApiError> {
    let id = hook_id(&id)?;
    let hook = state
        .backends
        .store
        .finish_hook_rotation(caller.tenant, id)
        .await?
        .ok_or_else(|| Unknown::Hook(id.to_string()))?;
    audit::record(&state, &caller, AuditAction::HookRotated, id).await;
    Ok(Json(HookBody::from(&hook)))
}

/// Removes a hook: its deliveries are refused from now on.
#[utoipa::path(
    delete,
    path = "/v1/hooks/{id}",
    params(("id" = String, Path, description = "the hook's id")),
    responses(
        (status = 200, description = "the hook, removed", body = HookBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope is not `admin`", body = ErrorBody),
        (status = 404, description = "no such hook for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "hooks",
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<String>,
) -> Result<Json<HookBody>, ApiError> {
    let id = hook_id(&id)?;
    let hook = state
        .backends
        .store
        .delete_hook(caller.tenant, id)
        .await?
        .ok_or_else(|| Unknown::Hook(id.to_string()))?;
    audit::record(&state, &caller, AuditAction::HookDeleted, id).await;
    Ok(Json(HookBody::from(&hook)))
}

/// The hook id in a path: one that does not parse names no hook.
fn hook_id(id: &str) -> Result<HookId, ApiError> {
    id.parse().map_err(|_| Unknown::Hook(id.to_owned()).into())
}

/// A GitHub delivery. Signed with the hook's secret (either one, during a
/// rotation) in `X-Hub-Signature-256`; `ping` is answered `pong`; a `push` to the
/// hook's branch is a partial deployment of what the app runs: the components
/// built from the pushed repository (and those reusing their builds), built at
/// the pushed commit (the build's ref). Other branches, repositories and events
/// are answered 202 with the reason and start nothing.
#[utoipa::path(
    post,
    path = "/v1/hooks/github/{app}",
    params(
        ("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body under the hook's secret"),
        ("X-GitHub-Event" = String, Header, description = "`push`, `ping`, …"),
        ("X-GitHub-Delivery" = String, Header, description = "the delivery's id: a redelivery gets the first answer"),
    ),
    request_body(content = String, content_type = "application/json", description = "GitHub's event payload, at most 25 MiB"),
    responses(
        (status = 200, description = "`ping` answered", body = HookReplyBody),
        (status = 202, description = "a deployment started, or nothing (the reason in `message`)", body = HookReplyBody),
        (status = 400, description = "a missing event or delivery header, or a payload that is not GitHub's", body = ErrorBody),
        (status = 401, description = "a missing or wrong signature (or no such hook)", body = ErrorBody),
        (status = 413, description = "the body is larger than 25 MiB", body = ErrorBody),
        (status = 429, description = "the hook's deliveries are over the rate limit: try again after `Retry-After` seconds", body = ErrorBody),
    ),
    tag = "hooks",
)]
pub(crate) async fn github(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_within(body, HOOK_BODY_LIMIT)?;
    let signature = header(&headers, "x-hub-signature-256").ok_or_else(|| {
        ApiError::BadSignature(
            "missing `X-Hub-Signature-256`: set the hook's secret in GitHub's webhook settings"
                .to_owned(),
        )
    })?;
    let hook = signed_by(&state, HookKind::Github, &app, |secret| {
        verify(secret, &[&body], signature)
    })
    .await?;
    let event = header(&headers, "x-github-event").ok_or_else(|| ApiError::BadHeader {
        header: "X-GitHub-Event",
        reason: "missing: GitHub names the event in it".to_owned(),
    })?;
    let delivery = delivery_id(header(&headers, "x-github-delivery"))?;
    if let Some(answer) = state
        .backends
        .store
        .hook_answer(hook.info.id, delivery, ANSWERS_KEPT)
        .await?
    {
        return Ok(replay(&answer));
    }
    // The same signed body under another delivery id is a replay, not a
    // redelivery: GitHub redelivers under the first id.
    let signed = format!("sig:{signature}");
    if state
        .backends
        .store
        .hook_answer(hook.info.id, &signed, ANSWERS_KEPT)
        .await?
        .is_some()
    {
        return Err(ApiError::BadSignature(
            "this signature was used before, by another delivery: a replayed delivery is refused"
                .to_owned(),
        ));
    }
    let (status, reply) = match event {
        "ping" => (
            StatusCode::OK,
            reply(
                "pong",
                format!("hook {} of app `{}` is ready", hook.info.id, hook.info.app),
            ),
        ),
        "push" => push(&state, &hook, delivery, &body).await?,
        other => ignored(format!(
            "event `{other}` starts nothing: only `push` (and `ping`) are read"
        )),
    };
    answer(&state, &hook, &[delivery, &signed], status, &reply).await
}

/// What a GitHub `push` payload says, of what drover reads.
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    /// The commit the branch points to now.
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: PushedRepository,
}

/// The pushed repository, by every address GitHub gives it.
#[derive(Debug, Deserialize)]
struct PushedRepository {
    full_name: Option<String>,
    clone_url: Option<String>,
    html_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
}

impl PushedRepository {
    /// Its addresses, as [`repository_key`]s.
    fn keys(&self) -> BTreeSet<String> {
        [
            &self.clone_url,
            &self.html_url,
            &self.ssh_url,
            &self.git_url,
        ]
        .into_iter()
        .flatten()
        .map(|address| repository_key(address))
        .collect()
    }
}

async fn push(
    state: &AppState,
    hook: &Hook,
    delivery: &str,
    body: &[u8],
) -> Result<(StatusCode, HookReplyBody), ApiError> {
    let push: Push = serde_json::from_slice(body).map_err(|err| {
        ApiError::BadBody(format!(
            "not a GitHub push payload (set the webhook's content type to `application/json`): {err}"
        ))
    })?;
    let wanted = hook.info.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!(
            "`{}` is not a branch: pushes to branch `{wanted}` deploy",
            push.git_ref
        )));
    };
    if branch != wanted {
        return Ok(ignored(format!(
            "a push to branch `{branch}`: this hook deploys pushes to `{wanted}`"
        )));
    }
    if push.deleted {
        return Ok(ignored(format!("branch `{branch}` was deleted")));
    }
    if !(push.after.len() == 40 || push.after.len() == 64)
        || !push.after.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(ApiError::BadBody(format!(
            "`after` is not a commit sha: `{}`",
            push.after
        )));
    }
    let (tenant, app) = (hook.tenant, &hook.info.app);
    let store = state.backends.store.as_ref();
    let current = store.current_state(tenant, app).await?;
    if current.components().is_none() {
        return Ok(ignored(format!(
            "app `{app}` runs nothing yet: deploy it once, then pushes redeploy it"
        )));
    }
    let pushed = push.repository.keys();
    let mut manifest = manifest_of(&current.components);
    let mut built = BTreeSet::new();
    for (name, component) in &mut manifest.components {
        if let Build::Repository {
            repository,
            git_ref,
        } = &mut component.build
            && pushed.contains(&repository_key(repository))
        {
            *git_ref = Some(push.after.clone());
            built.insert(name.clone());
        }
    }
    if built.is_empty() {
        let name = push
            .repository
            .full_name
            .as_deref()
            .unwrap_or("the pushed repository");
        return Ok(ignored(format!(
            "no component of app `{app}` is built from {name}"
        )));
    }
    // The rebuilt components, and those that deploy their builds.
    let only: BTreeSet<ComponentName> = manifest
        .components
        .keys()
        .filter(|name| built.contains(manifest.artifact_source(name)))
        .cloned()
        .collect();
    let key = format!("hook:{}:{delivery}", hook.info.id);
    let submitted = scheduler::submit(
        &state.backends,
        tenant,
        app,
        manifest,
        &PlanOptions {
            prune: false,
            observed: None,
            only: Some(&only),
        },
        Some(Idempotency {
            request_hash: key.clone(),
            key,
        }),
        Policies::default(),
    )
    .await?;
    if !submitted.existing {
        audit::record_for(
            state,
            tenant,
            None,
            AuditAction::HookDelivered,
            submitted.id,
        )
        .await;
        submission_span(submitted.id).in_scope(|| {
            tracing::info!(%tenant, app = %app, hook = %hook.info.id, "push deploying");
        });
    }
    let components: Vec<String> = only.iter().map(ToString::to_string).collect();
    Ok((
        StatusCode::ACCEPTED,
        HookReplyBody {
            outcome: "deploying".to_owned(),
            message: format!(
                "push of {} to `{branch}`: deployment {} rebuilds {}",
                push.after,
                submitted.id,
                components.join(", ")
            ),
            components,
            deployments: vec![submitted.id.to_string()],
        },
    ))
}

/// A registry's push notification (the CNCF Distribution envelope), signed with a
/// timestamp: `X-Drover-Timestamp` is the Unix time in seconds, and
/// `X-Drover-Signature` is `sha256=` and the hex HMAC-SHA256 of
/// `<timestamp>.<body>` under the hook's secret. A delivery signed more than 5
/// minutes from now, or whose signature was used before, is refused. Each pushed
/// tag is an external update (`<repository>@<digest>`, version the tag) of the
/// components that run that image.
#[utoipa::path(
    post,
    path = "/v1/hooks/registry/{app}",
    params(
        ("app" = String, Path, description = "the app's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63),
        ("X-Drover-Timestamp" = String, Header, description = "the Unix time, in seconds, the delivery was signed at"),
        ("X-Drover-Signature" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under the hook's secret"),
    ),
    request_body(content = String, content_type = "application/json", description = "`{\"events\": [{\"action\": \"push\", \"target\": {\"repository\", \"digest\", \"tag\"}, \"request\": {\"host\"}}]}`, at most 25 MiB"),
    responses(
        (status = 202, description = "recorded, deploying, or nothing (the reason in `message`)", body = HookReplyBody),
        (status = 400, description = "a body that is not a push notification", body = ErrorBody),
        (status = 401, description = "a missing, wrong, old or replayed signature (or no such hook)", body = ErrorBody),
        (status = 413, description = "the body is larger than 25 MiB", body = ErrorBody),
        (status = 429, description = "the hook's deliveries are over the rate limit: try again after `Retry-After` seconds", body = ErrorBody),
    ),
    tag = "hooks",
)]
pub(crate) async fn registry(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_within(body, HOOK_BODY_LIMIT)?;
    let unsigned = || {
        ApiError::BadSignature(
            "missing or malformed `X-Drover-Timestamp` or `X-Drover-Signature`: sign `<unix seconds>.<body>` with HMAC-SHA256 and the hook's secret".to_owned(),
        )
    };
    let timestamp = header(&headers, "x-drover-timestamp").ok_or_else(unsigned)?;
    let signature = header(&headers, "x-drover-signature").ok_or_else(unsigned)?;
    let signed_at: i64 = timestamp.parse().map_err(|_| unsigned())?;
    let age = chrono::Utc::now().timestamp() - signed_at;
    if age.abs() > MAX_SIGNATURE_AGE_SECS {
        return Err(ApiError::BadSignature(format!(
            "the delivery was signed {age} s from now, beyond {MAX_SIGNATURE_AGE_SECS} s: sign each delivery as it is sent"
        )));
    }
    let hook = signed_by(&state, HookKind::Registry, &app, |secret| {
        verify(secret, &[timestamp.as_bytes(), b".", &body], signature)
    })
    .await?;
    // The signature names the delivery: sent again, it is a replay.
    let store = state.backends.store.as_ref();
    if store
        .hook_answer(hook.info.id, signature, ANSWERS_KEPT)
        .await?
        .is_some()
    {
        return Err(ApiError::BadSignature(
            "this signature was used before: a replayed delivery is refused".to_owned(),
        ));
    }
    let notification: Notification = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadBody(format!(
            "expected a registry notification like {{\"events\": [{{\"action\": \"push\", \"target\": {{\"repository\": \"web\", \"digest\": \"sha256:…\", \"tag\": \"1.4.2\"}}, \"request\": {{\"host\": \"registry.example\"}}}}]}}: {err}"
        ))
    })?;
    let (status, reply) = image_pushes(&state, &hook, notification).await?;
    answer(&state, &hook, &[signature], status, &reply).await
}

/// A registry's notification: its events.
#[derive(Debug, Deserialize)]
struct Notification {
    events: Vec<RegistryEvent>,
}

#[derive(Debug, Deserialize)]
struct RegistryEvent {
    action: String,
    target: Option<RegistryTarget>,
    request: Option<RegistryRequest>,
}

#[derive(Debug, Deserialize)]
struct RegistryTarget {
    repository: String,
    digest: Option<String>,
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RegistryRequest {
    host: Option<String>,
}

async fn image_pushes(
    state: &AppState,
    hook: &Hook,
    notification: Notification,
) -> Result<(StatusCode, HookReplyBody), ApiError> {
    let (tenant, app) = (hook.tenant, &hook.info.app);
    let store = state.backends.store.as_ref();
    let current = store.current_state(tenant, app).await?;
    let mut components = Vec::new();
    let mut deployments = Vec::new();
    for event in notification.events {
        let (Some(target), true) = (event.target, event.action == "push") else {
            continue;
        };
        // A tag's push, not a layer's: what a new version of an image is.
        let (Some(digest), Some(tag)) = (target.digest, target.tag) else {
            continue;
        };
        let host = event.request.and_then(|request| request.host);
        let names: BTreeSet<String> = std::iter::once(target.repository.clone())
            .chain(host.map(|host| format!("{host}/{}", target.repository)))
            .collect();
        for (name, running) in &current.components {
            let Build::Image { image } = &running.spec.build else {
                continue;
            };
            let repository = image_repository(image);
            if !names.contains(repository) {
                continue;
            }
            let update = ExternalUpdate::new(
                name.clone(),
                format!("{repository}@{digest}"),
                Some(tag.clone()),
                None,
            )
            .map_err(|err| ApiError::BadBody(err.to_string()))?;
            match scheduler::external_update(store, tenant, app, update).await? {
                ExternalOutcome::Recorded { .. } => {}
                ExternalOutcome::Deploying { submitted, .. } => {
                    deployments.push(submitted.id.to_string());
                }
            }
            audit::record_for(
                state,
                tenant,
                None,
                AuditAction::HookDelivered,
                format!("{app}/{name}"),
            )
            .await;
            components.push(name.to_string());
        }
    }
    if components.is_empty() {
        return Ok(ignored(format!(
            "no pushed tag is an image a component of app `{app}` runs"
        )));
    }
    let outcome = if deployments.is_empty() {
        "recorded"
    } else {
        "deploying"
    };
    Ok((
        StatusCode::ACCEPTED,
        HookReplyBody {
            outcome: outcome.to_owned(),
            message: format!("new images of {}", components.join(", ")),
            components,
            deployments,
        },
    ))
}

/// The hook of `kind` of an app named `app` whose secret `signed` accepts; none is
/// 401, as a wrong signature is (whether the app or the hook exists is not told).
/// Its deliveries over the rate limit are 429.
async fn signed_by(
    state: &AppState,
    kind: HookKind,
    app: &str,
    signed: impl Fn(&str) -> bool,
) -> Result<Hook, ApiError> {
    let wrong = || {
        ApiError::BadSignature(format!(
            "the signature matches no {kind} hook of app `{app}`: sign the raw body with the hook's secret (`drover hook create`)"
        ))
    };
    let app = AppName::new(app).map_err(|_| wrong())?;
    let hooks = state.backends.store.hooks_of_app(kind, &app).await?;
    let hook = hooks
        .into_iter()
        .find(|hook| hook.secrets.iter().any(|secret| signed(secret)))
        .ok_or_else(wrong)?;
    state.rate_limit(Limited::Hook(hook.info.id))?;
    Ok(hook)
}

/// A header's value, if it is text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A delivery id: present, printable, at most 128 characters.
fn delivery_id(id: Option<&str>) -> Result<&str, ApiError> {
    match id {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_DELIVERY_ID
                && id.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(id)
        }
        _ => Err(ApiError::BadHeader {
            header: "X-GitHub-Delivery",
            reason: format!("missing, or not 1 to {MAX_DELIVERY_ID} printable characters"),
        }),
    }
}

fn reply(outcome: &str, message: String) -> HookReplyBody {
    HookReplyBody {
        outcome: outcome.to_owned(),
        message,
        components: Vec::new(),
        deployments: Vec::new(),
    }
}

/// Nothing started, and why.
fn ignored(message: String) -> (StatusCode, HookReplyBody) {
    (StatusCode::ACCEPTED, reply("ignored", message))
}

/// Keeps the answer under each of `keys` (the delivery's id, its signature),
/// then sends it.
async fn answer(
    state: &AppState,
    hook: &Hook,
    keys: &[&str],
    status: StatusCode,
    reply: &HookReplyBody,
) -> Result<Response, ApiError> {
    let answer = HookAnswer {
        status: status.as_u16(),
        body: serde_json::to_string(reply).map_err(|err| ApiError::Internal(Box::new(err)))?,
    };
    for key in keys {
        state
            .backends
            .store
            .record_hook_answer(hook.info.id, key, &answer, ANSWERS_KEPT)
            .await?;
    }
    Ok((status, Json(reply)).into_response())
}

/// The first answer to a delivery, sent again, marked as such.
fn replay(answer: &HookAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.body.clone(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(REDELIVERY, HeaderValue::from_static("true"));
    response
}
