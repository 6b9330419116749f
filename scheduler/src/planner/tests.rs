//! The planner's tests: data-driven cases on the toolhunt example, and properties
//! over random valid manifests.

use shared::manifest::{Build, ComponentType, Run};

use shared::release::{ObservedComponent, ReleasedComponent};

use super::*;

// ---- building manifests and releases by hand ----

fn name(text: &str) -> ComponentName {
    ComponentName::new(text).expect("a valid component name")
}

fn app() -> AppName {
    AppName::new("toolhunt").expect("a valid app name")
}

fn repository(url: &str, git_ref: Option<&str>) -> Build {
    Build::Repository {
        repository: url.to_owned(),
        git_ref: git_ref.map(str::to_owned),
    }
}

fn image(reference: &str) -> Build {
    Build::Image {
        image: reference.to_owned(),
    }
}

fn reuse(from: &str) -> Build {
    Build::ReuseFrom {
        reuse_from: name(from),
    }
}

fn command(text: &str) -> Run {
    Run {
        command: Some(text.to_owned()),
        ..Run::default()
    }
}

/// A component with nothing but a type, a build and a run spec.
fn component(kind: ComponentType, build: Build, run: Run) -> Component {
    Component {
        description: None,
        kind,
        build,
        build_id: None,
        run,
        wait_for: Vec::new(),
        on_update: None,
    }
}

fn manifest(components: Vec<(&str, Component)>) -> Manifest {
    Manifest {
        config_version: "0.1".to_owned(),
        components: components
            .into_iter()
            .map(|(text, component)| (name(text), component))
            .collect(),
    }
}

/// examples/toolhunt/toolhunt.yaml, written out by hand.
fn toolhunt() -> Manifest {
    manifest(vec![
        (
            "toolhunt-api",
            Component {
                description: Some("a python-flask api".to_owned()),
                build_id: Some("v3".to_owned()),
                wait_for: vec![name("toolhunt-migratedb")],
                ..component(
                    ComponentType::Continuous,
                    repository("https://github.com/wikimedia/toolhunt", Some("main")),
                    Run {
                        replicas: Some(2),
                        port: Some(8000),
                        env: [("LOG_LEVEL".to_owned(), "info".to_owned())].into(),
                        ..command("gunicorn app:app")
                    },
                )
            },
        ),
        (
            "toolhunt-migratedb",
            Component {
                description: Some("applies the database migrations".to_owned()),
                ..component(
                    ComponentType::OneOff,
                    reuse("toolhunt-api"),
                    command("migratedb"),
                )
            },
        ),
        (
            "toolhunt-cleanup",
            Component {
                description: Some("hourly removal of stale sessions".to_owned()),
                wait_for: vec![name("toolhunt-api")],
                ..component(
                    ComponentType::Scheduled,
                    image("registry.example/cleanup:1.4"),
                    Run {
                        schedule: Some("00 * * * *".to_owned()),
                        ..command("cleanup")
                    },
                )
            },
        ),
        (
            "toolhunt-flower",
            Component {
                description: Some("the celery flower dashboard".to_owned()),
                wait_for: vec![name("toolhunt-api")],
                ..component(
                    ComponentType::Continuous,
                    reuse("toolhunt-api"),
                    Run {
                        port: Some(5555),
                        ..command("celery flower")
                    },
                )
            },
        ),
    ])
}

/// A copy of `manifest` with one component changed by `change`.
fn edit(manifest: &Manifest, component: &str, change: impl FnOnce(&mut Component)) -> Manifest {
    let mut manifest = manifest.clone();
    change(
        manifest
            .components
            .get_mut(component)
            .expect("the component to edit exists"),
    );
    manifest
}

/// The release that deploying `manifest` whole would have made.
fn release(manifest: &Manifest) -> Release {
    let components = manifest
        .components
        .iter()
        .map(|(name, spec)| {
            let source = &manifest.components[manifest.artifact_source(name)];
            let version = source.version();
            let released = ReleasedComponent {
                spec: spec.clone(),
                artifact: version
                    .as_ref()
                    .map(|version| format!("artifact-{version}")),
                version,
                deployment: None,
            };
            (name.clone(), released)
        })
        .collect();
    Release {
        app: app(),
        version: 1,
        deployment: None,
        created_at: Default::default(),
        components,
    }
}

// ---- data-driven checks ----

/// Renders a plan as text: the actions, then every stage with its tasks and what
/// each needs.
fn render(plan: &Plan) -> String {
    let mut text = String::from("actions\n");
    for (component, action) in &plan.actions {
        text += &format!("  {component}: {action}\n");
    }
    for (stage, ids) in plan.stages.iter().enumerate() {
        text += &format!("stage {stage}\n");
        for id in ids {
            let task = plan.task(id).expect("every staged task is a task");
            text += &format!("  {id}");
            if !task.needs.is_empty() {
                let needs: Vec<&str> = task.needs.iter().map(TaskId::as_str).collect();
                text += &format!(" <- {}", needs.join(", "));
            }
            text += "\n";
        }
    }
    text
}

/// Lines without their indentation, and without blank lines.
fn normalize(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
}

fn check(manifest: &Manifest, current: Option<&Components>, expected: &str) {
    check_with(&PlanOptions::default(), manifest, current, expected);
}

