//! The store suite: one set of cases for the `Store` port, run against SQLite and
//! PostgreSQL (quickwit's `metastore_test_suite!`, garage's `test_suite(db)`).
//!
//! Every case is written once as `async fn case(store: Arc<dyn Store>)`; the macro at
//! the bottom makes one `#[tokio::test]` per case and backend, each on a fresh
//! database of its own. The cases drive the store the way the scheduler and the
//! workers do: plan, create, claim under a fence, record, requeue.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use scheduler::planner::{self, PlanOptions};
use shared::broker::TASKS_QUEUE;
use shared::dispatch::TaskDispatch;
use shared::ids::{DeploymentId, Fence, TaskId, TenantId};
use shared::locks::component_lock_key;
use shared::manifest::Manifest;
use shared::model::{Action, ConcurrencyPolicy, DeploymentState, Scope, TaskKind, TaskState};
use shared::names::{AppName, ComponentName, TenantName};
use shared::plan::{Plan, PlannedTask};
use shared::release::ReleasedComponent;
use shared::store::ReleaseStore as _;
use shared::store::{
    AutoRollback, Cancellation, Claim, ClaimOutcome, ClaimedTask, Deployment, Finished, Lease,
    LeasedTask, NewDeployment, NewToken, OutboxMessage, PageRequest, Reaped, RecordOutcome, Retry,
    SeaOrmStore, Store, StoreError, TaskOutcome, TaskResult, TenantWeight, Waiting,
};

use crate::support::PgDatabase;

// ---- backends ----

/// A store under test and whatever must outlive it (its directory or database).
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<PgDatabase>,
}

pub(crate) async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("drover.db").display()
    );
    let store = SeaOrmStore::connect(&url)
        .await
        .expect("failed to open SQLite");
    store.migrate().await.expect("failed to migrate SQLite");
    Backend {
        store: Arc::new(store),
        _sqlite_dir: Some(dir),
        _postgres: None,
    }
}

pub(crate) async fn postgres() -> Backend {
    let db = PgDatabase::create().await;
    let store = SeaOrmStore::connect(&db.url)
        .await
        .expect("failed to connect to PostgreSQL");
    store.migrate().await.expect("failed to migrate PostgreSQL");
    Backend {
        store: Arc::new(store),
        _sqlite_dir: None,
        _postgres: Some(db),
    }
}

// ---- building manifests and plans ----

fn task_id(text: &str) -> TaskId {
    text.parse().expect("a valid task id")
}

fn component(text: &str) -> ComponentName {
    ComponentName::new(text).expect("a valid component name")
}

fn app(text: &str) -> AppName {
    AppName::new(text).expect("a valid app name")
}

pub(crate) fn manifest(yaml: &str) -> Manifest {
    Manifest::parse(yaml).unwrap_or_else(|errors| panic!("invalid test manifest:\n{errors}"))
}

/// A manifest of one-off components with prebuilt images, one per name.
fn images(names: &[&str]) -> Manifest {
    let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
    for name in names {
        yaml.push_str(&format!(
            "  {name}:\n    type: one-off\n    build: {{image: registry.example/{name}:1}}\n    run: {{command: run-{name}}}\n"
        ));
    }
    manifest(&yaml)
}

/// A plan built by hand: deploy tasks of the named components, each with the deploys
/// it needs, listed so that every task comes after its needs.
fn deploy_plan(app_name: &AppName, deploys: &[(&str, &[&str])]) -> Plan {
    let mut stage_of: BTreeMap<TaskId, usize> = BTreeMap::new();
    let mut tasks = Vec::new();
    let mut stages: Vec<Vec<TaskId>> = Vec::new();
    for (name, needs) in deploys {
        let id = TaskId::new(TaskKind::Deploy, &component(name));
        let needs: Vec<TaskId> = needs
            .iter()
            .map(|need| TaskId::new(TaskKind::Deploy, &component(need)))
            .collect();
        let stage = needs
            .iter()
            .map(|need| stage_of.get(need).expect("needs are listed first") + 1)
            .max()
            .unwrap_or(0);
        stage_of.insert(id.clone(), stage);
        if stages.len() <= stage {
            stages.resize_with(stage + 1, Vec::new);
        }
        stages[stage].push(id.clone());
        tasks.push(PlannedTask {
            id,
            kind: TaskKind::Deploy,
            component: component(name),
            needs,
        });
    }
    Plan {
        app: app_name.clone(),
        actions: deploys
            .iter()
            .map(|(name, _)| (component(name), Action::Create))
            .collect(),
        tasks,
        stages,
        drift: BTreeMap::new(),
    }
}

/// `deploy_plan` over a manifest of image components with the same names.
fn dag(app_name: &AppName, deploys: &[(&str, &[&str])]) -> (Manifest, Plan) {
    let names: Vec<&str> = deploys.iter().map(|(name, _)| *name).collect();
    (images(&names), deploy_plan(app_name, deploys))
}

const TOOLHUNT: &str = "
config-version: 0.1
components:
  api:
    type: continuous
    build: {repository: https://example.org/api.git, ref: main}
    build-id: v1
    run: {command: serve, port: 8000}
    wait-for: [migrate]
  migrate:
    type: one-off
    build: {reuse-from: api}
    run: {command: migrate}
  flower:
    type: continuous
    build: {reuse-from: migrate}
    run: {command: flower, port: 5555}
    wait-for: [api]
  cleanup:
    type: scheduled
    build: {image: registry.example/cleanup:1.4}
    run: {command: cleanup, schedule: '0 * * * *'}
";

// ---- driving the store like the scheduler and the workers ----

#[derive(Clone)]
/// One tenant's app in a store, driven as the API, the scheduler and the workers
/// would (the API tests borrow it to make releases).
pub(crate) struct Ctx {
    store: Arc<dyn Store>,
    tenant: TenantId,
    app: AppName,
}

const LEASE: Duration = Duration::from_secs(60);

impl Ctx {
    pub(crate) async fn new(store: Arc<dyn Store>, tenant: &str, app_name: &str) -> Ctx {
        let tenant = store
            .ensure_tenant(&TenantName::new(tenant).expect("a valid tenant name"))
            .await
            .expect("ensure_tenant");
        Ctx {
            store,
            tenant,
            app: app(app_name),
        }
    }

    /// Plans `manifest` against what runs and writes the deployment.
    pub(crate) async fn deploy(&self, manifest: Manifest) -> (DeploymentId, Plan) {
        let current = self.current().await;
        let plan = planner::plan(
            &self.app,
            &manifest,
            current.components(),
            &PlanOptions::default(),
        );
        let id = self.create(manifest, plan.clone()).await;
        (id, plan)
    }

    /// Writes a deployment of a given plan over what runs.
    async fn create(&self, manifest: Manifest, plan: Plan) -> DeploymentId {
        let current = self.current().await;
        let new = NewDeployment {
            idempotency: None,
            artifacts: None,
            rollback_to: None,
            replaces: None,
            auto_rollback: false,
            external_update: None,
            concurrency: None,
            strategy: None,
            id: DeploymentId::generate(),
            tenant: self.tenant,
            manifest,
            plan,
            current,
        };
        self.store
            .create_deployment(&new)
            .await
            .expect("create_deployment");
        new.id
    }

    async fn current(&self) -> shared::release::CurrentState {
        self.store
            .current_state(self.tenant, &self.app)
            .await
            .expect("current_state")
    }

    async fn active_release(&self) -> Option<shared::release::Release> {
        self.store
            .active_release(self.tenant, &self.app)
            .await
            .expect("active_release")
    }

    async fn show(&self, deployment: DeploymentId) -> Deployment {
        self.store
            .deployment(self.tenant, deployment)
            .await
            .expect("deployment")
            .expect("the deployment exists")
    }

    /// The lock key of `task`'s component.
    fn lock_key(&self, task: &TaskId) -> String {
        let (_, component) = task.parts();
        component_lock_key(self.tenant, &self.app, &component)
    }

    /// A new fence for the lock of `task`'s component, taken before a claim.
    async fn fence(&self, task: &TaskId) -> Fence {
        self.store
            .next_fence(&self.lock_key(task))
            .await
            .expect("next_fence")
    }

    async fn try_claim(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        fence: Fence,
        lease: Duration,
    ) -> ClaimOutcome {
        self.store
            .claim_task(&Claim {
                tenant: self.tenant,
                deployment,
                task: task.clone(),
                attempt,
                lock_key: self.lock_key(task),
                fence: Some(fence),
                worker: "worker-1".to_owned(),
                lease,
                tenant_limit: None,
            })
            .await
            .expect("claim_task")
    }

    /// Claims `task` at `attempt` under a new fence; panics when it is not claimable.
    async fn claim_at(&self, deployment: DeploymentId, task: &TaskId, attempt: u32) -> ClaimedTask {
        self.claim_leased(deployment, task, attempt, LEASE).await
    }

    async fn claim_leased(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        lease: Duration,
    ) -> ClaimedTask {
        let fence = self.fence(task).await;
        match self
            .try_claim(deployment, task, attempt, fence, lease)
            .await
        {
            ClaimOutcome::Claimed(claimed) => *claimed,
            other => panic!("expected to claim {task} at attempt {attempt}, got {other:?}"),
        }
    }

    pub(crate) async fn claim(&self, deployment: DeploymentId, task: &str) -> ClaimedTask {
        self.claim_at(deployment, &task_id(task), 1).await
    }

    async fn record(&self, claimed: &ClaimedTask, outcome: TaskOutcome) -> RecordOutcome {
        record(self.store.as_ref(), claimed, outcome).await
    }

    pub(crate) async fn succeed(
        &self,
        claimed: &ClaimedTask,
        artifact: Option<&str>,
    ) -> RecordOutcome {
        let artifact = artifact.map(str::to_owned);
        self.record(claimed, TaskOutcome::Succeeded { artifact })
            .await
    }

    async fn fail(&self, claimed: &ClaimedTask, error: &str) -> RecordOutcome {
        let error = error.to_owned();
        self.record(claimed, TaskOutcome::Failed { error }).await
    }

    /// Claims and succeeds the task `dispatch` names, as a worker would.
    async fn run_dispatched(&self, dispatch: &TaskDispatch) {
        let claimed = self
            .claim_at(dispatch.deployment, &dispatch.task, dispatch.attempt)
            .await;
        let recorded = self.succeed(&claimed, None).await;
        assert!(
            matches!(recorded, RecordOutcome::Recorded { .. }),
            "{recorded:?}"
        );
    }

    /// Claims and succeeds `task` (attempt 1).
    async fn run(&self, deployment: DeploymentId, task: &str) -> RecordOutcome {
        let claimed = self.claim(deployment, task).await;
        self.succeed(&claimed, None).await
    }

    /// Runs the deployment to its end as the workers would: every dispatch in the
    /// outbox is claimed and succeeds; builds produce `artifact(component)`.
    pub(crate) async fn run_to_end(
        &self,
        deployment: DeploymentId,
        artifact: impl Fn(&ComponentName) -> String,
    ) -> Finished {
        loop {
            let dispatches = drain_outbox(self.store.as_ref()).await;
            assert!(
                !dispatches.is_empty(),
                "the deployment is stuck: {:#?}",
                self.show(deployment).await.tasks
            );
            for dispatch in dispatches {
                assert_eq!(dispatch.deployment, deployment);
                let claimed = self
                    .claim_at(deployment, &dispatch.task, dispatch.attempt)
                    .await;
                let produced =
                    (claimed.kind == TaskKind::Build).then(|| artifact(&claimed.component));
                match self.succeed(&claimed, produced.as_deref()).await {
                    RecordOutcome::Recorded {
                        finished: Some(finished),
                        ..
                    } => return finished,
                    RecordOutcome::Recorded { finished: None, .. } => {}
                    RecordOutcome::Retrying { .. } => panic!("{} is retrying", claimed.task),
                    RecordOutcome::Stale => panic!("the result of {} was stale", claimed.task),
                }
            }
        }
    }
}

fn result_of(claimed: &ClaimedTask, outcome: TaskOutcome) -> TaskResult {
    TaskResult {
        deployment: claimed.deployment,
        task: claimed.task.clone(),
        attempt: claimed.attempt,
        fence: claimed.fence,
        outcome,
        log: format!("log of {}", claimed.task),
    }
}

async fn record(store: &dyn Store, claimed: &ClaimedTask, outcome: TaskOutcome) -> RecordOutcome {
    store
        .record_result(&result_of(claimed, outcome))
        .await
        .expect("record_result")
}

/// Records the success of every task in `claimed` at once; each is recorded
/// without finishing the deployment.
async fn succeed_all_at_once(store: &Arc<dyn Store>, claimed: Vec<ClaimedTask>) {
    let handles: Vec<_> = claimed
        .into_iter()
        .map(|claimed| {
            let store = store.clone();
            tokio::spawn(async move { record(store.as_ref(), &claimed, succeeded()).await })
        })
        .collect();
    for handle in handles {
        let outcome = handle.await.expect("a recorder panicked");
        assert_eq!(outcome, recorded());
    }
}

/// A result recorded without finishing the deployment or skipping anything.
fn recorded() -> RecordOutcome {
    RecordOutcome::Recorded {
        skipped: vec![],
        finished: None,
    }
}

/// A result that finished the deployment in `state`, writing `release`.
fn done(state: DeploymentState, release: Option<u32>) -> RecordOutcome {
    RecordOutcome::Recorded {
        skipped: vec![],
        finished: Some(Finished { state, release }),
    }
}

/// The state and attempt a refused claim reports.
fn refusal(outcome: &ClaimOutcome) -> Option<(TaskState, u32)> {
    match outcome {
        ClaimOutcome::NotClaimable { state, attempt } => Some((*state, *attempt)),
        _ => None,
    }
}

fn succeeded() -> TaskOutcome {
    TaskOutcome::Succeeded { artifact: None }
}

/// Every dispatch waiting in the outbox, oldest first.
async fn outbox(store: &dyn Store) -> Vec<TaskDispatch> {
    let messages = store.outbox_batch(10_000).await.expect("outbox_batch");
    for message in &messages {
        assert_eq!(message.queue, TASKS_QUEUE, "{message:?}");
    }
    messages
        .into_iter()
        .map(|message| message.dispatch)
        .collect()
}

/// What the reaper hands out again, with attempts to spare.
async fn reap(store: &dyn Store) -> Vec<TaskDispatch> {
    store
        .reap_expired(u32::MAX)
        .await
        .expect("reap_expired")
        .iter()
        .filter_map(|reaped| reaped.requeued().cloned())
        .collect()
}

/// Every dispatch waiting in the outbox, removed from it (as the relay does).
async fn drain_outbox(store: &dyn Store) -> Vec<TaskDispatch> {
    let messages = store.outbox_batch(10_000).await.expect("outbox_batch");
    let ids: Vec<i64> = messages.iter().map(|message| message.id).collect();
    store.delete_outbox(&ids).await.expect("delete_outbox");
    messages
        .into_iter()
        .map(|message| message.dispatch)
        .collect()
}

/// The task ids of some dispatches, sorted.
fn dispatched(dispatches: &[TaskDispatch]) -> Vec<String> {
    let mut ids: Vec<String> = dispatches.iter().map(|d| d.task.to_string()).collect();
    ids.sort();
    ids
}

fn task_state(deployment: &Deployment, task: &str) -> TaskState {
    deployment
        .tasks
        .iter()
        .find(|view| view.id.as_str() == task)
        .unwrap_or_else(|| panic!("no task {task} in {:#?}", deployment.tasks))
        .state
}

/// The task states of a deployment, by task id.
fn task_states(deployment: &Deployment) -> BTreeMap<String, TaskState> {
    deployment
        .tasks
        .iter()
        .map(|view| (view.id.to_string(), view.state))
        .collect()
}

fn sorted(ids: &[TaskId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(TaskId::to_string).collect();
    ids.sort();
    ids
}

/// Everything an operator can see of a deployment, to compare before and after.
fn snapshot(deployment: &Deployment) -> serde_json::Value {
    serde_json::to_value(deployment).expect("a deployment serializes")
}

// ---- the cases ----

/// The first tasks are those without needs: `ready`, each with one dispatch (app,
/// tenant, attempt 1) in the outbox; every other task waits `blocked`.
async fn create_readies_tasks_without_needs(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let (id, plan) = ctx.deploy(manifest(TOOLHUNT)).await;
    let roots: Vec<String> = plan
        .tasks
        .iter()
        .filter(|task| task.needs.is_empty())
        .map(|task| task.id.to_string())
        .collect();
    assert_eq!(roots, ["build:api", "build:cleanup"], "{plan:#?}");
    assert!(plan.tasks.len() > roots.len());

    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Pending);
    assert_eq!(deployment.app, ctx.app);
    assert_eq!(deployment.tenant, ctx.tenant);
    assert_eq!(deployment.plan, plan);
    assert_eq!(deployment.started_at, None);
    assert_eq!(deployment.finished_at, None);
    assert_eq!(deployment.release, None);
    assert_eq!(deployment.tasks.len(), plan.tasks.len());
    for task in &deployment.tasks {
        let expected = if task.needs.is_empty() {
            TaskState::Ready
        } else {
            TaskState::Blocked
        };
        assert_eq!(task.state, expected, "{}", task.id);
        assert_eq!(task.attempts, 0, "{}", task.id);
    }

    let dispatches = outbox(store.as_ref()).await;
    assert_eq!(dispatched(&dispatches), roots);
    for dispatch in &dispatches {
        assert_eq!(dispatch.tenant, ctx.tenant);
        assert_eq!(dispatch.app, ctx.app);
        assert_eq!(dispatch.deployment, id);
        assert_eq!(dispatch.attempt, 1);
    }
}

/// A plan with no tasks has nothing to wait for: `succeeded` at once, nothing dispatched.
async fn empty_plan_succeeds_at_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let id = ctx
        .create(images(&["api"]), deploy_plan(&ctx.app, &[]))
        .await;
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Succeeded);
    assert!(deployment.finished_at.is_some());
    assert!(deployment.tasks.is_empty());
    assert_eq!(deployment.release, None);
    assert!(outbox(store.as_ref()).await.is_empty());
    assert_eq!(ctx.active_release().await, None);
}

