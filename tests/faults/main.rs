//! Fault tests: a fleet of real `drover` processes on RabbitMQ, Redis and
//! PostgreSQL, disturbed while it works. They run one at a time (`scripts/test`):
//! some restart Redis or close every RabbitMQ connection.
//!
//! Each test starts a [`fleet::Fleet`] of its own (own database, own namespace for
//! queues and Redis keys), submits deployments through the API, disturbs the fleet,
//! and then judges the run by the step history the step scripts recorded: no two
//! steps of one component at once, every dependency order held, nothing lost. Each
//! prints one line of figures (`fleet: test=… deployments=… lost=… overlaps=…`).

#[cfg(feature = "otlp")]
#[path = "../it/collector.rs"]
#[allow(dead_code)] // shared with the `it` tests, which use other parts
mod collector;
mod fleet;
mod history;
mod lifecycle;
#[cfg(feature = "otlp")]
mod otlp;
mod services;
#[path = "../it/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shared::broker::{
    AmqpBroker, AmqpOptions, Broker as _, DEAD_LETTER_QUEUE, DELIVERY_LIMIT, Message,
    REASON_HEADER, TASKS_QUEUE,
};
use shared::dispatch::TaskDispatch;

use crate::fleet::{Fleet, FleetOptions, Outcome, Request, Submission, now_ns};
use crate::history::{Figures, Run};

/// An app of five components with `reuse-from` and `wait-for` edges; `n` changes
/// every component's build input, so that each deployment builds and deploys all
/// of them (8 tasks: 3 builds, 5 deploys, 5 levels deep):
///
/// `build:api` → `deploy:migrate` → `deploy:api` → `deploy:web` → `deploy:cleanup`,
/// with `build:cache` → `deploy:cache` → `deploy:cleanup` and `build:cleanup` →
/// `deploy:cleanup`.
fn shop_manifest(n: usize) -> String {
    format!(
        r#"config-version: 0.1
components:
  api:
    type: continuous
    build: {{repository: "https://git.example/shop", ref: main}}
    build-id: "b{n}"
    run: {{command: serve, replicas: 1, port: 8000}}
    wait-for: [migrate]
  migrate:
    type: one-off
    build: {{reuse-from: api}}
    run: {{command: migrate}}
  web:
    type: continuous
    build: {{reuse-from: api}}
    run: {{command: web, replicas: 1, port: 8080}}
    wait-for: [api]
  cache:
    type: continuous
    build: {{image: "registry.example/cache:{n}"}}
    run: {{command: cache, replicas: 1, port: 6379}}
  cleanup:
    type: scheduled
    build: {{image: "registry.example/cleanup:{n}"}}
    run: {{command: cleanup, schedule: "0 * * * *"}}
    wait-for: [web, cache]
"#
    )
}

/// An app of one component built from `image`; `env` changes only its run spec (an
/// `update`: a deployment of an already deployed image has one task, the deploy).
fn solo_manifest(image: &str, env: usize) -> String {
    format!(
        r#"config-version: 0.1
components:
  solo:
    type: one-off
    build: {{image: "registry.example/{image}"}}
    run: {{command: run, env: {{N: "{env}"}}}}
"#
    )
}

/// `n_deployments` of the shop app spread over `n_apps` apps (each app belonging to
/// one tenant, round-robin), interleaved so that deployments of one app are spread
/// in time and contend for its components.
fn shop_requests(n_deployments: usize, n_apps: usize, n_tenants: usize) -> Vec<Request> {
    (0..n_deployments)
        .map(|n| {
            let app = n % n_apps;
            Request {
                tenant: app % n_tenants,
                app: format!("shop-{app}"),
                manifest: shop_manifest(n),
            }
        })
        .collect()
}

/// How many steps have ended so far.
fn ended(runs: &[Run]) -> usize {
    runs.iter().filter(|run| run.end_ns.is_some()).count()
}

