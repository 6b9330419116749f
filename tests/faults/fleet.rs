//! The `Fleet` harness: one test's own drover fleet — an API, schedulers and
//! workers as separate `drover` processes — on its own PostgreSQL database and its
//! own RabbitMQ/Redis namespace, with step scripts that record every step's start
//! and end in one shared history file.
//!
//! Every process is killed when the fleet is dropped, and so is anything a step
//! left behind: every process the fleet started carries a marker in its
//! environment, which the steps inherit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::history::{self, Run};
use crate::support::{PgDatabase, amqp_url, delete_rabbitmq_names, redis_url};

/// The environment variable that marks every process of one fleet (and every
/// step, which inherits it) with the fleet's id.
const FLEET_MARKER: &str = "DROVER_FAULTS_FLEET";
/// The environment variable that names the fleet process a step descends from.
const PROCESS_MARKER: &str = "DROVER_FAULTS_PROCESS";
/// How long a role process may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a submission is retried (the API may be unavailable during a fault).
const SUBMIT_DEADLINE: Duration = Duration::from_secs(60);

/// The step script every build and deploy runs (as `bash step.sh KIND`). It appends
/// one line when it starts and one when it ends to `$FLEET_HISTORY`, each with one
/// `printf` on a file opened with O_APPEND (`>>`), so that lines of concurrent steps
/// never mix:
///
/// `start KEY DEPLOYMENT TASK ATTEMPT FENCE WORKER_PID EPOCH_NS STEP_PID STEP_PGID`
/// `end   KEY DEPLOYMENT TASK ATTEMPT FENCE WORKER_PID EPOCH_NS STEP_PID STEP_PGID STATUS`
///
/// with KEY = `tenant/app/component`. The step sleeps between the two for a random
/// time in `$FLEET_STEP_MIN_MS..=$FLEET_STEP_MAX_MS`, or in the range written in
/// `$FLEET_DIR/durations/<app>` (`MIN MAX`) when that file exists.
const STEP_SCRIPT: &str = r#"set -euo pipefail
kind=$1
# The step runs under `drover step-guard` (its parent), whose parent is the worker.
read -r -a guard < "/proc/$PPID/stat"
worker=${guard[3]}
read -r -a self < "/proc/$$/stat"
pgid=${self[4]}
what="$DROVER_TENANT/$DROVER_APP/$DROVER_COMPONENT $DROVER_DEPLOYMENT $DROVER_TASK_ID $DROVER_ATTEMPT $DROVER_FENCE $worker"
min=$FLEET_STEP_MIN_MS
max=$FLEET_STEP_MAX_MS
if [[ -r "$FLEET_DIR/durations/$DROVER_APP" ]]; then
    read -r min max < "$FLEET_DIR/durations/$DROVER_APP"
fi
ms=$((min + RANDOM % (max - min + 1)))
printf -v seconds '%d.%03d' $((ms / 1000)) $((ms % 1000))
now=${EPOCHREALTIME/./}
printf 'start %s %s000 %s %s\n' "$what" "$now" "$$" "$pgid" >> "$FLEET_HISTORY"
sleep "$seconds"
if [[ $kind == build ]]; then
    printf 'artifact=registry.example/%s/%s@%s\n' "$DROVER_APP" "$DROVER_COMPONENT" "$DROVER_DEPLOYMENT" > "$DROVER_OUTPUT"
fi
status=0
now=${EPOCHREALTIME/./}
printf 'end %s %s000 %s %s %s\n' "$what" "$now" "$$" "$pgid" "$status" >> "$FLEET_HISTORY"
exit "$status"
"#;

