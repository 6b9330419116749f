//! Where the deploy-domain tests run. One test, three sites:
//!
//! - [`Backend::Embedded`]: `drover` on the embedded default, every command in a
//!   process of its own (SQLite, in-process broker and locks);
//! - [`Backend::Serve`]: one `drover serve` on the embedded default, the commands
//!   its clients (`DROVER_SERVER`);
//! - [`Backend::Fleet`]: an API, a scheduler and a worker as separate `drover`
//!   processes on PostgreSQL, RabbitMQ and Redis, in a database and namespace of
//!   the test's own, the commands their clients.
//!
//! Steps run with the test's scratch directory as their working directory's root
//! (the config file's directory) and `data/` as the data directory, wherever the
//! worker runs, so that a test reads what they did the same way on every site.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{Scratch, block_on, free_port, json_stdout, run_with_deadline};
use crate::support::{PgDatabase, amqp_url, delete_rabbitmq_names, describe, drover, redis_url};

/// How long a site's processes may take to be ready.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The kind of site a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    Serve,
    Fleet,
}

/// A running site: the config its roles use, and how to reach it.
#[derive(Debug)]
pub(crate) struct Site<'a> {
    scratch: &'a Scratch,
    config: PathBuf,
    remote: Option<Remote>,
}

/// The processes of a served site and how its clients reach them.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) url: String,
    pub(crate) token: String,
    /// Each role's process, with the arguments it was started with.
    processes: Vec<(&'static str, Vec<String>, Child)>,
    /// The fleet's database and namespace; `None` for `drover serve`.
    fleet: Option<(PgDatabase, String)>,
}

