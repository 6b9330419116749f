//! A release records what runs; component deploys apply in submission order.
//!
//! A property test over random overlapping deployments of one app on the embedded
//! default (SQLite, the in-process broker and locks) with a real worker. Its driver
//! is a platform in memory: a deploy step puts the task's spec and artifact in place
//! when it ends (a failing one changes nothing), and every step is noted with its
//! start and end. After every deployment ended:
//! (a) what runs, on the platform and in the store, is for every component the spec
//!     of the last-submitted deployment whose deploy of it succeeded;
//! (b) every release equals what ran when it was written;
//! (c) no two steps of one component overlapped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use proptest::prelude::*;
use scheduler::Policies;
use scheduler::planner::PlanOptions;
use shared::ids::{DeploymentId, TenantId};
use shared::manifest::{Component, Manifest};
use shared::model::{TaskKind, TaskState};
use shared::names::{AppName, ComponentName, TenantName};
use shared::release::{Components, Observer};
use shared::store::{ClaimedTask, MAX_PAGE_LIMIT, PageRequest, Store};
use tokio::sync::watch;
use worker::Shutdown;
use worker::driver::{Driver, StepOutcome, StepResult, StepStop};

use crate::store::{manifest, sqlite};
use crate::support::{embedded, worker_options};

/// What one component runs on the platform: its spec and artifact.
type Running = (Component, Option<String>);

/// One step the platform ran.
#[derive(Clone, Debug)]
struct Step {
    component: ComponentName,
    /// Microseconds since the epoch, by the system clock (the database's too).
    start: u64,
    end: u64,
    /// What it put in place when it ended: `Some(None)` for a delete.
    effect: Option<Option<Running>>,
}

/// A platform in memory, driven like the exec driver would drive a real one.
#[derive(Debug)]
struct Platform {
    steps: Mutex<Vec<Step>>,
    running: Mutex<BTreeMap<ComponentName, Running>>,
    /// How many steps have started.
    started: watch::Sender<usize>,
}

fn micros_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970");
    u64::try_from(now.as_micros()).expect("microseconds fit")
}

impl Observer for Platform {}

#[async_trait]
impl Driver for Platform {
    async fn run(&self, task: &ClaimedTask, _stop: StepStop) -> StepResult {
        let start = micros_now();
        self.started.send_modify(|started| *started += 1);
        let env = &task.spec.run.env;
        let millis: u64 = env
            .get("STEP_MS")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        // Builds take longer than deploys, as they do: a newer deployment's deploy
        // that builds nothing is then often ready before an older one's.
        let millis = if task.kind == TaskKind::Build {
            3 * millis
        } else {
            millis
        };
        tokio::time::sleep(Duration::from_millis(millis)).await;
        let fails = task.kind == TaskKind::Deploy && env.contains_key("FAIL");
        let (outcome, effect) = match task.kind {
            _ if fails => (StepOutcome::failed("the deploy was told to fail"), None),
            TaskKind::Build => {
                let artifact = format!("{}@{}", task.component, task.deployment);
                (
                    StepOutcome::Succeeded {
                        artifact: Some(artifact),
                    },
                    None,
                )
            }
            TaskKind::Deploy => (
                StepOutcome::Succeeded { artifact: None },
                Some(Some((task.spec.clone(), task.artifact.clone()))),
            ),
            TaskKind::Delete => (StepOutcome::Succeeded { artifact: None }, Some(None)),
        };
        {
            let mut running = self.running.lock().expect("the platform's state");
            match &effect {
                Some(Some(now)) => {
                    running.insert(task.component.clone(), now.clone());
                }
                Some(None) => {
                    running.remove(&task.component);
                }
                None => {}
            }
        }
        let end = micros_now();
        self.steps.lock().expect("the step history").push(Step {
            component: task.component.clone(),
            start,
            end,
            effect,
        });
        StepResult {
            outcome,
            log: String::new(),
        }
    }
}

/// One component as a generated deployment wants it.
#[derive(Clone, Debug)]
struct Want {
    tag: u8,
    command: u8,
    step_ms: u64,
    fail: bool,
}