fn check_with(
    options: &PlanOptions<'_>,
    manifest: &Manifest,
    current: Option<&Components>,
    expected: &str,
) {
    let plan = plan(&app(), manifest, current, options);
    let flat: Vec<&TaskId> = plan.stages.iter().flatten().collect();
    let listed: Vec<&TaskId> = plan.tasks.iter().map(|task| &task.id).collect();
    assert_eq!(flat, listed, "tasks are listed stage by stage");
    let actual = render(&plan);
    assert!(
        normalize(&actual) == normalize(expected),
        "plan differs\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

#[test]
fn toolhunt_from_scratch() {
    check(
        &toolhunt(),
        None,
        "
        actions
          toolhunt-api: create
          toolhunt-cleanup: create
          toolhunt-flower: create
          toolhunt-migratedb: create
        stage 0
          build:toolhunt-api
          build:toolhunt-cleanup
        stage 1
          deploy:toolhunt-migratedb <- build:toolhunt-api
        stage 2
          deploy:toolhunt-api <- build:toolhunt-api, deploy:toolhunt-migratedb
        stage 3
          deploy:toolhunt-cleanup <- build:toolhunt-cleanup, deploy:toolhunt-api
          deploy:toolhunt-flower <- build:toolhunt-api, deploy:toolhunt-api
        ",
    );
}

#[test]
fn json_follows_the_design_contract() {
    let plan = plan(&app(), &toolhunt(), None, &PlanOptions::default());
    let json = serde_json::to_value(&plan).expect("a plan serializes");
    let task = |id: &str, kind: &str, component: &str, needs: &[&str]| serde_json::json!({"id": id, "kind": kind, "component": component, "needs": needs});
    let expected = serde_json::json!({
        "app": "toolhunt",
        "actions": {
            "toolhunt-api": "create",
            "toolhunt-cleanup": "create",
            "toolhunt-flower": "create",
            "toolhunt-migratedb": "create",
        },
        "tasks": [
            task("build:toolhunt-api", "build", "toolhunt-api", &[]),
            task("build:toolhunt-cleanup", "build", "toolhunt-cleanup", &[]),
            task("deploy:toolhunt-migratedb", "deploy", "toolhunt-migratedb",
                &["build:toolhunt-api"]),
            task("deploy:toolhunt-api", "deploy", "toolhunt-api",
                &["build:toolhunt-api", "deploy:toolhunt-migratedb"]),
            task("deploy:toolhunt-cleanup", "deploy", "toolhunt-cleanup",
                &["build:toolhunt-cleanup", "deploy:toolhunt-api"]),
            task("deploy:toolhunt-flower", "deploy", "toolhunt-flower",
                &["build:toolhunt-api", "deploy:toolhunt-api"]),
        ],
        "stages": [
            ["build:toolhunt-api", "build:toolhunt-cleanup"],
            ["deploy:toolhunt-migratedb"],
            ["deploy:toolhunt-api"],
            ["deploy:toolhunt-cleanup", "deploy:toolhunt-flower"],
        ],
    });
    assert_eq!(json, expected);
    let back: Plan = serde_json::from_value(json).expect("the plan JSON reads back");
    assert_eq!(back, plan);
}

#[test]
fn unchanged_manifest_plans_nothing() {
    let manifest = toolhunt();
    check(
        &manifest,
        Some(&release(&manifest).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        ",
    );
}

#[test]
fn description_wait_for_and_on_update_alone_plan_nothing() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-api", |api| {
        api.description = Some("the api".to_owned());
        api.wait_for.clear();
        api.on_update = Some(shared::manifest::OnUpdate { deploy: true });
    });
    let plan = plan(
        &app(),
        &after,
        Some(&release(&before).components),
        &PlanOptions::default(),
    );
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn build_id_change_replaces_the_build_and_its_reusers() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-api", |api| {
        api.build_id = Some("v4".to_owned());
    });
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: replace
          toolhunt-cleanup: unchanged
          toolhunt-flower: replace
          toolhunt-migratedb: replace
        stage 0
          build:toolhunt-api
        stage 1
          deploy:toolhunt-migratedb <- build:toolhunt-api
        stage 2
          deploy:toolhunt-api <- build:toolhunt-api, deploy:toolhunt-migratedb
        stage 3
          deploy:toolhunt-flower <- build:toolhunt-api, deploy:toolhunt-api
        ",
    );
}

#[test]
fn build_id_change_replaces_whatever_else_changed() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-api", |api| {
        api.build_id = Some("v4".to_owned());
        api.run.replicas = Some(5);
    });
    let plan = plan(
        &app(),
        &after,
        Some(&release(&before).components),
        &PlanOptions::default(),
    );
    assert_eq!(plan.actions[&name("toolhunt-api")], Action::Replace);
}

#[test]
fn run_spec_change_with_stable_build_id_updates_in_place() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-api", |api| {
        api.run.replicas = Some(3);
        api.run
            .env
            .insert("LOG_LEVEL".to_owned(), "debug".to_owned());
    });
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: update
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        stage 0
          deploy:toolhunt-api
        ",
    );
}

#[test]
fn every_run_field_is_part_of_the_run_spec() {
    let before = toolhunt();
    let changes: [fn(&mut Run); 5] = [
        |run| run.command = Some("gunicorn -w 4 app:app".to_owned()),
        |run| run.env.clear(),
        |run| run.replicas = None,
        |run| run.port = Some(8080),
        |run| run.schedule = Some("*/5 * * * *".to_owned()),
    ];
    for change in changes {
        let after = edit(&before, "toolhunt-api", |api| change(&mut api.run));
        let plan = plan(
            &app(),
            &after,
            Some(&release(&before).components),
            &PlanOptions::default(),
        );
        assert_eq!(plan.actions[&name("toolhunt-api")], Action::Update);
        let ids: Vec<&str> = plan.tasks.iter().map(|task| task.id.as_str()).collect();
        assert_eq!(ids, ["deploy:toolhunt-api"]);
    }
}

