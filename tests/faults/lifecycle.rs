//! The fleet as its operators run it: shut down with SIGTERM, probed for readiness,
//! scraped for metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::fleet::{Fleet, FleetOptions, Process, Request, Submission};
use crate::services::{PostgresStopped, RabbitMqStopped};
use crate::{
    assert_all_alive, assert_all_succeeded, assert_clean, finish, shop_manifest, solo_manifest,
};

/// SIGTERM on a worker whose step ends within `worker.drain`: the step finishes
/// there, its result is recorded, the worker exits 0 and the task ran once. SIGTERM
/// on a worker whose step outlasts the drain: the step is stopped when the drain
/// is over, the task is handed back at once (no lease has to expire) and runs again
/// on another worker as the next attempt, never beside the stopped one, and the
/// worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_sigterm_drains_a_worker_then_hands_its_steps_back() {
    let mut fleet = Fleet::start(
        "sigterm",
        FleetOptions {
            workers: 3,
            concurrency: 1,
            drain: "2s",
            // Long enough that a rerun before it expired can only be a hand-back.
            lease: "30s",
            ..FleetOptions::default()
        },
    )
    .await;
    let started = Instant::now();

    // A step shorter than the drain finishes on the stopping worker.
    fleet.set_step_ms("short", (800, 800));
    let short = submit(&fleet, "short", solo_manifest("short:1", 1)).await;
    let first = running_step(&fleet, &short.id).await;
    fleet.signal(first.worker, Signal::SIGTERM);
    let status = fleet.wait_exit(first.worker, Duration::from_secs(20)).await;
    assert!(status.success(), "the drained worker exited with {status}");
    let runs: Vec<_> = fleet
        .history()
        .into_iter()
        .filter(|run| run.deployment == short.id && run.task == "build:solo")
        .collect();
    assert_eq!(runs.len(), 1, "the short step ran once: {runs:?}");
    assert!(runs[0].end_ns.is_some(), "the short step ended on its own");

    // A step longer than the drain is handed back and runs elsewhere.
    fleet.set_step_ms("long", (60_000, 60_000));
    let long = submit(&fleet, "long", solo_manifest("long:1", 1)).await;
    let stopped = running_step(&fleet, &long.id).await;
    // From now on the rerun may take its time: it must not wait for the lease.
    fleet.set_step_ms("long", (300, 300));
    let signalled = Instant::now();
    fleet.signal(stopped.worker, Signal::SIGTERM);
    let status = fleet
        .wait_exit(stopped.worker, Duration::from_secs(20))
        .await;
    assert!(
        status.success(),
        "the worker exited with {status} after its drain"
    );
    let rerun = fleet
        .wait_for_history(
            "the handed-back step to run again",
            Duration::from_secs(20),
            |runs| {
                runs.iter().any(|run| {
                    run.deployment == long.id
                        && run.task == stopped.task
                        && run.attempt > stopped.attempt
                        && run.end_ns.is_some()
                })
            },
        )
        .await
        .into_iter()
        .find(|run| {
            run.deployment == long.id && run.task == stopped.task && run.attempt > stopped.attempt
        })
        .expect("a rerun");
    let rerun_after = signalled.elapsed();
    assert_eq!(
        rerun.attempt,
        stopped.attempt + 1,
        "handed back as the next attempt"
    );
    assert_ne!(
        rerun.worker, stopped.worker,
        "the rerun ran on another worker"
    );
    assert!(
        rerun_after < Duration::from_secs(15),
        "the rerun started after {rerun_after:?}, as if waiting for the 30s lease"
    );
    let stopped_name = fleet.process(stopped.worker).name.clone();
    assert_eq!(
        fleet.log_messages(&stopped_name, "step stopped by shutdown; task handed back"),
        1,
        "the stopped worker handed its task back\n{}",
        fleet.diagnostics()
    );

    let (outcomes, figures) =
        finish(&mut fleet, &[short, long], started, Duration::from_secs(60)).await;
    fleet.print_figures(&figures, &format!(" rerun_ms={}", rerun_after.as_millis()));
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert_all_alive(&mut fleet);
    assert_eq!(outcomes[0].tasks["build:solo"], ("succeeded".to_owned(), 1));
    assert_eq!(
        outcomes[1].tasks["build:solo"],
        ("succeeded".to_owned(), rerun.attempt),
        "the recorded attempt is the rerun's"
    );
}

