//! What operators and their tools ask every role, the API's or not: liveness
//! (`/healthz`), readiness (`/readyz`) and the metrics (`/metrics`). A process
//! without the `api` role serves them on its own `--listen`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::backends::Backends;
use tokio_util::sync::CancellationToken;

use crate::ServeError;

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(backends: Backends) -> Router {
    Router::new()
        // Liveness: the process answers.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(backends)
}

/// Serves [`router`] on `listen` until `shutdown` is cancelled.
pub async fn serve(
    listen: SocketAddr,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listener = crate::bind(listen, "health and metrics").await?;
    axum::serve(listener, router(backends))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Serve)
}

/// How long readiness waits for each service's answer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Ready when the store, the broker and the locks answer (each within
/// [`READY_TIMEOUT`]); else 503 naming each one that does not.
async fn ready(State(backends): State<Backends>) -> impl IntoResponse {
    async fn check<E: std::fmt::Display>(
        what: &str,
        check: impl Future<Output = Result<(), E>>,
    ) -> Option<String> {
        match tokio::time::timeout(READY_TIMEOUT, check).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("{what}: {err}")),
            Err(_) => Some(format!("{what}: no answer within {READY_TIMEOUT:?}")),
        }
    }
    let (store, broker, locks) = tokio::join!(
        check("store", backends.store.check_connectivity()),
        check("broker", backends.broker.check_connectivity()),
        check("locks", backends.locks.check_connectivity()),
    );
    let problems: Vec<String> = [store, broker, locks].into_iter().flatten().collect();
    if problems.is_empty() {
        return (StatusCode::OK, "ready".to_owned());
    }
    tracing::warn!(problems = %problems.join("; "), "not ready");
    (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n"))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared::metrics::render(),
    )
}

/// Counts each API request by its route's pattern (never its path, whose ids
/// would make a series each) and status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    shared::metrics::http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
