//! The exec driver with real bash scripts, through `worker::driver::ExecDriver`:
//! what a step receives (environment, stdin), what it hands back (artifact, log),
//! and that timeouts and cancellation leave no process behind.
//!
//! Steps are started as `bash SCRIPT` rather than by executing the script file
//! directly: a script written and executed at once can fail with ETXTBSY when
//! another test thread forks in between, which would make these tests flaky.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::config::{Config, DriverConfig, DriverKind, ExecConfig};
use shared::ids::{DeploymentId, Fence, TaskId, TenantId};
use shared::manifest::{Build, Component, ComponentType, Run};
use shared::model::{Strategy, TaskKind};
use shared::names::{AppName, ComponentName};
use shared::store::ClaimedTask;
use worker::driver::{Driver, EX_TEMPFAIL, ExecDriver, StepOutcome, StepResult, StepStop};

/// A tempdir with a `steps/` directory for scripts (the config's base dir) and a
/// `data/` directory (the data dir).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("failed to create a tempdir");
        std::fs::create_dir_all(dir.path().join("steps")).expect("failed to create steps/");
        std::fs::create_dir_all(dir.path().join("data")).expect("failed to create data/");
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Writes `steps/NAME` and returns the argv that runs it.
    fn script(&self, name: &str, body: &str) -> Vec<String> {
        let path = self.path().join("steps").join(name);
        std::fs::write(
            &path,
            format!("#!/usr/bin/env bash\nset -euo pipefail\n{body}"),
        )
        .expect("failed to write a step script");
        vec!["bash".to_owned(), path.display().to_string()]
    }

    /// An exec driver whose build and deploy steps both run `body`.
    fn driver(&self, body: &str, timeout: Duration) -> ExecDriver {
        ExecDriver::new(&self.config(body, timeout), None)
            .expect("failed to set up the exec driver")
    }

    /// A config whose exec driver runs `body` for builds and deploys.
    fn config(&self, body: &str, timeout: Duration) -> Config {
        let argv = self.script("step.sh", body);
        Config {
            data_dir: self.data_dir(),
            base_dir: self.path().to_path_buf(),
            driver: DriverConfig {
                kind: DriverKind::Exec,
                exec: Some(ExecConfig {
                    build: argv.clone(),
                    deploy: argv,
                    delete: None,
                    status: None,
                    timeout,
                    grace: Duration::from_secs(10),
                }),
            },
            ..Config::default()
        }
    }

    fn read(&self, name: &str) -> String {
        let path = self.path().join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
    }
}

fn name(text: &str) -> ComponentName {
    ComponentName::new(text).expect("a valid component name")
}

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

/// A continuous component built from a repository.
fn repository_component() -> Component {
    let mut component = component(
        ComponentType::Continuous,
        Build::Repository {
            repository: "https://github.com/wikimedia/toolhunt".into(),
            git_ref: Some("main".into()),
        },
        Run {
            command: Some("gunicorn app:app".into()),
            replicas: Some(2),
            port: Some(8000),
            env: BTreeMap::from([("LOG_LEVEL".to_owned(), "info".to_owned())]),
            schedule: None,
        },
    );
    component.build_id = Some("v3".into());
    component
}

/// A scheduled component running a prebuilt image.
fn image_component() -> Component {
    component(
        ComponentType::Scheduled,
        Build::Image {
            image: "registry.example/cleanup:1.4".into(),
        },
        Run {
            command: Some("cleanup --older-than '7 days'".into()),
            schedule: Some("00 * * * *".into()),
            ..Run::default()
        },
    )
}

fn task(kind: TaskKind, component: &str, spec: Component, artifact: Option<&str>) -> ClaimedTask {
    let component = name(component);
    ClaimedTask {
        tenant: TenantId::generate(),
        app: AppName::new("toolhunt").expect("a valid app name"),
        deployment: DeploymentId::generate(),
        task: TaskId::new(kind, &component),
        kind,
        component,
        spec,
        artifact: artifact.map(str::to_owned),
        attempt: 1,
        fence: Fence(42),
        strategy: Strategy::Rolling,
        phase: None,
    }
}

async fn run(driver: &ExecDriver, task: &ClaimedTask) -> StepResult {
    tokio::time::timeout(
        Duration::from_secs(60),
        driver.run(task, StepStop::default()),
    )
    .await
    .expect("the step did not finish within a minute")
}

fn error_of(result: &StepResult) -> &str {
    match &result.outcome {
        StepOutcome::Failed { error, .. } => error,
        StepOutcome::Succeeded { .. } => {
            panic!("expected the step to fail, it succeeded: {result:?}")
        }
    }
}

