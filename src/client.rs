//! The CLI as a client of a drover API (`--server`, `--token`): every command but
//! `migrate`, `tenant` and the roles; `plan` and `deploy` submit there and follow
//! the deployment until it ends, from its live events (Server-Sent Events).

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use api::body::{
    AdoptionBody, DeploymentBody, ExternalUpdateAnswer, ExternalUpdateRequest, HookSecretBody,
    NewHookBody, NewTokenBody, SavedPlanBody, TokenBody, TokenCreatedBody,
};
use api::progress::Progress;
use backon::{BackoffBuilder as _, ExponentialBuilder, Retryable as _};
use reqwest::StatusCode;
use scheduler::Policies;
use serde_json::Value;
use shared::ids::{DeploymentId, HookId, PlanId, TaskId, TenantId, TokenId};
use shared::model::TaskState;
use shared::names::AppName;
use shared::plan::Plan;
use shared::release::ExternalUpdate;
use shared::store::{Deployment, LogLine, TaskView};

use crate::Failure;

/// How long an event stream may stay silent before it is opened again.
const STREAM_SILENCE: Duration = Duration::from_secs(60);
/// How many times a request that is safe to repeat is sent again after a
/// transient failure (pauses from 250 ms, doubling up to 5 s: about 40 s in all).
const SEND_RETRIES: usize = 11;

/// A drover API and the token to call it with.
#[derive(Debug)]
pub(crate) struct Client {
    server: String,
    token: String,
    http: reqwest::Client,
    /// For event streams, which last as long as their deployment: no limit on the
    /// whole request, only on silence (the API sends a keep-alive every 15 s).
    streams: reqwest::Client,
}

/// What a submission returned.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// `only_plan`: the plan alone.
    Plan(Plan),
    Deployment(Box<Deployment>),
}

