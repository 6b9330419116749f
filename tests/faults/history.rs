//! The step history the fleet's step scripts write, and what the tests compute from
//! it: overlapping steps of one component, dependency order, tasks run more than
//! once, and the figures line each test prints.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fleet::{Outcome, Submission};

/// One step as the history shows it: a `start` line and, unless the step was
/// killed, its `end` line. A killed step gets a `died PID EPOCH_NS` line from the
/// fleet's death watch instead: the first moment it was seen dead, an upper bound
/// of when it died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// `tenant/app/component`: what the component lock protects.
    pub(crate) key: String,
    pub(crate) deployment: String,
    pub(crate) task: String,
    pub(crate) attempt: u32,
    pub(crate) fence: u64,
    /// The worker process that ran the step.
    pub(crate) worker: u32,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: Option<i64>,
    /// When the death watch first saw a step without an `end` line dead.
    pub(crate) died_ns: Option<i64>,
    /// The step script's pid and process group.
    pub(crate) pid: u32,
    pub(crate) pgid: u32,
    pub(crate) status: Option<i32>,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "{} {} attempt {} fence {} on worker {} (pid {}) [{}, {}]",
            self.deployment,
            self.task,
            self.attempt,
            self.fence,
            self.worker,
            self.pid,
            self.start_ns,
            self.end_ns
                .map_or_else(|| "no end".to_owned(), |end| end.to_string())
        )
    }
}

/// Reads the history file. A line that does not parse (one being written right now)
/// is skipped.
pub(crate) fn read(path: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();
    // (pid, deployment, task, attempt) → index in `runs`.
    let mut open: BTreeMap<(u32, String, String, u32), usize> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            [
                "start",
                key,
                deployment,
                task,
                attempt,
                fence,
                worker,
                at,
                pid,
                pgid,
            ] => {
                let (Ok(attempt), Ok(fence), Ok(worker), Ok(at), Ok(pid), Ok(pgid)) = (
                    attempt.parse(),
                    fence.parse(),
                    worker.parse(),
                    at.parse(),
                    pid.parse(),
                    pgid.parse(),
                ) else {
                    continue;
                };
                open.insert(
                    (pid, (*deployment).to_owned(), (*task).to_owned(), attempt),
                    runs.len(),
                );
                runs.push(Run {
                    key: (*key).to_owned(),
                    deployment: (*deployment).to_owned(),
                    task: (*task).to_owned(),
                    attempt,
                    fence,
                    worker,
                    start_ns: at,
                    end_ns: None,
                    died_ns: None,
                    pid,
                    pgid,
                    status: None,
                });
            }
            [
                "end",
                _key,
                deployment,
                task,
                attempt,
                _fence,
                _worker,
                at,
                pid,
                _pgid,
                status,
            ] => {
                let (Ok(attempt), Ok(at), Ok(pid), Ok(status)) =
                    (attempt.parse(), at.parse(), pid.parse(), status.parse())
                else {
                    continue;
                };
                if let Some(idx) =
                    open.remove(&(pid, (*deployment).to_owned(), (*task).to_owned(), attempt))
                {
                    runs[idx].end_ns = Some(at);
                    runs[idx].status = Some(status);
                }
            }
            ["died", pid, at] => {
                let (Ok(pid), Ok(at)) = (pid.parse::<u32>(), at.parse()) else {
                    continue;
                };
                for run in runs.iter_mut().filter(|run| run.pid == pid) {
                    if run.end_ns.is_none() && run.died_ns.is_none() {
                        run.died_ns = Some(at);
                    }
                }
            }
            _ => {}
        }
    }
    runs
}

/// A run's end for the analysis: its `end` line, else the moment the test killed
/// its worker (the step died with it), else when it was seen dead, else never.
fn end_of(run: &Run, killed: &BTreeMap<u32, i64>) -> i64 {
    match (run.end_ns, killed.get(&run.worker), run.died_ns) {
        (Some(end), _, _) => end,
        (None, Some(&killed_at), _) if killed_at >= run.start_ns => killed_at,
        (None, _, Some(died)) => died,
        _ => i64::MAX,
    }
}

/// What a fleet run did, from the history and the API's view of the deployments.
#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    pub(crate) deployments: usize,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
    /// Deployments not terminal when the test stopped waiting.
    pub(crate) lost: usize,
    /// Tasks planned, over every deployment.
    pub(crate) tasks: usize,
    /// Steps started (`start` lines).
    pub(crate) runs: usize,
    /// Tasks with more than one `start`.
    pub(crate) tasks_run_twice: usize,
    /// Tasks the API says succeeded that never started a step.
    pub(crate) tasks_never_run: usize,
    /// Pairs of steps of one component that ran at the same time.
    pub(crate) overlaps: usize,
    /// Steps that started before a task they need had ended.
    pub(crate) order_violations: usize,
    /// Results the workers' logs say were refused as stale.
    pub(crate) stale_rejected: usize,
    pub(crate) seconds: f64,
    /// What went wrong, in words (the first few of each kind).
    pub(crate) problems: Vec<String>,
}

impl Figures {
    /// The figures as `key=value` pairs on one line.
    pub(crate) fn line(&self) -> String {
        format!(
            "deployments={} succeeded={} failed={} lost={} tasks={} runs={} tasks_run_twice={} tasks_never_run={} overlaps={} order_violations={} stale_rejected={} seconds={:.1}",
            self.deployments,
            self.succeeded,
            self.failed,
            self.lost,
            self.tasks,
            self.runs,
            self.tasks_run_twice,
            self.tasks_never_run,
            self.overlaps,
            self.order_violations,
            self.stale_rejected,
            self.seconds
        )
    }

