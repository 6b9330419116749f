//! The drover under test: a fleet (`drover api`, `scheduler` and `worker` processes
//! on PostgreSQL, RabbitMQ and Redis, in a database and namespace of its own) or
//! the embedded default (`drover serve` on SQLite with the in-process broker and
//! locks), each with the noop driver, driven through its HTTP API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use crate::load::Tenant;

/// Which drover runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// api, scheduler and worker processes on PostgreSQL, RabbitMQ and Redis.
    Fleet,
    /// `drover serve` on the embedded default.
    Embedded,
}

/// The services a fleet runs on.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// A PostgreSQL URL whose user may create databases.
    pub(crate) postgres_admin: String,
    pub(crate) amqp: String,
    pub(crate) redis: String,
}

/// A running drover, stopped (and its database and broker names removed) on drop.
#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) kind: Kind,
    /// The API's base URL.
    pub(crate) api: String,
    /// The tenant the load runs as.
    pub(crate) tenant: Tenant,
    /// Where its store lives, for reading what it recorded.
    pub(crate) database_url: String,
    namespace: String,
    drover: PathBuf,
    config: PathBuf,
    processes: Vec<(String, Child)>,
    /// The fleet's own database, dropped at the end: (admin URL, name).
    database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The tenant limit of a site unless one is given: what its workers run at once,
/// and at least drover's default (20). One tenant loads the site, so a lower limit
/// would measure the limit, not the workers.
fn default_tenant_limit(workers: usize, concurrency: usize) -> usize {
    (workers.max(1) * concurrency).max(20)
}

impl Site {
    /// Starts `kind` with workers of `concurrency`; `workers` worker processes on a
    /// fleet (the embedded default runs one). A fleet of no workers is its API alone.
    /// `tenant_limit`: the site's `tenant-limit`, else [`default_tenant_limit`].
    pub(crate) async fn start(
        kind: Kind,
        drover: &Path,
        services: &Services,
        workers: usize,
        concurrency: usize,
        tenant_limit: Option<usize>,
    ) -> Result<Site> {
        let dir = tempfile::tempdir()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let namespace = format!("bench-{}", &id[..12]);
        let data_dir = dir.path().join("data");
        let mut config = format!(
            "data-dir = \"{}\"\nnamespace = \"{namespace}\"\n\n[driver]\nkind = \"noop\"\n\n[api]\nrate-limit = 0\n\n[worker]\nconcurrency = {concurrency}\ntenant-limit = {}\n",
            data_dir.display(),
            tenant_limit.unwrap_or_else(|| default_tenant_limit(workers, concurrency)),
        );
        let mut database = None;
        let database_url = match kind {
            Kind::Fleet => {
                let name = format!("drover_bench_{}", &id[..12]);
                let admin = Database::connect(&services.postgres_admin)
                    .await
                    .context("failed to connect to PostgreSQL")?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await?;
                let _ = admin.close().await;
                let (base, _) = services
                    .postgres_admin
                    .rsplit_once('/')
                    .context("the PostgreSQL URL names no database")?;
                let url = format!("{base}/{name}");
                database = Some((services.postgres_admin.clone(), name));
                config.insert_str(
                    0,
                    &format!(
                        "database-url = \"{url}\"\namqp-url = \"{}\"\nredis-url = \"{}\"\n",
                        services.amqp, services.redis
                    ),
                );
                url
            }
            Kind::Embedded => format!("sqlite://{}?mode=ro", data_dir.join("drover.db").display()),
        };
        let config_path = dir.path().join("drover.toml");
        std::fs::write(&config_path, config)?;
        let mut site = Site {
            kind,
            api: String::new(),
            tenant: Tenant {
                token: String::new(),
            },
            database_url,
            namespace,
            drover: drover.to_owned(),
            config: config_path,
            processes: Vec::new(),
            database,
            _dir: dir,
        };
        if kind == Kind::Fleet {
            site.run(&["migrate"])?;
        }
        site.tenant = site.create_tenant("bench")?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        site.api = format!("http://{listen}");
        match kind {
            Kind::Fleet => {
                site.spawn("api", &["api", "--listen", &listen])?;
                if workers > 0 {
                    site.spawn("scheduler", &["scheduler"])?;
                }
                for n in 0..workers {
                    site.spawn(&format!("worker-{n}"), &["worker"])?;
                }
            }
            Kind::Embedded => site.spawn("serve", &["serve", "--listen", &listen])?,
        }
        site.wait_ready().await?;
        Ok(site)
    }

    /// Creates a tenant and its token.
    pub(crate) fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let tenant: serde_json::Value =
            serde_json::from_str(&self.run(&["tenant", "create", name, "-o", "json"])?)
                .context("`drover tenant create` printed no JSON")?;
        Ok(Tenant {
            token: tenant["token"]
                .as_str()
                .context("no token in `drover tenant create`")?
                .to_owned(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.drover);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("DROVER_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// Runs a drover command to its end; its stdout.
    fn run(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command(args)
            .output()
            .with_context(|| format!("failed to run {}", self.drover.display()))?;
        if !output.status.success() {
            bail!(
                "`drover {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn spawn(&mut self, role: &str, args: &[&str]) -> Result<()> {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("failed to start {role}"))?;
        self.processes.push((role.to_owned(), child));
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            for (role, child) in &mut self.processes {
                if let Some(status) = child.try_wait()? {
                    bail!("{role} exited at start-up ({status})");
                }
            }
            let ready = client
                .get(format!("{}/readyz", self.api))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            if ready {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("drover was not ready within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connection to its store.
    pub(crate) async fn store(&self) -> Result<DatabaseConnection> {
        Database::connect(&self.database_url)
            .await
            .context("failed to open drover's database")
    }

    /// Stops every process and removes what the site left on the services.
    pub(crate) async fn stop(mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes.clear();
        if let Some((admin, name)) = self.database.take()
            && let Ok(admin) = Database::connect(&admin).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
        if self.kind == Kind::Fleet {
            delete_rabbitmq_names(&self.namespace);
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Deletes the namespace's queues and exchanges (drover declares them without an
/// expiry), best effort.
fn delete_rabbitmq_names(namespace: &str) {
    let expression = format!(
        r#"P = <<"{namespace}.">>,
IsOurs = fun(Name) -> binary:longest_common_prefix([Name, P]) =:= byte_size(P) end,
Qs = [rabbit_amqqueue:delete(Q, false, false, <<"drover-bench">>) || Q <- rabbit_amqqueue:list(<<"/">>), IsOurs(element(4, amqqueue:get_name(Q)))],
Xs = [rabbit_exchange:delete(element(2, X), false, <<"drover-bench">>) || X <- rabbit_exchange:list(<<"/">>), IsOurs(element(4, element(2, X)))],
{{length(Qs), length(Xs)}}."#
    );
    let _ = Command::new("rabbitmqctl")
        .args(["eval", &expression])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