fn artifact_of(result: &StepResult) -> Option<&str> {
    match &result.outcome {
        StepOutcome::Succeeded { artifact } => artifact.as_deref(),
        StepOutcome::Failed { error, .. } => panic!(
            "expected the step to succeed, it failed: {error}\nlog:\n{}",
            result.log
        ),
    }
}

/// `NAME=value` lines written by `env_dump`, as a map.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A step body that records every documented variable (even empty ones: `set -u`
/// fails the step if one is missing) and its stdin, next to the steps.
const ENV_DUMP: &str = r#"
out="$(dirname "$0")/.."
for var in DROVER_APP DROVER_COMPONENT DROVER_TYPE DROVER_TASK DROVER_DEPLOYMENT \
           DROVER_REPOSITORY DROVER_REF DROVER_IMAGE DROVER_COMMAND DROVER_SCHEDULE \
           DROVER_FENCE DROVER_OUTPUT DROVER_ARTIFACT; do
    printf '%s=%s\n' "$var" "${!var}"
done > "$out/env-$DROVER_TASK.txt"
cat > "$out/stdin-$DROVER_TASK.json"
if [[ "$DROVER_TASK" == build ]]; then
    echo "artifact=registry.example/built:1" >> "$DROVER_OUTPUT"
fi
"#;

#[tokio::test]
async fn every_documented_variable_reaches_a_deploy_step() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver(ENV_DUMP, Duration::from_secs(60));
    let task = task(
        TaskKind::Deploy,
        "toolhunt-cleanup",
        image_component(),
        Some("registry.example/cleanup@sha256:abc"),
    );
    let result = run(&driver, &task).await;
    assert_eq!(artifact_of(&result), None, "a deploy produces no artifact");

    let env = parse_env(&sandbox.read("env-deploy.txt"));
    let expected = [
        ("DROVER_APP", "toolhunt".to_owned()),
        ("DROVER_COMPONENT", "toolhunt-cleanup".to_owned()),
        ("DROVER_TYPE", "scheduled".to_owned()),
        ("DROVER_TASK", "deploy".to_owned()),
        ("DROVER_DEPLOYMENT", task.deployment.to_string()),
        ("DROVER_REPOSITORY", String::new()),
        ("DROVER_REF", String::new()),
        ("DROVER_IMAGE", "registry.example/cleanup:1.4".to_owned()),
        ("DROVER_COMMAND", "cleanup --older-than '7 days'".to_owned()),
        ("DROVER_SCHEDULE", "00 * * * *".to_owned()),
        ("DROVER_FENCE", "42".to_owned()),
        (
            "DROVER_ARTIFACT",
            "registry.example/cleanup@sha256:abc".to_owned(),
        ),
    ];
    for (var, value) in expected {
        assert_eq!(env.get(var), Some(&value), "{var} in {env:?}");
    }
    let output = env.get("DROVER_OUTPUT").expect("DROVER_OUTPUT is set");
    assert!(
        Path::new(output).is_absolute(),
        "DROVER_OUTPUT is an absolute path: {output}"
    );
}

#[tokio::test]
async fn every_documented_variable_reaches_a_build_step() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver(ENV_DUMP, Duration::from_secs(60));
    let task = task(
        TaskKind::Build,
        "toolhunt-api",
        repository_component(),
        None,
    );
    let result = run(&driver, &task).await;
    assert_eq!(artifact_of(&result), Some("registry.example/built:1"));

    let env = parse_env(&sandbox.read("env-build.txt"));
    let expected = [
        ("DROVER_APP", "toolhunt"),
        ("DROVER_COMPONENT", "toolhunt-api"),
        ("DROVER_TYPE", "continuous"),
        ("DROVER_TASK", "build"),
        ("DROVER_REPOSITORY", "https://github.com/wikimedia/toolhunt"),
        ("DROVER_REF", "main"),
        ("DROVER_IMAGE", ""),
        ("DROVER_COMMAND", "gunicorn app:app"),
        ("DROVER_SCHEDULE", ""),
        ("DROVER_FENCE", "42"),
        ("DROVER_ARTIFACT", ""),
    ];
    for (var, value) in expected {
        assert_eq!(
            env.get(var).map(String::as_str),
            Some(value),
            "{var} in {env:?}"
        );
    }
    assert_eq!(
        env.get("DROVER_DEPLOYMENT"),
        Some(&task.deployment.to_string())
    );
}

