//! The planner on a manifest of 500 components (the most a manifest may declare):
//! against an empty current state (everything is created), and against a state
//! where every component already runs and a few changed (the plan is mostly
//! `unchanged`). Target: under 10 ms per plan.
//!
//! `cargo bench -p scheduler --bench planner`
//!
//! The manifest is 50 groups of 10 components, each group an app-sized service:
//! - `gN-api`: continuous, built from a repository; waits for its migration and,
//!   past the first group, for the api of group (N - 1) / 2 (a tree of services);
//! - `gN-migrate`: one-off, `reuse-from` the api;
//! - `gN-worker-1` … `-4`: continuous, `reuse-from` the api, waiting for it;
//! - `gN-cron`: scheduled, an image of its own, waiting for the api;
//! - `gN-web`: continuous, built from a repository, waiting for the api;
//! - `gN-cache`: continuous, an image;
//! - `gN-proxy`: continuous, `reuse-from` the web, waiting for the web and the cache.
//!
//! So 200 builds, 300 `reuse-from` and 499 `wait-for` edges; from nothing, 700 tasks
//! in 10 stages. The mostly running state is the release of that manifest; the
//! manifest planned against it gives 5 apis a new `build-id` (each a build and 6
//! deploys: the api, its migration and workers) and changes 5 crons' command (a
//! deploy each): 40 tasks in 4 stages, 465 components `unchanged`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use scheduler::planner::{PlanOptions, plan};
use shared::manifest::Manifest;
use shared::model::Action;
use shared::names::AppName;
use shared::release::{Components, ReleasedComponent};

const GROUPS: usize = 50;

/// The manifest's YAML; `changed` gives the changed groups their new build id and
/// cron command.
fn manifest_text(changed: bool) -> String {
    let mut text = String::from("config-version: 0.1\ncomponents:\n");
    for g in 0..GROUPS {
        let bumped = changed && g % 10 == 0;
        let cron_changed = changed && g % 10 == 5;
        let mut api_waits = vec![format!("g{g}-migrate")];
        if g > 0 {
            api_waits.push(format!("g{}-api", (g - 1) / 2));
        }
        let build_id = if bumped { "v2" } else { "v1" };
        let cron_command = if cron_changed {
            "cleanup --all"
        } else {
            "cleanup"
        };
        text.push_str(&format!(
            "  g{g}-api:
    type: continuous
    build: {{repository: https://git.example/g{g}/api, ref: main}}
    build-id: {build_id}
    run: {{command: serve, replicas: 3, port: 8000, env: {{LOG_LEVEL: info}}}}
    wait-for: [{api_waits}]
  g{g}-migrate:
    type: one-off
    build: {{reuse-from: g{g}-api}}
    run: {{command: migrate}}
",
            api_waits = api_waits.join(", ")
        ));
        for w in 1..=4 {
            text.push_str(&format!(
                "  g{g}-worker-{w}:
    type: continuous
    build: {{reuse-from: g{g}-api}}
    run: {{command: work --queue q{w}, replicas: 2}}
    wait-for: [g{g}-api]
"
            ));
        }
        text.push_str(&format!(
            "  g{g}-cron:
    type: scheduled
    build: {{image: registry.example/g{g}/cron:1.4}}
    run: {{command: {cron_command}, schedule: \"*/5 * * * *\"}}
    wait-for: [g{g}-api]
  g{g}-web:
    type: continuous
    build: {{repository: https://git.example/g{g}/web}}
    run: {{command: web, port: 3000}}
    wait-for: [g{g}-api]
  g{g}-cache:
    type: continuous
    build: {{image: registry.example/redis:7}}
    run: {{command: redis-server}}
  g{g}-proxy:
    type: continuous
    build: {{reuse-from: g{g}-web}}
    run: {{command: proxy, port: 443}}
    wait-for: [g{g}-web, g{g}-cache]
"
        ));
    }
    text
}

fn parse(text: &str) -> Manifest {
    match Manifest::parse(text) {
        Ok(manifest) => manifest,
        Err(errors) => panic!("the benchmark's manifest is invalid: {errors:?}"),
    }
}

/// What runs after deploying `manifest` whole: every component with its spec and
/// the artifact of its source's build.
fn running(manifest: &Manifest) -> Components {
    manifest
        .components
        .iter()
        .map(|(name, spec)| {
            let source = &manifest.components[manifest.artifact_source(name)];
            let version = source.version();
            let released = ReleasedComponent {
                spec: spec.clone(),
                artifact: version
                    .as_ref()
                    .map(|version| format!("registry.example/{name}@{version}")),
                version,
                deployment: None,
            };
            (name.clone(), released)
        })
        .collect()
}

fn planner(c: &mut Criterion) {
    let app: AppName = "fleet".parse().expect("a valid app name");
    let manifest = parse(&manifest_text(false));
    let changed = parse(&manifest_text(true));
    assert_eq!(manifest.components.len(), 500);
    let current = running(&manifest);
    let options = PlanOptions::default();

    // What is measured, stated once: the task counts quoted in the module docs.
    let from_nothing = plan(&app, &manifest, None, &options);
    let mostly_running = plan(&app, &changed, Some(&current), &options);
    let unchanged = mostly_running
        .actions
        .values()
        .filter(|action| **action == Action::Unchanged)
        .count();
    println!(
        "500 components: from nothing {} tasks in {} stages; mostly running {} tasks in {} \
         stages, {unchanged} components unchanged",
        from_nothing.tasks.len(),
        from_nothing.stages.len(),
        mostly_running.tasks.len(),
        mostly_running.stages.len(),
    );

    let mut group = c.benchmark_group("plan 500 components");
    group.bench_function("empty current state", |b| {
        b.iter(|| plan(black_box(&app), black_box(&manifest), None, &options))
    });
    group.bench_function("mostly running", |b| {
        b.iter(|| {
            plan(
                black_box(&app),
                black_box(&changed),
                Some(black_box(&current)),
                &options,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
