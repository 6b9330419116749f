//! What the API sends: wire shapes of the domain types, with their OpenAPI schemas.
//! The plan keeps the stable JSON contract of `drover plan -o json`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::model::{
    Action, ConcurrencyPolicy, DeploymentState, HookKind, Scope, Strategy, TaskKind, TaskState,
};
use shared::plan::Plan;
use shared::release::{Components, CurrentState, Release};
use shared::store::{
    Adoption, AppSummary, AuditEntry, Deployment, DeploymentSummary, HookInfo, Page, SavedPlan,
    TokenInfo, Waiting,
};
use utoipa::ToSchema;

/// A deployment with its plan and tasks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentBody {
    pub id: String,
    pub app: String,
    #[schema(example = "running")]
    pub state: DeploymentState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The release the plan was computed against.
    pub base_release: Option<u32>,
    /// The release this deployment wrote (for one that changed nothing: the release
    /// that stayed active).
    pub release: Option<ReleaseRef>,
    /// Whether it ended without a release (failed or cancelled) after some of its
    /// deploys or deletes succeeded: what runs changed, and plans are made against it.
    #[serde(default)]
    pub partially_applied: bool,
    /// How its deploys roll out: `rolling`, `recreate`, `blue-green` or `canary`.
    #[schema(example = "rolling")]
    pub strategy: Strategy,
    /// The newest rollback that replaces this deployment (an automatic one when it
    /// failed, or one asked for while its release was active), however it went.
    #[serde(default)]
    pub rolled_back_by: Option<String>,
    pub plan: PlanBody,
    pub tasks: Vec<TaskBody>,
}

/// A deployment in a list: what it is and how it stands, without its plan and tasks
/// (`GET /v1/deployments/{id}` has them).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentSummaryBody {
    pub id: String,
    pub app: String,
    #[schema(example = "succeeded")]
    pub state: DeploymentState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub base_release: Option<u32>,
    pub release: Option<ReleaseRef>,
    #[schema(example = "rolling")]
    pub strategy: Strategy,
}

impl From<&DeploymentSummary> for DeploymentSummaryBody {
    fn from(deployment: &DeploymentSummary) -> Self {
        Self {
            id: deployment.id.to_string(),
            app: deployment.app.to_string(),
            state: deployment.state,
            created_at: deployment.created_at,
            started_at: deployment.started_at,
            finished_at: deployment.finished_at,
            base_release: deployment.base_release,
            release: deployment.release.map(|version| ReleaseRef { version }),
            strategy: deployment.strategy,
        }
    }
}

/// An app: its active release and the policies its deployments run under.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppBody {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Its newest release; absent before the first.
    pub active_release: Option<u32>,
    /// `queue` or `cancel-in-progress`.
    #[schema(example = "queue")]
    pub concurrency: ConcurrencyPolicy,
    /// `rolling`, `recreate`, `blue-green` or `canary`.
    #[schema(example = "rolling")]
    pub strategy: Strategy,
    /// How many deployments it ever had.
    pub deployments: u64,
}

impl From<&AppSummary> for AppBody {
    fn from(app: &AppSummary) -> Self {
        Self {
            name: app.name.to_string(),
            created_at: app.created_at,
            active_release: app.active_release,
            concurrency: app.concurrency,
            strategy: app.strategy,
            deployments: app.deployments,
        }
    }
}

/// An app with what it runs now, component by component.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppDetailBody {
    #[serde(flatten)]
    pub app: AppBody,
    /// What runs: each component's spec, artifact and version, and the deployment
    /// that put it there.
    pub running: BTreeMap<String, ReleasedComponentBody>,
    /// Whether what runs differs from the active release: a deployment that failed
    /// or was cancelled applied some of its deploys or deletes since.
    pub changed_since_release: bool,
}

impl AppDetailBody {
    pub fn new(app: &AppSummary, current: &CurrentState) -> Self {
        Self {
            // What runs was read after the app: its release is the newer word.
            app: AppBody {
                active_release: current.release,
                ..AppBody::from(app)
            },
            running: component_bodies(&current.components),
            changed_since_release: current.changed_since_release,
        }
    }
}

/// Names a release.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRef {
    pub version: u32,
}