/// Waits for every deployment to end, computes and prints the figures.
async fn finish(
    fleet: &mut Fleet,
    submissions: &[Submission],
    started: Instant,
    deadline: Duration,
) -> (Vec<Outcome>, Figures) {
    let outcomes = fleet.wait_terminal(submissions, deadline).await;
    let seconds = started.elapsed().as_secs_f64();
    let figures = fleet.figures(submissions, &outcomes, seconds);
    (outcomes, figures)
}

/// The assertions every fault test ends with: nothing lost, no component ran two
/// steps at once, no step started before what it needs had ended.
fn assert_clean(fleet: &Fleet, figures: &Figures) {
    assert_eq!(
        figures.lost,
        0,
        "{}: deployments lost\n{}\n{}",
        fleet.test,
        figures.problems(),
        fleet.diagnostics()
    );
    assert_eq!(
        figures.overlaps,
        0,
        "{}: steps of one component overlapped\n{}\n{}",
        fleet.test,
        figures.problems(),
        fleet.diagnostics()
    );
    assert_eq!(
        figures.order_violations,
        0,
        "{}: dependency order broken\n{}\n{}",
        fleet.test,
        figures.problems(),
        fleet.diagnostics()
    );
    assert_eq!(
        figures.tasks_never_run,
        0,
        "{}: tasks succeeded without running\n{}",
        fleet.test,
        figures.problems()
    );
}

fn assert_all_succeeded(fleet: &Fleet, figures: &Figures) {
    assert_eq!(
        figures.succeeded,
        figures.deployments,
        "{}: not every deployment succeeded\n{}\n{}",
        fleet.test,
        figures.problems(),
        fleet.diagnostics()
    );
}

fn assert_all_alive(fleet: &mut Fleet) {
    let died = fleet.died();
    assert!(
        died.is_empty(),
        "{}: fleet processes exited: {died:?}\n{}",
        fleet.test,
        fleet.diagnostics()
    );
}

