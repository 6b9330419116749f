//! The exec driver: runs operator-configured programs for `build`, `deploy` and
//! `delete`.
//!
//! The task reaches the program as `DROVER_*` environment variables and as JSON on
//! stdin; manifest values are passed as data, never spliced into a shell line. The
//! program may write `key=value` lines (e.g. `artifact=…`) to the file named by
//! `DROVER_OUTPUT`. stdout and stderr become the task's log. Each step runs in its
//! own process group, which is killed on timeout, when its result could no longer
//! count and when the step exits, so no stray process keeps deploying. A step of a
//! cancelled deployment gets SIGTERM first and SIGKILL after the grace period.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shared::config::Config;
use shared::manifest::Build;
use shared::model::TaskKind;
use shared::store::ClaimedTask;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::{Driver, DriverError, LiveLog, StepGuard, StepOutcome, StepResult, StepStop};
use shared::names::AppName;
use shared::release::{Observed, Observer, StatusError, StatusReport};

/// The exit status by which a step says it failed transiently (`EX_TEMPFAIL` of
/// sysexits.h): its task is tried again, with backoff, up to the attempt budget.
pub const EX_TEMPFAIL: i32 = 75;
/// The most log a step keeps: its tail.
const MAX_LOG_BYTES: usize = 64 * 1024;
/// How long to wait for the rest of a step's output once it has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Runs operator-configured programs.
#[derive(Debug, Clone)]
pub struct ExecDriver {
    build: Vec<String>,
    deploy: Vec<String>,
    delete: Option<Vec<String>>,
    status: Option<Vec<String>>,
    timeout: Duration,
    /// Between SIGTERM and SIGKILL when a deployment is cancelled.
    grace: Duration,
    /// Where steps run: the config file's directory.
    work_dir: PathBuf,
    /// Exported to steps as `DROVER_DATA_DIR`.
    data_dir: PathBuf,
    /// Where the `DROVER_OUTPUT` files live.
    step_dir: PathBuf,
    /// What steps run under, so that they die with the worker.
    guard: Option<StepGuard>,
}

/// How a step's process ended.
enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// Killed at once ([`StepStop::kill`]).
    Killed,
    /// Asked to stop ([`StepStop::terminate`]): SIGTERM, then SIGKILL unless it
    /// exited within the grace period.
    Terminated {
        within_grace: bool,
    },
    Lost(std::io::Error),
}

impl ExecDriver {
    /// The driver for `config`. Steps run under `guard` when given; without one a step
    /// still runs in its own process group, killed on timeout and cancellation, but
    /// one whose worker is killed outright keeps running.
    pub fn new(config: &Config, guard: Option<StepGuard>) -> Result<Self, DriverError> {
        let exec = config
            .driver
            .exec
            .as_ref()
            .ok_or(DriverError::MissingExecConfig)?;
        let absolute =
            |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // Steps run in the config file's directory, so a program path from the file
        // must not depend on the directory drover was started in.
        let resolve = |argv: &[String]| -> Vec<String> {
            let mut argv = argv.to_vec();
            if let Some(program) = argv.first_mut() {
                let resolved = config.resolve_program(program);
                if resolved.components().count() > 1 {
                    *program = absolute(&resolved).display().to_string();
                }
            }
            argv
        };
        let step_dir = config.data_dir.join("steps");
        std::fs::create_dir_all(&step_dir).map_err(|source| DriverError::StepDir {
            path: step_dir.clone(),
            source,
        })?;
        Ok(Self {
            build: resolve(&exec.build),
            deploy: resolve(&exec.deploy),
            delete: exec.delete.as_deref().map(resolve),
            status: exec.status.as_deref().map(resolve),
            timeout: exec.timeout,
            grace: exec.grace,
            work_dir: absolute(&config.base_dir),
            data_dir: absolute(&config.data_dir),
            step_dir: absolute(&step_dir),
            guard,
        })
    }