/// A task and how it went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskBody {
    /// `build:<component>`, `deploy:<component>` or `delete:<component>`.
    pub id: String,
    #[schema(example = "deploy")]
    pub kind: TaskKind,
    pub component: String,
    #[schema(example = "succeeded")]
    pub state: TaskState,
    pub attempts: u32,
    pub needs: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub artifact: Option<String>,
    pub error: Option<String>,
    /// The step's output (its tail, when long).
    pub log: Option<String>,
    /// Why a task that is neither running nor finished waits: `{"reason": "needs",
    /// "tasks": [...]}`, `order` (`deployment`, `task`: a deployment submitted
    /// earlier still deploys the component), `lock` (`deployment`, `task`), `retry-backoff` (`until`),
    /// `tenant-limit` (`running`, `limit`) or `queued` (`tenant_running`, `tenant_weight`).
    #[schema(value_type = Option<Object>)]
    pub waiting: Option<Waiting>,
    /// For a deploy: the strategy's phase it is in or ended in, e.g. `promote`.
    #[serde(default)]
    pub phase: Option<String>,
}

/// The plan: what each component gets, the task DAG and its stages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanBody {
    pub app: String,
    /// `create`, `update`, `replace`, `unchanged` or `delete`, by component.
    pub actions: BTreeMap<String, Action>,
    pub tasks: Vec<PlannedTaskBody>,
    /// The longest-path layering of `tasks`: what may run in parallel.
    pub stages: Vec<Vec<String>>,
    /// Components whose running state drifted from what the store records running, with the
    /// fields that differ; absent when nothing drifted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<String, Vec<String>>,
}

/// One task of a plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlannedTaskBody {
    pub id: String,
    #[schema(example = "build")]
    pub kind: TaskKind,
    pub component: String,
    pub needs: Vec<String>,
}

impl From<&Plan> for PlanBody {
    fn from(plan: &Plan) -> Self {
        Self {
            app: plan.app.to_string(),
            actions: plan
                .actions
                .iter()
                .map(|(component, action)| (component.to_string(), *action))
                .collect(),
            tasks: plan
                .tasks
                .iter()
                .map(|task| PlannedTaskBody {
                    id: task.id.to_string(),
                    kind: task.kind,
                    component: task.component.to_string(),
                    needs: task.needs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            stages: plan
                .stages
                .iter()
                .map(|stage| stage.iter().map(ToString::to_string).collect())
                .collect(),
            drift: plan
                .drift
                .iter()
                .map(|(component, fields)| (component.to_string(), fields.clone()))
                .collect(),
        }
    }
}

impl From<&Deployment> for DeploymentBody {
    fn from(deployment: &Deployment) -> Self {
        Self {
            id: deployment.id.to_string(),
            app: deployment.app.to_string(),
            state: deployment.state,
            created_at: deployment.created_at,
            started_at: deployment.started_at,
            finished_at: deployment.finished_at,
            base_release: deployment.base_release,
            release: deployment.release.map(|version| ReleaseRef { version }),
            partially_applied: deployment.partially_applied,
            strategy: deployment.strategy,
            rolled_back_by: deployment.rolled_back_by.map(|id| id.to_string()),
            plan: PlanBody::from(&deployment.plan),
            tasks: deployment
                .tasks
                .iter()
                .map(|task| TaskBody {
                    id: task.id.to_string(),
                    kind: task.kind,
                    component: task.component.to_string(),
                    state: task.state,
                    attempts: task.attempts,
                    needs: task.needs.iter().map(ToString::to_string).collect(),
                    started_at: task.started_at,
                    finished_at: task.finished_at,
                    artifact: task.artifact.clone(),
                    error: task.error.clone(),
                    log: task.log.clone(),
                    waiting: task.waiting.clone(),
                    phase: task.phase.clone(),
                })
                .collect(),
        }
    }
}

/// A release: every component's deployed spec and artifact.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleaseBody {
    pub app: String,
    pub version: u32,
    /// The deployment that made it.
    pub deployment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub components: BTreeMap<String, ReleasedComponentBody>,
}

/// One component as a release holds it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleasedComponentBody {
    /// The component's version: its build id, or a hash of its build input.
    pub version: Option<String>,
    pub artifact: Option<String>,
    /// The deployment that last deployed it.
    pub deployment: Option<String>,
    /// The component as the manifest declared it.
    #[schema(value_type = shared::manifest::Component)]
    pub spec: serde_json::Value,
}