/// A fleet of `options` that ran one deployment of the shop to success.
pub(crate) async fn one_deployment(
    test: &'static str,
    options: FleetOptions,
) -> (Fleet, Submission) {
    let mut fleet = Fleet::start(test, options).await;
    let started = Instant::now();
    let submission = submit(&fleet, "shop", shop_manifest(1)).await;
    let (_, figures) = finish(
        &mut fleet,
        std::slice::from_ref(&submission),
        started,
        Duration::from_secs(60),
    )
    .await;
    assert_all_succeeded(&fleet, &figures);
    (fleet, submission)
}

/// Submits `manifest` for the app `app` of the fleet's first tenant.
pub(crate) async fn submit(fleet: &Fleet, app: &str, manifest: String) -> Submission {
    fleet
        .api
        .submit(&Request {
            tenant: 0,
            app: app.to_owned(),
            manifest,
        })
        .await
}

/// The build step of `deployment` once it runs.
async fn running_step(fleet: &Fleet, deployment: &str) -> crate::history::Run {
    let build =
        |run: &crate::history::Run| run.deployment == deployment && run.task == "build:solo";
    fleet
        .wait_for_history("the build to start", Duration::from_secs(30), |runs| {
            runs.iter().any(build)
        })
        .await
        .into_iter()
        .find(build)
        .expect("a run")
}

/// `/readyz` on every role (the api, a scheduler and a worker, each on its own
/// address) turns 503 naming the service while PostgreSQL or RabbitMQ is
/// stopped, and 200 again once it is back; the fleet still deploys after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_readyz_turns_503_while_postgres_or_rabbitmq_is_stopped() {
    let mut fleet = Fleet::start(
        "readyz",
        FleetOptions {
            workers: 1,
            ..FleetOptions::default()
        },
    )
    .await;
    all_ready(&fleet, 200, "ready").await;
    {
        let _stopped = RabbitMqStopped::stop();
        all_ready(&fleet, 503, "broker").await;
    }
    all_ready(&fleet, 200, "ready").await;
    {
        let _stopped = PostgresStopped::stop();
        all_ready(&fleet, 503, "store").await;
    }
    all_ready(&fleet, 200, "ready").await;

    let started = Instant::now();
    let submission = submit(&fleet, "after", solo_manifest("after:1", 1)).await;
    let (_, figures) = finish(&mut fleet, &[submission], started, Duration::from_secs(60)).await;
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    assert_all_alive(&mut fleet);
}

