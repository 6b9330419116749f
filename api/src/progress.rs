//! A deployment's progress as events (`GET /v1/deployments/{id}/events`): each
//! task's steps through its life (`ready`, `running` with its attempt, its end),
//! then the deployment's end. The events are derived from the deployment as the
//! store has it, and each event's id says what the follower has seen so far
//! ([`Seen`]): a client that reconnects with `Last-Event-ID` is sent what it has
//! not seen, and nothing it has.
//!
//! A task's life is a path of milestones: `ready` (attempt 0), then for each
//! attempt `k` `running` (k), and between attempts `ready` (k) again (a transient
//! failure), then its end. Milestones passed between two reads of the store are
//! sent too, in order, so that a follower misses no step of that path.

use serde::{Deserialize, Serialize};
use shared::model::{DeploymentState, TaskState};
use shared::store::Deployment;

/// What a follower has seen of a deployment: each task's last milestone (state and
/// attempt), in plan order, and whether it saw the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    tasks: Vec<(TaskState, u32)>,
    ended: bool,
}

/// One event of a deployment's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A task reached a milestone.
    Task {
        task: String,
        state: TaskState,
        attempt: u32,
    },
    /// The deployment ended: the last event of the stream.
    End {
        state: DeploymentState,
        release: Option<u32>,
    },
}

impl Progress {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Progress::Task { .. } => "task",
            Progress::End { .. } => "end",
        }
    }
}

const fn code(state: TaskState) -> char {
    match state {
        TaskState::Blocked => 'b',
        TaskState::Ready => 'r',
        TaskState::Running => 'R',
        TaskState::Succeeded => 's',
        TaskState::Failed => 'f',
        TaskState::Cancelled => 'c',
        TaskState::Skipped => 'k',
    }
}

fn state_of(code: char) -> Option<TaskState> {
    TaskState::ALL
        .iter()
        .copied()
        .find(|state| self::code(*state) == code)
}

/// Where a milestone falls on a task's path: later milestones have larger keys.
fn key((state, attempt): (TaskState, u32)) -> u64 {
    let attempt = u64::from(attempt);
    match state {
        TaskState::Blocked => 0,
        TaskState::Running => 2 * attempt,
        _ => 2 * attempt + 1,
    }
}

/// The milestones of a task's path up to `(state, attempts)`, in order.
fn path(state: TaskState, attempts: u32) -> Vec<(TaskState, u32)> {
    if state == TaskState::Blocked {
        return Vec::new();
    }
    // Skipped or cancelled before it ever ran: it may never have been ready.
    if state.is_terminal() && attempts == 0 && state != TaskState::Failed {
        return vec![(state, 0)];
    }
    let mut path = vec![(TaskState::Ready, 0)];
    for attempt in 1..=attempts {
        path.push((TaskState::Running, attempt));
        if attempt < attempts {
            path.push((TaskState::Ready, attempt));
        }
    }
    if state != TaskState::Running && path.last() != Some(&(state, attempts)) {
        path.push((state, attempts));
    }
    path
}

impl Seen {
    /// Nothing seen of a deployment of `n_tasks` tasks.
    pub fn nothing(n_tasks: usize) -> Seen {
        Seen {
            tasks: vec![(TaskState::Blocked, 0); n_tasks],
            ended: false,
        }
    }

    /// What an event id says was seen of a deployment of `n_tasks` tasks; `None`
    /// when it is not an id of this deployment's events.
    pub fn parse(id: &str, n_tasks: usize) -> Option<Seen> {
        let (tasks, ended) = match id.strip_suffix('~') {
            Some(tasks) => (tasks, true),
            None => (id, false),
        };
        let tasks: Vec<(TaskState, u32)> = if tasks.is_empty() {
            Vec::new()
        } else {
            tasks
                .split('.')
                .map(|task| {
                    let mut chars = task.chars();
                    let state = state_of(chars.next()?)?;
                    Some((state, chars.as_str().parse().ok()?))
                })
                .collect::<Option<_>>()?
        };
        (tasks.len() == n_tasks).then_some(Seen { tasks, ended })
    }

    /// The event id that says this was seen.
    pub fn id(&self) -> String {
        let tasks: Vec<String> = self
            .tasks
            .iter()
            .map(|(state, attempt)| format!("{}{attempt}", code(*state)))
            .collect();
        let mut id = tasks.join(".");
        if self.ended {
            id.push('~');
        }
        id
    }

    /// Whether the follower saw the deployment's end.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The events of `deployment` not seen yet, each with the id that says it was
    /// seen, in order; updates what was seen.
    pub fn catch_up(&mut self, deployment: &Deployment) -> Vec<(Progress, String)> {
        let mut events = Vec::new();
        for (index, task) in deployment.tasks.iter().enumerate() {
            let Some(seen) = self.tasks.get(index).copied() else {
                break;
            };
            let now = (task.state, task.attempts);
            if now == seen {
                continue;
            }
            let mut steps: Vec<(TaskState, u32)> = path(task.state, task.attempts)
                .into_iter()
                .filter(|step| key(*step) > key(seen))
                .collect();
            if steps.last() != Some(&now) {
                steps.push(now);
            }
            for (state, attempt) in steps {
                self.tasks[index] = (state, attempt);
                events.push((
                    Progress::Task {
                        task: task.id.to_string(),
                        state,
                        attempt,
                    },
                    self.id(),
                ));
            }
        }
        if deployment.state.is_terminal() && !self.ended {
            self.ended = true;
            events.push((
                Progress::End {
                    state: deployment.state,
                    release: deployment.release,
                },
                self.id(),
            ));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_path_has_every_milestone_in_order() {
        use TaskState::*;
        assert_eq!(path(Blocked, 0), []);
        assert_eq!(path(Ready, 0), [(Ready, 0)]);
        assert_eq!(path(Running, 1), [(Ready, 0), (Running, 1)]);
        assert_eq!(
            path(Succeeded, 1),
            [(Ready, 0), (Running, 1), (Succeeded, 1)]
        );
        assert_eq!(
            path(Failed, 2),
            [
                (Ready, 0),
                (Running, 1),
                (Ready, 1),
                (Running, 2),
                (Failed, 2)
            ]
        );
        assert_eq!(path(Ready, 1), [(Ready, 0), (Running, 1), (Ready, 1)]);
        assert_eq!(path(Skipped, 0), [(Skipped, 0)]);
        assert_eq!(
            path(Cancelled, 1),
            [(Ready, 0), (Running, 1), (Cancelled, 1)]
        );
        for (state, attempts) in [(Failed, 2), (Succeeded, 3), (Ready, 2)] {
            let keys: Vec<u64> = path(state, attempts).into_iter().map(key).collect();
            assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
        }
    }

    #[test]
    fn ids_round_trip_and_belong_to_one_deployment() {
        let seen = Seen {
            tasks: vec![
                (TaskState::Succeeded, 1),
                (TaskState::Running, 12),
                (TaskState::Blocked, 0),
            ],
            ended: false,
        };
        assert_eq!(seen.id(), "s1.R12.b0");
        assert_eq!(Seen::parse(&seen.id(), 3), Some(seen.clone()));
        let ended = Seen {
            ended: true,
            ..seen
        };
        assert_eq!(Seen::parse(&ended.id(), 3), Some(ended));
        for (id, n_tasks) in [("s1.R12.b0", 2), ("x1", 1), ("s", 1), ("s1.", 2), ("", 1)] {
            assert_eq!(Seen::parse(id, n_tasks), None, "{id}");
        }
        assert_eq!(Seen::parse("", 0), Some(Seen::nothing(0)));
    }
}