/// A claim succeeds only for a `ready` task at its attempt, once; it hands the worker
/// everything the step needs and moves the deployment to `running`.
async fn claim_takes_only_a_ready_task_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let manifest = manifest(TOOLHUNT);
    let (id, _) = ctx.deploy(manifest.clone()).await;
    let build = task_id("build:api");
    let blocked = task_id("deploy:api");

    let fence = ctx.fence(&blocked).await;
    let outcome = ctx.try_claim(id, &blocked, 1, fence, LEASE).await;
    assert_eq!(
        refusal(&outcome),
        Some((TaskState::Blocked, 1)),
        "{outcome:?}"
    );
    let fence = ctx.fence(&build).await;
    let outcome = ctx.try_claim(id, &build, 2, fence, LEASE).await;
    assert_eq!(
        refusal(&outcome),
        Some((TaskState::Ready, 1)),
        "{outcome:?}"
    );
    let outcome = ctx
        .try_claim(id, &task_id("deploy:nope"), 1, fence, LEASE)
        .await;
    assert!(matches!(outcome, ClaimOutcome::Unknown), "{outcome:?}");
    let outcome = ctx
        .try_claim(DeploymentId::generate(), &build, 1, fence, LEASE)
        .await;
    assert!(matches!(outcome, ClaimOutcome::Unknown), "{outcome:?}");
    assert_eq!(ctx.show(id).await.state, DeploymentState::Pending);

    let claimed = ctx.claim(id, "build:api").await;
    assert_eq!(claimed.tenant, ctx.tenant);
    assert_eq!(claimed.app, ctx.app);
    assert_eq!(claimed.deployment, id);
    assert_eq!(claimed.task, build);
    assert_eq!(claimed.kind, TaskKind::Build);
    assert_eq!(claimed.component, component("api"));
    assert_eq!(&claimed.spec, &manifest.components["api"]);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.artifact, None);

    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Running);
    assert!(deployment.started_at.is_some());
    assert_eq!(task_state(&deployment, "build:api"), TaskState::Running);

    // The same dispatch delivered twice: the second claim finds the task running,
    // even under a newer fence.
    let fence = ctx.fence(&build).await;
    let outcome = ctx.try_claim(id, &build, 1, fence, LEASE).await;
    assert_eq!(
        refusal(&outcome),
        Some((TaskState::Running, 1)),
        "{outcome:?}"
    );
    assert_eq!(ctx.show(id).await.state, DeploymentState::Running);
}

/// A claim under a fence older than one already used on the task is refused: its
/// holder lost the component's lock to someone who has since claimed.
async fn claim_with_an_older_fence_is_refused(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let id = ctx.create(manifest, plan).await;
    let task = task_id("deploy:a");
    let older = ctx.fence(&task).await;
    let newer = ctx.fence(&task).await;
    assert!(older < newer);

    let outcome = ctx
        .try_claim(id, &task, 1, newer, Duration::from_millis(1))
        .await;
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let requeued = reap(store.as_ref()).await;
    assert_eq!(requeued.len(), 1, "{requeued:?}");

    let outcome = ctx.try_claim(id, &task, 2, older, LEASE).await;
    assert_eq!(
        refusal(&outcome),
        Some((TaskState::Ready, 2)),
        "{outcome:?}"
    );
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:a"),
        TaskState::Ready
    );
    let newest = ctx.fence(&task).await;
    let outcome = ctx.try_claim(id, &task, 2, newest, LEASE).await;
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
}

/// In a diamond (a; b and c need a; d needs b and c), d is readied, and dispatched
/// once, only when both b and c have succeeded.
async fn a_task_is_readied_when_all_its_needs_succeeded(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(
        &ctx.app,
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
    );
    let id = ctx.create(manifest, plan).await;
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:a"]
    );

    let outcome = ctx.run(id, "deploy:a").await;
    assert_eq!(outcome, recorded());
    let dispatches = drain_outbox(store.as_ref()).await;
    assert_eq!(dispatched(&dispatches), ["deploy:b", "deploy:c"]);
    assert!(
        dispatches
            .iter()
            .all(|d| d.attempt == 1 && d.deployment == id)
    );
    let deployment = ctx.show(id).await;
    assert_eq!(task_state(&deployment, "deploy:b"), TaskState::Ready);
    assert_eq!(task_state(&deployment, "deploy:d"), TaskState::Blocked);

    ctx.run(id, "deploy:b").await;
    assert!(drain_outbox(store.as_ref()).await.is_empty());
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:d"),
        TaskState::Blocked
    );
    let fence = ctx.fence(&task_id("deploy:d")).await;
    let outcome = ctx
        .try_claim(id, &task_id("deploy:d"), 1, fence, LEASE)
        .await;
    assert!(
        matches!(outcome, ClaimOutcome::NotClaimable { .. }),
        "{outcome:?}"
    );

    ctx.run(id, "deploy:c").await;
    let dispatches = drain_outbox(store.as_ref()).await;
    assert_eq!(dispatched(&dispatches), ["deploy:d"]);
    assert_eq!(dispatches[0].attempt, 1);
    assert_eq!(dispatches[0].tenant, ctx.tenant);
    assert_eq!(dispatches[0].app, ctx.app);
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:d"),
        TaskState::Ready
    );

    let outcome = ctx.run(id, "deploy:d").await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(1)));
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Succeeded);
    assert!(deployment.finished_at.is_some());
    assert!(
        deployment
            .tasks
            .iter()
            .all(|task| task.state == TaskState::Succeeded)
    );
}

/// A build's artifact reaches every deploy that uses it: its own component's and
/// those that reuse it, directly or through another `reuse-from`.
async fn a_build_artifact_reaches_its_deploys(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let (id, plan) = ctx.deploy(manifest(TOOLHUNT)).await;
    let ids: Vec<&str> = plan.tasks.iter().map(|task| task.id.as_str()).collect();
    assert!(ids.contains(&"deploy:flower"), "{ids:?}");
    drain_outbox(store.as_ref()).await;

    let build = ctx.claim(id, "build:api").await;
    ctx.succeed(&build, Some("registry.example/api@sha256:1"))
        .await;
    let build = ctx.claim(id, "build:cleanup").await;
    ctx.succeed(&build, Some("registry.example/cleanup@sha256:2"))
        .await;

    let mut artifacts = BTreeMap::new();
    loop {
        let dispatches = drain_outbox(store.as_ref()).await;
        if dispatches.is_empty() {
            break;
        }
        for dispatch in dispatches {
            let claimed = ctx.claim_at(id, &dispatch.task, dispatch.attempt).await;
            assert_eq!(claimed.kind, TaskKind::Deploy);
            artifacts.insert(claimed.component.to_string(), claimed.artifact.clone());
            ctx.succeed(&claimed, None).await;
        }
    }
    let api = Some("registry.example/api@sha256:1".to_owned());
    let expected = BTreeMap::from([
        ("api".to_owned(), api.clone()),
        (
            "cleanup".to_owned(),
            Some("registry.example/cleanup@sha256:2".to_owned()),
        ),
        ("flower".to_owned(), api.clone()),
        ("migrate".to_owned(), api.clone()),
    ]);
    assert_eq!(artifacts, expected);
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Succeeded);
    for task in &deployment.tasks {
        assert_eq!(
            task.artifact,
            expected[task.component.as_str()],
            "{}",
            task.id
        );
    }
}

/// A failure skips the tasks that need it, transitively, and nothing else: unrelated
/// tasks run on (and ready their own dependents), and the deployment ends `failed`
/// when the last of them finishes, without a release.
async fn a_failure_skips_its_dependents_only(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(
        &ctx.app,
        &[
            ("a", &[]),
            ("x", &[]),
            ("b", &["a"]),
            ("y", &["x"]),
            ("z", &["a", "x"]),
            ("c", &["b"]),
        ],
    );
    let id = ctx.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;
    let a = ctx.claim(id, "deploy:a").await;
    let x = ctx.claim(id, "deploy:x").await;

    let outcome = ctx.fail(&a, "exit status 3").await;
    let RecordOutcome::Recorded { skipped, finished } = outcome else {
        panic!("the failure was not recorded: {outcome:?}");
    };
    assert_eq!(sorted(&skipped), ["deploy:b", "deploy:c", "deploy:z"]);
    assert_eq!(finished, None);
    assert!(drain_outbox(store.as_ref()).await.is_empty());
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Running);
    assert_eq!(deployment.finished_at, None);
    let expected = BTreeMap::from([
        ("deploy:a".to_owned(), TaskState::Failed),
        ("deploy:b".to_owned(), TaskState::Skipped),
        ("deploy:c".to_owned(), TaskState::Skipped),
        ("deploy:x".to_owned(), TaskState::Running),
        ("deploy:y".to_owned(), TaskState::Blocked),
        ("deploy:z".to_owned(), TaskState::Skipped),
    ]);
    assert_eq!(task_states(&deployment), expected);
    let failed = deployment
        .tasks
        .iter()
        .find(|task| task.id.as_str() == "deploy:a");
    let failed = failed.expect("deploy:a is listed");
    assert_eq!(failed.error.as_deref(), Some("exit status 3"));
    assert_eq!(failed.log.as_deref(), Some("log of deploy:a"));
    assert!(failed.finished_at.is_some());

    // x is unrelated to a: it finishes and readies y, but never z, which was skipped.
    let outcome = ctx.succeed(&x, None).await;
    assert_eq!(outcome, recorded());
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:y"]
    );
    let deployment = ctx.show(id).await;
    assert_eq!(task_state(&deployment, "deploy:z"), TaskState::Skipped);
    assert_eq!(deployment.state, DeploymentState::Running);

    let outcome = ctx.run(id, "deploy:y").await;
    assert_eq!(outcome, done(DeploymentState::Failed, None));
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Failed);
    assert!(deployment.finished_at.is_some());
    assert_eq!(deployment.release, None);
    assert_eq!(ctx.active_release().await, None);
    assert!(drain_outbox(store.as_ref()).await.is_empty());
}

/// A result under another fence or attempt than the task's current ones is `Stale`
/// and changes nothing: no state, no dependents, no skips, no dispatch.
async fn a_stale_result_changes_nothing(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"])]);
    let id = ctx.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;
    let claimed = ctx.claim(id, "deploy:a").await;
    let before = snapshot(&ctx.show(id).await);

    let mut stale = Vec::new();
    for fence in [Fence(claimed.fence.0 + 1), Fence(claimed.fence.0 - 1)] {
        stale.push(ClaimedTask {
            fence,
            ..claimed.clone()
        });
    }
    for attempt in [0, 2] {
        stale.push(ClaimedTask {
            attempt,
            ..claimed.clone()
        });
    }
    for wrong in &stale {
        for outcome in [
            succeeded(),
            TaskOutcome::Failed {
                error: "boom".to_owned(),
            },
        ] {
            let recorded = ctx.record(wrong, outcome).await;
            assert_eq!(
                recorded,
                RecordOutcome::Stale,
                "fence {} attempt {}",
                wrong.fence,
                wrong.attempt
            );
        }
    }
    assert_eq!(snapshot(&ctx.show(id).await), before);
    assert!(outbox(store.as_ref()).await.is_empty());

    // The holder's own result still counts, once.
    let outcome = ctx.succeed(&claimed, None).await;
    assert_eq!(outcome, recorded());
    assert_eq!(ctx.succeed(&claimed, None).await, RecordOutcome::Stale);
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:b"]
    );
}

/// A succeeded deployment writes release 1 with every component's spec and artifact;
/// a later deployment that touches one component writes release 2, inheriting the
/// others unchanged from release 1.
async fn releases_inherit_untouched_components(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let first_manifest = manifest(TOOLHUNT);
    let (first, _) = ctx.deploy(first_manifest.clone()).await;
    let finished = ctx
        .run_to_end(first, |name| format!("registry.example/{name}@1"))
        .await;
    assert_eq!(
        finished,
        Finished {
            state: DeploymentState::Succeeded,
            release: Some(1)
        }
    );
    assert_eq!(ctx.show(first).await.release, Some(1));

    let one = ctx.active_release().await.expect("release 1 is active");
    assert_eq!(one.version, 1);
    assert_eq!(one.app, ctx.app);
    assert_eq!(one.deployment, Some(first));
    let names: Vec<&str> = one.components.keys().map(ComponentName::as_str).collect();
    assert_eq!(names, ["api", "cleanup", "flower", "migrate"]);
    for (name, released) in &one.components {
        assert_eq!(&released.spec, &first_manifest.components[name], "{name}");
        assert_eq!(released.deployment, Some(first), "{name}");
        let source = if name.as_str() == "cleanup" {
            "cleanup"
        } else {
            "api"
        };
        let artifact = format!("registry.example/{source}@1");
        assert_eq!(
            released.artifact.as_deref(),
            Some(artifact.as_str()),
            "{name}"
        );
    }
    assert_eq!(one.components["api"].version.as_deref(), Some("v1"));

    // Only api's command changes: an update in place of the artifact it runs.
    let second_manifest = manifest(&TOOLHUNT.replace("command: serve", "command: serve --fast"));
    let (second, plan) = ctx.deploy(second_manifest.clone()).await;
    let ids: Vec<&str> = plan.tasks.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(ids, ["deploy:api"]);
    assert_eq!(ctx.show(second).await.base_release, Some(1));
    let claimed = ctx.claim(second, "deploy:api").await;
    assert_eq!(claimed.artifact.as_deref(), Some("registry.example/api@1"));
    let outcome = ctx.succeed(&claimed, None).await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(2)));
    assert_eq!(ctx.show(second).await.release, Some(2));

    let two = ctx.active_release().await.expect("release 2 is active");
    assert_eq!(two.version, 2);
    assert_eq!(two.deployment, Some(second));
    assert_eq!(two.components.len(), 4);
    let api = &two.components["api"];
    assert_eq!(&api.spec, &second_manifest.components["api"]);
    assert_eq!(api.artifact.as_deref(), Some("registry.example/api@1"));
    assert_eq!(api.deployment, Some(second));
    for name in ["cleanup", "flower", "migrate"] {
        assert_eq!(two.components[name], one.components[name], "{name}");
    }

    // Nothing left to change: no task, no new release.
    let (third, plan) = ctx.deploy(second_manifest).await;
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(ctx.show(third).await.state, DeploymentState::Succeeded);
    assert_eq!(
        ctx.active_release().await.map(|release| release.version),
        Some(2)
    );
}

/// Fences grow per key, independently of other keys.
async fn fences_grow_per_key(store: Arc<dyn Store>) {
    let first_b = store.next_fence("t/app/b").await.expect("next_fence");
    let mut fences_a = Vec::new();
    for _ in 0..5 {
        fences_a.push(store.next_fence("t/app/a").await.expect("next_fence"));
    }
    assert!(
        fences_a.windows(2).all(|pair| pair[0] < pair[1]),
        "{fences_a:?}"
    );
    let second_b = store.next_fence("t/app/b").await.expect("next_fence");
    assert!(second_b > first_b, "{second_b:?} after {first_b:?}");
    // Taking five fences on `a` moved neither `b` nor a key never used.
    let last_a = fences_a[4];
    assert!(
        second_b < last_a,
        "`b` followed `a`: {second_b:?} vs {last_a:?}"
    );
    let first_c = store.next_fence("t/app/c").await.expect("next_fence");
    assert!(
        first_c <= first_b,
        "a new key starts where `b` started: {first_c:?} vs {first_b:?}"
    );
}