impl From<&Release> for ReleaseBody {
    fn from(release: &Release) -> Self {
        Self {
            app: release.app.to_string(),
            version: release.version,
            deployment: release.deployment.map(|id| id.to_string()),
            created_at: release.created_at,
            components: component_bodies(&release.components),
        }
    }
}

/// Components as a release (or what runs) holds them.
fn component_bodies(components: &Components) -> BTreeMap<String, ReleasedComponentBody> {
    components
        .iter()
        .map(|(name, component)| {
            (
                name.to_string(),
                ReleasedComponentBody {
                    version: component.version.clone(),
                    artifact: component.artifact.clone(),
                    deployment: component.deployment.map(|id| id.to_string()),
                    spec: serde_json::to_value(&component.spec).unwrap_or(serde_json::Value::Null),
                },
            )
        })
        .collect()
}

/// A new artifact of a component, announced from outside.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalUpdateRequest {
    /// What to run, e.g. `registry.example/api@sha256:…`.
    pub artifact: String,
    /// The version it is, e.g. `1.4.2`; the release records it (else the artifact).
    pub version: Option<String>,
    /// The commit it was built from.
    pub sha: Option<String>,
}

/// What adopting a running app recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdoptionBody {
    /// The app's release 1.
    pub release: ReleaseBody,
    /// Whether the app had releases already (and nothing was recorded now).
    pub existing: bool,
}

impl From<&Adoption> for AdoptionBody {
    fn from(adoption: &Adoption) -> Self {
        Self {
            release: ReleaseBody::from(&adoption.release),
            existing: adoption.existing,
        }
    }
}

/// What an external update did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExternalUpdateAnswer {
    /// `recorded, not deployed` or `recorded, deploying`.
    pub message: String,
    /// The release it was recorded as, when it is not deployed.
    pub release: Option<u32>,
    /// The deployment that deploys it, when the component opted in.
    pub deployment: Option<DeploymentBody>,
    /// Whether the same update had been sent before (nothing new was recorded).
    pub duplicate: bool,
}

/// A token to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// What it is for, e.g. `ci` (1 to 64 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// `read`, `deploy` (reads too) or `admin` (everything, tokens included);
    /// default `read`.
    #[serde(default = "least_scope")]
    #[schema(example = "deploy")]
    pub scope: Scope,
    /// After this time the token is refused (RFC 3339, in the future); absent:
    /// never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

fn least_scope() -> Scope {
    Scope::Read
}

/// A token as its tenant sees it: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenBody {
    pub id: String,
    pub name: Option<String>,
    #[schema(example = "deploy")]
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; absent while it is valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&TokenInfo> for TokenBody {
    fn from(token: &TokenInfo) -> Self {
        Self {
            id: token.id.to_string(),
            name: token.name.clone(),
            scope: token.scope,
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
        }
    }
}

/// A token just created, with its secret: shown only this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenCreatedBody {
    #[serde(flatten)]
    pub info: TokenBody,
    /// The bearer secret (`drover_…`): it is not stored and cannot be shown again.
    pub token: String,
}

/// An entry of the audit trail: who did what, and when.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryBody {
    pub id: String,
    pub at: DateTime<Utc>,
    /// The token that asked.
    pub token: Option<String>,
    /// `deployment.started`, `deployment.cancelled`, `deployment.retried`,
    /// `release.rolled_back`, `app.adopted`, `component.external_update`,
    /// `token.created` or `token.revoked`.
    #[schema(example = "deployment.started")]
    pub action: shared::model::AuditAction,
    /// What it acted on: a deployment's id, an app, `app/component`, a token's id.
    pub target: String,
}

impl From<&AuditEntry> for AuditEntryBody {
    fn from(entry: &AuditEntry) -> Self {
        Self {
            id: entry.id.to_string(),
            at: entry.at,
            token: entry.token.map(|token| token.to_string()),
            action: entry.action,
            target: entry.target.clone(),
        }
    }
}

