//! Submitting a deployment: plan the manifest against the app's active release and
//! write the deployment with its tasks in one transaction.

use std::collections::BTreeSet;

use shared::backends::Backends;
use shared::events::Event;
use shared::ids::{DeploymentId, PlanId, TenantId};
use shared::manifest::Manifest;
use shared::model::{ConcurrencyPolicy, Strategy, Unknown};
use shared::names::{AppName, ComponentName};
use shared::plan::Plan;
use shared::release::{ExternalUpdate, Moved, Observed, ReleasedComponent, manifest_of};
use shared::store::{
    Adoption, Cancellation, Creation, Idempotency, NewDeployment, PlanContent, SavedPlan, Store,
    StoreError,
};

use crate::planner::{self, PlanOptions};

/// Why a deployment could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "the idempotency key `{key}` was already used for another request (deployment {deployment}); use a new key for a new request"
    )]
    IdempotencyKeyReused {
        key: String,
        deployment: DeploymentId,
    },
    /// An unknown app, release or component.
    #[error(transparent)]
    Unknown(#[from] Unknown),
    #[error(
        "adopting needs to know what runs: set `status` (a program that reports it) under [driver.exec] in the config file"
    )]
    NothingObserved,
    #[error("component `{component}` is not running: the driver's status step does not report it")]
    NotRunning { component: ComponentName },
    /// What the app runs changed since the saved plan was made.
    #[error(
        "app `{app}` changed since plan {plan} was made: {}; make a new plan (`drover plan --save`)",
        moved.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    PlanStale {
        plan: PlanId,
        app: AppName,
        moved: Vec<Moved>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a deployment request wants its app handled from now on (`None` keeps the
/// app's: at first `queue` and `rolling`), and whether the deployment rolls back
/// to the release it started from if it fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policies {
    pub concurrency: Option<ConcurrencyPolicy>,
    pub strategy: Option<Strategy>,
    pub auto_rollback: bool,
}

/// A deployment in the store: new, or the one an idempotency key named before.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub id: DeploymentId,
    pub plan: Plan,
    /// The release the plan was computed against.
    pub base_release: Option<u32>,
    /// Whether this is the earlier deployment of a retried request.
    pub existing: bool,
    /// Older deployments it cancelled (`cancel-in-progress`).
    pub superseded: Vec<DeploymentId>,
}

/// Plans `manifest` for `app` of `tenant` and writes the deployment; its first tasks
/// are dispatched through the outbox. A request retried with the same idempotency
/// key gets the first deployment back; the key with another request is an error.
/// The older deployments it cancels (`cancel-in-progress`) are announced.
pub async fn submit(
    backends: &Backends,
    tenant: TenantId,
    app: &AppName,
    manifest: Manifest,
    options: &PlanOptions<'_>,
    idempotency: Option<Idempotency>,
    policies: Policies,
) -> Result<Submitted, SubmitError> {
    let Policies {
        concurrency,
        strategy,
        auto_rollback,
    } = policies;
    let store = backends.store.as_ref();
    if let Some(earlier) = earlier_request(store, tenant, idempotency.as_ref()).await? {
        return Ok(earlier);
    }
    let current = store.current_state(tenant, app).await?;
    let plan = planner::plan(app, &manifest, current.components(), options);
    start(
        backends,
        app,
        NewDeployment {
            id: DeploymentId::generate(),
            tenant,
            manifest,
            plan,
            current,
            idempotency,
            artifacts: None,
            rollback_to: None,
            replaces: None,
            auto_rollback,
            external_update: None,
            concurrency,
            strategy,
        },
    )
    .await
}