impl Client {
    pub(crate) fn new(server: &str, token: Option<&str>) -> Result<Self, Failure> {
        let token = token.filter(|token| !token.is_empty()).ok_or_else(|| {
            Failure::BadInput(anyhow!(
                "--server needs a token: pass --token or set DROVER_TOKEN (see `drover tenant create`)"
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("failed to set up the HTTP client")?;
        let streams = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(STREAM_SILENCE)
            .build()
            .context("failed to set up the HTTP client")?;
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
            streams,
        })
    }

    /// Submits a manifest (already validated locally) for `app`, under an
    /// idempotency key of its own, so that sending it again after a transient
    /// failure never makes a second deployment.
    pub(crate) async fn submit(
        &self,
        app: &AppName,
        manifest: String,
        only_plan: bool,
        prune: bool,
        components: &[String],
        policies: Policies,
    ) -> Result<Submitted, Failure> {
        let path = format!(
            "/v1/apps/{app}/deployments?only_plan={only_plan}&{}",
            plan_query(prune, components, policies)
        );
        let body = self
            .send(Request::post(path).keyed().yaml(manifest))
            .await?;
        if only_plan {
            let plan = serde_json::from_value(body).context("the API answered with no plan")?;
            Ok(Submitted::Plan(plan))
        } else {
            Ok(Submitted::Deployment(Box::new(deployment(body)?)))
        }
    }

    pub(crate) async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(
            self.send(Request::get(format!("/v1/deployments/{id}")))
                .await?,
        )
    }

    /// Cancels a deployment (409, already ended, is bad input). Sent once: sent
    /// again after it took effect, it would be refused.
    pub(crate) async fn cancel(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(
            self.send(Request::post(format!("/v1/deployments/{id}/cancel")).once())
                .await?,
        )
    }

    /// Reopens a failed deployment's failed and skipped tasks (409 when it cannot).
    /// Sent once, like a cancellation.
    pub(crate) async fn retry(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(
            self.send(Request::post(format!("/v1/deployments/{id}/retry")).once())
                .await?,
        )
    }

    /// Adopts the running app the manifest (already validated locally) describes
    /// (adopting again changes nothing).
    pub(crate) async fn adopt(
        &self,
        app: &AppName,
        manifest: String,
    ) -> Result<AdoptionBody, Failure> {
        let body = self
            .send(Request::post(format!("/v1/apps/{app}/adopt")).yaml(manifest))
            .await?;
        Ok(serde_json::from_value(body).context("the API answered with no adoption")?)
    }

    /// Starts a rollback of `app` to release `version`, under an idempotency key.
    /// Saves the plan of `manifest` on the server (sent again after a transient
    /// failure, it may keep a second, unused plan).
    pub(crate) async fn save_plan(
        &self,
        app: &AppName,
        manifest: String,
        prune: bool,
        components: &[String],
    ) -> Result<SavedPlanBody, Failure> {
        let query = plan_query(prune, components, Policies::default());
        let request = Request::post(format!("/v1/apps/{app}/plans?{query}")).yaml(manifest);
        let body = self.send(request).await?;
        Ok(serde_json::from_value(body).context("the API answered with no plan")?)
    }

    /// Starts the deployment of a saved plan (applied again, the API answers with
    /// the same deployment: safe to repeat).
    pub(crate) async fn apply_plan(&self, id: PlanId) -> Result<Deployment, Failure> {
        deployment(
            self.send(Request::post(format!("/v1/plans/{id}/apply")))
                .await?,
        )
    }

    pub(crate) async fn rollback(
        &self,
        app: &AppName,
        version: u32,
    ) -> Result<Deployment, Failure> {
        let request = Request::post(format!("/v1/apps/{app}/releases/{version}/rollback")).keyed();
        deployment(self.send(request).await?)
    }

    /// Sends an external update (the same update again records nothing more):
    /// what the API answered, with the deployment that deploys it, if any.
    pub(crate) async fn external_update(
        &self,
        app: &AppName,
        update: &ExternalUpdate,
    ) -> Result<(ExternalUpdateAnswer, Option<Deployment>), Failure> {
        let request = Request::post(format!(
            "/v1/apps/{app}/components/{}/external-updates",
            update.component
        ))
        .json(&ExternalUpdateRequest {
            artifact: update.artifact.clone(),
            version: update.version.clone(),
            sha: update.sha.clone(),
        })?;
        let mut body = self.send(request).await?;
        let deployment = match body.get_mut("deployment").map(Value::take) {
            Some(Value::Null) | None => None,
            Some(value) => Some(deployment(value)?),
        };
        let answer: ExternalUpdateAnswer =
            serde_json::from_value(body).context("the API answered with no update")?;
        Ok((answer, deployment))
    }

    /// Makes a token. Sent once: sent again after it took effect, it would make a
    /// second token.
    pub(crate) async fn create_token(
        &self,
        token: &NewTokenBody,
    ) -> Result<TokenCreatedBody, Failure> {
        let body = self
            .send(Request::post("/v1/tokens".to_owned()).json(token)?.once())
            .await?;
        Ok(serde_json::from_value(body).context("the API answered with no token")?)
    }

    /// Revokes a token (revoking it again changes nothing, so it is safe to repeat).
    pub(crate) async fn revoke_token(&self, id: TokenId) -> Result<TokenBody, Failure> {
        self.delete(format!("/v1/tokens/{id}"), "token").await
    }

    /// Makes a hook. Sent once: sent again after it took effect, it would make a
    /// second hook.
    pub(crate) async fn create_hook(
        &self,
        app: &AppName,
        hook: &NewHookBody,
    ) -> Result<HookSecretBody, Failure> {
        let request = Request::post(format!("/v1/apps/{app}/hooks"))
            .json(hook)?
            .once();
        let body = self.send(request).await?;
        Ok(serde_json::from_value(body).context("the API answered with no hook")?)
    }

    /// Rotates a hook's secret. Sent once: sent again, it would be refused (a
    /// rotation is under way), and the first answer's secret lost.
    pub(crate) async fn rotate_hook(&self, id: HookId) -> Result<HookSecretBody, Failure> {
        let request = Request::post(format!("/v1/hooks/{id}/rotate")).once();
        let body = self.send(request).await?;
        Ok(serde_json::from_value(body).context("the API answered with no hook")?)
    }

    /// The answer to a `DELETE` of `path` (deleting again changes nothing, so it
    /// is safe to repeat), read as `T`.
    pub(crate) async fn delete<T: serde::de::DeserializeOwned>(
        &self,
        path: String,
        what: &str,
    ) -> Result<T, Failure> {
        let body = self.send(Request::delete(path)).await?;
        Ok(serde_json::from_value(body)
            .with_context(|| format!("the API answered with no {what}"))?)
    }

    /// The answer to a `GET` of `path`, read as `T` (`what` names it in an error).
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: String,
        what: &str,
    ) -> Result<T, Failure> {
        let body = self.send(Request::get(path)).await?;
        Ok(serde_json::from_value(body)
            .with_context(|| format!("the API answered with no {what}"))?)
    }