#[test]
fn ref_or_repository_change_replaces() {
    let before = toolhunt();
    let new_ref = edit(&before, "toolhunt-api", |api| {
        api.build = repository("https://github.com/wikimedia/toolhunt", Some("v2"));
    });
    let new_repository = edit(&before, "toolhunt-api", |api| {
        api.build = repository("https://gitlab.example/toolhunt", Some("main"));
    });
    let no_ref = edit(&before, "toolhunt-api", |api| {
        api.build = repository("https://github.com/wikimedia/toolhunt", None);
    });
    for after in [new_ref, new_repository, no_ref] {
        check(
            &after,
            Some(&release(&before).components),
            "
            actions
              toolhunt-api: replace
              toolhunt-cleanup: unchanged
              toolhunt-flower: replace
              toolhunt-migratedb: replace
            stage 0
              build:toolhunt-api
            stage 1
              deploy:toolhunt-migratedb <- build:toolhunt-api
            stage 2
              deploy:toolhunt-api <- build:toolhunt-api, deploy:toolhunt-migratedb
            stage 3
              deploy:toolhunt-flower <- build:toolhunt-api, deploy:toolhunt-api
            ",
        );
    }
}

#[test]
fn image_change_replaces_and_waits_for_nothing_unchanged() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-cleanup", |cleanup| {
        cleanup.build = image("registry.example/cleanup:1.5");
    });
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: replace
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        stage 0
          build:toolhunt-cleanup
        stage 1
          deploy:toolhunt-cleanup <- build:toolhunt-cleanup
        ",
    );
}

#[test]
fn type_change_replaces() {
    let before = toolhunt();
    // A component with its own build is built again …
    let cleanup_once = edit(&before, "toolhunt-cleanup", |cleanup| {
        cleanup.kind = ComponentType::OneOff;
        cleanup.run.schedule = None;
    });
    check(
        &cleanup_once,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: replace
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        stage 0
          build:toolhunt-cleanup
        stage 1
          deploy:toolhunt-cleanup <- build:toolhunt-cleanup
        ",
    );
    // … while one that reuses an unchanged build is redeployed with the same artifact.
    let migratedb_service = edit(&before, "toolhunt-migratedb", |migratedb| {
        migratedb.kind = ComponentType::Continuous;
    });
    check(
        &migratedb_service,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: replace
        stage 0
          deploy:toolhunt-migratedb
        ",
    );
}

#[test]
fn wait_for_on_an_unchanged_component_gives_no_edge() {
    let before = toolhunt();
    let cleanup_only = edit(&before, "toolhunt-cleanup", |cleanup| {
        cleanup.run.command = Some("cleanup --all".to_owned());
    });
    check(
        &cleanup_only,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: update
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        stage 0
          deploy:toolhunt-cleanup
        ",
    );
    // When what it waits for changes too, it waits.
    let both = edit(&cleanup_only, "toolhunt-api", |api| {
        api.run.replicas = Some(4)
    });
    check(
        &both,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: update
          toolhunt-cleanup: update
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
        stage 0
          deploy:toolhunt-api
        stage 1
          deploy:toolhunt-cleanup <- deploy:toolhunt-api
        ",
    );
}

#[test]
fn reuser_with_unchanged_source_and_new_run_spec_updates_without_build() {
    let before = toolhunt();
    let after = edit(&before, "toolhunt-migratedb", |migratedb| {
        migratedb.run.command = Some("migratedb --verbose".to_owned());
    });
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: update
        stage 0
          deploy:toolhunt-migratedb
        ",
    );
}

#[test]
fn changed_reuse_source_replaces() {
    let before = toolhunt();
    // flower now reuses migratedb, whose artifact is still the api's: a new name
    // in `reuse-from` is a new source, so flower is replaced (without a build).
    let after = edit(&before, "toolhunt-flower", |flower| {
        flower.build = reuse("toolhunt-migratedb");
    });
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: replace
          toolhunt-migratedb: unchanged
        stage 0
          deploy:toolhunt-flower
        ",
    );
}

#[test]
fn switching_between_own_build_and_reuse_replaces() {
    let before = toolhunt();
    let own_build = edit(&before, "toolhunt-flower", |flower| {
        flower.build = image("registry.example/flower:2");
    });
    check(
        &own_build,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: replace
          toolhunt-migratedb: unchanged
        stage 0
          build:toolhunt-flower
        stage 1
          deploy:toolhunt-flower <- build:toolhunt-flower
        ",
    );
    check(
        &before,
        Some(&release(&own_build).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: replace
          toolhunt-migratedb: unchanged
        stage 0
          deploy:toolhunt-flower
        ",
    );
}

#[test]
fn new_reuse_hop_in_a_chain_replaces_the_components_behind_it() {
    // chart -> report -> api: when report is re-pointed at another built
    // component, chart's artifact changes although its own `reuse-from` did not.
    let chain = |report_source: &str| {
        manifest(vec![
            (
                "api",
                component(ComponentType::Continuous, image("api:1"), command("api")),
            ),
            (
                "other",
                component(ComponentType::Continuous, image("other:1"), command("o")),
            ),
            (
                "report",
                component(ComponentType::OneOff, reuse(report_source), command("r")),
            ),
            (
                "chart",
                component(ComponentType::OneOff, reuse("report"), command("c")),
            ),
        ])
    };
    check(
        &chain("other"),
        Some(&release(&chain("api")).components),
        "
        actions
          api: unchanged
          chart: replace
          other: unchanged
          report: replace
        stage 0
          deploy:chart
          deploy:report
        ",
    );
}

#[test]
fn new_component_is_created_next_to_unchanged_ones() {
    let before = toolhunt();
    let mut after = before.clone();
    after.components.insert(
        name("toolhunt-worker"),
        Component {
            wait_for: vec![name("toolhunt-api")],
            ..component(
                ComponentType::Continuous,
                reuse("toolhunt-api"),
                command("celery worker"),
            )
        },
    );
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: unchanged
          toolhunt-worker: create
        stage 0
          deploy:toolhunt-worker
        ",
    );
}