#[tokio::test]
async fn the_task_arrives_as_json_on_stdin() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver(ENV_DUMP, Duration::from_secs(60));
    let task = task(
        TaskKind::Deploy,
        "toolhunt-cleanup",
        image_component(),
        Some("registry.example/cleanup@sha256:abc"),
    );
    let result = run(&driver, &task).await;
    artifact_of(&result);

    let stdin = sandbox.read("stdin-deploy.json");
    let json: serde_json::Value = serde_json::from_str(&stdin)
        .unwrap_or_else(|err| panic!("stdin is not JSON ({err}): {stdin}"));
    assert_eq!(json["app"], "toolhunt", "{json:#}");
    assert_eq!(json["component"], "toolhunt-cleanup", "{json:#}");
    assert_eq!(json["kind"], "deploy", "{json:#}");
    assert_eq!(json["deployment"], task.deployment.to_string(), "{json:#}");
    assert_eq!(json["task"], "deploy:toolhunt-cleanup", "{json:#}");
    assert_eq!(json["fence"], 42, "{json:#}");
    assert_eq!(json["attempt"], 1, "{json:#}");
    assert_eq!(
        json["artifact"], "registry.example/cleanup@sha256:abc",
        "{json:#}"
    );
    assert_eq!(json["spec"]["type"], "scheduled", "{json:#}");
    assert_eq!(
        json["spec"]["build"]["image"], "registry.example/cleanup:1.4",
        "{json:#}"
    );
    assert_eq!(
        json["spec"]["run"]["command"], "cleanup --older-than '7 days'",
        "{json:#}"
    );
    assert_eq!(json["spec"]["run"]["schedule"], "00 * * * *", "{json:#}");
}

#[tokio::test]
async fn the_artifact_line_of_the_output_file_becomes_the_artifact() {
    let sandbox = Sandbox::new();
    let body = r##"
echo "# a comment" >> "$DROVER_OUTPUT"
echo "artifact=registry.example/toolhunt@sha256:0123" >> "$DROVER_OUTPUT"
echo "commit=deadbeef" >> "$DROVER_OUTPUT"
"##;
    let driver = sandbox.driver(body, Duration::from_secs(60));

    let build = task(
        TaskKind::Build,
        "toolhunt-api",
        repository_component(),
        None,
    );
    let result = run(&driver, &build).await;
    assert_eq!(
        artifact_of(&result),
        Some("registry.example/toolhunt@sha256:0123")
    );

    // For a prebuilt image, a written artifact (e.g. the resolved digest) wins over the image.
    let build = task(TaskKind::Build, "toolhunt-cleanup", image_component(), None);
    let result = run(&driver, &build).await;
    assert_eq!(
        artifact_of(&result),
        Some("registry.example/toolhunt@sha256:0123")
    );
}

#[tokio::test]
async fn an_image_build_without_output_uses_the_image() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver("echo resolving\n", Duration::from_secs(60));
    let build = task(TaskKind::Build, "toolhunt-cleanup", image_component(), None);
    let result = run(&driver, &build).await;
    assert_eq!(artifact_of(&result), Some("registry.example/cleanup:1.4"));
}

#[tokio::test]
async fn a_repository_build_without_artifact_fails_clearly() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver(
        "echo 'built, but forgot to say what'\n",
        Duration::from_secs(60),
    );
    let build = task(
        TaskKind::Build,
        "toolhunt-api",
        repository_component(),
        None,
    );
    let result = run(&driver, &build).await;
    let error = error_of(&result);
    assert!(
        error.contains("artifact="),
        "the error names the missing line: {error}"
    );
    assert!(
        error.contains("DROVER_OUTPUT"),
        "the error names the output file: {error}"
    );
    assert!(
        result.log.contains("built, but forgot to say what"),
        "the log is kept: {:?}",
        result.log
    );
}

#[tokio::test]
async fn the_command_reaches_the_step_verbatim_and_is_never_executed() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("x")).expect("failed to create x/");
    std::fs::create_dir(sandbox.data_dir().join("x")).expect("failed to create data/x/");
    let command = "serve $(touch pwned) `touch pwned` ; rm -rf x && touch pwned | touch pwned > pwned \"$HOME\" 'q'";
    let mut spec = repository_component();
    spec.run.command = Some(command.to_owned());
    let body = r#"