/// How a fleet is made up and timed.
#[derive(Clone, Debug)]
pub(crate) struct FleetOptions {
    /// Tenants created before the fleet starts (their tokens are in [`Fleet::tenants`]).
    pub(crate) tenants: Vec<&'static str>,
    pub(crate) schedulers: usize,
    pub(crate) workers: usize,
    /// `drover worker --concurrency`.
    pub(crate) concurrency: usize,
    /// How long each step sleeps between its start and end lines, in milliseconds.
    pub(crate) step_ms: (u64, u64),
    pub(crate) lease: &'static str,
    pub(crate) lock_ttl: &'static str,
    pub(crate) lock_retry: &'static str,
    pub(crate) max_attempts: u32,
    pub(crate) retry_delay: &'static str,
    pub(crate) tenant_limit: u32,
    /// `worker.drain`: how long running steps have after SIGTERM.
    pub(crate) drain: &'static str,
    /// `DROVER_OTLP_ENDPOINT`: where every process exports its spans.
    pub(crate) otlp: Option<String>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            tenants: vec!["acme"],
            schedulers: 1,
            workers: 2,
            concurrency: 2,
            step_ms: (100, 300),
            lease: "3s",
            lock_ttl: "3s",
            lock_retry: "100ms",
            max_attempts: 3,
            retry_delay: "200ms",
            tenant_limit: 20,
            drain: "5s",
            otlp: None,
        }
    }
}

/// A tenant of the fleet and its API token.
#[derive(Clone, Debug)]
pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) token: String,
}

/// The role a fleet process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Api,
    Scheduler,
    Worker,
}

/// One `drover` process of the fleet.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) pid: u32,
    child: Child,
    pub(crate) log: PathBuf,
    /// Where it answers `/healthz`, `/readyz` and `/metrics` (the API's address,
    /// for the api).
    pub(crate) listen: std::net::SocketAddr,
    /// Set once the process is known to have ended.
    exit: Option<ExitStatus>,
}

/// A planned task, as the API answered the submission.
#[derive(Clone, Debug)]
pub(crate) struct PlannedTask {
    pub(crate) id: String,
    pub(crate) needs: Vec<String>,
}

/// A deployment the test submitted.
#[derive(Clone, Debug)]
pub(crate) struct Submission {
    pub(crate) tenant: usize,
    pub(crate) id: String,
    /// When the API was asked (wall clock, nanoseconds since the epoch).
    pub(crate) submitted_ns: i64,
    pub(crate) tasks: Vec<PlannedTask>,
    /// The caller's trace context it was sent with (`traceparent`), as a
    /// platform's traced client would send it (read by the OTLP tests).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) traceparent: String,
}

/// What the API last said about a deployment.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    /// `None` when the API never answered for it.
    pub(crate) state: Option<String>,
    /// Task id → (state, attempts).
    pub(crate) tasks: BTreeMap<String, (String, u32)>,
}

impl Outcome {
    pub(crate) fn is_terminal(&self) -> bool {
        self.state.as_deref().is_some_and(is_terminal)
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "rolled_back")
}

/// What to deploy: a tenant (index into [`Fleet::tenants`]), an app and its manifest.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) tenant: usize,
    pub(crate) app: String,
    pub(crate) manifest: String,
}

/// Talks to the fleet's API; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    tokens: Arc<Vec<String>>,
}

