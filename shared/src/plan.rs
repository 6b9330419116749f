//! The plan: what a deployment will do, as a DAG of tasks (DESIGN.md section 4).
//!
//! Its JSON form is a stable contract that tools and tests rely on: fields may be
//! added, never renamed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::manifest::Manifest;
use crate::model::{Action, TaskKind};
use crate::names::{AppName, ComponentName};

/// The diff of a manifest against an app's current state, as tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub app: AppName,
    /// What happens to every component of the manifest (and, with prune, of the current state).
    pub actions: BTreeMap<ComponentName, Action>,
    /// Every task, each after all the tasks it needs.
    pub tasks: Vec<PlannedTask>,
    /// The longest-path layering of `tasks`: stage `n` holds the tasks whose longest
    /// chain of needs has `n` links. Tasks of one stage may run in parallel.
    pub stages: Vec<Vec<TaskId>>,
    /// Components whose running state (as the driver's status step reports it)
    /// drifted from what the store records running, with the fields that differ (`artifact`,
    /// `command`, `env`, `replicas`, `port`, `schedule`); they are planned as
    /// `update`. Absent when nothing drifted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<ComponentName, Vec<String>>,
}

/// One task of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    pub id: TaskId,
    pub kind: TaskKind,
    pub component: ComponentName,
    /// The tasks that must succeed before this one may start.
    pub needs: Vec<TaskId>,
}

impl Plan {
    /// Whether the plan does nothing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn task(&self, id: &TaskId) -> Option<&PlannedTask> {
        self.tasks.iter().find(|task| &task.id == id)
    }

    /// The task whose artifact `component`'s deploy gets: `build:S`, where `S` is the
    /// component's artifact source ([`Manifest::artifact_source`]), when that build is
    /// in this plan; `None` when the deploy uses the artifact already deployed.
    pub fn artifact_task(&self, manifest: &Manifest, component: &ComponentName) -> Option<TaskId> {
        let build = TaskId::new(TaskKind::Build, manifest.artifact_source(component));
        self.task(&build).map(|task| task.id.clone())
    }
}
