//! Submitting a deployment: plan the manifest against the app's active release and
//! write the deployment with its tasks in one transaction.

use shared::ids::{DeploymentId, TenantId};
use shared::manifest::Manifest;
use shared::names::AppName;
use shared::plan::Plan;
use shared::release::Release;
use shared::store::{NewDeployment, Store, StoreError};

use crate::planner::{self, PlanOptions};

/// Why a deployment could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A deployment written to the store.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub id: DeploymentId,
    pub plan: Plan,
    /// The release the plan was computed against.
    pub base: Option<Release>,
}

/// Plans `manifest` for `app` of `tenant` and writes the deployment; its first tasks
/// are dispatched through the outbox.
pub async fn submit(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    manifest: Manifest,
    options: &PlanOptions,
) -> Result<Submitted, SubmitError> {
    let base = store.active_release(tenant, app).await?;
    let plan = planner::plan(app, &manifest, base.as_ref(), options);
    let new = NewDeployment {
        id: DeploymentId::generate(),
        tenant,
        manifest,
        plan,
        base,
    };
    store.create_deployment(&new).await?;
    Ok(Submitted {
        id: new.id,
        plan: new.plan,
        base: new.base,
    })
}
