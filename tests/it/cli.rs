//! End-to-end tests of the `drover` command line: the real binary, each test in a
//! data directory of its own, on the embedded default (SQLite, in-process broker
//! and locks) with the exec driver running bash scripts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::backends::{Migrations, connect_store};
use shared::config::Config;
use shared::names::{AppName, ComponentName, TenantName};
use shared::release::Release;
use shared::store::{ReleaseStore as _, TenantStore as _};

use crate::site::{Backend, Site, on_sites};
use crate::support::{describe, drover, repo_root, run, take_sse_events};

/// The longest one drover invocation may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs a command to its end (killing it after [`DEADLINE`]) and returns its output.
pub(crate) fn run_with_deadline(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start drover");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("failed to wait for drover") {
            break (status, false);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            break (child.wait().expect("failed to wait for drover"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: stdout.join().expect("the stdout reader panicked"),
        stderr: stderr.join().expect("the stderr reader panicked"),
    };
    assert!(
        !timed_out,
        "drover did not finish within {DEADLINE:?}:\n{}",
        describe(&output)
    );
    output
}

/// Reads a child's stream to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(stream: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut stream) = stream {
            let _ = stream.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn json_stdout(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}):\n{}",
            describe(output)
        )
    })
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit code {code}:\n{}",
        describe(output)
    );
}

/// Each `drover ARGS…` on `site` is bad input (exit 2) whose error says `message`.
fn assert_bad_input(site: &Site<'_>, cases: &[(&[&str], &str)]) {
    for (args, message) in cases {
        let output = site.drover(args);
        assert_exit(&output, 2);
        assert_contains(&stderr(&output), &[message]);
    }
}

fn toolhunt_manifest() -> PathBuf {
    repo_root().join("examples/toolhunt/toolhunt.yaml")
}

/// The example's manifest, to edit.
fn toolhunt_text() -> String {
    std::fs::read_to_string(toolhunt_manifest()).expect("failed to read the example")
}

fn toolhunt_config() -> PathBuf {
    repo_root().join("examples/toolhunt/drover.toml")
}

/// A test's scratch space: `data/` is the data directory; config files, manifests
/// and step scripts go next to it.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("failed to create a tempdir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `drover --data-dir DATA ARGS…`
    fn drover(&self, args: &[&str]) -> Output {
        run_with_deadline(drover(&self.data_dir()).args(args))
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("failed to create a directory");
        }
        std::fs::write(&path, text).expect("failed to write a file");
        path
    }

    /// A config whose exec driver runs `steps/build.sh` and `steps/deploy.sh` (as
    /// `bash SCRIPT`, relative to the config file's directory).
    pub(crate) fn exec_config(&self, build: &str, deploy: &str) -> PathBuf {
        self.write("steps/build.sh", &format!("set -euo pipefail\n{build}"));
        self.write("steps/deploy.sh", &format!("set -euo pipefail\n{deploy}"));
        // `bash SCRIPT` rather than the script itself: a file written and executed at
        // once can fail with ETXTBSY when another test thread forks in between.
        self.write(
            "drover.toml",
            "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\ntimeout = \"1m\"\n",
        )
    }
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Runs a future on a runtime of its own (the tests themselves are synchronous).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("failed to build a runtime")
        .block_on(future)
}

/// The app's active release, read from the data directory's store.
fn active_release(data_dir: &Path, app: &str) -> Option<Release> {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    block_on(async {
        let store = connect_store(&config, Migrations::Require)
            .await
            .expect("failed to open the store");
        let tenant = store
            .ensure_tenant(&TenantName::new("default").expect("a valid tenant name"))
            .await
            .expect("failed to read the tenant");
        store
            .active_release(tenant, &AppName::new(app).expect("a valid app name"))
            .await
            .expect("failed to read the active release")
    })
}

/// How many deployments and releases the data directory's SQLite database holds
/// (`None` when there is no database file at all).
fn stored_rows(data_dir: &Path) -> Option<(i64, i64)> {
    let db = data_dir.join("drover.db");
    if !db.exists() {
        return None;
    }
    Some(block_on(async {
        use sea_orm::{ConnectionTrait as _, Database, DbBackend, Statement};
        let conn = Database::connect(format!("sqlite://{}?mode=ro", db.display()))
            .await
            .expect("failed to open drover.db");
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT (SELECT COUNT(*) FROM deployments) AS deployments, (SELECT COUNT(*) FROM releases) AS releases",
            ))
            .await
            .expect("failed to count deployments")
            .expect("a count row");
        let counts = (
            row.try_get::<i64>("", "deployments")
                .expect("a deployment count"),
            row.try_get::<i64>("", "releases").expect("a release count"),
        );
        let _ = conn.close().await;
        counts
    }))
}

/// Nothing reached the store: no database, or one without deployments or releases.
fn assert_nothing_written(data_dir: &Path, output: &Output) {
    if let Some(counts) = stored_rows(data_dir) {
        assert_eq!(
            counts,
            (0, 0),
            "(deployments, releases) stored after:\n{}",
            describe(output)
        );
    }
}

/// Asserts that `text` holds `FILE:LINE:COLUMN:` for `file` at `line`.
fn assert_position(text: &str, file: &Path, line: u32) {
    let prefix = format!("{}:{line}:", file.display());
    let found = text.match_indices(&prefix).any(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    });
    assert!(found, "expected `{prefix}COLUMN:` in:\n{text}");
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected `{part}` in:\n{text}");
    }
}

/// Key/value lines of a state file written by the example's deploy step.
fn state_file(data_dir: &Path, component: &str) -> HashMap<String, String> {
    let path = data_dir.join(format!("toolhunt-example/deployed/{component}.state"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

const TOOLHUNT: [&str; 4] = [
    "toolhunt-api",
    "toolhunt-cleanup",
    "toolhunt-flower",
    "toolhunt-migratedb",
];

const TOOLHUNT_TASKS: [&str; 6] = [
    "build:toolhunt-api",
    "build:toolhunt-cleanup",
    "deploy:toolhunt-api",
    "deploy:toolhunt-cleanup",
    "deploy:toolhunt-flower",
    "deploy:toolhunt-migratedb",
];

/// Task id → state of a `deploy -o json` document, after checking every task's shape.
fn task_states(deployment: &Value) -> BTreeMap<String, String> {
    let tasks = deployment["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no `tasks` array: {deployment:#}"));
    tasks
        .iter()
        .map(|task| {
            for key in ["id", "state", "attempts", "started_at", "finished_at"] {
                assert!(task.get(key).is_some(), "task without `{key}`: {task:#}");
            }
            let id = task["id"]
                .as_str()
                .unwrap_or_else(|| panic!("task id is not a string: {task:#}"));
            let state = task["state"]
                .as_str()
                .unwrap_or_else(|| panic!("state is not a string: {task:#}"));
            (id.to_owned(), state.to_owned())
        })
        .collect()
}

/// Checks a task that ran once and succeeded: one attempt, started before it finished.
fn assert_ran_once(task: &Value) {
    assert_eq!(task["state"], "succeeded", "{task:#}");
    assert_eq!(task["attempts"], 1, "{task:#}");
    let started = task["started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no started_at: {task:#}"));
    let finished = task["finished_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no finished_at: {task:#}"));
    // RFC 3339 in UTC: lexical order is time order.
    assert!(
        started.ends_with("+00:00") || started.ends_with('Z'),
        "{task:#}"
    );
    assert!(started <= finished, "finished before it started: {task:#}");
}

#[test]
fn plan_json_is_the_dag_of_the_design() {
    let scratch = Scratch::new();
    let output = scratch.drover(&["plan", "-f", path_str(&toolhunt_manifest()), "-o", "json"]);
    assert_exit(&output, 0);
    let expected = json!({
        "app": "toolhunt",
        "actions": {
            "toolhunt-api": "create",
            "toolhunt-cleanup": "create",
            "toolhunt-flower": "create",
            "toolhunt-migratedb": "create"
        },
        "tasks": [
            {"id": "build:toolhunt-api", "kind": "build", "component": "toolhunt-api", "needs": []},
            {"id": "build:toolhunt-cleanup", "kind": "build", "component": "toolhunt-cleanup", "needs": []},
            {"id": "deploy:toolhunt-migratedb", "kind": "deploy", "component": "toolhunt-migratedb",
             "needs": ["build:toolhunt-api"]},
            {"id": "deploy:toolhunt-api", "kind": "deploy", "component": "toolhunt-api",
             "needs": ["build:toolhunt-api", "deploy:toolhunt-migratedb"]},
            {"id": "deploy:toolhunt-cleanup", "kind": "deploy", "component": "toolhunt-cleanup",
             "needs": ["build:toolhunt-cleanup", "deploy:toolhunt-api"]},
            {"id": "deploy:toolhunt-flower", "kind": "deploy", "component": "toolhunt-flower",
             "needs": ["build:toolhunt-api", "deploy:toolhunt-api"]}
        ],
        "stages": [
            ["build:toolhunt-api", "build:toolhunt-cleanup"],
            ["deploy:toolhunt-migratedb"],
            ["deploy:toolhunt-api"],
            ["deploy:toolhunt-cleanup", "deploy:toolhunt-flower"]
        ]
    });
    assert_eq!(json_stdout(&output), expected, "{}", describe(&output));
}

#[test]
fn deploy_prints_progress_and_writes_release_1() {
    let scratch = Scratch::new();
    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&toolhunt_manifest()),
        "--config",
        path_str(&toolhunt_config()),
    ]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    for task in TOOLHUNT_TASKS {
        let done = format!("✅ {task} succeeded");
        assert_eq!(
            text.lines().filter(|line| line.starts_with(&done)).count(),
            1,
            "expected one `{done}` line:\n{}",
            describe(&output)
        );
    }
    assert!(
        text.lines()
            .any(|line| line.contains("succeeded") && line.ends_with("release 1")),
        "no final `… succeeded …: release 1` line:\n{}",
        describe(&output)
    );
    let release = active_release(&scratch.data_dir(), "toolhunt").expect("release 1 was written");
    assert_eq!(release.version, 1);
    let components: Vec<&str> = release
        .components
        .keys()
        .map(ComponentName::as_str)
        .collect();
    assert_eq!(components, TOOLHUNT);
    // The example's steps really ran.
    for component in TOOLHUNT {
        assert_eq!(
            state_file(&scratch.data_dir(), component)["component"],
            component
        );
    }
}

#[test]
fn redeploy_plans_nothing_and_a_new_build_id_redeploys_only_its_build_family() {
    let scratch = Scratch::new();
    let data_dir = scratch.data_dir();
    let config = toolhunt_config();
    let deploy = |manifest: &Path| {
        let output = scratch.drover(&[
            "deploy",
            "-f",
            path_str(manifest),
            "--app",
            "toolhunt",
            "--config",
            path_str(&config),
            "-o",
            "json",
        ]);
        assert_exit(&output, 0);
        let json = json_stdout(&output);
        assert_eq!(json["app"], "toolhunt", "{json:#}");
        assert_eq!(json["state"], "succeeded", "{json:#}");
        assert!(json["id"].is_string(), "{json:#}");
        json
    };

    // 1. A fresh app: every task runs, release 1.
    let first = deploy(&toolhunt_manifest());
    assert_eq!(first["release"], json!({"version": 1}), "{first:#}");
    let states = task_states(&first);
    assert_eq!(
        states.keys().map(String::as_str).collect::<Vec<_>>(),
        TOOLHUNT_TASKS,
        "{first:#}"
    );
    for task in first["tasks"].as_array().expect("tasks") {
        assert_ran_once(task);
    }
    let first_id = first["id"].as_str().expect("an id").to_owned();
    let cleanup_before = state_file(&data_dir, "toolhunt-cleanup");
    assert_eq!(cleanup_before["deployment"], first_id);

    // 2. The same manifest again: nothing to do, still release 1.
    let second = deploy(&toolhunt_manifest());
    assert_eq!(second["tasks"], json!([]), "{second:#}");
    assert_eq!(second["release"], json!({"version": 1}), "{second:#}");
    for component in TOOLHUNT {
        assert_eq!(
            state_file(&data_dir, component)["deployment"],
            first_id,
            "{component} was redeployed"
        );
    }

    // 3. A new build id for toolhunt-api: it and the components reusing its build.
    let original = toolhunt_text();
    assert_eq!(
        original.matches("build-id: v3").count(),
        1,
        "the example changed"
    );
    let edited = scratch.write(
        "manifest.yaml",
        &original.replace("build-id: v3", "build-id: v4"),
    );
    let third = deploy(&edited);
    assert_eq!(third["release"], json!({"version": 2}), "{third:#}");
    let states = task_states(&third);
    assert_eq!(
        states.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "build:toolhunt-api",
            "deploy:toolhunt-api",
            "deploy:toolhunt-flower",
            "deploy:toolhunt-migratedb"
        ],
        "{third:#}"
    );
    for task in third["tasks"].as_array().expect("tasks") {
        assert_ran_once(task);
    }
    let third_id = third["id"].as_str().expect("an id").to_owned();

    // What the example's steps recorded: the api family redeployed with the new
    // build, cleanup untouched since the first deployment.
    let api = state_file(&data_dir, "toolhunt-api");
    assert_eq!(api["deployment"], third_id);
    assert!(
        api["artifact"].contains("v4"),
        "the api runs the v4 build: {api:?}"
    );
    for component in ["toolhunt-migratedb", "toolhunt-flower"] {
        let state = state_file(&data_dir, component);
        assert_eq!(state["deployment"], third_id, "{component}");
        assert_eq!(
            state["artifact"], api["artifact"],
            "{component} reuses the api's new build"
        );
    }
    assert_eq!(
        state_file(&data_dir, "toolhunt-cleanup"),
        cleanup_before,
        "cleanup was touched"
    );

    // Release 2 holds every component, inheriting cleanup from release 1.
    let release = active_release(&data_dir, "toolhunt").expect("an active release");
    assert_eq!(release.version, 2);
    assert_eq!(
        release.deployment.map(|id| id.to_string()),
        Some(third_id.clone())
    );
    let components: Vec<&str> = release
        .components
        .keys()
        .map(ComponentName::as_str)
        .collect();
    assert_eq!(components, TOOLHUNT);
    let get = |name: &str| {
        release
            .components
            .get(&ComponentName::new(name).expect("a valid name"))
            .unwrap_or_else(|| panic!("{name} is not in release 2"))
    };
    let cleanup = get("toolhunt-cleanup");
    assert_eq!(
        cleanup.deployment.map(|id| id.to_string()),
        Some(first_id),
        "{cleanup:?}"
    );
    assert_eq!(
        cleanup.artifact.as_deref(),
        Some(cleanup_before["artifact"].as_str()),
        "{cleanup:?}"
    );
    let api = get("toolhunt-api");
    assert_eq!(api.version.as_deref(), Some("v4"), "{api:?}");
    assert_eq!(
        api.deployment.map(|id| id.to_string()),
        Some(third_id),
        "{api:?}"
    );
    for name in ["toolhunt-migratedb", "toolhunt-flower"] {
        assert_eq!(get(name).artifact, api.artifact, "{name} in release 2");
    }
}