#[test]
fn prune_deletes_after_every_deploy() {
    let mut before = toolhunt();
    before.components.insert(
        name("toolhunt-legacy"),
        component(
            ComponentType::Continuous,
            image("legacy:1"),
            command("legacy"),
        ),
    );
    let mut after = toolhunt();
    after = edit(&after, "toolhunt-api", |api| api.run.replicas = Some(3));
    after = edit(&after, "toolhunt-migratedb", |db| {
        db.run.command = Some("m2".to_owned())
    });
    let prune = PlanOptions {
        prune: true,
        ..PlanOptions::default()
    };
    check_with(
        &prune,
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: update
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-legacy: delete
          toolhunt-migratedb: update
        stage 0
          deploy:toolhunt-migratedb
        stage 1
          deploy:toolhunt-api <- deploy:toolhunt-migratedb
        stage 2
          delete:toolhunt-legacy <- deploy:toolhunt-api, deploy:toolhunt-migratedb
        ",
    );
    // Without prune, a component the manifest dropped is left alone and unmentioned.
    check(
        &after,
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: update
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-migratedb: update
        stage 0
          deploy:toolhunt-migratedb
        stage 1
          deploy:toolhunt-api <- deploy:toolhunt-migratedb
        ",
    );
    // With nothing else to do, deletes start at once.
    check_with(
        &prune,
        &toolhunt(),
        Some(&release(&before).components),
        "
        actions
          toolhunt-api: unchanged
          toolhunt-cleanup: unchanged
          toolhunt-flower: unchanged
          toolhunt-legacy: delete
          toolhunt-migratedb: unchanged
        stage 0
          delete:toolhunt-legacy
        ",
    );
}

#[test]
fn artifact_task_names_the_build_a_deploy_gets() {
    let manifest = toolhunt();
    let fresh = plan(&app(), &manifest, None, &PlanOptions::default());
    let artifact = |plan: &Plan, component: &str| {
        plan.artifact_task(&manifest, &name(component))
            .map(String::from)
    };
    assert_eq!(
        artifact(&fresh, "toolhunt-api").as_deref(),
        Some("build:toolhunt-api")
    );
    assert_eq!(
        artifact(&fresh, "toolhunt-migratedb").as_deref(),
        Some("build:toolhunt-api")
    );
    assert_eq!(
        artifact(&fresh, "toolhunt-flower").as_deref(),
        Some("build:toolhunt-api")
    );
    assert_eq!(
        artifact(&fresh, "toolhunt-cleanup").as_deref(),
        Some("build:toolhunt-cleanup")
    );

    // An update in place keeps the deployed artifact.
    let updated = edit(&manifest, "toolhunt-migratedb", |db| db.run.command = None);
    let update = plan(
        &app(),
        &updated,
        Some(&release(&manifest).components),
        &PlanOptions::default(),
    );
    assert_eq!(
        update.artifact_task(&updated, &name("toolhunt-migratedb")),
        None
    );
    assert_eq!(update.artifact_task(&updated, &name("toolhunt-api")), None);
}

#[test]
fn empty_manifest_plans_nothing() {
    let empty = manifest(Vec::new());
    check(&empty, None, "actions");
    check(&empty, Some(&release(&toolhunt()).components), "actions");
}

/// One row of the stable-build-id matrix (DESIGN.md 5.4; section 4 says what the
/// build input is): component `c`, deployed as `before`, planned as `after`. Both
/// are the component's spec as one line of manifest YAML.
struct Case {
    name: &'static str,
    before: &'static str,
    after: &'static str,
    action: Action,
    tasks: &'static [&'static str],
}

const BUILD_AND_DEPLOY: &[&str] = &["build:c", "deploy:c"];
const DEPLOY_ONLY: &[&str] = &["deploy:c"];
const NO_TASK: &[&str] = &[];

