//! The commands that start a deployment and follow it to its end, written once
//! against [`Runner`]: on the embedded default it runs the scheduler and worker
//! roles in this process while the deployment runs ([`Embedded`]); with
//! `--server` it asks the API and follows the deployment's live events.

use anyhow::Context as _;
use shared::ids::{DeploymentId, PlanId};
use shared::model::Unknown;
use shared::names::AppName;
use shared::store::{Deployment, Retry};

use crate::Failure;
use crate::client::Client;
use crate::deploy::{
    Embedded, Output, existing_store, follow_remote, say, submit_failure, unknown,
};
use shared::config::Config;

/// Where a deployment is started and followed.
pub(crate) enum Runner<'a> {
    Embedded(Embedded),
    Server { client: &'a Client, output: Output },
}

impl<'a> Runner<'a> {
    /// The API with `--server`, else the roles started here. `missing` is what the
    /// command names, should nothing have been stored here yet: that is said
    /// without creating a database.
    pub(crate) async fn open(
        config: &Config,
        remote: Option<&'a Client>,
        output: Output,
        missing: impl FnOnce() -> Unknown,
    ) -> Result<Runner<'a>, Failure> {
        if let Some(client) = remote {
            return Ok(Runner::Server { client, output });
        }
        existing_store(config)
            .await?
            .ok_or_else(|| unknown(missing()))?;
        Ok(Runner::Embedded(Embedded::start(config, output).await?))
    }

    /// Prints a line of progress (on stderr when stdout carries JSON).
    pub(crate) fn say(&self, line: &str) {
        match self {
            Runner::Embedded(embedded) => (embedded.say)(line),
            Runner::Server { output, .. } => say(*output == Output::Text)(line),
        }
    }

    /// Reopens a failed deployment's failed and skipped tasks.
    pub(crate) async fn retry(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        let embedded = match self {
            Runner::Server { client, .. } => return client.retry(id).await,
            Runner::Embedded(embedded) => embedded,
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
            Runner::Embedded(embedded) => embedded,
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
            Runner::Embedded(embedded) => embedded,
        };
        let submitted =
            scheduler::apply_plan(embedded.backends.store.as_ref(), embedded.tenant, plan)
                .await
                .map_err(|err| submit_failure(err, "failed to apply the plan"))?;
        for older in &submitted.superseded {
            (embedded.say)(&format!(
                "cancelled deployment {older}: it was still working on a component this one deploys (cancel-in-progress)"
            ));
        }
        embedded.deployment(submitted.id).await
    }

    /// Follows the deployment `started` returned to its end, printing its
    /// progress; the roles started here stop. A deployment that could not be
    /// started is returned as it failed, once the roles stopped.
    pub(crate) async fn follow(
        self,
        started: Result<Deployment, Failure>,
    ) -> Result<Deployment, Failure> {
        match self {
            Runner::Server { client, output } => follow_remote(client, started?, output).await,
            Runner::Embedded(embedded) => match started {
                Ok(deployment) => embedded.follow(deployment.id).await,
                Err(err) => {
                    embedded.stop().await;
                    Err(err)
                }
            },
        }
    }
}
