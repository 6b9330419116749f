//! `drover doctor`: checks a configuration against the services it names (the
//! database reachable and migrated, RabbitMQ's queues and their depths, Redis,
//! the driver's programs) and prints, for each, what is wrong and how to fix it.
//! It writes nothing, but connecting to RabbitMQ declares drover's shared
//! exchanges and dead-letter queue, as every role's connection does.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use shared::broker::{AmqpBroker, AmqpOptions};
use shared::config::{Config, DriverKind, redact_url};
use shared::locks::{Locks as _, RedisLocks};
use shared::store::SeaOrmStore;

use crate::Failure;

/// How long each service has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What one check found.
enum Found {
    Ok(String),
    /// Works, but worth knowing.
    Note(String),
    Problem {
        what: String,
        fix: String,
    },
}

fn problem(what: impl Into<String>, fix: impl Into<String>) -> Found {
    Found::Problem {
        what: what.into(),
        fix: fix.into(),
    }
}

/// Runs every check, prints one line (and a fix) for each, and fails when any
/// found a problem.
pub(crate) async fn doctor(config: &Config) -> Result<(), Failure> {
    let mut findings = vec![("database", database(config).await)];
    findings.extend(
        broker(config)
            .await
            .into_iter()
            .map(|found| ("broker", found)),
    );
    findings.push(("locks", locks(config).await));
    findings.extend(driver(config).into_iter().map(|found| ("driver", found)));
    let mut problems = 0;
    for (area, found) in &findings {
        match found {
            Found::Ok(what) => println!("ok    {area:<8}  {what}"),
            Found::Note(what) => println!("note  {area:<8}  {what}"),
            Found::Problem { what, fix } => {
                problems += 1;
                println!("FAIL  {area:<8}  {what}\n      {:<8}  fix: {fix}", "");
            }
        }
    }
    match problems {
        0 => Ok(()),
        1 => Err(Failure::Error(anyhow!("1 problem found"))),
        n => Err(Failure::Error(anyhow!("{n} problems found"))),
    }
}

async fn database(config: &Config) -> Found {
    let Some(url) = &config.database_url else {
        return Found::Ok(format!(
            "embedded SQLite at {} (created and migrated when drover starts)",
            config.embedded_database().display()
        ));
    };
    let redacted = redact_url(url);
    let store = match tokio::time::timeout(ANSWER_WITHIN, SeaOrmStore::connect(url)).await {
        Ok(Ok(store)) => store,
        Ok(Err(err)) => {
            return problem(
                format!("{redacted}: {err}"),
                "check DROVER_DATABASE_URL (host, port, user, password, database) and that PostgreSQL runs: `pg_isready -h HOST`",
            );
        }
        Err(_) => {
            return problem(
                format!("{redacted}: no answer within {ANSWER_WITHIN:?}"),
                "check that the database's host and port are reachable from here",
            );
        }
    };
    match store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => {
            Found::Ok(format!("{redacted}: reachable, every migration applied"))
        }
        Ok(pending) => problem(
            format!(
                "{redacted}: {} migrations not applied ({})",
                pending.len(),
                pending.join(", ")
            ),
            "run `drover migrate` (once, with this configuration)",
        ),
        Err(err) => problem(
            format!("{redacted}: failed to read the applied migrations: {err}"),
            "check that the database user may read the `seaql_migrations` table",
        ),
    }
}

