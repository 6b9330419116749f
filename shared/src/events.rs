//! Progress events: what workers tell the world as tasks start and finish. They fan
//! out to every subscriber (the CLI's progress display, later the API's SSE stream)
//! and are best effort: the store stays the truth.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeploymentId, TaskId, TenantId};
use crate::model::{DeploymentState, TaskState};

/// The name of [`Event::CancelRequested`].
pub const CANCEL_REQUESTED: &str = "cancel_requested";

/// Something that happened to a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A worker claimed a task and started its step.
    TaskStarted {
        tenant: TenantId,
        deployment: DeploymentId,
        task: TaskId,
        attempt: u32,
        worker: String,
    },
    /// A task reached `succeeded` or `failed`.
    TaskFinished {
        tenant: TenantId,
        deployment: DeploymentId,
        task: TaskId,
        attempt: u32,
        state: TaskState,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A task's step failed transiently; it runs again as `next_attempt` at `at`.
    TaskRetrying {
        tenant: TenantId,
        deployment: DeploymentId,
        task: TaskId,
        attempt: u32,
        next_attempt: u32,
        at: DateTime<Utc>,
        error: String,
    },
    /// A task will not run because a task it needs failed.
    TaskSkipped {
        tenant: TenantId,
        deployment: DeploymentId,
        task: TaskId,
    },
    /// The deployment's cancellation was asked while some of its steps run: the
    /// workers running them stop them at once. (A worker that misses it learns the
    /// same from its next lease extension, within a second.)
    CancelRequested {
        tenant: TenantId,
        deployment: DeploymentId,
    },
    /// The deployment reached a terminal state.
    DeploymentFinished {
        tenant: TenantId,
        deployment: DeploymentId,
        state: DeploymentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<u32>,
    },
}

impl Event {
    /// The event's name, as its JSON's `event` field says it.
    pub fn name(&self) -> &'static str {
        match self {
            Event::TaskStarted { .. } => "task_started",
            Event::TaskFinished { .. } => "task_finished",
            Event::TaskRetrying { .. } => "task_retrying",
            Event::TaskSkipped { .. } => "task_skipped",
            Event::CancelRequested { .. } => CANCEL_REQUESTED,
            Event::DeploymentFinished { .. } => "deployment_finished",
        }
    }

    /// The deployment the event is about.
    pub fn deployment(&self) -> DeploymentId {
        match self {
            Event::TaskStarted { deployment, .. }
            | Event::TaskFinished { deployment, .. }
            | Event::TaskRetrying { deployment, .. }
            | Event::TaskSkipped { deployment, .. }
            | Event::CancelRequested { deployment, .. }
            | Event::DeploymentFinished { deployment, .. } => *deployment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` is the `event` field each variant is serialized with (AMQP routing keys
    /// and bindings are made of it).
    #[test]
    fn names_are_the_serialized_event_fields() {
        let tenant = TenantId::generate();
        let deployment = DeploymentId::generate();
        let task: TaskId = "deploy:web".parse().expect("a task id");
        let events = [
            Event::TaskStarted {
                tenant,
                deployment,
                task: task.clone(),
                attempt: 1,
                worker: "w".to_owned(),
            },
            Event::TaskFinished {
                tenant,
                deployment,
                task: task.clone(),
                attempt: 1,
                state: TaskState::Succeeded,
                duration_ms: 1,
                error: None,
            },
            Event::TaskRetrying {
                tenant,
                deployment,
                task: task.clone(),
                attempt: 1,
                next_attempt: 2,
                at: Utc::now(),
                error: "e".to_owned(),
            },
            Event::TaskSkipped {
                tenant,
                deployment,
                task,
            },
            Event::CancelRequested { tenant, deployment },
            Event::DeploymentFinished {
                tenant,
                deployment,
                state: DeploymentState::Succeeded,
                release: None,
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).expect("an event serializes");
            assert_eq!(json["event"], event.name(), "{json}");
        }
    }
}
