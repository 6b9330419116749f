//! The planner: compares a manifest with what an app runs and gives the plan,
//! a DAG of build, deploy and delete tasks (DESIGN.md sections 4 and 5.4).
//!
//! It is pure: no IO, no clock, no randomness. The same manifest, current state and
//! options always give the same plan, because every collection it walks is ordered.
//!
//! Planning happens in three steps:
//! 1. every component gets an [`Action`] (`create`, `update`, `replace`, `unchanged`,
//!    and with prune `delete`) from its spec and the spec it was deployed with;
//! 2. the actions become tasks: `build:X` for a component with its own build that
//!    gets a new artifact, `deploy:X` for every component that changes, `delete:X`
//!    for every pruned one, each with the direct edges it needs;
//! 3. the tasks are layered by longest path into stages and listed stage by stage.
//!
//! Everything is ordered the same way: by stage, then by kind (build, deploy, delete),
//! then by component name. A task's `needs` follow that order too (builds first, then
//! deploys, each by component name).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use shared::ids::TaskId;
use shared::manifest::{Component, Manifest};
use shared::model::{Action, TaskKind};
use shared::names::{AppName, ComponentName};
use shared::plan::{Plan, PlannedTask};
use shared::release::{Components, Observed, Release, manifest_of};

/// How to plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions<'a> {
    /// Delete the components that are in the current state but not in the manifest
    /// (`--prune`). Without it they are left alone and not mentioned in the plan.
    pub prune: bool,
    /// What the driver's status step reports running: a component whose running
    /// state drifted from what the store records running is updated even if its spec did not
    /// change (DESIGN.md 5.4).
    pub observed: Option<&'a Observed>,
    /// Deploy these components only (`--component`): the others are left as they
    /// run, whatever the manifest says; a build runs only for
    /// the artifact a selected component gets.
    pub only: Option<&'a BTreeSet<ComponentName>>,
}

/// Plans the deployment of `manifest` over `current`, what the app runs now
/// (`None` for an app never deployed).
///
/// Pure: the same manifest and current state always give the same plan.
///
/// A component's action is:
/// - `create` when it is not in `current`;
/// - `replace` when it gets a new artifact — its own build input (repository, ref,
///   image, build id) changed, or, for a `reuse-from` component, the name it reuses
///   from changed or the component it reuses from gets a new artifact (hop by hop, so
///   whenever its artifact source is built in this plan) — or when its type changed;
/// - `update` when only its run spec (command, env, replicas, port, schedule) changed;
/// - `unchanged` otherwise: changes to `description`, `wait-for` or `on-update` alone
///   make no task;
/// - `delete`, with `options.prune`, for a component of `current` that the manifest
///   no longer has.
///
/// `manifest` must be valid (as [`Manifest::parse`] makes it). Should a hand-built
/// manifest have a `wait-for` cycle, the tasks on it and those that need them are put
/// in one last stage so that none is lost, although their needs can never all be met;
/// a `reuse-from` cycle builds nothing.
pub fn plan(
    app: &AppName,
    manifest: &Manifest,
    current: Option<&Components>,
    options: &PlanOptions<'_>,
) -> Plan {
    let mut actions = component_actions(manifest, current, options);
    let drift = drift(current, options.observed, &mut actions);
    let mut builds = new_builds(manifest, &actions);
    if let Some(only) = options.only {
        // The builds the selected components' new artifacts come from.
        builds = only
            .iter()
            .filter(|name| matches!(actions.get(*name), Some(Action::Create | Action::Replace)))
            .map(|name| manifest.artifact_source(name).clone())
            .filter(|source| builds.contains(source))
            .collect();
        for (name, action) in &mut actions {
            if !only.contains(name) {
                *action = Action::Unchanged;
            }
        }
    }
    let nodes = task_nodes(manifest, &actions, &builds);
    let (tasks, stages) = layer(nodes);
    Plan {
        app: app.clone(),
        actions,
        tasks,
        stages,
        drift,
    }
}

/// The components left `unchanged` whose running state drifted from what the store
/// records running, with the fields that differ; their action becomes `update`.
fn drift(
    deployed: Option<&Components>,
    observed: Option<&Observed>,
    actions: &mut BTreeMap<ComponentName, Action>,
) -> BTreeMap<ComponentName, Vec<String>> {
    let (Some(deployed), Some(observed)) = (deployed, observed) else {
        return BTreeMap::new();
    };
    let mut drift = BTreeMap::new();
    for (name, action) in actions.iter_mut() {
        if *action != Action::Unchanged {
            continue;
        }
        let (Some(released), Some(running)) = (deployed.get(name), observed.get(name)) else {
            continue;
        };
        let fields = running.drift_from(released);
        if !fields.is_empty() {
            *action = Action::Update;
            drift.insert(name.clone(), fields);
        }
    }
    drift
}