impl<'a> Site<'a> {
    /// Starts the site's roles with `config` (nothing to start on the embedded
    /// default). On a served site the tenant `acme` is created first.
    pub(crate) fn start(scratch: &'a Scratch, backend: Backend, config: &Path) -> Site<'a> {
        let mut site = Site {
            scratch,
            config: config.to_path_buf(),
            remote: None,
        };
        site.remote = match backend {
            Backend::Embedded => None,
            Backend::Serve => Some(site.serve(None)),
            Backend::Fleet => Some(site.fleet(None)),
        };
        site
    }

    /// Restarts the site's roles with another config, keeping what they stored.
    pub(crate) fn reconfigure(&mut self, config: &Path) {
        self.config = config.to_path_buf();
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        remote.stop();
        let (token, fleet) = (std::mem::take(&mut remote.token), remote.fleet.take());
        self.remote = Some(match fleet {
            None => self.serve(Some(token)),
            Some(fleet) => self.fleet(Some((token, fleet))),
        });
    }

    /// Kills a role's process (`kill -9`); returns what restarts it.
    pub(crate) fn kill_role(&mut self, role: &str) -> StoppedRole {
        let remote = self.remote.as_mut().expect("roles run on a served site");
        let at = remote
            .processes
            .iter()
            .position(|(name, _, _)| *name == role)
            .unwrap_or_else(|| panic!("no `{role}` process runs"));
        let (role, args, mut child) = remote.processes.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        StoppedRole { role, args }
    }

    /// Starts a killed role again, as it was, and waits until the site is ready.
    pub(crate) fn restart_role(&mut self, stopped: StoppedRole) {
        let mut remote = self.remote.take().expect("roles run on a served site");
        let args: Vec<&str> = stopped.args.iter().map(String::as_str).collect();
        remote.spawn(self, stopped.role, &args);
        remote.wait_ready(self.scratch, &[]);
        self.remote = Some(remote);
    }

    /// The API's URL and a tenant token, on a served site.
    pub(crate) fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// `drover ARGS…` as a user of this site runs it: with the config file on the
    /// embedded default; as a client of the API (with a data directory of its own,
    /// apart from the roles') on a served site.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.remote {
            None => drover(&self.scratch.data_dir()),
            Some(remote) => {
                let mut command = drover(&self.scratch.path().join("client"));
                command
                    .env("DROVER_SERVER", &remote.url)
                    .env("DROVER_TOKEN", &remote.token);
                command
            }
        };
        command.arg("--config").arg(&self.config).args(args);
        command
    }

    /// Runs `drover ARGS…` (see [`Site::command`]) to its end.
    pub(crate) fn drover(&self, args: &[&str]) -> Output {
        run_with_deadline(&mut self.command(args))
    }

    /// A role process's `drover` on the embedded default of the scratch directory,
    /// or on the fleet's services.
    fn role_command(&self, role: &str, fleet: Option<&(PgDatabase, String)>) -> Command {
        let mut command = match fleet {
            None => drover(&self.scratch.data_dir()),
            Some((db, namespace)) => {
                // The worker's data directory is the scratch's, like everywhere;
                // the others get their own, to show they need none.
                let data_dir = match role {
                    "worker" => self.scratch.data_dir(),
                    _ => self.scratch.path().join("roles").join(role),
                };
                let mut command = drover(&data_dir);
                command
                    .env("DROVER_DATABASE_URL", &db.url)
                    .env("DROVER_AMQP_URL", amqp_url())
                    .env("DROVER_REDIS_URL", redis_url())
                    .env("DROVER_NAMESPACE", namespace);
                command
            }
        };
        command.arg("--config").arg(&self.config);
        command
    }

    /// Runs a one-shot command of the roles (`migrate`, `tenant create`).
    fn role_once(&self, fleet: Option<&(PgDatabase, String)>, args: &[&str]) -> Output {
        let output = run_with_deadline(self.role_command("admin", fleet).args(args));
        assert!(
            output.status.success(),
            "`drover {}` failed:\n{}",
            args.join(" "),
            describe(&output)
        );
        output
    }

    /// Creates the tenant `acme` and returns its token.
    fn create_tenant(&self, fleet: Option<&(PgDatabase, String)>) -> String {
        let created = self.role_once(fleet, &["tenant", "create", "acme", "-o", "json"]);
        json_stdout(&created)["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// Starts `drover serve` on the embedded default.
    fn serve(&self, token: Option<String>) -> Remote {
        let token = token.unwrap_or_else(|| self.create_tenant(None));
        let port = free_port();
        let mut remote = Remote {
            url: format!("http://127.0.0.1:{port}"),
            token,
            processes: Vec::new(),
            fleet: None,
        };
        let listen = format!("127.0.0.1:{port}");
        remote.spawn(self, "serve", &["serve", "--listen", &listen]);
        remote.wait_ready(self.scratch, &[]);
        remote
    }

    /// Starts an API, a scheduler and a worker on PostgreSQL, RabbitMQ and Redis;
    /// the first time, in a new database, migrated, with the tenant `acme`.
    fn fleet(&self, existing: Option<(String, (PgDatabase, String))>) -> Remote {
        let (token, fleet) = match existing {
            Some(existing) => existing,
            None => {
                let db = block_on(PgDatabase::create());
                let fleet = (db, format!("it-{}", uuid::Uuid::new_v4().simple()));
                self.role_once(Some(&fleet), &["migrate"]);
                (self.create_tenant(Some(&fleet)), fleet)
            }
        };
        let port = free_port();
        let mut remote = Remote {
            url: format!("http://127.0.0.1:{port}"),
            token,
            processes: Vec::new(),
            fleet: Some(fleet),
        };
        let listen = format!("127.0.0.1:{port}");
        remote.spawn(self, "api", &["api", "--listen", &listen]);
        remote.spawn(self, "scheduler", &["scheduler"]);
        remote.spawn(self, "worker", &["worker", "--concurrency", "4"]);
        remote.wait_ready(
            self.scratch,
            &[
                ("scheduler", "drover serving"),
                ("worker", "worker started"),
            ],
        );
        remote
    }
}

/// A role process [`Site::kill_role`] killed.
#[derive(Debug)]
pub(crate) struct StoppedRole {
    role: &'static str,
    args: Vec<String>,
}

/// The log filter of a site's roles.
const ROLE_LOG: &str = "info,drover=debug,api=debug,scheduler=debug,worker=debug,shared=debug";

/// Every role's log of a served site, whole.
pub(crate) fn role_logs(scratch: &Scratch) -> String {
    let mut logs = String::new();
    let entries = std::fs::read_dir(scratch.path().join("roles")).expect("roles/");
    for entry in entries {
        let path = entry.expect("a log").path();
        if path.extension().is_some_and(|ext| ext == "log") {
            logs.push_str(&std::fs::read_to_string(&path).expect("a log"));
        }
    }
    logs
}

impl Remote {
    /// Starts a role process, logging to `roles/ROLE.log` (drover's own crates at
    /// `debug`, so that a test can read what they say, the rest at `info`).
    fn spawn(&mut self, site: &Site<'_>, role: &'static str, args: &[&str]) {
        let log = site
            .scratch
            .path()
            .join("roles")
            .join(format!("{role}.log"));
        std::fs::create_dir_all(log.parent().expect("a directory"))
            .expect("failed to create roles/");
        let file = std::fs::File::create(&log).expect("failed to create a log file");
        let child = site
            .role_command(role, self.fleet.as_ref())
            .env("DROVER_LOG", ROLE_LOG)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("failed to clone a file handle"))
            .stderr(file)
            .spawn()
            .expect("failed to start drover");
        self.processes.push((
            role,
            args.iter().map(|arg| (*arg).to_owned()).collect(),
            child,
        ));
    }

    /// Waits until the API answers `/readyz` and each `(role, line)` role has
    /// logged its line.
    fn wait_ready(&mut self, scratch: &Scratch, lines: &[(&str, &str)]) {
        let started = Instant::now();
        let log = |role: &str| {
            std::fs::read_to_string(scratch.path().join("roles").join(format!("{role}.log")))
                .unwrap_or_default()
        };
        loop {
            for (role, _, child) in &mut self.processes {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "`drover {role}` exited at start-up ({status}):\n{}",
                        log(role)
                    );
                }
            }
            let api_ready = block_on(async {
                reqwest::get(format!("{}/readyz", self.url))
                    .await
                    .is_ok_and(|response| response.status().is_success())
            });
            if api_ready && lines.iter().all(|(role, line)| log(role).contains(line)) {
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "the site was not ready within {START_DEADLINE:?}:\n{}",
                self.processes
                    .iter()
                    .map(|(role, _, _)| format!("--- {role} ---\n{}", log(role)))
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The deployment `id` once it ended (polled, with a deadline of a minute).
    pub(crate) fn ended(&self, id: &str) -> Value {
        let asked = Instant::now();
        loop {
            let deployment =
                self.request(reqwest::Method::GET, &format!("/v1/deployments/{id}"), None);
            if ["succeeded", "failed", "cancelled", "rolled_back"]
                .contains(&deployment["state"].as_str().unwrap_or(""))
            {
                return deployment;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(60),
                "{id} did not end: {deployment:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a request to the API as the tenant and returns its JSON answer.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Value {
        let url = format!("{}{path}", self.url);
        let body = body.map(str::to_owned);
        block_on(async {
            let mut request = reqwest::Client::new()
                .request(method, url)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/yaml")
                    .body(body);
            }
            request
                .send()
                .await
                .expect("the API answers")
                .json()
                .await
                .expect("a JSON answer")
        })
    }

    /// Sends a webhook delivery (no token: `headers` sign it) and returns the
    /// answer's status and JSON.
    pub(crate) fn deliver(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        block_on(async {
            let mut request = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_owned());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("the API answers");
            let status = response.status().as_u16();
            (status, response.json().await.expect("a JSON answer"))
        })
    }

    fn stop(&mut self) {
        for (_, _, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes.clear();
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop();
        if let Some((_, namespace)) = &self.fleet {
            delete_rabbitmq_names(namespace);
        }
    }
}

/// Defines one `#[test]` per backend that runs `$test(Backend)`, in a module named
/// after the test: `NAME::embedded`, `NAME::serve`, `NAME::fleet`.
macro_rules! on_sites {
    ($test:ident: $($backend:ident),+) => {
        mod $test {
            $(
                #[test]
                fn $backend() {
                    super::$test($crate::site::on_sites!(@backend $backend));
                }
            )+
        }
    };
    (@backend embedded) => { $crate::site::Backend::Embedded };
    (@backend serve) => { $crate::site::Backend::Serve };
    (@backend fleet) => { $crate::site::Backend::Fleet };
}

pub(crate) use on_sites;
