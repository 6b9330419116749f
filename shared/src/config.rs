//! Configuration: one struct, loaded as defaults < TOML file < `DROVER_*` environment.
//! Command-line flags are applied on top by the binary.
//!
//! No URL configured means the embedded default: in-process broker and locks,
//! SQLite under the data directory.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment variable `{var}`: {message}")]
    Env { var: &'static str, message: String },
    #[error("invalid config: `{field}` {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// drover's configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Config {
    /// Where the embedded default keeps its SQLite database and where steps may
    /// keep files (`DROVER_DATA_DIR`). Default `./.drover`.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite:…` (`DROVER_DATABASE_URL`); unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// `amqp://…` (`DROVER_AMQP_URL`); unset means the in-process broker.
    pub amqp_url: Option<String>,
    /// `redis://…` (`DROVER_REDIS_URL`); unset means in-process locks.
    pub redis_url: Option<String>,
    /// Prepended to every RabbitMQ queue and exchange and every Redis key
    /// (`DROVER_NAMESPACE`), so that several installations, or tests, can share one
    /// RabbitMQ and one Redis. Default: none.
    pub namespace: Option<String>,
    /// The HTTP API.
    pub api: ApiConfig,
    /// How workers run tasks.
    pub worker: WorkerConfig,
    /// What builds and deploys.
    pub driver: DriverConfig,
    /// What the store keeps.
    pub store: StoreConfig,
    /// The directory that relative paths in the config file are resolved against:
    /// the file's own directory, or the current directory without a file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// What the store keeps.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// How long a finished deployment (its tasks, logs and dependencies) is kept
    /// after it ended, and a saved plan after it was saved; the scheduler deletes
    /// older ones. Releases and what runs are never deleted. Default: kept forever.
    #[serde(with = "humantime_serde")]
    pub retain: Option<Duration>,
}

/// The HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ApiConfig {
    /// The address the API listens on (`DROVER_API_LISTEN`). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Requests one token (or one hook's deliveries) may make per second,
    /// sustained; more are answered 429 with `Retry-After`. 0: no limit. Default 100.
    pub rate_limit: u32,
    /// Requests one token (or one hook) may make at once above that rate. Default 200.
    pub rate_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit: 100,
            rate_burst: 200,
        }
    }
}

/// How workers run tasks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct WorkerConfig {
    /// Tasks one worker runs at once (`DROVER_WORKER_CONCURRENCY`). Default 4.
    pub concurrency: usize,
    /// How long a claimed task is leased to its worker before the reaper may hand it
    /// to another; extended while the step runs. Default 30s.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long a component lock lives unless renewed. Default 30s.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// How long a task whose component lock is taken waits before it is tried again. Default 500ms.
    #[serde(with = "humantime_serde")]
    pub lock_retry: Duration,
    /// How many times a step that fails transiently (exec: exit status 75) is run in
    /// all before its task fails. Default 3.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it, with jitter. Default 2s.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// The most tasks one tenant may have handed out (running, or dispatched to the
    /// workers) at once across the fleet; its other ready tasks wait in the outbox
    /// while the tenants take turns, so that one tenant's flood does not starve the
    /// others. Default 20.
    pub tenant_limit: u32,
    /// How long running steps have to finish after SIGTERM before they are
    /// stopped and their tasks handed back to run elsewhere. Keep it below the
    /// supervisor's own grace (Kubernetes' `terminationGracePeriodSeconds`, 30s by
    /// default). Default 25s.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(30),
            lock_retry: Duration::from_millis(500),
            max_attempts: 3,
            retry_delay: Duration::from_secs(2),
            tenant_limit: 20,
            drain: Duration::from_secs(25),
        }
    }
}

/// Which driver builds and deploys, and its settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct DriverConfig {
    pub kind: DriverKind,
    /// Settings of the `exec` driver; required when `kind = "exec"`.
    pub exec: Option<ExecConfig>,
}

/// The drivers drover has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// Runs operator-configured programs.
    Exec,
    /// Does nothing: for dry runs and benchmarks.
    #[default]
    Noop,
}

/// The programs the `exec` driver runs, as argv lists. A relative program path is
/// resolved against the config file's directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub build: Vec<String>,
    pub deploy: Vec<String>,
    #[serde(default)]
    pub delete: Option<Vec<String>>,
    /// Reports what the app's components run now, as JSON on stdout (drift, adopt).
    #[serde(default)]
    pub status: Option<Vec<String>>,
    /// The longest a step may run before its process group is killed. Default 10m.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a step of a cancelled deployment has between SIGTERM and SIGKILL.
    /// Default 10s.
    #[serde(default = "default_step_grace", with = "humantime_serde")]
    pub grace: Duration,
}

