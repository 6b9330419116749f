//! How plans, progress and deployments look on a terminal and in JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;
use shared::events::Event;
use shared::ids::TaskId;
use shared::model::{Action, DeploymentState, Strategy, TaskKind, TaskState};
use shared::plan::Plan;
use shared::store::{Deployment, Waiting};

/// The plan as people read it: what happens to each component, then the builds,
/// then the deploys with what each waits for. It was made against what runs: release
/// `base_release`, or more when `changed_since_release` (a deployment applied only
/// partly since).
pub(crate) fn plan_text(
    plan: &Plan,
    base_release: Option<u32>,
    changed_since_release: bool,
) -> String {
    let mut out = String::new();
    let against = match (base_release, changed_since_release) {
        (Some(version), false) => format!("against release {version}"),
        (Some(version), true) => format!(
            "against what runs: release {version} and the deploys of a partially applied deployment since"
        ),
        (None, true) => {
            "against what runs: the deploys of a partially applied deployment".to_owned()
        }
        (None, false) => "a new app".to_owned(),
    };
    let count = |action: Action| plan.actions.values().filter(|a| **a == action).count();
    let mut counts: Vec<String> = [
        (Action::Create, "to create"),
        (Action::Replace, "to replace"),
        (Action::Update, "to update"),
        (Action::Delete, "to delete"),
        (Action::Unchanged, "unchanged"),
    ]
    .into_iter()
    .filter(|(action, _)| count(*action) > 0)
    .map(|(action, label)| format!("{} {label}", count(action)))
    .collect();
    if counts.is_empty() {
        counts.push("no components".into());
    }
    let _ = writeln!(
        out,
        "plan for app `{}` ({against}): {}",
        plan.app,
        counts.join(", ")
    );
    for (component, action) in &plan.actions {
        let drifted = match plan.drift.get(component) {
            Some(fields) => format!(" (drifted: {})", fields.join(", ")),
            None => String::new(),
        };
        let _ = writeln!(out, "  {:<10} {component}{drifted}", action.as_str());
    }
    if plan.is_empty() {
        let _ = writeln!(out, "nothing to do: every component is up to date");
        return out;
    }
    for (kind, heading) in [
        (TaskKind::Build, "builds"),
        (TaskKind::Deploy, "deploys"),
        (TaskKind::Delete, "deletes"),
    ] {
        let tasks: Vec<_> = plan.tasks.iter().filter(|task| task.kind == kind).collect();
        if tasks.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{heading}:");
        for task in tasks {
            let _ = write!(out, "  {}", task.id);
            if !task.needs.is_empty() {
                let needs: Vec<&str> = task.needs.iter().map(|need| need.as_str()).collect();
                let _ = write!(out, " (waiting for {})", needs.join(", "));
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "{} tasks in {} stages",
        plan.tasks.len(),
        plan.stages.len()
    );
    out
}

/// Renders progress as lines: plain text, colour only on a terminal. It remembers
/// what it has shown of each task, so that events and snapshots of the deployment
/// (read from the store or the API) can be mixed without a line shown twice.
///
/// On a terminal (text output on stdout), it draws one live checklist instead,
/// redrawn at every update: each task with its state, how long it ran and why it
/// waits. `DROVER_PROGRESS=lines` keeps the lines on a terminal too.
#[derive(Debug)]
pub(crate) struct Progress {
    colour: bool,
    shown: BTreeMap<TaskId, TaskState>,
    /// The checklist, on a terminal.
    live: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(crate) fn new(to_stdout: bool) -> Self {
        let colour = if to_stdout {
            std::io::stdout().is_terminal()
        } else {
            std::io::stderr().is_terminal()
        };
        let lines = std::env::var("DROVER_PROGRESS").is_ok_and(|mode| mode == "lines");
        let live = (to_stdout && colour && !lines).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stdout(),
            );
            // Only the message: the checklist's lines.
            if let Ok(style) = indicatif::ProgressStyle::with_template("{msg}") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            colour,
            shown: BTreeMap::new(),
            live,
        }
    }

    /// Whether it draws the live checklist (it then prints no lines).
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Shows the deployment as it stands: on a terminal, the checklist redrawn
    /// (left in place once the deployment ended), and no lines; else the lines of
    /// what changed since the last update.
    pub(crate) fn update(&mut self, deployment: &Deployment) -> Vec<String> {
        let Some(bar) = &self.live else {
            return self.observe(deployment);
        };
        bar.set_message(checklist(deployment, chrono::Utc::now()).join("\n"));
        if deployment.state.is_terminal() {
            bar.finish();
        }
        Vec::new()
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// The line for an event, unless it was shown already.
    pub(crate) fn line(&mut self, event: &Event) -> Option<String> {
        let (task, state) = match event {
            Event::TaskStarted { task, .. } => (task, TaskState::Running),
            Event::TaskFinished { task, state, .. } => (task, *state),
            Event::TaskSkipped { task, .. } => (task, TaskState::Skipped),
            // Ready again: the retry's start is news.
            Event::TaskRetrying { task, .. } => (task, TaskState::Ready),
            Event::CancelRequested { .. } | Event::DeploymentFinished { .. } => return None,
        };
        if self.shown.insert(task.clone(), state) == Some(state) {
            return None;
        }
        Some(match event {
            Event::TaskStarted { task, attempt, .. } => {
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("▶️  {task} started{retry}")
            }
            Event::TaskFinished {
                task,
                state,
                duration_ms,
                error,
                ..
            } => {
                let took = seconds(Duration::from_millis(*duration_ms));
                let what = format!("{task} {state}");
                match (state, error) {
                    (TaskState::Succeeded, _) => {
                        format!("✅ {} in {took}", self.paint("32", &what))
                    }
                    (_, Some(error)) => {
                        format!("❌ {} in {took}: {error}", self.paint("31", &what))
                    }
                    (_, None) => format!("❌ {} in {took}", self.paint("31", &what)),
                }
            }
            Event::TaskSkipped { task, .. } => {
                format!("⏭️  {task} skipped: a task it needs failed")
            }
            Event::TaskRetrying {
                task,
                attempt,
                next_attempt,
                at,
                error,
                ..
            } => {
                let wait = (*at - chrono::Utc::now()).to_std().unwrap_or_default();
                format!(
                    "🔁 {} (attempt {attempt}): {error}; attempt {next_attempt} in {}",
                    self.paint("33", &format!("{task} failed")),
                    seconds(wait)
                )
            }
            Event::CancelRequested { .. } | Event::DeploymentFinished { .. } => return None,
        })
    }

    /// Lines for whatever a snapshot of the deployment shows that was not shown yet:
    /// tasks that started, finished or were skipped.
    pub(crate) fn observe(&mut self, deployment: &Deployment) -> Vec<String> {
        let mut events = Vec::new();
        for task in &deployment.tasks {
            let shown = self.shown.get(&task.id).copied();
            if shown == Some(task.state) {
                continue;
            }
            let ran = matches!(
                task.state,
                TaskState::Running | TaskState::Succeeded | TaskState::Failed
            );
            if ran && shown.is_none() {
                events.push(Event::TaskStarted {
                    tenant: deployment.tenant,
                    deployment: deployment.id,
                    task: task.id.clone(),
                    attempt: task.attempts,
                    worker: String::new(),
                });
            }
            match task.state {
                TaskState::Skipped => events.push(Event::TaskSkipped {
                    tenant: deployment.tenant,
                    deployment: deployment.id,
                    task: task.id.clone(),
                }),
                state if state.is_terminal() => events.push(Event::TaskFinished {
                    tenant: deployment.tenant,
                    deployment: deployment.id,
                    task: task.id.clone(),
                    attempt: task.attempts,
                    state,
                    duration_ms: match (task.started_at, task.finished_at) {
                        (Some(start), Some(end)) => {
                            u64::try_from((end - start).num_milliseconds()).unwrap_or(0)
                        }
                        _ => 0,
                    },
                    error: task.error.clone(),
                }),
                _ => {}
            }
        }
        events.iter().filter_map(|event| self.line(event)).collect()
    }
}

/// The checklist of a deployment: a line per task, in plan order, with its state,
/// how long it ran (so far) and why it waits, e.g. `[✅] build:api  1.2s` or
/// `[⏳] deploy:api (waiting for deploy:migrate (needs))`.
pub(crate) fn checklist(
    deployment: &Deployment,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "deployment {} of app `{}`: {}",
        deployment.id, deployment.app, deployment.state
    )];
    for task in &deployment.tasks {
        let took = |end: chrono::DateTime<chrono::Utc>| {
            task.started_at
                .and_then(|start| (end - start).to_std().ok())
                .map(seconds)
                .unwrap_or_default()
        };
        let line = match task.state {
            TaskState::Succeeded => format!(
                "[✅] {}  {}",
                task.id,
                took(task.finished_at.unwrap_or(now))
            ),
            TaskState::Failed => {
                let error = task
                    .error
                    .as_deref()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default();
                format!(
                    "[❌] {}  {}{error}",
                    task.id,
                    took(task.finished_at.unwrap_or(now))
                )
            }
            TaskState::Cancelled => format!("[🚫] {} (cancelled)", task.id),
            TaskState::Skipped => format!("[⏭️] {} (skipped: a task it needs failed)", task.id),
            TaskState::Running => {
                let attempt = if task.attempts > 1 {
                    format!(", attempt {}", task.attempts)
                } else {
                    String::new()
                };
                format!("[▶️] {}  running {}{attempt}", task.id, took(now))
            }
            TaskState::Ready | TaskState::Blocked => match &task.waiting {
                Some(waiting) => format!("[⏳] {} ({})", task.id, waiting_text(waiting, now)),
                None => format!("[⏳] {} (waiting)", task.id),
            },
        };
        lines.push(line);
    }
    lines
}