    fn argv(&self, kind: TaskKind) -> Option<&[String]> {
        match kind {
            TaskKind::Build => Some(&self.build),
            TaskKind::Deploy => Some(&self.deploy),
            TaskKind::Delete => self.delete.as_deref(),
        }
    }

    /// The task as environment variables: always all of them, empty when not applicable,
    /// so that scripts can run with `set -u`.
    fn env(&self, task: &ClaimedTask, output: &Path) -> Vec<(&'static str, String)> {
        let spec = &task.spec;
        let (repository, git_ref, image) = match &spec.build {
            Build::Repository {
                repository,
                git_ref,
            } => (
                repository.clone(),
                git_ref.clone().unwrap_or_default(),
                String::new(),
            ),
            Build::Image { image } => (String::new(), String::new(), image.clone()),
            Build::ReuseFrom { .. } => Default::default(),
        };
        let text = |value: Option<String>| value.unwrap_or_default();
        vec![
            ("DROVER_TENANT", task.tenant.to_string()),
            ("DROVER_APP", task.app.to_string()),
            ("DROVER_DEPLOYMENT", task.deployment.to_string()),
            ("DROVER_TASK", task.kind.to_string()),
            ("DROVER_TASK_ID", task.task.to_string()),
            ("DROVER_ATTEMPT", task.attempt.to_string()),
            ("DROVER_FENCE", task.fence.to_string()),
            ("DROVER_STRATEGY", task.strategy.to_string()),
            ("DROVER_PHASE", text(task.phase.clone())),
            ("DROVER_COMPONENT", task.component.to_string()),
            ("DROVER_TYPE", spec.kind.as_str().to_owned()),
            ("DROVER_REPOSITORY", repository),
            ("DROVER_REF", git_ref),
            ("DROVER_IMAGE", image),
            ("DROVER_BUILD_ID", text(spec.build_id.clone())),
            ("DROVER_VERSION", text(spec.version())),
            ("DROVER_COMMAND", text(spec.run.command.clone())),
            ("DROVER_SCHEDULE", text(spec.run.schedule.clone())),
            (
                "DROVER_REPLICAS",
                text(spec.run.replicas.map(|n| n.to_string())),
            ),
            (
                "DROVER_PORT",
                text(spec.run.port.map(|port| port.to_string())),
            ),
            ("DROVER_ARTIFACT", text(task.artifact.clone())),
            ("DROVER_OUTPUT", output.display().to_string()),
            ("DROVER_DATA_DIR", self.data_dir.display().to_string()),
        ]
    }

    async fn run_program(&self, argv: &[String], task: &ClaimedTask, stop: StepStop) -> StepResult {
        let log = Arc::new(Mutex::new(Log::default()));
        let failed = |error: String, log: &Arc<Mutex<Log>>| StepResult {
            outcome: StepOutcome::failed(error),
            log: render(log),
        };
        let output = match tempfile::Builder::new()
            .prefix("output-")
            .tempfile_in(&self.step_dir)
        {
            Ok(output) => output,
            Err(err) => {
                let dir = self.step_dir.display();
                return failed(
                    format!("failed to create the step output file in `{dir}`: {err}"),
                    &log,
                );
            }
        };
        let Some((program, args)) = argv.split_first() else {
            return failed("no program is configured for this step".into(), &log);
        };
        let mut command = match &self.guard {
            Some(guard) => {
                let mut command = Command::new(&guard.program);
                command.args(&guard.args).arg("--").arg(program).args(args);
                command
            }
            None => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
        };
        command
            .current_dir(&self.work_dir)
            .envs(self.env(task, output.path()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => return failed(format!("failed to start `{program}`: {err}"), &log),
        };
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);

        if let Some(mut stdin) = child.stdin.take() {
            let body = stdin_json(task);
            // A step that does not read its stdin must not block us.
            tokio::spawn(async move {
                let _ = stdin.write_all(&body).await;
            });
        }
        let mut readers = tokio::task::JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(collect(stdout, log.clone(), stop.log.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(collect(stderr, log.clone(), stop.log.clone()));
        }

        let mut ended = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => Ended::Exited(status),
                Err(err) => Ended::Lost(err),
            },
            () = tokio::time::sleep(self.timeout) => Ended::TimedOut,
            () = stop.kill.cancelled() => Ended::Killed,
            () = stop.terminate.cancelled() => Ended::Terminated { within_grace: false },
        };
        if let (Ended::Terminated { .. }, Some(group)) = (&ended, group) {
            let _ = killpg(group, Signal::SIGTERM);
            ended = tokio::select! {
                status = child.wait() => match status {
                    Ok(_) => Ended::Terminated { within_grace: true },
                    Err(err) => Ended::Lost(err),
                },
                () = tokio::time::sleep(self.grace) => Ended::Terminated { within_grace: false },
                () = stop.kill.cancelled() => Ended::Killed,
            };
        }
        // Whatever the step left behind in its group goes with it.
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if !matches!(ended, Ended::Exited(_)) {
            let _ = child.wait().await;
        }
        let drained = tokio::time::timeout(OUTPUT_DRAIN, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            readers.abort_all();
        }

