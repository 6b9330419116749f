//! `drover doctor` against real services and broken configurations.

use std::process::Output;

use shared::broker::{AmqpBroker, AmqpOptions, Broker as _, Message, TASKS_QUEUE};

use crate::cli::{Scratch, path_str};
use crate::support::{
    PgDatabase, amqp_url, delete_rabbitmq_names, describe, drover, redis_url, repo_root, run,
};

fn doctor(scratch: &Scratch, config: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut command = drover(&scratch.data_dir());
    // Its own default log filter.
    command
        .env_remove("DROVER_LOG")
        .args(["--config", path_str(config), "doctor"])
        .envs(env.iter().copied());
    run(&mut command)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The toolhunt example's configuration on the embedded default: nothing to fix.
#[test]
fn doctor_passes_on_the_embedded_default() {
    let scratch = Scratch::new();
    let config = repo_root().join("examples/toolhunt/drover.toml");
    let output = doctor(&scratch, &config, &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    for expected in [
        "ok    database  embedded SQLite",
        "ok    broker    in-process",
        "ok    locks     in-process",
        "ok    driver    exec build: ",
        "ok    driver    exec deploy: ",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} in\n{}",
            describe(&output)
        );
    }
    assert!(!text.contains("FAIL"), "{}", describe(&output));
}

/// An unmigrated database, a broker and a Redis nothing listens for, a missing
/// program and one that is not executable: each is a `FAIL` line with its fix,
/// and doctor exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_problem_and_how_to_fix_it() {
    let scratch = Scratch::new();
    let db = PgDatabase::create().await;
    scratch.write("not-executable.sh", "echo hi\n");
    let config = scratch.write(
        "drover.toml",
        "[driver]\nkind = \"exec\"\n\n[driver.exec]\nbuild = [\"./missing.sh\"]\ndeploy = [\"./not-executable.sh\"]\n",
    );
    let output = doctor(
        &scratch,
        &config,
        &[
            ("DROVER_DATABASE_URL", &db.url),
            ("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
            ("DROVER_REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    for expected in [
        "FAIL  database",
        "migrations not applied",
        "fix: run `drover migrate`",
        "FAIL  broker    amqp://guest:***@127.0.0.1:1",
        "rabbitmqctl status",
        "FAIL  locks     redis://127.0.0.1:1",
        "redis-cli",
        "FAIL  driver    exec build: `./missing.sh` is not found",
        "FAIL  driver    exec deploy: `./not-executable.sh` is not executable",
        "chmod +x",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} in\n{}",
            describe(&output)
        );
    }
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("5 problems found"),
        "{}",
        describe(&output)
    );
    assert!(!text.contains("guest:guest"), "no password is printed");
}

/// A migrated PostgreSQL database, RabbitMQ and Redis under the test's own
/// namespace: every check passes, and the task queue's depth is shown once it is
/// declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_the_task_queues_depth() {
    let scratch = Scratch::new();
    let db = PgDatabase::create().await;
    let namespace = format!("doctor-{}", uuid::Uuid::new_v4().simple());
    let config = scratch.write("drover.toml", "[driver]\nkind = \"noop\"\n");
    let (amqp, redis) = (amqp_url(), redis_url());
    let env = [
        ("DROVER_DATABASE_URL", db.url.as_str()),
        ("DROVER_AMQP_URL", amqp.as_str()),
        ("DROVER_REDIS_URL", redis.as_str()),
        ("DROVER_NAMESPACE", namespace.as_str()),
    ];
    let mut migrate = drover(&scratch.data_dir());
    migrate
        .args(["--config", path_str(&config), "migrate"])
        .envs(env);
    let migrated = run(&mut migrate);
    assert!(migrated.status.success(), "{}", describe(&migrated));

    let before = doctor(&scratch, &config, &env);
    assert!(before.status.success(), "{}", describe(&before));
    assert!(
        before.stderr.is_empty(),
        "a queue not declared yet is a finding, not an error to log: {}",
        describe(&before)
    );
    let tasks = format!("queue `{namespace}.{TASKS_QUEUE}`");
    assert!(
        stdout(&before).contains(&format!("note  broker    {tasks}: not declared yet")),
        "{}",
        describe(&before)
    );

    let broker = AmqpBroker::connect(
        &amqp,
        AmqpOptions {
            prefix: format!("{namespace}."),
            ..AmqpOptions::default()
        },
    )
    .await
    .expect("RabbitMQ is required for this test");
    for n in 0..3 {
        broker
            .publish(TASKS_QUEUE, Message::new(format!("m{n}"), b"{}".to_vec()))
            .await
            .expect("a publish");
    }
    let after = doctor(&scratch, &config, &env);
    delete_rabbitmq_names(&namespace);
    assert!(after.status.success(), "{}", describe(&after));
    let text = stdout(&after);
    for expected in [
        "ok    database  ",
        "every migration applied",
        &format!("ok    broker    {tasks}: 3 messages ready, 0 consumers"),
        "ok    locks     redis://",
        "note  driver    noop",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} in\n{}",
            describe(&after)
        );
    }
}