/// A saved plan: what it deploys, what the app ran when it was made (applying it is
/// refused once that moved), and the policies its deployment will run with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SavedPlanBody {
    pub id: String,
    pub app: String,
    pub created_at: DateTime<Utc>,
    /// The app's active release when it was made.
    pub base_release: Option<u32>,
    /// What ran when it was made, by component.
    pub base: BTreeMap<String, ReleasedComponentBody>,
    /// `queue` or `cancel-in-progress`; absent: the app's.
    #[schema(example = "queue")]
    pub concurrency: Option<ConcurrencyPolicy>,
    /// `rolling`, `recreate`, `blue-green` or `canary`; absent: the app's.
    #[schema(example = "rolling")]
    pub strategy: Option<Strategy>,
    pub auto_rollback: bool,
    pub plan: PlanBody,
}

impl From<&SavedPlan> for SavedPlanBody {
    fn from(saved: &SavedPlan) -> Self {
        let content = &saved.content;
        Self {
            id: saved.id.to_string(),
            app: saved.app.to_string(),
            created_at: saved.created_at,
            base_release: content.base.release,
            base: component_bodies(&content.base.components),
            concurrency: content.concurrency,
            strategy: content.strategy,
            auto_rollback: content.auto_rollback,
            plan: PlanBody::from(&content.plan),
        }
    }
}

/// A webhook to make.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHookBody {
    /// `github` (pushes rebuild the components built from the pushed repository)
    /// or `registry` (image pushes are external updates).
    #[schema(example = "github")]
    pub kind: HookKind,
    /// `github` only: the branch whose pushes deploy (default `main`).
    #[schema(max_length = 255)]
    pub branch: Option<String>,
}

/// A webhook (never its secrets).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookBody {
    pub id: String,
    pub app: String,
    #[schema(example = "github")]
    pub kind: HookKind,
    pub branch: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Whether two secrets are valid (a rotation is under way).
    pub rotating: bool,
    /// The path the caller sends deliveries to, e.g. `/v1/hooks/github/toolhunt`.
    pub path: String,
}

impl From<&HookInfo> for HookBody {
    fn from(hook: &HookInfo) -> Self {
        Self {
            id: hook.id.to_string(),
            app: hook.app.to_string(),
            kind: hook.kind,
            branch: hook.branch.clone(),
            created_at: hook.created_at,
            rotating: hook.rotating,
            path: format!("/v1/hooks/{}/{}", hook.kind, hook.app),
        }
    }
}

/// A webhook with a new secret: shown only this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookSecretBody {
    #[serde(flatten)]
    pub hook: HookBody,
    pub secret: String,
}

/// What a webhook delivery did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookReplyBody {
    /// `pong` (GitHub's ping), `ignored` (nothing started: `message` says why),
    /// `deploying` or `recorded` (external updates without a deployment).
    pub outcome: String,
    /// What happened, or why nothing did.
    pub message: String,
    /// The components it rebuilds (a push) or updates (an image push).
    pub components: Vec<String>,
    /// The deployments it started.
    pub deployments: Vec<String>,
}

/// A page of a list (apps, deployments, releases, tokens, the audit trail).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass it as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// How many items the list holds in all.
    pub total: u64,
}

impl<D, T> From<&Page<D>> for PageBody<T>
where
    T: for<'a> From<&'a D>,
{
    fn from(page: &Page<D>) -> Self {
        Self {
            items: page.items.iter().map(T::from).collect(),
            next_cursor: page.next_cursor.clone(),
            total: page.total,
        }
    }
}

/// A page of deployments, newest first.
pub type DeploymentPage = PageBody<DeploymentSummaryBody>;
/// A page of apps, by name.
pub type AppPage = PageBody<AppBody>;
/// A page of releases, newest first.
pub type ReleasePage = PageBody<ReleaseBody>;
/// A page of tokens, newest first.
pub type TokenPage = PageBody<TokenBody>;
/// A page of the audit trail, newest first.
pub type AuditPage = PageBody<AuditEntryBody>;
/// A page of webhooks, newest first.
pub type HookPage = PageBody<HookBody>;