/// Concurrent takers of one key get distinct fences.
async fn concurrent_fences_are_distinct(store: Arc<dyn Store>) {
    let n_takers = 20;
    let handles: Vec<_> = (0..n_takers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.next_fence("t/app/hot").await })
        })
        .collect();
    let mut fences = HashSet::new();
    for handle in handles {
        let fence = handle
            .await
            .expect("the taker panicked")
            .expect("next_fence");
        assert!(fences.insert(fence), "{fence:?} was handed out twice");
    }
    assert_eq!(fences.len(), n_takers);
    let after = store.next_fence("t/app/hot").await.expect("next_fence");
    assert!(fences.iter().all(|fence| *fence < after));
}

/// A running task whose lease expired is handed out again as the next attempt; the
/// old attempt can then neither extend its lease nor record its result.
async fn an_expired_lease_is_requeued_as_the_next_attempt(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"])]);
    let id = ctx.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;
    let task = task_id("deploy:a");
    let fence = ctx.fence(&task).await;
    let ClaimOutcome::Claimed(old) = ctx
        .try_claim(id, &task, 1, fence, Duration::from_millis(1))
        .await
    else {
        panic!("deploy:a was not claimable");
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    let requeued = reap(store.as_ref()).await;
    let expected = TaskDispatch {
        tenant: ctx.tenant,
        app: ctx.app.clone(),
        deployment: id,
        task: task.clone(),
        attempt: 2,
        written_at: None,
    };
    assert_eq!(requeued, std::slice::from_ref(&expected));
    assert_eq!(drain_outbox(store.as_ref()).await, [expected]);
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:a"),
        TaskState::Ready
    );
    assert!(reap(store.as_ref()).await.is_empty());

    let extended = store
        .extend_lease(id, &task, 1, old.fence, LEASE)
        .await
        .expect("extend_lease");
    assert_eq!(
        extended,
        Lease::Lost,
        "the old attempt extended a lease it lost"
    );
    assert_eq!(ctx.succeed(&old, None).await, RecordOutcome::Stale);
    let deployment = ctx.show(id).await;
    assert_eq!(task_state(&deployment, "deploy:a"), TaskState::Ready);
    assert_eq!(task_state(&deployment, "deploy:b"), TaskState::Blocked);

    let new = ctx.claim_at(id, &task, 2).await;
    assert_eq!(new.attempt, 2);
    assert!(new.fence > old.fence);
    let extended = store
        .extend_lease(id, &task, 1, old.fence, LEASE)
        .await
        .expect("extend_lease");
    assert_eq!(
        extended,
        Lease::Lost,
        "the old attempt extended the new attempt's lease"
    );
    assert_eq!(ctx.succeed(&old, None).await, RecordOutcome::Stale);
    let outcome = ctx.succeed(&new, None).await;
    assert_eq!(outcome, recorded());
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:b"]
    );
}

/// The holder of a claim extends its lease, and so keeps the task from the reaper.
async fn the_holder_extends_its_lease(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let id = ctx.create(manifest, plan).await;
    let task = task_id("deploy:a");
    let fence = ctx.fence(&task).await;
    let outcome = ctx
        .try_claim(id, &task, 1, fence, Duration::from_millis(1))
        .await;
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");

    let extended = store
        .extend_lease(id, &task, 1, fence, LEASE)
        .await
        .expect("extend_lease");
    assert_eq!(extended, Lease::Extended);
    let wrong_fence = store
        .extend_lease(id, &task, 1, Fence(fence.0 + 1), LEASE)
        .await
        .expect("extend_lease");
    assert_eq!(wrong_fence, Lease::Lost);
    let wrong_attempt = store
        .extend_lease(id, &task, 2, fence, LEASE)
        .await
        .expect("extend_lease");
    assert_eq!(wrong_attempt, Lease::Lost);

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(reap(store.as_ref()).await.is_empty());
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:a"),
        TaskState::Running
    );
}

/// Results recorded together, in one transaction, each count as if recorded alone:
/// the outcomes come in the order given; a join is readied once by the two needs
/// recorded together; a stale result beside them changes nothing; a result given
/// twice counts once; a deployment is finished by the result that ends it.
async fn results_recorded_together_each_count_once(store: Arc<dyn Store>) {
    let shop = Ctx::new(store.clone(), "acme", "shop").await;
    let blog = Ctx::new(store.clone(), "acme", "blog").await;
    let (manifest, plan) = dag(&shop.app, &[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
    let joined = shop.create(manifest, plan).await;
    let (manifest, plan) = dag(&blog.app, &[("x", &[])]);
    let failing = blog.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;
    let a = shop.claim(joined, "deploy:a").await;
    let b = shop.claim(joined, "deploy:b").await;
    let x = blog.claim(failing, "deploy:x").await;
    let stale = ClaimedTask {
        fence: Fence(a.fence.0 + 1),
        ..a.clone()
    };
    let failed = TaskOutcome::Failed {
        error: "boom".to_owned(),
    };
    let results = [
        result_of(&b, succeeded()),
        result_of(&a, succeeded()),
        result_of(&stale, succeeded()),
        result_of(&x, failed),
    ];
    assert_eq!(
        store
            .record_results(&results)
            .await
            .expect("record_results"),
        [
            recorded(),
            recorded(),
            RecordOutcome::Stale,
            done(DeploymentState::Failed, None)
        ]
    );
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:c"]
    );
    assert_eq!(blog.show(failing).await.state, DeploymentState::Failed);

    let c = shop.claim(joined, "deploy:c").await;
    let twice = [result_of(&c, succeeded()), result_of(&c, succeeded())];
    assert_eq!(
        store.record_results(&twice).await.expect("record_results"),
        [
            done(DeploymentState::Succeeded, Some(1)),
            RecordOutcome::Stale
        ]
    );
    assert_eq!(store.record_results(&[]).await.expect("record_results"), []);
    assert_eq!(shop.show(joined).await.release, Some(1));
}

/// A worker extends the leases of all its tasks in one call. Each answer, in the
/// order asked, says whether that lease was extended, its deployment was asked to
/// stop, or the task is no longer at that attempt and fence; an extended lease keeps
/// its task from the reaper while one left out lapses.
async fn a_worker_extends_all_its_leases_at_once(store: Arc<dyn Store>) {
    let shop = Ctx::new(store.clone(), "acme", "shop").await;
    let blog = Ctx::new(store.clone(), "acme", "blog").await;
    let (manifest, plan) = dag(&shop.app, &[("a", &[]), ("b", &[])]);
    let kept = shop.create(manifest, plan).await;
    let (manifest, plan) = dag(&blog.app, &[("x", &[]), ("y", &[])]);
    let cancelled = blog.create(manifest, plan).await;
    let short = Duration::from_millis(1);
    let a = shop
        .claim_leased(kept, &task_id("deploy:a"), 1, short)
        .await;
    let b = shop
        .claim_leased(kept, &task_id("deploy:b"), 1, short)
        .await;
    let x = blog
        .claim_leased(cancelled, &task_id("deploy:x"), 1, LEASE)
        .await;
    assert!(matches!(
        store.cancel_deployment(blog.tenant, cancelled).await,
        Ok(Some(Cancellation::Requested { .. }))
    ));
    let leased = |claimed: &ClaimedTask, fence: Fence| LeasedTask {
        deployment: claimed.deployment,
        task: claimed.task.clone(),
        attempt: claimed.attempt,
        fence,
    };
    let never_claimed = LeasedTask {
        deployment: cancelled,
        task: task_id("deploy:y"),
        attempt: 1,
        fence: x.fence,
    };
    let asked = [
        leased(&a, a.fence),
        leased(&a, Fence(a.fence.0 + 1)),
        leased(&x, x.fence),
        never_claimed,
    ];
    assert_eq!(
        store
            .extend_leases(&asked, LEASE)
            .await
            .expect("extend_leases"),
        [
            Lease::Extended,
            Lease::Lost,
            Lease::CancelRequested,
            Lease::Lost
        ]
    );
    assert_eq!(
        store
            .extend_leases(&[], LEASE)
            .await
            .expect("extend_leases"),
        []
    );

    // `b`'s lease, left out, lapses; `a`'s, claimed as short and before it, was
    // extended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reaped = reap(store.as_ref()).await;
        assert!(
            !reaped.iter().any(|dispatch| dispatch.task == a.task),
            "an extended lease lapsed: {reaped:?}"
        );
        if reaped.iter().any(|dispatch| dispatch.task == b.task) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b's lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        task_state(&shop.show(kept).await, "deploy:a"),
        TaskState::Running
    );
}

/// `attempts` counts the claims made: 0 before the first, 1 while the first runs and
/// after it was requeued, 2 once the second attempt is claimed.
async fn attempts_count_the_claims_made(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let id = ctx.create(manifest, plan).await;
    let attempts = |deployment: &Deployment| deployment.tasks[0].attempts;
    assert_eq!(attempts(&ctx.show(id).await), 0);

    let task = task_id("deploy:a");
    let fence = ctx.fence(&task).await;
    let outcome = ctx
        .try_claim(id, &task, 1, fence, Duration::from_millis(1))
        .await;
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
    assert_eq!(attempts(&ctx.show(id).await), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(reap(store.as_ref()).await.len(), 1);
    assert_eq!(
        attempts(&ctx.show(id).await),
        1,
        "the second attempt was dispatched, not yet made"
    );
    ctx.claim_at(id, &task, 2).await;
    assert_eq!(attempts(&ctx.show(id).await), 2);
}

/// A tenant sees only its own deployments and releases, even under the same app name.
async fn tenants_are_isolated(store: Arc<dyn Store>) {
    let acme = Ctx::new(store.clone(), "acme", "shop").await;
    let other = Ctx::new(store.clone(), "other", "shop").await;
    assert_ne!(acme.tenant, other.tenant);
    let again = store
        .ensure_tenant(&TenantName::new("acme").expect("a valid tenant name"))
        .await
        .expect("ensure_tenant");
    assert_eq!(again, acme.tenant);

    let (manifest, plan) = dag(&acme.app, &[("a", &[])]);
    let id = acme.create(manifest.clone(), plan.clone()).await;
    assert!(
        store
            .deployment(acme.tenant, id)
            .await
            .expect("deployment")
            .is_some()
    );
    assert!(
        store
            .deployment(other.tenant, id)
            .await
            .expect("deployment")
            .is_none()
    );
    assert!(
        store
            .deployment(acme.tenant, DeploymentId::generate())
            .await
            .expect("deployment")
            .is_none()
    );

    let outcome = acme.run(id, "deploy:a").await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(1)));
    assert!(acme.active_release().await.is_some());
    assert_eq!(other.active_release().await, None);

    // The other tenant's app of the same name has its own release line.
    drain_outbox(store.as_ref()).await;
    let other_id = other.create(manifest, plan).await;
    let dispatches = drain_outbox(store.as_ref()).await;
    assert_eq!(dispatches.len(), 1);
    assert_eq!(dispatches[0].tenant, other.tenant);
    let outcome = other.run(other_id, "deploy:a").await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(1)));
    assert_eq!(
        acme.active_release()
            .await
            .map(|release| release.deployment),
        Some(Some(id))
    );
    let other_release = other
        .active_release()
        .await
        .expect("the other tenant's release");
    assert_eq!(other_release.deployment, Some(other_id));
    assert_eq!(other_release.version, 1);
}

/// `redispatch_ready` writes one dispatch per `ready` task (and none for the others).
async fn redispatch_ready_dispatches_every_ready_task(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &[]), ("c", &["a"])]);
    let id = ctx.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;

    assert_eq!(store.redispatch_ready().await.expect("redispatch_ready"), 2);
    let dispatches = drain_outbox(store.as_ref()).await;
    assert_eq!(dispatched(&dispatches), ["deploy:a", "deploy:b"]);
    for dispatch in &dispatches {
        assert_eq!(
            (dispatch.tenant, dispatch.deployment, dispatch.attempt),
            (ctx.tenant, id, 1)
        );
        assert_eq!(dispatch.app, ctx.app);
    }

    ctx.claim(id, "deploy:b").await;
    assert_eq!(store.redispatch_ready().await.expect("redispatch_ready"), 1);
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:a"]
    );
}

/// The outbox hands out its oldest messages first, in batches, and forgets deleted ones;
/// a commit that writes to it wakes the relay.
async fn the_outbox_is_read_in_batches_and_deleted(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let signal = store.outbox_signal();
    assert!(
        store
            .outbox_batch(10)
            .await
            .expect("outbox_batch")
            .is_empty()
    );
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &[]), ("c", &[])]);
    let first = ctx.create(manifest.clone(), plan.clone()).await;
    tokio::time::timeout(Duration::from_secs(5), signal.notified())
        .await
        .expect("create_deployment wakes the relay");
    let second = ctx.create(manifest, plan).await;

    let all = store.outbox_batch(100).await.expect("outbox_batch");
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|pair| pair[0].id < pair[1].id),
        "{all:?}"
    );
    assert!(
        all[..3]
            .iter()
            .all(|message| message.dispatch.deployment == first)
    );
    assert!(
        all[3..]
            .iter()
            .all(|message| message.dispatch.deployment == second)
    );

    let batch = store.outbox_batch(4).await.expect("outbox_batch");
    let ids: Vec<i64> = batch.iter().map(|message| message.id).collect();
    let expected: Vec<i64> = all[..4].iter().map(|message| message.id).collect();
    assert_eq!(ids, expected);
    store.delete_outbox(&ids).await.expect("delete_outbox");
    store
        .delete_outbox(&[])
        .await
        .expect("delete_outbox of nothing");
    store
        .delete_outbox(&ids)
        .await
        .expect("delete_outbox twice");

    let rest = store.outbox_batch(100).await.expect("outbox_batch");
    let rest: Vec<i64> = rest.iter().map(|message| message.id).collect();
    let expected: Vec<i64> = all[4..].iter().map(|message| message.id).collect();
    assert_eq!(rest, expected);
}

/// A component pruned from the manifest is deleted with the spec and artifact it was
/// released with, and is gone from the next release.
async fn a_pruned_component_leaves_the_next_release(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "toolhunt").await;
    let (first, _) = ctx.deploy(manifest(TOOLHUNT)).await;
    ctx.run_to_end(first, |name| format!("registry.example/{name}@1"))
        .await;
    let one = ctx.active_release().await.expect("release 1 is active");

    let mut smaller = manifest(TOOLHUNT);
    smaller.components.remove("cleanup");
    let current = ctx.current().await;
    let plan = planner::plan(
        &ctx.app,
        &smaller,
        current.components(),
        &PlanOptions {
            prune: true,
            ..PlanOptions::default()
        },
    );
    let ids: Vec<&str> = plan.tasks.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(ids, ["delete:cleanup"]);
    let second = ctx.create(smaller, plan).await;
    let claimed = ctx.claim(second, "delete:cleanup").await;
    assert_eq!(claimed.kind, TaskKind::Delete);
    assert_eq!(claimed.spec, one.components["cleanup"].spec);
    assert_eq!(
        claimed.artifact.as_deref(),
        Some("registry.example/cleanup@1")
    );
    let outcome = ctx.succeed(&claimed, None).await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(2)));

    let two = ctx.active_release().await.expect("release 2 is active");
    let names: Vec<&str> = two.components.keys().map(ComponentName::as_str).collect();
    assert_eq!(names, ["api", "flower", "migrate"]);
    for name in names {
        assert_eq!(two.components[name], one.components[name], "{name}");
    }
}

/// One dispatch delivered to many workers at once is claimed by exactly one of them.
async fn concurrent_claims_of_one_task_claim_it_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let id = ctx.create(manifest, plan).await;
    let task = task_id("deploy:a");
    let mut fences = Vec::new();
    for _ in 0..8 {
        fences.push(ctx.fence(&task).await);
    }
    let handles: Vec<_> = fences
        .into_iter()
        .map(|fence| {
            let ctx = ctx.clone();
            let task = task.clone();
            tokio::spawn(async move { ctx.try_claim(id, &task, 1, fence, LEASE).await })
        })
        .collect();
    let mut n_claimed = 0;
    for handle in handles {
        match handle.await.expect("a claimer panicked") {
            ClaimOutcome::Claimed(_) => n_claimed += 1,
            ClaimOutcome::NotClaimable { .. } => {}
            ClaimOutcome::Unknown => panic!("the task vanished"),
            ClaimOutcome::TenantLimit => panic!("no tenant limit was asked for"),
            ClaimOutcome::ComponentBusy => panic!("no other task of the component runs"),
            ClaimOutcome::Ordered => panic!("no older deployment deploys the component"),
        }
    }
    assert_eq!(n_claimed, 1);
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:a"),
        TaskState::Running
    );
}