    /// Sends a request and returns the JSON of its successful answer. A request
    /// that is safe to repeat is sent again after a transient failure (the API
    /// unreachable, or answering 500, 502, 503 or 504: a restart, a failover),
    /// with growing pauses, for about 40 s in all.
    async fn send(&self, request: Request) -> Result<Value, Failure> {
        let attempt = || async {
            let mut builder = self
                .http
                .request(
                    request.method.clone(),
                    format!("{}{}", self.server, request.path),
                )
                .bearer_auth(&self.token);
            if let Some(key) = &request.idempotency_key {
                builder = builder.header("Idempotency-Key", key);
            }
            if let Some((content_type, body)) = &request.body {
                builder = builder
                    .header("content-type", *content_type)
                    .body(body.clone());
            }
            let response = builder.send().await.map_err(|err| Refusal {
                transient: true,
                failure: Failure::Error(
                    anyhow::Error::new(err)
                        .context(format!("failed to reach the drover API at {}", self.server)),
                ),
            })?;
            answer(response).await
        };
        let retries = if request.repeatable { SEND_RETRIES } else { 0 };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(250))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(retries),
            )
            .when(|refusal: &Refusal| refusal.transient)
            .notify(|refusal: &Refusal, after: Duration| {
                tracing::warn!(error = %refusal, ?after, "the drover API did not answer; asking again");
            })
            .await
            .map_err(|refusal| refusal.failure)
    }

    /// Follows the deployment until it ends, from its live events
    /// (`GET /v1/deployments/{id}/events`), handing `on_update` a snapshot at every
    /// step: a task's start from the event, its end from the deployment read again
    /// (for its duration and error). A stream that breaks is opened again where it
    /// left off (`Last-Event-ID`), with growing pauses while the API is away.
    pub(crate) async fn follow(
        &self,
        mut deployment: Deployment,
        on_update: &mut (dyn for<'d> FnMut(&'d Deployment) + Send),
    ) -> Result<Deployment, Failure> {
        on_update(&deployment);
        if deployment.state.is_terminal() {
            return Ok(deployment);
        }
        let id = deployment.id;
        let mut last_id: Option<String> = None;
        let mut pauses = reconnect_pauses();
        loop {
            let mut response = match self.open_events(id, last_id.as_deref()).await {
                Ok(response) => response,
                Err(refusal) => match pauses.next() {
                    Some(pause) if refusal.transient => {
                        tracing::warn!(error = %refusal, ?pause, "the drover API did not answer; following again");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    _ => return Err(refusal.failure),
                },
            };
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    let Some((event_id, progress)) = sse_event(&block) else {
                        continue;
                    };
                    last_id = Some(event_id);
                    pauses = reconnect_pauses();
                    match progress {
                        Progress::Task {
                            task,
                            state,
                            attempt,
                        } => {
                            if state.is_terminal() {
                                deployment = self.deployment(id).await?;
                            } else if let Some(view) = deployment
                                .tasks
                                .iter_mut()
                                .find(|view| view.id.as_str() == task)
                            {
                                view.state = state;
                                view.attempts = attempt;
                            }
                            on_update(&deployment);
                        }
                        Progress::End { .. } => {
                            let deployment = self.deployment(id).await?;
                            on_update(&deployment);
                            return Ok(deployment);
                        }
                    }
                }
            }
            // The stream broke before the end: open it again where it left off.
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    return Err(Failure::Error(anyhow!(
                        "lost the events of deployment {id}: follow it with `drover status {id} --follow`"
                    )));
                }
            }
        }
    }

    /// Hands `on_line` the task's output (`GET …/tasks/{task}/logs`); with
    /// `follow`, live until the task ends, reconnecting where it left off, and
    /// returns its end state.
    pub(crate) async fn task_log(
        &self,
        id: DeploymentId,
        task: &TaskId,
        follow: bool,
        on_line: &mut (dyn for<'l> FnMut(&'l LogLine) + Send),
    ) -> Result<Option<TaskState>, Failure> {
        let path = format!("/v1/deployments/{id}/tasks/{task}/logs");
        if !follow {
            let response = self
                .http
                .get(format!("{}{path}", self.server))
                .bearer_auth(&self.token)
                .send()
                .await
                .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
            if !response.status().is_success() {
                return Err(match answer(response).await {
                    Ok(_) => Failure::Error(anyhow!("the API answered with no log")),
                    Err(refusal) => refusal.failure,
                });
            }
            let text = response.text().await.context("failed to read the log")?;
            for (seq, line) in text.lines().enumerate() {
                on_line(&LogLine {
                    attempt: 0,
                    seq: seq as u64,
                    line: line.to_owned(),
                });
            }
            return Ok(None);
        }
        let path = format!("{path}?follow=true");
        let mut last_id: Option<String> = None;
        let mut pauses = reconnect_pauses();
        loop {
            match self.open_stream(&path, last_id.as_deref()).await {
                Ok(mut response) => {
                    let mut text = String::new();
                    while let Ok(Some(chunk)) = response.chunk().await {
                        text.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = text.find("\n\n") {
                            let block: String = text.drain(..end + 2).collect();
                            let Some((event, event_id, data)) = sse_fields(&block) else {
                                continue;
                            };
                            last_id = Some(event_id.to_owned());
                            pauses = reconnect_pauses();
                            if event == "end" {
                                let end: Value = serde_json::from_str(data)
                                    .context("the API sent an end without a state")?;
                                let state = end["state"]
                                    .as_str()
                                    .and_then(|state| state.parse().ok())
                                    .context("the API sent an end without a state")?;
                                return Ok(Some(state));
                            }
                            if let Ok(line) = serde_json::from_str::<LogLine>(data) {
                                on_line(&line);
                            }
                        }
                    }
                }
                Err(refusal) if !refusal.transient => return Err(refusal.failure),
                Err(refusal) => {
                    tracing::warn!(error = %refusal, "the drover API did not answer; following again");
                }
            }
            // The stream broke before the end: open it again where it left off.
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    return Err(Failure::Error(anyhow!(
                        "lost the output of {task} of deployment {id}: follow it again with `drover logs {id} {task} --follow`"
                    )));
                }
            }
        }
    }

    /// Opens the deployment's event stream after the event `last_id`.
    async fn open_events(
        &self,
        id: DeploymentId,
        last_id: Option<&str>,
    ) -> Result<reqwest::Response, Refusal> {
        self.open_stream(&format!("/v1/deployments/{id}/events"), last_id)
            .await
    }

    /// Opens the event stream at `path` after the event `last_id`.
    async fn open_stream(
        &self,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<reqwest::Response, Refusal> {
        let mut request = self
            .streams
            .get(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream");
        if let Some(last_id) = last_id {
            request = request.header("last-event-id", last_id);
        }
        let response = request.send().await.map_err(|err| Refusal {
            transient: true,
            failure: Failure::Error(
                anyhow::Error::new(err)
                    .context(format!("failed to reach the drover API at {}", self.server)),
            ),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(match answer(response).await {
            Ok(_) => Refusal {
                transient: false,
                failure: Failure::Error(anyhow!("the API answered an event stream with no events")),
            },
            Err(refusal) => refusal,
        })
    }
}

/// Pauses between attempts to reach the API again: from 250 ms, doubling up to
/// 5 s, about 40 s in all.
fn reconnect_pauses() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(SEND_RETRIES)
        .build()
}

/// The id and progress of one Server-Sent Event (a block of lines); `None` for a
/// keep-alive comment or an event of another kind.
fn sse_event(block: &str) -> Option<(String, Progress)> {
    let (_, id, data) = sse_fields(block)?;
    Some((id.to_owned(), serde_json::from_str(data).ok()?))
}

/// The event name, id and data of one Server-Sent Event; `None` for a keep-alive
/// comment.
fn sse_fields(block: &str) -> Option<(&str, &str, &str)> {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.strip_prefix(' ').unwrap_or(value))
    };
    Some((field("event")?, field("id")?, field("data")?))
}