        let status = match ended {
            Ended::Exited(status) => status,
            Ended::TimedOut => {
                let limit = humanize(self.timeout);
                return failed(
                    format!("step timed out after {limit}; its process group was killed"),
                    &log,
                );
            }
            Ended::Killed => return failed("step was stopped".into(), &log),
            Ended::Terminated { within_grace: true } => {
                return failed("cancelled: the step stopped on SIGTERM".into(), &log);
            }
            Ended::Terminated {
                within_grace: false,
            } => {
                let grace = humanize(self.grace);
                return failed(
                    format!("cancelled: the step was killed after the {grace} grace period"),
                    &log,
                );
            }
            Ended::Lost(err) => {
                return failed(format!("lost track of the step process: {err}"), &log);
            }
        };
        if status.code() == Some(EX_TEMPFAIL) {
            return StepResult {
                outcome: StepOutcome::Failed {
                    error: format!(
                        "step `{program}` exited with status {EX_TEMPFAIL} (try again later)"
                    ),
                    transient: true,
                },
                log: render(&log),
            };
        }
        if !status.success() {
            let error = match (status.code(), status.signal()) {
                (Some(code), _) => format!("step `{program}` exited with status {code}"),
                (None, Some(signal)) => format!("step `{program}` was killed by signal {signal}"),
                (None, None) => format!("step `{program}` failed"),
            };
            return failed(error, &log);
        }
        let outputs = match std::fs::read_to_string(output.path()) {
            Ok(text) => parse_outputs(&text),
            Err(err) => {
                return failed(
                    format!("failed to read the step's output file: {err}"),
                    &log,
                );
            }
        };
        let artifact = match (task.kind, outputs.get("artifact"), &task.spec.build) {
            (TaskKind::Build, Some(artifact), _) => Some(artifact.clone()),
            // A prebuilt image is its own artifact unless the step names another (a digest).
            (TaskKind::Build, None, Build::Image { image }) => Some(image.clone()),
            (TaskKind::Build, None, _) => {
                return failed(
                    "the build step succeeded but wrote no `artifact=…` line to the file named by $DROVER_OUTPUT".into(),
                    &log,
                );
            }
            (TaskKind::Deploy | TaskKind::Delete, _, _) => None,
        };
        StepResult {
            outcome: StepOutcome::Succeeded { artifact },
            log: render(&log),
        }
    }
}

impl ExecDriver {
    /// Runs the status program for `app`: `DROVER_APP` and `DROVER_DATA_DIR` in its
    /// environment, its report on stdout; killed (with its group) at the timeout.
    async fn run_status(&self, argv: &[String], app: &AppName) -> Result<Observed, StatusError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(StatusError::Failed(
                "no status program is configured".into(),
            ));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.work_dir)
            .env("DROVER_APP", app.as_str())
            .env("DROVER_DATA_DIR", self.data_dir.display().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|err| StatusError::Failed(format!("failed to start `{program}`: {err}")))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                StatusError::Failed(format!(
                    "`{program}` timed out after {}",
                    humanize(self.timeout)
                ))
            })?
            .map_err(|err| StatusError::Failed(format!("lost track of `{program}`: {err}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(StatusError::Failed(format!(
                "`{program}` exited with {}: {tail}",
                output.status
            )));
        }
        serde_json::from_slice::<StatusReport>(&output.stdout)
            .map(|report| report.components)
            .map_err(|err| StatusError::BadReport(err.to_string()))
    }
}