/// Failures recorded at once, with dependents in common, skip each dependent once and
/// fail the deployment once.
async fn parallel_failures_fail_a_deployment_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let roots = ["r0", "r1", "r2", "r3", "r4", "r5"];
    let mut deploys: Vec<(&str, &[&str])> = roots.iter().map(|name| (*name, &[][..])).collect();
    deploys.extend([
        ("j0", &roots[..]),
        ("j1", &roots[..3]),
        ("j2", &roots[2..]),
        ("k0", &["j0", "j1"][..]),
        ("k1", &["j2", "j1"][..]),
    ]);
    let (manifest, plan) = dag(&ctx.app, &deploys);
    let id = ctx.create(manifest, plan).await;
    let mut claimed = Vec::new();
    for root in roots {
        claimed.push(ctx.claim(id, &format!("deploy:{root}")).await);
    }

    let handles: Vec<_> = claimed
        .into_iter()
        .map(|claimed| {
            let store = store.clone();
            let failed = TaskOutcome::Failed {
                error: "exit status 1".to_owned(),
            };
            tokio::spawn(async move { record(store.as_ref(), &claimed, failed).await })
        })
        .collect();
    let mut all_skipped = Vec::new();
    let mut finished = Vec::new();
    for handle in handles {
        match handle.await.expect("a recorder panicked") {
            RecordOutcome::Recorded {
                skipped,
                finished: done,
            } => {
                all_skipped.extend(skipped);
                finished.extend(done);
            }
            RecordOutcome::Stale => panic!("a result was stale"),
            RecordOutcome::Retrying { .. } => panic!("no retry was asked for"),
        }
    }
    assert_eq!(
        sorted(&all_skipped),
        [
            "deploy:j0",
            "deploy:j1",
            "deploy:j2",
            "deploy:k0",
            "deploy:k1"
        ]
    );
    let failed = Finished {
        state: DeploymentState::Failed,
        release: None,
    };
    assert_eq!(finished, [failed]);
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Failed);
    assert_eq!(ctx.active_release().await, None);
}

/// Many tasks of one deployment recorded at once: exactly one result finishes the
/// deployment, and it writes a single release.
async fn parallel_results_finish_a_deployment_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let names: Vec<String> = (0..16).map(|idx| format!("c{idx}")).collect();
    let deploys: Vec<(&str, &[&str])> = names.iter().map(|name| (name.as_str(), &[][..])).collect();
    let (manifest, plan) = dag(&ctx.app, &deploys);
    let id = ctx.create(manifest, plan).await;
    let mut claimed = Vec::new();
    for name in &names {
        claimed.push(ctx.claim(id, &format!("deploy:{name}")).await);
    }

    let handles: Vec<_> = claimed
        .into_iter()
        .map(|claimed| {
            let store = store.clone();
            tokio::spawn(async move { record(store.as_ref(), &claimed, succeeded()).await })
        })
        .collect();
    let mut finished = Vec::new();
    for handle in handles {
        match handle.await.expect("a recorder panicked") {
            RecordOutcome::Recorded {
                finished: Some(done),
                ..
            } => finished.push(done),
            RecordOutcome::Recorded { finished: None, .. } => {}
            RecordOutcome::Stale => panic!("a result was stale"),
            RecordOutcome::Retrying { .. } => panic!("no retry was asked for"),
        }
    }
    let once = Finished {
        state: DeploymentState::Succeeded,
        release: Some(1),
    };
    assert_eq!(finished, [once]);
    let deployment = ctx.show(id).await;
    assert_eq!(deployment.state, DeploymentState::Succeeded);
    assert_eq!(deployment.release, Some(1));
    let release = ctx.active_release().await.expect("a release");
    assert_eq!(release.version, 1);
    assert_eq!(release.components.len(), names.len());
}

/// `n_needs` tasks with no needs, each needed by all of `n_dependents` tasks: the
/// needs' results recorded at once each succeed, and ready every dependent once.
/// Returns the deployment.
async fn needs_succeeding_at_once_ready_their_dependents_once(
    ctx: &Ctx,
    n_needs: usize,
    n_dependents: usize,
) -> DeploymentId {
    let needs: Vec<String> = (0..n_needs).map(|idx| format!("a{idx}")).collect();
    let dependents: Vec<String> = (0..n_dependents).map(|idx| format!("b{idx}")).collect();
    let all_needs: Vec<&str> = needs.iter().map(String::as_str).collect();
    let mut deploys: Vec<(&str, &[&str])> =
        needs.iter().map(|name| (name.as_str(), &[][..])).collect();
    deploys.extend(
        dependents
            .iter()
            .map(|name| (name.as_str(), all_needs.as_slice())),
    );
    let (manifest, plan) = dag(&ctx.app, &deploys);
    let id = ctx.create(manifest, plan).await;
    drain_outbox(ctx.store.as_ref()).await;
    let mut claimed = Vec::new();
    for name in &needs {
        claimed.push(ctx.claim(id, &format!("deploy:{name}")).await);
    }
    succeed_all_at_once(&ctx.store, claimed).await;
    let mut expected: Vec<String> = dependents
        .iter()
        .map(|name| format!("deploy:{name}"))
        .collect();
    expected.sort();
    assert_eq!(
        dispatched(&drain_outbox(ctx.store.as_ref()).await),
        expected
    );
    id
}

/// Many needs of one task succeeding at once ready it exactly once.
async fn parallel_results_ready_a_join_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let id = needs_succeeding_at_once_ready_their_dependents_once(&ctx, 12, 1).await;
    let outcome = ctx.run(id, "deploy:b0").await;
    assert_eq!(outcome, done(DeploymentState::Succeeded, Some(1)));
}

/// Results recorded at once for a whole layer, whose every task the next layer
/// needs, all succeed and ready each task of the next layer once. (Whether they
/// lock the dependents they share in one order, so that none deadlocks, is
/// checked by the benchmark's layered shape: the plans of a database this small
/// lock in one order either way.)
async fn parallel_results_ready_a_layer_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    needs_succeeding_at_once_ready_their_dependents_once(&ctx, 20, 20).await;
}

/// Two deployments of one app finishing at once write releases 1 and 2, the second on
/// top of the first.
async fn concurrent_deployments_get_distinct_releases(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest_a, plan_a) = dag(&ctx.app, &[("a", &[])]);
    let (manifest_b, plan_b) = dag(&ctx.app, &[("b", &[])]);
    let first = ctx.create(manifest_a, plan_a).await;
    let second = ctx.create(manifest_b, plan_b).await;
    let claimed = [
        ctx.claim(first, "deploy:a").await,
        ctx.claim(second, "deploy:b").await,
    ];

    let handles: Vec<_> = claimed
        .into_iter()
        .map(|claimed| {
            let store = store.clone();
            tokio::spawn(async move { record(store.as_ref(), &claimed, succeeded()).await })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for handle in handles {
        match handle.await.expect("a recorder panicked") {
            RecordOutcome::Recorded {
                finished:
                    Some(Finished {
                        state,
                        release: Some(version),
                    }),
                ..
            } => {
                assert_eq!(state, DeploymentState::Succeeded);
                versions.insert(version);
            }
            other => panic!("expected a finished deployment, got {other:?}"),
        }
    }
    assert_eq!(versions, BTreeSet::from([1, 2]));
    let mut written = BTreeSet::new();
    for id in [first, second] {
        written.insert(ctx.show(id).await.release.expect("a release"));
    }
    assert_eq!(written, BTreeSet::from([1, 2]));
    let newest = ctx.active_release().await.expect("a release");
    assert_eq!(newest.version, 2);
    let names: Vec<&str> = newest
        .components
        .keys()
        .map(ComponentName::as_str)
        .collect();
    assert_eq!(names, ["a", "b"], "release 2 is built on release 1");
}

// ---- the suite, once per backend ----

/// A tenant is created once, with a token the store knows only by its hash.
async fn tenants_are_created_once_with_a_token(store: Arc<dyn Store>) {
    let name = TenantName::new("acme").expect("a valid tenant name");
    assert_eq!(store.tenant(&name).await.expect("tenant"), None);
    let token = shared::tokens::ApiToken::generate();
    let tenant = store
        .create_tenant(&name, &token.hash())
        .await
        .expect("create_tenant");
    assert_eq!(store.tenant(&name).await.expect("tenant"), Some(tenant));
    let grant = store
        .grant(&token.hash())
        .await
        .expect("grant")
        .expect("the first token is valid");
    assert_eq!((grant.tenant, grant.scope), (tenant, Scope::Admin));
    assert_eq!(
        store
            .grant(&shared::tokens::ApiToken::generate().hash())
            .await
            .expect("grant"),
        None,
        "another token names no tenant"
    );
    let again = store
        .create_tenant(&name, &shared::tokens::ApiToken::generate().hash())
        .await;
    assert!(
        matches!(
            again,
            Err(shared::store::StoreError::Conflict { what: "tenant", .. })
        ),
        "{again:?}"
    );
}

/// A tenant's tokens carry their scope, are listed newest first in pages (never
/// their secrets), and are refused once revoked or expired; another tenant can
/// neither see nor revoke them.
async fn tokens_are_scoped_listed_revoked_and_expire(store: Arc<dyn Store>) {
    let acme = Ctx::new(store.clone(), "acme", "shop").await;
    let other = Ctx::new(store.clone(), "globex", "shop").await;
    let new_token =
        |name: &str, scope: Scope, expires_at: Option<chrono::DateTime<chrono::Utc>>| {
            let secret = shared::tokens::ApiToken::generate();
            let token = NewToken {
                name: Some(name.to_owned()),
                scope,
                expires_at,
                hash: secret.hash(),
            };
            (secret, token)
        };
    let (ci_secret, ci) = new_token("ci", Scope::Deploy, None);
    let ci = store
        .create_token(acme.tenant, &ci)
        .await
        .expect("create_token");
    assert_eq!(
        (ci.name.as_deref(), ci.scope, ci.revoked_at),
        (Some("ci"), Scope::Deploy, None)
    );
    let grant = store.grant(&ci_secret.hash()).await.expect("grant");
    assert_eq!(
        grant.map(|grant| (grant.tenant, grant.token, grant.scope)),
        Some((acme.tenant, ci.id, Scope::Deploy))
    );
    // Expired a moment ago by the database's clock, and one that expires later.
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (old_secret, old) = new_token("old", Scope::Read, Some(past));
    store
        .create_token(acme.tenant, &old)
        .await
        .expect("create_token");
    assert_eq!(store.grant(&old_secret.hash()).await.expect("grant"), None);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let (soon_secret, soon) = new_token("soon", Scope::Read, Some(later));
    let soon = store
        .create_token(acme.tenant, &soon)
        .await
        .expect("create_token");
    assert!(
        store
            .grant(&soon_secret.hash())
            .await
            .expect("grant")
            .is_some()
    );

    let first = store
        .tokens(acme.tenant, PageRequest::first(2))
        .await
        .expect("tokens");
    let names: Vec<Option<&str>> = first
        .items
        .iter()
        .map(|token| token.name.as_deref())
        .collect();
    assert_eq!(names, [Some("soon"), Some("old")]);
    assert_eq!(first.total, 3);
    let rest = store
        .tokens(
            acme.tenant,
            PageRequest::parse(first.next_cursor.as_deref(), Some(2)).expect("a cursor"),
        )
        .await
        .expect("tokens");
    assert_eq!(rest.items, std::slice::from_ref(&ci));
    assert_eq!(rest.next_cursor, None);

    assert_eq!(
        store
            .revoke_token(other.tenant, ci.id)
            .await
            .expect("revoke_token"),
        None,
        "another tenant's token is unknown to it"
    );
    assert!(
        store
            .grant(&ci_secret.hash())
            .await
            .expect("grant")
            .is_some()
    );
    let revoked = store
        .revoke_token(acme.tenant, ci.id)
        .await
        .expect("revoke_token")
        .expect("its own token");
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(store.grant(&ci_secret.hash()).await.expect("grant"), None);
    let again = store
        .revoke_token(acme.tenant, ci.id)
        .await
        .expect("revoke_token")
        .expect("its own token");
    assert_eq!(again.revoked_at, Some(at), "revoking again changes nothing");
    assert_eq!(
        store
            .tokens(other.tenant, PageRequest::first(10))
            .await
            .expect("tokens")
            .total,
        0
    );
    assert!(
        store
            .grant(&soon_secret.hash())
            .await
            .expect("grant")
            .is_some(),
        "{soon:?}"
    );
}

/// A retried request with the same idempotency key names the first deployment and
/// writes nothing; the same key with another request is told apart.
async fn idempotency_keys_name_the_first_deployment(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"])]);
    let key = |request_hash: &str| shared::store::Idempotency {
        key: "retry-me".to_owned(),
        request_hash: request_hash.to_owned(),
    };
    let new = |id: DeploymentId, request_hash: &str| NewDeployment {
        id,
        tenant: ctx.tenant,
        manifest: manifest.clone(),
        plan: plan.clone(),
        current: Default::default(),
        idempotency: Some(key(request_hash)),
        artifacts: None,
        rollback_to: None,
        replaces: None,
        auto_rollback: false,
        external_update: None,
        concurrency: None,
        strategy: None,
    };
    let first = DeploymentId::generate();
    assert_eq!(
        store
            .create_deployment(&new(first, "h1"))
            .await
            .expect("create"),
        shared::store::Creation::Created
    );
    let n_dispatches = outbox(store.as_ref()).await.len();
    assert_eq!(
        store
            .create_deployment(&new(DeploymentId::generate(), "h1"))
            .await
            .expect("create"),
        shared::store::Creation::Existing {
            id: first,
            same_request: true
        }
    );
    assert_eq!(
        store
            .create_deployment(&new(DeploymentId::generate(), "h2"))
            .await
            .expect("create"),
        shared::store::Creation::Existing {
            id: first,
            same_request: false
        }
    );
    assert_eq!(
        outbox(store.as_ref()).await.len(),
        n_dispatches,
        "nothing more was dispatched"
    );
    assert_eq!(
        store
            .deployment_by_idempotency_key(ctx.tenant, "retry-me")
            .await
            .expect("deployment_by_idempotency_key"),
        Some((first, "h1".to_owned()))
    );
    // Keys are per tenant.
    let other = Ctx::new(store.clone(), "other", "shop").await;
    assert_eq!(
        store
            .deployment_by_idempotency_key(other.tenant, "retry-me")
            .await
            .expect("deployment_by_idempotency_key"),
        None
    );

    // Racing requests with one key: exactly one deployment is created.
    let racers = (0..8).map(|_| {
        let store = store.clone();
        let mut new = new(DeploymentId::generate(), "h3");
        new.idempotency = Some(shared::store::Idempotency {
            key: "race".to_owned(),
            request_hash: "h3".to_owned(),
        });
        tokio::spawn(async move { (new.id, store.create_deployment(&new).await) })
    });
    let mut created = Vec::new();
    let mut named = Vec::new();
    for racer in racers {
        let (id, creation) = racer.await.expect("the racer panicked");
        match creation.expect("create") {
            shared::store::Creation::Created => created.push(id),
            shared::store::Creation::Existing { id, same_request } => {
                assert!(same_request);
                named.push(id);
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one racer creates: {created:?}");
    assert!(
        named.iter().all(|id| *id == created[0]),
        "{named:?} vs {created:?}"
    );
}

/// Relays claim outbox rows: concurrent claims get disjoint rows (a claim may come
/// back short when another took the rows it picked: the other relay publishes
/// them), claims take every row once, and a claim that expired (its relay died)
/// lets another relay take the rows again.
async fn outbox_claims_are_exclusive_until_they_expire(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let roots: Vec<(String, Vec<&str>)> = (0..30).map(|idx| (format!("c{idx}"), vec![])).collect();
    let deploys: Vec<(&str, &[&str])> = roots
        .iter()
        .map(|(name, needs)| (name.as_str(), needs.as_slice()))
        .collect();
    let (manifest, plan) = dag(&ctx.app, &deploys);
    ctx.create(manifest, plan).await;

    let claimers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_outbox(10, Duration::from_secs(60), 100, LEASE)
                .await
                .expect("claim_outbox")
        })
    });
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(
            claimer
                .await
                .expect("the claimer panicked")
                .into_iter()
                .map(|m| m.id),
        );
    }
    assert!(!claimed.is_empty(), "concurrent claims take rows");
    // Claimed one after the other, the rest.
    loop {
        let more = store
            .claim_outbox(10, Duration::from_secs(60), 100, LEASE)
            .await
            .expect("claim_outbox");
        if more.is_empty() {
            break;
        }
        claimed.extend(more.into_iter().map(|m| m.id));
    }
    let n_claimed = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(claimed.len(), n_claimed, "a row was claimed twice");
    assert_eq!(n_claimed, 30, "the claims take all 30 rows, each once");

    // A relay that claimed for a moment and died: its rows come back.
    store
        .delete_outbox(&claimed[..25])
        .await
        .expect("delete_outbox");
    let ctx2 = Ctx::new(store.clone(), "other", "shop").await;
    let (manifest, plan) = dag(&ctx2.app, &[("x", &[]), ("y", &[])]);
    ctx2.create(manifest, plan).await;
    let short = store
        .claim_outbox(100, Duration::from_millis(1), 100, LEASE)
        .await
        .expect("claim_outbox");
    assert_eq!(short.len(), 2, "only the unclaimed rows");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = store
        .claim_outbox(100, Duration::from_secs(60), 100, LEASE)
        .await
        .expect("claim_outbox");
    let again: Vec<i64> = again.iter().map(|m| m.id).collect();
    let expired: Vec<i64> = short.iter().map(|m| m.id).collect();
    assert_eq!(
        again, expired,
        "expired claims are claimed again, oldest first"
    );
}