/// Plans going back to release `target` over `current`, what the app runs now:
/// every component of `target` is deployed with the artifact `target` holds for it
/// (no task builds anything), in `wait-for` order; a component `current` has and
/// `target` has not is deleted. Returns the manifest the deployment records (the
/// target's specs) with the plan.
///
/// A component's action says what the rollback does to it: `create` when it is not
/// deployed now, `replace` when it runs another artifact or type now, `update`
/// otherwise (its spec is deployed again as the target holds it), `delete` when
/// the target does not have it.
pub fn rollback(app: &AppName, target: &Release, current: Option<&Components>) -> (Manifest, Plan) {
    let manifest = target.manifest();
    let mut actions = BTreeMap::new();
    for (name, released) in &target.components {
        let action = match current.and_then(|current| current.get(name)) {
            None => Action::Create,
            Some(now)
                if now.artifact != released.artifact || now.spec.kind != released.spec.kind =>
            {
                Action::Replace
            }
            Some(_) => Action::Update,
        };
        actions.insert(name.clone(), action);
    }
    for name in current.into_iter().flat_map(BTreeMap::keys) {
        if !target.components.contains_key(name) {
            actions.insert(name.clone(), Action::Delete);
        }
    }
    let no_builds = BTreeSet::new();
    let nodes = task_nodes(&manifest, &actions, &no_builds);
    let (tasks, stages) = layer(nodes);
    let plan = Plan {
        app: app.clone(),
        actions,
        tasks,
        stages,
        drift: BTreeMap::new(),
    };
    (manifest, plan)
}

/// Plans deploying an external update of `component` (DESIGN.md 5.5): its deploy
/// alone, with the announced artifact, waiting for nothing; every other component
/// of `current` (what the app runs) is unchanged.
pub fn external_update(app: &AppName, current: &Components, component: &ComponentName) -> Plan {
    let manifest = manifest_of(current);
    let actions: BTreeMap<ComponentName, Action> = current
        .keys()
        .map(|name| {
            let action = if name == component {
                Action::Replace
            } else {
                Action::Unchanged
            };
            (name.clone(), action)
        })
        .collect();
    let no_builds = BTreeSet::new();
    let nodes = task_nodes(&manifest, &actions, &no_builds);
    let (tasks, stages) = layer(nodes);
    Plan {
        app: app.clone(),
        actions,
        tasks,
        stages,
        drift: BTreeMap::new(),
    }
}

/// The components that build: those created or replaced that have a build of
/// their own.
fn new_builds(
    manifest: &Manifest,
    actions: &BTreeMap<ComponentName, Action>,
) -> BTreeSet<ComponentName> {
    actions
        .iter()
        .filter(|(_, action)| matches!(action, Action::Create | Action::Replace))
        .map(|(name, _)| name)
        .filter(|name| {
            manifest
                .components
                .get(*name)
                .is_some_and(|component| component.build_input().is_some())
        })
        .cloned()
        .collect()
}

/// Gives every component of the manifest (and, with prune, every component of the
/// current state the manifest no longer has) its action.
fn component_actions(
    manifest: &Manifest,
    deployed: Option<&Components>,
    options: &PlanOptions<'_>,
) -> BTreeMap<ComponentName, Action> {
    let mut actions = BTreeMap::new();
    for (name, component) in &manifest.components {
        let action = match deployed_spec(deployed, name) {
            None => Action::Create,
            Some(before) => {
                if before.kind != component.kind || gets_new_artifact(manifest, deployed, name) {
                    Action::Replace
                } else if before.run != component.run {
                    Action::Update
                } else {
                    Action::Unchanged
                }
            }
        };
        actions.insert(name.clone(), action);
    }
    if options.prune {
        for name in deployed.into_iter().flat_map(BTreeMap::keys) {
            if !manifest.components.contains_key(name) {
                actions.insert(name.clone(), Action::Delete);
            }
        }
    }
    actions
}

/// The spec `name` was deployed with, if it is deployed.
fn deployed_spec<'a>(
    deployed: Option<&'a Components>,
    name: &ComponentName,
) -> Option<&'a Component> {
    deployed?.get(name).map(|released| &released.spec)
}

/// Whether `name`, which is deployed, would get another artifact than the one it runs.
///
/// A component with its own build does when its build input or its type changed (both
/// mean its build runs again). A `reuse-from` component does when the name it reuses
/// from changed, or when the component it reuses from is new or itself gets a new
/// artifact: the chain is followed hop by hop to the component that builds, so a
/// change anywhere along it (not only at its artifact source) is seen.
fn gets_new_artifact(
    manifest: &Manifest,
    deployed: Option<&Components>,
    name: &ComponentName,
) -> bool {
    let mut hop = name;
    // Validation guarantees the chain ends; the hop count is bounded anyway (as in
    // `Manifest::artifact_source`) so that a hand-built cycle cannot loop forever.
    for _ in 0..=manifest.components.len() {
        let Some(component) = manifest.components.get(hop) else {
            return false;
        };
        let Some(before) = deployed_spec(deployed, hop) else {
            return true;
        };
        match component.reuse_from() {
            None => {
                return component.build_input() != before.build_input()
                    || component.kind != before.kind;
            }
            Some(source) if before.reuse_from() != Some(source) => return true,
            Some(source) => hop = source,
        }
    }
    false
}

/// Names a task by its kind and component. Keys order like tasks do within a
/// stage, and like needs do: by kind (build, deploy, delete), then by component.
type Key<'a> = (TaskKind, &'a ComponentName);