#[test]
fn only_plan_prints_the_plan_and_writes_nothing() {
    let scratch = Scratch::new();
    let manifest = toolhunt_manifest();
    let config = toolhunt_config();
    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
        "--only-plan",
        "-o",
        "json",
    ]);
    assert_exit(&output, 0);
    let plan = json_stdout(&output);
    let ids: BTreeSet<&str> = plan["tasks"]
        .as_array()
        .expect("a tasks array")
        .iter()
        .filter_map(|task| task["id"].as_str())
        .collect();
    assert_eq!(ids, TOOLHUNT_TASKS.into_iter().collect(), "{plan:#}");
    assert!(plan["stages"].is_array(), "{plan:#}");

    let data_dir = scratch.data_dir();
    assert!(
        !data_dir.join("toolhunt-example").exists(),
        "a step ran during --only-plan:\n{}",
        describe(&output)
    );
    assert_nothing_written(&data_dir, &output);
    assert!(
        active_release(&data_dir, "toolhunt").is_none(),
        "--only-plan wrote a release"
    );

    // The text form prints the plan too.
    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
        "--only-plan",
    ]);
    assert_exit(&output, 0);
    assert_contains(
        &stdout(&output),
        &["deploy:toolhunt-api (waiting for build:toolhunt-api, deploy:toolhunt-migratedb)"],
    );
    assert_nothing_written(&data_dir, &output);

    // A real deploy afterwards still has everything to do.
    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
        "-o",
        "json",
    ]);
    assert_exit(&output, 0);
    let deployment = json_stdout(&output);
    let states = task_states(&deployment);
    assert_eq!(
        states.keys().map(String::as_str).collect::<Vec<_>>(),
        TOOLHUNT_TASKS,
        "{deployment:#}"
    );
    assert_eq!(
        deployment["release"],
        json!({"version": 1}),
        "{deployment:#}"
    );
}

/// A shop whose database migration fails: the web app waits for it and the admin
/// for the web app; the mailer is unrelated.
const SHOP: &str = "\
config-version: 0.1
components:
  shop-migrate:
    type: one-off
    build: {image: registry.example/shop-migrate:1}
    run: {command: migrate}
  shop-web:
    type: continuous
    build: {repository: https://example.org/shop.git}
    run: {command: serve, port: 8080}
    wait-for: [shop-migrate]
  shop-admin:
    type: continuous
    build: {reuse-from: shop-web}
    run: {command: admin}
    wait-for: [shop-web]
  shop-mailer:
    type: continuous
    build: {image: registry.example/mailer:2}
    run: {command: mail}
";

const SHOP_BUILD: &str = r#"
echo "building $DROVER_COMPONENT"
echo "artifact=registry.example/$DROVER_COMPONENT@sha256:1" >> "$DROVER_OUTPUT"
"#;

const SHOP_DEPLOY: &str = r#"
if [[ "$DROVER_COMPONENT" == shop-migrate ]]; then
    echo "applying migration 0042_orders"
    echo 'ERROR: relation "orders" already exists' >&2
    exit 1
fi
mkdir -p "$DROVER_DATA_DIR/deployed"
echo "$DROVER_ARTIFACT" > "$DROVER_DATA_DIR/deployed/$DROVER_COMPONENT"
"#;

#[test]
fn a_failing_step_fails_the_deployment_skips_its_dependents_and_spares_the_rest() {
    let scratch = Scratch::new();
    let config = scratch.exec_config(SHOP_BUILD, SHOP_DEPLOY);
    let manifest = scratch.write("shop.yaml", SHOP);
    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
        "-o",
        "json",
    ]);
    assert_exit(&output, 1);
    let deployment = json_stdout(&output);
    assert_eq!(deployment["state"], "failed", "{deployment:#}");
    assert_eq!(
        deployment["release"],
        Value::Null,
        "a failed deployment writes no release: {deployment:#}"
    );
    // shop-admin reuses shop-web's build, so it has no build of its own.
    let expected: BTreeMap<String, String> = [
        ("build:shop-mailer", "succeeded"),
        ("build:shop-migrate", "succeeded"),
        ("build:shop-web", "succeeded"),
        ("deploy:shop-admin", "skipped"),
        ("deploy:shop-mailer", "succeeded"),
        ("deploy:shop-migrate", "failed"),
        ("deploy:shop-web", "skipped"),
    ]
    .into_iter()
    .map(|(id, state)| (id.to_owned(), state.to_owned()))
    .collect();
    assert_eq!(task_states(&deployment), expected, "{}", describe(&output));
    // The failed step's log tail goes to stderr when stdout carries JSON.
    assert_contains(
        &stderr(&output),
        &[
            "deploy:shop-migrate failed",
            "exited with status 1",
            "applying migration 0042_orders",
            "ERROR: relation \"orders\" already exists",
        ],
    );
    let deployed = scratch.data_dir().join("deployed");
    assert!(
        deployed.join("shop-mailer").exists(),
        "the unrelated mailer was not deployed"
    );
    assert!(
        !deployed.join("shop-web").exists(),
        "the web app was deployed without its migration"
    );
    assert!(
        !deployed.join("shop-admin").exists(),
        "the admin was deployed without the web app"
    );
    assert!(
        active_release(&scratch.data_dir(), "shop").is_none(),
        "a failed deployment made a release"
    );

    // In text form the log tail is on stdout, with the failure and the skipped tasks.
    let other = Scratch::new();
    let output = other.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
    ]);
    assert_exit(&output, 1);
    let text = stdout(&output);
    assert_contains(
        &text,
        &[
            "❌ deploy:shop-migrate failed",
            "applying migration 0042_orders",
            "ERROR: relation \"orders\" already exists",
            "✅ deploy:shop-mailer succeeded",
        ],
    );
    for task in ["deploy:shop-web", "deploy:shop-admin"] {
        assert!(
            text.lines()
                .any(|line| line.contains(task) && line.contains("skipped")),
            "no line says that {task} was skipped:\n{}",
            describe(&output)
        );
    }
}

/// A step that records when it starts and ends, in nanoseconds, and takes a while.
const TIMED_STEP: &str = r#"
log="$DROVER_DATA_DIR/times.log"
echo "start $DROVER_TASK:$DROVER_COMPONENT $(date +%s%N)" >> "$log"
sleep 0.5
if [[ "$DROVER_TASK" == build ]]; then
    echo "artifact=registry.example/$DROVER_COMPONENT:test" >> "$DROVER_OUTPUT"
fi
echo "end $DROVER_TASK:$DROVER_COMPONENT $(date +%s%N)" >> "$log"
"#;

#[test]
fn tasks_start_after_everything_they_need_and_independent_tasks_overlap() {
    let scratch = Scratch::new();
    let config = scratch.exec_config(TIMED_STEP, TIMED_STEP);
    let manifest = toolhunt_manifest();
    let output = scratch.drover(&["plan", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&output, 0);
    let plan = json_stdout(&output);
    let needs: BTreeMap<String, Vec<String>> = plan["tasks"]
        .as_array()
        .expect("a tasks array")
        .iter()
        .map(|task| {
            let id = task["id"].as_str().expect("a task id").to_owned();
            let needs = task["needs"]
                .as_array()
                .expect("a needs array")
                .iter()
                .map(|need| need.as_str().expect("a task id").to_owned())
                .collect();
            (id, needs)
        })
        .collect();
    assert_eq!(needs.len(), 6, "{plan:#}");

    let output = scratch.drover(&[
        "deploy",
        "-f",
        path_str(&manifest),
        "--config",
        path_str(&config),
    ]);
    assert_exit(&output, 0);
    let log_path = scratch.data_dir().join("times.log");
    let log = std::fs::read_to_string(&log_path).expect("the steps wrote no times.log");
    let mut starts: BTreeMap<String, u128> = BTreeMap::new();
    let mut ends: BTreeMap<String, u128> = BTreeMap::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [event, task, at] = fields[..] else {
            panic!("malformed line `{line}` in:\n{log}");
        };
        let at: u128 = at
            .parse()
            .unwrap_or_else(|err| panic!("bad time in `{line}`: {err}"));
        let times = match event {
            "start" => &mut starts,
            "end" => &mut ends,
            _ => panic!("malformed line `{line}` in:\n{log}"),
        };
        assert!(
            times.insert(task.to_owned(), at).is_none(),
            "{task} ran twice:\n{log}"
        );
    }
    let planned: BTreeSet<&String> = needs.keys().collect();
    assert_eq!(starts.keys().collect::<BTreeSet<_>>(), planned, "{log}");
    assert_eq!(ends.keys().collect::<BTreeSet<_>>(), planned, "{log}");

    for (task, task_needs) in &needs {
        assert!(
            starts[task] < ends[task],
            "{task} ended before it started:\n{log}"
        );
        for need in task_needs {
            assert!(
                starts[task] > ends[need],
                "{task} started {} ms before {need} (which it needs) ended:\n{log}",
                (ends[need] - starts[task]) / 1_000_000
            );
        }
    }
    let overlap = |a: &str, b: &str| starts[a] < ends[b] && starts[b] < ends[a];
    assert!(
        overlap("build:toolhunt-api", "build:toolhunt-cleanup"),
        "the two independent builds ran one after the other:\n{log}"
    );
    assert!(
        overlap("deploy:toolhunt-cleanup", "deploy:toolhunt-flower"),
        "the two independent last deploys ran one after the other:\n{log}"
    );
}

/// Runs `drover deploy` on bad input: exit code 2, the message on stderr, nothing stored.
fn deploy_bad_input(scratch: &Scratch, args: &[&str]) -> String {
    let mut all = vec!["deploy"];
    all.extend_from_slice(args);
    let output = scratch.drover(&all);
    assert_exit(&output, 2);
    assert_nothing_written(&scratch.data_dir(), &output);
    assert!(
        output.stdout.is_empty(),
        "bad input printed on stdout:\n{}",
        describe(&output)
    );
    stderr(&output)
}

#[test]
fn malformed_yaml_is_bad_input_with_its_position() {
    let scratch = Scratch::new();
    let manifest = scratch.write(
        "broken.yaml",
        "config-version: 0.1\ncomponents:\n  api:\n    type: continuous: bad\n    build: {image: img}\n",
    );
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_position(&message, &manifest, 4);
    assert_contains(&message, &["component `api`"]);
}

#[test]
fn a_wait_for_cycle_is_bad_input_that_prints_the_cycle() {
    let scratch = Scratch::new();
    let manifest = scratch.write(
        "cycle.yaml",
        "config-version: 0.1
components:
  alpha:
    type: one-off
    build: {image: img}
    wait-for: [beta]
  beta:
    type: one-off
    build: {image: img}
    wait-for: [alpha]
",
    );
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_contains(&message, &["cycle", "wait-for"]);
    assert!(
        message.contains("alpha -> beta -> alpha") || message.contains("beta -> alpha -> beta"),
        "the cycle is printed:\n{message}"
    );
    assert!(
        ["6", "10"]
            .iter()
            .any(|line| message.contains(&format!("{}:{line}:", manifest.display()))),
        "the position of a `wait-for` of the cycle is given:\n{message}"
    );
}

#[test]
fn an_unknown_wait_for_component_is_bad_input_with_a_hint() {
    let scratch = Scratch::new();
    let manifest = scratch.write(
        "typo.yaml",
        "config-version: 0.1
components:
  toolhunt-api:
    type: continuous
    build: {image: img}
  toolhunt-flower:
    type: continuous
    build: {reuse-from: toolhunt-api}
    wait-for: [toolhunt-apu]
",
    );
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_position(&message, &manifest, 9);
    assert_contains(
        &message,
        &[
            "component `toolhunt-flower`",
            "wait-for",
            "`toolhunt-apu`",
            "did you mean `toolhunt-api`",
        ],
    );
}

#[test]
fn an_unknown_key_is_bad_input_with_a_hint() {
    let scratch = Scratch::new();
    let manifest = scratch.write(
        "key.yaml",
        "config-version: 0.1
components:
  api:
    type: continuous
    build: {image: img}
    run:
      comand: serve
",
    );
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_position(&message, &manifest, 7);
    assert_contains(
        &message,
        &[
            "component `api`",
            "unknown field `comand`",
            "did you mean `command`",
        ],
    );
}

#[test]
fn a_manifest_over_1_mib_is_bad_input() {
    let scratch = Scratch::new();
    let limit = shared::manifest::MAX_MANIFEST_BYTES;
    let mut text = String::from(
        "config-version: 0.1\ncomponents:\n  api:\n    type: one-off\n    build: {image: img}\n",
    );
    text.push_str("    description: ");
    text.push_str(&"x".repeat(limit));
    text.push('\n');
    let manifest = scratch.write("big.yaml", &text);
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_contains(
        &message,
        &[path_str(&manifest), &limit.to_string(), "at most"],
    );
}

#[test]
fn a_missing_manifest_is_bad_input() {
    let scratch = Scratch::new();
    let manifest = scratch.path().join("nowhere.yaml");
    let message = deploy_bad_input(&scratch, &["-f", path_str(&manifest)]);
    assert_contains(&message, &[path_str(&manifest), "No such file"]);
}

#[test]
fn an_invalid_app_name_is_bad_input() {
    let scratch = Scratch::new();
    let message = deploy_bad_input(
        &scratch,
        &[
            "-f",
            path_str(&toolhunt_manifest()),
            "--app",
            "Bad_Name",
            "--config",
            path_str(&toolhunt_config()),
        ],
    );
    assert_contains(
        &message,
        &["invalid app name `Bad_Name`", "--app", "lower-case"],
    );
}

#[test]
fn a_bad_config_file_is_bad_input() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "drover.toml",
        "[driver]\nkind = \"exec\"\nbogus = 1\n\n[driver.exec]\nbuild = [\"true\"]\ndeploy = [\"true\"]\n",
    );
    let message = deploy_bad_input(
        &scratch,
        &[
            "-f",
            path_str(&toolhunt_manifest()),
            "--config",
            path_str(&config),
        ],
    );
    assert_contains(
        &message,
        &[path_str(&config), "unknown field `bogus`", "line 3"],
    );
}

#[test]
fn an_unknown_flag_or_command_is_bad_input() {
    let scratch = Scratch::new();
    let message = deploy_bad_input(
        &scratch,
        &["-f", path_str(&toolhunt_manifest()), "--frobnicate"],
    );
    assert_contains(&message, &["--frobnicate"]);

    // clap refuses it before anything starts, so no deadline is needed.
    let output = run(drover(&scratch.data_dir()).arg("frobnicate"));
    assert_exit(&output, 2);
    assert_contains(&stderr(&output), &["frobnicate"]);
    assert_nothing_written(&scratch.data_dir(), &output);
}