/// A generated deployment: what it wants of each component it names, and how many
/// steps must have started before the next deployment is submitted.
#[derive(Clone, Debug)]
struct Submission {
    components: BTreeMap<&'static str, Want>,
    /// The deployment also chains `b` after `a` (`wait-for`).
    chained: bool,
    then_after_steps: usize,
}

const COMPONENTS: [&str; 3] = ["a", "b", "c"];

fn want() -> impl Strategy<Value = Want> {
    (1..=3u8, 1..=2u8, 0..12u64, prop::bool::weighted(0.15)).prop_map(
        |(tag, command, step_ms, fail)| Want {
            tag,
            command,
            step_ms,
            fail,
        },
    )
}

fn submission() -> impl Strategy<Value = Submission> {
    (
        prop::collection::btree_map(prop::sample::select(&COMPONENTS[..]), want(), 1..=3),
        any::<bool>(),
        0..6usize,
    )
        .prop_map(|(components, chained, then_after_steps)| Submission {
            components,
            chained,
            then_after_steps,
        })
}

impl Submission {
    fn manifest(&self) -> Manifest {
        let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
        for (name, want) in &self.components {
            let mut env = format!("STEP_MS: '{}'", want.step_ms);
            if want.fail {
                env.push_str(", FAIL: '1'");
            }
            yaml.push_str(&format!(
                "  {name}:\n    type: one-off\n    build: {{image: registry.example/{name}:{}}}\n    run: {{command: run-{}, env: {{{env}}}}}\n",
                want.tag, want.command
            ));
            if *name == "b" && self.chained && self.components.contains_key("a") {
                yaml.push_str("    wait-for: [a]\n");
            }
        }
        manifest(&yaml)
    }
}

/// What a component runs after the first `n` steps of its history (in the order
/// they ran).
fn fold(steps: &[&Step], n: usize) -> Option<Running> {
    steps[..n]
        .iter()
        .rev()
        .find_map(|step| step.effect.clone())
        .flatten()
}

fn released(components: &Components, name: &ComponentName) -> Option<Running> {
    components
        .get(name)
        .map(|released| (released.spec.clone(), released.artifact.clone()))
}