/// How many of `messages` are of each tenant.
fn per_tenant(messages: &[OutboxMessage]) -> BTreeMap<TenantId, usize> {
    messages
        .iter()
        .fold(BTreeMap::new(), |mut counts, message| {
            *counts.entry(message.dispatch.tenant).or_default() += 1;
            counts
        })
}

/// What a relay does with the outbox: claims up to 10 due dispatches under
/// `tenant_limit` (their tasks' hand-outs lapsing after `redispatch_after`) and
/// publishes them, which deletes their rows.
async fn relay_round(
    store: &dyn Store,
    tenant_limit: u32,
    redispatch_after: Duration,
) -> Vec<OutboxMessage> {
    let claimed = store
        .claim_outbox(10, LEASE, tenant_limit, redispatch_after)
        .await
        .expect("claim_outbox");
    let ids: Vec<i64> = claimed.iter().map(|message| message.id).collect();
    store.delete_outbox(&ids).await.expect("delete_outbox");
    claimed
}

/// What `poll` returns once it returns something, asked again until a deadline of
/// 10 s (then whatever it returned last).
async fn polled<T, F: Future<Output = Vec<T>>>(mut poll: impl FnMut() -> F) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let polled = poll().await;
        if !polled.is_empty() || tokio::time::Instant::now() > deadline {
            return polled;
        }
        tokio::task::yield_now().await;
    }
}

/// What the reaper does once it does something (see [`polled`]).
async fn reaped(store: &dyn Store) -> Vec<Reaped> {
    polled(|| async { store.reap_expired(3).await.expect("reap_expired") }).await
}

/// Dispatches are handed out fairly: every tenant's oldest first and the tenants
/// in turn, so that a tenant's backlog does not queue ahead of another tenant's
/// first task; a tenant with its limit of tasks handed out gets no more until one
/// of them ends or is handed back, and the ones that wait stay in the outbox.
async fn dispatches_are_handed_out_fairly_within_the_tenant_limit(store: Arc<dyn Store>) {
    let flood = Ctx::new(store.clone(), "acme", "shop").await;
    let roots: Vec<String> = (0..6).map(|idx| format!("c{idx}")).collect();
    let deploys: Vec<(&str, &[&str])> = roots.iter().map(|name| (name.as_str(), &[][..])).collect();
    let (manifest, plan) = dag(&flood.app, &deploys);
    let flooding = flood.create(manifest, plan).await;
    let quiet = Ctx::new(store.clone(), "other", "blog").await;
    // A relay's claim of up to 10, with a tenant limit of 3.
    let claim = || async {
        store
            .claim_outbox(10, LEASE, 3, LEASE)
            .await
            .expect("claim_outbox")
    };
    let (manifest, plan) = dag(&quiet.app, &[("x", &[])]);
    quiet.create(manifest, plan).await;

    // The quiet tenant's one dispatch comes in the first two, though it was
    // written after all six of the flood's.
    let first = store
        .claim_outbox(2, LEASE, 3, LEASE)
        .await
        .expect("claim_outbox");
    assert_eq!(
        per_tenant(&first),
        BTreeMap::from([(flood.tenant, 1), (quiet.tenant, 1)]),
        "{first:?}"
    );
    let second = claim().await;
    assert_eq!(
        per_tenant(&second),
        BTreeMap::from([(flood.tenant, 2)]),
        "the flood gets up to its limit of 3, no more: {second:?}"
    );
    assert!(
        claim().await.is_empty(),
        "a tenant at its limit gets nothing more"
    );
    assert_eq!(
        store.outbox_batch(100).await.expect("outbox_batch").len(),
        7,
        "what waits stays in the outbox (with what was claimed)"
    );
    let claimed: Vec<OutboxMessage> = first.into_iter().chain(second).collect();
    let ids: Vec<i64> = claimed.iter().map(|message| message.id).collect();
    store.delete_outbox(&ids).await.expect("delete_outbox");
    assert!(
        claim().await.is_empty(),
        "published, its tasks are still handed out"
    );

    // One of them ends: one more is handed out.
    let flooded: Vec<&OutboxMessage> = claimed
        .iter()
        .filter(|message| message.dispatch.tenant == flood.tenant)
        .collect();
    let ran = &flooded[0].dispatch;
    flood.run_dispatched(ran).await;
    let next = claim().await;
    assert_eq!(per_tenant(&next), BTreeMap::from([(flood.tenant, 1)]));

    // Another cannot run yet and is handed back: one more is handed out in its
    // place, and the one handed back comes again once its delay has passed.
    let waits = &flooded[1].dispatch;
    assert!(
        store
            .hand_back(waits, Duration::from_millis(300))
            .await
            .expect("hand_back")
    );
    let instead = claim().await;
    assert_eq!(per_tenant(&instead), BTreeMap::from([(flood.tenant, 1)]));
    assert_ne!(instead[0].dispatch.task, waits.task);
    // Ending one hands out the next in line; the one handed back went to the end
    // of its tenant's line, and comes once its delay has passed.
    let last = &instead[0].dispatch;
    flood.run_dispatched(last).await;
    let in_line = claim().await;
    assert_eq!(in_line.len(), 1, "{in_line:?}");
    assert_ne!(in_line[0].dispatch.task, waits.task);
    let in_line = &in_line[0].dispatch;
    flood.run_dispatched(in_line).await;
    let again = polled(claim).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].dispatch.task, waits.task);
    assert_eq!(again[0].dispatch.deployment, flooding);
    assert_eq!(again[0].dispatch.attempt, waits.attempt);

    // A dispatch whose task has moved on is not handed back.
    assert!(
        !store
            .hand_back(ran, Duration::ZERO)
            .await
            .expect("hand_back"),
        "the task it names has ended"
    );
}

/// A tenant of weight 2 takes two dispatches per turn of the relay's claim, and has
/// twice the tenant limit, in hand-outs and in running tasks (claimed together or
/// alone); why-waiting counts with its limit. Weighing no tenant changes nothing.
async fn a_heavier_tenant_gets_more_of_the_fleet(store: Arc<dyn Store>) {
    let light = Ctx::new(store.clone(), "acme", "shop").await;
    let heavy = Ctx::new(store.clone(), "globex", "blog").await;
    let name = |name: &str| TenantName::new(name).expect("a valid tenant name");
    let weight = TenantWeight::new(2).expect("a valid weight");
    assert_eq!(
        store
            .set_tenant_weight(&name("globex"), weight)
            .await
            .expect("set_tenant_weight"),
        heavy.tenant
    );
    let roots: Vec<String> = (0..6).map(|idx| format!("c{idx}")).collect();
    let deploys: Vec<(&str, &[&str])> = roots.iter().map(|name| (name.as_str(), &[][..])).collect();
    let mut deployments = Vec::new();
    for ctx in [&light, &heavy] {
        let (manifest, plan) = dag(&ctx.app, &deploys);
        deployments.push(ctx.create(manifest, plan).await);
    }
    let tenant_limit = 2;
    let claim = |limit: u64| {
        let store = store.clone();
        async move {
            store
                .claim_outbox(limit, LEASE, tenant_limit, LEASE)
                .await
                .expect("claim_outbox")
        }
    };
    let first = claim(3).await;
    assert_eq!(
        per_tenant(&first),
        BTreeMap::from([(light.tenant, 1), (heavy.tenant, 2)]),
        "in one turn the heavier tenant takes two, though written last: {first:?}"
    );
    let rest = claim(10).await;
    assert_eq!(
        per_tenant(&rest),
        BTreeMap::from([(light.tenant, 1), (heavy.tenant, 2)]),
        "each up to its limit, 2 and 4: {rest:?}"
    );
    assert!(claim(10).await.is_empty(), "both are at their limits");

    let claim_of = |ctx: &Ctx, deployment: DeploymentId, task: &TaskId| Claim {
        tenant: ctx.tenant,
        deployment,
        lock_key: ctx.lock_key(task),
        task: task.clone(),
        attempt: 1,
        fence: None,
        worker: "worker-1".to_owned(),
        lease: LEASE,
        tenant_limit: Some(tenant_limit),
    };
    let handed_out: Vec<&TaskDispatch> = first
        .iter()
        .chain(&rest)
        .map(|message| &message.dispatch)
        .collect();
    let claims: Vec<Claim> = handed_out
        .iter()
        .map(|dispatch| {
            let ctx = if dispatch.tenant == heavy.tenant {
                &heavy
            } else {
                &light
            };
            claim_of(ctx, dispatch.deployment, &dispatch.task)
        })
        .collect();
    for outcome in store.claim_tasks(&claims).await {
        let outcome = outcome.expect("claim_tasks");
        assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
    }
    // A task of each not handed out: the heavier tenant runs 4, the other 2.
    for (ctx, deployment) in [&light, &heavy].into_iter().zip(&deployments) {
        let shown = ctx.show(*deployment).await;
        let ready = shown
            .tasks
            .iter()
            .find(|task| task.state == TaskState::Ready)
            .expect("a task left ready");
        let running = shown
            .tasks
            .iter()
            .filter(|task| task.state == TaskState::Running)
            .count();
        let limit = if ctx.tenant == heavy.tenant { 4 } else { 2 };
        assert_eq!(running, limit);
        let refused = store
            .claim_task(&claim_of(ctx, *deployment, &ready.id))
            .await
            .expect("claim_task");
        assert!(matches!(refused, ClaimOutcome::TenantLimit), "{refused:?}");
        let waiting = ready
            .waiting
            .clone()
            .map(|waiting| waiting.under_tenant_limit(tenant_limit));
        assert_eq!(
            waiting,
            Some(Waiting::TenantLimit {
                running: limit as u64,
                limit: limit as u32
            })
        );
    }

    let unknown = store.set_tenant_weight(&name("initech"), weight).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { what: "tenant", .. })),
        "{unknown:?}"
    );
    assert_eq!(store.tenant(&name("initech")).await.expect("tenant"), None);
}

/// A handed-out task whose dispatch was lost (dead-lettered, a queue purged) holds
/// its tenant's place only until its hand-out lapses: then the reaper dispatches it
/// again, at the same attempt.
async fn a_handed_out_task_no_worker_claims_is_dispatched_again(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &[])]);
    ctx.create(manifest, plan).await;
    let lapses = Duration::from_millis(200);
    // Published, then lost.
    let handed_out = relay_round(store.as_ref(), 1, lapses).await;
    assert_eq!(handed_out.len(), 1, "a tenant limit of 1: {handed_out:?}");
    let lost = handed_out[0].dispatch.clone();
    assert!(
        relay_round(store.as_ref(), 1, lapses).await.is_empty(),
        "the lost task holds the tenant's place"
    );
    assert_eq!(
        reaped(store.as_ref()).await,
        vec![Reaped::Redispatched(lost.clone())]
    );
    let again = store
        .claim_outbox(10, LEASE, 2, LEASE)
        .await
        .expect("claim_outbox");
    let tasks: BTreeSet<(String, u32)> = again
        .iter()
        .map(|message| (message.dispatch.task.to_string(), message.dispatch.attempt))
        .collect();
    assert_eq!(
        tasks,
        BTreeSet::from([
            ("deploy:b".to_owned(), 1),
            (lost.task.to_string(), lost.attempt)
        ]),
        "the tenant's place is free again, and the lost task is dispatched again"
    );
    ctx.run_dispatched(&lost).await;
}

/// The relay's claim of a stale duplicate dispatch leaves a running task's lease
/// alone: only a `ready` task's hand-out gets a deadline. (If the duplicate's
/// claim gave the running task the same deadline as the ready one beside it, the
/// reaper would reap both at once.)
async fn a_duplicate_dispatch_leaves_a_running_tasks_lease(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &[])]);
    ctx.create(manifest, plan).await;
    let handed_out = relay_round(store.as_ref(), 10, LEASE).await;
    assert_eq!(handed_out.len(), 2);
    let dispatch = |task: &str| {
        handed_out
            .iter()
            .map(|message| message.dispatch.clone())
            .find(|dispatch| dispatch.task.as_str() == task)
            .expect("dispatched")
    };
    let (a, b) = (dispatch("deploy:a"), dispatch("deploy:b"));
    // Both handed back, with new dispatches due at once; then a worker claims
    // `a` from its first delivery, which makes the new one a stale duplicate.
    for handed_back in [&a, &b] {
        assert!(
            store
                .hand_back(handed_back, Duration::ZERO)
                .await
                .expect("hand_back")
        );
    }
    ctx.claim_at(a.deployment, &a.task, a.attempt).await;
    let again = store
        .claim_outbox(10, LEASE, 10, Duration::ZERO)
        .await
        .expect("claim_outbox");
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(
        reaped(store.as_ref()).await,
        vec![Reaped::Redispatched(b)],
        "the ready task's hand-out lapsed; the running task's lease did not"
    );
}

/// A task handed back to wait for its component (held by an older deployment's
/// running task) is due again as soon as that task's result is recorded, not
/// after its delay.
async fn a_task_handed_back_for_its_component_is_due_when_the_holder_ends(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let first = ctx.create(manifest, plan).await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let second = ctx.create(manifest, plan).await;
    let dispatched = relay_round(store.as_ref(), 10, LEASE).await;
    let waits = dispatched
        .iter()
        .map(|message| message.dispatch.clone())
        .find(|dispatch| dispatch.deployment == second)
        .expect("the second deployment's dispatch");
    let x = task_id("deploy:x");
    let holder = ctx.claim_at(first, &x, 1).await;
    assert!(
        store
            .hand_back(&waits, Duration::from_secs(3600))
            .await
            .expect("hand_back")
    );
    assert!(
        store
            .claim_outbox(10, LEASE, 10, LEASE)
            .await
            .expect("claim_outbox")
            .is_empty(),
        "handed back for an hour"
    );
    ctx.succeed(&holder, None).await;
    let due = store
        .claim_outbox(10, LEASE, 10, LEASE)
        .await
        .expect("claim_outbox");
    let due: Vec<&TaskDispatch> = due.iter().map(|message| &message.dispatch).collect();
    assert_eq!(due, vec![&waits], "due once the holder ended");
}

/// Tasks dispatched again (after the loss of an in-memory broker's queue) no
/// longer count as handed out: their new dispatches are handed out again.
async fn redispatched_tasks_are_handed_out_again(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &[])]);
    ctx.create(manifest, plan).await;
    let lost = relay_round(store.as_ref(), 2, LEASE).await;
    assert_eq!(lost.len(), 2);
    assert_eq!(store.redispatch_ready().await.expect("redispatch_ready"), 2);
    let again = store
        .claim_outbox(10, LEASE, 2, LEASE)
        .await
        .expect("claim_outbox");
    assert_eq!(again.len(), 2, "{again:?}");
}

