//! drover's HTTP API (axum): tenants authenticate with bearer tokens (stored hashed),
//! submit deployments and follow them. Every query is scoped to the caller's
//! tenant: another tenant's ids are as absent as unknown ones.
//!
//! Versioned under `/v1`; errors are `{"error": {"code", "message", "details"}}`;
//! the OpenAPI document is served at `/openapi.json`.

mod apps;
mod audit;
mod auth;
pub mod body;
mod deployments;
mod error;
mod external_updates;
mod follow;
mod hooks;
mod limits;
mod logs;
pub mod ops;
mod pages;
mod plans;
pub mod progress;
mod query;
mod releases;
mod tokens;
mod ui;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::Html;
use axum::routing::{delete, get, post};
use shared::backends::Backends;
use shared::manifest::MAX_MANIFEST_BYTES;
use shared::names::AppName;
use shared::outbox;
use shared::release::{Observed, Observer};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use follow::Followers;
pub use limits::RateLimits;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub backends: Backends,
    /// The fleet's limit of running tasks per tenant, to explain waiting tasks.
    pub tenant_limit: u32,
    /// What tells what runs (the driver's status step), to plan drift and to
    /// adopt running apps; `None` where nothing can tell.
    pub observer: Option<Arc<dyn Observer>>,
    /// Each token's (and each hook's) rate limit; `None`: no limit.
    pub rate_limits: Option<RateLimits>,
    /// What wakes the followers of deployments; [`run`] feeds it the broker's
    /// progress events.
    pub followers: Followers,
}

impl AppState {
    /// Counts a request of `whose` against its rate limit: `429` when it is over.
    pub(crate) fn rate_limit(&self, whose: limits::Limited) -> Result<(), ApiError> {
        match &self.rate_limits {
            Some(limits) => limits
                .check(whose)
                .map_err(|retry_after| ApiError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// What the app runs now, when something can tell.
    pub(crate) async fn observe(&self, app: &AppName) -> Result<Option<Observed>, ApiError> {
        match &self.observer {
            Some(observer) => Ok(observer.status(app).await?),
            None => Ok(None),
        }
    }
}

/// Why the API server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Relay(outbox::RelayError),
}

/// The OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "drover", description = "Deploy pipelines for multi-component apps."),
    paths(
        apps::list,
        apps::show,
        deployments::create,
        deployments::list,
        deployments::events,
        deployments::show,
        deployments::cancel,
        deployments::retry,
        logs::show,
        plans::create,
        plans::show,
        plans::apply,
        releases::list,
        releases::show,
        releases::rollback,
        releases::adopt,
        external_updates::create,
        hooks::create,
        hooks::list,
        hooks::rotate,
        hooks::finish_rotation,
        hooks::delete,
        hooks::github,
        hooks::registry,
        tokens::create,
        tokens::list,
        tokens::revoke,
        audit::list
    ),
    components(schemas(body::DeploymentBody, body::DeploymentSummaryBody,
        body::AppBody, body::AppDetailBody, body::PlanBody, body::ReleaseBody,
        body::AdoptionBody, body::SavedPlanBody,
        body::ExternalUpdateRequest,
        body::ExternalUpdateAnswer, body::NewTokenBody, body::TokenBody, body::TokenCreatedBody,
        body::AuditEntryBody, shared::manifest::Manifest, body::NewHookBody, body::HookBody, body::HookSecretBody,
        body::HookReplyBody, ErrorBody)),
    modifiers(&BearerAuth, &RateLimited, &UnknownQuery),
    tags(
        (name = "apps", description = "The tenant's apps and what they run"),
        (name = "deployments", description = "Plan and run deployments"),
        (name = "releases", description = "What each deployment left running"),
        (name = "hooks", description = "Webhooks: GitHub pushes and registry image pushes, signed"),
        (name = "tokens", description = "The tenant's API tokens, their scopes, and the audit trail of what they did"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route a token calls may answer 429: the token's rate limit.
struct RateLimited;

impl utoipa::Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            if operation.security.as_ref().is_none_or(Vec::is_empty) {
                continue;
            }
            let limited = error_response(
                "the token's rate limit is spent: try again after `Retry-After` seconds",
            );
            operation
                .responses
                .responses
                .entry("429".to_owned())
                .or_insert(limited.into());
        }
    }
}

/// Every route may answer 400: a query parameter it does not take
/// (`query::refuse_unknown`).
struct UnknownQuery;

impl utoipa::Modify for UnknownQuery {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            let refused = error_response("a query parameter this route does not take");
            operation
                .responses
                .responses
                .entry("400".to_owned())
                .or_insert(refused.into());
        }
    }
}

/// Every operation of the document.
fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        let utoipa::openapi::PathItem {
            get,
            post,
            put,
            delete,
            patch,
            ..
        } = item;
        [get, post, put, delete, patch].into_iter().flatten()
    })
}

