//! The `Store` port: the truth about tenants, apps, deployments, tasks, releases,
//! the outbox and fences.
//!
//! Every state change is a conditional update on what the caller believes (state,
//! attempt, fence), so concurrent schedulers and workers stay safe, and every
//! change that must reach another process writes its outbox row in the same
//! transaction.

mod entities;
mod sea;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::dispatch::TaskDispatch;
use crate::ids::{DeploymentId, Fence, HookId, PlanId, TaskId, TenantId, TokenId};
use crate::manifest::{Component, Manifest};
use crate::model::{
    AuditAction, ConcurrencyPolicy, DeploymentState, HookKind, Scope, Strategy, TaskKind,
    TaskState, Unknown,
};
use crate::names::{AppName, ComponentName, TenantName};
use crate::plan::Plan;
use crate::release::{Components, CurrentState, ExternalUpdate, Release, ReleasedComponent};

pub use sea::SeaOrmStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to connect to the database `{url}`: {message}")]
    Connect { url: String, message: String },
    #[error("failed to migrate the database: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("corrupt {what} in the database: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("unknown {what} `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("{what} `{id}` already exists")]
    Conflict { what: &'static str, id: String },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Connect { .. } | StoreError::Database(_))
    }
}

/// A deployment to write, with its planned tasks.
#[derive(Clone, Debug)]
pub struct NewDeployment {
    pub id: DeploymentId,
    pub tenant: TenantId,
    pub manifest: Manifest,
    pub plan: Plan,
    /// What the app ran when the plan was computed (with its active release).
    pub current: CurrentState,
    /// The client's idempotency key: a retried request gets the first deployment.
    pub idempotency: Option<Idempotency>,
    /// The components whose artifacts (and versions) its deploys without a build of
    /// their own run: a rollback's target's, an external update's; `None`: what runs.
    pub artifacts: Option<Components>,
    /// For a rollback: the version of the release it deploys again.
    pub rollback_to: Option<u32>,
    /// For a rollback: the deployment it replaces, `rolled_back` once it succeeds.
    pub replaces: Option<DeploymentId>,
    /// Roll back to the base release automatically if this deployment fails.
    pub auto_rollback: bool,
    /// For the deployment of an external update: the update.
    pub external_update: Option<ExternalUpdate>,
    /// The app's concurrency policy from now on, when the request names one.
    pub concurrency: Option<ConcurrencyPolicy>,
    /// The strategy to deploy with, and the app's from now on, when the request
    /// names one; else the app's (at first `rolling`).
    pub strategy: Option<Strategy>,
}

/// A client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// What `create_deployment` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creation {
    Created,
    /// The tenant already used the idempotency key: nothing was written.
    Existing {
        id: DeploymentId,
        /// Whether the key came with the same request then.
        same_request: bool,
    },
}

/// A worker's claim on a ready task.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The task's tenant, as its dispatch names it (a claim whose task belongs to
    /// another tenant fails).
    pub tenant: TenantId,
    pub deployment: DeploymentId,
    pub task: TaskId,
    pub attempt: u32,
    /// The component's lock key, as the worker locked it.
    pub lock_key: String,
    /// A fence taken with [`Store::next_fence`] after the component's lock; `None`:
    /// the claim takes the lock key's next fence itself, in its transaction (one
    /// round trip fewer). A refused claim spends no fence, except when another task
    /// of the component runs although the lock was free: that holder lost the lock,
    /// and the fence taken refuses its writes from then on.
    pub fence: Option<Fence>,
    pub worker: String,
    /// How long the claim holds before the reaper may hand the task to another worker.
    pub lease: Duration,
    /// The most tasks of the task's tenant that may run at once, times the
    /// tenant's weight.
    pub tenant_limit: Option<u32>,
}

/// Everything a worker needs to run a claimed task.
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    pub tenant: TenantId,
    pub app: AppName,
    pub deployment: DeploymentId,
    pub task: TaskId,
    pub kind: TaskKind,
    pub component: ComponentName,
    pub spec: Component,
    /// For deploys: the artifact to deploy.
    pub artifact: Option<String>,
    pub attempt: u32,
    pub fence: Fence,
    /// How its deployment rolls out.
    pub strategy: Strategy,
    /// For a deploy: the strategy's phase the step runs now. A claim returns the
    /// first, which it noted on the task; the worker sets (and notes) the next ones.
    pub phase: Option<String>,
}

/// What came of a claim.
#[derive(Clone, Debug)]
pub enum ClaimOutcome {
    Claimed(Box<ClaimedTask>),
    /// The task is not `ready` at that attempt (a duplicate or stale dispatch), or the
    /// fence is older than one already used on it.
    NotClaimable {
        state: TaskState,
        attempt: u32,
    },
    /// No such task.
    Unknown,
    /// The task's tenant already runs as many tasks as it may: try again later.
    TenantLimit,
    /// Another task of the same component is running under a live lease (its lock
    /// was lost, e.g. by a restarted Redis): try again later.
    ComponentBusy,
    /// A deployment of the app submitted earlier still has a deploy or delete of the
    /// component to do: deploys of one component apply in submission order, so try
    /// again later.
    Ordered,
}

/// A worker's result for a task it claimed.
#[derive(Clone, Debug)]
pub struct TaskResult {
    pub deployment: DeploymentId,
    pub task: TaskId,
    pub attempt: u32,
    pub fence: Fence,
    pub outcome: TaskOutcome,
    /// The step's output (bounded by the worker).
    pub log: String,
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    Succeeded {
        artifact: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Failed transiently: run the task again as the next attempt, after `after`.
    Retry {
        error: String,
        after: Duration,
    },
    /// Stopped because its deployment was cancelled.
    Cancelled {
        error: String,
    },
}

/// What recording a result changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The task will run again as `attempt`, no earlier than `at`.
    Retrying { attempt: u32, at: DateTime<Utc> },
    Recorded {
        /// Tasks that will not run because this one failed.
        skipped: Vec<TaskId>,
        /// Set when this result finished the deployment.
        finished: Option<Finished>,
    },
    /// The task is no longer this worker's (attempt or fence moved on): nothing changed.
    Stale,
}