/// The same binary on PostgreSQL: a database with pending migrations is refused with
/// the way out, and after `drover migrate` the deployment runs there and writes
/// release 1, without touching the embedded SQLite.
#[test]
fn deploys_on_postgres_after_migrate() {
    let scratch = Scratch::new();
    let db = block_on(crate::support::PgDatabase::create());
    let manifest = toolhunt_manifest();
    let config = toolhunt_config();
    let with_db = |args: &[&str]| {
        run_with_deadline(
            drover(&scratch.data_dir())
                .env("DROVER_DATABASE_URL", &db.url)
                .args(args),
        )
    };
    let deploy = [
        "--config",
        path_str(&config),
        "deploy",
        "-f",
        path_str(&manifest),
        "-o",
        "json",
    ];

    let refused = with_db(&deploy);
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains("migration(s) (m20261123_000001_initial, ")
            && stderr(&refused).contains("): run `drover migrate` first"),
        "{}",
        describe(&refused)
    );

    assert_exit(&with_db(&["migrate"]), 0);
    let deployed = with_db(&deploy);
    assert_exit(&deployed, 0);
    let deployment = json_stdout(&deployed);
    assert_eq!(deployment["state"], "succeeded", "{}", describe(&deployed));
    assert_eq!(deployment["release"]["version"], 1);
    assert_eq!(deployment["tasks"].as_array().map(Vec::len), Some(6));

    let replanned = with_db(&["plan", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&replanned, 0);
    assert_eq!(
        json_stdout(&replanned)["tasks"],
        json!([]),
        "{}",
        describe(&replanned)
    );
    assert!(
        !scratch.data_dir().join("drover.db").exists(),
        "with a database URL the embedded SQLite must not be created"
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for one test).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// `drover releases` lists an app's releases newest first, a page at a time;
/// `drover release` shows one; unknown apps and releases, bad cursors and limits
/// are bad input (exit 2), and asking creates no database.
fn releases_are_listed_in_pages_and_shown_one_by_one(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let fresh = site.drover(&["releases", "toolhunt"]);
    assert_exit(&fresh, 2);
    assert_contains(&stderr(&fresh), &["unknown app `toolhunt`"]);
    if backend == Backend::Embedded {
        assert!(
            !scratch.data_dir().join("drover.db").exists(),
            "reading created the database"
        );
    }
    let original = toolhunt_text();
    for (n, build_id) in ["v3", "v4", "v5"].iter().enumerate() {
        let manifest = scratch.write(
            "toolhunt.yaml",
            &original.replace("build-id: v3", &format!("build-id: {build_id}")),
        );
        let output = site.drover(&["deploy", "-f", path_str(&manifest), "-o", "json"]);
        assert_exit(&output, 0);
        assert_eq!(json_stdout(&output)["release"]["version"], n + 1);
    }

    let first_page = site.drover(&["releases", "toolhunt", "--limit", "2", "-o", "json"]);
    assert_exit(&first_page, 0);
    let page = json_stdout(&first_page);
    let versions = |page: &Value| -> Vec<u64> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|release| release["version"].as_u64().expect("a version"))
            .collect()
    };
    assert_eq!(versions(&page), [3, 2], "{page:#}");
    assert_eq!(page["total"], 3);
    let cursor = page["next_cursor"].as_str().expect("a next cursor");
    let last_page = site.drover(&[
        "releases", "toolhunt", "--limit", "2", "--cursor", cursor, "-o", "json",
    ]);
    assert_exit(&last_page, 0);
    let page = json_stdout(&last_page);
    assert_eq!(versions(&page), [1], "{page:#}");
    assert_eq!(page["next_cursor"], Value::Null);

    let text = site.drover(&["releases", "toolhunt", "--limit", "2"]);
    assert_exit(&text, 0);
    assert_contains(
        &stdout(&text),
        &[
            "release    3",
            "release    2",
            "2 of 3 releases; more with --cursor 2",
        ],
    );

    let shown = site.drover(&["release", "toolhunt", "2", "-o", "json"]);
    assert_exit(&shown, 0);
    let release = json_stdout(&shown);
    assert_eq!(release["version"], 2);
    assert_eq!(
        release["components"]["toolhunt-api"]["version"], "v4",
        "{release:#}"
    );
    assert_eq!(
        release["components"]["toolhunt-cleanup"]["deployment"],
        json_stdout(&site.drover(&["release", "toolhunt", "1", "-o", "json"]))["deployment"],
        "release 2 inherits the untouched cleanup from release 1"
    );
    let text = site.drover(&["release", "toolhunt", "2"]);
    assert_exit(&text, 0);
    assert_contains(
        &stdout(&text),
        &["toolhunt release 2", "toolhunt-api", "version v4"],
    );

    assert_bad_input(
        &site,
        &[
            (
                &["release", "toolhunt", "9"][..],
                "app `toolhunt` has no release 9",
            ),
            (&["release", "nope", "1"][..], "unknown app `nope`"),
            (&["releases", "nope"][..], "unknown app `nope`"),
            (
                &["releases", "toolhunt", "--cursor", "latest"][..],
                "invalid cursor `latest`",
            ),
            (
                &["releases", "toolhunt", "--limit", "0"][..],
                "invalid limit 0: it must be from 1 to 100",
            ),
            (
                &["releases", "Not_An_App"][..],
                "invalid app name `Not_An_App`",
            ),
        ],
    );
}

on_sites!(releases_are_listed_in_pages_and_shown_one_by_one: embedded, fleet);

/// `drover plan --save` keeps a plan and writes it to a file; `drover apply`
/// deploys exactly it (applied again: the same deployment), on the embedded
/// default and through the API alike. A plan made before another deployment
/// changed the app is refused, naming what moved (exit 2), and a file that holds
/// no plan is bad input.
fn a_saved_plan_is_applied_by_the_cli(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let manifest = toolhunt_manifest();
    let (first, second) = (
        scratch.path().join("first.json"),
        scratch.path().join("second.json"),
    );
    for file in [&first, &second] {
        let saved = site.drover(&["plan", "-f", path_str(&manifest), "--save", path_str(file)]);
        assert_exit(&saved, 0);
        assert_contains(
            &stdout(&saved),
            &["6 tasks in 4 stages", "saved plan", "drover apply"],
        );
    }
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(&first).expect("the saved plan"))
            .expect("a JSON plan");
    assert_eq!(plan["app"], "toolhunt");
    assert_eq!(plan["base_release"], Value::Null);
    let nothing = site.drover(&["deployments", "-o", "json"]);
    assert_exit(&nothing, 0);
    assert_eq!(json_stdout(&nothing)["total"], 0, "saving deploys nothing");

    let applied = site.drover(&["apply", path_str(&first), "-o", "json"]);
    assert_exit(&applied, 0);
    let deployment = json_stdout(&applied);
    assert_eq!(deployment["state"], "succeeded", "{deployment:#}");
    let ids = |tasks: &Value| -> Vec<String> {
        tasks
            .as_array()
            .expect("tasks")
            .iter()
            .map(|task| task["id"].as_str().expect("a task id").to_owned())
            .collect()
    };
    assert_eq!(
        ids(&deployment["tasks"]),
        ids(&plan["plan"]["tasks"]),
        "exactly the saved plan's tasks"
    );
    assert_eq!(deployment["release"]["version"], 1);
    let again = site.drover(&["apply", path_str(&first), "-o", "json"]);
    assert_exit(&again, 0);
    assert_eq!(
        json_stdout(&again)["id"],
        deployment["id"],
        "the same deployment"
    );

    let stale = site.drover(&["apply", path_str(&second)]);
    assert_exit(&stale, 2);
    assert_contains(
        &stderr(&stale),
        &[
            "app `toolhunt` changed since plan",
            "`toolhunt-api` was not running, now at `v3`",
            "make a new plan",
        ],
    );
    let listed = site.drover(&["deployments", "-o", "json"]);
    assert_exit(&listed, 0);
    assert_eq!(
        json_stdout(&listed)["total"],
        1,
        "a stale plan deploys nothing"
    );

    let not_a_plan = scratch.write("not-a-plan.json", "{\"plan\": 1}");
    assert_bad_input(
        &site,
        &[
            (&["apply", path_str(&not_a_plan)][..], "is not a saved plan"),
            (
                &["apply", "/nonexistent/plan.json"][..],
                "is not a saved plan",
            ),
        ],
    );
}

on_sites!(a_saved_plan_is_applied_by_the_cli: embedded, serve);

/// `drover hook create|list|rotate|delete` on the embedded default and through
/// the API alike: the secret is printed once and never listed; a second rotation
/// before `--finish` is refused; a registry hook takes no branch; bad ids and
/// kinds are bad input.
fn hooks_are_made_rotated_and_removed_by_the_cli(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let created = site.drover(&[
        "hook",
        "create",
        "toolhunt",
        "--kind",
        "github",
        "--branch",
        "release/1",
        "-o",
        "json",
    ]);
    assert_exit(&created, 0);
    let hook = json_stdout(&created);
    assert_eq!(hook["path"], "/v1/hooks/github/toolhunt");
    assert_eq!(hook["branch"], "release/1");
    let (id, secret) = (
        hook["id"].as_str().expect("an id").to_owned(),
        hook["secret"].as_str().expect("a secret").to_owned(),
    );
    let listed = site.drover(&["hook", "list"]);
    assert_exit(&listed, 0);
    assert_contains(
        &stdout(&listed),
        &[&id, "github", "release/1", "1 of 1 hooks"],
    );
    assert!(
        !stdout(&listed).contains(&secret),
        "a list never shows a secret"
    );

    let rotated = site.drover(&["hook", "rotate", &id]);
    assert_exit(&rotated, 0);
    assert_contains(
        &stdout(&rotated),
        &["rotated", "secret: whsec_", "--finish"],
    );
    assert!(!stdout(&rotated).contains(&secret), "a new secret");
    assert_contains(&stdout(&site.drover(&["hook", "list"])), &["rotating"]);
    assert_bad_input(
        &site,
        &[(&["hook", "rotate", &id][..], "finish that rotation first")],
    );
    let finished = site.drover(&["hook", "rotate", &id, "--finish", "-o", "json"]);
    assert_exit(&finished, 0);
    assert_eq!(json_stdout(&finished)["rotating"], false);
    let deleted = site.drover(&["hook", "delete", &id]);
    assert_exit(&deleted, 0);
    assert_contains(&stdout(&deleted), &["removed"]);
    assert_contains(&stdout(&site.drover(&["hook", "list"])), &["0 of 0 hooks"]);

    assert_bad_input(
        &site,
        &[
            (&["hook", "delete", &id][..], "unknown hook"),
            (&["hook", "rotate", "nope"][..], "is not a hook id"),
            (
                &["hook", "create", "toolhunt", "--kind", "gitlab"][..],
                "one of github, registry",
            ),
            (
                &[
                    "hook", "create", "toolhunt", "--kind", "registry", "--branch", "main",
                ][..],
                "has no branch",
            ),
            (
                &[
                    "hook", "create", "toolhunt", "--kind", "github", "--branch", "a..b",
                ][..],
                "invalid branch",
            ),
        ],
    );
}

on_sites!(hooks_are_made_rotated_and_removed_by_the_cli: embedded, serve);

/// A ref that looks like shell (`zzz";echo${IFS}hello;#`, a valid git branch
/// name) reaches the build step as data: `DROVER_REF` holds it exactly.
#[test]
fn a_branch_name_like_shell_reaches_the_step_as_data() {
    let scratch = Scratch::new();
    let config = scratch.exec_config(
        r#"printf '%s' "$DROVER_REF" > "$DROVER_DATA_DIR/ref"
echo "artifact=registry.example/$DROVER_COMPONENT:1" >> "$DROVER_OUTPUT"
"#,
        "true\n",
    );
    let branch = "zzz\";echo${IFS}hello;#";
    let manifest = scratch.write(
        "shop.yaml",
        &format!(
            "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {{repository: 'https://github.com/acme/shop', ref: '{branch}'}}\n    run: {{command: web}}\n"
        ),
    );
    let deployed = scratch.drover(&[
        "--config",
        path_str(&config),
        "deploy",
        "-f",
        path_str(&manifest),
    ]);
    assert_exit(&deployed, 0);
    let seen = std::fs::read_to_string(scratch.data_dir().join("ref")).expect("the step ran");
    assert_eq!(seen, branch, "the ref as it was written");
}

/// `drover completions SHELL` prints that shell's completions of every command,
/// without a config or a data directory; an unknown shell is bad input.
#[test]
fn completions_are_printed_for_each_shell() {
    let scratch = Scratch::new();
    for (shell, marks) in [
        ("bash", &["_drover()", "deploy", "--server"][..]),
        ("zsh", &["#compdef drover", "apply"][..]),
        ("fish", &["complete -c drover", "hook"][..]),
    ] {
        let output = scratch.drover(&["completions", shell]);
        assert_exit(&output, 0);
        assert_contains(&stdout(&output), marks);
    }
    assert!(!scratch.data_dir().exists(), "completions touch no data");
    let unknown = scratch.drover(&["completions", "tcsh"]);
    assert_exit(&unknown, 2);
    assert_contains(&stderr(&unknown), &["invalid value 'tcsh'", "bash"]);
}

/// On a terminal, `drover deploy` redraws one checklist (each task with its state
/// and time, or why it waits) instead of a line per step, and leaves it in place,
/// then the summary; piped, it prints a line per step (every other test reads
/// those). The terminal is `script`'s pseudo-terminal (util-linux).
#[test]
fn a_terminal_gets_a_live_checklist() {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let command = format!(
        "{} --data-dir {} --config {} deploy -f {}",
        env!("CARGO_BIN_EXE_drover"),
        scratch.data_dir().display(),
        config.display(),
        toolhunt_manifest().display()
    );
    let output = run_with_deadline(
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("DROVER_PROGRESS"),
    );
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert_contains(
        &text,
        &[
            "[✅] build:toolhunt-api",
            "[✅] deploy:toolhunt-flower",
            "\u{1b}[2K",
            "succeeded in",
        ],
    );
    assert!(
        !text.contains("build:toolhunt-api started"),
        "no line per step on a terminal: {text}"
    );
    let summary = text.rfind("succeeded in").expect("the summary");
    let last_check = text
        .rfind("[✅] deploy:toolhunt-flower")
        .expect("the checklist");
    assert!(
        last_check < summary,
        "the checklist stays above the summary"
    );
}

/// `drover apps`, `drover app` and `drover deployments` show what the tenant has,
/// in pages, on the embedded default and through the API alike; bad filters,
/// cursors and names are bad input (exit 2), and asking creates no database.
fn apps_and_deployments_are_listed_by_the_cli(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let none = site.drover(&["apps", "-o", "json"]);
    assert_exit(&none, 0);
    assert_eq!(json_stdout(&none)["total"], 0);
    let none = site.drover(&["deployments"]);
    assert_exit(&none, 0);
    assert_contains(&stdout(&none), &["0 of 0 deployments"]);
    let unknown = site.drover(&["app", "toolhunt"]);
    assert_exit(&unknown, 2);
    assert_contains(&stderr(&unknown), &["unknown app `toolhunt`"]);
    if backend == Backend::Embedded {
        assert!(
            !scratch.data_dir().join("drover.db").exists(),
            "reading created the database"
        );
    }
    let original = toolhunt_text();
    let mut deployed = Vec::new();
    for build_id in ["v3", "v4"] {
        let manifest = scratch.write(
            "toolhunt.yaml",
            &original.replace("build-id: v3", &format!("build-id: {build_id}")),
        );
        let output = site.drover(&["deploy", "-f", path_str(&manifest), "-o", "json"]);
        assert_exit(&output, 0);
        deployed.push(
            json_stdout(&output)["id"]
                .as_str()
                .expect("an id")
                .to_owned(),
        );
    }
    deployed.reverse();

    let apps = json_stdout(&site.drover(&["apps", "-o", "json"]));
    assert_eq!(apps["total"], 1, "{apps:#}");
    assert_eq!(apps["items"][0]["name"], "toolhunt");
    assert_eq!(apps["items"][0]["active_release"], 2);
    assert_eq!(apps["items"][0]["deployments"], 2);
    assert_contains(
        &stdout(&site.drover(&["apps"])),
        &[
            "toolhunt  release 2",
            "2 deployments  queue / rolling",
            "1 of 1 apps",
        ],
    );
    let app = json_stdout(&site.drover(&["app", "toolhunt", "-o", "json"]));
    assert_eq!(app["running"]["toolhunt-api"]["version"], "v4", "{app:#}");
    assert_contains(
        &stdout(&site.drover(&["app", "toolhunt"])),
        &[
            "toolhunt: release 2, 2 deployments, concurrency queue, strategy rolling",
            "toolhunt-api",
            "version v4",
        ],
    );

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("an id").to_owned())
            .collect()
    };
    let first = json_stdout(&site.drover(&["deployments", "--limit", "1", "-o", "json"]));
    assert_eq!(ids(&first), deployed[..1], "{first:#}");
    assert_eq!(first["total"], 2);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = json_stdout(&site.drover(&[
        "deployments",
        "--limit",
        "1",
        "--cursor",
        cursor,
        "-o",
        "json",
    ]));
    assert_eq!(ids(&rest), deployed[1..], "{rest:#}");
    assert_eq!(rest["next_cursor"], Value::Null);
    for filter in [
        &["--state", "failed"][..],
        &["--app", "nope"][..],
        &["--since", "2999-01-01T00:00:00Z"][..],
    ] {
        let args: Vec<&str> = ["deployments", "-o", "json"]
            .iter()
            .chain(filter)
            .copied()
            .collect();
        let page = json_stdout(&site.drover(&args));
        assert_eq!(page["total"], 0, "{filter:?}: {page:#}");
    }
    let held = json_stdout(&site.drover(&[
        "deployments",
        "--app",
        "toolhunt",
        "--state",
        "succeeded",
        "--since",
        "2000-01-01T00:00:00+02:00",
        "-o",
        "json",
    ]));
    assert_eq!(ids(&held), deployed);
    assert_contains(
        &stdout(&site.drover(&["deployments"])),
        &[
            &deployed[0],
            "succeeded",
            "toolhunt",
            "release 2",
            "2 of 2 deployments",
        ],
    );

    assert_bad_input(
        &site,
        &[
            (
                &["deployments", "--state", "done"][..],
                "one of pending, running",
            ),
            (&["deployments", "--since", "yesterday"][..], "RFC 3339"),
            (
                &["deployments", "--cursor", "latest"][..],
                "invalid cursor `latest`",
            ),
            (
                &["deployments", "--app", "Not_An_App"][..],
                "invalid app name `Not_An_App`",
            ),
            (
                &["apps", "--limit", "0"][..],
                "invalid limit 0: it must be from 1 to 100",
            ),
            (&["app", "nope"][..], "unknown app `nope`"),
        ],
    );
}