    /// The problems, one per line, for assertion messages.
    pub(crate) fn problems(&self) -> String {
        self.problems.join("\n")
    }
}

/// The most problems of one kind described in words.
const MAX_DESCRIBED: usize = 10;

/// Computes the figures.
pub(crate) fn analyse(
    runs: &[Run],
    submissions: &[Submission],
    outcomes: &[Outcome],
    killed: &BTreeMap<u32, i64>,
    stale_rejected: usize,
    seconds: f64,
) -> Figures {
    let mut figures = Figures {
        deployments: submissions.len(),
        tasks: submissions.iter().map(|s| s.tasks.len()).sum(),
        runs: runs.len(),
        stale_rejected,
        seconds,
        ..Figures::default()
    };
    for outcome in outcomes {
        match outcome.state.as_deref() {
            Some("succeeded") => figures.succeeded += 1,
            Some(state) if outcome.is_terminal() => {
                figures.failed += 1;
                if figures.failed <= MAX_DESCRIBED {
                    figures.problems.push(format!(
                        "deployment {} ended {state}: tasks {:?}",
                        outcome.id, outcome.tasks
                    ));
                }
            }
            state => {
                figures.lost += 1;
                if figures.lost <= MAX_DESCRIBED {
                    figures.problems.push(format!(
                        "deployment {} lost (state {state:?}): tasks {:?}",
                        outcome.id, outcome.tasks
                    ));
                }
            }
        }
    }

    // Runs by task.
    let mut by_task: BTreeMap<(&str, &str), Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_task
            .entry((run.deployment.as_str(), run.task.as_str()))
            .or_default()
            .push(run);
    }
    for ((deployment, task), task_runs) in &by_task {
        if task_runs.len() > 1 {
            figures.tasks_run_twice += 1;
            if figures.tasks_run_twice <= MAX_DESCRIBED {
                figures.problems.push(format!(
                    "task {deployment} {task} ran {} times: {}",
                    task_runs.len(),
                    task_runs
                        .iter()
                        .map(|run| run.describe())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }
    for outcome in outcomes {
        for (task, (state, _)) in &outcome.tasks {
            if state == "succeeded" && !by_task.contains_key(&(outcome.id.as_str(), task.as_str()))
            {
                figures.tasks_never_run += 1;
                if figures.tasks_never_run <= MAX_DESCRIBED {
                    figures.problems.push(format!(
                        "task {} {task} succeeded without a step",
                        outcome.id
                    ));
                }
            }
        }
    }

    // Overlaps, per component.
    let mut by_key: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_key.entry(run.key.as_str()).or_default().push(run);
    }
    for key_runs in by_key.values_mut() {
        key_runs.sort_by_key(|run| run.start_ns);
        let mut latest: Option<&Run> = None;
        for run in key_runs.iter() {
            if let Some(previous) = latest
                && run.start_ns < end_of(previous, killed)
            {
                figures.overlaps += 1;
                if figures.overlaps <= MAX_DESCRIBED {
                    figures.problems.push(format!(
                        "overlap on {}: {} and {}",
                        run.key,
                        previous.describe(),
                        run.describe()
                    ));
                }
            }
            if latest.is_none_or(|previous| end_of(run, killed) > end_of(previous, killed)) {
                latest = Some(run);
            }
        }
    }

    // Dependency order: every step starts after every run of each task it needs ended.
    for submission in submissions {
        for task in &submission.tasks {
            let Some(task_runs) = by_task.get(&(submission.id.as_str(), task.id.as_str())) else {
                continue;
            };
            for run in task_runs {
                for need in &task.needs {
                    let need_end = by_task
                        .get(&(submission.id.as_str(), need.as_str()))
                        .and_then(|need_runs| {
                            need_runs
                                .iter()
                                .map(|need_run| end_of(need_run, killed))
                                .max()
                        });
                    let violated = match need_end {
                        None => true,
                        Some(end) => run.start_ns < end,
                    };
                    if violated {
                        figures.order_violations += 1;
                        if figures.order_violations <= MAX_DESCRIBED {
                            figures.problems.push(format!(
                                "{} started before its need {need} ended (need ended at {need_end:?})",
                                run.describe()
                            ));
                        }
                    }
                }
            }
        }
    }
    figures
}

/// The most steps of the given keys' owners that ran at once: `owner(run)` groups
/// runs (e.g. by tenant); returns the peak per group.
pub(crate) fn peak_concurrency(
    runs: &[Run],
    killed: &BTreeMap<u32, i64>,
    owner: impl Fn(&Run) -> String,
) -> BTreeMap<String, usize> {
    let mut events: BTreeMap<String, Vec<(i64, i32)>> = BTreeMap::new();
    for run in runs {
        let group = events.entry(owner(run)).or_default();
        group.push((run.start_ns, 1));
        group.push((end_of(run, killed), -1));
    }
    events
        .into_iter()
        .map(|(group, mut events)| {
            // Ends before starts at the same instant.
            events.sort();
            let (mut now, mut peak) = (0i32, 0i32);
            for (_, delta) in events {
                now += delta;
                peak = peak.max(now);
            }
            (group, usize::try_from(peak).unwrap_or(0))
        })
        .collect()
}