/// A running task as the worker that claimed it knows it: what a lease extension
/// names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedTask {
    pub deployment: DeploymentId,
    pub task: TaskId,
    pub attempt: u32,
    pub fence: Fence,
}

/// How a running task's lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Extended; carry on.
    Extended,
    /// Extended, but the deployment was cancelled: stop the step.
    CancelRequested,
    /// The task is no longer this attempt's and fence's: its result would be refused.
    Lost,
}

/// What asking a deployment to stop did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancellation {
    Requested {
        /// Tasks that will never start now.
        cancelled: Vec<TaskId>,
        /// Steps still running, being stopped.
        running: Vec<TaskId>,
        /// Set when nothing was running: the deployment ended at once.
        finished: Option<Finished>,
    },
    /// The deployment had already ended, in this state.
    AlreadyFinished(DeploymentState),
}

/// What adopting an app did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adoption {
    /// The app's release 1.
    pub release: Release,
    /// Whether the app had releases already (and nothing was recorded now).
    pub existing: bool,
}

/// A failed deployment whose automatic rollback is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoRollback {
    pub tenant: TenantId,
    pub app: AppName,
    pub deployment: DeploymentId,
    /// The release it started from: what to roll back to (none for a first deploy).
    pub to: Option<u32>,
}

/// What recording an external update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The release it became, when recorded as one.
    pub release: Option<u32>,
    /// Whether it had been recorded before (and nothing changed now).
    pub duplicate: bool,
}

impl Cancellation {
    /// The progress events of cancelling deployment `id` so: a request to the
    /// workers running its steps to stop them, or its end when nothing was
    /// running. None when it had already ended.
    pub fn events(&self, tenant: TenantId, id: DeploymentId) -> Vec<crate::events::Event> {
        use crate::events::Event;
        let Cancellation::Requested {
            running, finished, ..
        } = self
        else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if !running.is_empty() {
            events.push(Event::CancelRequested {
                tenant,
                deployment: id,
            });
        }
        events.extend(finished.iter().map(|finished| Event::DeploymentFinished {
            tenant,
            deployment: id,
            state: finished.state,
            release: finished.release,
        }));
        events
    }

    /// Why deployment `id` was not cancelled, for people; `None` when it was.
    pub fn refusal(&self, id: DeploymentId) -> Option<String> {
        match self {
            Cancellation::Requested { .. } => None,
            Cancellation::AlreadyFinished(state) => Some(format!(
                "deployment `{id}` has already ended ({state}): there is nothing to cancel"
            )),
        }
    }
}

/// What asking to retry a deployment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retry {
    /// These tasks will run again; the deployment is `running` once more.
    Reopened { tasks: Vec<TaskId> },
    /// Only a failed deployment is retried; this one is in this state.
    NotFailed(DeploymentState),
    /// The app moved on since: release `active` is newer than the deployment's base.
    Superseded { active: u32 },
    /// A deployment submitted after it deploys (or deleted) a component it would
    /// deploy again.
    Overtaken { by: DeploymentId },
}

impl Retry {
    /// Why deployment `id` was not retried, for people; `None` when it was.
    pub fn refusal(&self, id: DeploymentId) -> Option<String> {
        match self {
            Retry::Reopened { .. } => None,
            Retry::NotFailed(state) => Some(format!(
                "deployment `{id}` is {state}: only a failed deployment can be retried"
            )),
            Retry::Superseded { active } => Some(format!(
                "deployment `{id}` cannot be retried: its app has moved on to release {active} since; deploy the manifest again instead"
            )),
            Retry::Overtaken { by } => Some(format!(
                "deployment `{id}` cannot be retried: deployment `{by}`, submitted after it, deploys its components too; deploy the manifest again instead"
            )),
        }
    }
}

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub state: DeploymentState,
    /// The release it wrote, if it succeeded.
    pub release: Option<u32>,
}

/// What the reaper did with a task whose lease expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaped {
    /// Handed out again as the next attempt.
    Requeued(TaskDispatch),
    /// Handed out, yet not claimed by any worker in time (its dispatch was lost):
    /// dispatched again, at the same attempt.
    Redispatched(TaskDispatch),
    /// Ended for good: `failed` (out of attempts) or `cancelled` (its deployment was).
    Ended {
        tenant: TenantId,
        deployment: DeploymentId,
        task: TaskId,
        attempt: u32,
        state: TaskState,
        /// Tasks that will not run because this one ended so.
        skipped: Vec<TaskId>,
        /// Set when this finished the deployment.
        finished: Option<Finished>,
    },
}

impl Reaped {
    /// The dispatch of a requeued task.
    pub fn requeued(&self) -> Option<&TaskDispatch> {
        match self {
            Reaped::Requeued(dispatch) => Some(dispatch),
            Reaped::Redispatched(_) | Reaped::Ended { .. } => None,
        }
    }