/// Writes a deployment of a plan; under `cancel-in-progress`, cancels the older
/// deployments it supersedes, and announces what their cancellations did.
async fn start(
    backends: &Backends,
    app: &AppName,
    new: NewDeployment,
) -> Result<Submitted, SubmitError> {
    let store = backends.store.as_ref();
    let (tenant, concurrency) = (new.tenant, new.concurrency);
    let mut submitted = create(store, new).await?;
    let policy = match concurrency {
        Some(policy) => policy,
        None => store.concurrency_policy(tenant, app).await?,
    };
    if policy == ConcurrencyPolicy::CancelInProgress && !submitted.existing {
        let events;
        (submitted.superseded, events) = supersede(store, tenant, &submitted).await?;
        backends.announce(&events).await;
    }
    Ok(submitted)
}

/// Plans `manifest` for `app` as [`submit`] would, and keeps the plan with what
/// the app runs now and `policies`; no deployment is written.
pub async fn save_plan(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    manifest: Manifest,
    options: &PlanOptions<'_>,
    policies: Policies,
) -> Result<SavedPlan, SubmitError> {
    let base = store.current_state(tenant, app).await?;
    let plan = planner::plan(app, &manifest, base.components(), options);
    let content = PlanContent {
        manifest,
        plan,
        base,
        concurrency: policies.concurrency,
        strategy: policies.strategy,
        auto_rollback: policies.auto_rollback,
    };
    Ok(store
        .save_plan(tenant, PlanId::generate(), app, &content)
        .await?)
}

/// Starts the deployment of saved plan `id`: exactly its tasks, with its policies,
/// provided what the app runs is still what the plan was made against (else
/// [`SubmitError::PlanStale`], naming each component that moved). Applying a plan
/// again returns the deployment it started the first time.
pub async fn apply_plan(
    backends: &Backends,
    tenant: TenantId,
    id: PlanId,
) -> Result<Submitted, SubmitError> {
    let store = backends.store.as_ref();
    let saved = store
        .saved_plan(tenant, id)
        .await?
        .ok_or_else(|| Unknown::Plan(id.to_string()))?;
    // The plan's id is its idempotency key: a second apply finds the first.
    let key = format!("plan:{id}");
    let idempotency = Idempotency {
        request_hash: key.clone(),
        key,
    };
    if let Some(earlier) = earlier_request(store, tenant, Some(&idempotency)).await? {
        return Ok(earlier);
    }
    let current = store.current_state(tenant, &saved.app).await?;
    let content = saved.content;
    let moved = Moved::between(&content.base.components, &current.components);
    if !moved.is_empty() {
        return Err(SubmitError::PlanStale {
            plan: id,
            app: saved.app,
            moved,
        });
    }
    start(
        backends,
        &saved.app,
        NewDeployment {
            id: DeploymentId::generate(),
            tenant,
            manifest: content.manifest,
            plan: content.plan,
            current,
            idempotency: Some(idempotency),
            artifacts: None,
            rollback_to: None,
            replaces: None,
            auto_rollback: content.auto_rollback,
            external_update: None,
            concurrency: content.concurrency,
            strategy: content.strategy,
        },
    )
    .await
}

