//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use shared::backends::Backends;
use shared::broker::MemoryBroker;
use shared::locks::MemoryLocks;
use shared::store::Store;
use worker::WorkerOptions;

/// The PostgreSQL that test databases are created in (a maintenance database URL).
/// Set `DROVER_TEST_POSTGRES_URL` to use another server.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("DROVER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The RabbitMQ the tests use (`DROVER_TEST_AMQP_URL`, by default the local one).
pub(crate) fn amqp_url() -> String {
    std::env::var("DROVER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The Redis the tests use (`DROVER_TEST_REDIS_URL`, by default the local one).
pub(crate) fn redis_url() -> String {
    std::env::var("DROVER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A PostgreSQL database of one test's own, dropped when the test ends.
#[derive(Debug)]
pub(crate) struct PgDatabase {
    pub(crate) url: String,
    name: String,
}

impl PgDatabase {
    /// Creates an empty database. Panics (failing the test) when PostgreSQL is not
    /// reachable: a missing service is a failure, never a silent skip.
    pub(crate) async fn create() -> PgDatabase {
        let admin_url = postgres_admin_url();
        let name = format!("drover_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.unwrap_or_else(|err| {
            panic!("PostgreSQL at {admin_url} is required for this test: {err}")
        });
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("failed to create database {name}: {err}"));
        let _ = admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("the admin URL names a database");
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; a small runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&postgres_admin_url()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// The `drover` binary, with no `DROVER_*` variable inherited from the caller's
/// environment except the log level.
pub(crate) fn drover(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DROVER_") {
            command.env_remove(key);
        }
    }
    command
        .env("DROVER_LOG", "warn")
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// Runs a command and returns its output, with stdout and stderr shown on failure
/// of the caller's assertions.
pub(crate) fn run(command: &mut Command) -> Output {
    command.output().expect("failed to run drover")
}

/// stdout and stderr of a run, for assertion messages.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The repository's root (where `examples/` lives).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Deletes a namespace's queues and exchanges from RabbitMQ (drover's roles declare
/// them without an expiry), so that tests leave none behind to weigh on the broker.
/// Best effort: a failure leaves them behind.
pub(crate) fn delete_rabbitmq_names(namespace: &str) {
    let expression = format!(
        r#"P = <<"{namespace}.">>,
IsOurs = fun(Name) -> binary:longest_common_prefix([Name, P]) =:= byte_size(P) end,
Qs = [rabbit_amqqueue:delete(Q, false, false, <<"drover-tests">>) || Q <- rabbit_amqqueue:list(<<"/">>), IsOurs(element(4, amqqueue:get_name(Q)))],
Xs = [rabbit_exchange:delete(element(2, X), false, <<"drover-tests">>) || X <- rabbit_exchange:list(<<"/">>), IsOurs(element(4, element(2, X)))],
{{length(Qs), length(Xs)}}."#
    );
    let _ = Command::new("rabbitmqctl")
        .args(["eval", &expression])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The embedded adapters over `store`: the in-process broker (also returned, to
/// publish or subscribe on) and locks.
pub(crate) fn embedded(store: Arc<dyn Store>) -> (Backends, Arc<MemoryBroker>) {
    let broker = Arc::new(MemoryBroker::new());
    let backends = Backends {
        broker: broker.clone(),
        locks: Arc::new(MemoryLocks::new()),
        store,
        broker_is_volatile: true,
    };
    (backends, broker)
}

/// The options of a worker a test runs in its own process: 4 slots, leases and
/// locks of 30 s (kept alive every second), quick lock retries, one attempt.
pub(crate) fn worker_options(id: &str) -> WorkerOptions {
    WorkerOptions {
        id: id.to_owned(),
        concurrency: 4,
        lease: Duration::from_secs(30),
        lock_ttl: Duration::from_secs(30),
        lock_retry: Duration::from_millis(5),
        max_attempts: 1,
        retry_delay: Duration::from_millis(10),
        tenant_limit: 100,
    }
}

/// The whole Server-Sent Events at the start of `text` (each its name, id and JSON
/// data), taken out of it; what follows the last whole event stays for the next
/// chunk. Keep-alive comments are dropped.
pub(crate) fn take_sse_events(text: &mut String) -> Vec<(String, String, serde_json::Value)> {
    let mut events = Vec::new();
    while let Some(end) = text.find("\n\n") {
        let block: String = text.drain(..end + 2).collect();
        let field = |name: &str| {
            block
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        if let (Some(event), Some(id), Some(data)) = (field("event"), field("id"), field("data")) {
            events.push((event, id, serde_json::from_str(&data).expect("JSON data")));
        }
    }
    events
}