    /// The progress events of a task that ended so: its end, the tasks skipped
    /// for it, and its deployment's end. None for a task handed out again.
    pub fn events(&self, error: &str) -> Vec<crate::events::Event> {
        use crate::events::Event;
        let Reaped::Ended {
            tenant,
            deployment,
            task,
            attempt,
            state,
            skipped,
            finished,
        } = self
        else {
            return Vec::new();
        };
        let (tenant, deployment) = (*tenant, *deployment);
        let mut events = vec![Event::TaskFinished {
            tenant,
            deployment,
            task: task.clone(),
            attempt: *attempt,
            state: *state,
            duration_ms: 0,
            error: Some(error.to_owned()),
        }];
        events.extend(skipped.iter().map(|task| Event::TaskSkipped {
            tenant,
            deployment,
            task: task.clone(),
        }));
        events.extend(finished.iter().map(|finished| Event::DeploymentFinished {
            tenant,
            deployment,
            state: finished.state,
            release: finished.release,
        }));
        events
    }
}

/// Which page of a list to read: the items after `after` in the list's order (the
/// previous page's `next_cursor`, parsed: a release's version, a deployment's id,
/// an app's name), at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<C = u32> {
    pub after: Option<C>,
    pub limit: u64,
}

/// A page request that makes no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageRequestError {
    #[error("invalid cursor `{0}`: pass the `next_cursor` of the previous page")]
    Cursor(String),
    #[error("invalid limit {0}: it must be from 1 to {MAX_PAGE_LIMIT}")]
    Limit(u64),
}

/// The most items one page holds.
pub const MAX_PAGE_LIMIT: u64 = 100;
/// Items per page unless asked otherwise.
pub const DEFAULT_PAGE_LIMIT: u64 = 20;

impl<C: std::str::FromStr> PageRequest<C> {
    /// The first page, of `limit` items.
    pub fn first(limit: u64) -> Self {
        Self { after: None, limit }
    }

    /// The page a client asked for, with the cursor as the client passed it back.
    pub fn parse(cursor: Option<&str>, limit: Option<u64>) -> Result<Self, PageRequestError> {
        let after = cursor
            .map(|cursor| {
                cursor
                    .parse::<C>()
                    .map_err(|_| PageRequestError::Cursor(cursor.to_owned()))
            })
            .transpose()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(PageRequestError::Limit(limit));
        }
        Ok(Self { after, limit })
    }
}

/// One page of a list, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts (pass it back as the cursor); `None` on the last page.
    pub next_cursor: Option<String>,
    /// How many items there are in all.
    pub total: u64,
}

/// A message waiting in the outbox to be published.
#[derive(Clone, Debug)]
pub struct OutboxMessage {
    pub id: i64,
    pub queue: String,
    pub dispatch: TaskDispatch,
}

/// A deployment as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct Deployment {
    pub id: DeploymentId,
    pub tenant: TenantId,
    pub app: AppName,
    pub state: DeploymentState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The release the plan was computed against.
    pub base_release: Option<u32>,
    /// The release this deployment wrote; for a deployment that changed nothing, the
    /// release that stayed active.
    pub release: Option<u32>,
    /// Whether it ended without a release (failed or cancelled) after some of its
    /// deploys or deletes succeeded: what runs changed, and plans are made against it.
    pub partially_applied: bool,
    /// How its deploys roll out.
    pub strategy: Strategy,
    /// The newest rollback that replaces it (an automatic one when it failed, or
    /// one asked for while its release was active), however that rollback went.
    pub rolled_back_by: Option<DeploymentId>,
    pub plan: Plan,
    pub tasks: Vec<TaskView>,
}

/// Which of a tenant's deployments a list holds: all of them, or those of one app,
/// in one state, or created since a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    pub app: Option<AppName>,
    pub state: Option<DeploymentState>,
    pub since: Option<DateTime<Utc>>,
}

/// A deployment in a list: what it is and how it stands, without its plan and tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeploymentSummary {
    pub id: DeploymentId,
    pub app: AppName,
    pub state: DeploymentState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub base_release: Option<u32>,
    pub release: Option<u32>,
    pub strategy: Strategy,
}

/// An app as its tenant sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppSummary {
    pub name: AppName,
    pub created_at: DateTime<Utc>,
    /// Its newest release; `None` before the first.
    pub active_release: Option<u32>,
    /// The policies its deployments run under (the defaults until one is named).
    pub concurrency: ConcurrencyPolicy,
    pub strategy: Strategy,
    /// How many deployments it ever had.
    pub deployments: u64,
}

/// A task as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub id: TaskId,
    pub kind: TaskKind,
    pub component: ComponentName,
    pub state: TaskState,
    /// Attempts made so far (0 before the first claim).
    pub attempts: u32,
    pub needs: Vec<TaskId>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub artifact: Option<String>,
    pub error: Option<String>,
    pub log: Option<String>,
    /// Why the task, not yet running nor finished, is not running.
    pub waiting: Option<Waiting>,
    /// For a deploy: the strategy's phase it is in, or ended in.
    pub phase: Option<String>,
}

/// Why a task that is neither running nor finished waits (DESIGN.md 5.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Waiting {
    /// It needs these tasks, which have not succeeded yet.
    Needs { tasks: Vec<TaskId> },
    /// Another task of its component runs: this deployment's task holds the lock.
    Lock {
        deployment: DeploymentId,
        task: TaskId,
    },
    /// A deployment of the app submitted earlier still has this task to do on the
    /// component: deploys of one component apply in submission order.
    Order {
        deployment: DeploymentId,
        task: TaskId,
    },
    /// It failed transiently and runs again no earlier than `until`.
    RetryBackoff { until: DateTime<Utc> },
    /// It is dispatched and waits for a free worker slot; its tenant, of weight
    /// `tenant_weight`, has `tenant_running` tasks handed out (running, or
    /// dispatched to the workers).
    Queued {
        tenant_running: u64,
        tenant_weight: u32,
    },
    /// Its tenant runs as many tasks as it may (see [`Waiting::under_tenant_limit`]).
    TenantLimit { running: u64, limit: u32 },
}