/// A task before layering: what it is and what it needs.
#[derive(Debug)]
struct Node<'a> {
    key: Key<'a>,
    /// Sorted and without duplicates.
    needs: Vec<Key<'a>>,
}

/// Turns the actions into tasks with their direct needs, in key order.
fn task_nodes<'a>(
    manifest: &'a Manifest,
    actions: &'a BTreeMap<ComponentName, Action>,
    builds: &'a BTreeSet<ComponentName>,
) -> Vec<Node<'a>> {
    let with_action = |wanted: &[Action]| -> BTreeSet<&'a ComponentName> {
        actions
            .iter()
            .filter(|(_, action)| wanted.contains(action))
            .map(|(name, _)| name)
            .collect()
    };
    let builds: BTreeSet<&ComponentName> = builds.iter().collect();
    let deploys = with_action(&[Action::Create, Action::Update, Action::Replace]);
    let deletes = with_action(&[Action::Delete]);

    let mut nodes = Vec::with_capacity(builds.len() + deploys.len() + deletes.len());
    for &name in &builds {
        nodes.push(Node {
            key: (TaskKind::Build, name),
            needs: Vec::new(),
        });
    }
    for &name in &deploys {
        let mut needs = Vec::new();
        let source = manifest.artifact_source(name);
        if builds.contains(source) {
            needs.push((TaskKind::Build, source));
        }
        // An unchanged component satisfies `wait-for` at once, so only the deploys
        // of this plan are waited for.
        let wait_for = manifest
            .components
            .get(name)
            .map(|component| component.wait_for.as_slice())
            .unwrap_or_default();
        for waited in wait_for {
            if let Some(&waited) = deploys.get(waited) {
                needs.push((TaskKind::Deploy, waited));
            }
        }
        needs.sort();
        needs.dedup();
        nodes.push(Node {
            key: (TaskKind::Deploy, name),
            needs,
        });
    }
    // Nothing is removed before the new state is up: a delete needs every deploy.
    let every_deploy: Vec<Key<'a>> = deploys
        .iter()
        .map(|&name| (TaskKind::Deploy, name))
        .collect();
    for &name in &deletes {
        nodes.push(Node {
            key: (TaskKind::Delete, name),
            needs: every_deploy.clone(),
        });
    }
    nodes
}

/// Layers the tasks by longest path (a task's stage is one more than the largest
/// stage of its needs, 0 without needs) and lists them by stage, then by key.
fn layer(nodes: Vec<Node<'_>>) -> (Vec<PlannedTask>, Vec<Vec<TaskId>>) {
    let index: BTreeMap<Key<'_>, usize> = nodes
        .iter()
        .enumerate()
        .map(|(node_idx, node)| (node.key, node_idx))
        .collect();
    let mut dependents = vec![Vec::new(); nodes.len()];
    let mut n_unmet = vec![0_usize; nodes.len()];
    for (node_idx, node) in nodes.iter().enumerate() {
        for need in &node.needs {
            if let Some(&need_idx) = index.get(need) {
                dependents[need_idx].push(node_idx);
                n_unmet[node_idx] += 1;
            }
        }
    }

    // Kahn's algorithm: a task is taken once all its needs are, so its stage is final.
    let mut stage_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut longest = vec![0_usize; nodes.len()];
    let mut ready: VecDeque<usize> = (0..nodes.len())
        .filter(|&node_idx| n_unmet[node_idx] == 0)
        .collect();
    while let Some(node_idx) = ready.pop_front() {
        stage_of[node_idx] = Some(longest[node_idx]);
        for &dependent in &dependents[node_idx] {
            longest[dependent] = longest[dependent].max(longest[node_idx] + 1);
            n_unmet[dependent] -= 1;
            if n_unmet[dependent] == 0 {
                ready.push_back(dependent);
            }
        }
    }
    // Only a `wait-for` cycle (which validation refuses) leaves tasks untaken.
    let n_stages = stage_of
        .iter()
        .flatten()
        .map(|&stage| stage + 1)
        .max()
        .unwrap_or(0);

    let mut staged: Vec<(usize, Node<'_>)> = nodes
        .into_iter()
        .zip(stage_of)
        .map(|(node, stage)| (stage.unwrap_or(n_stages), node))
        .collect();
    staged.sort_by(|(a_stage, a), (b_stage, b)| (a_stage, a.key).cmp(&(b_stage, b.key)));

    let mut tasks = Vec::with_capacity(staged.len());
    let mut stages: Vec<Vec<TaskId>> = Vec::new();
    for (stage, node) in staged {
        let (kind, component) = node.key;
        let id = TaskId::new(kind, component);
        if stages.len() <= stage {
            stages.resize_with(stage + 1, Vec::new);
        }
        stages[stage].push(id.clone());
        tasks.push(PlannedTask {
            id,
            kind,
            component: component.clone(),
            needs: node
                .needs
                .iter()
                .map(|&(kind, component)| TaskId::new(kind, component))
                .collect(),
        });
    }
    (tasks, stages)
}

#[cfg(test)]
mod tests;