impl ApiClient {
    /// Submits a deployment, retrying (with the same `Idempotency-Key`, so that a
    /// retry never makes a second deployment) while the API is unreachable or
    /// answers 5xx.
    pub(crate) async fn submit(&self, request: &Request) -> Submission {
        let key = uuid::Uuid::new_v4().to_string();
        let caller = uuid::Uuid::new_v4().simple().to_string();
        let traceparent = format!("00-{}-{}-01", caller, &caller[..16]);
        let url = format!("{}/v1/apps/{}/deployments", self.base, request.app);
        let started = Instant::now();
        let submitted_ns = now_ns();
        loop {
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&self.tokens[request.tenant])
                .header("Idempotency-Key", &key)
                .header("traceparent", &traceparent)
                .header("Content-Type", "application/yaml")
                .body(request.manifest.clone())
                .send()
                .await;
            let problem = match sent {
                Ok(response) if response.status().as_u16() == 202 => {
                    let body: Value = response.json().await.expect("the 202 body is JSON");
                    return Submission {
                        tenant: request.tenant,
                        id: body["id"].as_str().expect("a deployment id").to_owned(),
                        submitted_ns,
                        tasks: planned_tasks(&body),
                        traceparent,
                    };
                }
                Ok(response) if response.status().is_server_error() => {
                    format!(
                        "{}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    )
                }
                Ok(response) => panic!(
                    "the API refused the deployment of `{}`: {}: {}",
                    request.app,
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(err) => err.to_string(),
            };
            assert!(
                started.elapsed() < SUBMIT_DEADLINE,
                "could not submit a deployment of `{}` within {SUBMIT_DEADLINE:?}: {problem}",
                request.app
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The deployment as the API shows it now, or `None` when it cannot be read.
    pub(crate) async fn deployment(&self, tenant: usize, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/deployments/{id}", self.base))
            .bearer_auth(&self.tokens[tenant])
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

fn planned_tasks(body: &Value) -> Vec<PlannedTask> {
    body["plan"]["tasks"]
        .as_array()
        .expect("the deployment has a plan")
        .iter()
        .map(|task| PlannedTask {
            id: task["id"].as_str().expect("a task id").to_owned(),
            needs: task["needs"]
                .as_array()
                .expect("a task's needs")
                .iter()
                .map(|need| need.as_str().expect("a need").to_owned())
                .collect(),
        })
        .collect()
}

fn outcome_of(id: &str, body: Option<&Value>) -> Outcome {
    let Some(body) = body else {
        return Outcome {
            id: id.to_owned(),
            state: None,
            tasks: BTreeMap::new(),
        };
    };
    Outcome {
        id: id.to_owned(),
        state: body["state"].as_str().map(str::to_owned),
        tasks: body["tasks"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .map(|task| {
                        (
                            task["id"].as_str().unwrap_or_default().to_owned(),
                            (
                                task["state"].as_str().unwrap_or_default().to_owned(),
                                u32::try_from(task["attempts"].as_u64().unwrap_or(0))
                                    .unwrap_or(u32::MAX),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The wall clock in nanoseconds since the epoch (the history's clock).
/// Notes in the history when a step that wrote no `end` line (a killed one) is seen
/// dead: a `died PID EPOCH_NS` line, at most 20 ms after it died. The analysis takes
/// that moment as the step's end, which can only make overlaps more likely to be
/// seen, never hide one.
#[derive(Debug)]
struct DeathWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeathWatch {
    fn start(history: PathBuf) -> DeathWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut seen_dead: BTreeSet<(u32, i64)> = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    for run in history::read(&history) {
                        if run.end_ns.is_some()
                            || run.died_ns.is_some()
                            || seen_dead.contains(&(run.pid, run.start_ns))
                            || is_alive(run.pid)
                        {
                            continue;
                        }
                        seen_dead.insert((run.pid, run.start_ns));
                        let line = format!("died {} {}\n", run.pid, now_ns());
                        let appended = std::fs::OpenOptions::new()
                            .append(true)
                            .open(&history)
                            .and_then(|mut file| file.write_all(line.as_bytes()));
                        if let Err(err) = appended {
                            eprintln!("death watch: failed to append to the history: {err}");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        DeathWatch {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn now_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_nanos()).expect("nanoseconds fit in an i64")
}

/// A fleet of `drover` processes of one test's own.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// Names the test in messages and in the figures line.
    pub(crate) test: &'static str,
    id: String,
    pub(crate) namespace: String,
    pub(crate) amqp_url: String,
    pub(crate) redis_url: String,
    /// Where the history, config, step scripts, data directories and logs live.
    dir: tempfile::TempDir,
    config: PathBuf,
    history: PathBuf,
    options: FleetOptions,
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) api: ApiClient,
    processes: Vec<Process>,
    /// Worker pid → when the test killed it (nanoseconds since the epoch).
    killed: BTreeMap<u32, i64>,
    /// Processes the test asked to stop, which exited on their own.
    stopped: BTreeSet<u32>,
    _death_watch: DeathWatch,
    /// Declared last: dropped after every process is gone.
    pub(crate) db: PgDatabase,
}

impl Fleet {
    /// Creates the database, migrates it, creates the tenants, writes the config and
    /// the step script, and starts 1 api, `options.schedulers` schedulers and
    /// `options.workers` workers; returns once each of them is ready.
    pub(crate) async fn start(test: &'static str, options: FleetOptions) -> Fleet {
        let db = PgDatabase::create().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::Builder::new()
            .prefix(&format!("drover-faults-{test}-"))
            .tempdir()
            .expect("failed to create the fleet's directory");
        let config = dir.path().join("drover.toml");
        let history = dir.path().join("history.log");
        std::fs::create_dir_all(dir.path().join("steps")).expect("failed to create steps/");
        std::fs::create_dir_all(dir.path().join("durations")).expect("failed to create durations/");
        std::fs::create_dir_all(dir.path().join("logs")).expect("failed to create logs/");
        std::fs::write(dir.path().join("steps/step.sh"), STEP_SCRIPT)
            .expect("failed to write the step script");
        File::create(&history).expect("failed to create the history file");
        std::fs::write(&config, config_toml(&options)).expect("failed to write the config");
        let listen = free_port();
        let mut fleet = Fleet {
            test,
            namespace: format!("fault-{id}"),
            id,
            amqp_url: amqp_url(),
            redis_url: redis_url(),
            dir,
            config,
            history: history.clone(),
            options: options.clone(),
            tenants: Vec::new(),
            api: ApiClient {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("failed to build an HTTP client"),
                base: format!("http://{listen}"),
                tokens: Arc::new(Vec::new()),
            },
            processes: Vec::new(),
            killed: BTreeMap::new(),
            stopped: BTreeSet::new(),
            _death_watch: DeathWatch::start(history.clone()),
            db,
        };
        fleet.run_once("migrate", &["migrate"]);
        for name in &options.tenants {
            let output = fleet.run_once("tenant", &["tenant", "create", name, "-o", "json"]);
            let created: Value = serde_json::from_str(&output)
                .unwrap_or_else(|err| panic!("`tenant create` printed no JSON ({err}): {output}"));
            fleet.tenants.push(Tenant {
                id: created["id"].as_str().expect("a tenant id").to_owned(),
                token: created["token"].as_str().expect("a token").to_owned(),
            });
        }
        fleet.api.tokens = Arc::new(fleet.tenants.iter().map(|t| t.token.clone()).collect());

        fleet.spawn("api", Role::Api, listen, &["api"]);
        for n in 1..=options.schedulers {
            fleet.spawn(
                &format!("scheduler-{n}"),
                Role::Scheduler,
                free_port(),
                &["scheduler"],
            );
        }
        for n in 1..=options.workers {
            fleet.spawn(
                &format!("worker-{n}"),
                Role::Worker,
                free_port(),
                &["worker", "--concurrency", &options.concurrency.to_string()],
            );
        }
        fleet.wait_ready().await;
        fleet
    }

    /// `drover` with this fleet's environment, config and a data directory of `name`'s own.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
        for (key, _) in std::env::vars() {
            if key.starts_with("DROVER_") {
                command.env_remove(key);
            }
        }
        command
            .env("DROVER_DATABASE_URL", &self.db.url)
            .env("DROVER_AMQP_URL", &self.amqp_url)
            .env("DROVER_REDIS_URL", &self.redis_url)
            .env("DROVER_NAMESPACE", &self.namespace)
            .env("DROVER_LOG", "info")
            .env("LC_ALL", "C")
            .env("FLEET_HISTORY", &self.history)
            .env("FLEET_DIR", self.dir.path())
            .env("FLEET_STEP_MIN_MS", self.options.step_ms.0.to_string())
            .env("FLEET_STEP_MAX_MS", self.options.step_ms.1.to_string())
            .env(FLEET_MARKER, &self.id)
            .env(PROCESS_MARKER, name)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.dir.path().join("data").join(name))
            .arg("--log-format")
            .arg("json")
            .stdin(Stdio::null());
        if let Some(endpoint) = &self.options.otlp {
            // Batches of spans leave every 100 ms rather than every 5 s.
            command
                .env("DROVER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        }
        command
    }

    /// Runs a one-shot command (`migrate`, `tenant create`) and returns its stdout.
    fn run_once(&self, name: &str, args: &[&str]) -> String {
        let output = self
            .command(name)
            .args(args)
            .output()
            .expect("failed to run drover");
        assert!(
            output.status.success(),
            "`drover {}` failed: {}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&mut self, name: &str, role: Role, listen: std::net::SocketAddr, args: &[&str]) {
        let log = self.dir.path().join("logs").join(format!("{name}.log"));
        let file = File::create(&log).expect("failed to create a log file");
        let child = self
            .command(name)
            .args(args)
            .arg("--listen")
            .arg(listen.to_string())
            .stdout(file.try_clone().expect("failed to clone a file handle"))
            .stderr(file)
            .spawn()
            .expect("failed to start drover");
        self.processes.push(Process {
            name: name.to_owned(),
            role,
            pid: child.id(),
            child,
            log,
            listen,
            exit: None,
        });
    }

    /// Waits for the API to answer `/readyz` and every scheduler and worker to log
    /// that it runs.
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let exited = self.exited();
            assert!(
                exited.is_empty(),
                "fleet processes exited at start-up: {exited:?}\n{}",
                self.diagnostics()
            );
            let api_ready = self
                .api
                .http
                .get(format!("{}/readyz", self.api.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            let roles_ready = self.processes.iter().all(|process| {
                let needle = match process.role {
                    Role::Api => return true,
                    Role::Scheduler => "drover serving",
                    Role::Worker => "worker started",
                };
                std::fs::read_to_string(&process.log).is_ok_and(|log| log.contains(needle))
            });
            if api_ready && roles_ready {
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "the fleet was not ready within {START_DEADLINE:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The processes that have ended, with their exit status (a process the test
    /// killed on purpose included).
    pub(crate) fn exited(&mut self) -> Vec<(String, ExitStatus)> {
        for process in &mut self.processes {
            if process.exit.is_none()
                && let Ok(Some(status)) = process.child.try_wait()
            {
                process.exit = Some(status);
            }
        }
        self.processes
            .iter()
            .filter_map(|process| process.exit.map(|status| (process.name.clone(), status)))
            .collect()
    }

    /// The processes that have ended although the test did not kill them.
    pub(crate) fn died(&mut self) -> Vec<(String, ExitStatus)> {
        let killed: Vec<String> = self
            .processes
            .iter()
            .filter(|process| {
                self.killed.contains_key(&process.pid) || self.stopped.contains(&process.pid)
            })
            .map(|process| process.name.clone())
            .collect();
        self.exited()
            .into_iter()
            .filter(|(name, _)| !killed.contains(name))
            .collect()
    }

    pub(crate) fn workers(&self) -> Vec<&Process> {
        self.processes
            .iter()
            .filter(|process| process.role == Role::Worker)
            .collect()
    }

    pub(crate) fn process(&self, pid: u32) -> &Process {
        self.processes
            .iter()
            .find(|process| process.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} is no process of the fleet"))
    }

    /// `kill -9` a process of the fleet; the history counts its unfinished steps as
    /// ended now.
    pub(crate) fn kill9(&mut self, pid: u32) -> i64 {
        let at = now_ns();
        signal(pid, Signal::SIGKILL);
        self.killed.insert(pid, at);
        let process = self
            .processes
            .iter_mut()
            .find(|process| process.pid == pid)
            .expect("a fleet process");
        process.exit = process.child.wait().ok();
        at
    }

    pub(crate) fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// A fleet process's answer to `GET path` on its health and metrics address:
    /// its status and body; `None` when it did not answer.
    pub(crate) async fn get(&self, process: &Process, path: &str) -> Option<(u16, String)> {
        let response = self
            .api
            .http
            .get(format!("http://{}{path}", process.listen))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits for a process the test signalled to exit, and returns how.
    pub(crate) async fn wait_exit(&mut self, pid: u32, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            let process = self
                .processes
                .iter_mut()
                .find(|process| process.pid == pid)
                .expect("a fleet process");
            if let Some(status) = process.exit {
                return status;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                process.exit = Some(status);
                self.stopped.insert(pid);
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "process {pid} did not exit within {deadline:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` to a process of the fleet.
    pub(crate) fn signal(&self, pid: u32, signal_to_send: Signal) {
        signal(pid, signal_to_send);
    }

    /// Makes steps of `app` sleep between `min` and `max` milliseconds.
    pub(crate) fn set_step_ms(&self, app: &str, (min, max): (u64, u64)) {
        std::fs::write(
            self.dir.path().join("durations").join(app),
            format!("{min} {max}\n"),
        )
        .expect("failed to write a step duration");
    }

    /// Every step recorded so far.
    pub(crate) fn history(&self) -> Vec<Run> {
        history::read(&self.history)
    }

    /// The PIDs of the fleet's processes that are alive, by process name, among them
    /// steps (which inherit the marker of the worker that started them). Zombies
    /// count as dead.
    pub(crate) fn live_descendants_of(&self, process_name: &str) -> Vec<u32> {
        marked_processes(&self.id)
            .into_iter()
            .filter(|(_, name)| name == process_name)
            .map(|(pid, _)| pid)
            .filter(|pid| is_alive(*pid))
            .collect()
    }

    /// Submits `requests` with at most `concurrency` in flight; returns the
    /// submissions in the order of the requests.
    pub(crate) async fn submit_all(
        &self,
        requests: Vec<Request>,
        concurrency: usize,
    ) -> Vec<Submission> {
        let limit = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        for (idx, request) in requests.into_iter().enumerate() {
            let (api, limit) = (self.api.clone(), limit.clone());
            running.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("the semaphore is open");
                (idx, api.submit(&request).await)
            });
        }
        let mut submissions = Vec::new();
        while let Some(joined) = running.join_next().await {
            submissions.push(joined.expect("a submission panicked"));
        }
        submissions.sort_by_key(|(idx, _)| *idx);
        submissions.into_iter().map(|(_, s)| s).collect()
    }

    /// Polls the API until every deployment is terminal or `deadline` passed (or
    /// every worker is gone); returns what the API last said about each.
    pub(crate) async fn wait_terminal(
        &mut self,
        submissions: &[Submission],
        deadline: Duration,
    ) -> Vec<Outcome> {
        let started = Instant::now();
        let mut outcomes: Vec<Outcome> = submissions
            .iter()
            .map(|s| outcome_of(&s.id, None))
            .collect();
        let limit = Arc::new(Semaphore::new(8));
        loop {
            let mut running = JoinSet::new();
            for (idx, submission) in submissions.iter().enumerate() {
                if outcomes[idx].is_terminal() {
                    continue;
                }
                let (api, limit) = (self.api.clone(), limit.clone());
                let (tenant, id) = (submission.tenant, submission.id.clone());
                running.spawn(async move {
                    let _permit = limit.acquire_owned().await.expect("the semaphore is open");
                    (idx, api.deployment(tenant, &id).await)
                });
            }
            while let Some(joined) = running.join_next().await {
                let (idx, body) = joined.expect("a poll panicked");
                if body.is_some() {
                    outcomes[idx] = outcome_of(&submissions[idx].id, body.as_ref());
                }
            }
            if outcomes.iter().all(Outcome::is_terminal) || started.elapsed() > deadline {
                return outcomes;
            }
            let workers_alive = self.processes.iter_mut().any(|process| {
                process.role == Role::Worker && matches!(process.child.try_wait(), Ok(None))
            });
            if !workers_alive {
                return outcomes;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `predicate` holds for the history, or panics after `deadline`.
    pub(crate) async fn wait_for_history(
        &self,
        what: &str,
        deadline: Duration,
        mut predicate: impl FnMut(&[Run]) -> bool,
    ) -> Vec<Run> {
        let started = Instant::now();
        loop {
            let runs = self.history();
            if predicate(&runs) {
                return runs;
            }
            assert!(
                started.elapsed() < deadline,
                "{}: timed out after {deadline:?} waiting for {what}\n{}",
                self.test,
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many results the workers' logs say were refused as stale.
    pub(crate) fn stale_rejected(&self) -> usize {
        self.workers()
            .iter()
            .map(|worker| count_log_messages(&worker.log, "result refused"))
            .sum()
    }

    /// The number of log lines of `process_name` whose message starts with `prefix`.
    pub(crate) fn log_messages(&self, process_name: &str, prefix: &str) -> usize {
        self.processes
            .iter()
            .filter(|process| process.name == process_name)
            .map(|process| count_log_messages(&process.log, prefix))
            .sum()
    }

    /// The messages of `process_name`'s JSON log lines whose span names `trace_id`.
    pub(crate) fn traced_messages(&self, process_name: &str, trace_id: &str) -> Vec<String> {
        self.processes
            .iter()
            .filter(|process| process.name == process_name)
            .flat_map(|process| {
                std::fs::read_to_string(&process.log)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .filter(|line| line["span"]["trace_id"].as_str() == Some(trace_id))
                    .filter_map(|line| line["fields"]["message"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Computes the figures of a run from the history, the submissions and the API's
    /// outcomes, and prints them as one line (on stderr, uncaptured).
    pub(crate) fn figures(
        &self,
        submissions: &[Submission],
        outcomes: &[Outcome],
        seconds: f64,
    ) -> history::Figures {
        history::analyse(
            &self.history(),
            submissions,
            outcomes,
            &self.killed,
            self.stale_rejected(),
            seconds,
        )
    }

    /// Prints the figures line (with `extra` figures after the common ones) where the
    /// test output shows it even when the test passes.
    pub(crate) fn print_figures(&self, figures: &history::Figures, extra: &str) {
        let line = format!("fleet: test={} {}{extra}\n", self.test, figures.line());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// What went on in the fleet: each process's state and its last warnings and
    /// errors, for failure messages.
    pub(crate) fn diagnostics(&self) -> String {
        let mut text = format!(
            "fleet `{}` (namespace {}, dir {}):\n",
            self.test,
            self.namespace,
            self.dir.path().display()
        );
        for process in &self.processes {
            text.push_str(&format!(
                "--- {} (pid {}, {}) ---\n",
                process.name,
                process.pid,
                match process.exit {
                    Some(status) => format!("exited: {status}"),
                    None => "running".to_owned(),
                }
            ));
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let notable: Vec<&str> = log
                .lines()
                .filter(|line| {
                    line.contains("\"WARN\"")
                        || line.contains("\"ERROR\"")
                        || !line.starts_with('{')
                })
                .collect();
            for line in &notable[notable.len().saturating_sub(8)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Keeps the fleet's directory (logs, history) after the test, for a post-mortem.
    pub(crate) fn keep_dir(&mut self) {
        self.dir.disable_cleanup(true);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for process in &mut self.processes {
            if process.exit.is_none() {
                let _ = process.child.kill();
                process.exit = process.child.wait().ok();
            }
        }
        // Steps die with their worker (their guard's parent-death signal); anything
        // left over — which would be a bug that the tests report — is killed here so
        // that it cannot disturb the next test.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<u32> = marked_processes(&self.id)
                .into_iter()
                .map(|(pid, _)| pid)
                .filter(|pid| is_alive(*pid))
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in left {
                    signal(pid, Signal::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::thread::panicking() {
            self.keep_dir();
            let _ = writeln!(
                std::io::stderr(),
                "fleet `{}`: logs and history kept in {}",
                self.test,
                self.dir.path().display()
            );
        }
        delete_rabbitmq_names(&self.namespace);
    }
}

fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid fits in an i32"));
    let _ = kill(pid, signal);
}

fn config_toml(options: &FleetOptions) -> String {
    format!(
        r#"[worker]
lease = "{lease}"
lock-ttl = "{lock_ttl}"
lock-retry = "{lock_retry}"
max-attempts = {max_attempts}
retry-delay = "{retry_delay}"
tenant-limit = {tenant_limit}
drain = "{drain}"

[driver]
kind = "exec"

[driver.exec]
build = ["bash", "./steps/step.sh", "build"]
deploy = ["bash", "./steps/step.sh", "deploy"]
timeout = "2m"
"#,
        lease = options.lease,
        lock_ttl = options.lock_ttl,
        lock_retry = options.lock_retry,
        max_attempts = options.max_attempts,
        retry_delay = options.retry_delay,
        tenant_limit = options.tenant_limit,
        drain = options.drain,
    )
}

/// A port nothing listens on right now.
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("failed to bind a free port");
    listener.local_addr().expect("a bound address")
}

fn count_log_messages(log: &Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(prefix))
        })
        .count()
}

/// Every process on the machine whose environment carries this fleet's marker, with
/// the name of the fleet process it descends from.
fn marked_processes(fleet_id: &str) -> Vec<(u32, String)> {
    let fleet = format!("{FLEET_MARKER}={fleet_id}");
    let process_prefix = format!("{PROCESS_MARKER}=");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|byte| *byte == 0).collect();
        if !vars.contains(&fleet.as_bytes()) {
            continue;
        }
        let name = vars
            .iter()
            .find_map(|var| {
                std::str::from_utf8(var)
                    .ok()
                    .and_then(|var| var.strip_prefix(&process_prefix))
            })
            .unwrap_or_default()
            .to_owned();
        found.push((pid, name));
    }
    found
}

/// Whether a process exists and is not a zombie (`/proc/PID/stat`).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x"))
}
