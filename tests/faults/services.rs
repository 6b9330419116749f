//! The faults the tests inflict on the shared services: closing every RabbitMQ
//! connection, restarting Redis, terminating PostgreSQL sessions, stopping
//! PostgreSQL or RabbitMQ for a while.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait as _, Database};

use crate::support::postgres_admin_url;

/// `rabbitmqctl close_all_connections`: every connection to the broker is closed.
pub(crate) fn close_all_rabbitmq_connections() {
    let output = Command::new("rabbitmqctl")
        .args(["close_all_connections", "drover fault test"])
        .stdin(Stdio::null())
        .output()
        .expect("failed to run rabbitmqctl (RabbitMQ's CLI is required for this test)");
    assert!(
        output.status.success(),
        "rabbitmqctl close_all_connections failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn redis_cli(args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn redis_answers() -> bool {
    redis_cli(&["ping"]).as_deref() == Some("PONG")
}

/// Starts Redis on 127.0.0.1:6379 (as `scripts/services` does) and waits for PONG.
fn start_redis() {
    let status = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("failed to run redis-server");
    assert!(status.success(), "redis-server failed to start: {status}");
    let started = Instant::now();
    while !redis_answers() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Redis did not answer PING within 30s of its restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts Redis when dropped if it is down, so that a failing test never leaves
/// the machine without Redis.
#[derive(Debug)]
pub(crate) struct RedisGuard(());

impl RedisGuard {
    /// Checks that Redis is up (it is required) and arms the guard.
    pub(crate) fn new() -> RedisGuard {
        assert!(
            redis_answers(),
            "Redis on 127.0.0.1:6379 is required for this test (scripts/services starts it)"
        );
        RedisGuard(())
    }

    /// `redis-cli shutdown nosave`: Redis stops and forgets every key (every lock).
    pub(crate) fn shut_down(&self) {
        let _ = redis_cli(&["shutdown", "nosave"]);
        let started = Instant::now();
        while redis_answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Redis still answers 10s after `shutdown nosave`"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts Redis again and waits until it answers.
    pub(crate) fn start(&self) {
        start_redis();
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if !redis_answers() {
            start_redis();
        }
    }
}

/// Terminates every session on `database` but the one asking; returns how many.
pub(crate) async fn terminate_sessions(database: &str) -> u64 {
    let admin = Database::connect(postgres_admin_url())
        .await
        .expect("failed to connect to PostgreSQL");
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await
        .expect("failed to terminate the sessions");
    let _ = admin.close().await;
    u64::try_from(rows.len()).unwrap_or(u64::MAX)
}

/// The database name at the end of a PostgreSQL URL.
pub(crate) fn database_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < deadline, "{what} within {deadline:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postgres_answers() -> bool {
    run("pg_isready", &["-h", "127.0.0.1", "-p", "5432", "-q"])
}

/// This machine's PostgreSQL cluster version (`/etc/postgresql/<version>`).
fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL's /etc/postgresql is required for this test")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .min()
        .expect("a PostgreSQL cluster")
}

fn pg_ctlcluster(action: &str) -> bool {
    let version = postgres_version();
    let mut args = vec!["--skip-systemctl-redirect", &version, "main", action];
    if action == "stop" {
        args.extend(["-m", "fast"]);
    }
    run("pg_ctlcluster", &args)
}

/// PostgreSQL stopped for as long as the guard lives; started again (and waited
/// for) when it is dropped, so that a failing test never leaves it down.
#[derive(Debug)]
pub(crate) struct PostgresStopped(());

impl PostgresStopped {
    pub(crate) fn stop() -> PostgresStopped {
        assert!(pg_ctlcluster("stop"), "pg_ctlcluster stop failed");
        wait_until(
            "PostgreSQL stopped answering",
            Duration::from_secs(30),
            || !postgres_answers(),
        );
        PostgresStopped(())
    }
}

impl Drop for PostgresStopped {
    fn drop(&mut self) {
        if !postgres_answers() {
            pg_ctlcluster("start");
        }
        wait_until(
            "PostgreSQL answered again",
            Duration::from_secs(60),
            postgres_answers,
        );
    }
}

fn rabbitmq_runs_its_app() -> bool {
    Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name", "--no-table-headers"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// RabbitMQ's application stopped (`rabbitmqctl stop_app`: no connection is
/// accepted) for as long as the guard lives; started again when it is dropped.
#[derive(Debug)]
pub(crate) struct RabbitMqStopped(());

impl RabbitMqStopped {
    pub(crate) fn stop() -> RabbitMqStopped {
        assert!(
            run("rabbitmqctl", &["stop_app"]),
            "rabbitmqctl stop_app failed"
        );
        RabbitMqStopped(())
    }
}

impl Drop for RabbitMqStopped {
    fn drop(&mut self) {
        run("rabbitmqctl", &["start_app"]);
        wait_until(
            "RabbitMQ ran its application again",
            Duration::from_secs(90),
            rabbitmq_runs_its_app,
        );
    }
}