/// 1 api, 2 schedulers and 3 workers take 200 deployments of the five-component app
/// over 20 apps and 4 tenants: all succeed, no component ever ran two steps at once,
/// every dependency order held, and every task ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_200_deployments_each_task_once_in_order() {
    let mut fleet = Fleet::start(
        "fleet",
        FleetOptions {
            tenants: vec!["red", "green", "blue", "gold"],
            schedulers: 2,
            workers: 3,
            concurrency: 4,
            step_ms: (20, 50),
            ..FleetOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let submissions = fleet.submit_all(shop_requests(200, 20, 4), 8).await;
    let (_, figures) = finish(&mut fleet, &submissions, started, Duration::from_secs(240)).await;
    fleet.print_figures(&figures, "");

    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert_eq!(figures.tasks, 200 * 8, "every deployment plans 8 tasks");
    assert_eq!(
        figures.tasks_run_twice,
        0,
        "tasks ran more than once\n{}",
        figures.problems()
    );
    assert_eq!(
        figures.runs, figures.tasks,
        "every planned task ran exactly once"
    );
    assert_all_alive(&mut fleet);
}

/// `kill -9` a worker while its steps run: its tasks run again elsewhere as a new
/// attempt, every deployment still ends (and succeeds), no component ever had two
/// steps at once, and none of the killed worker's step processes is alive a second
/// after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_killed_worker_tasks_rerun_elsewhere_and_its_steps_die_with_it() {
    let mut fleet = Fleet::start(
        "kill9",
        FleetOptions {
            tenants: vec!["red", "green"],
            workers: 3,
            concurrency: 3,
            step_ms: (300, 700),
            ..FleetOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let submissions = fleet.submit_all(shop_requests(24, 8, 2), 8).await;
    let victim = fleet.workers()[0].pid;
    let victim_name = fleet.workers()[0].name.clone();
    // Wait until the victim runs steps (two if it gets there quickly).
    let mut seen_first = None;
    fleet
        .wait_for_history(
            "the victim worker to run steps",
            Duration::from_secs(60),
            |runs| {
                let running = runs
                    .iter()
                    .filter(|run| run.worker == victim && run.end_ns.is_none())
                    .count();
                let first = *seen_first.get_or_insert_with(Instant::now);
                running >= 2 || (running >= 1 && first.elapsed() > Duration::from_secs(2))
            },
        )
        .await;
    let killed_at = fleet.kill9(victim);
    let runs = fleet.history();
    let in_flight: Vec<Run> = runs
        .iter()
        .filter(|run| run.worker == victim && run.end_ns.is_none())
        .cloned()
        .collect();
    assert!(!in_flight.is_empty(), "the victim had no step running");

    // One second after the kill, nothing the victim started may be alive.
    let wait = Duration::from_secs(1).saturating_sub(Duration::from_nanos(
        u64::try_from(now_ns() - killed_at).unwrap_or(0),
    ));
    tokio::time::sleep(wait).await;
    let survivors = fleet.live_descendants_of(&victim_name);
    let step_survivors: Vec<u32> = in_flight
        .iter()
        .map(|run| run.pid)
        .filter(|pid| fleet::is_alive(*pid))
        .collect();

    let (outcomes, figures) =
        finish(&mut fleet, &submissions, started, Duration::from_secs(120)).await;
    let runs = fleet.history();
    let rerun_elsewhere = in_flight
        .iter()
        .filter(|killed| {
            runs.iter().any(|run| {
                run.deployment == killed.deployment
                    && run.task == killed.task
                    && run.attempt > killed.attempt
                    && run.worker != victim
                    && run.start_ns > killed_at
            })
        })
        .count();
    fleet.print_figures(
        &figures,
        &format!(
            " killed_in_flight={} rerun_elsewhere={rerun_elsewhere} survivors={}",
            in_flight.len(),
            survivors.len() + step_survivors.len()
        ),
    );

    assert!(
        survivors.is_empty() && step_survivors.is_empty(),
        "processes of the killed worker still run 1s after `kill -9`: {survivors:?} (step scripts: {step_survivors:?})"
    );
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert_eq!(
        rerun_elsewhere,
        in_flight.len(),
        "every step the killed worker was running runs again as a new attempt on another worker; killed: {in_flight:#?}"
    );
    for killed in &in_flight {
        let outcome = outcomes
            .iter()
            .find(|outcome| outcome.id == killed.deployment)
            .expect("the deployment was submitted");
        let (state, attempts) = &outcome.tasks[&killed.task];
        assert!(
            state == "succeeded" && *attempts > killed.attempt,
            "the API shows {} {} as {state} after {attempts} attempts",
            killed.deployment,
            killed.task
        );
    }
}

/// `rabbitmqctl close_all_connections` twice while deployments run (and more are
/// submitted after the first): every process reconnects and every deployment
/// completes; no task is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_broker_connections_closed_mid_run() {
    let mut fleet = Fleet::start(
        "amqp-close",
        FleetOptions {
            tenants: vec!["red", "green", "blue"],
            schedulers: 2,
            workers: 3,
            concurrency: 3,
            step_ms: (50, 150),
            ..FleetOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let mut submissions = fleet.submit_all(shop_requests(40, 10, 3), 8).await;
    let total = submissions.len() * 8;
    fleet
        .wait_for_history("a quarter of the steps", Duration::from_secs(60), |runs| {
            ended(runs) >= total / 4
        })
        .await;
    services::close_all_rabbitmq_connections();
    // Deployments submitted while the fleet reconnects.
    let more: Vec<Request> = (40..60)
        .map(|n| Request {
            tenant: n % 3,
            app: format!("late-{}", n % 5),
            manifest: shop_manifest(n),
        })
        .collect();
    submissions.extend(fleet.submit_all(more, 8).await);
    let total = submissions.len() * 8;
    fleet
        .wait_for_history("60% of the steps", Duration::from_secs(90), |runs| {
            ended(runs) >= total * 6 / 10
        })
        .await;
    services::close_all_rabbitmq_connections();

    let (_, figures) = finish(&mut fleet, &submissions, started, Duration::from_secs(150)).await;
    let reconnected: Vec<String> = [
        "api",
        "scheduler-1",
        "scheduler-2",
        "worker-1",
        "worker-2",
        "worker-3",
    ]
    .iter()
    .map(|name| {
        format!(
            "{name}:{}",
            fleet.log_messages(name, "reconnected to RabbitMQ")
        )
    })
    .collect();
    fleet.print_figures(&figures, &format!(" reconnected={}", reconnected.join(",")));

    assert_all_alive(&mut fleet);
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    for worker in ["worker-1", "worker-2", "worker-3"] {
        assert!(
            fleet.log_messages(worker, "reconnected to RabbitMQ") >= 1,
            "{worker} never reconnected to RabbitMQ\n{}",
            fleet.diagnostics()
        );
    }
}

/// Restart Redis (`shutdown nosave`: every lock is lost) while deployments run: no
/// component ever runs two steps at once, and every deployment completes. One long
/// step holds its component across the restart; a newer deployment of that
/// component then takes the (now free) lock and a newer fence, so the old holder's
/// result is refused by its fence and its task runs again as a new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_redis_restart_mid_run() {
    let redis = services::RedisGuard::new();
    let mut fleet = Fleet::start(
        "redis-restart",
        FleetOptions {
            tenants: vec!["red", "green"],
            workers: 3,
            concurrency: 3,
            step_ms: (100, 300),
            ..FleetOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    // Few apps, many deployments each: components are contended.
    let submissions = fleet.submit_all(shop_requests(36, 6, 2), 8).await;
    let total = submissions.len() * 8;
    fleet
        .wait_for_history("a quarter of the steps", Duration::from_secs(60), |runs| {
            ended(runs) >= total / 4
        })
        .await;
    // The stale holder: a step long enough to outlive the restart.
    fleet.set_step_ms("solo", (6000, 6000));
    let held = fleet
        .api
        .submit(&Request {
            tenant: 0,
            app: "solo".to_owned(),
            manifest: solo_manifest("solo:1", 1),
        })
        .await;
    let holder = fleet
        .wait_for_history("the long step to start", Duration::from_secs(30), |runs| {
            runs.iter().any(|run| run.task == "build:solo")
        })
        .await
        .into_iter()
        .find(|run| run.task == "build:solo")
        .expect("the long step");
    redis.shut_down();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.start();
    let downtime = down_at.elapsed();
    // The newer deployment takes the lock the restart freed, and a newer fence.
    let newer = fleet
        .api
        .submit(&Request {
            tenant: 0,
            app: "solo".to_owned(),
            manifest: solo_manifest("solo:2", 1),
        })
        .await;
    let mut submissions = submissions;
    submissions.extend([held, newer]);

    let (outcomes, mut figures) =
        finish(&mut fleet, &submissions, started, Duration::from_secs(120)).await;
    figures.stale_rejected = fleet.stale_rejected();
    fleet.print_figures(
        &figures,
        &format!(" redis_downtime_ms={}", downtime.as_millis()),
    );

    assert_all_alive(&mut fleet);
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert!(
        figures.stale_rejected >= 1,
        "the holder that lost its lock in the restart had its result accepted\n{}",
        fleet.diagnostics()
    );
    let held = outcomes
        .iter()
        .find(|outcome| outcome.id == holder.deployment)
        .expect("the held deployment was submitted");
    assert!(
        held.tasks["build:solo"].1 > holder.attempt,
        "the refused build ran again as a new attempt: {held:?}"
    );
}

/// SIGSTOP a worker right after one of its steps started, until its lock and lease
/// expire and the task runs again on another worker; then SIGCONT it: its late
/// result is refused (`stale_rejected`), and the deployment's outcome is the
/// re-run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_stopped_worker_late_result_is_refused() {
    let mut fleet = Fleet::start(
        "sigstop",
        FleetOptions {
            workers: 2,
            concurrency: 2,
            ..FleetOptions::default()
        },
    )
    .await;
    // Short enough to end long before the 3s lease expires: the stopped worker's
    // step (in a process group of its own) keeps running and must not overlap the
    // re-run.
    fleet.set_step_ms("solo", (400, 400));
    let started = Instant::now();
    let submission = fleet
        .api
        .submit(&Request {
            tenant: 0,
            app: "solo".to_owned(),
            manifest: solo_manifest("solo:1", 1),
        })
        .await;
    let runs = fleet
        .wait_for_history("the build to start", Duration::from_secs(30), |runs| {
            runs.iter().any(|run| run.task == "build:solo")
        })
        .await;
    let first = runs
        .iter()
        .find(|run| run.task == "build:solo")
        .expect("a build run")
        .clone();
    let victim = first.worker;
    fleet.signal(victim, Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let rerun = fleet
        .wait_for_history(
            "the build to run again on another worker",
            Duration::from_secs(30),
            |runs| {
                runs.iter().any(|run| {
                    run.task == "build:solo"
                        && run.attempt > first.attempt
                        && run.worker != victim
                        && run.end_ns.is_some()
                })
            },
        )
        .await
        .into_iter()
        .find(|run| run.task == "build:solo" && run.attempt > first.attempt)
        .expect("a re-run");
    fleet.signal(victim, Signal::SIGCONT);
    let stopped_for = stopped_at.elapsed();

    let (outcomes, figures) =
        finish(&mut fleet, &[submission], started, Duration::from_secs(60)).await;
    // The resumed worker records its result when it gets to it.
    let victim_name = fleet.process(victim).name.clone();
    let waited = Instant::now();
    while fleet.log_messages(&victim_name, "result refused") == 0
        && waited.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let figures = Figures {
        stale_rejected: fleet.stale_rejected(),
        ..figures
    };
    fleet.print_figures(
        &figures,
        &format!(
            " stopped_ms={} first_attempt={} rerun_attempt={}",
            stopped_for.as_millis(),
            first.attempt,
            rerun.attempt
        ),
    );

    assert_clean(&fleet, &figures);
    assert_all_alive(&mut fleet);
    assert!(
        fleet
            .history()
            .iter()
            .any(|run| run.pid == first.pid && run.end_ns.is_some()),
        "the stopped worker's step ended on its own"
    );
    assert!(
        fleet.log_messages(&victim_name, "result refused") >= 1,
        "the resumed worker's late result was not refused\n{}",
        fleet.diagnostics()
    );
    assert_eq!(
        outcomes[0].state.as_deref(),
        Some("succeeded"),
        "the deployment's outcome is the re-run's: {outcomes:?}"
    );
    assert_eq!(
        outcomes[0].tasks["build:solo"],
        ("succeeded".to_owned(), rerun.attempt),
        "the build's recorded attempt is the re-run's"
    );
}

/// Terminate every session of the fleet's database (twice) while deployments run:
/// every process reconnects and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_postgres_sessions_terminated_mid_run() {
    let mut fleet = Fleet::start(
        "pg-terminate",
        FleetOptions {
            tenants: vec!["red", "green", "blue"],
            schedulers: 2,
            workers: 3,
            concurrency: 3,
            step_ms: (50, 150),
            ..FleetOptions::default()
        },
    )
    .await;
    let database = services::database_name(&fleet.db.url).to_owned();
    let started = Instant::now();
    let submissions = fleet.submit_all(shop_requests(48, 12, 3), 8).await;
    let total = submissions.len() * 8;
    let mut terminated = Vec::new();
    for fraction in [4, 7] {
        fleet
            .wait_for_history(
                &format!("{}0% of the steps", fraction),
                Duration::from_secs(90),
                |runs| ended(runs) >= total * fraction / 10,
            )
            .await;
        terminated.push(services::terminate_sessions(&database).await);
    }

    let (_, figures) = finish(&mut fleet, &submissions, started, Duration::from_secs(120)).await;
    fleet.print_figures(
        &figures,
        &format!(
            " sessions_terminated={}",
            terminated
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("+")
        ),
    );

    assert!(
        terminated.iter().all(|n| *n > 0),
        "no session was terminated: {terminated:?}"
    );
    assert_all_alive(&mut fleet);
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
}

/// Messages on the fleet's task queue: a duplicate of every task's dispatch (while
/// the deployment runs and after it ended) changes nothing; a malformed message
/// lands in the dead-letter queue with a reason; a message that makes its consumer
/// crash every time reaches the dead-letter queue after the delivery limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_duplicate_malformed_and_poison_messages() {
    let mut fleet = Fleet::start(
        "messages",
        FleetOptions {
            workers: 2,
            concurrency: 2,
            ..FleetOptions::default()
        },
    )
    .await;
    let broker = AmqpBroker::connect(
        &fleet.amqp_url,
        AmqpOptions {
            prefix: format!("{}.", fleet.namespace),
            connection_name: "drover-faults".to_owned(),
            ..AmqpOptions::default()
        },
    )
    .await
    .expect("RabbitMQ is required for this test");
    let started = Instant::now();
    let submission = fleet
        .api
        .submit(&Request {
            tenant: 0,
            app: "shop".to_owned(),
            manifest: shop_manifest(1),
        })
        .await;
    let tenant = fleet.tenants[0].id.parse().expect("a tenant id");
    let dispatches: Vec<TaskDispatch> = submission
        .tasks
        .iter()
        .map(|task| TaskDispatch {
            tenant,
            app: "shop".parse().expect("an app name"),
            deployment: submission.id.parse().expect("a deployment id"),
            task: task.id.parse().expect("a task id"),
            attempt: 1,
            written_at: None,
        })
        .collect();
    // Duplicates while the deployment runs: of tasks that are blocked, ready or running.
    for dispatch in &dispatches {
        broker
            .publish(TASKS_QUEUE, dispatch.to_message())
            .await
            .expect("failed to publish a duplicate");
    }
    let malformed_id = format!("malformed-{}", uuid::Uuid::new_v4().simple());
    broker
        .publish(
            TASKS_QUEUE,
            Message::new(&malformed_id, b"{\"tenant\": 42, this is not json".to_vec()),
        )
        .await
        .expect("failed to publish a malformed message");
    let submissions = [submission];
    let outcomes = fleet
        .wait_terminal(&submissions, Duration::from_secs(60))
        .await;
    // And duplicates of tasks that have ended.
    for dispatch in &dispatches {
        broker
            .publish(TASKS_QUEUE, dispatch.to_message())
            .await
            .expect("failed to publish a duplicate");
    }
    wait_for_empty_queue(&fleet, TASKS_QUEUE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seconds = started.elapsed().as_secs_f64();
    let figures = fleet.figures(&submissions, &outcomes, seconds);

    // The poison: with the fleet's workers gone, a consumer that dies with every
    // delivery (it drops the delivery unsettled, which returns it, counted).
    let workers: Vec<u32> = fleet.workers().iter().map(|worker| worker.pid).collect();
    for pid in workers {
        fleet.kill9(pid);
    }
    let poison_id = format!("poison-{}", uuid::Uuid::new_v4().simple());
    broker
        .publish(
            TASKS_QUEUE,
            Message::new(&poison_id, br#"{"crash": "every time"}"#.to_vec()),
        )
        .await
        .expect("failed to publish the poison message");
    let mut poison_deliveries = 0u32;
    {
        let mut consumer = broker
            .consume(TASKS_QUEUE, 1)
            .await
            .expect("failed to consume the task queue");
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        {
            let delivery = delivery.expect("a delivery");
            if delivery.message.id == poison_id {
                poison_deliveries += 1;
                // The consumer "crashes": the delivery is dropped unsettled.
                drop(delivery);
                assert!(
                    poison_deliveries <= DELIVERY_LIMIT + 5,
                    "the poison message keeps coming back: {poison_deliveries} deliveries"
                );
            } else {
                delivery.ack().await.expect("failed to acknowledge");
            }
        }
    }
    let dead = dead_letters(&broker, &[&malformed_id, &poison_id]).await;
    fleet.print_figures(
        &figures,
        &format!(
            " duplicates_published={} malformed_dead_lettered={} poison_deliveries={poison_deliveries} poison_dead_lettered={}",
            dispatches.len() * 2,
            u8::from(dead.contains_key(&malformed_id)),
            u8::from(dead.contains_key(&poison_id)),
        ),
    );

    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert_eq!(
        figures.tasks_run_twice,
        0,
        "a duplicate dispatch ran a task again\n{}",
        figures.problems()
    );
    assert_eq!(figures.runs, figures.tasks, "each task ran once");
    for (task, (state, attempts)) in &outcomes[0].tasks {
        assert_eq!(
            (state.as_str(), *attempts),
            ("succeeded", 1),
            "{task} after duplicates"
        );
    }
    let malformed_reason = dead.get(&malformed_id).unwrap_or_else(|| {
        panic!("the malformed message is not in the dead-letter queue: {dead:?}")
    });
    assert!(
        !malformed_reason.is_empty(),
        "the malformed message was dead-lettered without a reason"
    );
    let poison_reason = dead
        .get(&poison_id)
        .unwrap_or_else(|| panic!("the poison message is not in the dead-letter queue: {dead:?}"));
    assert!(
        poison_reason.contains("delivery limit"),
        "the poison message's reason: {poison_reason}"
    );
    assert!(
        (2..=DELIVERY_LIMIT).contains(&poison_deliveries),
        "the poison message was delivered {poison_deliveries} times (limit {DELIVERY_LIMIT})"
    );
}

/// Waits until the fleet's `queue` holds no message (ready or unacknowledged).
async fn wait_for_empty_queue(fleet: &Fleet, queue: &str) {
    let name = format!("{}.{queue}", fleet.namespace);
    let started = Instant::now();
    loop {
        let output = std::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages",
            ])
            .output()
            .expect("failed to run rabbitmqctl");
        let text = String::from_utf8_lossy(&output.stdout);
        let messages = text.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(name.as_str()))
                .then(|| fields.next().and_then(|n| n.parse::<u64>().ok()))
                .flatten()
        });
        if messages == Some(0) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "`{name}` still holds {messages:?} messages after 20s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads the dead-letter queue until every message of `ids` was seen (or 15 s
/// passed); returns message id → reason of what it saw.
async fn dead_letters(broker: &AmqpBroker, ids: &[&str]) -> BTreeMap<String, String> {
    let mut consumer = broker
        .consume(DEAD_LETTER_QUEUE, 16)
        .await
        .expect("failed to consume the dead-letter queue");
    let mut seen = BTreeMap::new();
    let started = Instant::now();
    while !ids.iter().all(|id| seen.contains_key(*id))
        && started.elapsed() < Duration::from_secs(15)
    {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
        else {
            continue;
        };
        seen.insert(
            delivery.message.id.clone(),
            delivery
                .message
                .headers
                .get(REASON_HEADER)
                .cloned()
                .unwrap_or_default(),
        );
        delivery.ack().await.expect("failed to acknowledge");
    }
    seen
}

/// Tenant fairness: tenant `flood` floods the fleet (40 one-task deployments of
/// 1-second steps, with `tenant-limit` 2 on 2 workers × 2 slots); then tenant
/// `quiet` submits one deployment: its first step starts within about one task
/// duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_a_flooding_tenant_does_not_delay_another() {
    flooding_tenant_case(
        "fairness",
        Flooding {
            workers: 2,
            tenant_limit: 2,
            step_ms: 1000,
            first_step_within_ms: 3000,
        },
    )
    .await;
}

