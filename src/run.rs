//! The commands that start a deployment and follow it to its end, written once
//! against [`Runner`]: on the embedded default it runs the scheduler and worker
//! roles in this process while the deployment runs ([`Embedded`]); with
//! `--server` it asks the API and follows the deployment's live events.

use anyhow::Context as _;
use api::body::ExternalUpdateAnswer;
use scheduler::planner::PlanOptions;
use scheduler::{ExternalOutcome, Policies};
use shared::config::Config;
use shared::ids::{DeploymentId, PlanId};
use shared::manifest::Manifest;
use shared::model::{DeploymentState, Unknown};
use shared::names::AppName;
use shared::release::ExternalUpdate;
use shared::store::{Deployment, Retry};

use crate::Failure;
use crate::client::{Client, Submitted};
use crate::deploy::{
    Embedded, Output, PlanArgs, existing_store, follow_auto_rollback_remote, follow_remote,
    observe, say, submit_failure, unknown,
};

/// Where a deployment is started and followed.
pub(crate) enum Runner<'a> {
    Embedded { roles: Embedded, config: &'a Config },
    Server { client: &'a Client, output: Output },
}

impl<'a> Runner<'a> {
    /// The API with `--server`, else the roles started here.
    pub(crate) async fn start(
        config: &'a Config,
        remote: Option<&'a Client>,
        output: Output,
    ) -> Result<Runner<'a>, Failure> {
        Ok(match remote {
            Some(client) => Runner::Server { client, output },
            None => Runner::Embedded {
                roles: Embedded::start(config, output).await?,
                config,
            },
        })
    }

    /// Like [`Runner::start`], for a command that names something stored before:
    /// should nothing have been stored here yet, `missing` is said without
    /// creating a database.
    pub(crate) async fn open(
        config: &'a Config,
        remote: Option<&'a Client>,
        output: Output,
        missing: impl FnOnce() -> Unknown,
    ) -> Result<Runner<'a>, Failure> {
        if remote.is_none() {
            existing_store(config)
                .await?
                .ok_or_else(|| unknown(missing()))?;
        }
        Self::start(config, remote, output).await
    }

    /// Plans `manifest` (`text` as read) for `app` and starts its deployment.
    pub(crate) async fn submit(
        &self,
        app: &AppName,
        manifest: Manifest,
        text: String,
        plan: &PlanArgs,
        policies: Policies,
    ) -> Result<Deployment, Failure> {
        let (embedded, config) = match self {
            Runner::Server { client, .. } => {
                return match client
                    .submit(app, text, false, plan.prune, &plan.components, policies)
                    .await?
                {
                    Submitted::Deployment(deployment) => Ok(*deployment),
                    Submitted::Plan(_) => {
                        Err(anyhow::anyhow!("the API planned instead of deploying").into())
                    }
                };
            }
            Runner::Embedded { roles, config } => (roles, *config),
        };
        let observed = observe(config, app).await?;
        let only = plan.selection(&manifest)?;
        let options = PlanOptions {
            prune: plan.prune,
            observed: observed.as_ref(),
            only: only.as_ref(),
        };
        let submitted = scheduler::submit(
            &embedded.backends,
            embedded.tenant,
            app,
            manifest,
            &options,
            None,
            policies,
        )
        .await
        .context("failed to write the deployment")?;
        superseded(embedded, &submitted.superseded);
        embedded.deployment(submitted.id).await
    }

    /// Records a component's new artifact: the answer, and the deployment that
    /// deploys it, if the component opted in (`on-update: {deploy: true}`).
    pub(crate) async fn external_update(
        &self,
        app: &AppName,
        update: ExternalUpdate,
    ) -> Result<(ExternalUpdateAnswer, Option<Deployment>), Failure> {
        let embedded = match self {
            Runner::Server { client, .. } => return client.external_update(app, &update).await,
            Runner::Embedded { roles, .. } => roles,
        };
        let outcome = scheduler::external_update(
            embedded.backends.store.as_ref(),
            embedded.tenant,
            app,
            update,
        )
        .await
        .map_err(|err| submit_failure(err, "failed to record the update"))?;
        Ok(match outcome {
            ExternalOutcome::Recorded { release, duplicate } => (
                ExternalUpdateAnswer {
                    message: "recorded, not deployed".to_owned(),
                    release: Some(release),
                    deployment: None,
                    duplicate,
                },
                None,
            ),
            ExternalOutcome::Deploying {
                submitted,
                duplicate,
            } => (
                ExternalUpdateAnswer {
                    message: "recorded, deploying".to_owned(),
                    release: None,
                    deployment: None,
                    duplicate,
                },
                Some(embedded.deployment(submitted.id).await?),
            ),
        })
    }

    /// Prints a line of progress (on stderr when stdout carries JSON).
    pub(crate) fn say(&self, line: &str) {
        match self {
            Runner::Embedded { roles, .. } => (roles.say)(line),
            Runner::Server { output, .. } => say(*output == Output::Text)(line),
        }
    }

    /// Reopens a failed deployment's failed and skipped tasks.
    pub(crate) async fn retry(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        let embedded = match self {
            Runner::Server { client, .. } => return client.retry(id).await,
            Runner::Embedded { roles, .. } => roles,
        };
        let missing = || unknown(Unknown::Deployment(id.to_string()));
        match embedded
            .backends
            .store
            .retry_deployment(embedded.tenant, id)
            .await
            .context("failed to reopen the deployment")?
        {
            Some(Retry::Reopened { .. }) => embedded.deployment(id).await,
            Some(refused) => Err(match refused.refusal(id) {
                Some(refusal) => Failure::BadInput(anyhow::anyhow!(refusal)),
                None => missing(),
            }),
            None => Err(missing()),
        }
    }

    /// Starts the deployment of release `version` of `app` again.
    pub(crate) async fn rollback(
        &self,
        app: &AppName,
        version: u32,
    ) -> Result<Deployment, Failure> {
        let embedded = match self {
            Runner::Server { client, .. } => return client.rollback(app, version).await,
            Runner::Embedded { roles, .. } => roles,
        };
        let submitted = scheduler::submit_rollback(
            embedded.backends.store.as_ref(),
            embedded.tenant,
            app,
            version,
            None,
        )
        .await
        .map_err(|err| submit_failure(err, "failed to write the rollback"))?;
        embedded.deployment(submitted.id).await
    }

    /// Starts the deployment of saved plan `plan`.
    pub(crate) async fn apply(&self, plan: PlanId) -> Result<Deployment, Failure> {
        let embedded = match self {
            Runner::Server { client, .. } => return client.apply_plan(plan).await,
            Runner::Embedded { roles, .. } => roles,
        };
        let submitted = scheduler::apply_plan(&embedded.backends, embedded.tenant, plan)
            .await
            .map_err(|err| submit_failure(err, "failed to apply the plan"))?;
        superseded(embedded, &submitted.superseded);
        embedded.deployment(submitted.id).await
    }

    /// Follows the deployment `started` returned to its end, printing its
    /// progress (with `auto_rollback`, also the automatic rollback of a failed
    /// one); the roles started here stop. A deployment that could not be started
    /// is returned as it failed, once the roles stopped.
    pub(crate) async fn follow(
        self,
        started: Result<Deployment, Failure>,
        auto_rollback: bool,
    ) -> Result<Deployment, Failure> {
        match self {
            Runner::Server { client, output } => {
                let deployment = follow_remote(client, started?, output).await?;
                if auto_rollback && deployment.state == DeploymentState::Failed {
                    follow_auto_rollback_remote(client, &deployment, output).await;
                }
                Ok(deployment)
            }
            Runner::Embedded { roles, .. } => match started {
                Ok(deployment) if auto_rollback => {
                    roles.follow_with_auto_rollback(deployment.id).await
                }
                Ok(deployment) => roles.follow(deployment.id).await,
                Err(err) => {
                    roles.stop().await;
                    Err(err)
                }
            },
        }
    }

    /// Stops the roles started here, with nothing to follow.
    pub(crate) async fn stop(self) {
        if let Runner::Embedded { roles, .. } = self {
            roles.stop().await;
        }
    }
}

/// Says which older deployments a submission cancelled (`cancel-in-progress`).
fn superseded(embedded: &Embedded, older: &[DeploymentId]) {
    for older in older {
        (embedded.say)(&format!(
            "cancelled deployment {older}: it was still working on a component this one deploys (cancel-in-progress)"
        ));
    }
}