async fn broker(config: &Config) -> Vec<Found> {
    let Some(url) = &config.amqp_url else {
        return vec![Found::Ok(
            "in-process (embedded; roles in separate processes need DROVER_AMQP_URL)".into(),
        )];
    };
    let redacted = redact_url(url);
    let options = AmqpOptions {
        prefix: config.amqp_prefix(),
        connection_name: format!("drover-doctor-{}", std::process::id()),
        ..AmqpOptions::default()
    };
    let broker = match tokio::time::timeout(ANSWER_WITHIN, AmqpBroker::connect(url, options)).await
    {
        Ok(Ok(broker)) => broker,
        Ok(Err(err)) => {
            return vec![problem(
                format!("{redacted}: {err}"),
                "check DROVER_AMQP_URL (user, password, virtual host: `%2f` is `/`) and that RabbitMQ runs: `rabbitmqctl status`",
            )];
        }
        Err(_) => {
            return vec![problem(
                format!("{redacted}: no answer within {ANSWER_WITHIN:?}"),
                "check that RabbitMQ's host and port are reachable from here",
            )];
        }
    };
    let queues = match broker.inspect().await {
        Ok(queues) => queues,
        Err(err) => {
            return vec![problem(
                format!("{redacted}: connected, but failed to inspect the queues: {err}"),
                "check that the user may configure and read the virtual host",
            )];
        }
    };
    let mut found = vec![Found::Ok(format!("{redacted}: reachable"))];
    found.extend(queues.into_iter().map(|queue| {
        if queue.declared {
            Found::Ok(format!(
                "queue `{}`: {} messages ready, {} consumers",
                queue.name, queue.messages, queue.consumers
            ))
        } else {
            Found::Note(format!(
                "queue `{}`: not declared yet (the first worker or submission declares it)",
                queue.name
            ))
        }
    }));
    found
}

async fn locks(config: &Config) -> Found {
    let Some(url) = &config.redis_url else {
        return Found::Ok(
            "in-process (embedded; roles in separate processes need DROVER_REDIS_URL)".into(),
        );
    };
    let redacted = redact_url(url);
    let connected = tokio::time::timeout(ANSWER_WITHIN, async {
        let locks = RedisLocks::connect(url, &config.redis_prefix()).await?;
        locks.check_connectivity().await
    })
    .await;
    match connected {
        Ok(Ok(())) => Found::Ok(format!("{redacted}: reachable")),
        Ok(Err(err)) => problem(
            format!("{redacted}: {err}"),
            "check DROVER_REDIS_URL (host, port, password) and that Redis runs: `redis-cli -h HOST ping`",
        ),
        Err(_) => problem(
            format!("{redacted}: no answer within {ANSWER_WITHIN:?}"),
            "check that Redis's host and port are reachable from here",
        ),
    }
}

fn driver(config: &Config) -> Vec<Found> {
    let exec = match (config.driver.kind, &config.driver.exec) {
        (DriverKind::Noop, _) => {
            return vec![Found::Note(
                "noop: steps succeed without doing anything (set `driver.kind = \"exec\"` to run programs)".into(),
            )];
        }
        (DriverKind::Exec, Some(exec)) => exec,
        // The configuration's validation refuses this before anything runs.
        (DriverKind::Exec, None) => {
            return vec![problem(
                "exec without programs",
                "set `driver.exec.build` and `driver.exec.deploy`",
            )];
        }
    };
    let steps = [
        ("build", Some(&exec.build)),
        ("deploy", Some(&exec.deploy)),
        ("delete", exec.delete.as_ref()),
        ("status", exec.status.as_ref()),
    ];
    steps
        .into_iter()
        .filter_map(|(step, argv)| Some((step, argv?.first()?)))
        .map(|(step, program)| {
            let resolved = config.resolve_program(program);
            match executable(&resolved) {
                Ok(path) => Found::Ok(format!("exec {step}: {}", path.display())),
                Err(why) => problem(
                    format!("exec {step}: `{program}` {why}"),
                    format!(
                        "install it, fix `driver.exec.{step}` (a relative path is resolved against the config file's directory), or `chmod +x` it"
                    ),
                ),
            }
        })
        .collect()
}

/// Where `program` is, when it is an executable file (a bare name is looked up
/// on `PATH`); else why not.
fn executable(program: &Path) -> Result<PathBuf, &'static str> {
    let candidates: Vec<PathBuf> = if program.components().count() > 1 || program.is_absolute() {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found_file = false;
    for candidate in candidates {
        let Ok(metadata) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        found_file = true;
        if metadata.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
    }
    Err(if found_file {
        "is not executable"
    } else {
        "is not found"
    })
}