#[rustfmt::skip]
const BUILD_ID_MATRIX: &[Case] = &[
    // `build-id` absent: the build id is a hash of the build input, so a new input
    // is a new version.
    Case { name: "no build-id, ref changed",
        before: "{type: continuous, build: {repository: https://git.example/c, ref: main}, run: {command: serve}}",
        after: "{type: continuous, build: {repository: https://git.example/c, ref: v2}, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "no build-id, repository changed",
        before: "{type: continuous, build: {repository: https://git.example/c, ref: main}, run: {command: serve}}",
        after: "{type: continuous, build: {repository: https://git.example/fork, ref: main}, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "no build-id, image changed",
        before: "{type: continuous, build: {image: registry.example/c:1}, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:2}, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    // ... but the same input with another run spec keeps the (hashed) build id.
    Case { name: "no build-id, run spec only (command)",
        before: "{type: continuous, build: {image: registry.example/c:1}, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, run: {command: serve -v}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    // `build-id` set and unchanged, run spec drifted: update in place, no new version.
    Case { name: "same build-id, command drift",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve -w 4}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    Case { name: "same build-id, env drift",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, env: {LOG: info}}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, env: {LOG: debug}}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    Case { name: "same build-id, replicas drift",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, replicas: 2}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, replicas: 3}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    Case { name: "same build-id, port drift",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, port: 8000}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, port: 8080}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    Case { name: "same build-id, schedule drift",
        before: "{type: scheduled, build: {image: registry.example/c:1}, build-id: v3, run: {command: tick, schedule: '0 * * * *'}}",
        after: "{type: scheduled, build: {image: registry.example/c:1}, build-id: v3, run: {command: tick, schedule: '*/5 * * * *'}}",
        action: Action::Update, tasks: DEPLOY_ONLY },
    // `build-id` changed: replace, whatever else changed.
    Case { name: "build-id changed, run spec same",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v4, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "build-id changed, run spec drifted too",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve, replicas: 2}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v4, run: {command: serve, replicas: 5}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "build-id added",
        before: "{type: continuous, build: {image: registry.example/c:1}, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, build-id: v1, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "build-id removed",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:1}, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    // `build-id` unchanged, build input changed: section 4 lists repository, ref,
    // commit sha and build-id each as build input, and `build:X` exists when any of
    // them differs; 5.4 has no rule for this case. So: a new build.
    Case { name: "same build-id, ref changed",
        before: "{type: continuous, build: {repository: https://git.example/c, ref: main}, build-id: v3, run: {command: serve}}",
        after: "{type: continuous, build: {repository: https://git.example/c, ref: v2}, build-id: v3, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    Case { name: "same build-id, image changed",
        before: "{type: continuous, build: {image: registry.example/c:1}, build-id: v3, run: {command: serve}}",
        after: "{type: continuous, build: {image: registry.example/c:2}, build-id: v3, run: {command: serve}}",
        action: Action::Replace, tasks: BUILD_AND_DEPLOY },
    // Nothing changed: unchanged, no task.
    Case { name: "nothing changed, build-id",
        before: "{type: continuous, build: {repository: https://git.example/c, ref: main}, build-id: v3, run: {command: serve, replicas: 2, port: 8000, env: {LOG: info}}}",
        after: "{type: continuous, build: {repository: https://git.example/c, ref: main}, build-id: v3, run: {command: serve, replicas: 2, port: 8000, env: {LOG: info}}}",
        action: Action::Unchanged, tasks: NO_TASK },
    Case { name: "nothing changed, no build-id",
        before: "{type: scheduled, build: {image: registry.example/c:1}, run: {command: tick, schedule: '0 * * * *'}}",
        after: "{type: scheduled, build: {image: registry.example/c:1}, run: {command: tick, schedule: '0 * * * *'}}",
        action: Action::Unchanged, tasks: NO_TASK },
];