/// Claims of one tenant made at once, each taking its fence in its transaction as
/// workers do, run at most the tenant's limit of tasks: the rest are refused with
/// `TenantLimit`, and the slot of a task that ended is taken again.
async fn concurrent_claims_of_one_tenant_stay_within_its_limit(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let components: Vec<(&str, &[&str])> = names.iter().map(|name| (*name, &[][..])).collect();
    let (manifest, plan) = dag(&ctx.app, &components);
    let id = ctx.create(manifest, plan).await;
    let limit = 3;
    let claim = |task: TaskId| {
        let ctx = ctx.clone();
        async move {
            ctx.store
                .claim_task(&Claim {
                    tenant: ctx.tenant,
                    deployment: id,
                    lock_key: ctx.lock_key(&task),
                    task,
                    attempt: 1,
                    fence: None,
                    worker: "worker-1".to_owned(),
                    lease: LEASE,
                    tenant_limit: Some(limit),
                })
                .await
                .expect("claim_task")
        }
    };
    let handles: Vec<_> = names
        .iter()
        .map(|name| tokio::spawn(claim(task_id(&format!("deploy:{name}")))))
        .collect();
    let mut claimed = Vec::new();
    for handle in handles {
        match handle.await.expect("a claimer panicked") {
            ClaimOutcome::Claimed(task) => claimed.push(*task),
            ClaimOutcome::TenantLimit => {}
            other => panic!("expected a claim or the tenant limit, got {other:?}"),
        }
    }
    assert_eq!(claimed.len(), limit as usize, "{claimed:?}");
    let running = ctx.show(id).await;
    let n_running = running
        .tasks
        .iter()
        .filter(|task| task.state == TaskState::Running)
        .count();
    assert_eq!(n_running, limit as usize);
    let waiting = running
        .tasks
        .iter()
        .find(|task| task.state == TaskState::Ready)
        .map(|task| task.id.clone())
        .expect("a task left ready");
    let refused = claim(waiting.clone()).await;
    assert!(matches!(refused, ClaimOutcome::TenantLimit), "{refused:?}");
    ctx.succeed(&claimed[0], None).await;
    let again = claim(waiting).await;
    assert!(
        matches!(again, ClaimOutcome::Claimed(_)),
        "the ended task's slot is free: {again:?}"
    );
}

/// Claims made together are decided as each alone would be: the ready ones are
/// claimed, a stale one is refused, one beyond the tenant's limit waits for it, a
/// second claim of a component goes after the first; the refused spend no fence,
/// and a claim naming another tenant claims nothing.
async fn claims_made_together_are_decided_as_each_alone(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let other = Ctx::new(store.clone(), "globex", "shop").await;
    let names = ["a", "b", "c", "d", "e"];
    let components: Vec<(&str, &[&str])> = names.iter().map(|name| (*name, &[][..])).collect();
    let (manifest, plan) = dag(&ctx.app, &components);
    let id = ctx.create(manifest, plan).await;
    let claim = |name: &str, attempt: u32| {
        let task = task_id(&format!("deploy:{name}"));
        Claim {
            tenant: ctx.tenant,
            deployment: id,
            lock_key: ctx.lock_key(&task),
            task,
            attempt,
            fence: None,
            worker: "worker-1".to_owned(),
            lease: LEASE,
            tenant_limit: Some(2),
        }
    };
    let claims = [
        claim("a", 1),
        claim("b", 2),
        claim("c", 1),
        claim("d", 1),
        claim("a", 1),
    ];
    let outcomes: Vec<ClaimOutcome> = store
        .claim_tasks(&claims)
        .await
        .into_iter()
        .map(|outcome| outcome.expect("claim_tasks"))
        .collect();
    let fences: Vec<Option<Fence>> = outcomes
        .iter()
        .map(|outcome| match outcome {
            ClaimOutcome::Claimed(task) => Some(task.fence),
            _ => None,
        })
        .collect();
    assert_eq!(
        fences,
        [Some(Fence(1)), None, Some(Fence(1)), None, None],
        "{outcomes:?}"
    );
    assert!(
        matches!(
            outcomes[1],
            ClaimOutcome::NotClaimable {
                state: TaskState::Ready,
                attempt: 1
            }
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[3], ClaimOutcome::TenantLimit),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            outcomes[4],
            ClaimOutcome::NotClaimable {
                state: TaskState::Running,
                ..
            }
        ),
        "{outcomes:?}"
    );
    for refused in ["b", "d"] {
        let task = task_id(&format!("deploy:{refused}"));
        assert_eq!(
            ctx.fence(&task).await,
            Fence(1),
            "the refused claim of {task} spent no fence"
        );
    }
    let foreign = Claim {
        tenant: other.tenant,
        ..claim("e", 1)
    };
    let together = store.claim_tasks(&[foreign.clone(), claim("d", 1)]).await;
    assert!(together[0].is_err(), "{together:?}");
    assert!(
        matches!(together[1], Ok(ClaimOutcome::TenantLimit)),
        "{together:?}"
    );
    let shown = ctx.show(id).await;
    let state = |name: &str| {
        shown
            .tasks
            .iter()
            .find(|task| task.id == task_id(&format!("deploy:{name}")))
            .map(|task| task.state)
    };
    assert_eq!(
        state("e"),
        Some(TaskState::Ready),
        "another tenant's claim claimed it"
    );
    assert_eq!(
        [state("a"), state("c")],
        [Some(TaskState::Running), Some(TaskState::Running)]
    );
}

/// A tenant runs at most its limit of tasks at once; other tenants are not held
/// back, and a finished task frees a slot.
async fn a_tenant_runs_at_most_its_limit(store: Arc<dyn Store>) {
    let acme = Ctx::new(store.clone(), "acme", "shop").await;
    let other = Ctx::new(store.clone(), "other", "shop").await;
    let (manifest, plan) = dag(&acme.app, &[("a", &[]), ("b", &[]), ("c", &[])]);
    let busy = acme.create(manifest.clone(), plan.clone()).await;
    let quiet = other.create(manifest, plan).await;
    let claim = |ctx: &Ctx, deployment: DeploymentId, task: &str| {
        let ctx = ctx.clone();
        let task = task_id(task);
        async move {
            ctx.store
                .claim_task(&Claim {
                    tenant: ctx.tenant,
                    deployment,
                    lock_key: ctx.lock_key(&task),
                    task,
                    attempt: 1,
                    fence: None,
                    worker: "worker-1".to_owned(),
                    lease: LEASE,
                    tenant_limit: Some(2),
                })
                .await
                .expect("claim_task")
        }
    };
    let a = claim(&acme, busy, "deploy:a").await;
    let ClaimOutcome::Claimed(a) = a else {
        panic!("{a:?}")
    };
    assert!(matches!(
        claim(&acme, busy, "deploy:b").await,
        ClaimOutcome::Claimed(_)
    ));
    let refused = claim(&acme, busy, "deploy:c").await;
    assert!(matches!(refused, ClaimOutcome::TenantLimit), "{refused:?}");
    assert!(
        matches!(
            claim(&other, quiet, "deploy:a").await,
            ClaimOutcome::Claimed(_)
        ),
        "another tenant is not held back"
    );
    acme.succeed(&a, None).await;
    assert!(
        matches!(
            claim(&acme, busy, "deploy:c").await,
            ClaimOutcome::Claimed(_)
        ),
        "a finished task frees a slot"
    );
}

/// A transient failure hands the task out again as the next attempt, dispatched no
/// earlier than its backoff; the old attempt can no longer record anything.
async fn a_transient_failure_is_retried_as_the_next_attempt(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let deployment = ctx.create(manifest, plan).await;
    drain_outbox(store.as_ref()).await;
    let claimed = ctx.claim_at(deployment, &task_id("deploy:a"), 1).await;
    let result = |attempt: u32, outcome: TaskOutcome| TaskResult {
        deployment,
        task: task_id("deploy:a"),
        attempt,
        fence: claimed.fence,
        outcome,
        log: "registry busy".to_owned(),
    };
    let backoff = Duration::from_millis(300);
    let retrying = store
        .record_result(&result(
            1,
            TaskOutcome::Retry {
                error: "exited with status 75".to_owned(),
                after: backoff,
            },
        ))
        .await
        .expect("record_result");
    let RecordOutcome::Retrying { attempt, at } = retrying else {
        panic!("{retrying:?}")
    };
    assert_eq!(attempt, 2);
    assert!(at > chrono::Utc::now(), "the retry is in the future: {at}");
    let shown = ctx.show(deployment).await;
    assert_eq!(shown.tasks[0].state, TaskState::Ready);
    assert_eq!(shown.tasks[0].attempts, 1);
    assert_eq!(
        shown.tasks[0].error.as_deref(),
        Some("exited with status 75")
    );
    assert_eq!(shown.state, DeploymentState::Running);

    assert!(
        store
            .claim_outbox(10, LEASE, 100, LEASE)
            .await
            .expect("claim_outbox")
            .is_empty(),
        "the retry is not dispatched before its backoff"
    );
    tokio::time::sleep(backoff + Duration::from_millis(100)).await;
    let due = store
        .claim_outbox(10, LEASE, 100, LEASE)
        .await
        .expect("claim_outbox");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].dispatch.attempt, 2);

    let stale = store
        .record_result(&result(1, TaskOutcome::Succeeded { artifact: None }))
        .await
        .expect("record_result");
    assert_eq!(stale, RecordOutcome::Stale, "the first attempt is over");
    let again = ctx.claim_at(deployment, &task_id("deploy:a"), 2).await;
    assert_eq!(again.attempt, 2);
    let finished = ctx.succeed(&again, None).await;
    assert!(
        matches!(
            finished,
            RecordOutcome::Recorded {
                finished: Some(_),
                ..
            }
        ),
        "{finished:?}"
    );
}

/// The store keeps two tasks of one component from running at once even when the
/// lock service forgot the lock, and refuses a write whose fence is no longer the
/// component's newest.
async fn one_component_runs_one_task_at_a_time(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let first = ctx.create(manifest.clone(), plan.clone()).await;
    let second = ctx.create(manifest, plan).await;
    let x = task_id("deploy:x");
    let lease = Duration::from_secs(1);
    let fence = ctx.fence(&x).await;
    let ClaimOutcome::Claimed(running) = ctx.try_claim(first, &x, 1, fence, lease).await else {
        panic!("the first task is claimable")
    };

    // The lock was lost and another worker took it, with a new fence: its claim waits
    // while the first task's lease lives.
    let fence = ctx.fence(&x).await;
    let busy = ctx.try_claim(second, &x, 1, fence, LEASE).await;
    assert!(matches!(busy, ClaimOutcome::ComponentBusy), "{busy:?}");
    // The first holder's fence is no longer the component's newest: refused.
    assert_eq!(ctx.succeed(&running, None).await, RecordOutcome::Stale);
    assert_eq!(
        store
            .extend_lease(first, &x, 1, running.fence, lease)
            .await
            .expect("extend_lease"),
        Lease::Lost,
        "a stale holder cannot extend its lease either"
    );

    // Once the first task's lease has lapsed the component is free, but the first
    // deployment's deploy still applies before the second's: the reaper hands it
    // out again, it runs, and then the second runs and finishes.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let fence = ctx.fence(&x).await;
    let ordered = ctx.try_claim(second, &x, 1, fence, LEASE).await;
    assert!(matches!(ordered, ClaimOutcome::Ordered), "{ordered:?}");
    let reaped = store.reap_expired(3).await.expect("reap_expired");
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    let again = ctx.claim_at(first, &x, 2).await;
    ctx.succeed(&again, None).await;
    let next = ctx.claim_at(second, &x, 1).await;
    let finished = ctx.succeed(&next, None).await;
    assert!(
        matches!(
            finished,
            RecordOutcome::Recorded {
                finished: Some(_),
                ..
            }
        ),
        "{finished:?}"
    );
}

/// A claim that takes its own fence (as workers do) and finds another task of the
/// component running, although it held the component's lock, fences that holder
/// out: the holder's result and lease extension are refused. A claim refused for
/// any other reason spends no fence.
async fn a_claim_refused_by_a_running_holder_fences_it_out(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let first = ctx.create(manifest.clone(), plan.clone()).await;
    let second = ctx.create(manifest, plan).await;
    let x = task_id("deploy:x");
    let own_fence = |deployment: DeploymentId| {
        let ctx = ctx.clone();
        let x = x.clone();
        async move {
            ctx.store
                .claim_task(&Claim {
                    tenant: ctx.tenant,
                    deployment,
                    lock_key: ctx.lock_key(&x),
                    task: x,
                    attempt: 1,
                    fence: None,
                    worker: "worker-2".to_owned(),
                    lease: LEASE,
                    tenant_limit: None,
                })
                .await
                .expect("claim_task")
        }
    };
    let ClaimOutcome::Claimed(running) = own_fence(first).await else {
        panic!("the first task is claimable")
    };
    let busy = own_fence(second).await;
    assert!(matches!(busy, ClaimOutcome::ComponentBusy), "{busy:?}");
    assert_eq!(
        store
            .extend_lease(first, &x, 1, running.fence, LEASE)
            .await
            .expect("extend_lease"),
        Lease::Lost,
        "the holder was fenced out"
    );
    assert_eq!(ctx.succeed(&running, None).await, RecordOutcome::Stale);

    // A refusal for another reason (the task is running already) spends no fence.
    let before = ctx.fence(&x).await;
    let refused = own_fence(first).await;
    assert!(
        matches!(refused, ClaimOutcome::NotClaimable { .. }),
        "{refused:?}"
    );
    let after = ctx.fence(&x).await;
    assert_eq!(after.0, before.0 + 1, "the refused claim took no fence");
}

/// Finished deployments older than the retention are deleted, a batch at a time;
/// younger ones, running ones, releases and what runs are kept.
async fn finished_deployments_older_than_the_retention_are_pruned(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let succeeded = ctx.create(manifest.clone(), plan.clone()).await;
    ctx.run(succeeded, "deploy:a").await;
    let (manifest_b, plan_b) = dag(&ctx.app, &[("b", &[])]);
    let failed = ctx.create(manifest_b.clone(), plan_b.clone()).await;
    let claimed = ctx.claim(failed, "deploy:b").await;
    ctx.fail(&claimed, "boom").await;
    let third = ctx.create(manifest_b.clone(), plan_b.clone()).await;
    ctx.run(third, "deploy:b").await;
    let running = ctx.create(manifest_b, plan_b).await;
    let _busy = ctx.claim(running, "deploy:b").await;
    let release = ctx.active_release().await.expect("an active release");

    let day = Duration::from_secs(24 * 3600);
    assert_eq!(store.prune_finished(day, 100).await.expect("prune"), 0);
    assert_eq!(ctx.show(succeeded).await.state, DeploymentState::Succeeded);

    // Everything that ended is older than no time at all once the clock has moved.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pruned = store
        .prune_finished(Duration::ZERO, 2)
        .await
        .expect("prune");
    assert!(pruned <= 2, "a batch is at most its limit: {pruned}");
    while pruned < 3 {
        assert!(std::time::Instant::now() < deadline, "pruned {pruned} of 3");
        tokio::time::sleep(Duration::from_millis(5)).await;
        pruned += store
            .prune_finished(Duration::ZERO, 2)
            .await
            .expect("prune");
    }
    assert_eq!(pruned, 3);
    for id in [succeeded, failed, third] {
        assert!(
            store
                .deployment(ctx.tenant, id)
                .await
                .expect("deployment")
                .is_none(),
            "{id} was pruned"
        );
    }
    assert_eq!(ctx.show(running).await.state, DeploymentState::Running);
    assert_eq!(ctx.active_release().await, Some(release));
    assert!(
        ctx.current().await.components.contains_key("b"),
        "what runs is kept"
    );
}

