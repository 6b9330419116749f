//! The HTTP API, called through its router (no socket), on SQLite and PostgreSQL:
//! authentication, tenant scoping, validation, limits and idempotency.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api::{AppState, router};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use shared::broker::{Broker, MemoryBroker};
use shared::events::Event;
use shared::ids::{DeploymentId, Fence, TaskId};
use shared::locks::component_lock_key;
use shared::manifest::Manifest;
use shared::model::{DeploymentState, Scope};
use shared::names::{AppName, TenantName};
use shared::release::{Observed, ObservedComponent, Observer, StatusError};
use shared::store::{Claim, ClaimOutcome, LeasedTask, NewToken, Store};
use shared::tokens::ApiToken;
use tower::ServiceExt as _;

use crate::store::{Backend, Ctx};
use crate::support::{embedded, take_sse_events};

const MANIFEST: &str = include_str!("../../examples/toolhunt/toolhunt.yaml");

/// What the platform reports running: `web` of app `shop`; nothing it can tell of
/// other apps.
#[derive(Debug)]
struct ShopRuns;

#[async_trait::async_trait]
impl Observer for ShopRuns {
    async fn status(&self, app: &AppName) -> Result<Option<Observed>, StatusError> {
        if app.as_str() != "shop" {
            return Ok(None);
        }
        let web: ObservedComponent = serde_json::from_value(json!({
            "artifact": "registry.example/web@sha256:live",
            "run": {"command": "web", "replicas": 2},
        }))
        .expect("a component");
        Ok(Some(Observed::from([(
            "web".parse().expect("a component name"),
            web,
        )])))
    }
}

/// An API over one store with two tenants.
struct Api {
    router: Router,
    store: Arc<dyn Store>,
    broker: Arc<MemoryBroker>,
    acme: String,
    other: String,
    _backend: Backend,
}

impl Api {
    async fn new(backend: Backend) -> Api {
        Api::with(backend, None, api::Followers::default()).await
    }

    /// An API with these rate limits and followers.
    async fn with(
        backend: Backend,
        rate_limits: Option<api::RateLimits>,
        followers: api::Followers,
    ) -> Api {
        let store = backend.store.clone();
        let mut tokens = Vec::new();
        for name in ["acme", "other"] {
            let token = ApiToken::generate();
            store
                .create_tenant(
                    &TenantName::new(name).expect("a tenant name"),
                    &token.hash(),
                )
                .await
                .expect("create_tenant");
            tokens.push(token.reveal().to_owned());
        }
        let (backends, broker) = embedded(store.clone());
        let other = tokens.pop().expect("two tokens");
        let acme = tokens.pop().expect("two tokens");
        Api {
            router: router(AppState {
                backends,
                tenant_limit: 20,
                observer: Some(Arc::new(ShopRuns)),
                rate_limits,
                followers,
            }),
            store,
            broker,
            acme,
            other,
            _backend: backend,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.into()).expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::GET, uri, Some(token), &[], Body::empty())
            .await
    }

    /// Makes acme's hook of app `shop` (`201`).
    async fn create_hook(&self, hook: Value) -> Value {
        let (status, _, hook) = self
            .call(
                Method::POST,
                "/v1/apps/shop/hooks",
                Some(&self.acme),
                &[("content-type", "application/json")],
                hook.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{hook}");
        hook
    }

    async fn deploy(
        &self,
        token: &str,
        app: &str,
        manifest: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/deployments"),
            Some(token),
            &[("content-type", "application/yaml")],
            manifest.to_owned(),
        )
        .await
    }

    /// Whether anything was written for `app` of tenant acme: a release, or a
    /// deployment still waiting in the outbox.
    async fn nothing_written(&self) -> bool {
        let tenant = self
            .store
            .tenant(&TenantName::new("acme").expect("a tenant name"))
            .await
            .expect("tenant")
            .expect("acme exists");
        let release = self
            .store
            .active_release(tenant, &AppName::new("toolhunt").expect("an app name"))
            .await
            .expect("active_release");
        let outbox = self.store.outbox_batch(10).await.expect("outbox_batch");
        release.is_none() && outbox.is_empty()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn a_deployment_is_accepted_and_shown_to_its_tenant_only(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, headers, body) = api.deploy(&api.acme, "toolhunt", MANIFEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/v1/deployments/{id}").as_str())
    );
    assert_eq!(body["app"], "toolhunt");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["tasks"].as_array().map(Vec::len), Some(6));
    assert_eq!(body["plan"]["tasks"][0]["id"], "build:toolhunt-api");

    let (status, _, shown) = api.get(&format!("/v1/deployments/{id}"), &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["id"], id.as_str());

    // Another tenant's id is as absent as an unknown one.
    for (uri, token) in [
        (format!("/v1/deployments/{id}"), &api.other),
        (
            format!("/v1/deployments/{}", uuid::Uuid::now_v7()),
            &api.acme,
        ),
        ("/v1/deployments/not-an-id".to_owned(), &api.acme),
    ] {
        let (status, _, body) = api.get(&uri, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(error_code(&body), "not_found");
    }
}

/// `POST /v1/deployments/{id}/cancel` cancels the caller's pending deployment
/// (`202`, every task `cancelled`, its end announced); another tenant's or an
/// unknown id is `404`; a deployment that has ended is `409` and stays as it was.
async fn a_deployment_is_cancelled_by_its_tenant_only(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, _, body) = api.deploy(&api.acme, "toolhunt", MANIFEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    let mut events = api
        .broker
        .subscribe_events()
        .await
        .expect("subscribe_events");
    let cancel = |id: String, token: String| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/deployments/{id}/cancel"),
                Some(&token),
                &[],
                Body::empty(),
            )
            .await
        }
    };
    for (id, token) in [
        (id.clone(), api.other.clone()),
        (uuid::Uuid::now_v7().to_string(), api.acme.clone()),
    ] {
        let (status, _, body) = cancel(id, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, _, body) = cancel(id.clone(), api.acme.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    let tasks = body["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 6);
    assert!(
        tasks.iter().all(|task| task["state"] == "cancelled"),
        "{body}"
    );
    // Nothing ran: the deployment ended at once, and that is its one event.
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within the deadline");
    assert!(
        matches!(
            event,
            Some(Event::DeploymentFinished {
                deployment,
                state: DeploymentState::Cancelled,
                release: None,
                ..
            }) if deployment.to_string() == id
        ),
        "{event:?}"
    );

    let (status, _, body) = cancel(id, api.acme.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("has already ended (cancelled)")),
        "{body}"
    );
}

/// Under `cancel-in-progress`, a deployment that supersedes a pending one (no
/// step of it running) ends the older at once, and announces that end.
async fn a_superseded_pending_deployment_is_announced_finished(backend: Backend) {
    let api = Api::new(backend).await;
    let deploy = || {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/v1/apps/toolhunt/deployments?concurrency=cancel-in-progress",
                Some(&api.acme),
                &[("content-type", "application/yaml")],
                MANIFEST,
            )
            .await
        }
    };
    let (status, _, older) = deploy().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{older}");
    let mut events = api
        .broker
        .subscribe_events()
        .await
        .expect("subscribe_events");
    let (status, _, newer) = deploy().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{newer}");
    assert_ne!(older["id"], newer["id"], "two deployments");
    let (_, _, older) = api
        .get(
            &format!(
                "/v1/deployments/{}",
                older["id"].as_str().unwrap_or_default()
            ),
            &api.acme,
        )
        .await;
    assert_eq!(older["state"], "cancelled", "{older}");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within the deadline");
    assert!(
        matches!(
            &event,
            Some(Event::DeploymentFinished {
                deployment,
                state: DeploymentState::Cancelled,
                release: None,
                ..
            }) if older["id"] == deployment.to_string()
        ),
        "{event:?}"
    );
}