impl Waiting {
    /// This reason under a fleet-wide tenant limit: a queued task of a tenant at its
    /// limit (the fleet's times the tenant's weight) waits for the tenant's own tasks
    /// to end. (The store knows how many tasks a tenant runs; the limit is
    /// configuration.)
    pub fn under_tenant_limit(self, limit: u32) -> Waiting {
        match self {
            Waiting::Queued {
                tenant_running,
                tenant_weight,
            } => {
                let limit = TenantWeight(tenant_weight).scale(limit);
                if tenant_running >= u64::from(limit) {
                    Waiting::TenantLimit {
                        running: tenant_running,
                        limit,
                    }
                } else {
                    self
                }
            }
            other => other,
        }
    }
}

/// A tenant's share of the fleet when tenants compete for it: a tenant of weight
/// `w` may have `w × tenant-limit` tasks handed out and running at once, and takes
/// `w` dispatches per turn of the relay's fair claim. Every tenant starts at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantWeight(u32);

/// A tenant weight out of range.
#[derive(Debug, thiserror::Error)]
#[error("a tenant's weight is a whole number from 1 to {max}, not {weight}", max = TenantWeight::MAX)]
pub struct InvalidWeight {
    pub weight: u64,
}

impl TenantWeight {
    /// What every tenant starts with.
    pub const DEFAULT: TenantWeight = TenantWeight(1);
    /// The heaviest a tenant may be.
    pub const MAX: u32 = 100;

    pub fn new(weight: u64) -> Result<TenantWeight, InvalidWeight> {
        match u32::try_from(weight) {
            Ok(w @ 1..=TenantWeight::MAX) => Ok(TenantWeight(w)),
            _ => Err(InvalidWeight { weight }),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The fleet-wide tenant limit `limit`, for a tenant of this weight.
    pub fn scale(self, limit: u32) -> u32 {
        limit.saturating_mul(self.0.max(1))
    }
}

impl fmt::Display for TenantWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An API token to write: only its hash is kept.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// What it is for, e.g. `ci`.
    pub name: Option<String>,
    pub scope: Scope,
    /// After this it is refused; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    pub hash: String,
}

/// An API token as its tenant sees it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: Option<String>,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An entry of the audit trail to write.
#[derive(Clone, Debug)]
pub struct NewAuditEntry {
    pub tenant: TenantId,
    /// The token that asked.
    pub token: Option<TokenId>,
    pub action: AuditAction,
    /// What it acted on: a deployment's id, an app, a token's id.
    pub target: String,
}

/// An entry of the audit trail: who did what, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    pub token: Option<TokenId>,
    pub action: AuditAction,
    pub target: String,
}

/// What a saved plan holds: what it was made from and against, and the policies
/// its deployment is to run with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanContent {
    pub manifest: Manifest,
    pub plan: Plan,
    /// What the app ran when the plan was made: applying it is refused once what
    /// runs differs from this.
    pub base: CurrentState,
    pub concurrency: Option<ConcurrencyPolicy>,
    pub strategy: Option<Strategy>,
    pub auto_rollback: bool,
}

/// A plan kept to be applied later, exactly (`drover plan --save`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedPlan {
    pub id: PlanId,
    pub app: AppName,
    pub created_at: DateTime<Utc>,
    pub content: PlanContent,
}

/// A webhook to write. Its secret is kept as it is (checking a signature needs
/// it) and never shown again.
#[derive(Clone, Debug)]
pub struct NewHook {
    pub app: AppName,
    pub kind: HookKind,
    /// The branch whose pushes deploy (GitHub hooks).
    pub branch: Option<String>,
    pub secret: String,
}

/// A webhook as its tenant sees it (never its secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookInfo {
    pub id: HookId,
    pub app: AppName,
    pub kind: HookKind,
    pub branch: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Whether two secrets are valid: a rotation is under way.
    pub rotating: bool,
}

/// A webhook with its tenant and its valid secrets, newest first, to check a
/// delivery's signature.
#[derive(Clone, Debug)]
pub struct Hook {
    pub tenant: TenantId,
    pub info: HookInfo,
    pub secrets: Vec<String>,
}

/// What a webhook delivery was answered: kept, so that its redelivery is
/// answered the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookAnswer {
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

/// What rotating a hook's secret did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The new secret is valid beside the one before.
    Rotated(HookInfo),
    /// Refused: two secrets are valid already; finish that rotation first.
    Rotating(HookInfo),
}

/// What a presented token may do: whose it is and its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub tenant: TenantId,
    pub token: TokenId,
    pub scope: Scope,
}

/// Tenants and their API tokens.
#[async_trait]
pub trait TenantStore: Send + Sync + fmt::Debug {
    /// The tenant called `name`, created if it does not exist.
    async fn ensure_tenant(&self, name: &TenantName) -> Result<TenantId, StoreError>;

    /// The tenant called `name`, if it exists.
    async fn tenant(&self, name: &TenantName) -> Result<Option<TenantId>, StoreError>;

    /// Creates the tenant `name` with one `admin` API token (its hash); `Conflict`
    /// when the tenant exists.
    async fn create_tenant(
        &self,
        name: &TenantName,
        token_hash: &str,
    ) -> Result<TenantId, StoreError>;

    /// What an API token (its hash) may do; `None` when no token has that hash, or
    /// it was revoked, or it expired (by the database's clock).
    async fn grant(&self, token_hash: &str) -> Result<Option<Grant>, StoreError>;

    /// Writes a token of the tenant.
    async fn create_token(
        &self,
        tenant: TenantId,
        token: &NewToken,
    ) -> Result<TokenInfo, StoreError>;