on_sites!(apps_and_deployments_are_listed_by_the_cli: embedded, fleet);

/// `drover token create|list|revoke` manage the tenant's tokens, on the embedded
/// default and through the API alike; with `--server`, a `deploy` token deploys but
/// manages no tokens, and a revoked one is refused. Bad scopes, expiries and ids
/// are bad input (exit 2).
fn tokens_are_made_listed_and_revoked_by_the_cli(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let created = site.drover(&[
        "token",
        "create",
        "--name",
        "ci",
        "--scope",
        "deploy",
        "--expires",
        "30d",
        "-o",
        "json",
    ]);
    assert_exit(&created, 0);
    let ci = json_stdout(&created);
    assert_eq!(ci["scope"], "deploy", "{ci:#}");
    assert!(ci["expires_at"].is_string(), "{ci:#}");
    let ci_token = ci["token"].as_str().expect("the secret").to_owned();
    let ci_id = ci["id"].as_str().expect("an id").to_owned();
    let text = site.drover(&["token", "create"]);
    assert_exit(&text, 0);
    assert_contains(
        &stdout(&text),
        &["(read) created", "token: drover_", "cannot be shown again"],
    );

    let listed = site.drover(&["token", "list"]);
    assert_exit(&listed, 0);
    assert_contains(&stdout(&listed), &[&ci_id, "deploy", "ci", "valid until"]);
    assert!(!stdout(&listed).contains(&ci_token), "{}", stdout(&listed));

    if site.remote().is_some() {
        let with_ci =
            |args: &[&str]| run_with_deadline(site.command(args).env("DROVER_TOKEN", &ci_token));
        let manifest = toolhunt_manifest();
        assert_exit(&with_ci(&["deploy", "-f", path_str(&manifest)]), 0);
        let refused = with_ci(&["token", "list"]);
        assert_exit(&refused, 2);
        assert_contains(&stderr(&refused), &["scope `deploy`", "needs `admin`"]);
        let revoked = site.drover(&["token", "revoke", &ci_id]);
        assert_exit(&revoked, 0);
        assert_contains(&stdout(&revoked), &[&format!("token {ci_id} revoked")]);
        let after = with_ci(&["apps"]);
        assert_exit(&after, 2);
        assert_contains(&stderr(&after), &["revoked"]);
    } else {
        assert_exit(&site.drover(&["token", "revoke", &ci_id]), 0);
    }
    let page = json_stdout(&site.drover(&["token", "list", "-o", "json"]));
    let ci_listed = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|token| token["id"] == ci_id.as_str())
        .cloned()
        .expect("the revoked token is listed");
    assert!(ci_listed["revoked_at"].is_string(), "{page:#}");

    // Through the API, the audit trail names what the tokens did; the embedded
    // default's commands do not go through the API, and leave none.
    let trail = json_stdout(&site.drover(&["audit", "-o", "json"]));
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|entry| entry["action"].as_str().expect("an action"))
        .collect();
    if site.remote().is_some() {
        assert_eq!(
            actions,
            [
                "token.revoked",
                "deployment.started",
                "token.created",
                "token.created"
            ],
            "{trail:#}"
        );
        assert_contains(
            &stdout(&site.drover(&["audit"])),
            &["token.revoked", &ci_id, "4 of 4 entries"],
        );
    } else {
        assert_eq!(actions, Vec::<&str>::new());
    }

    assert_bad_input(
        &site,
        &[
            (
                &["token", "create", "--scope", "root"][..],
                "one of read, deploy, admin",
            ),
            (
                &["token", "create", "--expires", "0s"][..],
                "longer than nothing",
            ),
            (&["token", "create", "--expires", "soon"][..], "--expires"),
            (&["token", "create", "--name", ""][..], "invalid token name"),
            (&["token", "revoke", "not-a-token"][..], "is not a token id"),
            (
                &["token", "revoke", "01900000-0000-7000-8000-000000000000"][..],
                "unknown token",
            ),
        ],
    );
}

on_sites!(tokens_are_made_listed_and_revoked_by_the_cli: embedded, serve);

/// The app `web` (a build, then a deploy) on a driver whose deploy step touches
/// `run/started` and waits for `run/go`: the config and the manifest.
fn gated_deploy(scratch: &Scratch) -> (PathBuf, &'static str) {
    scratch.write("steps/build.sh", "true\n");
    scratch.write(
        "steps/deploy.sh",
        "mkdir -p ./run\ntouch ./run/started\nwhile [[ ! -e ./run/go ]]; do sleep 0.05; done\n",
    );
    let config = scratch.write(
        "drover.toml",
        "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\ntimeout = \"5m\"\n",
    );
    let app = "config-version: 0.1\ncomponents:\n  web:\n    type: one-off\n    build: {image: registry.example/web:1}\n    run: {command: web}\n";
    (config, app)
}

/// Starts the gated deployment of `app` ([`gated_deploy`]) in another process
/// than the follower: through the API on a served site, else `drover deploy`
/// (returned, to wait for); waits until its deploy step started and returns the
/// deployment's id.
fn start_gated(
    site: &Site<'_>,
    scratch: &Scratch,
    app: &str,
) -> (String, Option<std::process::Child>) {
    let deploying = match site.remote() {
        Some(remote) => {
            remote.request(reqwest::Method::POST, "/v1/apps/web/deployments", Some(app));
            None
        }
        None => Some(
            site.command(&["deploy", "-f", path_str(&scratch.write("web.yaml", app))])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("failed to start drover deploy"),
        ),
    };
    let started = Instant::now();
    while !scratch.path().join("run/started").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deploy step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = json_stdout(&site.drover(&["deployments", "-o", "json"]));
    let id = listed["items"][0]["id"]
        .as_str()
        .expect("the deployment")
        .to_owned();
    (id, deploying)
}

