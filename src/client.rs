//! The CLI as a client of a drover API (`--server`, `--token`): `plan` and `deploy`
//! submit there and follow the deployment by polling until it ends.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use api::body::{
    AdoptionBody, DeploymentBody, ExternalUpdateAnswer, ExternalUpdateRequest, ReleaseBody,
    ReleasePage,
};
use reqwest::StatusCode;
use scheduler::Policies;
use serde_json::Value;
use shared::ids::{DeploymentId, TenantId};
use shared::names::AppName;
use shared::plan::Plan;
use shared::release::ExternalUpdate;
use shared::store::{Deployment, PageRequest, TaskView};

use crate::Failure;

/// How often a followed deployment is read again.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// A drover API and the token to call it with.
#[derive(Debug)]
pub(crate) struct Client {
    server: String,
    token: String,
    http: reqwest::Client,
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
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// Submits a manifest (already validated locally) for `app`.
    pub(crate) async fn submit(
        &self,
        app: &AppName,
        manifest: String,
        only_plan: bool,
        prune: bool,
        components: &[String],
        policies: Policies,
    ) -> Result<Submitted, Failure> {
        let mut url = format!(
            "{}/v1/apps/{app}/deployments?only_plan={only_plan}&prune={prune}",
            self.server
        );
        if !components.is_empty() {
            // Component names are DNS labels: nothing to escape.
            url.push_str(&format!("&components={}", components.join(",")));
        }
        if let Some(policy) = policies.concurrency {
            url.push_str(&format!("&concurrency={policy}"));
        }
        if let Some(strategy) = policies.strategy {
            url.push_str(&format!("&strategy={strategy}"));
        }
        if policies.auto_rollback {
            url.push_str("&auto_rollback=true");
        }
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(manifest)
            .send()
            .await
            .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
        let body = answer(response).await?;
        if only_plan {
            let plan = serde_json::from_value(body).context("the API answered with no plan")?;
            Ok(Submitted::Plan(plan))
        } else {
            Ok(Submitted::Deployment(Box::new(deployment(body)?)))
        }
    }

    pub(crate) async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(self.get(&format!("/v1/deployments/{id}")).await?)
    }

    /// Cancels a deployment (409, already ended, is bad input).
    pub(crate) async fn cancel(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(self.post(&format!("/v1/deployments/{id}/cancel")).await?)
    }

    /// Reopens a failed deployment's failed and skipped tasks (409 when it cannot).
    pub(crate) async fn retry(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        deployment(self.post(&format!("/v1/deployments/{id}/retry")).await?)
    }

    /// Adopts the running app the manifest (already validated locally) describes.
    pub(crate) async fn adopt(
        &self,
        app: &AppName,
        manifest: String,
    ) -> Result<AdoptionBody, Failure> {
        let response = self
            .http
            .post(format!("{}/v1/apps/{app}/adopt", self.server))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(manifest)
            .send()
            .await
            .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
        let body = answer(response).await?;
        Ok(serde_json::from_value(body).context("the API answered with no adoption")?)
    }

    /// Starts a rollback of `app` to release `version`.
    pub(crate) async fn rollback(
        &self,
        app: &AppName,
        version: u32,
    ) -> Result<Deployment, Failure> {
        deployment(
            self.post(&format!("/v1/apps/{app}/releases/{version}/rollback"))
                .await?,
        )
    }

    /// Sends an external update: what the API answered, with the deployment that
    /// deploys it, if any.
    pub(crate) async fn external_update(
        &self,
        app: &AppName,
        update: &ExternalUpdate,
    ) -> Result<(ExternalUpdateAnswer, Option<Deployment>), Failure> {
        let response = self
            .http
            .post(format!(
                "{}/v1/apps/{app}/components/{}/external-updates",
                self.server, update.component
            ))
            .bearer_auth(&self.token)
            .json(&ExternalUpdateRequest {
                artifact: update.artifact.clone(),
                version: update.version.clone(),
                sha: update.sha.clone(),
            })
            .send()
            .await
            .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
        let mut body = answer(response).await?;
        let deployment = match body.get_mut("deployment").map(Value::take) {
            Some(Value::Null) | None => None,
            Some(value) => Some(deployment(value)?),
        };
        let answer: ExternalUpdateAnswer =
            serde_json::from_value(body).context("the API answered with no update")?;
        Ok((answer, deployment))
    }

    /// POSTs to `path` without a body.
    async fn post(&self, path: &str) -> Result<Value, Failure> {
        let response = self
            .http
            .post(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
        answer(response).await
    }

    /// A page of an app's releases.
    pub(crate) async fn releases(
        &self,
        app: &AppName,
        page: PageRequest,
    ) -> Result<ReleasePage, Failure> {
        let mut path = format!("/v1/apps/{app}/releases?limit={}", page.limit);
        if let Some(before) = page.before {
            path.push_str(&format!("&cursor={before}"));
        }
        let body = self.get(&path).await?;
        Ok(serde_json::from_value(body).context("the API answered with no releases")?)
    }

    /// One release of an app.
    pub(crate) async fn release(
        &self,
        app: &AppName,
        version: u32,
    ) -> Result<ReleaseBody, Failure> {
        let body = self
            .get(&format!("/v1/apps/{app}/releases/{version}"))
            .await?;
        Ok(serde_json::from_value(body).context("the API answered with no release")?)
    }

    /// GETs `path` (with its query string: app names and numbers need no escaping).
    async fn get(&self, path: &str) -> Result<Value, Failure> {
        let response = self
            .http
            .get(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("failed to reach the drover API at {}", self.server))?;
        answer(response).await
    }

    /// Polls the deployment until it ends, handing every snapshot to `on_update`.
    pub(crate) async fn follow(
        &self,
        mut deployment: Deployment,
        mut on_update: impl FnMut(&Deployment),
    ) -> Result<Deployment, Failure> {
        loop {
            on_update(&deployment);
            if deployment.state.is_terminal() {
                return Ok(deployment);
            }
            tokio::time::sleep(POLL_EVERY).await;
            deployment = self.deployment(deployment.id).await?;
        }
    }
}

/// The body of a successful answer; an API error becomes a failure that says what
/// the API said (4xx: bad input, exit 2).
async fn answer(response: reqwest::Response) -> Result<Value, Failure> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("the API answered {status} with a body that is not JSON"))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_owned();
    let error = anyhow!("the API refused the request ({status}): {message}");
    Err(match status {
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE => {
            Failure::Error(error)
        }
        status if status.is_client_error() => Failure::BadInput(error),
        _ => Failure::Error(error),
    })
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
        strategy: body.strategy,
        rolled_back_by: body
            .rolled_back_by
            .map(|id| id.parse().map_err(|_| corrupt("deployment id")))
            .transpose()?,
        plan,
        tasks,
    })
}