    /// A page of the tenant's tokens, newest first, revoked ones too; the cursor is
    /// a token's id.
    async fn tokens(
        &self,
        tenant: TenantId,
        page: PageRequest<TokenId>,
    ) -> Result<Page<TokenInfo>, StoreError>;

    /// Appends an entry to the tenant's audit trail, at the database's time.
    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<(), StoreError>;

    /// A page of the tenant's audit trail, newest first; the cursor is an entry's id.
    async fn audit(
        &self,
        tenant: TenantId,
        page: PageRequest<uuid::Uuid>,
    ) -> Result<Page<AuditEntry>, StoreError>;

    /// Revokes one of the tenant's tokens (revoking it again changes nothing);
    /// `None` when the tenant has no such token.
    async fn revoke_token(
        &self,
        tenant: TenantId,
        token: TokenId,
    ) -> Result<Option<TokenInfo>, StoreError>;

    /// Gives the tenant `name` the weight `weight` (see [`TenantWeight`]), from its
    /// next claims on; `NotFound` when there is no such tenant.
    async fn set_tenant_weight(
        &self,
        name: &TenantName,
        weight: TenantWeight,
    ) -> Result<TenantId, StoreError>;
}

/// What runs and the releases that recorded it.
#[async_trait]
pub trait ReleaseStore: Send + Sync + fmt::Debug {
    /// What the app runs now, component by component, with its active release; empty
    /// for an unknown app.
    async fn current_state(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<CurrentState, StoreError>;

    /// The app's active release: the newest one.
    async fn active_release(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<Option<Release>, StoreError>;

    /// A page of the app's releases, newest first; the cursor is a version.
    /// `None` when the tenant has no such app.
    async fn releases(
        &self,
        tenant: TenantId,
        app: &AppName,
        page: PageRequest,
    ) -> Result<Option<Page<Release>>, StoreError>;

    /// A page of the tenant's apps, by name; the cursor is a name.
    async fn apps(
        &self,
        tenant: TenantId,
        page: PageRequest<AppName>,
    ) -> Result<Page<AppSummary>, StoreError>;

    /// One of the tenant's apps.
    async fn app(&self, tenant: TenantId, app: &AppName) -> Result<Option<AppSummary>, StoreError>;

    /// One release of an app.
    async fn release(
        &self,
        tenant: TenantId,
        app: &AppName,
        version: u32,
    ) -> Result<Option<Release>, StoreError>;

    /// One release of an app, or which of the two is unknown: the app, or only
    /// the release.
    async fn find_release(
        &self,
        tenant: TenantId,
        app: &AppName,
        version: u32,
    ) -> Result<Result<Release, Unknown>, StoreError> {
        if let Some(release) = self.release(tenant, app, version).await? {
            return Ok(Ok(release));
        }
        Ok(Err(
            match self.releases(tenant, app, PageRequest::first(1)).await? {
                Some(_) => Unknown::Release {
                    app: app.to_string(),
                    version: version.to_string(),
                },
                None => Unknown::App(app.to_string()),
            },
        ))
    }
}

/// Deployments: their submission, reading, cancellation, retry and retention, and
/// the app policies and automatic rollbacks they carry.
#[async_trait]
pub trait DeploymentStore: Send + Sync + fmt::Debug {
    /// The deployment a tenant made with an idempotency key, with the request hash.
    async fn deployment_by_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(DeploymentId, String)>, StoreError>;

    /// A page of the tenant's deployments that `filter` holds, newest first; the
    /// cursor is a deployment's id.
    async fn deployments(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        page: PageRequest<DeploymentId>,
    ) -> Result<Page<DeploymentSummary>, StoreError>;

    /// Writes the deployment, its tasks (those without needs `ready`, with their
    /// dispatch in the outbox) and creates the app if needed, in one transaction.
    /// A plan without tasks is recorded as `succeeded` at once. With an idempotency
    /// key the tenant used before, nothing is written and the first deployment is named.
    async fn create_deployment(&self, new: &NewDeployment) -> Result<Creation, StoreError>;

    /// The deployment with its tasks, if it belongs to `tenant`.
    async fn deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Deployment>, StoreError>;

    /// Asks a deployment to stop: its tasks that have not started are `cancelled`
    /// at once; its running steps are stopped by their workers (which learn it when
    /// they extend their leases) and recorded `cancelled`; the deployment ends
    /// `cancelled`, without a release, when the last of them has. Asking again
    /// changes nothing. `None` when the tenant has no such deployment.
    async fn cancel_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Cancellation>, StoreError>;

    /// The app's concurrency policy: the last one a deployment request named, else
    /// `queue`.
    async fn concurrency_policy(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<ConcurrencyPolicy, StoreError>;

    /// The deployments of the app, other than `newer` and created before it, that
    /// have not ended and still have tasks to do (not started or running) on one of
    /// `components`: those a `cancel-in-progress` deployment supersedes.
    async fn superseded_by(
        &self,
        tenant: TenantId,
        newer: DeploymentId,
        components: &[ComponentName],
    ) -> Result<Vec<DeploymentId>, StoreError>;

    /// Records an external update of a component of the tenant's app, once per
    /// component and artifact: a second call records nothing and says what the
    /// first did. With `as_release` the announced artifact and version become what
    /// the component runs (the platform announced it; nothing is deployed) and the
    /// app's next release is written: a snapshot of what runs. `None` when the
    /// tenant has no such app, or the app runs no such component.
    async fn record_external_update(
        &self,
        tenant: TenantId,
        app: &AppName,
        update: &ExternalUpdate,
        as_release: bool,
    ) -> Result<Option<Recorded>, StoreError>;

    /// Runs a failed deployment's failed and skipped tasks again (a failed one as
    /// its next attempt); its succeeded tasks stay done and their artifacts still
    /// reach the tasks that need them. Refused when the deployment did not fail, or
    /// when the app has a newer release than the one it started from. `None` when
    /// the tenant has no such deployment.
    async fn retry_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Retry>, StoreError>;

    /// Records what already runs as the app's release 1, without deploying
    /// (`drover adopt`); creates the app. When the app has releases already,
    /// records nothing and returns its release 1.
    async fn adopt(
        &self,
        tenant: TenantId,
        app: &AppName,
        components: BTreeMap<ComponentName, ReleasedComponent>,
    ) -> Result<Adoption, StoreError>;

    /// Failed deployments that opted into automatic rollback and have not had it
    /// yet (`armed`).
    async fn armed_auto_rollbacks(&self) -> Result<Vec<AutoRollback>, StoreError>;

    /// Notes that a failed deployment's automatic rollback was submitted (or that
    /// there was nothing to roll back to): it is not armed any more.
    async fn disarm_auto_rollback(&self, deployment: DeploymentId) -> Result<(), StoreError>;

    /// Deletes up to `limit` deployments that ended more than `older_than` ago (by
    /// the database's clock), with their tasks, logs and dependencies; returns how
    /// many. Releases, what runs and armed automatic rollbacks are kept.
    async fn prune_finished(&self, older_than: Duration, limit: u64) -> Result<u64, StoreError>;
}

/// Tasks as workers and the reaper move them: fences, claims, leases, results.
#[async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug {
    /// A new fence for the lock `key`, greater than every one handed out before.
    async fn next_fence(&self, key: &str) -> Result<Fence, StoreError>;

    /// Moves a `ready` task at `claim.attempt` to `running` under `claim.fence` (or
    /// a fence it takes), unless another task of its component runs, a deploy of its
    /// component submitted before has not ended, or its tenant runs its limit.
    async fn claim_task(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError>;

    /// Claims many tasks, each as [`TaskStore::claim_task`] would (a worker claims
    /// the deliveries that arrive together at once); the outcomes are in the order of
    /// `claims`. A store may decide them together, in one transaction: the claims it
    /// refuses there are then decided one by one, so each outcome, and whether a
    /// refused claim spent its fence, is what `claim_task` would have said.
    async fn claim_tasks(&self, claims: &[Claim]) -> Vec<Result<ClaimOutcome, StoreError>> {
        let mut outcomes = Vec::with_capacity(claims.len());
        for claim in claims {
            outcomes.push(self.claim_task(claim).await);
        }
        outcomes
    }

    /// Extends the leases of running tasks, all in one statement (a worker keeps all
    /// its tasks alive at once), and says for each, in order, whether its deployment
    /// was asked to stop meanwhile (the lease is still extended: the step is being
    /// stopped) or the task is no longer at that attempt and fence.
    async fn extend_leases(
        &self,
        tasks: &[LeasedTask],
        lease: Duration,
    ) -> Result<Vec<Lease>, StoreError>;

    /// [`Store::extend_leases`] for one task.
    async fn extend_lease(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        fence: Fence,
        lease: Duration,
    ) -> Result<Lease, StoreError> {
        let leased = [LeasedTask {
            deployment,
            task: task.clone(),
            attempt,
            fence,
        }];
        let mut leases = self.extend_leases(&leased, lease).await?;
        Ok(leases.pop().unwrap_or(Lease::Lost))
    }

    /// Notes the strategy phase a running deploy is in, if the task is still that
    /// attempt's and fence's (`false` otherwise).
    async fn record_phase(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        fence: Fence,
        phase: &str,
    ) -> Result<bool, StoreError>;

    /// Records a result if the task is still `running` at that attempt and fence; a
    /// succeeded deploy or delete changes what runs, in the same transaction and
    /// under the same fence; readies its dependents (dispatch in the outbox), or
    /// skips them when it failed; finishes the deployment when it was the last task,
    /// writing its release (a snapshot of what runs) when it succeeded.
    async fn record_result(&self, result: &TaskResult) -> Result<RecordOutcome, StoreError> {
        let mut outcomes = self.record_results(std::slice::from_ref(result)).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Database("recording a result answered nothing".into()))
    }

    /// Records many results as [`Store::record_result`] does, all in one transaction
    /// (a worker records the results that end together at once): all of them or, on
    /// an error, none. The outcomes are in the order of `results`.
    async fn record_results(
        &self,
        results: &[TaskResult],
    ) -> Result<Vec<RecordOutcome>, StoreError>;

    /// Hands every running task whose lease expired (by the database's clock) out
    /// again as a new attempt, or fails it when it has had `max_attempts` already (its
    /// worker keeps dying on it); dispatches again every handed-out `ready` task no
    /// worker claimed in time (see [`OutboxStore::claim_outbox`]).
    async fn reap_expired(&self, max_attempts: u32) -> Result<Vec<Reaped>, StoreError>;

    /// Hands a running task back at once, as the reaper would once its lease
    /// expired (a draining worker gives up the step it killed): the next attempt is
    /// dispatched, or the task ends `cancelled` if its deployment was. Being handed
    /// back never fails a task for want of attempts. `None`: the task had already
    /// moved on from this attempt and fence, and nothing is written.
    async fn release_lease(&self, task: &LeasedTask) -> Result<Option<Reaped>, StoreError>;

    /// Writes a dispatch to the outbox for every `ready` task (after the loss of an
    /// in-memory broker's queue). Returns how many.
    async fn redispatch_ready(&self) -> Result<usize, StoreError>;

    /// Hands a dispatched task that cannot run yet (its component's lock is held,
    /// an older deployment deploys it first, its tenant runs its limit) back to the
    /// outbox, to be handed out again no earlier than `after` from now: it no longer
    /// counts against its tenant meanwhile, so that the tasks it waits for are handed
    /// out first. `false`: the task is no longer `ready` at the dispatch's attempt,
    /// and the dispatch is stale.
    async fn hand_back(&self, dispatch: &TaskDispatch, after: Duration)
    -> Result<bool, StoreError>;
}

/// The outbox: dispatches written with the state change that makes them, for the
/// relay to publish.
#[async_trait]
pub trait OutboxStore: Send + Sync + fmt::Debug {
    /// The oldest outbox messages, at most `limit`, without claiming them (for
    /// inspection).
    async fn outbox_batch(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Claims up to `limit` outbox messages that are due and not claimed by another
    /// relay, for `lease`: no other relay takes them meanwhile. Fair across tenants:
    /// each tenant's oldest first (as many per turn as its weight), the tenants in
    /// turn, and none of a tenant that has `tenant_limit` times its weight tasks
    /// handed out (claimed dispatches whose tasks have not ended
    /// or become ready again); the claimed dispatches' `ready` tasks are handed out
    /// from now, and dispatched again by the reaper if no worker claimed them within
    /// `redispatch_after` (their dispatch was lost, e.g. dead-lettered).
    async fn claim_outbox(
        &self,
        limit: u64,
        lease: Duration,
        tenant_limit: u32,
        redispatch_after: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Deletes published outbox messages.
    async fn delete_outbox(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Notified after every commit that wrote outbox rows, so the relay wakes at once.
    fn outbox_signal(&self) -> Arc<Notify>;
}

/// A line a step printed: of which attempt, and where in its output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub attempt: u32,
    /// Its number within the attempt's output, from 0.
    pub seq: u64,
    pub line: String,
}

/// What steps print, as they run.
#[async_trait]
pub trait TaskLogStore: Send + Sync + fmt::Debug {
    /// Appends `lines`, numbered from `first`, to the output of `task`'s attempt,
    /// if that attempt still runs under that fence; `false` (nothing written) when
    /// it does not.
    async fn append_task_log(
        &self,
        task: &LeasedTask,
        first: u64,
        lines: &[String],
    ) -> Result<bool, StoreError>;

    /// Up to `limit` lines of the task's output after `after` (attempt, line
    /// number), in order; `None` when the tenant has no such deployment.
    async fn task_log(
        &self,
        tenant: TenantId,
        deployment: DeploymentId,
        task: &TaskId,
        after: Option<(u32, u64)>,
        limit: u64,
    ) -> Result<Option<Vec<LogLine>>, StoreError>;
}

/// A read of a task's output: the lines after where the reader was, and, once the
/// task ended and every line was read, its end state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOutput {
    pub lines: Vec<LogLine>,
    pub ended: Option<TaskState>,
}

/// The most lines one read of a task's output returns.
pub const TASK_OUTPUT_PAGE: u64 = 1000;

/// The output of `task` of the tenant's `deployment` after `after` (attempt, line
/// number); `None` when the tenant has no such deployment or it no such task.
/// The lines are those its worker shipped as the step ran; a task that ended
/// without any (it ran before output was shipped, or on a driver that prints
/// nothing live) gives the log kept with its result, as lines of its last
/// attempt.
pub async fn task_output(
    store: &dyn Store,
    tenant: TenantId,
    deployment: DeploymentId,
    task: &TaskId,
    after: Option<(u32, u64)>,
) -> Result<Option<TaskOutput>, StoreError> {
    // The state first: a task read ended had every line shipped before its result.
    let Some(view) = store.deployment(tenant, deployment).await? else {
        return Ok(None);
    };
    let Some(view) = view.tasks.into_iter().find(|view| &view.id == task) else {
        return Ok(None);
    };
    let Some(lines) = store
        .task_log(tenant, deployment, task, after, TASK_OUTPUT_PAGE)
        .await?
    else {
        return Ok(None);
    };
    let full = lines.len() as u64 == TASK_OUTPUT_PAGE;
    let ended = (view.state.is_terminal() && !full).then_some(view.state);
    if ended.is_none() || !lines.is_empty() {
        return Ok(Some(TaskOutput { lines, ended }));
    }
    let shipped = store
        .task_log(tenant, deployment, task, None, 1)
        .await?
        .is_some_and(|lines| !lines.is_empty());
    let kept = match (shipped, view.log) {
        (false, Some(log)) => log
            .lines()
            .enumerate()
            .map(|(seq, line)| LogLine {
                attempt: view.attempts,
                seq: seq as u64,
                line: line.to_owned(),
            })
            .filter(|line| after.is_none_or(|after| (line.attempt, line.seq) > after))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some(TaskOutput { lines: kept, ended }))
}

/// Saved plans.
#[async_trait]
pub trait PlanStore: Send + Sync + fmt::Debug {
    /// Keeps a plan of `app` of `tenant` under `id`.
    async fn save_plan(
        &self,
        tenant: TenantId,
        id: PlanId,
        app: &AppName,
        content: &PlanContent,
    ) -> Result<SavedPlan, StoreError>;

    /// The tenant's saved plan `id`; another tenant's is `None`.
    async fn saved_plan(
        &self,
        tenant: TenantId,
        id: PlanId,
    ) -> Result<Option<SavedPlan>, StoreError>;

    /// Deletes up to `limit` plans saved more than `older_than` ago (by the
    /// database's clock); returns how many. A deployment applied from one is kept.
    async fn prune_saved_plans(&self, older_than: Duration, limit: u64) -> Result<u64, StoreError>;
}

/// Webhooks and the answers to their deliveries.
#[async_trait]
pub trait HookStore: Send + Sync + fmt::Debug {
    async fn create_hook(&self, tenant: TenantId, hook: &NewHook) -> Result<HookInfo, StoreError>;

    /// A page of the tenant's hooks, newest first.
    async fn hooks(
        &self,
        tenant: TenantId,
        page: PageRequest<HookId>,
    ) -> Result<Page<HookInfo>, StoreError>;

    /// Every tenant's hooks of `kind` for an app named `app`: a delivery names
    /// no tenant, its signature tells whose hook it is.
    async fn hooks_of_app(&self, kind: HookKind, app: &AppName) -> Result<Vec<Hook>, StoreError>;

    /// Makes `secret` the hook's newest secret, the one before still valid;
    /// refused while two are valid. `None`: no such hook of the tenant.
    async fn rotate_hook_secret(
        &self,
        tenant: TenantId,
        id: HookId,
        secret: &str,
    ) -> Result<Option<Rotation>, StoreError>;

    /// Ends a rotation: only the newest secret stays valid.
    async fn finish_hook_rotation(
        &self,
        tenant: TenantId,
        id: HookId,
    ) -> Result<Option<HookInfo>, StoreError>;

    /// Removes a hook and the answers to its deliveries.
    async fn delete_hook(
        &self,
        tenant: TenantId,
        id: HookId,
    ) -> Result<Option<HookInfo>, StoreError>;

    /// The answer to `delivery` of `hook`, if it came within `keep`.
    async fn hook_answer(
        &self,
        hook: HookId,
        delivery: &str,
        keep: Duration,
    ) -> Result<Option<HookAnswer>, StoreError>;

    /// Keeps the answer to `delivery` (the first one stays, should two race), and
    /// forgets the hook's answers older than `keep`.
    async fn record_hook_answer(
        &self,
        hook: HookId,
        delivery: &str,
        answer: &HookAnswer,
        keep: Duration,
    ) -> Result<(), StoreError>;
}

/// The store: every capability, on one backend.
#[async_trait]
pub trait Store:
    TenantStore
    + ReleaseStore
    + DeploymentStore
    + TaskStore
    + OutboxStore
    + PlanStore
    + HookStore
    + TaskLogStore
    + Send
    + Sync
    + fmt::Debug
{
    /// Whether the database answers (for readiness checks).
    async fn check_connectivity(&self) -> Result<(), StoreError>;

    /// How many deployments and tasks are in each state, and how the outbox stands
    /// (for the metrics).
    async fn figures(&self) -> Result<StoreFigures, StoreError>;
}

/// What the store holds, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFigures {
    pub deployments: BTreeMap<DeploymentState, u64>,
    pub tasks: BTreeMap<TaskState, u64>,
    /// Dispatches in the outbox.
    pub outbox: u64,
    /// How long the oldest due dispatch has waited there.
    pub outbox_lag: Duration,
}

/// One task row to write, derived from a [`NewDeployment`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewTaskRow {
    pub(crate) id: TaskId,
    pub(crate) kind: TaskKind,
    pub(crate) component: ComponentName,
    pub(crate) needs: Vec<TaskId>,
    pub(crate) spec: Component,
    /// For deploys: the build in this deployment whose artifact is deployed.
    pub(crate) artifact_from: Option<TaskId>,
    /// For deploys of an artifact already built: that artifact, from what runs (or
    /// the rollback's target, the external update).
    pub(crate) artifact: Option<String>,
    /// For deploys: the version it puts in place.
    pub(crate) version: Option<String>,
}

impl NewDeployment {
    /// The task rows of this deployment: each with the spec it runs, and where its
    /// artifact and version come from. Pure.
    pub(crate) fn task_rows(&self) -> Result<Vec<NewTaskRow>, StoreError> {
        // A deploy without a build of its own runs an artifact built before: the
        // rollback's target's (the external update's), else the one running now.
        let built = |name: &ComponentName| {
            self.artifacts
                .as_ref()
                .unwrap_or(&self.current.components)
                .get(name)
                .filter(|released| released.artifact.is_some())
        };
        self.plan
            .tasks
            .iter()
            .map(|task| {
                let unknown = |what| StoreError::NotFound {
                    what,
                    id: task.component.to_string(),
                };
                let (spec, artifact_from, artifact, version) = match task.kind {
                    TaskKind::Delete => {
                        let running = self
                            .current
                            .components
                            .get(&task.component)
                            .ok_or_else(|| unknown("running component"))?;
                        (running.spec.clone(), None, running.artifact.clone(), None)
                    }
                    TaskKind::Build | TaskKind::Deploy => {
                        let spec = self
                            .manifest
                            .components
                            .get(&task.component)
                            .ok_or_else(|| unknown("component"))?
                            .clone();
                        let source = self.manifest.artifact_source(&task.component);
                        let artifact_from =
                            self.plan.artifact_task(&self.manifest, &task.component);
                        let before = built(source).or_else(|| built(&task.component));
                        match (task.kind, artifact_from, before) {
                            (TaskKind::Build, ..) => (spec, None, None, None),
                            (_, None, Some(before)) => {
                                (spec, None, before.artifact.clone(), before.version.clone())
                            }
                            (_, artifact_from, _) => {
                                let version = self
                                    .manifest
                                    .components
                                    .get(source)
                                    .and_then(Component::version);
                                (spec, artifact_from, None, version)
                            }
                        }
                    }
                };
                Ok(NewTaskRow {
                    id: task.id.clone(),
                    kind: task.kind,
                    component: task.component.clone(),
                    needs: task.needs.clone(),
                    spec,
                    artifact_from,
                    artifact,
                    version,
                })
            })
            .collect()
    }
}

/// Milliseconds since the epoch to a timestamp.
pub(crate) fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