/// Cancels the older deployments of the app that still have work on a component
/// the new one touches (`cancel-in-progress`); returns them, and the progress
/// events of their cancellations.
async fn supersede(
    store: &dyn Store,
    tenant: TenantId,
    newer: &Submitted,
) -> Result<(Vec<DeploymentId>, Vec<Event>), SubmitError> {
    let components: Vec<ComponentName> = newer
        .plan
        .tasks
        .iter()
        .map(|task| task.component.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (mut cancelled, mut events) = (Vec::new(), Vec::new());
    if components.is_empty() {
        return Ok((cancelled, events));
    }
    for older in store.superseded_by(tenant, newer.id, &components).await? {
        // One that ended meanwhile needs no cancelling.
        if let Some(cancellation @ Cancellation::Requested { .. }) =
            store.cancel_deployment(tenant, older).await?
        {
            tracing::info!(deployment = %older, by = %newer.id, "superseded: cancelled (cancel-in-progress)");
            events.extend(cancellation.events(tenant, older));
            cancelled.push(older);
        }
    }
    Ok((cancelled, events))
}

/// Deploys release `version` of `app` again, whole and without building (see
/// [`planner::rollback`]); when it succeeds it is a new release with that one's
/// content, and the deployment that made the active release is `rolled_back`.
/// Idempotent like [`submit`].
pub async fn submit_rollback(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    version: u32,
    idempotency: Option<Idempotency>,
) -> Result<Submitted, SubmitError> {
    rollback(store, tenant, app, version, idempotency, None).await
}

/// A rollback to `version` that replaces `replaces`, or else the deployment that
/// made the active release.
pub(crate) async fn rollback(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    version: u32,
    idempotency: Option<Idempotency>,
    replaces: Option<DeploymentId>,
) -> Result<Submitted, SubmitError> {
    if let Some(earlier) = earlier_request(store, tenant, idempotency.as_ref()).await? {
        return Ok(earlier);
    }
    let target = store
        .release(tenant, app, version)
        .await?
        .ok_or_else(|| Unknown::Release {
            app: app.to_string(),
            version: version.to_string(),
        })?;
    let replaces = match replaces {
        Some(replaces) => Some(replaces),
        None => store
            .active_release(tenant, app)
            .await?
            .and_then(|release| release.deployment),
    };
    let current = store.current_state(tenant, app).await?;
    let (manifest, plan) = planner::rollback(app, &target, current.components());
    create(
        store,
        NewDeployment {
            id: DeploymentId::generate(),
            tenant,
            manifest,
            plan,
            current,
            idempotency,
            rollback_to: Some(target.version),
            replaces,
            auto_rollback: false,
            artifacts: Some(target.components),
            external_update: None,
            concurrency: None,
            strategy: None,
        },
    )
    .await
}

/// What an external update did.
#[derive(Debug, Clone)]
pub enum ExternalOutcome {
    /// Recorded as release `release`; nothing deployed (the component has no
    /// `on-update: {deploy: true}`).
    Recorded { release: u32, duplicate: bool },
    /// Recorded, and this deployment deploys it: the component's deploy alone.
    Deploying {
        submitted: Submitted,
        duplicate: bool,
    },
}

/// Records an external update of a component (DESIGN.md 5.5) and, when the
/// component (as it runs now) declares `on-update: {deploy: true}`,
/// starts a deployment of that component alone, after the record and under the
/// component's lock like any other. Idempotent on component and artifact: the same
/// update again records nothing more and names the same release or deployment.
pub async fn external_update(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    update: ExternalUpdate,
) -> Result<ExternalOutcome, SubmitError> {
    let unknown_app = || Unknown::App(app.to_string());
    let current = store.current_state(tenant, app).await?;
    let running = current.components().ok_or_else(unknown_app)?;
    let deploy = running
        .get(&update.component)
        .ok_or_else(|| Unknown::Component {
            app: app.to_string(),
            component: update.component.to_string(),
        })?
        .spec
        .on_update
        .is_some_and(|on_update| on_update.deploy);
    let recorded = store
        .record_external_update(tenant, app, &update, !deploy)
        .await?
        .ok_or_else(unknown_app)?;
    if !deploy {
        let release = recorded.release.ok_or_else(|| StoreError::Corrupt {
            what: "external update",
            message: "recorded without its release".into(),
        })?;
        return Ok(ExternalOutcome::Recorded {
            release,
            duplicate: recorded.duplicate,
        });
    }
    // The key makes the deployment as idempotent as the record: a repeated update,
    // or one whose deployment was not written the first time, gets exactly one.
    let idempotency = Idempotency {
        key: format!(
            "external-update:{app}:{}:{}",
            update.component,
            update.artifact_hash()
        ),
        request_hash: update.artifact_hash(),
    };
    if let Some(earlier) = earlier_request(store, tenant, Some(&idempotency)).await? {
        return Ok(ExternalOutcome::Deploying {
            submitted: earlier,
            duplicate: true,
        });
    }
    let plan = planner::external_update(app, &current.components, &update.component);
    let mut artifacts = current.components.clone();
    if let Some(released) = artifacts.get_mut(&update.component) {
        released.artifact = Some(update.artifact.clone());
        released.version = Some(update.released_version());
    }
    let submitted = create(
        store,
        NewDeployment {
            id: DeploymentId::generate(),
            tenant,
            manifest: manifest_of(&current.components),
            plan,
            current,
            idempotency: Some(idempotency),
            artifacts: Some(artifacts),
            rollback_to: None,
            replaces: None,
            auto_rollback: false,
            external_update: Some(update),
            concurrency: None,
            strategy: None,
        },
    )
    .await?;
    Ok(ExternalOutcome::Deploying {
        duplicate: submitted.existing,
        submitted,
    })
}

/// The deployment an idempotency key named before, if it did.
async fn earlier_request(
    store: &dyn Store,
    tenant: TenantId,
    idempotency: Option<&Idempotency>,
) -> Result<Option<Submitted>, SubmitError> {
    let Some(idempotency) = idempotency else {
        return Ok(None);
    };
    let Some((id, request_hash)) = store
        .deployment_by_idempotency_key(tenant, &idempotency.key)
        .await?
    else {
        return Ok(None);
    };
    let same_request = request_hash == idempotency.request_hash;
    existing(store, tenant, id, same_request, idempotency)
        .await
        .map(Some)
}

/// Writes a new deployment, or names the one its idempotency key made meanwhile.
async fn create(store: &dyn Store, new: NewDeployment) -> Result<Submitted, SubmitError> {
    let base_release = new.current.release;
    match store.create_deployment(&new).await? {
        Creation::Created => Ok(Submitted {
            id: new.id,
            plan: new.plan,
            base_release,
            existing: false,
            superseded: Vec::new(),
        }),
        Creation::Existing { id, same_request } => {
            let idempotency = new
                .idempotency
                .as_ref()
                .ok_or_else(|| StoreError::Corrupt {
                    what: "deployment",
                    message: "an existing deployment was named without an idempotency key".into(),
                })?;
            existing(store, new.tenant, id, same_request, idempotency).await
        }
    }
}

async fn existing(
    store: &dyn Store,
    tenant: TenantId,
    id: DeploymentId,
    same_request: bool,
    idempotency: &Idempotency,
) -> Result<Submitted, SubmitError> {
    if !same_request {
        return Err(SubmitError::IdempotencyKeyReused {
            key: idempotency.key.clone(),
            deployment: id,
        });
    }
    let deployment = store
        .deployment(tenant, id)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployment",
            id: id.to_string(),
        })?;
    Ok(Submitted {
        id,
        plan: deployment.plan,
        base_release: deployment.base_release,
        existing: true,
        superseded: Vec::new(),
    })
}

/// Records what runs, as `observed` (the driver's status step) reports it, as the
/// app's release 1, deploying nothing: every component of the manifest with the
/// artifact and run spec it runs. When the app has releases already, records
/// nothing and returns its release 1.
pub async fn adopt(
    store: &dyn Store,
    tenant: TenantId,
    app: &AppName,
    manifest: &Manifest,
    observed: Option<Observed>,
) -> Result<Adoption, SubmitError> {
    let observed = observed.ok_or(SubmitError::NothingObserved)?;
    let mut components = std::collections::BTreeMap::new();
    for (name, spec) in &manifest.components {
        let running = observed.get(name).ok_or_else(|| SubmitError::NotRunning {
            component: name.clone(),
        })?;
        let version = manifest
            .components
            .get(manifest.artifact_source(name))
            .and_then(|source| source.version());
        let mut spec = spec.clone();
        spec.run = running.run.clone();
        components.insert(
            name.clone(),
            ReleasedComponent {
                spec,
                artifact: running.artifact.clone(),
                version,
                deployment: None,
            },
        );
    }
    Ok(store.adopt(tenant, app, components).await?)
}