/// `1.2s`, `350ms`.
pub(crate) fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// The final word on a deployment, and the failed steps' log tails.
pub(crate) fn summary(deployment: &Deployment) -> String {
    let mut out = String::new();
    let took = match (deployment.started_at, deployment.finished_at) {
        (Some(start), Some(end)) => (end - start)
            .to_std()
            .map(|took| format!(" in {}", seconds(took)))
            .unwrap_or_default(),
        _ => String::new(),
    };
    match (deployment.state, deployment.release) {
        (DeploymentState::Succeeded, Some(version)) if deployment.tasks.is_empty() => {
            let _ = writeln!(
                out,
                "nothing to deploy: app `{}` stays at release {version}",
                deployment.app
            );
        }
        (DeploymentState::Succeeded, Some(version)) => {
            let _ = writeln!(
                out,
                "deployment {} of app `{}` succeeded{took}: release {version}",
                deployment.id, deployment.app
            );
        }
        (state, _) => {
            let _ = writeln!(
                out,
                "deployment {} of app `{}` {state}{took}",
                deployment.id, deployment.app
            );
        }
    }
    for task in deployment
        .tasks
        .iter()
        .filter(|task| task.state == TaskState::Failed)
    {
        let _ = writeln!(
            out,
            "{} failed: {}",
            task.id,
            task.error.as_deref().unwrap_or("no reason recorded")
        );
        let log = task.log.as_deref().unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        let _ = writeln!(
            out,
            "--- last {} lines of the log of {} ---",
            tail.len(),
            task.id
        );
        for line in tail {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "---");
    }
    let skipped: Vec<&str> = deployment
        .tasks
        .iter()
        .filter(|task| task.state == TaskState::Skipped)
        .map(|task| task.id.as_str())
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped because a task they need failed: {}",
            skipped.join(", ")
        );
    }
    out
}