#[async_trait]
impl Observer for ExecDriver {
    async fn status(&self, app: &AppName) -> Result<Option<Observed>, StatusError> {
        match &self.status {
            Some(argv) => self.run_status(argv, app).await.map(Some),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Driver for ExecDriver {
    async fn run(&self, task: &ClaimedTask, stop: StepStop) -> StepResult {
        match self.argv(task.kind) {
            Some(argv) => self.run_program(argv, task, stop).await,
            None => StepResult {
                outcome: StepOutcome::failed(format!(
                    "no `{}` program is configured: set `driver.exec.{}` in the config file",
                    task.kind, task.kind
                )),
                log: String::new(),
            },
        }
    }
}

/// The task as JSON, for the step's stdin.
fn stdin_json(task: &ClaimedTask) -> Vec<u8> {
    let value = serde_json::json!({
        "tenant": task.tenant,
        "app": task.app,
        "deployment": task.deployment,
        "task": task.task,
        "kind": task.kind,
        "component": task.component,
        "attempt": task.attempt,
        "fence": task.fence,
        "artifact": task.artifact,
        "strategy": task.strategy,
        "phase": task.phase,
        "spec": task.spec,
    });
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    body
}

/// `key=value` lines; blank lines and `#` comments are ignored; a later key wins.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The tail of a step's output, by line.
#[derive(Debug, Default)]
struct Log {
    lines: VecDeque<String>,
    n_bytes: usize,
    n_dropped: usize,
}

impl Log {
    fn push(&mut self, line: String) {
        self.n_bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.n_bytes > MAX_LOG_BYTES {
            let Some(dropped) = self.lines.pop_front() else {
                break;
            };
            self.n_bytes -= dropped.len() + 1;
            self.n_dropped += 1;
        }
    }
}

fn render(log: &Mutex<Log>) -> String {
    let log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = String::with_capacity(log.n_bytes + 48);
    if log.n_dropped > 0 {
        text.push_str(&format!("[{} earlier lines dropped]\n", log.n_dropped));
    }
    for line in &log.lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Reads a stream line by line into the log (lossily: output need not be UTF-8).
async fn collect(stream: impl AsyncRead + Unpin, log: Arc<Mutex<Log>>, live: LiveLog) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                tracing::debug!(line = %text, "step output");
                live.push(text.clone());
                log.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(text);
            }
        }
    }
}

fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_key_value_lines() {
        let outputs = parse_outputs(
            "# built\nartifact = registry/app@sha256:ab\n\ncommit=deadbeef\nnonsense\n",
        );
        assert_eq!(
            outputs.get("artifact").map(String::as_str),
            Some("registry/app@sha256:ab")
        );
        assert_eq!(outputs.get("commit").map(String::as_str), Some("deadbeef"));
        assert_eq!(outputs.len(), 2);
    }

    #[test]
    fn the_log_keeps_its_tail() {
        let log = Mutex::new(Log::default());
        for idx in 0..10_000 {
            log.lock()
                .unwrap()
                .push(format!("line {idx:05} {}", "x".repeat(20)));
        }
        let text = render(&log);
        assert!(text.len() <= MAX_LOG_BYTES + 64, "{}", text.len());
        assert!(text.starts_with('['), "{}", &text[..40]);
        assert!(text.ends_with("line 09999 xxxxxxxxxxxxxxxxxxxx\n"));
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(humanize(Duration::from_secs(600)), "10m");
        assert_eq!(humanize(Duration::from_secs(90)), "90s");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}