/// Runs the follower `args`, opens the gate of the step [`start_gated`] started,
/// and waits (up to 60 s) for the follower to end: its exit status and output.
fn follow_past_the_gate(
    site: &Site<'_>,
    scratch: &Scratch,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let mut follower = site
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start the follower");
    let (out, errors) = (drain(follower.stdout.take()), drain(follower.stderr.take()));
    std::fs::write(scratch.path().join("run/go"), "").expect("failed to write a marker");
    let ended = Instant::now();
    let status = loop {
        if let Some(status) = follower.try_wait().expect("the follower") {
            break status;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(60),
            "the follower never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        String::from_utf8_lossy(&out.join().expect("stdout")).into_owned(),
        String::from_utf8_lossy(&errors.join().expect("stderr")).into_owned(),
    )
}

/// `drover status ID --follow` prints each step of a deployment another process
/// runs until it ends (through the API: from its live events), then the summary,
/// and exits as the deployment ended.
fn status_follow_shows_each_step_until_the_end(backend: Backend) {
    let scratch = Scratch::new();
    let (config, app) = gated_deploy(&scratch);
    let site = Site::start(&scratch, backend, &config);
    let (id, deploying) = start_gated(&site, &scratch, app);
    let (status, out, errors) = follow_past_the_gate(&site, &scratch, &["status", &id, "--follow"]);
    assert!(status.success(), "{status:?}\n{out}\n{errors}");
    assert_contains(&out, &["deploy:web", "✅", "succeeded", "release 1"]);
    if let Some(mut deploy) = deploying {
        assert!(deploy.wait().expect("drover deploy").success());
    }
}

on_sites!(status_follow_shows_each_step_until_the_end: embedded, serve);

/// `drover logs ID TASK` prints what a step printed so far, while it runs (its
/// worker ships the lines live); `--follow` prints the rest as it comes and exits
/// as the task ended. Bad ids are bad input.
fn logs_are_shown_while_the_step_runs_and_followed_to_its_end(backend: Backend) {
    let scratch = Scratch::new();
    let (config, app) = gated_deploy(&scratch);
    scratch.write(
        "steps/deploy.sh",
        "echo 'deploying: first half'\nmkdir -p ./run\ntouch ./run/started\nwhile [[ ! -e ./run/go ]]; do sleep 0.05; done\necho 'deploying: second half'\n",
    );
    let site = Site::start(&scratch, backend, &config);
    let (id, deploying) = start_gated(&site, &scratch, app);
    let started = Instant::now();
    // While the step waits: its first line, shipped live, and not the second.
    let shown = loop {
        let shown = site.drover(&["logs", &id, "deploy:web"]);
        assert_exit(&shown, 0);
        if stdout(&shown).contains("first half") {
            break stdout(&shown);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first line never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!shown.contains("second half"), "{shown}");

    let (status, out, errors) =
        follow_past_the_gate(&site, &scratch, &["logs", &id, "deploy:web", "--follow"]);
    assert!(status.success(), "{status:?}\n{out}\n{errors}");
    assert_eq!(
        out, "deploying: first half\ndeploying: second half\n",
        "{errors}"
    );
    if let Some(mut deploy) = deploying {
        assert!(deploy.wait().expect("drover deploy").success());
    }
    assert_bad_input(
        &site,
        &[
            (&["logs", &id, "nonsense"][..], "is not a task id"),
            (
                &["logs", &id, "deploy:nope"][..],
                "has no task `deploy:nope`",
            ),
            (
                &["logs", "not-an-id", "deploy:web"][..],
                "is not a deployment id",
            ),
        ],
    );
}

on_sites!(logs_are_shown_while_the_step_runs_and_followed_to_its_end: embedded, serve);

/// The Server-Sent Events of deployment `id` on a served site (sent `last_id` as
/// `Last-Event-ID`), read until the stream ends, or until `at_most` were read: then
/// the connection is dropped. Each is its name, id and data.
fn site_events(
    remote: &crate::site::Remote,
    id: &str,
    last_id: Option<&str>,
    at_most: usize,
) -> Vec<(String, String, Value)> {
    block_on(async {
        let mut request = reqwest::Client::new()
            .get(format!("{}/v1/deployments/{id}/events", remote.url))
            .bearer_auth(&remote.token);
        if let Some(last_id) = last_id {
            request = request.header("last-event-id", last_id);
        }
        let mut response = request.send().await.expect("the API answers");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let (mut text, mut events) = (String::new(), Vec::new());
        let read = async {
            while events.len() < at_most {
                let Some(chunk) = response.chunk().await.expect("a chunk") else {
                    break;
                };
                text.push_str(&String::from_utf8_lossy(&chunk));
                events.extend(take_sse_events(&mut text));
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the events within 60 s");
        // A chunk may hold more than asked for: those count as not read.
        events.truncate(at_most);
        events
    })
}

/// On a fleet, a follower of a deployment's events that disconnects while the
/// deployment runs and reconnects with `Last-Event-ID` has seen every event exactly
/// once: what it saw before and after make the stream a new follower is sent.
fn a_follower_reconnected_on_the_fleet_sees_every_event_once(backend: Backend) {
    let scratch = Scratch::new();
    let (config, app) = gated_deploy(&scratch);
    let run_dir = scratch.path().join("run");
    let site = Site::start(&scratch, backend, &config);
    let remote = site.remote().expect("a served site");
    let submitted = remote.request(reqwest::Method::POST, "/v1/apps/web/deployments", Some(app));
    let id = submitted["id"].as_str().expect("an id").to_owned();
    let started = Instant::now();
    while !run_dir.join("started").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deploy step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The build has ended and the deploy runs: five events so far. Four are read,
    // then the connection drops.
    let live = site_events(remote, &id, None, 4);
    assert_eq!(live.len(), 4, "{live:?}");
    std::fs::write(run_dir.join("go"), "").expect("failed to write a marker");
    let rest = site_events(remote, &id, Some(&live[3].1), usize::MAX);
    let whole = site_events(remote, &id, None, usize::MAX);
    let followed: Vec<(String, String, Value)> = live.into_iter().chain(rest).collect();
    assert_eq!(followed, whole);
    let steps: Vec<String> = whole
        .iter()
        .map(|(_, _, data)| {
            format!(
                "{} {}",
                data["task"].as_str().unwrap_or("end"),
                data["state"]
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "build:web \"ready\"",
            "build:web \"running\"",
            "build:web \"succeeded\"",
            "deploy:web \"ready\"",
            "deploy:web \"running\"",
            "deploy:web \"succeeded\"",
            "end \"succeeded\"",
        ]
    );
}

on_sites!(a_follower_reconnected_on_the_fleet_sees_every_event_once: fleet);

/// No secret reaches a log: over a whole run on the fleet (tokens made, a
/// deployment through the API with a client logging at `debug`, its events
/// followed, a GitHub hook made and its signed push deploying), neither the
/// roles' logs nor the client's name a token or a hook's secret.
fn no_token_reaches_a_log(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.write("noop.toml", "[driver]\nkind = \"noop\"\n");
    let site = Site::start(&scratch, backend, &config);
    let admin = site.remote().expect("a served site").token.clone();
    let created = site.drover(&["token", "create", "--scope", "deploy", "-o", "json"]);
    assert_exit(&created, 0);
    let secret = json_stdout(&created)["token"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let manifest = toolhunt_manifest();
    let deployed = run_with_deadline(
        site.command(&["deploy", "-f", path_str(&manifest)])
            .env("DROVER_TOKEN", &secret)
            .env("DROVER_LOG", "debug"),
    );
    assert_exit(&deployed, 0);
    // A GitHub hook's push, signed with its secret, deploys on the fleet too.
    let hook = site.drover(&[
        "hook", "create", "toolhunt", "--kind", "github", "-o", "json",
    ]);
    assert_exit(&hook, 0);
    let hook_secret = json_stdout(&hook)["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let push = serde_json::json!({
        "ref": "refs/heads/main",
        "after": "ab".repeat(20),
        "repository": {"full_name": "wikimedia/toolhunt", "clone_url": "https://github.com/wikimedia/toolhunt.git"},
    })
    .to_string();
    let signature = shared::hooks::sign(&hook_secret, &[push.as_bytes()]);
    let (status, answer) = site.remote().expect("a served site").deliver(
        "/v1/hooks/github/toolhunt",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "fleet-push-1"),
            ("x-hub-signature-256", &signature),
        ],
        &push,
    );
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (202, Some("deploying")),
        "{answer}"
    );
    let pushed = answer["deployments"][0]
        .as_str()
        .expect("a deployment")
        .to_owned();
    let followed = site.drover(&["status", &pushed, "--follow"]);
    assert_exit(&followed, 0);
    assert_contains(&stdout(&followed), &["build:toolhunt-api", "release 2"]);
    let logs = format!(
        "{}\n{}",
        crate::site::role_logs(&scratch),
        stderr(&deployed)
    );
    assert!(
        logs.contains("deployment submitted")
            && logs.contains("token created")
            && logs.contains("push deploying"),
        "the logs say what happened: {logs}"
    );
    for token in [&admin, &secret, &hook_secret] {
        assert!(!logs.contains(token.as_str()), "a token was logged");
        assert!(
            !logs.contains(&token[token.len() - 16..]),
            "part of a token was logged"
        );
    }
}

on_sites!(no_token_reaches_a_log: fleet);

/// The app of the cancel tests: `slow`, whose first deploy runs until it is killed
/// (it notes SIGTERM and carries on, so only SIGKILL after the 1s grace period ends
/// it), and `after`, which waits for it.
const CANCEL_APP: &str = "config-version: 0.1
components:
  slow:
    type: continuous
    build: {image: registry.example/slow:1}
    run: {command: slow}
  after:
    type: one-off
    build: {image: registry.example/after:1}
    run: {command: after}
    wait-for: [slow]
";

const CANCEL_DEPLOY_STEP: &str = r#"mkdir -p ./run
if [[ $DROVER_COMPONENT == slow && ! -e ./run/quick ]]; then
    echo "$DROVER_DEPLOYMENT" > ./run/deployment.tmp
    trap 'echo term >> ./run/term' TERM
    sleep 60 &
    echo $! > ./run/child.pid
    echo $$ > ./run/step.pid
    mv ./run/deployment.tmp ./run/deployment
    while :; do sleep 0.2 || :; done
fi
echo "$DROVER_DEPLOYMENT $DROVER_COMPONENT" >> ./run/deployed
"#;

/// Cancels a deployment while its step runs: the step gets SIGTERM, then SIGKILL
/// after the grace period, with its whole process group; the waiting task is
/// cancelled; the deployment ends `cancelled` without a release; cancelling it
/// again is bad input; and the next deployment of the same component runs at once
/// (no lock was left behind). Through the API, a deployment submitted meanwhile
/// waits for the lock, `drover status` names the deployment holding it, and it
/// proceeds once the cancelled step is gone.
fn cancel_stops_a_running_deployment(backend: Backend) {
    let scratch = Scratch::new();
    scratch.write("steps/build.sh", "true\n");
    scratch.write(
        "steps/deploy.sh",
        &format!("set -uo pipefail\n{CANCEL_DEPLOY_STEP}"),
    );
    let config = scratch.write(
        "drover.toml",
        "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\ntimeout = \"5m\"\ngrace = \"1s\"\n",
    );
    let manifest = scratch.write("shop.yaml", CANCEL_APP);
    let run_dir = scratch.path().join("run");
    let site = Site::start(&scratch, backend, &config);
    let command = |args: &[&str]| site.command(args);
    let deploy_args = ["deploy", "-f", path_str(&manifest), "-o", "json"];
    let mut first = command(&deploy_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start drover deploy");
    let first_stdout = drain(first.stdout.take());
    let first_stderr = drain(first.stderr.take());

    let started = Instant::now();
    while !run_dir.join("deployment").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the slow step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = std::fs::read_to_string(run_dir.join("deployment"))
        .expect("the deployment id")
        .trim()
        .to_owned();
    let read_pid = |name: &str| -> u32 {
        std::fs::read_to_string(run_dir.join(name))
            .expect("a pid file")
            .trim()
            .parse()
            .expect("a pid")
    };
    let (step, child) = (read_pid("step.pid"), read_pid("child.pid"));
    assert!(running(step) && running(child), "the step runs");
    // The other component's build, dispatched with the slow one's, has ended (on a
    // loaded machine it can still be on its way): only `deploy:after` is left.
    loop {
        let status = run_with_deadline(&mut command(&["status", &id, "-o", "json"]));
        assert_exit(&status, 0);
        let deployment = json_stdout(&status);
        if task_states(&deployment)["build:after"] == "succeeded" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "build:after never ended: {deployment:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Through the API, a second deployment of the app waits for the component's
    // lock meanwhile, and `drover status` names the deployment holding it.
    let waiting = site.remote().map(|remote| {
        std::fs::write(run_dir.join("quick"), "").expect("failed to write a marker");
        let submitted = remote.request(
            reqwest::Method::POST,
            "/v1/apps/shop/deployments",
            Some(CANCEL_APP),
        );
        let waiting = submitted["id"].as_str().expect("an id").to_owned();
        let asked = Instant::now();
        loop {
            let status = run_with_deadline(&mut command(&["status", &waiting]));
            assert_exit(&status, 0);
            if stdout(&status).contains(&format!(
                "waiting for the component's lock, held by deployment {id} (deploy:slow)"
            )) {
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "the second deployment never waited for the lock: {}",
                stdout(&status)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        waiting
    });

    let cancelled = run_with_deadline(&mut command(&["cancel", &id]));
    let cancelled_at = Instant::now();
    assert_exit(&cancelled, 0);
    assert_contains(
        &stdout(&cancelled),
        &[
            &format!("deployment {id} is being cancelled"),
            "1 task will not run; 1 running step gets SIGTERM",
        ],
    );
    while running(step) || running(child) {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(10),
            "the step's process group outlived its cancellation by 10s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_after = cancelled_at.elapsed();
    // Up to a second to learn of it (lease extension), one of grace, and slack.
    assert!(
        stopped_after < Duration::from_millis(3500),
        "the step died {stopped_after:?} after the cancellation; its grace period is 1s"
    );
    assert!(
        std::fs::read_to_string(run_dir.join("term")).is_ok_and(|text| text.contains("term")),
        "the step got no SIGTERM before it was killed"
    );

    let status = first.wait().expect("drover deploy ends");
    let output = Output {
        status,
        stdout: first_stdout.join().expect("stdout"),
        stderr: first_stderr.join().expect("stderr"),
    };
    assert_exit(&output, 1);
    let deployment = json_stdout(&output);
    assert_eq!(deployment["state"], "cancelled", "{deployment:#}");
    assert_eq!(deployment["release"], Value::Null, "{deployment:#}");
    let states = task_states(&deployment);
    assert_eq!(states["deploy:slow"], "cancelled", "{deployment:#}");
    assert_eq!(states["deploy:after"], "cancelled", "{deployment:#}");
    let deployed = std::fs::read_to_string(run_dir.join("deployed")).unwrap_or_default();
    assert!(
        !deployed.contains(&id),
        "a task of the cancelled deployment completed: {deployed}"
    );

    let again = run_with_deadline(&mut command(&["cancel", &id]));
    assert_exit(&again, 2);
    assert_contains(&stderr(&again), &["has already ended (cancelled)"]);
    let unknown = run_with_deadline(&mut command(&[
        "cancel",
        "01900000-0000-7000-8000-000000000000",
    ]));
    assert_exit(&unknown, 2);

    // The component's lock is free: the waiting deployment proceeds, and the next
    // one runs at once.
    if let Some(waiting) = waiting {
        let asked = Instant::now();
        let status = loop {
            let status = run_with_deadline(&mut command(&["status", &waiting, "-o", "json"]));
            assert_exit(&status, 0);
            let status = json_stdout(&status);
            if ["succeeded", "failed", "cancelled"]
                .contains(&status["state"].as_str().unwrap_or(""))
            {
                break status;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(20),
                "the waiting deployment did not proceed: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status["state"], "succeeded", "{status:#}");
        assert_eq!(status["release"]["version"], 1, "{status:#}");
    }
    std::fs::write(run_dir.join("quick"), "").expect("failed to write a marker");
    let next_started = Instant::now();
    let next = run_with_deadline(&mut command(&deploy_args));
    assert_exit(&next, 0);
    let next_took = next_started.elapsed();
    assert_eq!(json_stdout(&next)["release"]["version"], 1);
    assert!(
        next_took < Duration::from_secs(15),
        "the next deployment took {next_took:?}: was the component's lock left behind?"
    );
}

on_sites!(cancel_stops_a_running_deployment: embedded, serve, fleet);

/// `drover retry` runs a failed deployment's failed and skipped tasks again and
/// nothing else: here `api`'s deploy failed (so `web`, which waits for it, was
/// skipped) while `cache` deployed; the retry deploys `api` and `web` only, and
/// writes release 1. Retrying a deployment that did not fail is bad input.
fn retry_runs_only_the_failed_and_skipped_tasks(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.exec_config(
        "true\n",
        "mkdir -p ./run\necho \"$DROVER_COMPONENT $DROVER_ATTEMPT\" >> ./run/deployed\nif [[ $DROVER_COMPONENT == api && ! -e ./run/fixed ]]; then echo 'api is broken' >&2; exit 1; fi\n",
    );
    let manifest = scratch.write(
        "shop.yaml",
        "config-version: 0.1
components:
  api:
    type: continuous
    build: {image: registry.example/api:1}
    run: {command: api}
  web:
    type: continuous
    build: {image: registry.example/web:1}
    run: {command: web}
    wait-for: [api]
  cache:
    type: continuous
    build: {image: registry.example/cache:1}
    run: {command: cache}
",
    );
    let site = Site::start(&scratch, backend, &config);
    let failed = site.drover(&["deploy", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&failed, 1);
    let deployment = json_stdout(&failed);
    let id = deployment["id"].as_str().expect("an id").to_owned();
    let states = task_states(&deployment);
    assert_eq!(states["deploy:api"], "failed");
    assert_eq!(states["deploy:web"], "skipped");
    assert_eq!(states["deploy:cache"], "succeeded");

    std::fs::write(scratch.path().join("run/fixed"), "").expect("failed to write a marker");
    let retried = site.drover(&["retry", &id, "-o", "json"]);
    assert_exit(&retried, 0);
    let deployment = json_stdout(&retried);
    assert_eq!(deployment["id"], id.as_str());
    assert_eq!(deployment["state"], "succeeded", "{deployment:#}");
    assert_eq!(deployment["release"]["version"], 1, "{deployment:#}");
    let deployed =
        std::fs::read_to_string(scratch.path().join("run/deployed")).expect("the step log");
    let lines: Vec<&str> = deployed.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.starts_with("cache "))
            .count(),
        1,
        "{deployed}"
    );
    assert_eq!(
        lines.iter().filter(|line| line.starts_with("api ")).count(),
        2,
        "{deployed}"
    );
    assert!(
        lines.contains(&"api 2"),
        "api's retry is its second attempt: {deployed}"
    );
    assert_eq!(
        lines.iter().filter(|line| line.starts_with("web ")).count(),
        1,
        "{deployed}"
    );

    let again = site.drover(&["retry", &id]);
    assert_exit(&again, 2);
    assert_contains(
        &stderr(&again),
        &["is succeeded: only a failed deployment can be retried"],
    );
    let unknown = site.drover(&["retry", "01900000-0000-7000-8000-000000000000"]);
    assert_exit(&unknown, 2);
    assert_contains(&stderr(&unknown), &["unknown deployment"]);
}

on_sites!(retry_runs_only_the_failed_and_skipped_tasks: embedded, fleet);

/// `drover rollback APP --to N` deploys release N again without building: release
/// 3 holds release 1's artifacts, and the deployment that made release 2 is
/// `rolled_back`. An unknown release or app is bad input.
fn rollback_deploys_an_earlier_release_again_without_building(backend: Backend) {
    let scratch = Scratch::new();
    let site = Site::start(&scratch, backend, &toolhunt_config());
    let first = site.drover(&["deploy", "-f", path_str(&toolhunt_manifest()), "-o", "json"]);
    assert_exit(&first, 0);
    let original = toolhunt_text();
    let edited = scratch.write(
        "toolhunt.yaml",
        &original.replace("build-id: v3", "build-id: v4"),
    );
    let second = site.drover(&["deploy", "-f", path_str(&edited), "-o", "json"]);
    assert_exit(&second, 0);
    let second = json_stdout(&second);
    assert_eq!(second["release"]["version"], 2);

    let rollback = site.drover(&["rollback", "toolhunt", "--to", "1", "-o", "json"]);
    assert_exit(&rollback, 0);
    let rollback = json_stdout(&rollback);
    assert_eq!(rollback["state"], "succeeded", "{rollback:#}");
    assert_eq!(rollback["release"]["version"], 3, "{rollback:#}");
    let states = task_states(&rollback);
    let every_deploy: Vec<String> = TOOLHUNT
        .iter()
        .map(|component| format!("deploy:{component}"))
        .collect();
    assert_eq!(
        states.keys().cloned().collect::<Vec<_>>(),
        every_deploy,
        "every component is deployed again and nothing is built: {rollback:#}"
    );

    let release = |version: &str| {
        let output = site.drover(&["release", "toolhunt", version, "-o", "json"]);
        assert_exit(&output, 0);
        json_stdout(&output)
    };
    let (one, two, three) = (release("1"), release("2"), release("3"));
    for component in TOOLHUNT {
        assert_eq!(
            three["components"][component]["artifact"], one["components"][component]["artifact"],
            "{component} runs release 1's artifact again"
        );
        assert_eq!(
            three["components"][component]["version"], one["components"][component]["version"],
            "{component}"
        );
    }
    assert_ne!(
        two["components"]["toolhunt-api"]["artifact"],
        one["components"]["toolhunt-api"]["artifact"],
        "release 2 built a new artifact"
    );
    let replaced = site.drover(&[
        "status",
        second["id"].as_str().expect("an id"),
        "-o",
        "json",
    ]);
    assert_exit(&replaced, 0);
    let replaced = json_stdout(&replaced);
    assert_eq!(replaced["state"], "rolled_back");
    assert_eq!(replaced["rolled_back_by"], rollback["id"], "{replaced:#}");

    assert_bad_input(
        &site,
        &[
            (
                &["rollback", "toolhunt", "--to", "9"][..],
                "app `toolhunt` has no release 9",
            ),
            (
                &["rollback", "nope", "--to", "1"][..],
                "app `nope` has no release 1",
            ),
        ],
    );
}

on_sites!(rollback_deploys_an_earlier_release_again_without_building: embedded, fleet);

/// The whole story of an app on the example: deploy (release 1); change one
/// component (release 2, the others inherited); roll back to 1 (release 3 with
/// release 1's artifacts, no build); an external update of a component without
/// `on-update` (release 4, nothing deployed); an external update of one with
/// `on-update: {deploy: true}` (release 5, one deploy task only). Sending an update
/// again records nothing more.
fn the_whole_story_of_an_app(backend: Backend) {
    let scratch = Scratch::new();
    let data_dir = scratch.data_dir();
    let site = Site::start(&scratch, backend, &toolhunt_config());
    let original = toolhunt_text();
    let with_on_update = original.replace(
        "    wait-for: [toolhunt-api]\n  toolhunt-flower:",
        "    wait-for: [toolhunt-api]\n    on-update: {deploy: true}\n  toolhunt-flower:",
    );
    assert_ne!(with_on_update, original, "the example changed");
    let first = scratch.write("v1/toolhunt.yaml", &with_on_update);
    let second = scratch.write(
        "v2/toolhunt.yaml",
        &with_on_update.replace("build-id: v3", "build-id: v4"),
    );
    let deploy = |manifest: &Path| {
        let output = site.drover(&["deploy", "-f", path_str(manifest), "-o", "json"]);
        assert_exit(&output, 0);
        json_stdout(&output)
    };
    let release = |version: u32| {
        let output = site.drover(&["release", "toolhunt", &version.to_string(), "-o", "json"]);
        assert_exit(&output, 0);
        json_stdout(&output)
    };
    let artifact = |release: &Value, component: &str| {
        release["components"][component]["artifact"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // 1. Deploy: release 1.
    assert_eq!(deploy(&first)["release"]["version"], 1);
    let one = release(1);

    // 2. A new build id for toolhunt-api: release 2 rebuilds its family, inherits cleanup.
    let changed = deploy(&second);
    assert_eq!(changed["release"]["version"], 2);
    let two = release(2);
    assert_ne!(
        artifact(&two, "toolhunt-api"),
        artifact(&one, "toolhunt-api")
    );
    assert_eq!(
        two["components"]["toolhunt-cleanup"],
        one["components"]["toolhunt-cleanup"]
    );

    // 3. Roll back to 1: release 3 runs release 1's artifacts; nothing was built.
    let rollback = site.drover(&["rollback", "toolhunt", "--to", "1", "-o", "json"]);
    assert_exit(&rollback, 0);
    let rollback = json_stdout(&rollback);
    assert_eq!(rollback["release"]["version"], 3, "{rollback:#}");
    assert!(
        task_states(&rollback)
            .keys()
            .all(|task| task.starts_with("deploy:")),
        "a rollback builds nothing: {rollback:#}"
    );
    let three = release(3);
    for component in TOOLHUNT {
        assert_eq!(
            artifact(&three, component),
            artifact(&one, component),
            "{component}"
        );
    }

    // 4. An external update of toolhunt-api (no on-update): recorded, not deployed.
    let api_before = state_file(&data_dir, "toolhunt-api");
    let recorded = site.drover(&[
        "external-update",
        "toolhunt",
        "toolhunt-api",
        "--artifact",
        "registry.example/toolhunt-api@sha256:feed",
        "--version",
        "v3.1",
        "--sha",
        "0123abc",
    ]);
    assert_exit(&recorded, 0);
    assert_contains(&stdout(&recorded), &["recorded, not deployed: release 4"]);
    let four = release(4);
    assert_eq!(
        artifact(&four, "toolhunt-api"),
        "registry.example/toolhunt-api@sha256:feed"
    );
    assert_eq!(four["components"]["toolhunt-api"]["version"], "v3.1");
    assert_eq!(
        state_file(&data_dir, "toolhunt-api"),
        api_before,
        "a recorded update deploys nothing"
    );
    let again = site.drover(&[
        "external-update",
        "toolhunt",
        "toolhunt-api",
        "--artifact",
        "registry.example/toolhunt-api@sha256:feed",
        "-o",
        "json",
    ]);
    assert_exit(&again, 0);
    let again = json_stdout(&again);
    assert_eq!(again["release"], 4, "{again:#}");
    assert_eq!(again["duplicate"], true, "{again:#}");

    // 5. An external update of toolhunt-cleanup (on-update: deploy): one deploy task.
    let deployed = site.drover(&[
        "external-update",
        "toolhunt",
        "toolhunt-cleanup",
        "--artifact",
        "registry.example/cleanup:1.5",
        "--version",
        "1.5",
        "-o",
        "json",
    ]);
    assert_exit(&deployed, 0);
    let deployed = json_stdout(&deployed);
    assert_eq!(deployed["message"], "recorded, deployed", "{deployed:#}");
    assert_eq!(deployed["release"], 5, "{deployed:#}");
    let tasks: Vec<&str> = deployed["deployment"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["id"].as_str())
        .collect();
    assert_eq!(tasks, ["deploy:toolhunt-cleanup"], "{deployed:#}");
    let five = release(5);
    assert_eq!(
        artifact(&five, "toolhunt-cleanup"),
        "registry.example/cleanup:1.5"
    );
    assert_eq!(five["components"]["toolhunt-cleanup"]["version"], "1.5");
    assert_eq!(
        five["components"]["toolhunt-api"], four["components"]["toolhunt-api"],
        "the rest is inherited from release 4"
    );
    assert_eq!(
        state_file(&data_dir, "toolhunt-cleanup")["artifact"],
        "registry.example/cleanup:1.5"
    );

    let listed = site.drover(&["releases", "toolhunt", "-o", "json"]);
    assert_exit(&listed, 0);
    assert_eq!(json_stdout(&listed)["total"], 5);
    assert_bad_input(
        &site,
        &[
            (
                &["external-update", "toolhunt", "nope", "--artifact", "x"][..],
                "app `toolhunt` has no component `nope`",
            ),
            (
                &["external-update", "nope", "api", "--artifact", "x"][..],
                "unknown app `nope`: nothing was ever deployed under that name",
            ),
            (
                &[
                    "external-update",
                    "toolhunt",
                    "toolhunt-api",
                    "--artifact",
                    "two words",
                ][..],
                "the artifact must be 1 to 1024 characters",
            ),
        ],
    );
}

on_sites!(the_whole_story_of_an_app: embedded, fleet);

/// A deploy step for the racing tests: it notes its start and end (or SIGTERM) with
/// the time, and sleeps as long as `./run/sleep` says.
const RACING_DEPLOY_STEP: &str = r#"mkdir -p ./run
note() { echo "$1 $DROVER_DEPLOYMENT $DROVER_COMPONENT ${EPOCHREALTIME/./}" >> ./run/history; }
trap 'note term; exit 143' TERM
# Read before `start` is noted: the test changes the file once it sees `start`.
seconds=$(cat ./run/sleep 2>/dev/null || echo 0)
note start
sleep "$seconds" &
wait $!
note end
"#;

/// The racing step's history, a line each: (event, deployment, component, µs).
type RacingHistory = Vec<(String, String, String, u64)>;

fn racing_history(scratch: &Scratch) -> RacingHistory {
    std::fs::read_to_string(scratch.path().join("run/history"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                [event, deployment, component, at] => Some((
                    (*event).to_owned(),
                    (*deployment).to_owned(),
                    (*component).to_owned(),
                    at.parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

/// Two deployments of one app race on one component, through the API: the second
/// is submitted while the first's step runs (for `first_step` seconds, unless
/// stopped), with the given concurrency policy. Returns the two deployments'
/// final states, with the step history.
fn race(backend: Backend, policy: &str, first_step: &str) -> (Value, Value, RacingHistory) {
    let scratch = Scratch::new();
    let config = scratch.exec_config("true\n", RACING_DEPLOY_STEP);
    let site = Site::start(&scratch, backend, &config);
    let remote = site.remote().expect("deployments race on a served site");
    let http = |method: reqwest::Method, path: String, body: Option<&str>| -> Value {
        remote.request(method, &path, body)
    };
    std::fs::create_dir_all(scratch.path().join("run")).expect("failed to create run/");
    std::fs::write(scratch.path().join("run/sleep"), first_step)
        .expect("failed to write run/sleep");
    let first = http(
        reqwest::Method::POST,
        "/v1/apps/shop/deployments".to_owned(),
        Some(CANCEL_APP),
    );
    let first_id = first["id"].as_str().expect("an id").to_owned();
    let started = Instant::now();
    while !racing_history(&scratch)
        .iter()
        .any(|(event, deployment, component, _)| {
            event == "start" && *deployment == first_id && component == "slow"
        })
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first deployment's step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(scratch.path().join("run/sleep"), "0.2").expect("failed to write run/sleep");
    let second = http(
        reqwest::Method::POST,
        format!("/v1/apps/shop/deployments?concurrency={policy}"),
        Some(CANCEL_APP),
    );
    let second_id = second["id"].as_str().expect("an id").to_owned();
    let (first, second) = (remote.ended(&first_id), remote.ended(&second_id));
    (first, second, racing_history(&scratch))
}

/// When (µs) `deployment`'s step on `component` noted `event`.
fn noted(
    history: &[(String, String, String, u64)],
    event: &str,
    deployment: &Value,
    component: &str,
) -> Option<u64> {
    let id = deployment["id"].as_str().unwrap_or_default();
    history
        .iter()
        .find(|(e, d, c, _)| e == event && d == id && c == component)
        .map(|(_, _, _, at)| *at)
}

/// `queue` (the default): the second deployment waits for the component's lock;
/// both succeed, and the second's step starts after the first's ended.
fn racing_deployments_queue_on_the_component_lock(backend: Backend) {
    let (first, second, history) = race(backend, "queue", "3");
    assert_eq!(first["state"], "succeeded", "{first:#}");
    assert_eq!(second["state"], "succeeded", "{second:#}");
    let first_end = noted(&history, "end", &first, "slow").expect("the first step ended");
    let second_start = noted(&history, "start", &second, "slow").expect("the second step ran");
    assert!(
        second_start >= first_end,
        "the queued step started before the first ended: {history:?}"
    );
    assert_eq!(
        noted(&history, "term", &first, "slow"),
        None,
        "nothing was cancelled"
    );
}

on_sites!(racing_deployments_queue_on_the_component_lock: serve, fleet);

/// `cancel-in-progress`: the second deployment cancels the first, whose running
/// step gets SIGTERM; the second runs after the first's step is gone, and succeeds.
fn racing_deployments_cancel_in_progress_cancels_the_older(backend: Backend) {
    // The first step would run for a minute: only its cancellation ends it early.
    let (first, second, history) = race(backend, "cancel-in-progress", "60");
    assert_eq!(first["state"], "cancelled", "{first:#}");
    assert_eq!(second["state"], "succeeded", "{second:#}");
    let terminated = noted(&history, "term", &first, "slow").expect("the first step got SIGTERM");
    assert_eq!(
        noted(&history, "end", &first, "slow"),
        None,
        "the first step was cut short"
    );
    let second_start = noted(&history, "start", &second, "slow").expect("the second step ran");
    assert!(
        second_start >= terminated,
        "the second step started while the first still ran: {history:?}"
    );
    let states = task_states(&first);
    assert_eq!(states["deploy:slow"], "cancelled", "{first:#}");
    assert_eq!(states["deploy:after"], "cancelled", "{first:#}");
}

on_sites!(racing_deployments_cancel_in_progress_cancels_the_older: serve, fleet);

/// The overlap that made releases lie: v1 runs; A changes x and y, and A's deploy
/// of y is slow; B, submitted while A deploys y, changes x again and y back. B
/// deploys x after A did and finishes first; A finishes last. The active release
/// (A's) is what the steps left running, for every component: B's x, A's y.
fn the_active_release_is_what_runs_after_overlapping_deployments(backend: Backend) {
    let scratch = Scratch::new();
    let deploy_step = r#"mkdir -p ./run/runs
echo "start $DROVER_DEPLOYMENT $DROVER_COMPONENT $DROVER_ARTIFACT" >> ./run/history
if [[ $DROVER_ARTIFACT == registry.example/y:2 ]]; then sleep 3; fi
echo "$DROVER_ARTIFACT" > "./run/runs/$DROVER_COMPONENT"
echo "end $DROVER_DEPLOYMENT $DROVER_COMPONENT $DROVER_ARTIFACT" >> ./run/history
"#;
    let config = scratch.exec_config("true\n", deploy_step);
    let site = Site::start(&scratch, backend, &config);
    let remote = site.remote().expect("deployments overlap on a served site");
    let app = |x: u32, y: u32| {
        format!(
            "config-version: 0.1\ncomponents:\n  x:\n    type: continuous\n    build: {{image: registry.example/x:{x}}}\n    run: {{command: x}}\n  y:\n    type: continuous\n    build: {{image: registry.example/y:{y}}}\n    run: {{command: y}}\n"
        )
    };
    let submit = |text: String| -> String {
        let answer = remote.request(
            reqwest::Method::POST,
            "/v1/apps/shop/deployments",
            Some(&text),
        );
        answer["id"].as_str().expect("an id").to_owned()
    };
    let history =
        || std::fs::read_to_string(scratch.path().join("run/history")).unwrap_or_default();

    let v1 = submit(app(1, 1));
    assert_eq!(remote.ended(&v1)["state"], "succeeded");
    let a = submit(app(2, 2));
    let started = Instant::now();
    while !history().contains(&format!("start {a} y registry.example/y:2")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "A's deploy of y never started:\n{}",
            history()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = submit(app(3, 1));
    let (b_ended, a_ended) = (remote.ended(&b), remote.ended(&a));
    assert_eq!(b_ended["state"], "succeeded", "{b_ended:#}");
    assert_eq!(a_ended["state"], "succeeded", "{a_ended:#}");
    assert_eq!(b_ended["release"]["version"], 2, "{b_ended:#}");
    assert_eq!(a_ended["release"]["version"], 3, "{a_ended:#}");
    let log = history();
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("no `{line}` in the step log:\n{log}"))
    };
    assert!(
        at(&format!("end {a} x registry.example/x:2"))
            < at(&format!("start {b} x registry.example/x:3")),
        "B deployed x after A:\n{log}"
    );

    let runs = |component: &str| {
        std::fs::read_to_string(scratch.path().join("run/runs").join(component))
            .expect("the component was deployed")
            .trim()
            .to_owned()
    };
    assert_eq!(runs("x"), "registry.example/x:3", "{log}");
    assert_eq!(runs("y"), "registry.example/y:2", "{log}");
    let active = remote.request(reqwest::Method::GET, "/v1/apps/shop/releases?limit=1", None);
    let active = &active["items"][0];
    assert_eq!(active["version"], 3, "{active:#}");
    for component in ["x", "y"] {
        assert_eq!(
            active["components"][component]["artifact"],
            runs(component),
            "{component} in the active release: {active:#}"
        );
    }
}

on_sites!(the_active_release_is_what_runs_after_overlapping_deployments: serve, fleet);

/// A deployment that fails after one of its deploys succeeded is partially applied:
/// `drover status` says so, no release records it, and `drover plan` of the same
/// manifest plans only what failed, against what runs.
fn a_plan_after_a_partially_applied_deployment_is_made_against_what_runs(backend: Backend) {
    let scratch = Scratch::new();
    let deploy_step = "if [[ $DROVER_ARTIFACT == registry.example/b:2 ]]; then echo b will not start; exit 1; fi\n";
    let config = scratch.exec_config("true\n", deploy_step);
    let site = Site::start(&scratch, backend, &config);
    let app = |a: u32, b: u32| {
        format!(
            "config-version: 0.1\ncomponents:\n  a:\n    type: one-off\n    build: {{image: registry.example/a:{a}}}\n    run: {{command: a}}\n  b:\n    type: one-off\n    build: {{image: registry.example/b:{b}}}\n    run: {{command: b}}\n"
        )
    };
    let first = scratch.write("v1/shop.yaml", &app(1, 1));
    assert_exit(&site.drover(&["deploy", "-f", path_str(&first)]), 0);
    let second = scratch.write("v2/shop.yaml", &app(2, 2));
    let failed = site.drover(&["deploy", "-f", path_str(&second), "-o", "json"]);
    assert_exit(&failed, 1);
    let failed = json_stdout(&failed);
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(failed["partially_applied"], true, "{failed:#}");
    let id = failed["id"].as_str().expect("an id");
    let status = site.drover(&["status", id]);
    assert_exit(&status, 0);
    assert_contains(&stdout(&status), &["partially applied"]);

    let plan = site.drover(&["plan", "-f", path_str(&second), "-o", "json"]);
    assert_exit(&plan, 0);
    let plan = json_stdout(&plan);
    assert_eq!(plan["actions"]["a"], "unchanged", "{plan:#}");
    assert_eq!(plan["actions"]["b"], "replace", "{plan:#}");
    let release = site.drover(&["release", "shop", "1", "-o", "json"]);
    assert_exit(&release, 0);
    assert_eq!(
        json_stdout(&release)["components"]["a"]["artifact"],
        "registry.example/a:1",
        "release 1 stays what ran then"
    );
}

on_sites!(a_plan_after_a_partially_applied_deployment_is_made_against_what_runs: embedded, fleet);

/// With `[store] retain`, a deployment that ended longer ago, and a plan saved
/// longer ago, are deleted by the scheduler (at its start, here the next `drover
/// deploy`); the release it made, and what runs, stay.
fn finished_deployments_are_pruned_after_the_retention(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.exec_config("true\n", "true\n");
    let text = std::fs::read_to_string(&config).expect("the config file");
    std::fs::write(&config, format!("{text}\n[store]\nretain = \"1ms\"\n"))
        .expect("failed to write the config file");
    let site = Site::start(&scratch, backend, &config);
    let manifest = scratch.write(
        "shop.yaml",
        "config-version: 0.1\ncomponents:\n  a:\n    type: one-off\n    build: {image: registry.example/a:1}\n    run: {command: a}\n",
    );
    let saved = scratch.path().join("plan.json");
    assert_exit(
        &site.drover(&[
            "plan",
            "-f",
            path_str(&manifest),
            "--save",
            path_str(&saved),
        ]),
        0,
    );
    let first = site.drover(&["deploy", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&first, 0);
    let id = json_stdout(&first)["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_exit(&site.drover(&["deploy", "-f", path_str(&manifest)]), 0);
        let status = site.drover(&["status", &id]);
        if status.status.code() != Some(0) {
            assert_contains(&stderr(&status), &[&id]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} was never pruned"
        );
    }
    let release = site.drover(&["release", "shop", "1", "-o", "json"]);
    assert_exit(&release, 0);
    assert_eq!(
        json_stdout(&release)["components"]["a"]["artifact"],
        "registry.example/a:1",
        "the release stays"
    );
    let applied = site.drover(&["apply", path_str(&saved)]);
    assert_ne!(applied.status.code(), Some(0), "the saved plan was pruned");
    assert_contains(&stderr(&applied), &["unknown plan"]);
    let plan = site.drover(&["plan", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&plan, 0);
    assert_eq!(
        json_stdout(&plan)["actions"]["a"],
        "unchanged",
        "what runs stays"
    );
}

on_sites!(finished_deployments_are_pruned_after_the_retention: embedded);

/// Each strategy's phases reach the exec driver in order (DROVER_STRATEGY,
/// DROVER_PHASE), the task records its phase, and the strategy chosen with
/// `--strategy` stays the app's. A canary whose `promote` fails runs `abort` and
/// fails the deployment, which keeps the previous release active.
fn strategies_drive_the_deploy_step_through_their_phases(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.exec_config(
        "true\n",
        "mkdir -p ./run\necho \"$DROVER_DEPLOYMENT $DROVER_STRATEGY $DROVER_PHASE\" >> ./run/phases\nif [[ \"$DROVER_PHASE\" == \"$(cat ./run/fail-phase 2>/dev/null)\" ]]; then echo \"$DROVER_PHASE broke\" >&2; exit 1; fi\n",
    );
    let site = Site::start(&scratch, backend, &config);
    let deploy = |n: usize, strategy: Option<&str>| {
        let manifest = scratch.write(
            "shop.yaml",
            &format!(
                "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {{image: registry.example/web:1}}\n    run: {{command: web {n}}}\n"
            ),
        );
        let mut args = vec!["deploy", "-f", path_str(&manifest), "-o", "json"];
        if let Some(strategy) = strategy {
            args.extend(["--strategy", strategy]);
        }
        site.drover(&args)
    };
    let phases_of = |deployment: &Value| -> Vec<String> {
        let id = deployment["id"].as_str().expect("an id");
        std::fs::read_to_string(scratch.path().join("run/phases"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("{id} ")))
            .map(str::to_owned)
            .collect()
    };
    let status = |deployment: &Value| {
        let output = site.drover(&[
            "status",
            deployment["id"].as_str().expect("an id"),
            "-o",
            "json",
        ]);
        assert_exit(&output, 0);
        json_stdout(&output)
    };
    for (n, (strategy, phases)) in [
        ("rolling", &["rollout"][..]),
        ("recreate", &["stop", "start"][..]),
        ("blue-green", &["stage", "switch", "retire"][..]),
        ("canary", &["start 10%", "promote"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let output = deploy(n, Some(strategy));
        assert_exit(&output, 0);
        let deployment = json_stdout(&output);
        let expected: Vec<String> = phases
            .iter()
            .map(|phase| format!("{strategy} {phase}"))
            .collect();
        assert_eq!(phases_of(&deployment), expected, "{strategy}");
        let shown = status(&deployment);
        assert_eq!(shown["strategy"], strategy);
        let deploy_task = shown["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|task| task["id"] == "deploy:web")
            .expect("the deploy task")
            .clone();
        assert_eq!(
            deploy_task["phase"],
            *phases.last().expect("a phase"),
            "{shown:#}"
        );
    }

    std::fs::write(scratch.path().join("run/fail-phase"), "promote")
        .expect("failed to write a marker");
    let failed = deploy(9, None);
    assert_exit(&failed, 1);
    let deployment = json_stdout(&failed);
    assert_eq!(deployment["state"], "failed");
    assert_eq!(
        phases_of(&deployment),
        ["canary start 10%", "canary promote", "canary abort"],
        "the app's strategy stays canary, and a failing promote aborts"
    );
    let shown = status(&deployment);
    let task = &shown["tasks"][0];
    assert_eq!(task["phase"], "abort", "{shown:#}");
    assert!(
        task["error"]
            .as_str()
            .is_some_and(|error| error.contains("canary phase `promote` failed")),
        "{shown:#}"
    );
    let releases = site.drover(&["releases", "shop", "-o", "json"]);
    assert_exit(&releases, 0);
    let releases = json_stdout(&releases);
    assert_eq!(releases["total"], 4, "the failed canary wrote no release");
    assert_eq!(
        releases["items"][0]["components"]["web"]["spec"]["run"]["command"], "web 3",
        "the previous release stays active"
    );
    let text = site.drover(&["status", deployment["id"].as_str().expect("an id")]);
    assert_contains(&stdout(&text), &["(canary strategy)", "[phase: abort]"]);
}

on_sites!(strategies_drive_the_deploy_step_through_their_phases: embedded, fleet);

/// `drover deploy --auto-rollback`: when the deployment fails, the scheduler rolls
/// the app back to the release it started from (a new release with that content),
/// the failed deployment becomes `rolled_back`, and `drover deploy` shows it.
fn a_failed_deployment_rolls_back_automatically_when_asked(backend: Backend) {
    let scratch = Scratch::new();
    let config = scratch.exec_config(
        "true\n",
        "mkdir -p ./run\necho \"$DROVER_COMPONENT $DROVER_COMMAND\" >> ./run/deployed\nif [[ $DROVER_COMMAND == 'web 2' ]]; then echo 'web 2 does not start' >&2; exit 1; fi\n",
    );
    let site = Site::start(&scratch, backend, &config);
    let manifest = |n: usize| {
        scratch.write(
            "shop.yaml",
            &format!(
                "config-version: 0.1\ncomponents:\n  db:\n    type: continuous\n    build: {{image: registry.example/db:1}}\n    run: {{command: db {n}}}\n  web:\n    type: continuous\n    build: {{image: registry.example/web:1}}\n    run: {{command: web {n}}}\n    wait-for: [db]\n"
            ),
        )
    };
    let first = site.drover(&["deploy", "-f", path_str(&manifest(1)), "-o", "json"]);
    assert_exit(&first, 0);
    let failed = site.drover(&[
        "deploy",
        "-f",
        path_str(&manifest(2)),
        "--auto-rollback",
        "-o",
        "json",
    ]);
    assert_exit(&failed, 1);
    let deployment = json_stdout(&failed);
    assert_eq!(deployment["state"], "failed", "{deployment:#}");
    assert_contains(
        &stderr(&failed),
        &["rolling back to release 1 automatically"],
    );

    let releases = site.drover(&["releases", "shop", "-o", "json"]);
    assert_exit(&releases, 0);
    let releases = json_stdout(&releases);
    assert_eq!(releases["total"], 2, "{releases:#}");
    let two = &releases["items"][0];
    for component in ["db", "web"] {
        assert_eq!(
            two["components"][component]["spec"]["run"]["command"],
            format!("{component} 1"),
            "release 2 is release 1's content: {two:#}"
        );
    }
    let deployed =
        std::fs::read_to_string(scratch.path().join("run/deployed")).expect("the step log");
    assert!(
        deployed.ends_with("db db 1\nweb web 1\n"),
        "the rollback deployed db 1, then web 1: {deployed}"
    );
    let status = site.drover(&[
        "status",
        deployment["id"].as_str().expect("an id"),
        "-o",
        "json",
    ]);
    assert_exit(&status, 0);
    let status = json_stdout(&status);
    assert_eq!(status["state"], "rolled_back");
    let rollback = status["rolled_back_by"]
        .as_str()
        .unwrap_or_else(|| panic!("the failed deployment names no rollback: {status:#}"));
    assert_contains(
        &stderr(&failed),
        &[&format!(
            "rolling back to release 1 automatically: deployment {rollback}"
        )],
    );
    let text = site.drover(&["status", deployment["id"].as_str().expect("an id")]);
    assert_contains(
        &stdout(&text),
        &[&format!("rolled back by deployment {rollback}")],
    );
    let rollback = site.drover(&["status", rollback, "-o", "json"]);
    assert_exit(&rollback, 0);
    let rollback = json_stdout(&rollback);
    assert_eq!(rollback["state"], "succeeded", "{rollback:#}");
    assert_eq!(rollback["release"]["version"], 2, "{rollback:#}");
}

on_sites!(a_failed_deployment_rolls_back_automatically_when_asked: embedded, fleet);

/// `drover adopt` records what the driver's status step reports running as release
/// 1, deploying nothing (again: nothing more); `drover plan` then plans nothing
/// until what runs drifts from the release, and then an `update` naming the fields
/// that drifted, which `drover deploy` corrects.
fn adopt_records_what_runs_and_drift_is_planned_as_update(backend: Backend) {
    let scratch = Scratch::new();
    scratch.write("steps/build.sh", "true\n");
    scratch.write(
        "steps/deploy.sh",
        "mkdir -p ./run\necho \"$DROVER_COMPONENT $DROVER_ARTIFACT $DROVER_REPLICAS\" >> ./run/deployed\n",
    );
    scratch.write("steps/status.sh", "cat ./run/status.json\n");
    let with_status = scratch.write(
        "drover.toml",
        "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\nstatus = [\"bash\", \"./steps/status.sh\"]\n",
    );
    let without_status = scratch.write(
        "plain.toml",
        "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\n",
    );
    let manifest = scratch.write(
        "shop.yaml",
        "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: web, replicas: 2}\n",
    );
    let running = |replicas: u32| {
        scratch.write(
            "run/status.json",
            &format!(
                r#"{{"components": {{"web": {{"artifact": "registry.example/web@sha256:live", "run": {{"command": "web", "replicas": {replicas}}}}}}}}}"#
            ),
        );
    };
    let file = path_str(&manifest);

    let mut site = Site::start(&scratch, backend, &without_status);
    let refused = site.drover(&["adopt", "shop", "-f", file]);
    assert_exit(&refused, 2);
    assert_contains(&stderr(&refused), &["set `status`"]);
    site.reconfigure(&with_status);
    let drover = |args: &[&str]| site.drover(args);

    running(2);
    let adopted = drover(&["adopt", "shop", "-f", file, "-o", "json"]);
    assert_exit(&adopted, 0);
    let adopted = json_stdout(&adopted);
    assert_eq!(adopted["existing"], false);
    assert_eq!(adopted["release"]["version"], 1);
    assert_eq!(
        adopted["release"]["components"]["web"]["artifact"],
        "registry.example/web@sha256:live"
    );
    let again = drover(&["adopt", "shop", "-f", file, "-o", "json"]);
    assert_exit(&again, 0);
    let again = json_stdout(&again);
    assert_eq!(again["existing"], true);
    assert_eq!(again["release"], adopted["release"], "the same release 1");
    assert!(
        !scratch.path().join("run/deployed").exists(),
        "adopting deploys nothing"
    );

    let plan = drover(&["plan", "-f", file, "-o", "json"]);
    assert_exit(&plan, 0);
    assert_eq!(
        json_stdout(&plan)["tasks"],
        json!([]),
        "what runs is what the manifest wants"
    );

    running(3);
    let plan = drover(&["plan", "-f", file, "-o", "json"]);
    assert_exit(&plan, 0);
    let plan = json_stdout(&plan);
    assert_eq!(plan["actions"]["web"], "update", "{plan:#}");
    assert_eq!(plan["drift"], json!({"web": ["replicas"]}), "{plan:#}");
    assert_eq!(plan["tasks"][0]["id"], "deploy:web", "{plan:#}");
    let text = drover(&["plan", "-f", file]);
    assert_contains(&stdout(&text), &["web (drifted: replicas)"]);

    let deployed = drover(&["deploy", "-f", file, "-o", "json"]);
    assert_exit(&deployed, 0);
    assert_eq!(json_stdout(&deployed)["release"]["version"], 2);
    let log = std::fs::read_to_string(scratch.path().join("run/deployed")).expect("the deploy log");
    assert_eq!(
        log, "web registry.example/web@sha256:live 2\n",
        "the adopted artifact, redeployed as released"
    );

    let other = scratch.write(
        "other.yaml",
        "config-version: 0.1\ncomponents:\n  api:\n    type: continuous\n    build: {image: registry.example/api:1}\n    run: {command: api}\n",
    );
    let missing = drover(&["adopt", "other", "-f", path_str(&other)]);
    assert_exit(&missing, 2);
    assert_contains(&stderr(&missing), &["component `api` is not running"]);
    std::fs::remove_file(scratch.path().join("run/status.json"))
        .expect("failed to remove status.json");
    let broken = drover(&["plan", "-f", file]);
    assert_exit(&broken, 1);
    assert_contains(
        &stderr(&broken),
        &[
            "failed to ask the driver what runs",
            "the status step failed",
        ],
    );
    assert!(
        !stderr(&broken).contains("asking again"),
        "a failing status step is an answer, not a reason to ask again: {}",
        stderr(&broken)
    );
}

on_sites!(adopt_records_what_runs_and_drift_is_planned_as_update: embedded, fleet);

/// `drover deploy --component X` deploys X alone (building only what X runs);
/// the release it writes inherits every other component from the one before, even
/// those the manifest changed. An unknown component is bad input.
fn a_partial_deployment_inherits_what_it_did_not_touch(backend: Backend) {
    let scratch = Scratch::new();
    let site = Site::start(&scratch, backend, &toolhunt_config());
    let first = site.drover(&["deploy", "-f", path_str(&toolhunt_manifest()), "-o", "json"]);
    assert_exit(&first, 0);
    let original = toolhunt_text();
    let edited = scratch.write(
        "toolhunt.yaml",
        &original
            .replace("build-id: v3", "build-id: v4")
            .replace("cleanup:1.4", "cleanup:1.5"),
    );
    let partial = site.drover(&[
        "deploy",
        "-f",
        path_str(&edited),
        "--component",
        "toolhunt-flower",
        "-o",
        "json",
    ]);
    assert_exit(&partial, 0);
    let partial = json_stdout(&partial);
    assert_eq!(
        task_states(&partial)
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["build:toolhunt-api", "deploy:toolhunt-flower"],
        "{partial:#}"
    );
    assert_eq!(partial["release"]["version"], 2);
    let release = |version: &str| {
        let output = site.drover(&["release", "toolhunt", version, "-o", "json"]);
        assert_exit(&output, 0);
        json_stdout(&output)
    };
    let (one, two) = (release("1"), release("2"));
    for untouched in ["toolhunt-api", "toolhunt-migratedb", "toolhunt-cleanup"] {
        assert_eq!(
            two["components"][untouched], one["components"][untouched],
            "{untouched}"
        );
    }
    assert_ne!(
        two["components"]["toolhunt-flower"]["artifact"],
        one["components"]["toolhunt-flower"]["artifact"],
        "flower runs the new build"
    );
    let unknown = site.drover(&["deploy", "-f", path_str(&edited), "--component", "nope"]);
    assert_exit(&unknown, 2);
    assert_contains(
        &stderr(&unknown),
        &["--component: unknown component `nope`: the manifest has"],
    );
}

on_sites!(a_partial_deployment_inherits_what_it_did_not_touch: embedded, fleet);

/// `tenant weight` sets a tenant's weight and says what it allows; a weight out of
/// range or an unknown tenant is bad input (exit 2) that says how to fix it.
#[test]
fn a_tenant_is_weighed_within_range() {
    let scratch = Scratch::new();
    assert_exit(&scratch.drover(&["tenant", "create", "acme"]), 0);
    let weighed = scratch.drover(&["tenant", "weight", "acme", "3"]);
    assert_exit(&weighed, 0);
    assert_contains(
        &stdout(&weighed),
        &["tenant `acme` now has weight 3: up to 60 tasks at once under tenant-limit 20"],
    );
    for weight in ["0", "101"] {
        let refused = scratch.drover(&["tenant", "weight", "acme", weight]);
        assert_exit(&refused, 2);
        assert_contains(
            &stderr(&refused),
            &[&format!(
                "a tenant's weight is a whole number from 1 to 100, not {weight}"
            )],
        );
    }
    let unknown = scratch.drover(&["tenant", "weight", "nope", "2"]);
    assert_exit(&unknown, 2);
    assert_contains(
        &stderr(&unknown),
        &[
            "create it first with `drover tenant create`",
            "unknown tenant `nope`",
        ],
    );
}

/// The CLI as a client: `tenant create` prints a token once; `deploy --server`
/// submits to a running `drover serve` and follows the deployment to its end; a
/// wrong token is bad input (exit 2) and another tenant cannot see the deployment.
#[test]
fn deploys_through_the_api_of_a_running_server() {
    let scratch = Scratch::new();
    let site = Site::start(&scratch, Backend::Serve, &toolhunt_config());
    let server = site.remote().expect("a served site");
    let token = server.token.clone();
    let again = scratch.drover(&["tenant", "create", "acme"]);
    assert_exit(&again, 2);
    assert!(
        stderr(&again).contains("tenant `acme` already exists"),
        "{}",
        describe(&again)
    );
    let other = scratch.drover(&["tenant", "create", "other", "-o", "json"]);
    assert_exit(&other, 0);
    let other_token = json_stdout(&other)["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert!(other_token.starts_with("drover_"), "{other_token}");

    let manifest = toolhunt_manifest();
    let client = |token: &str, args: &[&str]| {
        run_with_deadline(
            drover(&scratch.data_dir())
                .env("DROVER_SERVER", &server.url)
                .env("DROVER_TOKEN", token)
                .args(args),
        )
    };
    let deployed = client(&token, &["deploy", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&deployed, 0);
    let deployment = json_stdout(&deployed);
    assert_eq!(deployment["state"], "succeeded", "{}", describe(&deployed));
    assert_eq!(deployment["release"]["version"], 1);
    let progress = stderr(&deployed);
    assert_eq!(progress.matches("✅").count(), 6, "{}", describe(&deployed));

    let replanned = client(&token, &["plan", "-f", path_str(&manifest), "-o", "json"]);
    assert_exit(&replanned, 0);
    assert_eq!(json_stdout(&replanned)["tasks"], json!([]));

    let refused = client("drover_wrong", &["deploy", "-f", path_str(&manifest)]);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("401 Unauthorized"),
        "{}",
        describe(&refused)
    );

    let rolled_back = client(&token, &["rollback", "toolhunt", "--to", "1", "-o", "json"]);
    assert_exit(&rolled_back, 0);
    let rolled_back = json_stdout(&rolled_back);
    assert_eq!(rolled_back["release"]["version"], 2, "{rolled_back:#}");
    assert!(
        rolled_back["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .all(|task| task["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("deploy:"))),
        "a rollback builds nothing: {rolled_back:#}"
    );
    let unknown = client(&token, &["rollback", "toolhunt", "--to", "7"]);
    assert_exit(&unknown, 2);
    assert_contains(
        &stderr(&unknown),
        &["404", "app `toolhunt` has no release 7"],
    );

    let releases = client(&token, &["releases", "toolhunt", "-o", "json"]);
    assert_exit(&releases, 0);
    assert_eq!(
        json_stdout(&releases)["total"],
        2,
        "{}",
        describe(&releases)
    );
    let release = client(&token, &["release", "toolhunt", "1", "-o", "json"]);
    assert_exit(&release, 0);
    assert_eq!(json_stdout(&release)["deployment"], deployment["id"]);
    let hidden = client(&other_token, &["releases", "toolhunt"]);
    assert_exit(&hidden, 2);
    assert_contains(&stderr(&hidden), &["404", "unknown app `toolhunt`"]);

    let id = deployment["id"].as_str().expect("an id");
    let status = |token: String| {
        let url = format!("{}/v1/deployments/{id}", server.url);
        block_on(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("the API answers")
                .status()
                .as_u16()
        })
    };
    assert_eq!(status(token), 200);
    assert_eq!(
        status(other_token),
        404,
        "another tenant's deployment is not found"
    );
}

/// A client rides out an API that is down or restarting: `drover deploy --server`
/// started while the fleet's API is down submits once it is back (one deployment,
/// one deploy step), and follows the deployment across a second API restart to its
/// end, saying that it asks again meanwhile.
#[test]
fn a_client_rides_out_an_api_restart() {
    let scratch = Scratch::new();
    let config = scratch.exec_config(
        "true\n",
        "mkdir -p ./run\necho \"$DROVER_DEPLOYMENT\" >> ./run/deployed\ntouch ./run/started\nsleep 3\n",
    );
    let manifest = scratch.write(
        "web.yaml",
        "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: web}\n",
    );
    let mut site = Site::start(&scratch, Backend::Fleet, &config);
    let api = site.kill_role("api");
    let mut deploy = site
        .command(&["deploy", "-f", path_str(&manifest), "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start drover deploy");
    let (deploy_stdout, deploy_stderr) = (drain(deploy.stdout.take()), drain(deploy.stderr.take()));
    std::thread::sleep(Duration::from_millis(1500));
    site.restart_role(api);

    let started = Instant::now();
    while !scratch.path().join("run/started").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deploy step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = site.kill_role("api");
    std::thread::sleep(Duration::from_secs(1));
    site.restart_role(api);

    let status = deploy.wait().expect("drover deploy ends");
    let output = Output {
        status,
        stdout: deploy_stdout.join().expect("stdout"),
        stderr: deploy_stderr.join().expect("stderr"),
    };
    assert_exit(&output, 0);
    let deployment = json_stdout(&output);
    assert_eq!(deployment["state"], "succeeded", "{deployment:#}");
    assert_eq!(deployment["release"]["version"], 1, "{deployment:#}");
    assert_contains(
        &stderr(&output),
        &["the drover API did not answer; asking again"],
    );
    let deployed = std::fs::read_to_string(scratch.path().join("run/deployed"))
        .expect("the deploy step's log");
    assert_eq!(
        deployed.lines().collect::<Vec<_>>(),
        [deployment["id"].as_str().expect("an id")],
        "one deployment, deployed once"
    );
}

/// Whether a process is still running (a zombie waiting to be reaped is not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S …`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A worker killed with `kill -9` takes its steps with it: within a second neither
/// the step nor what the step started in the background is still running.
#[test]
fn steps_die_with_a_killed_worker() {
    let scratch = Scratch::new();
    let pids = scratch.path().join("pids");
    std::fs::create_dir_all(&pids).expect("a pid directory");
    let step = format!(
        "sleep 300 &\necho $! > {pids}/$DROVER_COMPONENT-child\necho $$ > {pids}/$DROVER_COMPONENT-step\nwait\n",
        pids = pids.display()
    );
    let config = scratch.exec_config(&step, &step);
    let mut child = drover(&scratch.data_dir())
        .args(["--config", path_str(&config), "deploy", "-f"])
        .arg(toolhunt_manifest())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("failed to start drover");

    // Both builds run at once; wait until both wrote their pids.
    let started = Instant::now();
    let recorded = || {
        std::fs::read_dir(&pids)
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    while recorded() < 4 {
        assert!(started.elapsed() < DEADLINE, "the steps did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let step_pids: Vec<u32> = std::fs::read_dir(&pids)
        .expect("the pid directory")
        .map(|entry| {
            let text =
                std::fs::read_to_string(entry.expect("an entry").path()).expect("a pid file");
            text.trim().parse().expect("a pid")
        })
        .collect();
    assert!(
        step_pids.iter().all(|pid| running(*pid)),
        "the steps run before the kill"
    );

    child.kill().expect("kill -9 drover");
    child.wait().expect("reap drover");
    std::thread::sleep(Duration::from_secs(1));
    let survivors: Vec<u32> = step_pids.into_iter().filter(|pid| running(*pid)).collect();
    assert!(
        survivors.is_empty(),
        "still running a second after the worker died: {survivors:?}"
    );
}

/// A step that fails transiently (exit 75) is run again with backoff and the
/// deployment succeeds; one that keeps failing transiently fails its task after the
/// attempt budget.
#[test]
fn transient_step_failures_are_retried_within_the_budget() {
    let scratch = Scratch::new();
    let flaky = scratch.path().join("flaky");
    std::fs::create_dir_all(&flaky).expect("a directory");
    // The api's build fails transiently on its first run; cleanup's build always does.
    let build = format!(
        "mark={flaky}/$DROVER_COMPONENT\n\
         if [ \"$DROVER_COMPONENT\" = toolhunt-cleanup ]; then exit 75; fi\n\
         if [ ! -e \"$mark\" ]; then touch \"$mark\"; exit 75; fi\n\
         echo artifact=built >> \"$DROVER_OUTPUT\"\n",
        flaky = flaky.display()
    );
    scratch.exec_config(&build, "true\n");
    let config = scratch.write(
        "drover.toml",
        "[worker]\nmax-attempts = 3\nretry-delay = \"50ms\"\n\n[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"bash\", \"./steps/build.sh\"]\ndeploy = [\"bash\", \"./steps/deploy.sh\"]\n",
    );
    let output = scratch.drover(&[
        "--config",
        path_str(&config),
        "deploy",
        "-f",
        path_str(&toolhunt_manifest()),
        "-o",
        "json",
    ]);
    assert_exit(&output, 1);
    let deployment = json_stdout(&output);
    let task = |id: &str| {
        deployment["tasks"]
            .as_array()
            .and_then(|tasks| tasks.iter().find(|task| task["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no task {id}: {deployment}"))
    };
    let api = task("build:toolhunt-api");
    assert_eq!(api["state"], "succeeded", "{}", describe(&output));
    assert_eq!(api["attempts"], 2, "one retry: {api}");
    let cleanup = task("build:toolhunt-cleanup");
    assert_eq!(cleanup["state"], "failed");
    assert_eq!(cleanup["attempts"], 3, "the whole budget: {cleanup}");
    assert!(
        cleanup["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with status 75"),
        "{cleanup}"
    );
    assert_eq!(task("deploy:toolhunt-flower")["state"], "succeeded");
    assert_eq!(task("deploy:toolhunt-cleanup")["state"], "skipped");
    assert!(
        stderr(&output).contains("🔁 build:toolhunt-api failed (attempt 1)"),
        "{}",
        describe(&output)
    );
}

/// An OTLP endpoint that is not a URL is bad input, named with its fix, and
/// nothing runs.
#[cfg(feature = "otlp")]
#[test]
fn an_unusable_otlp_endpoint_is_refused() {
    let scratch = Scratch::new();
    let output = run(drover(&scratch.data_dir())
        .env("DROVER_OTLP_ENDPOINT", "not a url")
        .args(["--config", path_str(&toolhunt_config())])
        .args(["deploy", "-f", path_str(&toolhunt_manifest())]));
    assert_exit(&output, 2);
    assert_contains(
        &stderr(&output),
        &[
            "DROVER_OTLP_ENDPOINT=`not a url` cannot be used",
            "http://otel-collector:4318",
        ],
    );
    assert_nothing_written(&scratch.data_dir(), &output);
}

/// An embedded deploy exports its whole trace before it exits, although it ends
/// long before the first batch of spans would leave (every 5 s).
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_deploy_exports_its_trace_before_exiting() {
    let collector = crate::collector::Collector::start().await;
    let scratch = Scratch::new();
    let mut command = drover(&scratch.data_dir());
    command
        .env("DROVER_OTLP_ENDPOINT", &collector.endpoint)
        .env_remove("OTEL_BSP_SCHEDULE_DELAY")
        .args(["--config", path_str(&toolhunt_config())])
        .args(["deploy", "-f", path_str(&toolhunt_manifest())]);
    let output = tokio::task::spawn_blocking(move || run(&mut command))
        .await
        .expect("the deploy ran");
    assert_exit(&output, 0);
    let spans = collector.spans();
    let roots: Vec<_> = spans
        .iter()
        .filter(|exported| exported.span.name == "deployment")
        .collect();
    assert_eq!(roots.len(), 1, "one deployment, one root span: {spans:?}");
    let trace = &roots[0].span.trace_id;
    let ran: BTreeSet<String> = collector
        .trace(trace)
        .iter()
        .filter(|exported| exported.span.name == "task")
        .filter_map(|exported| exported.attribute("task"))
        .collect();
    let expected: BTreeSet<String> = TOOLHUNT_TASKS
        .iter()
        .map(|task| (*task).to_owned())
        .collect();
    assert_eq!(
        ran, expected,
        "every task's span is in the deployment's trace"
    );
}