/// How many lines of a failed step's log are shown.
const LOG_TAIL: usize = 20;

/// The deployment as `-o json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct DeploymentJson<'a> {
    id: String,
    app: &'a str,
    state: DeploymentState,
    release: Option<ReleaseJson>,
    partially_applied: bool,
    strategy: Strategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_by: Option<String>,
    tasks: Vec<TaskJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ReleaseJson {
    version: u32,
}

#[derive(Debug, Serialize)]
struct TaskJson<'a> {
    id: &'a str,
    kind: TaskKind,
    component: &'a str,
    state: TaskState,
    attempts: u32,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<&'a Waiting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
}

impl<'a> DeploymentJson<'a> {
    pub(crate) fn new(deployment: &'a Deployment) -> Self {
        Self {
            id: deployment.id.to_string(),
            app: deployment.app.as_str(),
            state: deployment.state,
            release: deployment.release.map(|version| ReleaseJson { version }),
            partially_applied: deployment.partially_applied,
            strategy: deployment.strategy,
            rolled_back_by: deployment.rolled_back_by.map(|id| id.to_string()),
            tasks: deployment
                .tasks
                .iter()
                .map(|task| TaskJson {
                    id: task.id.as_str(),
                    kind: task.kind,
                    component: task.component.as_str(),
                    state: task.state,
                    attempts: task.attempts,
                    started_at: task.started_at.map(|at| at.to_rfc3339()),
                    finished_at: task.finished_at.map(|at| at.to_rfc3339()),
                    error: task.error.as_deref(),
                    waiting: task.waiting.as_ref(),
                    phase: task.phase.as_deref(),
                })
                .collect(),
        }
    }
}