/// Runs the submissions against a fresh embedded store and checks the properties.
async fn overlap(submissions: Vec<Submission>) -> Result<(), TestCaseError> {
    let backend = sqlite().await;
    let store = backend.store.clone();
    let (backends, _) = embedded(store.clone());
    let submitter = backends.clone();
    let (started, mut started_rx) = watch::channel(0);
    let platform = Arc::new(Platform {
        steps: Mutex::new(Vec::new()),
        running: Mutex::new(BTreeMap::new()),
        started,
    });
    let options = worker_options("order-worker");
    let shutdown = Shutdown::default();
    let worker = tokio::spawn(worker::run(
        options,
        backends,
        platform.clone(),
        shutdown.clone(),
    ));

    let tenant = store
        .ensure_tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    let app = AppName::new("shop").expect("an app name");
    let mut submitted: Vec<(DeploymentId, Manifest)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for submission in &submissions {
        let manifest = submission.manifest();
        let deployment = scheduler::submit(
            &submitter,
            tenant,
            &app,
            manifest.clone(),
            &PlanOptions::default(),
            None,
            Policies::default(),
        )
        .await
        .expect("submit");
        submitted.push((deployment.id, manifest));
        // The next one comes once this many more steps started (or all ended).
        let goal = *started_rx.borrow() + submission.then_after_steps;
        loop {
            if *started_rx.borrow_and_update() >= goal
                || all_ended(store.as_ref(), tenant, &submitted).await
            {
                break;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            prop_assert!(!wait.is_zero(), "steps stopped starting");
            let _ = tokio::time::timeout(wait.min(Duration::from_millis(50)), started_rx.changed())
                .await;
        }
    }
    while !all_ended(store.as_ref(), tenant, &submitted).await {
        prop_assert!(
            Instant::now() < deadline,
            "the deployments did not all end: a deadlock?"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), started_rx.changed()).await;
    }
    shutdown.drain.cancel();
    worker
        .await
        .expect("the worker panicked")
        .expect("the worker failed");

    let steps = platform.steps.lock().expect("the step history").clone();
    let running = platform
        .running
        .lock()
        .expect("the platform's state")
        .clone();
    let mut by_component: BTreeMap<ComponentName, Vec<&Step>> = BTreeMap::new();
    for step in &steps {
        by_component
            .entry(step.component.clone())
            .or_default()
            .push(step);
    }
    for history in by_component.values_mut() {
        history.sort_by_key(|step| step.start);
    }

    // (c) No two steps of one component overlapped.
    for (name, history) in &by_component {
        for pair in history.windows(2) {
            prop_assert!(
                pair[0].end <= pair[1].start,
                "{name}: {:?} and {:?} overlapped",
                pair[0],
                pair[1]
            );
        }
    }

    // (a) What runs is the spec of the last-submitted deployment that deployed it.
    let current = store
        .current_state(tenant, &app)
        .await
        .expect("current_state");
    for name in COMPONENTS {
        let name = ComponentName::new(name).expect("a component name");
        let mut expected = None;
        for (id, manifest) in &submitted {
            let deployment = store
                .deployment(tenant, *id)
                .await
                .expect("deployment")
                .expect("the deployment exists");
            let deployed = deployment.tasks.iter().any(|task| {
                task.kind == TaskKind::Deploy
                    && task.component == name
                    && task.state == TaskState::Succeeded
            });
            if deployed {
                expected = manifest.components.get(&name).cloned();
            }
        }
        let on_platform = running.get(&name).map(|(spec, _)| spec.clone());
        prop_assert_eq!(&on_platform, &expected, "{} on the platform", name);
        prop_assert_eq!(
            released(&current.components, &name),
            running.get(&name).cloned(),
            "{} in the store",
            name
        );
    }

    // (b) Every release is what ran when it was written: the state after some
    // prefix of each component's steps that can have been recorded by then. A step's
    // result is recorded after it ends and before the component's next step starts;
    // the release's time is the database's clock (milliseconds) at the start of the
    // transaction that wrote it, and two milliseconds of slack cover the rounding.
    let releases = store
        .releases(tenant, &app, PageRequest::first(MAX_PAGE_LIMIT))
        .await
        .expect("releases")
        .map(|page| page.items)
        .unwrap_or_default();
    for release in &releases {
        let at = u64::try_from(release.created_at.timestamp_millis()).expect("after 1970") * 1000;
        let (early, late) = (at.saturating_sub(2000), at + 3000);
        for name in COMPONENTS {
            let name = ComponentName::new(name).expect("a component name");
            let history = by_component.get(&name).cloned().unwrap_or_default();
            // Surely recorded: every step followed by a step that started before.
            let lo = (0..history.len())
                .filter(|i| history.get(i + 1).is_some_and(|next| next.start < early))
                .count();
            // Perhaps recorded: every step that ended by then.
            let hi = history.iter().filter(|step| step.end < late).count();
            let possible: Vec<Option<Running>> =
                (lo..=hi.max(lo)).map(|n| fold(&history, n)).collect();
            let recorded = released(&release.components, &name);
            prop_assert!(
                possible.contains(&recorded),
                "release {} says {} runs {:?}; it could only be one of {:?}",
                release.version,
                name,
                recorded,
                possible
            );
        }
    }
    Ok(())
}

async fn all_ended(
    store: &dyn Store,
    tenant: TenantId,
    submitted: &[(DeploymentId, Manifest)],
) -> bool {
    for (id, _) in submitted {
        let deployment = store
            .deployment(tenant, *id)
            .await
            .expect("deployment")
            .expect("the deployment exists");
        if !deployment.state.is_terminal() {
            return false;
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 16,
        // Interleavings come from timing, so a seed does not replay a failure.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random overlapping deployments of one app keep what runs, the releases and
    /// the order of steps true (the module's properties (a) to (c)).
    #[test]
    fn overlapping_deployments_keep_releases_true(
        submissions in prop::collection::vec(submission(), 2..=4)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(overlap(submissions))?;
    }
}