/// The body of a successful answer; an API error becomes a failure that says what
/// the API said (4xx: bad input, exit 2).
/// The JSON of a successful answer, or why the request was refused.
async fn answer(response: reqwest::Response) -> Result<Value, Refusal> {
    let status = response.status();
    let transient = matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    );
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(err) => {
            return Err(Refusal {
                // A proxy in front of a restarting API answers in HTML.
                transient,
                failure: Failure::Error(anyhow!(
                    "the API answered {status} with a body that is not JSON: {err}"
                )),
            });
        }
    };
    if status.is_success() {
        return Ok(body);
    }
    // The driver's status step failing is the driver's answer, not the API's
    // absence: asking again at once would only run it again.
    let transient = transient && body["error"]["code"] != "driver_failed";
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_owned();
    let error = anyhow!("the API refused the request ({status}): {message}");
    Err(Refusal {
        transient,
        failure: if status.is_client_error() {
            Failure::BadInput(error)
        } else {
            Failure::Error(error)
        },
    })
}

/// Why a request failed, and whether sending it again may succeed.
#[derive(Debug)]
struct Refusal {
    transient: bool,
    failure: Failure,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.failure.fmt(f)
    }
}

/// The query string of how a manifest is planned (component names are DNS labels:
/// nothing to escape).
fn plan_query(prune: bool, components: &[String], policies: Policies) -> String {
    let mut query = format!("prune={prune}");
    if !components.is_empty() {
        query.push_str(&format!("&components={}", components.join(",")));
    }
    if let Some(policy) = policies.concurrency {
        query.push_str(&format!("&concurrency={policy}"));
    }
    if let Some(strategy) = policies.strategy {
        query.push_str(&format!("&strategy={strategy}"));
    }
    if policies.auto_rollback {
        query.push_str("&auto_rollback=true");
    }
    query
}