out="$(dirname "$0")/.."
printf '%s' "$DROVER_COMMAND" > "$out/command.txt"
cat > "$out/stdin.json"
"#;
    let driver = sandbox.driver(body, Duration::from_secs(60));
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        spec,
        Some("registry.example/api:1"),
    );
    let result = run(&driver, &deploy).await;
    artifact_of(&result);

    assert_eq!(sandbox.read("command.txt"), command);
    let stdin: serde_json::Value =
        serde_json::from_str(&sandbox.read("stdin.json")).expect("stdin is JSON");
    assert_eq!(stdin["spec"]["run"]["command"], command);
    for dir in [
        sandbox.path().to_path_buf(),
        sandbox.path().join("steps"),
        sandbox.data_dir(),
    ] {
        assert!(
            !dir.join("pwned").exists(),
            "something ran the command in {}",
            dir.display()
        );
    }
    for dir in [sandbox.path().to_path_buf(), sandbox.data_dir()] {
        assert!(
            dir.join("x").exists(),
            "`rm -rf x` ran in {}",
            dir.display()
        );
    }
}

#[tokio::test]
async fn a_step_that_exits_1_fails_and_keeps_its_log() {
    let sandbox = Sandbox::new();
    let body =
        "echo 'migrating: step 1 of 2'\necho 'relation \"users\" already exists' >&2\nexit 1\n";
    let driver = sandbox.driver(body, Duration::from_secs(60));
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        repository_component(),
        Some("a"),
    );
    let result = run(&driver, &deploy).await;
    let error = error_of(&result);
    assert!(error.contains("exited with status 1"), "{error}");
    assert!(
        matches!(
            result.outcome,
            StepOutcome::Failed {
                transient: false,
                ..
            }
        ),
        "exit 1 is not worth retrying: {result:?}"
    );
    assert!(
        result.log.contains("migrating: step 1 of 2"),
        "stdout is in the log: {:?}",
        result.log
    );
    assert!(
        result.log.contains("relation \"users\" already exists"),
        "stderr is in the log: {:?}",
        result.log
    );
}

/// Exit status 75 (EX_TEMPFAIL) says "try again later": a transient failure.
#[tokio::test]
async fn a_step_that_exits_75_fails_transiently() {
    let sandbox = Sandbox::new();
    let body = format!("echo 'registry busy' >&2\nexit {EX_TEMPFAIL}\n");
    let driver = sandbox.driver(&body, Duration::from_secs(60));
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        repository_component(),
        Some("a"),
    );
    let result = run(&driver, &deploy).await;
    assert!(
        matches!(&result.outcome, StepOutcome::Failed { transient: true, error } if error.contains("exited with status 75")),
        "{result:?}"
    );
    assert!(result.log.contains("registry busy"), "{:?}", result.log);
}

#[tokio::test]
async fn stdout_and_stderr_become_the_log() {
    let sandbox = Sandbox::new();
    let body = "echo 'to stdout'\necho 'to stderr' >&2\necho 'stdout again'\n";
    let driver = sandbox.driver(body, Duration::from_secs(60));
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        repository_component(),
        Some("a"),
    );
    let result = run(&driver, &deploy).await;
    artifact_of(&result);
    for line in ["to stdout", "to stderr", "stdout again"] {
        assert!(
            result.log.lines().any(|logged| logged == line),
            "`{line}` is a line of the log: {:?}",
            result.log
        );
    }
}

/// Whether a process is gone: no `/proc/PID`, or only its zombie (which a
/// container's PID 1 may never reap) is left.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn read_pid(sandbox: &Sandbox, name: &str) -> u32 {
    let text = sandbox.read(name);
    text.trim()
        .parse()
        .unwrap_or_else(|err| panic!("`{name}` does not hold a pid ({err}): {text:?}"))
}

/// Waits up to a second for both the step and the background child it started to die.
async fn assert_processes_die(sandbox: &Sandbox) {
    let step = read_pid(sandbox, "step.pid");
    let child = read_pid(sandbox, "child.pid");
    let deadline = Instant::now() + Duration::from_secs(1);
    while !(is_gone(step) && is_gone(child)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        is_gone(step),
        "the step process {step} is still alive a second after it ended"
    );
    assert!(
        is_gone(child),
        "the step's background child {child} is still alive a second after the step ended"
    );
}

/// A step that starts a background child, records both pids, and sleeps.
const SLEEPER: &str = r#"
out="$(dirname "$0")/.."
sleep 30 &
echo $! > "$out/child.pid"
echo $$ > "$out/step.pid"
echo "sleeping"
sleep 30
"#;