fn default_step_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_step_grace() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".drover"),
            database_url: None,
            amqp_url: None,
            redis_url: None,
            namespace: None,
            api: ApiConfig::default(),
            worker: WorkerConfig::default(),
            driver: DriverConfig::default(),
            store: StoreConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("amqp_url", &self.amqp_url.as_deref().map(redact_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("namespace", &self.namespace)
            .field("api", &self.api)
            .field("worker", &self.worker)
            .field("driver", &self.driver)
            .field("store", &self.store)
            .field("base_dir", &self.base_dir)
            .finish()
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`, so URLs can be logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

impl Config {
    /// Loads the config file at `path` (or the one named by `DROVER_CONFIG` in `env`),
    /// then applies the `DROVER_*` variables of `env`, then validates the result.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.get("DROVER_CONFIG").map(PathBuf::from));
        let mut config = match &path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        config.base_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // A `data-dir` written in the file is relative to the file, like its programs;
        // the default stays relative to the current directory.
        let sets_data_dir = text
            .parse::<toml::Table>()
            .is_ok_and(|table| table.contains_key("data-dir"));
        if sets_data_dir {
            config.data_dir = config.base_dir.join(&config.data_dir);
        }
        Ok(config)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(dir) = env.get("DROVER_DATA_DIR") {
            self.data_dir = PathBuf::from(dir);
        }
        // Each URL may carry a password: it can also come from a file, as
        // Kubernetes and compose mount secrets (`…_FILE`, its content trimmed of
        // the final newline).
        for (var, file_var, url) in [
            (
                "DROVER_DATABASE_URL",
                "DROVER_DATABASE_URL_FILE",
                &mut self.database_url,
            ),
            (
                "DROVER_AMQP_URL",
                "DROVER_AMQP_URL_FILE",
                &mut self.amqp_url,
            ),
            (
                "DROVER_REDIS_URL",
                "DROVER_REDIS_URL_FILE",
                &mut self.redis_url,
            ),
        ] {
            let value = match (env.get(var), env.get(file_var)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Env {
                        var: file_var,
                        message: format!("set `{var}` or `{file_var}`, not both"),
                    });
                }
                (Some(value), None) => Some(value.clone()),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Env {
                        var: file_var,
                        message: format!("failed to read `{path}`: {err}"),
                    })?;
                    Some(text.trim_end_matches(['\n', '\r']).to_owned())
                }
                (None, None) => None,
            };
            if let Some(value) = value {
                *url = Some(value).filter(|value| !value.is_empty());
            }
        }
        if let Some(namespace) = env.get("DROVER_NAMESPACE") {
            self.namespace = Some(namespace.clone()).filter(|namespace| !namespace.is_empty());
        }
        if let Some(listen) = env.get("DROVER_API_LISTEN") {
            self.api.listen = listen.parse().map_err(|_| ConfigError::Env {
                var: "DROVER_API_LISTEN",
                message: format!("expected an address like `0.0.0.0:8080`, found `{listen}`"),
            })?;
        }
        if let Some(n) = env.get("DROVER_WORKER_CONCURRENCY") {
            self.worker.concurrency = n.parse().map_err(|_| ConfigError::Env {
                var: "DROVER_WORKER_CONCURRENCY",
                message: format!("expected a positive integer, found `{n}`"),
            })?;
        }
        Ok(())
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                field: "worker.max-attempts",
                message: "must be at least 1".into(),
            });
        }
        if self.store.retain.is_some_and(|retain| retain.is_zero()) {
            return Err(ConfigError::Invalid {
                field: "store.retain",
                message: "must be longer than zero (leave it out to keep everything)".into(),
            });
        }
        if self.worker.tenant_limit == 0 {
            return Err(ConfigError::Invalid {
                field: "worker.tenant-limit",
                message: "must be at least 1".into(),
            });
        }
        if self.worker.concurrency == 0 {
            return Err(ConfigError::Invalid {
                field: "worker.concurrency",
                message: "must be at least 1".into(),
            });
        }
        if self.driver.kind == DriverKind::Exec {
            let Some(exec) = &self.driver.exec else {
                return Err(ConfigError::Invalid {
                    field: "driver.exec",
                    message: "is required when `driver.kind = \"exec\"`: set `build` and `deploy` programs".into(),
                });
            };
            for (field, argv) in [
                ("driver.exec.build", &exec.build),
                ("driver.exec.deploy", &exec.deploy),
            ] {
                if argv.is_empty() {
                    return Err(ConfigError::Invalid {
                        field,
                        message: "must name a program, e.g. `[\"./steps/build.sh\"]`".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The database URL in effect: the configured one, or SQLite in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.embedded_database().display()),
        }
    }

    /// The prefix of drover's Redis keys: `drover:`, after the namespace if any.
    pub fn redis_prefix(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}:drover:"),
            None => "drover:".to_owned(),
        }
    }

    /// The prefix of drover's RabbitMQ queues and exchanges: the namespace and a dot,
    /// if any (the names themselves start with `drover.`).
    pub fn amqp_prefix(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}."),
            None => String::new(),
        }
    }

    /// Where the embedded SQLite database lives.
    pub fn embedded_database(&self) -> PathBuf {
        self.data_dir.join("drover.db")
    }

    /// Resolves a program path from the config file against the file's directory.
    pub fn resolve_program(&self, program: &str) -> PathBuf {
        let path = Path::new(program);
        if path.is_relative() && program.contains('/') {
            self.base_dir.join(path)
        } else {
            path.to_path_buf()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls_come_from_files_as_secrets_are_mounted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("database-url");
        std::fs::write(&secret, "postgres://drover:s3cret@db/drover\n").expect("a file");
        let path = secret.display().to_string();
        let config =
            Config::load(None, &env(&[("DROVER_DATABASE_URL_FILE", &path)])).expect("a config");
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://drover:s3cret@db/drover"),
            "the content, without its final newline"
        );
        let both = Config::load(
            None,
            &env(&[
                ("DROVER_DATABASE_URL_FILE", &path),
                ("DROVER_DATABASE_URL", "postgres://other"),
            ]),
        )
        .expect_err("both set is refused");
        assert!(both.to_string().contains("not both"), "{both}");
        let missing = dir.path().join("nope").display().to_string();
        let unread = Config::load(None, &env(&[("DROVER_REDIS_URL_FILE", &missing)]))
            .expect_err("a missing file is refused");
        let message = unread.to_string();
        assert!(
            message.contains("DROVER_REDIS_URL_FILE") && message.contains(&missing),
            "{message}"
        );
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("drover.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_embedded() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from(".drover"));
        assert_eq!(config.worker.concurrency, 4);
        assert_eq!(config.driver.kind, DriverKind::Noop);
        assert_eq!(
            config.effective_database_url(),
            "sqlite://.drover/drover.db?mode=rwc"
        );
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"
            data-dir = "state"
            [worker]
            concurrency = 2
            lease = "1m"
            [driver]
            kind = "exec"
            [driver.exec]
            build = ["./steps/build.sh"]
            deploy = ["./steps/deploy.sh", "--verbose"]
            timeout = "90s"
            "#,
        );
        let config =
            Config::load(Some(&path), &env(&[("DROVER_WORKER_CONCURRENCY", "8")])).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"));
        assert_eq!(config.worker.concurrency, 8);
        assert_eq!(config.worker.lease, Duration::from_secs(60));
        let exec = config.driver.exec.as_ref().unwrap();
        assert_eq!(exec.timeout, Duration::from_secs(90));
        assert_eq!(
            config.resolve_program(&exec.build[0]),
            dir.path().join("./steps/build.sh")
        );
        assert_eq!(config.resolve_program("bash"), PathBuf::from("bash"));
    }

    #[test]
    fn store_retain_is_a_duration_kept_forever_by_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(None, &env(&[])).unwrap().store.retain, None);
        let path = write(dir.path(), "[store]\nretain = \"30d\"\n");
        let config = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(
            config.store.retain,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        let path = write(dir.path(), "[store]\nretain = \"0s\"\n");
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.retain"), "{err}");
    }

    #[test]
    fn config_file_from_env_and_data_dir_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");
        let from_file =
            Config::load(None, &env(&[("DROVER_CONFIG", path.to_str().unwrap())])).unwrap();
        assert_eq!(from_file.base_dir, dir.path());
        assert_eq!(
            from_file.data_dir,
            PathBuf::from(".drover"),
            "the default data dir stays relative to the current directory"
        );
        let overridden = Config::load(
            None,
            &env(&[
                ("DROVER_CONFIG", path.to_str().unwrap()),
                ("DROVER_DATA_DIR", "/srv/drover"),
            ]),
        )
        .unwrap();
        assert_eq!(overridden.data_dir, PathBuf::from("/srv/drover"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[worker]\nconcurency = 2\n");
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `concurency`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn exec_driver_needs_programs() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[driver]\nkind = \"exec\"\n");
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid config: `driver.exec` is required when `driver.kind = \"exec\"`: set `build` and `deploy` programs"
        );
    }

    #[test]
    fn bad_env_values_are_named() {
        let err = Config::load(None, &env(&[("DROVER_WORKER_CONCURRENCY", "many")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid environment variable `DROVER_WORKER_CONCURRENCY`: expected a positive integer, found `many`"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://drover:s3cret@db:5432/drover"),
            "postgres://drover:***@db:5432/drover"
        );
        assert_eq!(redact_url("postgres://db/drover"), "postgres://db/drover");
        let config = Config {
            database_url: Some("postgres://u:pw@h/d".into()),
            amqp_url: Some("amqp://guest:guestpw@h:5672/%2f".into()),
            redis_url: Some("redis://:redispw@h:6379".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        for secret in ["pw@", "guestpw", "redispw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