/// Cancelling a deployment cancels its tasks that have not started at once; its
/// running task learns it from its lease and ends `cancelled`; the deployment then
/// ends `cancelled` without a release. A cancelled deployment retries nothing, its
/// expired leases are not handed out again, and a finished or foreign deployment
/// is not cancelled.
async fn a_cancelled_deployment_stops_and_writes_no_release(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(
        &ctx.app,
        &[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &[])],
    );
    let id = ctx.create(manifest, plan).await;
    let a = ctx.claim(id, "deploy:a").await;
    let d = ctx.claim(id, "deploy:d").await;
    let stale_c = outbox(store.as_ref()).await;

    let other = store
        .ensure_tenant(&TenantName::new("other").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    assert_eq!(
        store.cancel_deployment(other, id).await.expect("cancel"),
        None,
        "another tenant's deployment"
    );
    let Some(Cancellation::Requested {
        cancelled,
        running,
        finished,
    }) = store
        .cancel_deployment(ctx.tenant, id)
        .await
        .expect("cancel")
    else {
        panic!("the deployment was not cancelled");
    };
    assert_eq!(sorted(&cancelled), ["deploy:b", "deploy:c"]);
    assert_eq!(sorted(&running), ["deploy:a", "deploy:d"]);
    assert_eq!(finished, None, "two steps still run");
    let shown = ctx.show(id).await;
    assert_eq!(task_state(&shown, "deploy:b"), TaskState::Cancelled);
    assert_eq!(task_state(&shown, "deploy:c"), TaskState::Cancelled);
    assert_eq!(
        store
            .extend_lease(id, &a.task, a.attempt, a.fence, LEASE)
            .await
            .expect("extend_lease"),
        Lease::CancelRequested
    );
    // A dispatch of a cancelled task that was already on its way changes nothing.
    for dispatch in stale_c.iter().filter(|d| d.task.as_str() == "deploy:c") {
        let fence = ctx.fence(&dispatch.task).await;
        let refused = ctx.try_claim(id, &dispatch.task, 1, fence, LEASE).await;
        assert_eq!(refusal(&refused), Some((TaskState::Cancelled, 1)));
    }

    // A transient failure of a cancelled deployment is not retried.
    let retried = ctx
        .record(
            &d,
            TaskOutcome::Retry {
                error: "try again".into(),
                after: Duration::ZERO,
            },
        )
        .await;
    assert_eq!(retried, recorded());
    assert_eq!(
        task_state(&ctx.show(id).await, "deploy:d"),
        TaskState::Cancelled
    );
    assert!(
        drain_outbox(store.as_ref())
            .await
            .iter()
            .all(|dispatch| dispatch.task.as_str() != "deploy:d" || dispatch.attempt == 1),
        "deploy:d was dispatched again"
    );

    let outcome = ctx
        .record(
            &a,
            TaskOutcome::Cancelled {
                error: "cancelled: the step stopped on SIGTERM".into(),
            },
        )
        .await;
    assert_eq!(outcome, done(DeploymentState::Cancelled, None));
    let shown = ctx.show(id).await;
    assert_eq!(shown.state, DeploymentState::Cancelled);
    assert_eq!(shown.release, None);
    assert_eq!(task_state(&shown, "deploy:a"), TaskState::Cancelled);
    assert_eq!(ctx.active_release().await, None);
    assert_eq!(
        store
            .cancel_deployment(ctx.tenant, id)
            .await
            .expect("cancel"),
        Some(Cancellation::AlreadyFinished(DeploymentState::Cancelled))
    );

    // Nothing running: the deployment ends at once.
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let idle = ctx.create(manifest, plan).await;
    assert_eq!(
        store
            .cancel_deployment(ctx.tenant, idle)
            .await
            .expect("cancel"),
        Some(Cancellation::Requested {
            cancelled: vec![task_id("deploy:a")],
            running: vec![],
            finished: Some(Finished {
                state: DeploymentState::Cancelled,
                release: None
            }),
        })
    );

    // A running task whose worker died is not handed out again once cancelled.
    let (manifest, plan) = dag(&ctx.app, &[("a", &[])]);
    let orphan = ctx.create(manifest, plan).await;
    let task = task_id("deploy:a");
    let fence = ctx.fence(&task).await;
    let claimed = ctx
        .try_claim(orphan, &task, 1, fence, Duration::from_millis(1))
        .await;
    assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
    store
        .cancel_deployment(ctx.tenant, orphan)
        .await
        .expect("cancel");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reaped = store.reap_expired(5).await.expect("reap_expired");
    assert_eq!(
        reaped,
        [Reaped::Ended {
            tenant: ctx.tenant,
            deployment: orphan,
            task,
            attempt: 1,
            state: TaskState::Cancelled,
            skipped: vec![],
            finished: Some(Finished {
                state: DeploymentState::Cancelled,
                release: None
            }),
        }]
    );
}

/// Retrying a failed deployment reopens its failed task (as the next attempt) and
/// the tasks skipped because of it; the tasks that succeeded stay done. It then
/// runs to its end and writes its release. A deployment that did not fail, one
/// whose app has moved on, and another tenant's are not retried.
async fn a_failed_deployment_is_retried_with_only_its_failed_and_skipped_tasks(
    store: Arc<dyn Store>,
) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"]), ("c", &[])]);
    let id = ctx.create(manifest.clone(), plan.clone()).await;
    assert_eq!(ctx.run(id, "deploy:c").await, recorded());
    let a = ctx.claim(id, "deploy:a").await;
    assert_eq!(
        ctx.fail(&a, "boom").await,
        RecordOutcome::Recorded {
            skipped: vec![task_id("deploy:b")],
            finished: Some(Finished {
                state: DeploymentState::Failed,
                release: None
            }),
        }
    );
    drain_outbox(store.as_ref()).await;

    let other = store
        .ensure_tenant(&TenantName::new("other").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    assert_eq!(
        store.retry_deployment(other, id).await.expect("retry"),
        None
    );
    let Some(Retry::Reopened { tasks }) =
        store.retry_deployment(ctx.tenant, id).await.expect("retry")
    else {
        panic!("the failed deployment was not reopened");
    };
    assert_eq!(sorted(&tasks), ["deploy:a", "deploy:b"]);
    let shown = ctx.show(id).await;
    assert_eq!(shown.state, DeploymentState::Running);
    assert_eq!(task_state(&shown, "deploy:a"), TaskState::Ready);
    assert_eq!(task_state(&shown, "deploy:b"), TaskState::Blocked);
    assert_eq!(task_state(&shown, "deploy:c"), TaskState::Succeeded);
    let dispatches = drain_outbox(store.as_ref()).await;
    assert_eq!(dispatched(&dispatches), ["deploy:a"]);
    assert_eq!(
        dispatches[0].attempt, 2,
        "the failed task runs as its next attempt"
    );
    assert_eq!(
        store.retry_deployment(ctx.tenant, id).await.expect("retry"),
        Some(Retry::NotFailed(DeploymentState::Running))
    );
    // The first attempt's late result changes nothing.
    assert_eq!(ctx.succeed(&a, None).await, RecordOutcome::Stale);

    let again = ctx.claim_at(id, &task_id("deploy:a"), 2).await;
    assert_eq!(ctx.succeed(&again, None).await, recorded());
    assert_eq!(
        dispatched(&drain_outbox(store.as_ref()).await),
        ["deploy:b"]
    );
    assert_eq!(
        ctx.run(id, "deploy:b").await,
        done(DeploymentState::Succeeded, Some(1))
    );
    let shown = ctx.show(id).await;
    let attempts: BTreeMap<&str, u32> = shown
        .tasks
        .iter()
        .map(|task| (task.id.as_str(), task.attempts))
        .collect();
    assert_eq!(
        attempts,
        BTreeMap::from([("deploy:a", 2), ("deploy:b", 1), ("deploy:c", 1)])
    );
    assert_eq!(
        store.retry_deployment(ctx.tenant, id).await.expect("retry"),
        Some(Retry::NotFailed(DeploymentState::Succeeded))
    );

    // A failed deployment from release 1 cannot be retried once release 2 exists.
    let (manifest, plan) = dag(&ctx.app, &[("d", &[])]);
    let stale = ctx.create(manifest.clone(), plan.clone()).await;
    let d = ctx.claim(stale, "deploy:d").await;
    ctx.fail(&d, "boom").await;
    let newer = ctx.create(manifest, plan).await;
    assert_eq!(
        ctx.run(newer, "deploy:d").await,
        done(DeploymentState::Succeeded, Some(2))
    );
    assert_eq!(
        store
            .retry_deployment(ctx.tenant, stale)
            .await
            .expect("retry"),
        Some(Retry::Superseded { active: 2 })
    );
    assert_eq!(ctx.show(stale).await.state, DeploymentState::Failed);
}

/// An app's concurrency policy is the last one a deployment named (`queue` until
/// then); the deployments a newer one supersedes are the older unfinished ones with
/// work left on one of its components.
async fn a_newer_deployment_finds_the_older_work_it_supersedes(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    assert_eq!(
        store
            .concurrency_policy(ctx.tenant, &ctx.app)
            .await
            .expect("policy"),
        ConcurrencyPolicy::Queue
    );
    let (manifest, plan) = dag(&ctx.app, &[("b", &[])]);
    let finished = ctx.create(manifest, plan).await;
    assert_eq!(
        ctx.run(finished, "deploy:b").await,
        done(DeploymentState::Succeeded, Some(1))
    );
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"])]);
    let busy = ctx.create(manifest, plan).await;
    let (manifest, plan) = dag(&ctx.app, &[("c", &[])]);
    let elsewhere = ctx.create(manifest, plan).await;
    let (manifest, plan) = dag(&ctx.app, &[("b", &[])]);
    let newer_id = DeploymentId::generate();
    store
        .create_deployment(&NewDeployment {
            id: newer_id,
            tenant: ctx.tenant,
            manifest,
            plan,
            current: ctx.current().await,
            idempotency: None,
            artifacts: None,
            rollback_to: None,
            replaces: None,
            auto_rollback: false,
            external_update: None,
            concurrency: Some(ConcurrencyPolicy::CancelInProgress),
            strategy: None,
        })
        .await
        .expect("create_deployment");
    assert_eq!(
        store
            .concurrency_policy(ctx.tenant, &ctx.app)
            .await
            .expect("policy"),
        ConcurrencyPolicy::CancelInProgress
    );
    assert_eq!(
        store
            .superseded_by(ctx.tenant, newer_id, &[component("b")])
            .await
            .expect("superseded_by"),
        [busy],
        "not the one without work on b ({elsewhere}), nor the finished one ({finished})"
    );
    let other = store
        .ensure_tenant(&TenantName::new("other").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    assert_eq!(
        store
            .superseded_by(other, newer_id, &[component("b")])
            .await
            .expect("superseded_by"),
        []
    );
}

/// A deployment that opted into automatic rollback is armed once it failed (not
/// before, and not when it succeeded) until the rollback is submitted.
async fn a_failed_deployment_with_auto_rollback_is_armed_until_disarmed(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let create = |deploys: &'static [(&'static str, &'static [&'static str])]| {
        let ctx = &ctx;
        async move {
            let (manifest, plan) = dag(&ctx.app, deploys);
            let new = NewDeployment {
                id: DeploymentId::generate(),
                tenant: ctx.tenant,
                manifest,
                plan,
                current: ctx.current().await,
                idempotency: None,
                artifacts: None,
                rollback_to: None,
                replaces: None,
                auto_rollback: true,
                external_update: None,
                concurrency: None,
                strategy: None,
            };
            ctx.store
                .create_deployment(&new)
                .await
                .expect("create_deployment");
            new.id
        }
    };
    let good = create(&[("a", &[])]).await;
    assert_eq!(
        ctx.run(good, "deploy:a").await,
        done(DeploymentState::Succeeded, Some(1))
    );
    let bad = create(&[("a", &[])]).await;
    assert_eq!(
        store.armed_auto_rollbacks().await.expect("armed"),
        [],
        "not before it failed"
    );
    let claimed = ctx.claim(bad, "deploy:a").await;
    ctx.fail(&claimed, "boom").await;
    assert_eq!(
        store.armed_auto_rollbacks().await.expect("armed"),
        [AutoRollback {
            tenant: ctx.tenant,
            app: ctx.app.clone(),
            deployment: bad,
            to: Some(1),
        }]
    );
    store.disarm_auto_rollback(bad).await.expect("disarm");
    assert_eq!(store.armed_auto_rollbacks().await.expect("armed"), []);
}

/// Adopting records release 1 of a new app without a deployment; adopting again,
/// or an app with releases, records nothing and returns release 1.
async fn adopting_records_release_1_once(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let manifest = images(&["web"]);
    let components: BTreeMap<ComponentName, ReleasedComponent> = manifest
        .components
        .iter()
        .map(|(name, spec)| {
            let released = ReleasedComponent {
                spec: spec.clone(),
                artifact: Some("registry.example/web@live".to_owned()),
                version: None,
                deployment: None,
            };
            (name.clone(), released)
        })
        .collect();
    let first = store
        .adopt(ctx.tenant, &ctx.app, components.clone())
        .await
        .expect("adopt");
    assert!(!first.existing);
    assert_eq!(first.release.version, 1);
    assert_eq!(first.release.components, components);
    assert_eq!(
        ctx.active_release().await.map(|release| release.version),
        Some(1)
    );
    let again = store
        .adopt(ctx.tenant, &ctx.app, BTreeMap::new())
        .await
        .expect("adopt");
    assert!(again.existing);
    assert_eq!(again.release.components, components, "release 1 as it was");
    assert_eq!(
        ctx.active_release().await.map(|release| release.version),
        Some(1)
    );
}

/// A task whose lease expires once too often (its workers keep dying on it) fails,
/// with the usual consequences: its dependents are skipped, the deployment ends.
async fn a_task_whose_lease_keeps_expiring_fails(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"])]);
    let id = ctx.create(manifest, plan).await;
    let a = task_id("deploy:a");
    for attempt in 1..=2 {
        let fence = ctx.fence(&a).await;
        let claimed = ctx
            .try_claim(id, &a, attempt, fence, Duration::from_millis(1))
            .await;
        assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reaped = store.reap_expired(2).await.expect("reap_expired");
        assert_eq!(reaped.len(), 1, "{reaped:?}");
        if attempt == 1 {
            assert_eq!(reaped[0].requeued().map(|d| d.attempt), Some(2));
        } else {
            assert_eq!(
                reaped[0],
                Reaped::Ended {
                    tenant: ctx.tenant,
                    deployment: id,
                    task: a.clone(),
                    attempt: 2,
                    state: TaskState::Failed,
                    skipped: vec![task_id("deploy:b")],
                    finished: Some(Finished {
                        state: DeploymentState::Failed,
                        release: None
                    }),
                }
            );
        }
    }
    let shown = ctx.show(id).await;
    assert_eq!(shown.state, DeploymentState::Failed);
    assert_eq!(task_state(&shown, "deploy:a"), TaskState::Failed);
    assert_eq!(task_state(&shown, "deploy:b"), TaskState::Skipped);
    assert!(
        shown.tasks[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("lease expired 2 times"),
        "{:?}",
        shown.tasks[0].error
    );
}

/// Every task that is neither running nor finished says why it waits: its needs,
/// the deployment submitted earlier that still deploys its component, the
/// deployment whose task holds its component, a retry's backoff, or the queue (a
/// tenant limit on top, from configuration).
async fn waiting_tasks_say_why(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("a", &[]), ("b", &["a"]), ("x", &[])]);
    let first = ctx.create(manifest, plan).await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let second = ctx.create(manifest, plan).await;
    let x = task_id("deploy:x");
    ctx.claim_at(first, &x, 1).await;

    let waiting = |deployment: &Deployment, task: &str| {
        deployment
            .tasks
            .iter()
            .find(|view| view.id.as_str() == task)
            .and_then(|view| view.waiting.clone())
    };
    let shown = ctx.show(first).await;
    assert_eq!(
        waiting(&shown, "deploy:b"),
        Some(Waiting::Needs {
            tasks: vec![task_id("deploy:a")]
        })
    );
    assert_eq!(
        waiting(&shown, "deploy:a"),
        Some(Waiting::Queued {
            tenant_running: 1,
            tenant_weight: 1
        })
    );
    assert_eq!(
        waiting(&shown, "deploy:x"),
        None,
        "a running task does not wait"
    );
    assert_eq!(
        Waiting::Queued {
            tenant_running: 1,
            tenant_weight: 1,
        }
        .under_tenant_limit(1),
        Waiting::TenantLimit {
            running: 1,
            limit: 1
        }
    );
    assert_eq!(
        Waiting::Queued {
            tenant_running: 1,
            tenant_weight: 1,
        }
        .under_tenant_limit(2),
        Waiting::Queued {
            tenant_running: 1,
            tenant_weight: 1,
        }
    );
    assert_eq!(
        waiting(&ctx.show(second).await, "deploy:x"),
        Some(Waiting::Order {
            deployment: first,
            task: x.clone()
        }),
        "the deployment submitted earlier is named"
    );
    // A build changes nothing that runs, so it is not ordered: it waits for the lock.
    let (third, _) = ctx.deploy(images(&["x"])).await;
    assert_eq!(
        waiting(&ctx.show(third).await, "build:x"),
        Some(Waiting::Lock {
            deployment: first,
            task: x.clone()
        }),
        "the deployment in the way is named"
    );

    let a = ctx.claim_at(first, &task_id("deploy:a"), 1).await;
    let retry = ctx
        .record(
            &a,
            TaskOutcome::Retry {
                error: "busy".to_owned(),
                after: Duration::from_secs(60),
            },
        )
        .await;
    let RecordOutcome::Retrying { at, .. } = retry else {
        panic!("{retry:?}")
    };
    assert_eq!(
        waiting(&ctx.show(first).await, "deploy:a"),
        Some(Waiting::RetryBackoff { until: at })
    );
}