#[tokio::test]
async fn a_step_over_its_timeout_is_killed_with_its_children() {
    let sandbox = Sandbox::new();
    let driver = sandbox.driver(SLEEPER, Duration::from_millis(500));
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        repository_component(),
        Some("a"),
    );
    let started = Instant::now();
    let result = run(&driver, &deploy).await;
    let took = started.elapsed();
    let error = error_of(&result);
    assert!(error.contains("timed out"), "{error}");
    assert!(
        took < Duration::from_secs(10),
        "the step was not stopped at its timeout: it took {took:?}"
    );
    assert!(
        result.log.contains("sleeping"),
        "the log is kept: {:?}",
        result.log
    );
    assert_processes_die(&sandbox).await;
}

/// Runs `body` as a deploy step with `grace`, and once it is under way (both pids
/// written) stops it through `stop_with`; returns the result and how long the step
/// ran. The step and its child were both alive before the stop.
async fn stop_mid_step(
    sandbox: &Sandbox,
    body: &str,
    grace: Duration,
    stop_with: fn(&StepStop),
) -> (StepResult, Duration) {
    let mut driver_config = sandbox.config(body, Duration::from_secs(600));
    if let Some(exec) = driver_config.driver.exec.as_mut() {
        exec.grace = grace;
    }
    let driver = ExecDriver::new(&driver_config, None).expect("failed to set up the exec driver");
    let deploy = task(
        TaskKind::Deploy,
        "toolhunt-api",
        repository_component(),
        Some("a"),
    );
    let stop = StepStop::default();
    let dir = sandbox.path().to_path_buf();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Stop once the step is under way (both pids written), or after 10 s anyway.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !dir.join("step.pid").exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pid = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .ok()?
                    .trim()
                    .parse::<u32>()
                    .ok()
            };
            let alive =
                [pid("step.pid"), pid("child.pid")].map(|pid| pid.is_some_and(|pid| !is_gone(pid)));
            stop_with(&stop);
            (alive, Instant::now())
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(60), driver.run(&deploy, stop))
        .await
        .expect("the stopped step did not end within a minute");
    let (alive, stopped_at) = stopper.await.expect("the stopper panicked");
    assert_eq!(
        alive,
        [true, true],
        "the step and its child were running before the stop"
    );
    (result, stopped_at.elapsed())
}

#[tokio::test]
async fn a_killed_step_dies_at_once_with_its_children() {
    let sandbox = Sandbox::new();
    let (result, took) = stop_mid_step(&sandbox, SLEEPER, Duration::from_secs(30), |stop| {
        stop.kill.cancel()
    })
    .await;
    let error = error_of(&result);
    assert_eq!(error, "step was stopped");
    assert!(
        took < Duration::from_secs(5),
        "the step was not killed at once: it took {took:?}"
    );
    assert_processes_die(&sandbox).await;
}

/// A step that handles SIGTERM: it notes it and exits.
const TERM_HANDLER: &str = r#"
out="$(dirname "$0")/.."
trap 'echo got-term > "$out/term"; exit 0' TERM
sleep 30 &
echo $! > "$out/child.pid"
echo $$ > "$out/step.pid"
wait
"#;

/// A step that ignores SIGTERM (and so do its children).
const TERM_IGNORER: &str = r#"
out="$(dirname "$0")/.."
trap '' TERM
sleep 30 &
echo $! > "$out/child.pid"
echo $$ > "$out/step.pid"
wait
"#;

#[tokio::test]
async fn a_terminated_step_gets_sigterm_first_and_may_stop_within_the_grace_period() {
    let sandbox = Sandbox::new();
    let (result, took) = stop_mid_step(&sandbox, TERM_HANDLER, Duration::from_secs(30), |stop| {
        stop.terminate.cancel()
    })
    .await;
    assert_eq!(error_of(&result), "cancelled: the step stopped on SIGTERM");
    assert_eq!(sandbox.read("term").trim(), "got-term");
    assert!(
        took < Duration::from_secs(5),
        "the step stopped on SIGTERM, yet it took {took:?}"
    );
    assert_processes_die(&sandbox).await;
}

#[tokio::test]
async fn a_terminated_step_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let sandbox = Sandbox::new();
    let grace = Duration::from_secs(1);
    let (result, took) = stop_mid_step(&sandbox, TERM_IGNORER, grace, |stop| {
        stop.terminate.cancel()
    })
    .await;
    assert_eq!(
        error_of(&result),
        "cancelled: the step was killed after the 1s grace period"
    );
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "the step should die right after its 1s grace period; it took {took:?}"
    );
    assert_processes_die(&sandbox).await;
}