/// A request to the API.
#[derive(Debug)]
struct Request {
    method: reqwest::Method,
    /// The path and query string (app names and numbers need no escaping).
    path: String,
    /// The content type and the body.
    body: Option<(&'static str, String)>,
    idempotency_key: Option<String>,
    /// Whether sending it twice is harmless (a GET, an idempotent POST).
    repeatable: bool,
}

impl Request {
    fn get(path: String) -> Self {
        Self {
            method: reqwest::Method::GET,
            path,
            body: None,
            idempotency_key: None,
            repeatable: true,
        }
    }

    /// A POST whose effect is the same however often it is sent, by nature (an
    /// adoption, an external update) or by its idempotency key ([`Request::keyed`]).
    fn post(path: String) -> Self {
        Self {
            method: reqwest::Method::POST,
            ..Self::get(path)
        }
    }

    /// Sends an idempotency key of its own, which makes it safe to repeat.
    fn keyed(self) -> Self {
        Self {
            idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
            ..self
        }
    }

    /// Never sent twice.
    fn delete(path: String) -> Self {
        Self {
            method: reqwest::Method::DELETE,
            ..Self::get(path)
        }
    }

    fn once(self) -> Self {
        Self {
            repeatable: false,
            ..self
        }
    }

    fn yaml(self, manifest: String) -> Self {
        Self {
            body: Some(("application/yaml", manifest)),
            ..self
        }
    }

    fn json(self, body: &impl serde::Serialize) -> Result<Self, Failure> {
        let body = serde_json::to_string(body).context("failed to write the request")?;
        Ok(Self {
            body: Some(("application/json", body)),
            ..self
        })
    }
}

/// The deployment in an API answer, as the store would give it.
fn deployment(body: Value) -> Result<Deployment, Failure> {
    let body: DeploymentBody =
        serde_json::from_value(body).context("the API answered with no deployment")?;
    let corrupt = |what: &str| anyhow!("the API answered with an invalid {what}");
    let plan: Plan = serde_json::to_value(&body.plan)
        .and_then(serde_json::from_value)
        .map_err(|_| corrupt("plan"))?;
    let tasks = body
        .tasks
        .into_iter()
        .map(|task| {
            Ok(TaskView {
                id: task.id.parse().map_err(|_| corrupt("task id"))?,
                kind: task.kind,
                component: task.component.parse().map_err(|_| corrupt("component"))?,
                state: task.state,
                attempts: task.attempts,
                needs: task
                    .needs
                    .iter()
                    .map(|need| need.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| corrupt("task id"))?,
                started_at: task.started_at,
                finished_at: task.finished_at,
                artifact: task.artifact,
                error: task.error,
                log: task.log,
                waiting: task.waiting,
                phase: task.phase,
            })
        })
        .collect::<Result<Vec<_>, anyhow::Error>>()?;
    Ok(Deployment {
        id: body.id.parse().map_err(|_| corrupt("deployment id"))?,
        // The API does not say, and the CLI does not show it.
        tenant: TenantId(Default::default()),
        app: body.app.parse().map_err(|_| corrupt("app name"))?,
        state: body.state,
        created_at: body.created_at,
        started_at: body.started_at,
        finished_at: body.finished_at,
        base_release: body.base_release,
        release: body.release.map(|release| release.version),
        partially_applied: body.partially_applied,
        strategy: body.strategy,
        rolled_back_by: body
            .rolled_back_by
            .map(|id| id.parse().map_err(|_| corrupt("deployment id")))
            .transpose()?,
        plan,
        tasks,
    })
}