/// An answer in the error shape, described so.
fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The header that names a request, in its answer and its log lines.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's routes.
pub fn router(state: AppState) -> Router {
    // The API reference, made once: Scalar over the OpenAPI document.
    let document = ApiDoc::openapi();
    let known = Arc::new(query::Known::of(&document));
    let docs = Html(utoipa_scalar::Scalar::new(document).to_html());
    Router::new()
        .route("/v1/apps", get(apps::list))
        .route("/v1/apps/{app}", get(apps::show))
        .route("/v1/apps/{app}/deployments", post(deployments::create))
        .route("/v1/apps/{app}/plans", post(plans::create))
        .route("/v1/plans/{id}", get(plans::show))
        .route("/v1/plans/{id}/apply", post(plans::apply))
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/deployments/{id}", get(deployments::show))
        .route("/v1/deployments/{id}/events", get(deployments::events))
        .route("/v1/deployments/{id}/tasks/{task}/logs", get(logs::show))
        .route("/v1/deployments/{id}/cancel", post(deployments::cancel))
        .route("/v1/deployments/{id}/retry", post(deployments::retry))
        .route("/v1/apps/{app}/releases", get(releases::list))
        .route("/v1/apps/{app}/releases/{version}", get(releases::show))
        .route(
            "/v1/apps/{app}/releases/{version}/rollback",
            post(releases::rollback),
        )
        .route("/v1/apps/{app}/adopt", post(releases::adopt))
        .route(
            "/v1/apps/{app}/components/{component}/external-updates",
            post(external_updates::create),
        )
        .route("/v1/apps/{app}/hooks", post(hooks::create))
        .route("/v1/hooks", get(hooks::list))
        .route("/v1/hooks/{id}", delete(hooks::delete))
        .route("/v1/hooks/{id}/rotate", post(hooks::rotate))
        .route(
            "/v1/hooks/{id}/previous-secret",
            delete(hooks::finish_rotation),
        )
        // Deliveries may be 25 MiB (GitHub's limit); every other body 1 MiB.
        .route(
            "/v1/hooks/github/{app}",
            post(hooks::github).layer(DefaultBodyLimit::max(hooks::HOOK_BODY_LIMIT)),
        )
        .route(
            "/v1/hooks/registry/{app}",
            post(hooks::registry).layer(DefaultBodyLimit::max(hooks::HOOK_BODY_LIMIT)),
        )
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/audit", get(audit::list))
        // After routing: each route's query parameters, as the document names them.
        .route_layer(axum::middleware::from_fn_with_state(
            known,
            query::refuse_unknown,
        ))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(move || async move { docs.clone() }))
        .merge(ui::router())
        .with_state(state.clone())
        .merge(ops::router(state.backends))
        // A manifest is at most 1 MiB; anything larger is refused before it is read.
        .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES))
        // Every request's span, and so every log line of it, names its request id
        // (never its query string or headers, which may carry secrets).
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|id| id.to_str().ok())
                    .unwrap_or("-");
                let span = tracing::info_span!(
                    "request",
                    id = %id,
                    method = %request.method(),
                    path = %request.uri().path(),
                    tenant = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                );
                // A caller's trace context makes the request's span one of its.
                if let Some(caller) = request
                    .headers()
                    .get(shared::trace::TRACEPARENT)
                    .and_then(|value| value.to_str().ok())
                {
                    shared::trace::join_traceparent(&span, caller);
                }
                span
            }),
        )
        // The client's `x-request-id`, or a new one, is sent back on every answer.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(ops::track))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Serves the API on `listen` until `shutdown` is cancelled, then finishes the
/// requests in flight.
pub async fn run(
    listen: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let backends = state.backends.clone();
    let listener = bind(listen, "api").await?;
    // The first dispatches of the deployments submitted here go out at once, from
    // here. A relay that fails for good (the broker gave up) stops the API too, so
    // that its supervisor restarts it.
    let stop = shutdown.child_token();
    let relay = {
        let (backends, stop) = (backends.clone(), stop.clone());
        let tenant_limit = state.tenant_limit;
        async move {
            let result = outbox::relay(&backends, RELAY_POLL, tenant_limit, &stop).await;
            stop.cancel();
            result
        }
    };
    let followers = state.followers.clone();
    let server =
        axum::serve(listener, router(state)).with_graceful_shutdown(stop.clone().cancelled_owned());
    let (served, relayed, ()) = tokio::join!(
        async {
            let served = server.await.map_err(ServeError::Serve);
            stop.cancel();
            served
        },
        relay,
        followers.listen_to(backends.broker.as_ref(), &stop)
    );
    served?;
    relayed.map_err(ServeError::Relay)
}

/// A listener on `listen`, logged as `what` listening.
pub(crate) async fn bind(
    listen: SocketAddr,
    what: &str,
) -> Result<tokio::net::TcpListener, ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!(%addr, "{what} listening");
    Ok(listener)
}

/// How often the API's relay looks at the outbox without being woken.
const RELAY_POLL: Duration = Duration::from_secs(5);