#[test]
fn the_build_id_matrix() {
    let parse = |case: &str, spec: &str| {
        let text = format!("config-version: 0.1\ncomponents:\n  c: {spec}\n");
        Manifest::parse(&text).unwrap_or_else(|errors| panic!("{case}: {spec}: {errors}"))
    };
    let c = name("c");
    let mut failures = Vec::new();
    for case in BUILD_ID_MATRIX {
        let before = parse(case.name, case.before);
        let after = parse(case.name, case.after);
        let plan = plan(
            &app(),
            &after,
            Some(&release(&before).components),
            &PlanOptions::default(),
        );
        let action = plan.actions[&c];
        let tasks: Vec<&str> = plan.tasks.iter().map(|task| task.id.as_str()).collect();
        if action != case.action || tasks != case.tasks {
            failures.push(format!(
                "{}: expected {} {:?}, got {action} {tasks:?}",
                case.name, case.action, case.tasks
            ));
        }
        // Without a new version the deploy keeps the artifact the release has.
        let versions = (
            before.components[&c].version(),
            after.components[&c].version(),
        );
        let artifact = plan.artifact_task(&after, &c);
        if matches!(case.action, Action::Update | Action::Unchanged)
            && (versions.0 != versions.1 || artifact.is_some())
        {
            failures.push(format!(
                "{}: expected the same version and artifact, got versions {versions:?}, artifact from {artifact:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Invariants over random valid manifests and random current states.
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// The random choices behind one component of a generated manifest.
    #[derive(Clone, Debug)]
    struct Seed {
        kind: u8,
        /// 0: repository, 1: image, 2: reuse-from (a lower-indexed component).
        build: u8,
        reuse_from: Index,
        wait_for: Vec<Index>,
        build_id: Option<u8>,
        git_ref: Option<u8>,
        command: u8,
        replicas: Option<u32>,
        /// How the current state differs for this component (see `mutate`).
        mutation: u8,
    }

    fn seed() -> impl Strategy<Value = Seed> {
        (
            (0..3_u8, 0..3_u8, any::<Index>()),
            prop::collection::vec(any::<Index>(), 0..4),
            (prop::option::of(0..3_u8), prop::option::of(0..2_u8)),
            (0..3_u8, prop::option::of(1..4_u32)),
            0..20_u8,
        )
            .prop_map(
                |(
                    (kind, build, reuse_from),
                    wait_for,
                    (build_id, git_ref),
                    (command, replicas),
                    mutation,
                )| {
                    Seed {
                        kind,
                        build,
                        reuse_from,
                        wait_for,
                        build_id,
                        git_ref,
                        command,
                        replicas,
                        mutation,
                    }
                },
            )
    }

    /// Components `c0..cN`. `wait-for` and `reuse-from` only name lower-indexed
    /// components, so neither graph has a cycle and every reuse chain ends at `c0`
    /// or earlier at a component with its own build: the manifest is valid.
    fn valid_manifest(seeds: &[Seed]) -> Manifest {
        let names: Vec<ComponentName> = (0..seeds.len()).map(|i| name(&format!("c{i}"))).collect();
        let components = seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| {
                let kind = match seed.kind {
                    0 => ComponentType::Continuous,
                    1 => ComponentType::Scheduled,
                    _ => ComponentType::OneOff,
                };
                let build = match seed.build {
                    2 if i > 0 => Build::ReuseFrom {
                        reuse_from: names[seed.reuse_from.index(i)].clone(),
                    },
                    1 => image(&format!("registry.example/c{i}:1")),
                    _ => repository(
                        &format!("https://git.example/c{i}"),
                        seed.git_ref.map(|r| format!("branch-{r}")).as_deref(),
                    ),
                };
                let mut wait_for: Vec<ComponentName> = if i == 0 {
                    Vec::new()
                } else {
                    seed.wait_for
                        .iter()
                        .map(|ix| names[ix.index(i)].clone())
                        .collect()
                };
                wait_for.sort();
                wait_for.dedup();
                let continuous = kind == ComponentType::Continuous;
                let run = Run {
                    command: Some(format!("run-{}", seed.command)),
                    replicas: seed.replicas.filter(|_| continuous),
                    port: continuous.then_some(8000),
                    env: BTreeMap::new(),
                    schedule: (kind == ComponentType::Scheduled).then(|| "0 * * * *".to_owned()),
                };
                let component = Component {
                    build_id: seed.build_id.map(|id| format!("v{id}")),
                    wait_for,
                    ..component(kind, build, run)
                };
                (names[i].clone(), component)
            })
            .collect();
        Manifest {
            config_version: "0.1".to_owned(),
            components,
        }
    }

    /// The release of a manifest that differs from `manifest` as the seeds say, plus
    /// `n_gone` components the manifest no longer has.
    fn mutate(manifest: &Manifest, seeds: &[Seed], n_gone: usize) -> Release {
        let mut release = release(manifest);
        for (seed, (name, component)) in seeds.iter().zip(&manifest.components) {
            let spec = &mut release
                .components
                .get_mut(name)
                .expect("the release holds every component")
                .spec;
            match seed.mutation {
                0 => {
                    release.components.remove(name);
                }
                1 => spec.build_id = Some("old".to_owned()),
                2 => spec.build_id = None,
                3 => match &mut spec.build {
                    Build::Repository { git_ref, .. } => *git_ref = Some("old".to_owned()),
                    Build::Image { image } => image.push_str("-old"),
                    Build::ReuseFrom { reuse_from } => *reuse_from = name.clone(),
                },
                4 => spec.build = image("registry.example/old:0"),
                5 => spec.run.command = Some("old".to_owned()),
                6 => spec.run.replicas = Some(99),
                7 => {
                    spec.kind = match component.kind {
                        ComponentType::OneOff => ComponentType::Continuous,
                        _ => ComponentType::OneOff,
                    }
                }
                8 => spec.description = Some("old".to_owned()),
                9 => spec.wait_for.clear(),
                10 => spec.on_update = Some(shared::manifest::OnUpdate { deploy: true }),
                _ => {}
            }
        }
        for gone in 0..n_gone {
            let spec = component(ComponentType::OneOff, image("gone:1"), command("gone"));
            let released = ReleasedComponent {
                spec,
                artifact: None,
                version: None,
                deployment: None,
            };
            release
                .components
                .insert(name(&format!("gone{gone}")), released);
        }
        release
    }

    fn task_ids(plan: &Plan) -> BTreeSet<&TaskId> {
        plan.tasks.iter().map(|task| &task.id).collect()
    }

    /// The structural invariants every plan keeps.
    fn check_shape(plan: &Plan) {
        // No task twice; each after everything it needs, and needs only tasks of the plan.
        let mut seen = BTreeSet::new();
        for task in &plan.tasks {
            for need in &task.needs {
                assert!(
                    seen.contains(need),
                    "{} needs {need}, not listed before it",
                    task.id
                );
            }
            assert!(seen.insert(&task.id), "{} is listed twice", task.id);
            assert_eq!(task.id, TaskId::new(task.kind, &task.component));
        }
        let ids = task_ids(plan);
        for task in &plan.tasks {
            assert!(task.needs.iter().all(|need| ids.contains(need)));
        }

        // The stages are exactly the longest-path layering, and hold every task once.
        let mut stage_of: BTreeMap<&TaskId, usize> = BTreeMap::new();
        let mut layering: Vec<Vec<TaskId>> = Vec::new();
        for task in &plan.tasks {
            let stage = task
                .needs
                .iter()
                .map(|need| stage_of[need] + 1)
                .max()
                .unwrap_or(0);
            stage_of.insert(&task.id, stage);
            if layering.len() <= stage {
                layering.resize_with(stage + 1, Vec::new);
            }
            layering[stage].push(task.id.clone());
        }
        assert_eq!(plan.stages, layering);
        let staged: Vec<&TaskId> = plan.stages.iter().flatten().collect();
        let listed: Vec<&TaskId> = plan.tasks.iter().map(|task| &task.id).collect();
        assert_eq!(staged, listed, "tasks are listed stage by stage");

        // Order: by stage, then kind, then component; needs by kind, then component.
        let order: Vec<_> = plan
            .tasks
            .iter()
            .map(|task| (stage_of[&task.id], task.kind, &task.component))
            .collect();
        assert!(
            order.is_sorted(),
            "tasks are ordered by stage, kind, component"
        );
        for task in &plan.tasks {
            let needs: Vec<_> = task.needs.iter().map(TaskId::parts).collect();
            assert!(needs.is_sorted() && needs.windows(2).all(|w| w[0] != w[1]));
        }
    }

    /// The rules of DESIGN.md section 4, checked against the plan's own actions.
    fn check_rules(manifest: &Manifest, current: Option<&Release>, prune: bool, plan: &Plan) {
        let deployed = current.map(|release| &release.components);
        let has =
            |kind, component: &ComponentName| plan.task(&TaskId::new(kind, component)).is_some();

        let mut expected_keys: BTreeSet<&ComponentName> = manifest.components.keys().collect();
        if prune {
            expected_keys.extend(deployed.into_iter().flat_map(BTreeMap::keys));
        }
        assert_eq!(plan.actions.keys().collect::<BTreeSet<_>>(), expected_keys);

        for (name, &action) in &plan.actions {
            let Some(component) = manifest.components.get(name) else {
                assert_eq!(action, Action::Delete, "{name}");
                assert!(has(TaskKind::Delete, name));
                let task = plan
                    .task(&TaskId::new(TaskKind::Delete, name))
                    .expect("delete task");
                let deploys: Vec<&TaskId> = plan
                    .tasks
                    .iter()
                    .filter(|task| task.kind == TaskKind::Deploy)
                    .map(|task| &task.id)
                    .collect();
                let mut needs: Vec<&TaskId> = task.needs.iter().collect();
                needs.sort();
                let mut deploys_sorted = deploys.clone();
                deploys_sorted.sort();
                assert_eq!(needs, deploys_sorted, "a delete needs every deploy");
                continue;
            };
            let changes = matches!(action, Action::Create | Action::Update | Action::Replace);
            let new_artifact = matches!(action, Action::Create | Action::Replace);
            assert_eq!(
                has(TaskKind::Build, name),
                new_artifact && component.build_input().is_some()
            );
            assert_eq!(has(TaskKind::Deploy, name), changes, "{name}: {action}");
            assert!(!has(TaskKind::Delete, name));

            let source = manifest.artifact_source(name);
            let source_built = has(TaskKind::Build, source);
            match deployed
                .and_then(|deployed| deployed.get(name))
                .map(|r| &r.spec)
            {
                None => assert_eq!(action, Action::Create),
                Some(before) => {
                    let must_replace = before.kind != component.kind
                        || before.build_input() != component.build_input()
                        || before.reuse_from() != component.reuse_from()
                        || source_built;
                    if must_replace {
                        assert_eq!(action, Action::Replace, "{name}");
                    }
                    match action {
                        Action::Update => assert_ne!(before.run, component.run),
                        Action::Unchanged => {
                            assert!(!must_replace);
                            assert_eq!(before.run, component.run);
                        }
                        _ => {}
                    }
                }
            }

            if changes {
                let task = plan
                    .task(&TaskId::new(TaskKind::Deploy, name))
                    .expect("deploy task");
                let mut expected = Vec::new();
                if source_built {
                    expected.push(TaskId::new(TaskKind::Build, source));
                }
                for waited in &component.wait_for {
                    if has(TaskKind::Deploy, waited) {
                        expected.push(TaskId::new(TaskKind::Deploy, waited));
                    }
                }
                let mut needs = task.needs.clone();
                needs.sort();
                expected.sort();
                expected.dedup();
                assert_eq!(needs, expected, "the direct needs of deploy:{name}");
                let artifact = plan.artifact_task(manifest, name);
                assert_eq!(artifact.is_some(), source_built);
            }
        }
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn plans_keep_their_invariants(
            seeds in prop::collection::vec(seed(), 0..200),
            has_current in any::<bool>(),
            n_gone in 0..3_usize,
            prune in any::<bool>(),
        ) {
            let manifest = valid_manifest(&seeds);
            let current = has_current.then(|| mutate(&manifest, &seeds, n_gone));
            let options = PlanOptions {
                prune,
                ..PlanOptions::default()
            };
            let planned = plan(&app(), &manifest, current.as_ref().map(|release| &release.components), &options);
            check_shape(&planned);
            check_rules(&manifest, current.as_ref(), prune, &planned);

            // Deterministic: the same inputs (even rebuilt) give the same plan.
            let again = plan(&app(), &manifest.clone(), current.clone().as_ref().map(|release| &release.components), &options);
            prop_assert_eq!(&again, &planned);

            // A manifest planned against its own release does nothing.
            let settled = plan(&app(), &manifest, Some(&release(&manifest).components), &options);
            prop_assert!(settled.is_empty());
            prop_assert!(settled.actions.values().all(|&action| action == Action::Unchanged));
        }

        #[test]
        fn a_fresh_app_builds_and_deploys_everything(seeds in prop::collection::vec(seed(), 1..60)) {
            let manifest = valid_manifest(&seeds);
            let planned = plan(&app(), &manifest, None, &PlanOptions::default());
            check_shape(&planned);
            let n_builds = manifest
                .components
                .values()
                .filter(|component| component.build_input().is_some())
                .count();
            prop_assert_eq!(planned.tasks.len(), n_builds + manifest.components.len());
            prop_assert!(planned.actions.values().all(|&action| action == Action::Create));
        }
    }
}

#[test]
fn hand_built_cycles_end_and_lose_no_task() {
    // `Manifest::parse` refuses both cycles; the planner must still terminate.
    let a = Component {
        wait_for: vec![name("b")],
        ..component(ComponentType::OneOff, reuse("b"), command("a"))
    };
    let b = Component {
        wait_for: vec![name("a")],
        ..component(ComponentType::OneOff, reuse("a"), command("b"))
    };
    let c = Component {
        wait_for: vec![name("a")],
        ..component(ComponentType::OneOff, image("c:1"), command("c"))
    };
    check(
        &manifest(vec![("a", a), ("b", b), ("c", c)]),
        None,
        "
        actions
          a: create
          b: create
          c: create
        stage 0
          build:c
        stage 1
          deploy:a <- deploy:b
          deploy:b <- deploy:a
          deploy:c <- build:c, deploy:a
        ",
    );
}

/// A rollback deploys every component of the target release with the artifact the
/// release holds, builds nothing, keeps `wait-for` order, and deletes (after every
/// deploy) what the target does not have.
#[test]
fn a_rollback_deploys_the_target_whole_without_building() {
    let old = toolhunt();
    let target = release(&old);
    let mut newer = old.clone();
    if let Some(api) = newer.components.get_mut(&name("toolhunt-api")) {
        api.build_id = Some("v4".to_owned());
    }
    newer.components.insert(
        name("extra"),
        component(
            ComponentType::Continuous,
            Build::Image {
                image: "registry.example/extra:1".to_owned(),
            },
            command("extra"),
        ),
    );
    let current = release(&newer);
    let (manifest, plan) = rollback(&app(), &target, Some(&current.components));
    assert_eq!(manifest, old, "the deployment records the target's specs");
    let flat: Vec<&TaskId> = plan.stages.iter().flatten().collect();
    let listed: Vec<&TaskId> = plan.tasks.iter().map(|task| &task.id).collect();
    assert_eq!(flat, listed, "tasks are listed stage by stage");
    let expected = "
        actions
          extra: delete
          toolhunt-api: replace
          toolhunt-cleanup: update
          toolhunt-flower: replace
          toolhunt-migratedb: replace
        stage 0
          deploy:toolhunt-migratedb
        stage 1
          deploy:toolhunt-api <- deploy:toolhunt-migratedb
        stage 2
          deploy:toolhunt-cleanup <- deploy:toolhunt-api
          deploy:toolhunt-flower <- deploy:toolhunt-api
        stage 3
          delete:extra <- deploy:toolhunt-api, deploy:toolhunt-cleanup, deploy:toolhunt-flower, deploy:toolhunt-migratedb
    ";
    let actual = render(&plan);
    assert!(
        normalize(&actual) == normalize(expected),
        "plan differs\n--- expected\n{expected}\n--- actual\n{actual}"
    );

    // Back to the release that runs now: every component again, still no build.
    let (_, again) = rollback(&app(), &current, Some(&current.components));
    assert!(again.tasks.iter().all(|task| task.kind == TaskKind::Deploy));
    assert_eq!(again.tasks.len(), newer.components.len());
    assert!(
        again
            .actions
            .values()
            .all(|action| *action == Action::Update)
    );
}

/// What the driver reports running drifted from the release: an unchanged component
/// whose running state differs is updated, and the plan names the fields.
#[test]
fn drift_from_the_release_is_planned_as_update() {
    let manifest = toolhunt();
    let current = release(&manifest);
    let mut observed: Observed = current
        .components
        .iter()
        .map(|(name, released)| {
            let running = ObservedComponent {
                artifact: released.artifact.clone(),
                run: released.spec.run.clone(),
            };
            (name.clone(), running)
        })
        .collect();
    let options = PlanOptions {
        observed: Some(&observed),
        ..PlanOptions::default()
    };
    assert!(
        plan(&app(), &manifest, Some(&current.components), &options).is_empty(),
        "what runs is what the release says"
    );

    if let Some(api) = observed.get_mut(&name("toolhunt-api")) {
        api.run.replicas = Some(3);
        api.run.command = Some("gunicorn --debug app:app".to_owned());
    }
    if let Some(cleanup) = observed.get_mut(&name("toolhunt-cleanup")) {
        cleanup.artifact = Some("registry.example/cleanup:hotfix".to_owned());
    }
    let options = PlanOptions {
        observed: Some(&observed),
        ..PlanOptions::default()
    };
    let drifted = plan(&app(), &manifest, Some(&current.components), &options);
    assert_eq!(
        normalize(&render(&drifted)),
        normalize(
            "
            actions
              toolhunt-api: update
              toolhunt-cleanup: update
              toolhunt-flower: unchanged
              toolhunt-migratedb: unchanged
            stage 0
              deploy:toolhunt-api
            stage 1
              deploy:toolhunt-cleanup <- deploy:toolhunt-api
            "
        )
    );
    assert_eq!(
        drifted.drift,
        BTreeMap::from([
            (
                name("toolhunt-api"),
                vec!["command".to_owned(), "replicas".to_owned()]
            ),
            (name("toolhunt-cleanup"), vec!["artifact".to_owned()]),
        ])
    );
    // A component the manifest changes anyway is planned for that, not for drift.
    let mut changed = manifest.clone();
    if let Some(api) = changed.components.get_mut(&name("toolhunt-api")) {
        api.build_id = Some("v4".to_owned());
    }
    let replanned = plan(&app(), &changed, Some(&current.components), &options);
    assert_eq!(replanned.actions[&name("toolhunt-api")], Action::Replace);
    assert!(!replanned.drift.contains_key(&name("toolhunt-api")));
}

/// A partial deployment (`--component`) deploys only the named components, builds
/// only the artifacts they get, and leaves the rest as the release has them.
#[test]
fn a_partial_deployment_touches_only_the_named_components() {
    let current = release(&toolhunt());
    let mut changed = toolhunt();
    if let Some(api) = changed.components.get_mut(&name("toolhunt-api")) {
        api.build_id = Some("v4".to_owned());
    }
    if let Some(cleanup) = changed.components.get_mut(&name("toolhunt-cleanup")) {
        cleanup.build = image("registry.example/cleanup:1.5");
    }
    let only = BTreeSet::from([name("toolhunt-flower")]);
    let options = PlanOptions {
        only: Some(&only),
        ..PlanOptions::default()
    };
    let partial = plan(&app(), &changed, Some(&current.components), &options);
    assert_eq!(
        normalize(&render(&partial)),
        normalize(
            "
            actions
              toolhunt-api: unchanged
              toolhunt-cleanup: unchanged
              toolhunt-flower: replace
              toolhunt-migratedb: unchanged
            stage 0
              build:toolhunt-api
            stage 1
              deploy:toolhunt-flower <- build:toolhunt-api
            "
        )
    );
    // Nothing selected changes: nothing to do, although other components did.
    let only = BTreeSet::from([name("toolhunt-cleanup")]);
    let options = PlanOptions {
        only: Some(&only),
        ..PlanOptions::default()
    };
    let cleanup_only = plan(&app(), &changed, Some(&current.components), &options);
    let ids: Vec<&str> = cleanup_only
        .tasks
        .iter()
        .map(|task| task.id.as_str())
        .collect();
    assert_eq!(ids, ["build:toolhunt-cleanup", "deploy:toolhunt-cleanup"]);
}