/// Releases are listed newest first, a page at a time: each page's `next_cursor`
/// leads to the next, the last page has none, and `total` counts them all. Another
/// tenant sees no such app, and an unknown version is no release.
async fn releases_are_listed_newest_first_in_pages(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    for n in 1..=5 {
        let manifest = manifest(&format!(
            "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {{image: registry.example/web:{n}}}\n    run: {{command: web}}\n"
        ));
        let (deployment, _) = ctx.deploy(manifest).await;
        let finished = ctx
            .run_to_end(deployment, |name| format!("registry.example/{name}@{n}"))
            .await;
        assert_eq!(finished.release, Some(n), "deployment {n}");
    }
    let mut versions = Vec::new();
    let mut cursors = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .releases(
                ctx.tenant,
                &ctx.app,
                PageRequest {
                    after: before,
                    limit: 2,
                },
            )
            .await
            .expect("releases")
            .expect("the app exists");
        assert_eq!(page.total, 5);
        assert!(page.items.len() <= 2);
        versions.extend(page.items.iter().map(|release| release.version));
        cursors.push(page.next_cursor.clone());
        match page.next_cursor {
            Some(cursor) => before = Some(cursor.parse().expect("a numeric cursor")),
            None => break,
        }
    }
    assert_eq!(versions, [5, 4, 3, 2, 1]);
    assert_eq!(cursors, [Some("4".to_owned()), Some("2".to_owned()), None]);

    let three = store
        .release(ctx.tenant, &ctx.app, 3)
        .await
        .expect("release")
        .expect("release 3 exists");
    assert_eq!(three.version, 3);
    assert_eq!(
        three.components[&component("web")].artifact.as_deref(),
        Some("registry.example/web@3")
    );
    assert_eq!(
        store
            .release(ctx.tenant, &ctx.app, 6)
            .await
            .expect("release"),
        None
    );
    assert_eq!(
        store
            .releases(
                ctx.tenant,
                &app("nope"),
                PageRequest {
                    after: None,
                    limit: 2
                }
            )
            .await
            .expect("releases"),
        None
    );
    let other = store
        .ensure_tenant(&TenantName::new("other").expect("a valid tenant name"))
        .await
        .expect("ensure_tenant");
    assert_eq!(
        store
            .releases(
                other,
                &ctx.app,
                PageRequest {
                    after: None,
                    limit: 2
                }
            )
            .await
            .expect("releases"),
        None,
        "another tenant's app is no app"
    );
    assert_eq!(
        store.release(other, &ctx.app, 3).await.expect("release"),
        None
    );
}

/// A manifest of one-off components with prebuilt images at the given tags.
fn tagged(tags: &[(&str, &str)]) -> Manifest {
    let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
    for (name, tag) in tags {
        yaml.push_str(&format!(
            "  {name}:\n    type: one-off\n    build: {{image: registry.example/{name}:{tag}}}\n    run: {{command: run-{name}}}\n"
        ));
    }
    manifest(&yaml)
}

/// The ids of a plan's tasks, in order.
fn task_ids(plan: &Plan) -> Vec<&str> {
    plan.tasks.iter().map(|task| task.id.as_str()).collect()
}

/// The (image, artifact, deployment) of every component in `components`.
fn summary(
    components: &BTreeMap<ComponentName, ReleasedComponent>,
) -> BTreeMap<String, (String, String, Option<DeploymentId>)> {
    components
        .iter()
        .map(|(name, released)| {
            let image = match &released.spec.build {
                shared::manifest::Build::Image { image } => image.clone(),
                other => format!("{other:?}"),
            };
            let artifact = released.artifact.clone().unwrap_or_default();
            (name.to_string(), (image, artifact, released.deployment))
        })
        .collect()
}

/// Two deployments of one app overlap (the issue's scenario): A changes x and y, B,
/// submitted while A still works, changes x back to another tag. B's deploy of x
/// waits (`order`) until A's has applied, B finishes first, then A. Every release
/// is what ran when it was written: A's, the last, keeps B's x.
async fn a_release_records_what_runs_when_deployments_overlap(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (first, _) = ctx.deploy(tagged(&[("x", "1"), ("y", "1")])).await;
    ctx.run_to_end(first, |name| format!("registry.example/{name}@1"))
        .await;
    let (a, plan_a) = ctx.deploy(tagged(&[("x", "2"), ("y", "2")])).await;
    assert_eq!(
        task_ids(&plan_a),
        ["build:x", "build:y", "deploy:x", "deploy:y"]
    );
    // B is planned against what runs (x:1, y:1), not against A's unfinished work.
    let (b, plan_b) = ctx.deploy(tagged(&[("x", "3"), ("y", "1")])).await;
    assert_eq!(task_ids(&plan_b), ["build:x", "deploy:x"]);

    for build in ["build:x", "build:y"] {
        let claimed = ctx.claim(a, build).await;
        let artifact = format!("registry.example/{}@2", claimed.component);
        ctx.succeed(&claimed, Some(&artifact)).await;
    }
    let claimed = ctx.claim(b, "build:x").await;
    ctx.succeed(&claimed, Some("registry.example/x@3")).await;
    // B's deploy of x is ready and x is free, but A, submitted first, deploys x first.
    let x = task_id("deploy:x");
    let fence = ctx.fence(&x).await;
    let early = ctx.try_claim(b, &x, 1, fence, LEASE).await;
    assert!(matches!(early, ClaimOutcome::Ordered), "{early:?}");
    let waiting = ctx
        .show(b)
        .await
        .tasks
        .into_iter()
        .find(|task| task.id == x);
    assert_eq!(
        waiting.and_then(|task| task.waiting),
        Some(Waiting::Order {
            deployment: a,
            task: x.clone()
        })
    );
    ctx.run(a, "deploy:x").await;
    let slow_y = ctx.claim(a, "deploy:y").await;
    assert_eq!(
        ctx.run(b, "deploy:x").await,
        done(DeploymentState::Succeeded, Some(2))
    );
    assert_eq!(
        ctx.succeed(&slow_y, None).await,
        done(DeploymentState::Succeeded, Some(3))
    );

    let at = |version| {
        let ctx = ctx.clone();
        async move {
            let release = ctx
                .store
                .release(ctx.tenant, &ctx.app, version)
                .await
                .expect("release")
                .expect("the release exists");
            summary(&release.components)
        }
    };
    let entry = |tag: &str, built: &str, by| {
        let name = &tag[..1];
        (
            format!("registry.example/{tag}"),
            format!("registry.example/{name}@{built}"),
            Some(by),
        )
    };
    let expected_two = BTreeMap::from([
        ("x".to_owned(), entry("x:3", "3", b)),
        ("y".to_owned(), entry("y:1", "1", first)),
    ]);
    assert_eq!(at(2).await, expected_two, "B ran x:3 beside the first y");
    let expected_three = BTreeMap::from([
        ("x".to_owned(), entry("x:3", "3", b)),
        ("y".to_owned(), entry("y:2", "2", a)),
    ]);
    assert_eq!(at(3).await, expected_three, "A's release keeps B's x");
    let current = ctx.current().await;
    assert_eq!(current.release, Some(3));
    assert!(!current.changed_since_release, "{current:?}");
    assert_eq!(summary(&current.components), expected_three);
    // The next plan of B's manifest changes only y back.
    let plan = planner::plan(
        &ctx.app,
        &tagged(&[("x", "3"), ("y", "1")]),
        current.components(),
        &PlanOptions::default(),
    );
    assert_eq!(task_ids(&plan), ["build:y", "deploy:y"]);
}

/// A deployment that fails after one of its deploys succeeded writes no release but
/// changes what runs: it says it was partially applied, the next plan is made against
/// what runs, and a deployment that then changes nothing records what runs as a
/// release, so that its release is true.
async fn a_partially_applied_deployment_changes_what_runs_not_the_release(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (first, _) = ctx.deploy(tagged(&[("x", "1"), ("y", "1")])).await;
    ctx.run_to_end(first, |name| format!("registry.example/{name}@1"))
        .await;
    assert!(!ctx.show(first).await.partially_applied);

    let (second, _) = ctx.deploy(tagged(&[("x", "2"), ("y", "2")])).await;
    for build in ["build:x", "build:y"] {
        let claimed = ctx.claim(second, build).await;
        let artifact = format!("registry.example/{}@2", claimed.component);
        ctx.succeed(&claimed, Some(&artifact)).await;
    }
    ctx.run(second, "deploy:x").await;
    let y = ctx.claim(second, "deploy:y").await;
    assert_eq!(
        ctx.fail(&y, "y would not start").await,
        done(DeploymentState::Failed, None)
    );
    let failed = ctx.show(second).await;
    assert!(failed.partially_applied, "{failed:?}");
    assert_eq!(failed.release, None);
    assert_eq!(
        ctx.active_release().await.map(|release| release.version),
        Some(1)
    );

    let current = ctx.current().await;
    assert_eq!(current.release, Some(1));
    assert!(current.changed_since_release);
    let x = &current.components[&component("x")];
    assert_eq!(x.artifact.as_deref(), Some("registry.example/x@2"));
    assert_eq!(x.deployment, Some(second));
    assert_eq!(
        current.components[&component("y")].artifact.as_deref(),
        Some("registry.example/y@1")
    );
    // The same manifest again: only y is left to do.
    let again = planner::plan(
        &ctx.app,
        &tagged(&[("x", "2"), ("y", "2")]),
        current.components(),
        &PlanOptions::default(),
    );
    assert_eq!(task_ids(&again), ["build:y", "deploy:y"]);

    // What runs, as a manifest: nothing to do, and release 2 records what runs.
    let (settled, plan) = ctx.deploy(tagged(&[("x", "2"), ("y", "1")])).await;
    assert!(plan.is_empty(), "{plan:?}");
    let settled = ctx.show(settled).await;
    assert_eq!(settled.state, DeploymentState::Succeeded);
    assert_eq!(settled.release, Some(2));
    let two = ctx.active_release().await.expect("release 2");
    assert_eq!(two.components, current.components);
    assert!(!ctx.current().await.changed_since_release);
    // Nothing changed since: the next empty deployment names release 2 again.
    let (unchanged, _) = ctx.deploy(tagged(&[("x", "2"), ("y", "1")])).await;
    assert_eq!(ctx.show(unchanged).await.release, Some(2));
}

/// A failed deployment is not retried once a deployment submitted after it deploys
/// one of the components the retry would deploy again: that would undo the newer.
async fn a_retry_is_refused_once_a_newer_deployment_deploys_its_components(store: Arc<dyn Store>) {
    let ctx = Ctx::new(store.clone(), "acme", "shop").await;
    let (manifest, plan) = dag(&ctx.app, &[("x", &[])]);
    let older = ctx.create(manifest.clone(), plan.clone()).await;
    let x = ctx.claim(older, "deploy:x").await;
    assert_eq!(
        ctx.fail(&x, "broken").await,
        done(DeploymentState::Failed, None)
    );
    let newer = ctx.create(manifest, plan).await;
    ctx.claim(newer, "deploy:x").await;
    assert_eq!(
        store
            .retry_deployment(ctx.tenant, older)
            .await
            .expect("retry_deployment"),
        Some(Retry::Overtaken { by: newer })
    );
    assert_eq!(ctx.show(older).await.state, DeploymentState::Failed);
}

/// An installation upgraded from before what runs was recorded: migrating fills it
/// from each app's newest release, so that the next plan changes nothing.
async fn upgrading_fills_what_runs_from_the_newest_release(url: &str) {
    use migrations::{Migrator, MigratorTrait};
    use sea_orm::sea_query::{Alias, Query};
    use sea_orm::{ConnectionTrait, Database};

    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(10))
        .await
        .expect("the migrations before");
    let (tenant, app_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let insert = |table: &str, columns: &[&str], values: Vec<sea_orm::Value>| {
        Query::insert()
            .into_table(Alias::new(table))
            .columns(columns.iter().map(|column| Alias::new(*column)))
            .values_panic(values.into_iter().map(Into::into))
            .to_owned()
    };
    db.execute(&insert(
        "tenants",
        &["id", "name", "created_at"],
        vec![tenant.into(), "acme".into(), 1i64.into()],
    ))
    .await
    .expect("a tenant");
    db.execute(&insert(
        "apps",
        &["id", "tenant_id", "name", "release_seq", "created_at"],
        vec![
            app_id.into(),
            tenant.into(),
            "shop".into(),
            2i32.into(),
            1i64.into(),
        ],
    ))
    .await
    .expect("an app");
    let released = |tag: &str| {
        let spec = tagged(&[("x", tag), ("y", "1")]).components;
        spec.into_iter()
            .map(|(name, spec)| {
                let artifact = format!("registry.example/{name}@{tag}");
                let released = ReleasedComponent {
                    spec,
                    artifact: Some(artifact),
                    version: Some(tag.to_owned()),
                    deployment: None,
                };
                (name, released)
            })
            .collect::<BTreeMap<_, _>>()
    };
    for version in [1, 2] {
        let components = released(&version.to_string());
        db.execute(&insert(
            "releases",
            &["app_id", "version", "components", "created_at"],
            vec![
                app_id.into(),
                version.into(),
                serde_json::to_string(&components).expect("json").into(),
                1i64.into(),
            ],
        ))
        .await
        .expect("a release");
    }
    Migrator::up(&db, None).await.expect("the migrations since");

    let store = SeaOrmStore::connect(url).await.expect("connect the store");
    let current = store
        .current_state(TenantId(tenant), &app("shop"))
        .await
        .expect("current_state");
    assert_eq!(current.release, Some(2));
    assert!(!current.changed_since_release, "{current:?}");
    assert_eq!(current.components, released("2"));
    let plan = planner::plan(
        &app("shop"),
        &tagged(&[("x", "2"), ("y", "1")]),
        current.components(),
        &PlanOptions::default(),
    );
    assert!(plan.is_empty(), "{plan:?}");
}

#[tokio::test]
async fn upgrading_fills_what_runs_from_the_newest_release_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("drover.db").display()
    );
    upgrading_fills_what_runs_from_the_newest_release(&url).await;
}

#[tokio::test]
async fn upgrading_fills_what_runs_from_the_newest_release_on_postgres() {
    let db = PgDatabase::create().await;
    upgrading_fills_what_runs_from_the_newest_release(&db.url).await;
}

macro_rules! store_suite {
    ($($case:ident),+ $(,)?) => {
        store_suite!(@backend sqlite; $($case),+);
        store_suite!(@backend postgres; $($case),+);
    };
    (@backend $backend:ident; $($case:ident),+) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::$backend().await;
                    super::$case(backend.store.clone()).await;
                    drop(backend);
                }
            )+
        }
    };
}

store_suite!(
    a_release_records_what_runs_when_deployments_overlap,
    a_partially_applied_deployment_changes_what_runs_not_the_release,
    a_retry_is_refused_once_a_newer_deployment_deploys_its_components,
    adopting_records_release_1_once,
    a_failed_deployment_with_auto_rollback_is_armed_until_disarmed,
    a_newer_deployment_finds_the_older_work_it_supersedes,
    a_failed_deployment_is_retried_with_only_its_failed_and_skipped_tasks,
    a_cancelled_deployment_stops_and_writes_no_release,
    releases_are_listed_newest_first_in_pages,
    waiting_tasks_say_why,
    a_task_whose_lease_keeps_expiring_fails,
    one_component_runs_one_task_at_a_time,
    finished_deployments_older_than_the_retention_are_pruned,
    a_claim_refused_by_a_running_holder_fences_it_out,
    a_tenant_runs_at_most_its_limit,
    concurrent_claims_of_one_tenant_stay_within_its_limit,
    claims_made_together_are_decided_as_each_alone,
    a_transient_failure_is_retried_as_the_next_attempt,
    outbox_claims_are_exclusive_until_they_expire,
    dispatches_are_handed_out_fairly_within_the_tenant_limit,
    a_heavier_tenant_gets_more_of_the_fleet,
    redispatched_tasks_are_handed_out_again,
    a_handed_out_task_no_worker_claims_is_dispatched_again,
    a_duplicate_dispatch_leaves_a_running_tasks_lease,
    a_task_handed_back_for_its_component_is_due_when_the_holder_ends,
    tenants_are_created_once_with_a_token,
    tokens_are_scoped_listed_revoked_and_expire,
    idempotency_keys_name_the_first_deployment,
    create_readies_tasks_without_needs,
    empty_plan_succeeds_at_once,
    claim_takes_only_a_ready_task_once,
    claim_with_an_older_fence_is_refused,
    a_task_is_readied_when_all_its_needs_succeeded,
    a_build_artifact_reaches_its_deploys,
    a_failure_skips_its_dependents_only,
    a_stale_result_changes_nothing,
    releases_inherit_untouched_components,
    fences_grow_per_key,
    concurrent_fences_are_distinct,
    an_expired_lease_is_requeued_as_the_next_attempt,
    the_holder_extends_its_lease,
    a_worker_extends_all_its_leases_at_once,
    results_recorded_together_each_count_once,
    attempts_count_the_claims_made,
    tenants_are_isolated,
    redispatch_ready_dispatches_every_ready_task,
    the_outbox_is_read_in_batches_and_deleted,
    a_pruned_component_leaves_the_next_release,
    concurrent_claims_of_one_task_claim_it_once,
    parallel_failures_fail_a_deployment_once,
    parallel_results_finish_a_deployment_once,
    parallel_results_ready_a_join_once,
    parallel_results_ready_a_layer_once,
    concurrent_deployments_get_distinct_releases,
);
