//! A worker stops the steps of a deployment whose cancellation it hears on the
//! events exchange, without waiting for its next lease extension to report it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use scheduler::Policies;
use scheduler::planner::PlanOptions;
use shared::broker::Broker;
use shared::events::Event;
use shared::ids::DeploymentId;
use shared::model::DeploymentState;
use shared::names::{AppName, TenantName};
use shared::release::Observer;
use shared::store::{Cancellation, ClaimedTask};
use tokio::sync::watch;
use worker::Shutdown;
use worker::driver::{Driver, StepOutcome, StepResult, StepStop};

use crate::store::{manifest, sqlite};
use crate::support::{embedded, worker_options};

/// Steps that run until asked to stop, then end once the test lets them.
#[derive(Debug)]
struct Held {
    /// The deployments whose step started, and those whose step was asked to stop.
    seen: watch::Sender<(BTreeSet<DeploymentId>, BTreeSet<DeploymentId>)>,
    /// Set when the stopped steps may end.
    released: watch::Sender<bool>,
}

impl Observer for Held {}

#[async_trait]
impl Driver for Held {
    async fn run(&self, task: &ClaimedTask, stop: StepStop) -> StepResult {
        self.seen.send_modify(|(started, _)| {
            started.insert(task.deployment);
        });
        stop.terminate.cancelled().await;
        self.seen.send_modify(|(_, stopped)| {
            stopped.insert(task.deployment);
        });
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
        StepResult {
            outcome: StepOutcome::failed("stopped"),
            log: String::new(),
        }
    }
}

const MANIFEST: &str = "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    build: {image: registry.example/web:1}\n    run: {command: serve}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_heard_as_an_event_stops_only_its_deployments_steps() {
    let backend = sqlite().await;
    let store = backend.store.clone();
    let (backends, broker) = embedded(store.clone());
    let submitter = backends.clone();
    let (seen, mut seen_rx) = watch::channel((BTreeSet::new(), BTreeSet::new()));
    let (released, _) = watch::channel(false);
    let held = Arc::new(Held { seen, released });
    // The keeper extends leases every second, and the store reports no
    // cancellation until the test asks for it, after the stop.
    let options = worker_options("cancel-worker");
    let shutdown = Shutdown::default();
    let worker = tokio::spawn(worker::run(
        options,
        backends,
        held.clone(),
        shutdown.clone(),
    ));
    let tenant = store
        .ensure_tenant(&TenantName::new("acme").expect("a tenant name"))
        .await
        .expect("ensure_tenant");
    let mut ids = Vec::new();
    for app in ["shop", "blog"] {
        let submitted = scheduler::submit(
            &submitter,
            tenant,
            &AppName::new(app).expect("an app name"),
            manifest(MANIFEST),
            &PlanOptions::default(),
            None,
            Policies::default(),
        )
        .await
        .expect("submit");
        ids.push(submitted.id);
    }
    let (cancelled, other) = (ids[0], ids[1]);
    let deadline = Duration::from_secs(20);
    tokio::time::timeout(
        deadline,
        seen_rx.wait_for(|(started, _)| started.len() == 2),
    )
    .await
    .expect("both steps started")
    .expect("the driver is alive");

    broker
        .publish_event(&Event::CancelRequested {
            tenant,
            deployment: cancelled,
        })
        .await
        .expect("publish_event");
    let stopped = tokio::time::timeout(
        deadline,
        seen_rx.wait_for(|(_, stopped)| stopped.contains(&cancelled)),
    )
    .await
    .expect("the cancelled deployment's step was asked to stop")
    .expect("the driver is alive")
    .1
    .clone();
    assert_eq!(
        stopped,
        BTreeSet::from([cancelled]),
        "only the cancelled deployment's step stops"
    );

    // The store learns of both cancellations now; the steps end, and with them the
    // deployments.
    for id in [cancelled, other] {
        let cancellation = store
            .cancel_deployment(tenant, id)
            .await
            .expect("cancel_deployment")
            .expect("the deployment exists");
        assert!(
            matches!(&cancellation, Cancellation::Requested { running, .. } if running.len() == 1),
            "{cancellation:?}"
        );
    }
    held.released.send_replace(true);
    let started = Instant::now();
    for id in [cancelled, other] {
        loop {
            let state = store
                .deployment(tenant, id)
                .await
                .expect("deployment")
                .expect("the deployment exists")
                .state;
            if state == DeploymentState::Cancelled {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "deployment {id} is still {state}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(20), seen_rx.changed()).await;
        }
    }
    shutdown.drain.cancel();
    worker
        .await
        .expect("the worker panicked")
        .expect("the worker failed");
}