async fn a_missing_or_wrong_token_is_401(backend: Backend) {
    let api = Api::new(backend).await;
    for token in [None, Some("drover_not-a-token"), Some("")] {
        let (status, headers, body) = api
            .call(
                Method::POST,
                "/v1/apps/toolhunt/deployments",
                token,
                &[],
                MANIFEST.to_owned(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
        assert_eq!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let (status, _, _) = api
            .call(Method::GET, "/v1/deployments/x", token, &[], Body::empty())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(api.nothing_written().await);
}

async fn an_invalid_manifest_is_400_with_every_problem(backend: Backend) {
    let api = Api::new(backend).await;
    let manifest = "config-version: 0.1\ncomponents:\n  web:\n    type: continuos\n    build: {image: x}\n    wait-for: [db]\n";
    let (status, _, body) = api.deploy(&api.acme, "toolhunt", manifest).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_manifest");
    assert_eq!(
        body["error"]["details"],
        json!([
            {"line": 4, "column": 11, "component": "web", "field": "type",
             "message": "unknown type `continuos` (did you mean `continuous`?)"},
            {"line": 6, "column": 16, "component": "web", "field": "wait-for",
             "message": "unknown component `db`"},
        ])
    );
    assert!(api.nothing_written().await);
}

async fn bad_app_names_and_bodies_are_400(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, _, body) = api.deploy(&api.acme, "Tool_Hunt", MANIFEST).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_app_name");

    let (status, _, body) = api
        .call(
            Method::POST,
            "/v1/apps/toolhunt/deployments",
            Some(&api.acme),
            &[],
            vec![0xff_u8, 0xfe, 0x00],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_request");

    for query in [
        "strategy=fast",
        "concurrency=sometimes",
        "prune=maybe",
        "components=nope",
    ] {
        let (status, _, body) = api
            .call(
                Method::POST,
                &format!("/v1/apps/toolhunt/deployments?{query}"),
                Some(&api.acme),
                &[],
                MANIFEST.to_owned(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error_code(&body), "bad_request", "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("invalid `")),
            "{query}: {body}"
        );
    }
    // A parameter the route does not take, misspelt or not, is refused rather
    // than ignored: `only-plan` ignored would deploy.
    for (method, uri) in [
        (Method::POST, "/v1/apps/toolhunt/deployments?only-plan=true"),
        (
            Method::POST,
            "/v1/apps/toolhunt/deployments?only_plan=true&dry_run=1",
        ),
        (Method::POST, "/v1/apps/toolhunt/plans?only_plan=true"),
        (Method::GET, "/v1/apps?limit=5&sort=name"),
    ] {
        let (status, _, body) = api
            .call(
                method.clone(),
                uri,
                Some(&api.acme),
                &[],
                MANIFEST.to_owned(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("unknown parameter `") && message.contains("this route takes `"),
            "{uri}: {body}"
        );
    }
    let id = uuid::Uuid::now_v7();
    let (status, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/cancel?force=true"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(
            |message| message.contains("unknown parameter `force`: this route takes none")
        ),
        "{body}"
    );
    assert!(api.nothing_written().await);
}

async fn an_oversize_body_is_413(backend: Backend) {
    let api = Api::new(backend).await;
    let huge = format!("{MANIFEST}\n# {}\n", "x".repeat(1024 * 1024));
    let (status, _, body) = api.deploy(&api.acme, "toolhunt", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    assert!(api.nothing_written().await);
}

async fn a_retried_request_returns_the_same_deployment(backend: Backend) {
    let api = &Api::new(backend).await;
    let post = |body: &'static str, key: &'static str| async move {
        api.call(
            Method::POST,
            "/v1/apps/toolhunt/deployments",
            Some(&api.acme),
            &[("idempotency-key", key)],
            body.to_owned(),
        )
        .await
    };
    let (status, _, first) = post(MANIFEST, "deploy-42").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let n_dispatches = api.store.outbox_batch(100).await.expect("outbox").len();
    let (status, _, again) = post(MANIFEST, "deploy-42").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        api.store.outbox_batch(100).await.expect("outbox").len(),
        n_dispatches,
        "a retry dispatches nothing"
    );

    let changed: &'static str = Box::leak(MANIFEST.replace("v3", "v4").into_boxed_str());
    let (status, _, body) = post(changed, "deploy-42").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "idempotency_key_reused");

    let (status, _, other) = post(MANIFEST, "deploy-43").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    assert_ne!(other["id"], first["id"]);
}

async fn only_plan_returns_the_plan_and_writes_nothing(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, _, body) = api
        .call(
            Method::POST,
            "/v1/apps/toolhunt/deployments?only_plan=true",
            Some(&api.acme),
            &[],
            MANIFEST.to_owned(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manifest = Manifest::parse(MANIFEST).expect("the example parses");
    let plan = scheduler::planner::plan(
        &AppName::new("toolhunt").expect("an app name"),
        &manifest,
        None,
        &Default::default(),
    );
    // The API's plan is the CLI's JSON contract, field for field.
    assert_eq!(
        body,
        serde_json::to_value(&plan).expect("the plan serializes")
    );
    assert!(api.nothing_written().await);
}

/// Releases are listed newest first in pages and shown one by one, to their tenant
/// only; a bad cursor or limit is 400.
async fn releases_are_listed_and_shown_to_their_tenant_only(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    for n in 1..=3 {
        let (deployment, _) = ctx
            .deploy(crate::store::manifest(&format!(
                "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {{image: registry.example/web:{n}}}\n    run: {{command: web}}\n"
            )))
            .await;
        ctx.run_to_end(deployment, |name| format!("registry.example/{name}@{n}"))
            .await;
    }
    let (status, _, page) = api.get("/v1/apps/shop/releases?limit=2", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let versions: Vec<u64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|release| release["version"].as_u64().expect("a version"))
        .collect();
    assert_eq!(versions, [3, 2]);
    assert_eq!(page["next_cursor"], "2");
    assert_eq!(page["total"], 3);
    let (status, _, page) = api
        .get("/v1/apps/shop/releases?limit=2&cursor=2", &api.acme)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["version"], 1);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_cursor"], Value::Null);

    let (status, _, release) = api.get("/v1/apps/shop/releases/2", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{release}");
    assert_eq!(release["version"], 2);
    assert_eq!(
        release["components"]["web"]["artifact"],
        "registry.example/web@2"
    );

    for uri in [
        "/v1/apps/shop/releases",
        "/v1/apps/shop/releases/2",
        "/v1/apps/nope/releases",
        "/v1/apps/shop/releases/9",
        "/v1/apps/shop/releases/two",
    ] {
        let token = if uri.contains("shop/releases") && !uri.ends_with('9') && !uri.ends_with("two")
        {
            &api.other
        } else {
            &api.acme
        };
        let (status, _, body) = api.get(uri, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(error_code(&body), "not_found", "{uri}");
    }
    for (uri, parameter) in [
        ("/v1/apps/shop/releases?limit=many", "query"),
        ("/v1/apps/shop/releases?limit=0", "limit"),
        ("/v1/apps/shop/releases?limit=101", "limit"),
        ("/v1/apps/shop/releases?cursor=latest", "cursor"),
    ] {
        let (status, _, body) = api.get(uri, &api.acme).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("`{parameter}`")),
            "{uri}: {message}"
        );
    }

    // A rollback retried with its Idempotency-Key is the same rollback; the key
    // reused for another release is refused.
    let roll_back = |version: u32, key: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/apps/shop/releases/{version}/rollback"),
                Some(&api.acme),
                &[("idempotency-key", key)],
                Body::empty(),
            )
            .await
        }
    };
    let (status, _, first) = roll_back(1, "rollback-7").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, _, again) = roll_back(1, "rollback-7").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], first["id"], "the same rollback");
    let (status, _, reused) = roll_back(2, "rollback-7").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(error_code(&reused), "idempotency_key_reused");
    let (status, _, other) = roll_back(1, "rollback-8").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    assert_ne!(other["id"], first["id"], "another key, another rollback");
}

/// External updates: a component without `on-update` is recorded as the next
/// release (`201`), once however often it is sent; one with `on-update: {deploy:
/// true}` gets a deployment of its deploy alone (`202`). Another tenant's app, an
/// unknown component and a bad body or artifact are refused.
async fn external_updates_are_recorded_once_or_deployed(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (deployment, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1
components:
  web:
    type: continuous
    build: {image: registry.example/web:1}
    run: {command: web}
  worker:
    type: continuous
    build: {image: registry.example/worker:1}
    run: {command: work}
    wait-for: [web]
    on-update: {deploy: true}
",
        ))
        .await;
    ctx.run_to_end(deployment, |name| format!("registry.example/{name}@1"))
        .await;
    let post = |component: &str, token: &str, body: &str| {
        let (uri, token, body) = (
            format!("/v1/apps/shop/components/{component}/external-updates"),
            token.to_owned(),
            body.to_owned(),
        );
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &uri,
                Some(&token),
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let update = r#"{"artifact": "registry.example/web@sha256:feed", "version": "1.1"}"#;
    let (status, _, body) = post("web", &api.acme, update).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"], "recorded, not deployed");
    assert_eq!(body["release"], 2);
    assert_eq!(body["duplicate"], false);
    let (status, _, body) = post("web", &api.acme, update).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["release"], 2, "the same update is recorded once");
    assert_eq!(body["duplicate"], true);
    let (_, _, release) = api.get("/v1/apps/shop/releases/2", &api.acme).await;
    assert_eq!(
        release["components"]["web"]["artifact"],
        "registry.example/web@sha256:feed"
    );
    assert_eq!(release["components"]["web"]["version"], "1.1");

    let deploy = r#"{"artifact": "registry.example/worker@sha256:beef"}"#;
    let (status, _, body) = post("worker", &api.acme, deploy).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["message"], "recorded, deploying");
    let tasks = body["deployment"]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{body}");
    assert_eq!(tasks[0]["id"], "deploy:worker");
    assert_eq!(tasks[0]["artifact"], "registry.example/worker@sha256:beef");
    let first_deployment = body["deployment"]["id"].clone();
    let (status, _, body) = post("worker", &api.acme, deploy).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(
        body["deployment"]["id"], first_deployment,
        "one deployment per update"
    );

    for (component, token, body, expected) in [
        ("web", &api.other, update, StatusCode::NOT_FOUND),
        ("nope", &api.acme, update, StatusCode::NOT_FOUND),
        (
            "web",
            &api.acme,
            "{\"artifact\": 1}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "web",
            &api.acme,
            "{\"artifact\": \"two words\"}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "web",
            &api.acme,
            "{\"artifact\": \"x\", \"extra\": 1}",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, _, answer) = post(component, token, body).await;
        assert_eq!(status, expected, "{component} {body}: {answer}");
    }
    let (_, _, page) = api.get("/v1/apps/shop/releases", &api.acme).await;
    assert_eq!(page["total"], 2, "refused updates record nothing: {page}");
}

/// Cancelling a deployment while a step of it runs announces it on the events
/// exchange, so that the worker running the step stops it at once.
async fn cancelling_a_running_deployment_tells_the_workers(backend: Backend) {
    let api = Api::new(backend).await;
    const WEB: &str = "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: web}\n";
    let (status, _, body) = api
        .call(
            Method::POST,
            "/v1/apps/shop/deployments",
            Some(&api.acme),
            &[("content-type", "application/yaml")],
            WEB,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id: DeploymentId = body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the deployment's id");
    let tenant = api
        .store
        .ensure_tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    let task: TaskId = "build:web".parse().expect("a task id");
    let claimed = api
        .store
        .claim_task(&Claim {
            tenant,
            deployment: id,
            lock_key: component_lock_key(
                tenant,
                &AppName::new("shop").expect("an app"),
                &task.parts().1,
            ),
            task,
            attempt: 1,
            fence: None,
            worker: "worker-1".to_owned(),
            lease: Duration::from_secs(60),
            tenant_limit: None,
        })
        .await
        .expect("claim_task");
    assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
    let mut events = api
        .broker
        .subscribe_events()
        .await
        .expect("subscribe_events");
    let (status, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/cancel"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within the deadline");
    assert_eq!(
        event,
        Some(Event::CancelRequested {
            tenant,
            deployment: id
        })
    );
}

/// `/ui/` is the dashboard: its page, script and style sheet, embedded, each with
/// its type and a policy that lets the page load and reach this origin only; `/`
/// and `/ui` lead there. The page needs no token (it asks for one).
async fn the_dashboard_is_served_with_its_assets(backend: Backend) {
    let api = Api::new(backend).await;
    for (path, kind, holds) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui/app.js", "text/javascript", "/v1/deployments/"),
        ("/ui/app.css", "text/css", ".node"),
    ] {
        let (status, headers, body) = api.call(Method::GET, path, None, &[], Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|value| value.starts_with(kind)),
            "{path}: {headers:?}"
        );
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or_default();
        assert!(
            policy.contains("connect-src 'self'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        assert!(
            body.as_str().unwrap_or_default().contains(holds),
            "{path} holds {holds}"
        );
    }
    for path in ["/", "/ui"] {
        let (status, headers, _) = api.call(Method::GET, path, None, &[], Body::empty()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(headers[header::LOCATION], "/ui/", "{path}");
    }
}

async fn the_openapi_document_names_every_route(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, _, body) = api
        .call(Method::GET, "/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = body["paths"].as_object().expect("paths");
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/v1/apps",
            "/v1/apps/{app}",
            "/v1/apps/{app}/adopt",
            "/v1/apps/{app}/components/{component}/external-updates",
            "/v1/apps/{app}/deployments",
            "/v1/apps/{app}/hooks",
            "/v1/apps/{app}/plans",
            "/v1/apps/{app}/releases",
            "/v1/apps/{app}/releases/{version}",
            "/v1/apps/{app}/releases/{version}/rollback",
            "/v1/audit",
            "/v1/deployments",
            "/v1/deployments/{id}",
            "/v1/deployments/{id}/cancel",
            "/v1/deployments/{id}/events",
            "/v1/deployments/{id}/retry",
            "/v1/deployments/{id}/tasks/{task}/logs",
            "/v1/hooks",
            "/v1/hooks/github/{app}",
            "/v1/hooks/registry/{app}",
            "/v1/hooks/{id}",
            "/v1/hooks/{id}/previous-secret",
            "/v1/hooks/{id}/rotate",
            "/v1/plans/{id}",
            "/v1/plans/{id}/apply",
            "/v1/tokens",
            "/v1/tokens/{id}"
        ]
    );
    assert!(
        body["components"]["securitySchemes"]["bearer"].is_object(),
        "{body}"
    );
    // Each list's page is its own schema, of its own items.
    for (path, page) in [
        ("/v1/apps", "PageBody_AppBody"),
        ("/v1/deployments", "PageBody_DeploymentSummaryBody"),
        ("/v1/apps/{app}/releases", "PageBody_ReleaseBody"),
        ("/v1/tokens", "PageBody_TokenBody"),
        ("/v1/audit", "PageBody_AuditEntryBody"),
    ] {
        let schema =
            &paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(
            schema["$ref"],
            format!("#/components/schemas/{page}"),
            "{path}"
        );
        let item = page.trim_start_matches("PageBody_");
        let schemas = &body["components"]["schemas"];
        assert_eq!(
            schemas[page]["properties"]["items"]["items"]["description"],
            schemas[item]["description"],
            "{page} holds {item}"
        );
    }
    let (status, _, _) = api
        .call(Method::GET, "/readyz", None, &[], Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    // The API reference page holds the document itself.
    let (status, headers, page) = api
        .call(Method::GET, "/docs", None, &[], Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|kind| kind.starts_with("text/html")),
        "{headers:?}"
    );
    let page = page.as_str().unwrap_or_default();
    assert!(
        page.contains("scalar") && page.contains("/v1/plans/{id}/apply"),
        "{page}"
    );
}

/// The ids of a page's items.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// `GET /v1/apps` lists the tenant's apps by name, `GET /v1/apps/{app}` shows one
/// with what it runs; `GET /v1/deployments` lists its deployments newest first,
/// filtered by app, state and time; both in pages. Another tenant's are absent;
/// bad filters, cursors and parameters are 400 naming the parameter.
async fn apps_and_deployments_are_listed_to_their_tenant_only(backend: Backend) {
    let api = Api::new(backend).await;
    let shop = Ctx::new(api.store.clone(), "acme", "shop").await;
    let mut shipped = Vec::new();
    for n in 1..=3 {
        let (deployment, _) = shop
            .deploy(crate::store::manifest(&format!(
                "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {{image: registry.example/web:{n}}}\n    run: {{command: web}}\n"
            )))
            .await;
        shop.run_to_end(deployment, |name| format!("registry.example/{name}@{n}"))
            .await;
        shipped.push(deployment.to_string());
    }
    let blog = Ctx::new(api.store.clone(), "acme", "blog").await;
    let (waiting, _) = blog.deploy(crate::store::manifest(MANIFEST)).await;
    let theirs = Ctx::new(api.store.clone(), "other", "wiki").await;
    theirs.deploy(crate::store::manifest(MANIFEST)).await;

    let (status, _, apps) = api.get("/v1/apps?limit=1", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{apps}");
    assert_eq!(apps["items"][0]["name"], "blog");
    assert_eq!(apps["total"], 2);
    assert_eq!(apps["next_cursor"], "blog");
    let (status, _, apps) = api.get("/v1/apps?limit=1&cursor=blog", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{apps}");
    assert_eq!(apps["items"][0]["name"], "shop");
    assert_eq!(apps["items"][0]["active_release"], 3);
    assert_eq!(apps["items"][0]["deployments"], 3);
    assert_eq!(apps["next_cursor"], Value::Null);

    let (status, _, app) = api.get("/v1/apps/shop", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{app}");
    assert_eq!(app["name"], "shop");
    assert_eq!(app["active_release"], 3);
    assert_eq!(app["concurrency"], "queue");
    assert_eq!(app["strategy"], "rolling");
    assert_eq!(app["running"]["web"]["artifact"], "registry.example/web@3");
    assert_eq!(app["changed_since_release"], false);
    let (status, _, app) = api.get("/v1/apps/blog", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{app}");
    assert_eq!(app["active_release"], Value::Null);
    assert_eq!(app["running"], json!({}));

    let (status, _, page) = api.get("/v1/deployments", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let newest_first: Vec<String> = std::iter::once(waiting.to_string())
        .chain(shipped.iter().rev().cloned())
        .collect();
    assert_eq!(ids(&page), newest_first);
    assert_eq!(page["total"], 4);
    assert_eq!(page["items"][1]["release"]["version"], 3);
    assert_eq!(page["items"][1]["state"], "succeeded");
    let (_, _, first) = api.get("/v1/deployments?app=shop&limit=2", &api.acme).await;
    assert_eq!(ids(&first), newest_first[1..3]);
    assert_eq!(first["total"], 3);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, _, rest) = api
        .get(
            &format!("/v1/deployments?app=shop&limit=2&cursor={cursor}"),
            &api.acme,
        )
        .await;
    assert_eq!(ids(&rest), newest_first[3..]);
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, _, pending) = api.get("/v1/deployments?state=pending", &api.acme).await;
    assert_eq!(ids(&pending), [waiting.to_string()]);
    let (_, _, later) = api
        .get("/v1/deployments?since=2999-01-01T00:00:00Z", &api.acme)
        .await;
    assert_eq!((later["total"].clone(), ids(&later).len()), (json!(0), 0));
    let (_, _, recent) = api
        .get(
            "/v1/deployments?app=shop&since=2000-01-01T00:00:00%2B02:00",
            &api.acme,
        )
        .await;
    assert_eq!(recent["total"], 3);

    let (_, _, apps) = api.get("/v1/apps", &api.other).await;
    assert_eq!(apps["total"], 1, "{apps}");
    assert_eq!(apps["items"][0]["name"], "wiki");
    let (_, _, page) = api.get("/v1/deployments?app=shop", &api.other).await;
    assert_eq!(page["total"], 0, "{page}");
    let (status, _, body) = api.get("/v1/apps/shop", &api.other).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");

    for (uri, parameter, hint) in [
        (
            "/v1/deployments?state=done",
            "state",
            "one of pending, running",
        ),
        ("/v1/deployments?since=yesterday", "since", "RFC 3339"),
        ("/v1/deployments?app=Not_A_Name", "app", ""),
        ("/v1/deployments?cursor=latest", "cursor", "next_cursor"),
        ("/v1/deployments?limit=0", "limit", "from 1 to 100"),
        ("/v1/deployments?colour=red", "query", "colour"),
        ("/v1/apps?cursor=Not_A_Name", "cursor", "next_cursor"),
        ("/v1/apps?limit=101", "limit", "from 1 to 100"),
        ("/v1/apps?colour=red", "query", "colour"),
    ] {
        let (status, _, body) = api.get(uri, &api.acme).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("`{parameter}`")) && message.contains(hint),
            "{uri}: {message}"
        );
    }
    let (status, _, _) = api
        .call(Method::GET, "/v1/deployments", None, &[], Body::empty())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// An `admin` token makes tokens of any scope (the secret shown once, never listed)
/// and revokes them; a `read` token reads and plans but deploys nothing (403), a
/// `deploy` token deploys but manages no tokens; a revoked or expired token is 401.
/// Bad token requests are 400 and make nothing; another tenant's token is 404.
async fn tokens_are_made_scoped_and_revoked_by_admins(backend: Backend) {
    let api = Api::new(backend).await;
    let post = |token: &str, body: String| {
        let api = &api;
        let token = token.to_owned();
        async move {
            api.call(
                Method::POST,
                "/v1/tokens",
                Some(&token),
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let (status, _, ci) = post(
        &api.acme,
        json!({"name": "ci", "scope": "deploy"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    assert_eq!(ci["scope"], "deploy");
    assert_eq!(ci["revoked_at"], Value::Null);
    let ci_token = ci["token"].as_str().expect("the secret").to_owned();
    assert!(ci_token.starts_with("drover_"), "{ci}");
    let (status, _, reader) = post(&api.acme, json!({"name": "dashboard"}).to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{reader}");
    assert_eq!(reader["scope"], "read", "the least scope by default");
    let read_token = reader["token"].as_str().expect("the secret").to_owned();

    // What each scope may do.
    let (status, _, body) = api.deploy(&read_token, "toolhunt", MANIFEST).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "forbidden");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("scope `read`") && message.contains("needs `deploy`"),
        "{message}"
    );
    assert!(api.nothing_written().await);
    let (status, _, plan) = api
        .call(
            Method::POST,
            "/v1/apps/toolhunt/deployments?only_plan=true",
            Some(&read_token),
            &[],
            MANIFEST.to_owned(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a read token plans: {plan}");
    let (status, _, deployment) = api.deploy(&ci_token, "toolhunt", MANIFEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deployment}");
    let id = deployment["id"].as_str().expect("an id").to_owned();
    let (status, _, _) = api.get(&format!("/v1/deployments/{id}"), &read_token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/cancel"),
            Some(&read_token),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for token in [&ci_token, &read_token] {
        let (status, _, body) = api.get("/v1/tokens", token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _, body) = post(token, json!({"scope": "admin"}).to_string()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    let (status, _, page) = api.get("/v1/tokens?limit=2", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["total"], 3,
        "the tenant's first token and the two made here"
    );
    assert_eq!(page["items"][0]["name"], "dashboard");
    assert_eq!(page["items"][1]["name"], "ci");
    let listed = page.to_string();
    assert!(
        !listed.contains(&ci_token) && !listed.contains("\"token\""),
        "{listed}"
    );

    // Revoked: refused from then on; another tenant cannot revoke it.
    let ci_id = ci["id"].as_str().expect("an id");
    let revoke = |token: &str, id: &str| {
        let api = &api;
        let (token, uri) = (token.to_owned(), format!("/v1/tokens/{id}"));
        async move {
            api.call(Method::DELETE, &uri, Some(&token), &[], Body::empty())
                .await
        }
    };
    let (status, _, body) = revoke(&api.other, ci_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = api.get("/v1/deployments", &ci_token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, revoked) = revoke(&api.acme, ci_id).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, _, body) = api.get("/v1/deployments", &ci_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );
    let (status, _, body) = revoke(&api.acme, "not-a-token").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Expired (a minute ago, by the database's clock): refused.
    let tenant = api
        .store
        .tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("tenant")
        .expect("acme");
    let expired = ApiToken::generate();
    api.store
        .create_token(
            tenant,
            &NewToken {
                name: None,
                scope: Scope::Admin,
                expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
                hash: expired.hash(),
            },
        )
        .await
        .expect("create_token");
    let (status, _, body) = api.get("/v1/deployments", expired.reveal()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Bad requests make nothing.
    let (_, _, before) = api.get("/v1/tokens", &api.acme).await;
    for (body, hint) in [
        (
            json!({"scope": "root"}).to_string(),
            "unknown variant `root`, expected one of `read`, `deploy`, `admin`",
        ),
        (
            json!({"colour": "red"}).to_string(),
            "unknown field `colour`",
        ),
        (
            json!({"expires_at": "2000-01-01T00:00:00Z"}).to_string(),
            "has passed",
        ),
        (
            json!({"name": "x".repeat(65)}).to_string(),
            "1 to 64 characters",
        ),
        (json!({"name": ""}).to_string(), "1 to 64 characters"),
        ("scope: admin".to_owned(), "invalid token request"),
    ] {
        let (status, _, answer) = post(&api.acme, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{body}: {message}");
    }
    let (status, _, answer) = post(
        &api.acme,
        format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (_, _, after) = api.get("/v1/tokens", &api.acme).await;
    assert_eq!(after["total"], before["total"]);
}

/// Every answer, errors too, carries an `x-request-id`: the client's own, or a new
/// one for each request.
async fn every_answer_names_its_request_id(backend: Backend) {
    let api = Api::new(backend).await;
    let id_of = |headers: &HeaderMap| {
        headers
            .get("x-request-id")
            .and_then(|id| id.to_str().ok())
            .map(str::to_owned)
    };
    let (_, first, _) = api
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    let (_, second, _) = api
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    let (first, second) = (
        id_of(&first).expect("an id"),
        id_of(&second).expect("an id"),
    );
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
    assert_ne!(first, second, "one id per request");
    for (uri, token) in [
        ("/v1/deployments/nope", Some(api.acme.as_str())),
        ("/v1/apps", None),
    ] {
        let (status, headers, _) = api
            .call(
                Method::GET,
                uri,
                token,
                &[("x-request-id", "ci-run-42")],
                Body::empty(),
            )
            .await;
        assert!(status.is_client_error(), "{uri}: {status}");
        assert_eq!(id_of(&headers).as_deref(), Some("ci-run-42"), "{uri}");
    }
}

/// `GET /v1/audit` lists, newest first, what each token did through the API: the
/// deployment a `deploy` token started and cancelled, the tokens an `admin` token
/// made and revoked. Only `admin` tokens read it; another tenant's trail is apart.
async fn the_audit_trail_says_who_did_what(backend: Backend) {
    let api = Api::new(backend).await;
    let (status, _, ci) = api
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&api.acme),
            &[],
            json!({"name": "ci", "scope": "deploy"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    let (ci_id, ci_token) = (
        ci["id"].as_str().expect("an id"),
        ci["token"].as_str().expect("a secret"),
    );
    let (status, _, deployment) = api.deploy(ci_token, "toolhunt", MANIFEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deployment}");
    let id = deployment["id"].as_str().expect("an id");
    let (status, _, _) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/cancel"),
            Some(ci_token),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{ci_id}"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, trail) = api.get("/v1/audit", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let entries: Vec<(String, String, bool)> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().expect("an action").to_owned(),
                entry["target"].as_str().expect("a target").to_owned(),
                entry["token"] == ci_id,
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("token.revoked".to_owned(), ci_id.to_owned(), false),
            ("deployment.cancelled".to_owned(), id.to_owned(), true),
            ("deployment.started".to_owned(), id.to_owned(), true),
            ("token.created".to_owned(), ci_id.to_owned(), false),
        ]
    );
    assert_eq!(trail["total"], 4);
    let (_, _, first) = api.get("/v1/audit?limit=1", &api.acme).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, _, next) = api
        .get(&format!("/v1/audit?limit=1&cursor={cursor}"), &api.acme)
        .await;
    assert_eq!(next["items"][0]["action"], "deployment.cancelled");

    let (_, _, theirs) = api.get("/v1/audit", &api.other).await;
    assert_eq!(theirs["total"], 0, "{theirs}");
    let (status, _, reader) = api
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&api.acme),
            &[],
            json!({"scope": "deploy"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = api
        .get("/v1/audit", reader["token"].as_str().expect("a secret"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// A token that makes more requests than its limit (here 1 a second, 2 at once) is
/// answered 429 with `Retry-After`, in the API's error shape; another token's
/// requests are counted apart.
async fn a_token_over_its_rate_limit_is_429(backend: Backend) {
    let api = Api::with(
        backend,
        api::RateLimits::new(1, 2),
        api::Followers::default(),
    )
    .await;
    for _ in 0..2 {
        let (status, _, body) = api.get("/v1/apps", &api.acme).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = api.get("/v1/apps", &api.acme).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "rate_limited");
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("a header")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let (status, _, body) = api.get("/v1/apps", &api.other).await;
    assert_eq!(status, StatusCode::OK, "another token: {body}");
}

/// A hook's signed deliveries, which carry no token, have a rate limit of their
/// own (here 1 a second, 2 at once): over it they are 429 with `Retry-After`,
/// and the tenant's token is not held back by them.
async fn a_hook_over_its_rate_limit_is_429(backend: Backend) {
    let api = Api::with(
        backend,
        api::RateLimits::new(1, 2),
        api::Followers::default(),
    )
    .await;
    let hook = api.create_hook(json!({"kind": "github"})).await;
    let secret = hook["secret"].as_str().expect("the secret").to_owned();
    let ping = |delivery: &'static str| {
        let (api, secret) = (&api, &secret);
        async move {
            // Each delivery signs a body of its own: the same signature twice is a replay.
            let body =
                json!({"zen": "Keep it logically awesome.", "delivery": delivery}).to_string();
            let signature = shared::hooks::sign(secret, &[body.as_bytes()]);
            deliver(
                api,
                "/v1/hooks/github/shop",
                &[
                    ("x-github-event", "ping"),
                    ("x-github-delivery", delivery),
                    ("x-hub-signature-256", &signature),
                ],
                body,
            )
            .await
        }
    };
    for delivery in ["d-1", "d-2"] {
        let (status, _, body) = ping(delivery).await;
        assert_eq!(status, StatusCode::OK, "{delivery}: {body}");
    }
    let (status, headers, body) = ping("d-3").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "rate_limited");
    assert!(
        headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .is_some_and(|seconds| seconds >= 1),
        "{headers:?}"
    );
    // The token made one request (the hook's creation): it has one left.
    let (status, _, body) = api.get("/v1/apps", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A manifest nested too deep (as JSON) or built of aliases that expand without
/// bound (as YAML) is 400 with the problem named, fast, and writes nothing.
async fn deep_or_aliased_manifests_are_400_and_write_nothing(backend: Backend) {
    let api = Api::new(backend).await;
    let deep = format!(
        r#"{{"config-version": 0.1, "components": {{"web": {{"type": "continuous", "build": {{"image": "nginx"}}, "run": {{"env": {{"A": {}1{}}}}}}}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut bomb = String::from(
        "config-version: 0.1\nlol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..10 {
        let previous = format!("*lol{}", level - 1);
        bomb.push_str(&format!(
            "lol{level}: &lol{level} [{}]\n",
            [previous.as_str(); 9].join(", ")
        ));
    }
    bomb.push_str("components:\n  web:\n    type: continuous\n    build: {image: nginx}\n    wait-for: *lol9\n");
    for (body, problem) in [(deep, "nesting is deeper than 32 levels"), (bomb, "alias")] {
        let started = std::time::Instant::now();
        let (status, _, answer) = api.deploy(&api.acme, "web", &body).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(error_code(&answer), "invalid_manifest");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(problem), "{message}");
    }
    assert!(api.nothing_written().await);
}

/// The typed JSON bodies (tokens, hooks, external updates) nested 10,000 deep are
/// 400 at once, naming the problem, and write nothing (serde_json stops at 128
/// levels).
async fn deep_json_bodies_are_400_and_write_nothing(backend: Backend) {
    let api = Api::new(backend).await;
    let deep = |field: &str| {
        format!(
            r#"{{"{field}": {}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        )
    };
    for (uri, body) in [
        ("/v1/tokens", deep("name")),
        ("/v1/apps/shop/hooks", deep("branch")),
        (
            "/v1/apps/shop/components/web/external-updates",
            deep("artifact"),
        ),
    ] {
        let (status, _, answer) = api
            .call(
                Method::POST,
                uri,
                Some(&api.acme),
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{uri}: {answer}");
    }
    let (_, _, tokens) = api.get("/v1/tokens", &api.acme).await;
    assert_eq!(tokens["total"], 1, "only the first token: {tokens}");
    let (_, _, hooks) = api.get("/v1/hooks", &api.acme).await;
    assert_eq!(hooks["total"], 0, "{hooks}");
    assert!(api.nothing_written().await);
}

/// One Server-Sent Event: its name, id and data.
type SseEvent = (String, String, Value);

/// The events of `uri` (sent `last_id` as `Last-Event-ID`), read until the stream
/// ends, or until `at_most` were read (then the connection is dropped).
async fn read_events(
    api: &Api,
    token: &str,
    uri: &str,
    last_id: Option<&str>,
    at_most: usize,
) -> Vec<SseEvent> {
    use futures::StreamExt as _;
    let mut request = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = api
        .router
        .clone()
        .oneshot(request.body(Body::empty()).expect("a request"))
        .await
        .expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut body = response.into_body().into_data_stream();
    let (mut text, mut events) = (String::new(), Vec::new());
    let read = async {
        while events.len() < at_most {
            let Some(chunk) = body.next().await else {
                break;
            };
            text.push_str(std::str::from_utf8(&chunk.expect("a chunk")).expect("UTF-8"));
            events.extend(take_sse_events(&mut text));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the events within 20 s");
    // A chunk may hold more than asked for: those count as not read.
    events.truncate(at_most);
    events
}

/// `GET /v1/deployments/{id}/events` sends each task's milestones (those passed
/// between two reads too), then the end, and closes. A follower that disconnects
/// and reconnects with `Last-Event-ID` is sent exactly what it had not seen: the
/// two parts make the whole stream a new follower is sent. A reconnect after the
/// end is sent nothing; a foreign id is 400, another tenant's deployment 404.
async fn a_follower_that_reconnects_sees_every_event_once(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (deployment, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {image: registry.example/web:1}\n    run: {command: web}\n",
        ))
        .await;
    let uri = format!("/v1/deployments/{deployment}/events");
    // Three events live, while the deployment runs; then the connection drops.
    let (live, _) = tokio::join!(read_events(&api, &api.acme, &uri, None, 3), async {
        ctx.run_to_end(deployment, |name| format!("registry.example/{name}@1"))
            .await
    });
    assert_eq!(live.len(), 3, "{live:?}");
    let last = &live[2].1;
    let rest = read_events(&api, &api.acme, &uri, Some(last), usize::MAX).await;
    let whole = read_events(&api, &api.acme, &uri, None, usize::MAX).await;
    let followed: Vec<SseEvent> = live.iter().chain(&rest).cloned().collect();
    assert_eq!(
        followed, whole,
        "live then after reconnecting, against a new follower"
    );
    let steps: Vec<Value> = whole.iter().map(|(_, _, data)| data.clone()).collect();
    let step = |task: &str, state: &str, attempt: u32| json!({"event": "task", "task": task, "state": state, "attempt": attempt});
    assert_eq!(
        steps,
        [
            step("build:web", "ready", 0),
            step("build:web", "running", 1),
            step("build:web", "succeeded", 1),
            step("deploy:web", "ready", 0),
            step("deploy:web", "running", 1),
            step("deploy:web", "succeeded", 1),
            json!({"event": "end", "state": "succeeded", "release": 1}),
        ]
    );
    let names: Vec<&str> = whole.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["task", "task", "task", "task", "task", "task", "end"]
    );
    let ids: HashSet<&str> = whole.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), whole.len(), "every event has its own id");
    let last = &whole[whole.len() - 1].1;
    assert_eq!(
        read_events(&api, &api.acme, &uri, Some(last), usize::MAX).await,
        []
    );

    let (status, _, body) = api
        .call(
            Method::GET,
            &uri,
            Some(&api.acme),
            &[("last-event-id", "zz")],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Last-Event-ID"),
        "{body}"
    );
    let (status, _, body) = api.get(&uri, &api.other).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// A follower reads the store again when a progress event about its deployment
/// is heard: here its timer would wait an hour, so only the event can wake it.
async fn a_follower_is_woken_by_its_deployments_events(backend: Backend) {
    use futures::StreamExt as _;
    let followers = api::Followers::new(Duration::from_secs(3600));
    let api = Api::with(backend, None, followers.clone()).await;
    let broker = &api.broker;
    let events = broker.subscribe_events().await.expect("subscribe_events");
    let stop = tokio_util::sync::CancellationToken::new();
    let listening = tokio::spawn({
        let stop = stop.clone();
        async move { followers.listen(events, &stop).await }
    });

    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (deployment, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {image: registry.example/web:1}\n    run: {command: web}\n",
        ))
        .await;
    let request = Request::get(format!("/v1/deployments/{deployment}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .body(Body::empty())
        .expect("a request");
    let response = api
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    // Within a deadline for the event, not per chunk: keep-alives are chunks too.
    let mut next_event = async || {
        let read = async {
            loop {
                if let Some((_, _, data)) = take_sse_events(&mut text).into_iter().next() {
                    return data;
                }
                let chunk = body
                    .next()
                    .await
                    .expect("the stream is open")
                    .expect("a chunk");
                text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("an event within 20 s")
    };
    assert_eq!(
        next_event().await,
        json!({"event": "task", "task": "build:web", "state": "ready", "attempt": 0})
    );

    ctx.claim(deployment, "build:web").await;
    let tenant = api
        .store
        .ensure_tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    let started = Event::TaskStarted {
        tenant,
        deployment,
        task: "build:web".parse().expect("a task id"),
        attempt: 1,
        worker: "worker-1".to_owned(),
    };
    broker.publish_event(&started).await.expect("publish_event");
    assert_eq!(
        next_event().await,
        json!({"event": "task", "task": "build:web", "state": "running", "attempt": 1})
    );
    stop.cancel();
    listening.await.expect("the listener stops");
}

/// `POST /v1/apps/{app}/adopt` records what the driver reports running as release
/// 1 (`201`), and again answers that release 1 (`200`, `existing`); a component
/// the driver does not report, or an app it cannot tell of, is `409` and writes
/// nothing; a bad manifest is `400`.
async fn adopting_records_what_runs_as_release_1(backend: Backend) {
    let api = Api::new(backend).await;
    let adopt = |app: &'static str, manifest: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/apps/{app}/adopt"),
                Some(&api.acme),
                &[("content-type", "application/yaml")],
                manifest,
            )
            .await
        }
    };
    const WEB: &str = "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: web}\n";
    const WEB_AND_API: &str = "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: web}\n  api:\n    type: continuous\n    build: {image: registry.example/api:1}\n    run: {command: api}\n";

    let (status, _, body) = adopt("shop", WEB_AND_API).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("component `api` is not running")),
        "{body}"
    );
    let (status, _, body) = adopt("blog", WEB).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("set `status`")),
        "{body}"
    );
    let (status, _, body) = adopt("shop", "components: [").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_manifest");
    let (status, _, body) = api.get("/v1/apps/shop/releases", &api.acme).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing was recorded: {body}"
    );

    let (status, _, adopted) = adopt("shop", WEB).await;
    assert_eq!(status, StatusCode::CREATED, "{adopted}");
    assert_eq!(adopted["existing"], false);
    assert_eq!(adopted["release"]["version"], 1);
    let web = &adopted["release"]["components"]["web"];
    assert_eq!(
        web["artifact"], "registry.example/web@sha256:live",
        "{adopted}"
    );
    assert_eq!(
        web["spec"]["run"]["replicas"], 2,
        "what runs, not the manifest: {adopted}"
    );
    let (status, _, again) = adopt("shop", WEB).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["existing"], true);
    assert_eq!(again["release"], adopted["release"]);
}

/// A token of tenant acme with `scope`.
async fn scoped_token(api: &Api, scope: Scope) -> String {
    let tenant = api
        .store
        .tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("tenant")
        .expect("acme exists");
    let secret = ApiToken::generate();
    api.store
        .create_token(
            tenant,
            &NewToken {
                name: None,
                scope,
                expires_at: None,
                hash: secret.hash(),
            },
        )
        .await
        .expect("create_token");
    secret.reveal().to_owned()
}

/// A saved plan is shown to its tenant only and applies exactly: its deployment
/// has its tasks, and applying it again finds that deployment. Once another
/// deployment changed what runs, a plan made before is refused with 409 naming
/// what moved, and nothing is written; a plan made since applies.
/// Plans saved longer ago than the retention (`[store] retain`) are deleted, a
/// batch at a time; younger ones are kept.
async fn saved_plans_older_than_the_retention_are_pruned(backend: Backend) {
    let api = Api::new(backend).await;
    let save = || {
        let api = &api;
        async move {
            let (status, _, plan) = api
                .call(
                    Method::POST,
                    "/v1/apps/toolhunt/plans",
                    Some(&api.acme),
                    &[("content-type", "application/yaml")],
                    MANIFEST,
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{plan}");
            plan["id"].as_str().expect("an id").to_owned()
        }
    };
    let saved = [save().await, save().await];
    let shown = |id: String| {
        let api = &api;
        async move { api.get(&format!("/v1/plans/{id}"), &api.acme).await.0 }
    };
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(
        api.store.prune_saved_plans(day, 100).await.expect("prune"),
        0
    );
    assert_eq!(shown(saved[0].clone()).await, StatusCode::OK);

    // Both are older than no time at all once the clock has moved.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pruned = 0;
    while pruned < 2 {
        assert!(std::time::Instant::now() < deadline, "pruned {pruned} of 2");
        let batch = api
            .store
            .prune_saved_plans(Duration::ZERO, 1)
            .await
            .expect("prune");
        assert!(batch <= 1, "a batch is at most its limit: {batch}");
        pruned += batch;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in saved {
        assert_eq!(shown(id).await, StatusCode::NOT_FOUND);
    }
}

async fn a_saved_plan_applies_exactly_or_is_refused_once_the_app_moved(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let web = |n: u32| {
        format!(
            "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {{image: registry.example/web:{n}}}\n    run: {{command: web}}\n  worker:\n    type: one-off\n    build: {{image: registry.example/worker:1}}\n    run: {{command: work}}\n    wait-for: [web]\n"
        )
    };
    let save = |manifest: String, query: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/apps/shop/plans{query}"),
                Some(&api.acme),
                &[("content-type", "application/yaml")],
                manifest,
            )
            .await
        }
    };
    let apply = |id: String, token: String| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/plans/{id}/apply"),
                Some(&token),
                &[],
                Body::empty(),
            )
            .await
        }
    };
    let deployments = || async {
        let (status, _, page) = api.get("/v1/deployments", &api.acme).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["total"].as_u64().expect("a total")
    };

    let (status, headers, first) = save(web(1), "?strategy=recreate").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first_id = first["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        headers[header::LOCATION].to_str().ok(),
        Some(format!("/v1/plans/{first_id}").as_str())
    );
    assert_eq!(first["base_release"], Value::Null);
    assert_eq!(first["base"], json!({}));
    assert_eq!(first["strategy"], "recreate");
    assert_eq!(
        first["plan"]["actions"],
        json!({"web": "create", "worker": "create"})
    );
    assert_eq!(deployments().await, 0, "saving a plan deploys nothing");

    let (status, _, shown) = api.get(&format!("/v1/plans/{first_id}"), &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown, first);
    for (uri, token) in [
        (format!("/v1/plans/{first_id}"), &api.other),
        ("/v1/plans/not-a-plan".to_owned(), &api.acme),
        (format!("/v1/plans/{}", DeploymentId::generate()), &api.acme),
    ] {
        let (status, _, body) = api.get(&uri, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(error_code(&body), "not_found", "{uri}");
    }
    let (status, _, body) = apply(first_id.clone(), api.other.clone()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's plan: {body}"
    );
    let read = scoped_token(&api, Scope::Read).await;
    let (status, _, body) = apply(first_id.clone(), read.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, body) = api
        .call(
            Method::POST,
            "/v1/apps/shop/plans",
            Some(&read),
            &[("content-type", "application/yaml")],
            web(1),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "saving needs deploy: {body}");
    assert_eq!(deployments().await, 0, "refused applies write nothing");

    // The second plan is made against the same state as the first.
    let (status, _, second) = save(web(2), "").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["id"].as_str().expect("an id").to_owned();

    let (status, _, deployment) = apply(first_id.clone(), api.acme.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deployment}");
    assert_eq!(deployment["plan"], first["plan"], "exactly the saved plan");
    assert_eq!(deployment["strategy"], "recreate", "with its policies");
    let (status, _, again) = apply(first_id.clone(), api.acme.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        again["id"], deployment["id"],
        "applied again: the same deployment"
    );
    assert_eq!(deployments().await, 1);

    let id: DeploymentId = deployment["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a deployment id");
    ctx.run_to_end(id, |name| format!("registry.example/{name}@built"))
        .await;

    // What runs moved: the second plan, made before, is refused.
    let (status, _, stale) = apply(second_id, api.acme.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert_eq!(error_code(&stale), "plan_stale");
    let moved = stale["error"]["details"]["moved"]
        .as_array()
        .expect("what moved");
    let names: Vec<&str> = moved
        .iter()
        .map(|moved| moved["component"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["web", "worker"], "{stale}");
    assert_eq!(moved[0]["was"], Value::Null, "{stale}");
    assert_eq!(moved[0]["deployment"], deployment["id"], "{stale}");
    let message = stale["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`web` was not running") && message.contains("drover plan --save"),
        "{message}"
    );
    assert_eq!(deployments().await, 1, "a stale plan writes nothing");

    // A plan made now applies: it replaces web alone.
    let (status, _, third) = save(web(2), "").await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    assert_eq!(third["base_release"], 1);
    assert_eq!(
        third["plan"]["actions"],
        json!({"web": "replace", "worker": "unchanged"})
    );
    let third_id = third["id"].as_str().expect("an id").to_owned();
    let (status, _, applied) = apply(third_id, api.acme.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{applied}");
    assert_eq!(applied["base_release"], 1);
    assert_eq!(deployments().await, 2);
}

/// Sends a webhook delivery: `headers` and a JSON body, no bearer token.
async fn deliver(
    api: &Api,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    api.call(Method::POST, path, None, &all, body).await
}

/// A GitHub push of `sha` to `branch` of `repository`.
fn push_payload(branch: &str, sha: &str, repository: &str) -> String {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0".repeat(40),
        "after": sha,
        "repository": {
            "full_name": repository,
            "clone_url": format!("https://github.com/{repository}.git"),
            "html_url": format!("https://github.com/{repository}"),
            "ssh_url": format!("git@github.com:{repository}.git"),
        },
    })
    .to_string()
}

/// GitHub hooks: a delivery is signed with the hook's secret (either one during a
/// rotation); a missing, wrong or another hook's signature is 401 and starts
/// nothing; `ping` is answered; a push to the hook's branch (a name that looks
/// like shell, matched and kept as data) rebuilds and deploys, at the pushed
/// commit, the components built from the pushed repository and nothing else; a
/// redelivery gets the first answer and starts nothing; other branches,
/// repositories and events start nothing; bodies may be 25 MiB, not more.
async fn github_pushes_are_signed_deduplicated_and_deploy_what_they_built(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (first, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1
components:
  web:
    type: continuous
    build: {repository: 'https://github.com/acme/shop', ref: main}
    run: {command: web, port: 8000}
  migrate:
    type: one-off
    build: {reuse-from: web}
    run: {command: migrate}
  worker:
    type: continuous
    build: {repository: 'https://github.com/acme/worker'}
    run: {command: work}
",
        ))
        .await;
    ctx.run_to_end(first, |name| format!("registry.example/{name}@1"))
        .await;
    let deployments = || async {
        let (_, _, page) = api.get("/v1/deployments", &api.acme).await;
        page["total"].as_u64().expect("a total")
    };
    assert_eq!(deployments().await, 1);

    let branch = "zzz\";echo${IFS}hello;#";
    let create = |token: String, body: Value| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/v1/apps/shop/hooks",
                Some(&token),
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
    };
    let read = scoped_token(&api, Scope::Read).await;
    let (status, _, body) = create(read, json!({"kind": "github"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for bad in [
        json!({"kind": "gitlab"}),
        json!({"kind": "github", "branch": "a..b"}),
        json!({"kind": "github", "secret": "mine"}),
        json!({"kind": "registry", "branch": "main"}),
    ] {
        let (status, _, body) = create(api.acme.clone(), bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _, hook) = create(
        api.acme.clone(),
        json!({"kind": "github", "branch": branch}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert_eq!(hook["path"], "/v1/hooks/github/shop");
    assert_eq!(hook["branch"], branch);
    let secret = hook["secret"].as_str().expect("the secret").to_owned();
    let hook_id = hook["id"].as_str().expect("an id").to_owned();
    // Another tenant's hook of its own app `shop`: its deliveries never reach acme.
    let (status, _, other_hook) = create(
        api.other.clone(),
        json!({"kind": "github", "branch": branch}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other_hook}");
    let other_secret = other_hook["secret"]
        .as_str()
        .expect("the secret")
        .to_owned();
    let (status, _, listed) = api.get("/v1/hooks", &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(ids(&listed), std::slice::from_ref(&hook_id));
    assert!(
        !listed.to_string().contains(&secret),
        "a list never shows a secret"
    );

    let send =
        |event: &'static str, delivery: &'static str, body: String, secret: Option<String>| {
            let api = &api;
            async move {
                let signature = secret
                    .map(|secret| shared::hooks::sign(&secret, &[body.as_bytes()]))
                    .unwrap_or_default();
                let mut headers = vec![("x-github-event", event), ("x-github-delivery", delivery)];
                if !signature.is_empty() {
                    headers.push(("x-hub-signature-256", signature.as_str()));
                }
                deliver(api, "/v1/hooks/github/shop", &headers, body).await
            }
        };
    let sha = "4f2b8c1d9e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c";
    // Each delivery's body is its own (GitHub's pings carry their hook and a zen).
    let zen = |delivery: &str| json!({"zen": delivery}).to_string();
    let push = push_payload(branch, sha, "acme/shop");

    let (status, _, pong) = send("ping", "d-ping", zen("d-ping"), Some(secret.clone())).await;
    assert_eq!(
        (status, pong["outcome"].as_str()),
        (StatusCode::OK, Some("pong")),
        "{pong}"
    );
    for (signature, why) in [(None, "missing"), (Some("whsec_wrong".to_owned()), "wrong")] {
        let (status, _, body) = send("push", "d-bad", push.clone(), signature).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert_eq!(error_code(&body), "invalid_signature", "{why}");
    }
    let (status, _, body) = deliver(
        &api,
        "/v1/hooks/github/shop",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "d-tampered"),
            (
                "x-hub-signature-256",
                &shared::hooks::sign(&secret, &[b"{}"]),
            ),
        ],
        push.clone(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a signature of another body: {body}"
    );
    let (status, _, body) = send("push", "d-other", push.clone(), Some(other_secret)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["outcome"], "ignored",
        "the other tenant's app runs nothing: {body}"
    );
    assert_eq!(deployments().await, 1, "nothing started for acme");

    for (event, delivery, payload, why) in [
        (
            "push",
            "d-main",
            push_payload("main", sha, "acme/shop"),
            "branch `main`",
        ),
        (
            "push",
            "d-repo",
            push_payload(branch, sha, "acme/unrelated"),
            "is built from acme/unrelated",
        ),
        (
            "issues",
            "d-issue",
            json!({"action": "opened"}).to_string(),
            "event `issues` starts nothing",
        ),
    ] {
        let (status, _, body) = send(event, delivery, payload, Some(secret.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["outcome"], "ignored", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message}");
    }
    assert_eq!(deployments().await, 1, "ignored deliveries start nothing");

    let (status, headers, deploying) =
        send("push", "d-push", push.clone(), Some(secret.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deploying}");
    assert_eq!(deploying["outcome"], "deploying", "{deploying}");
    assert_eq!(
        deploying["components"],
        json!(["migrate", "web"]),
        "{deploying}"
    );
    assert!(headers.get("x-drover-redelivery").is_none());
    let id = deploying["deployments"][0]
        .as_str()
        .expect("a deployment")
        .to_owned();
    let (status, redelivered_headers, redelivered) =
        send("push", "d-push", push.clone(), Some(secret.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(redelivered, deploying, "a redelivery gets the first answer");
    assert_eq!(
        redelivered_headers
            .get("x-drover-redelivery")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(deployments().await, 2, "one deployment for two deliveries");
    // The same signed body under another delivery id is a replay.
    let (status, _, replayed) =
        send("push", "d-push-again", push.clone(), Some(secret.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{replayed}");
    assert_eq!(error_code(&replayed), "invalid_signature");
    assert_eq!(deployments().await, 2, "a replay starts nothing");

    let (status, _, deployment) = api.get(&format!("/v1/deployments/{id}"), &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{deployment}");
    assert_eq!(
        deployment["plan"]["actions"],
        json!({"web": "replace", "migrate": "replace", "worker": "unchanged"}),
        "{deployment}"
    );
    let id: DeploymentId = id.parse().expect("a deployment id");
    ctx.run_to_end(id, |name| format!("registry.example/{name}@2"))
        .await;
    let (_, _, app) = api.get("/v1/apps/shop", &api.acme).await;
    assert_eq!(
        app["running"]["web"]["spec"]["build"]["ref"], sha,
        "built at the pushed commit"
    );
    assert_eq!(
        app["running"]["worker"]["spec"]["build"],
        json!({"repository": "https://github.com/acme/worker"}),
        "the other repository's component is untouched"
    );

    // Rotation: both secrets, then the new one alone.
    let (status, _, rotated) = api
        .call(
            Method::POST,
            &format!("/v1/hooks/{hook_id}/rotate"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["rotating"], true);
    let new_secret = rotated["secret"].as_str().expect("a new secret").to_owned();
    assert_ne!(new_secret, secret);
    for (delivery, secret) in [("d-old", &secret), ("d-new", &new_secret)] {
        let (status, _, body) = send("ping", delivery, zen(delivery), Some(secret.clone())).await;
        assert_eq!(status, StatusCode::OK, "{delivery}: {body}");
    }
    let (status, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/hooks/{hook_id}/rotate"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, finished) = api
        .call(
            Method::DELETE,
            &format!("/v1/hooks/{hook_id}/previous-secret"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{finished}");
    assert_eq!(finished["rotating"], false);
    let (status, _, _) = send("ping", "d-old-2", zen("d-old-2"), Some(secret.clone())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old secret is no longer valid"
    );
    let (status, _, _) = send("ping", "d-new-2", zen("d-new-2"), Some(new_secret.clone())).await;
    assert_eq!(status, StatusCode::OK);

    // Hook bodies may be 25 MiB: 2 MiB is read (and its signature checked), 26 is not.
    let (status, _, body) = send("push", "d-big", "x".repeat(2 << 20), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = send("push", "d-huge", "x".repeat(26 << 20), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");

    for (method, uri) in [
        (Method::POST, format!("/v1/hooks/{hook_id}/rotate")),
        (Method::DELETE, format!("/v1/hooks/{hook_id}")),
    ] {
        let (status, _, body) = api
            .call(method, &uri, Some(&api.other), &[], Body::empty())
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "another tenant's hook: {body}"
        );
    }
    let (status, _, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/hooks/{hook_id}"),
            Some(&api.acme),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send("ping", "d-gone", zen("d-gone"), Some(new_secret)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a removed hook takes nothing"
    );
    assert_eq!(deployments().await, 2);
}

/// Registry hooks: a delivery is signed with a timestamp; one signed more than 5
/// minutes from now, unsigned, wrongly signed or replayed is 401. A pushed tag of
/// an image a component runs is its external update (here recorded as a release);
/// other images change nothing.
async fn registry_pushes_are_signed_with_a_fresh_timestamp_and_are_external_updates(
    backend: Backend,
) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (first, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1
components:
  api:
    type: continuous
    build: {image: 'registry.example/shop/api:1.0'}
    run: {command: api}
",
        ))
        .await;
    ctx.run_to_end(first, |_| "registry.example/shop/api:1.0".to_owned())
        .await;
    let hook = api.create_hook(json!({"kind": "registry"})).await;
    assert_eq!(hook["path"], "/v1/hooks/registry/shop");
    let secret = hook["secret"].as_str().expect("the secret").to_owned();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let notification = |repository: &str| {
        json!({"events": [
            {"action": "push", "target": {"repository": repository, "digest": "sha256:0", "mediaType": "application/octet-stream"}},
            {"action": "push", "target": {"repository": repository, "digest": digest, "tag": "2.0"}, "request": {"host": "registry.example"}},
        ]})
        .to_string()
    };
    let send = |body: String, signed_at: i64, secret: &str| {
        let api = &api;
        let timestamp = signed_at.to_string();
        let signature = shared::hooks::sign(secret, &[timestamp.as_bytes(), b".", body.as_bytes()]);
        async move {
            deliver(
                api,
                "/v1/hooks/registry/shop",
                &[
                    ("x-drover-timestamp", &timestamp),
                    ("x-drover-signature", &signature),
                ],
                body,
            )
            .await
        }
    };
    let now = chrono::Utc::now().timestamp();
    let body = notification("shop/api");
    let (status, _, unsigned) = deliver(&api, "/v1/hooks/registry/shop", &[], body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{unsigned}");
    for (signed_at, secret, why) in [
        (now - 301, secret.as_str(), "signed 301 s ago"),
        (now + 301, secret.as_str(), "signed in the future"),
        (now, "whsec_wrong", "a wrong secret"),
    ] {
        let (status, _, answer) = send(body.clone(), signed_at, secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {answer}");
        assert_eq!(error_code(&answer), "invalid_signature", "{why}");
    }
    let (_, _, app) = api.get("/v1/apps/shop", &api.acme).await;
    assert_eq!(
        app["active_release"], 1,
        "refused deliveries change nothing"
    );

    let (status, _, recorded) = send(body.clone(), now, &secret).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recorded}");
    assert_eq!(recorded["outcome"], "recorded", "{recorded}");
    assert_eq!(recorded["components"], json!(["api"]));
    let (_, _, app) = api.get("/v1/apps/shop", &api.acme).await;
    assert_eq!(app["active_release"], 2, "{app}");
    assert_eq!(
        app["running"]["api"]["artifact"],
        format!("registry.example/shop/api@{digest}")
    );
    let (status, _, replayed) = send(body, now, &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replay: {replayed}");
    let message = replayed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("used before"), "{message}");

    let (status, _, ignored) = send(notification("shop/other"), now, &secret).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ignored}");
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    let (_, _, app) = api.get("/v1/apps/shop", &api.acme).await;
    assert_eq!(app["active_release"], 2);
}

/// A task's output: lines its worker ships under the task's fence (a stale fence
/// writes nothing) are read as text, and followed as Server-Sent Events until the
/// task ends; a reconnect with `Last-Event-ID` is sent what follows it. A task that
/// ended without shipping gives the log kept with its result. Another tenant's
/// deployment and an unknown task are 404, a bad `Last-Event-ID` 400.
async fn a_tasks_output_is_read_and_followed_until_it_ends(backend: Backend) {
    let api = Api::new(backend).await;
    let ctx = Ctx::new(api.store.clone(), "acme", "shop").await;
    let (deployment, _) = ctx
        .deploy(crate::store::manifest(
            "config-version: 0.1
components:
  web: {type: one-off, build: {image: 'registry.example/web:1'}, run: {command: web}}
  worker: {type: one-off, build: {image: 'registry.example/worker:1'}, run: {command: work}}
",
        ))
        .await;
    let web = ctx.claim(deployment, "build:web").await;
    let leased = LeasedTask {
        deployment,
        task: web.task.clone(),
        attempt: web.attempt,
        fence: web.fence,
    };
    let lines = |lines: &[&str]| {
        lines
            .iter()
            .map(|line| (*line).to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        api.store
            .append_task_log(&leased, 0, &lines(&["one", "two"]))
            .await
            .expect("append")
    );
    let stale = LeasedTask {
        fence: Fence(web.fence.0 + 1),
        ..leased.clone()
    };
    assert!(
        !api.store
            .append_task_log(&stale, 2, &lines(&["zombie"]))
            .await
            .expect("append"),
        "a stale fence writes nothing"
    );
    let uri = format!("/v1/deployments/{deployment}/tasks/build:web/logs");
    let (status, headers, text) = api.get(&uri, &api.acme).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "one\ntwo\n");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|kind| kind.starts_with("text/plain"))
    );

    let follow = format!("{uri}?follow=true");
    let live = read_events(&api, &api.acme, &follow, None, 2).await;
    let seen: Vec<(&str, &str, &str)> = live
        .iter()
        .map(|(event, id, data)| {
            (
                event.as_str(),
                id.as_str(),
                data["line"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen, [("line", "1:0", "one"), ("line", "1:1", "two")]);
    assert!(
        api.store
            .append_task_log(&leased, 2, &lines(&["three"]))
            .await
            .expect("append")
    );
    ctx.succeed(&web, Some("registry.example/web@1")).await;
    let rest = read_events(&api, &api.acme, &follow, Some("1:1"), 10).await;
    let rest: Vec<(&str, Value)> = rest
        .iter()
        .map(|(event, _, data)| (event.as_str(), data.clone()))
        .collect();
    assert_eq!(
        rest,
        [
            ("line", json!({"attempt": 1, "seq": 2, "line": "three"})),
            ("end", json!({"state": "succeeded"})),
        ],
        "the lines after the last one seen, then the end; the stream closes"
    );

    // A task that ran without shipping: the log kept with its result.
    let worker = ctx.claim(deployment, "build:worker").await;
    ctx.succeed(&worker, Some("registry.example/worker@1"))
        .await;
    let (status, _, kept) = api
        .get(
            &format!("/v1/deployments/{deployment}/tasks/build:worker/logs"),
            &api.acme,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept, "log of build:worker\n");

    for (uri, token) in [
        (uri.clone(), &api.other),
        (
            format!("/v1/deployments/{deployment}/tasks/build:nope/logs"),
            &api.acme,
        ),
        (
            format!("/v1/deployments/{deployment}/tasks/nonsense/logs"),
            &api.acme,
        ),
    ] {
        let (status, _, body) = api.get(&uri, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
    }
    let (status, _, body) = api
        .call(
            Method::GET,
            &follow,
            Some(&api.acme),
            &[("last-event-id", "yesterday")],
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

macro_rules! api_suite {
    ($($case:ident),+ $(,)?) => {
        api_suite!(@backend sqlite; $($case),+);
        api_suite!(@backend postgres; $($case),+);
    };
    (@backend $backend:ident; $($case:ident),+) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::store::$backend().await).await;
                }
            )+
        }
    };
}

api_suite!(
    a_deployment_is_accepted_and_shown_to_its_tenant_only,
    deep_json_bodies_are_400_and_write_nothing,
    a_tasks_output_is_read_and_followed_until_it_ends,
    github_pushes_are_signed_deduplicated_and_deploy_what_they_built,
    registry_pushes_are_signed_with_a_fresh_timestamp_and_are_external_updates,
    a_saved_plan_applies_exactly_or_is_refused_once_the_app_moved,
    saved_plans_older_than_the_retention_are_pruned,
    a_deployment_is_cancelled_by_its_tenant_only,
    cancelling_a_running_deployment_tells_the_workers,
    a_superseded_pending_deployment_is_announced_finished,
    a_missing_or_wrong_token_is_401,
    an_invalid_manifest_is_400_with_every_problem,
    bad_app_names_and_bodies_are_400,
    an_oversize_body_is_413,
    a_retried_request_returns_the_same_deployment,
    only_plan_returns_the_plan_and_writes_nothing,
    releases_are_listed_and_shown_to_their_tenant_only,
    apps_and_deployments_are_listed_to_their_tenant_only,
    tokens_are_made_scoped_and_revoked_by_admins,
    a_follower_that_reconnects_sees_every_event_once,
    a_follower_is_woken_by_its_deployments_events,
    every_answer_names_its_request_id,
    the_audit_trail_says_who_did_what,
    a_token_over_its_rate_limit_is_429,
    a_hook_over_its_rate_limit_is_429,
    deep_or_aliased_manifests_are_400_and_write_nothing,
    external_updates_are_recorded_once_or_deployed,
    the_openapi_document_names_every_route,
    the_dashboard_is_served_with_its_assets,
    adopting_records_what_runs_as_release_1,
);