/// Waits until every process answers `/readyz` with `status` and a body holding
/// `needle`; `/healthz` answers 200 all along.
async fn all_ready(fleet: &Fleet, status: u16, needle: &str) {
    let started = Instant::now();
    let deadline = Duration::from_secs(60);
    loop {
        let mut answers = Vec::new();
        for process in fleet.processes() {
            let health = fleet.get(process, "/healthz").await;
            assert_eq!(
                health.as_ref().map(|(status, _)| *status),
                Some(200),
                "{}: /healthz is liveness and answers 200 whatever the services do",
                process.name
            );
            answers.push((process.name.clone(), fleet.get(process, "/readyz").await));
        }
        if answers.iter().all(|(_, answer)| {
            answer
                .as_ref()
                .is_some_and(|(got, body)| *got == status && body.contains(needle))
        }) {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "not every process answered /readyz {status} ({needle}) within {deadline:?}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One deployment of the shop app (3 builds, 5 deploys) moves each counter of the
/// fleet's `/metrics` by exactly what it did, summed over the processes; the
/// scheduler's store gauges count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_metrics_count_what_a_deployment_did() {
    let mut fleet = Fleet::start(
        "metrics",
        FleetOptions {
            step_ms: (20, 50),
            ..FleetOptions::default()
        },
    )
    .await;
    let before = scrape(&fleet).await;
    let started = Instant::now();
    let submission = submit(&fleet, "shop", shop_manifest(1)).await;
    let (_, figures) = finish(&mut fleet, &[submission], started, Duration::from_secs(60)).await;
    assert_clean(&fleet, &figures);
    assert_all_succeeded(&fleet, &figures);
    let after = scrape(&fleet).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sum(&after, name, labels) - sum(&before, name, labels)
    };
    let build = [("kind", "build"), ("state", "succeeded")];
    let deploy = [("kind", "deploy"), ("state", "succeeded")];
    assert_eq!(moved("drover_tasks_finished_total", &build), 3.0);
    assert_eq!(moved("drover_tasks_finished_total", &deploy), 5.0);
    assert_eq!(moved("drover_tasks_started_total", &[]), 8.0);
    assert_eq!(
        moved(
            "drover_deployments_finished_total",
            &[("state", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        moved("drover_task_duration_seconds_count", &[("kind", "build")]),
        3.0
    );
    assert_eq!(
        moved("drover_task_duration_seconds_count", &[("kind", "deploy")]),
        5.0
    );
    assert_eq!(moved("drover_task_queue_wait_seconds_count", &[]), 8.0);
    assert_eq!(
        moved("drover_deployment_first_step_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        moved(
            "drover_deployment_duration_seconds_count",
            &[("state", "succeeded")]
        ),
        1.0
    );
    // From its submission to its end: within the time the test waited for it.
    let took = moved(
        "drover_deployment_duration_seconds_sum",
        &[("state", "succeeded")],
    );
    assert!(
        took > 0.0 && took <= started.elapsed().as_secs_f64(),
        "{took} s"
    );
    assert_eq!(moved("drover_stale_results_total", &[]), 0.0);
    assert_eq!(moved("drover_reaper_hand_outs_total", &[]), 0.0);
    // Every dispatch published once: the 8 tasks', and one more per hand-back.
    let parked = moved("drover_tasks_parked_total", &[]);
    assert_eq!(moved("drover_outbox_published_total", &[]), 8.0 + parked);
    assert!(moved("drover_publish_confirms_total", &[("outcome", "ack")]) >= 8.0 + parked);
    assert_eq!(
        moved(
            "drover_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/apps/{app}/deployments"),
                ("status", "202"),
            ]
        ),
        1.0
    );
    // The scheduler reads the store every few seconds.
    let waited = Instant::now();
    loop {
        let scheduler = fleet
            .processes()
            .iter()
            .find(|process| process.name == "scheduler-1")
            .expect("a scheduler");
        let text = fleet
            .get(scheduler, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let metrics = parse(&text);
        let deployments = sum(
            std::slice::from_ref(&metrics),
            "drover_store_deployments",
            &[("state", "succeeded")],
        );
        let tasks = sum(&[metrics], "drover_store_tasks", &[("state", "succeeded")]);
        if deployments == 1.0 && tasks == 8.0 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the store gauges did not count the deployment (deployments {deployments}, tasks {tasks})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_all_alive(&mut fleet);
}

/// One deployment is one trace: the API's request that submitted it and every
/// worker's step of it log under the trace id its id names, which the dispatches
/// carried across RabbitMQ as a W3C `traceparent` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_a_deployment_is_one_trace_across_the_fleet() {
    let (fleet, submission) = one_deployment(
        "trace",
        FleetOptions {
            step_ms: (20, 50),
            ..FleetOptions::default()
        },
    )
    .await;
    let trace_id = submission.id.replace('-', "");
    let api = fleet.traced_messages("api", &trace_id);
    assert!(
        api.iter().any(|message| message == "deployment submitted"),
        "the API's submission logs under trace {trace_id}: {api:?}\n{}",
        fleet.diagnostics()
    );
    let started_steps: usize = ["worker-1", "worker-2"]
        .iter()
        .map(|worker| {
            fleet
                .traced_messages(worker, &trace_id)
                .iter()
                .filter(|message| *message == "task started")
                .count()
        })
        .sum();
    assert_eq!(
        started_steps,
        8,
        "each of the 8 steps logs under the deployment's trace\n{}",
        fleet.diagnostics()
    );
}

/// One sample: its metric's name, its labels and its value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Every process's metrics.
async fn scrape(fleet: &Fleet) -> Vec<Vec<Sample>> {
    let mut all = Vec::new();
    for process in fleet.processes() {
        all.push(scrape_one(fleet, process).await);
    }
    all
}

async fn scrape_one(fleet: &Fleet, process: &Process) -> Vec<Sample> {
    let (status, body) = fleet
        .get(process, "/metrics")
        .await
        .unwrap_or_else(|| panic!("{} did not answer /metrics", process.name));
    assert_eq!(status, 200, "{}: /metrics answered {status}", process.name);
    parse(&body)
}

/// Prometheus' text format, as far as drover writes it.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

/// The sum over every process of the samples of `name` carrying `labels`.
fn sum(processes: &[Vec<Sample>], name: &str, labels: &[(&str, &str)]) -> f64 {
    processes
        .iter()
        .flatten()
        .filter(|(sample, sample_labels, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|(_, _, value)| value)
        .sum()
}