/// Tenant fairness when the flood's limit is above what the workers run (the
/// default limit is 20, a worker runs 4): the flood's 40 dispatches beyond its
/// `tenant-limit` 4 wait in the outbox, not in the broker, so tenant `quiet`'s
/// first step waits behind at most the 2 flood tasks handed out beyond the 2
/// running (about 500 ms), not the whole backlog (about 9.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_a_flood_beyond_the_workers_does_not_queue_ahead_of_another_tenant() {
    flooding_tenant_case(
        "fair-hand-out",
        Flooding {
            workers: 1,
            tenant_limit: 4,
            step_ms: 500,
            first_step_within_ms: 2500,
        },
    )
    .await;
}

/// A fleet of `workers` × 2 slots flooded by one tenant.
struct Flooding {
    workers: usize,
    tenant_limit: u32,
    /// How long each of the flood's steps takes.
    step_ms: u64,
    /// The bound on the quiet tenant's wait for its first step.
    first_step_within_ms: i64,
}

/// Tenant `flood` floods the fleet with 40 one-task deployments; then tenant
/// `quiet` submits one: its first step starts within `first_step_within_ms`, and
/// the flood never runs more than its limit at once.
async fn flooding_tenant_case(name: &'static str, flooding: Flooding) {
    let Flooding {
        workers,
        tenant_limit,
        step_ms,
        first_step_within_ms,
    } = flooding;
    let mut fleet = Fleet::start(
        name,
        FleetOptions {
            tenants: vec!["flood", "quiet"],
            workers,
            concurrency: 2,
            tenant_limit,
            step_ms: (20, 50),
            ..FleetOptions::default()
        },
    )
    .await;
    let apps: Vec<String> = (0..10).map(|n| format!("flood-{n}")).collect();
    // Deploy the flood's apps once (quickly), so that each flood deployment is one
    // task: the deploy of a changed run spec.
    let warm_up: Vec<Request> = apps
        .iter()
        .map(|app| Request {
            tenant: 0,
            app: app.clone(),
            manifest: solo_manifest("flood:1", 0),
        })
        .collect();
    let warm_up = fleet.submit_all(warm_up, 8).await;
    let outcomes = fleet.wait_terminal(&warm_up, Duration::from_secs(60)).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| outcome.state.as_deref() == Some("succeeded")),
        "the warm-up failed: {outcomes:?}\n{}",
        fleet.diagnostics()
    );
    for app in &apps {
        fleet.set_step_ms(app, (step_ms, step_ms));
    }

    let started = Instant::now();
    let flood: Vec<Request> = (0..40)
        .map(|n| Request {
            tenant: 0,
            app: apps[n % apps.len()].clone(),
            manifest: solo_manifest("flood:1", n + 1),
        })
        .collect();
    let mut submissions = fleet.submit_all(flood, 8).await;
    assert!(
        submissions.iter().all(|s| s.tasks.len() == 1),
        "each flood deployment is one task"
    );
    let flood_tenant = fleet.tenants[0].id.clone();
    let quiet_tenant = fleet.tenants[1].id.clone();
    let is_flood = |run: &Run| run.key.starts_with(&format!("{flood_tenant}/"));
    fleet
        .wait_for_history(
            "the flood to fill its share of the slots",
            Duration::from_secs(30),
            |runs| {
                runs.iter()
                    .filter(|run| is_flood(run) && run.end_ns.is_none())
                    .count()
                    >= 2
            },
        )
        .await;
    let quiet = fleet
        .api
        .submit(&Request {
            tenant: 1,
            app: "quiet".to_owned(),
            manifest: solo_manifest("quiet:1", 0),
        })
        .await;
    let quiet_submitted = quiet.submitted_ns;
    submissions.push(quiet);
    let runs = fleet
        .wait_for_history(
            "the quiet tenant's first step",
            Duration::from_secs(60),
            |runs| {
                runs.iter()
                    .any(|run| run.key.starts_with(&format!("{quiet_tenant}/")))
            },
        )
        .await;
    let first_quiet = runs
        .iter()
        .filter(|run| run.key.starts_with(&format!("{quiet_tenant}/")))
        .map(|run| run.start_ns)
        .min()
        .expect("a quiet run");
    let latency_ms = (first_quiet - quiet_submitted) / 1_000_000;

    let (_, figures) = finish(&mut fleet, &submissions, started, Duration::from_secs(120)).await;
    let runs = fleet.history();
    let peaks = history::peak_concurrency(&runs, &BTreeMap::new(), |run| {
        run.key.split('/').next().unwrap_or_default().to_owned()
    });
    let flood_peak = peaks.get(&flood_tenant).copied().unwrap_or(0);
    fleet.print_figures(
        &figures,
        &format!(" quiet_first_step_ms={latency_ms} flood_peak_running={flood_peak}"),
    );

    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert!(
        latency_ms < first_step_within_ms,
        "the quiet tenant's first step started {latency_ms} ms after its submission (flood steps last {step_ms} ms)"
    );
    assert!(
        flood_peak <= tenant_limit as usize,
        "the flooding tenant ran {flood_peak} steps at once with tenant-limit {tenant_limit}"
    );
}