/// `drover status`: the deployment and, for every task, what it is doing or why it
/// waits.
pub(crate) fn status(deployment: &Deployment) -> String {
    let mut out = String::new();
    let base = match deployment.base_release {
        Some(version) => format!(", planned against release {version}"),
        None => String::new(),
    };
    let release = match (deployment.state, deployment.release) {
        (DeploymentState::Succeeded, Some(version)) => format!(": release {version}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "deployment {} of app `{}`: {}{release}{base} ({} strategy)",
        deployment.id, deployment.app, deployment.state, deployment.strategy
    );
    if let Some(rollback) = deployment.rolled_back_by {
        let _ = writeln!(out, "rolled back by deployment {rollback}");
    }
    if deployment.partially_applied {
        let _ = writeln!(
            out,
            "partially applied: its succeeded deploys run now (no release records them); the next plan is made against what runs"
        );
    }
    let width = deployment
        .tasks
        .iter()
        .map(|task| task.id.as_str().len())
        .max()
        .unwrap_or(0);
    let now = chrono::Utc::now();
    for task in &deployment.tasks {
        let took = |end: chrono::DateTime<chrono::Utc>| {
            task.started_at
                .and_then(|start| (end - start).to_std().ok())
                .map(seconds)
                .unwrap_or_default()
        };
        let detail = match (task.state, &task.waiting) {
            (TaskState::Running, _) => {
                format!("running for {} (attempt {})", took(now), task.attempts)
            }
            (TaskState::Succeeded, _) => format!(
                "succeeded in {}",
                task.finished_at.map(took).unwrap_or_default()
            ),
            (TaskState::Failed, _) => format!(
                "failed: {}",
                task.error.as_deref().unwrap_or("no reason recorded")
            ),
            (TaskState::Skipped, _) => "skipped: a task it needs failed".to_owned(),
            (TaskState::Cancelled, _) => "cancelled".to_owned(),
            (_, Some(waiting)) => waiting_text(waiting, now),
            (state, None) => state.to_string(),
        };
        let phase = match &task.phase {
            Some(phase) => format!(" [phase: {phase}]"),
            None => String::new(),
        };
        let _ = writeln!(out, "  {:<width$}  {detail}{phase}", task.id.as_str());
    }
    out
}

/// Why a task waits, for people.
fn waiting_text(waiting: &Waiting, now: chrono::DateTime<chrono::Utc>) -> String {
    match waiting {
        Waiting::Needs { tasks } => {
            let tasks: Vec<&str> = tasks.iter().map(|task| task.as_str()).collect();
            format!("waiting for {} (needs)", tasks.join(", "))
        }
        Waiting::Order { deployment, task } => {
            format!("waiting for {task} of deployment {deployment}, submitted earlier (order)")
        }
        Waiting::Lock { deployment, task } => {
            format!("waiting for the component's lock, held by deployment {deployment} ({task})")
        }
        Waiting::RetryBackoff { until } => {
            let wait = (*until - now).to_std().unwrap_or_default();
            format!(
                "waiting to retry at {} (in {}; retry-backoff)",
                until.format("%H:%M:%S"),
                seconds(wait)
            )
        }
        Waiting::TenantLimit { running, limit } => format!(
            "waiting its turn: the tenant already has {running} tasks running or dispatched, its limit is {limit} (tenant-limit)"
        ),
        Waiting::Queued { .. } => "waiting for a free worker (queued)".to_owned(),
    }
}

/// What `drover cancel` did.
pub(crate) fn cancelled(deployment: &Deployment) -> String {
    let count = |state: TaskState| {
        deployment
            .tasks
            .iter()
            .filter(|task| task.state == state)
            .count()
    };
    let (cancelled, running) = (count(TaskState::Cancelled), count(TaskState::Running));
    let tasks = |n: usize| if n == 1 { "task" } else { "tasks" };
    if deployment.state == DeploymentState::Cancelled {
        format!(
            "deployment {} cancelled: {cancelled} {} will not run\n",
            deployment.id,
            tasks(cancelled)
        )
    } else {
        format!(
            "deployment {} is being cancelled: {cancelled} {} will not run; {running} running {} SIGTERM, then SIGKILL after the grace period\n",
            deployment.id,
            tasks(cancelled),
            if running == 1 {
                "step gets"
            } else {
                "steps get"
            }
        )
    }
}
