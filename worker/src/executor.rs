//! One delivery, start to end: lock, claim (with its fence), acknowledge, run, record,
//! unlock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use shared::backends::Backends;
use shared::broker::{BrokerError, Delivery};
use shared::dispatch::TaskDispatch;
use shared::events::Event;
use shared::locks::{LockToken, component_lock_key};
use shared::metrics;
use shared::model::{TaskKind, TaskState};
use shared::store::{
    Claim, ClaimOutcome, ClaimedTask, LeasedTask, RecordOutcome, Store, TaskOutcome, TaskResult,
};
use shared::trace;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::WorkerOptions;
use crate::batcher::{Batcher, ClaimTasks, Record};
use crate::driver::{Driver, LiveLog, StepOutcome, StepResult, StepStop};
use crate::keeper::Keeper;

/// Runs deliveries for one worker.
#[derive(Debug)]
pub(crate) struct Executor {
    options: WorkerOptions,
    backends: Backends,
    driver: Arc<dyn Driver>,
    /// Cancelled when the worker must stop at once: steps are killed, results dropped.
    abort: CancellationToken,
    /// Keeps the locks and leases of the running tasks alive.
    keeper: Arc<Keeper>,
    /// Claims tasks, those whose deliveries arrive together in one transaction.
    claimer: Batcher<ClaimTasks>,
    /// Records results, those that end together in one transaction.
    recorder: Batcher<Record>,
    /// Results refused because the task had moved on (another attempt or fence).
    stale_rejected: AtomicU64,
}

/// Logs a failure to settle a delivery: the broker will redeliver it, and the
/// store's conditional claim makes the redelivery harmless.
fn settled(result: Result<(), BrokerError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "failed to settle a delivery; it will be redelivered");
    }
}

impl Executor {
    pub(crate) fn new(
        options: WorkerOptions,
        backends: Backends,
        driver: Arc<dyn Driver>,
        keeper: Arc<Keeper>,
        claimer: Batcher<ClaimTasks>,
        recorder: Batcher<Record>,
        abort: CancellationToken,
    ) -> Self {
        Self {
            options,
            backends,
            driver,
            keeper,
            claimer,
            recorder,
            abort,
            stale_rejected: AtomicU64::new(0),
        }
    }

    pub(crate) fn worker_id(&self) -> &str {
        &self.options.id
    }

    pub(crate) async fn handle(&self, delivery: Delivery) {
        let dispatch = match TaskDispatch::from_message(&delivery.message) {
            Ok(dispatch) => dispatch,
            Err(err) => {
                tracing::warn!(error = %err, "undecodable message moved to the dead-letter queue");
                metrics::count(metrics::DEAD_LETTERED);
                settled(delivery.dead_letter(&err.to_string()).await);
                return;
            }
        };
        if delivery.delivery_count > 1 {
            metrics::count(metrics::REDELIVERIES);
        }
        let (_, component) = dispatch.task.parts();
        // The deployment's trace, as the dispatch carried it (or as its id names it).
        let traceparent = delivery
            .message
            .headers
            .get(trace::TRACEPARENT)
            .filter(|header| trace::parse_traceparent(header).is_some())
            .cloned()
            .unwrap_or_else(|| trace::traceparent(dispatch.deployment));
        let trace_id = trace::parse_traceparent(&traceparent).map_or_else(
            || trace::trace_id(dispatch.deployment),
            |(trace, _)| trace.to_owned(),
        );
        let span = tracing::info_span!(
            "task",
            trace_id = %trace_id,
            tenant = %dispatch.tenant,
            app = %dispatch.app,
            deployment = %dispatch.deployment,
            component = %component,
            task = %dispatch.task,
            attempt = dispatch.attempt,
            fence = field::Empty,
        );
        trace::join_traceparent(&span, &traceparent);
        self.execute(dispatch, delivery).instrument(span).await;
    }

    async fn execute(&self, dispatch: TaskDispatch, delivery: Delivery) {
        let (_, component) = dispatch.task.parts();
        let key = component_lock_key(dispatch.tenant, &dispatch.app, &component);
        let holder = format!("deployment {} ({})", dispatch.deployment, dispatch.task);
        let locks = &self.backends.locks;
        let token = match locks.acquire(&key, &holder, self.options.lock_ttl).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                tracing::debug!("component lock is held; handed back");
                metrics::count(metrics::LOCK_WAITS);
                self.hand_back(&dispatch, delivery, "component_lock").await;
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to take the component lock; retrying later");
                settled(delivery.retry_after(self.options.lock_retry).await);
                return;
            }
        };
        self.claim_and_run(&dispatch, delivery, &key, &token).await;
        match locks.release(&key, &token).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the component lock had already been lost"),
            Err(err) => {
                tracing::warn!(error = %err, "failed to release the component lock; it will expire")
            }
        }
    }

    async fn claim_and_run(
        &self,
        dispatch: &TaskDispatch,
        delivery: Delivery,
        key: &str,
        token: &LockToken,
    ) {
        // The claim takes the component's next fence in its own transaction.
        let claim = Claim {
            tenant: dispatch.tenant,
            deployment: dispatch.deployment,
            task: dispatch.task.clone(),
            attempt: dispatch.attempt,
            lock_key: key.to_owned(),
            fence: None,
            worker: self.options.id.clone(),
            lease: self.options.lease,
            tenant_limit: Some(self.options.tenant_limit),
        };
        let task = match self.claimer.call(claim).await {
            Ok(ClaimOutcome::Claimed(task)) => task,
            Ok(ClaimOutcome::NotClaimable { state, attempt }) => {
                tracing::debug!(%state, current_attempt = attempt, "stale or duplicate dispatch dropped");
                settled(delivery.ack().await);
                return;
            }
            Ok(ClaimOutcome::ComponentBusy) => {
                tracing::warn!(
                    "another task of the component runs although its lock was free (was the lock service restarted?); handed back"
                );
                self.hand_back(dispatch, delivery, "component_busy").await;
                return;
            }
            Ok(ClaimOutcome::Ordered) => {
                tracing::debug!(
                    "a deployment submitted earlier still deploys the component; handed back"
                );
                self.hand_back(dispatch, delivery, "ordered").await;
                return;
            }
            Ok(ClaimOutcome::TenantLimit) => {
                tracing::debug!("the tenant runs as many tasks as it may; handed back");
                self.hand_back(dispatch, delivery, "tenant_limit").await;
                return;
            }
            Ok(ClaimOutcome::Unknown) => {
                tracing::warn!("dispatch of an unknown task moved to the dead-letter queue");
                metrics::count(metrics::DEAD_LETTERED);
                settled(delivery.dead_letter("unknown task").await);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to claim the task; retrying later");
                settled(delivery.retry_after(self.options.lock_retry).await);
                return;
            }
        };
        // The claim is committed: from here the lease keeps the task, not the delivery.
        tracing::Span::current().record("fence", task.fence.0);
        settled(delivery.ack().await);
        if let Some(written_at) = dispatch.written_at {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |now| i64::try_from(now.as_millis()).unwrap_or(i64::MAX));
            let waited = Duration::from_millis(u64::try_from(now - written_at).unwrap_or(0));
            metrics::task_claimed(task.kind, task.tenant, waited);
        }
        self.run_claimed(*task, key, token).await;
    }

    /// Hands a task that cannot run yet back to the store, to be dispatched again
    /// after `lock-retry` (and to free its place among its tenant's handed-out
    /// tasks meanwhile), then settles its delivery; when the store cannot be
    /// written, the broker's delay queue retries the delivery instead.
    async fn hand_back(&self, dispatch: &TaskDispatch, delivery: Delivery, reason: &'static str) {
        metrics::count_by(metrics::TASKS_PARKED, "reason", reason);
        match self
            .backends
            .store
            .hand_back(dispatch, self.options.lock_retry)
            .await
        {
            Ok(true) => settled(delivery.ack().await),
            Ok(false) => {
                tracing::debug!("stale or duplicate dispatch dropped");
                settled(delivery.ack().await);
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to hand the task back; retrying later");
                settled(delivery.retry_after(self.options.lock_retry).await);
            }
        }
    }

    /// Gives a task whose step the shutdown killed back to the store, to run again
    /// as its next attempt on another worker (its lock is released after this).
    async fn give_back(&self, leased: &LeasedTask) {
        match self.backends.store.release_lease(leased).await {
            Ok(Some(reaped)) => {
                metrics::count(metrics::TASKS_HANDED_BACK);
                match reaped.requeued() {
                    Some(dispatch) => tracing::warn!(
                        next_attempt = dispatch.attempt,
                        "step stopped by shutdown; task handed back"
                    ),
                    None => tracing::warn!(
                        "step stopped by shutdown in a cancelled deployment; task cancelled"
                    ),
                }
                self.backends
                    .announce(&reaped.events("cancelled; its worker shut down"))
                    .await;
            }
            Ok(None) => tracing::debug!("step stopped by shutdown; the task had moved on"),
            Err(err) => tracing::warn!(
                error = %err,
                "step stopped by shutdown; failed to hand the task back, it runs again once its lease expires"
            ),
        }
    }

    async fn run_claimed(&self, task: ClaimedTask, key: &str, token: &LockToken) {
        self.publish(Event::TaskStarted {
            tenant: task.tenant,
            deployment: task.deployment,
            task: task.task.clone(),
            attempt: task.attempt,
            worker: self.options.id.clone(),
        })
        .await;
        tracing::info!("task started");
        let started = Instant::now();
        let stop = StepStop {
            terminate: CancellationToken::new(),
            kill: self.abort.child_token(),
            log: LiveLog::default(),
        };
        let leased = LeasedTask {
            deployment: task.deployment,
            task: task.task.clone(),
            attempt: task.attempt,
            fence: task.fence,
        };
        let keeping = self
            .keeper
            .keep(task.tenant, key, token, leased.clone(), &stop);
        // The step and the shipping of what it prints, together: its last lines are
        // in before its result, which ends its followers' stream.
        let ended = CancellationToken::new();
        let (step, ()) = tokio::join!(
            async {
                let step = self.run_step(&task, &stop).await;
                ended.cancel();
                step
            },
            ship_log(self.backends.store.as_ref(), &leased, &stop.log, &ended),
        );
        drop(keeping);
        // A step the shutdown killed ends failed; one that ended first is recorded.
        if self.abort.is_cancelled() && !matches!(step.outcome, StepOutcome::Succeeded { .. }) {
            self.give_back(&leased).await;
            return;
        }
        metrics::step_ran(task.kind, task.tenant, started.elapsed());
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match step.outcome {
            StepOutcome::Succeeded { artifact } => TaskOutcome::Succeeded { artifact },
            StepOutcome::Failed { error, .. } if stop.terminate.is_cancelled() => {
                TaskOutcome::Cancelled { error }
            }
            StepOutcome::Failed { error, transient }
                if transient && task.attempt < self.options.max_attempts =>
            {
                let after = self.retry_delay(task.attempt);
                TaskOutcome::Retry { error, after }
            }
            StepOutcome::Failed { error, .. } => TaskOutcome::Failed { error },
        };
        let (state, error) = match &outcome {
            TaskOutcome::Succeeded { .. } => (TaskState::Succeeded, None),
            TaskOutcome::Cancelled { error } => (TaskState::Cancelled, Some(error.clone())),
            TaskOutcome::Failed { error } | TaskOutcome::Retry { error, .. } => {
                (TaskState::Failed, Some(error.clone()))
            }
        };
        match &error {
            None => tracing::info!(duration_ms, "task succeeded"),
            // A failing step is an outcome of the deployment, not a fault of drover.
            Some(error) => tracing::info!(duration_ms, error = %error, "task failed"),
        }

        let result = TaskResult {
            deployment: task.deployment,
            task: task.task.clone(),
            attempt: task.attempt,
            fence: task.fence,
            outcome,
            log: step.log,
        };
        let recorded = (|| self.recorder.call(result.clone()))
        .retry(ExponentialBuilder::default().with_max_times(5))
        .when(|err| err.is_transient())
        .notify(|err, after| tracing::warn!(error = %err, ?after, "failed to record the result; retrying"))
        .await;
        match recorded {
            Ok(RecordOutcome::Recorded { skipped, finished }) => {
                self.publish(Event::TaskFinished {
                    tenant: task.tenant,
                    deployment: task.deployment,
                    task: task.task.clone(),
                    attempt: task.attempt,
                    state,
                    duration_ms,
                    error,
                })
                .await;
                for skipped in skipped {
                    self.publish(Event::TaskSkipped {
                        tenant: task.tenant,
                        deployment: task.deployment,
                        task: skipped,
                    })
                    .await;
                }
                if let Some(finished) = finished {
                    tracing::info!(state = %finished.state, release = finished.release, "deployment finished");
                    self.publish(Event::DeploymentFinished {
                        tenant: task.tenant,
                        deployment: task.deployment,
                        state: finished.state,
                        release: finished.release,
                    })
                    .await;
                }
            }
            Ok(RecordOutcome::Retrying { attempt, at }) => {
                tracing::info!(next_attempt = attempt, %at, "task will be retried");
                self.publish(Event::TaskRetrying {
                    tenant: task.tenant,
                    deployment: task.deployment,
                    task: task.task.clone(),
                    attempt: task.attempt,
                    next_attempt: attempt,
                    at,
                    error: error.unwrap_or_default(),
                })
                .await;
            }
            Ok(RecordOutcome::Stale) => {
                metrics::count(metrics::STALE_RESULTS);
                let stale_rejected = self.stale_rejected.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    stale_rejected,
                    "result refused: the task was handed to another attempt or fence"
                );
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    "failed to record the result; the task will run again when its lease expires"
                );
            }
        }
    }

    /// Runs the task's step: a build once; a deploy once per phase of its
    /// deployment's strategy, each phase noted on the task, the driver told which
    /// one it is in. When a phase fails, the strategy's abort phase (if it has one)
    /// runs before the step fails.
    async fn run_step(&self, task: &ClaimedTask, stop: &StepStop) -> StepResult {
        if task.kind != TaskKind::Deploy {
            return self.driver.run(task, stop.clone()).await;
        }
        let mut log = String::new();
        for phase in task.strategy.phases() {
            let step = self.run_phase(task, phase, stop, &mut log).await;
            let StepOutcome::Failed { error, transient } = step else {
                continue;
            };
            let stopped = stop.kill.is_cancelled() || stop.terminate.is_cancelled();
            if let (Some(abort), false) = (task.strategy.abort_phase(), stopped) {
                let aborted = self.run_phase(task, abort, stop, &mut log).await;
                if let StepOutcome::Failed {
                    error: abort_error, ..
                } = aborted
                {
                    tracing::warn!(error = %abort_error, "the strategy's abort phase failed too");
                }
            }
            return StepResult {
                outcome: StepOutcome::Failed {
                    error: format!("{} phase `{phase}` failed: {error}", task.strategy),
                    transient,
                },
                log,
            };
        }
        StepResult {
            outcome: StepOutcome::Succeeded { artifact: None },
            log,
        }
    }

    /// Runs one phase of a deploy step, noting it on the task (the claim noted the
    /// first) and in the log.
    async fn run_phase(
        &self,
        task: &ClaimedTask,
        phase: &str,
        stop: &StepStop,
        log: &mut String,
    ) -> StepOutcome {
        if task.phase.as_deref() != Some(phase) {
            self.note_phase(task, phase).await;
        }
        tracing::info!(phase, "deploy phase started");
        let phased = ClaimedTask {
            phase: Some(phase.to_owned()),
            ..task.clone()
        };
        let step = self.driver.run(&phased, stop.clone()).await;
        if task.strategy.phases().len() > 1 || task.strategy.abort_phase() == Some(phase) {
            log.push_str(&format!("--- {} phase `{phase}` ---\n", task.strategy));
        }
        log.push_str(&step.log);
        step.outcome
    }

    async fn note_phase(&self, task: &ClaimedTask, phase: &str) {
        match self
            .backends
            .store
            .record_phase(task.deployment, &task.task, task.attempt, task.fence, phase)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(phase, "the task is no longer ours; its phase was not noted")
            }
            Err(err) => tracing::warn!(error = %err, phase, "failed to note the task's phase"),
        }
    }

    /// The backoff before the attempt after `attempt`: exponential from the configured
    /// delay, with jitter, at most ten minutes.
    fn retry_delay(&self, attempt: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.options.retry_delay)
            .with_max_delay(Duration::from_secs(600))
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.options.retry_delay)
    }

    async fn publish(&self, event: Event) {
        self.backends.announce(std::slice::from_ref(&event)).await;
    }
}

/// How often a running step's new lines are shipped to the store.
const LOG_SHIPPING: Duration = Duration::from_millis(500);

/// Ships what a step prints to the store every [`LOG_SHIPPING`], and what is left
/// once `ended`, under the task's fence, for its followers. A shipment that fails
/// is dropped from the live view (the result's log keeps the step's tail); one
/// refused by the fence ends the shipping: the task runs elsewhere now.
async fn ship_log(store: &dyn Store, task: &LeasedTask, log: &LiveLog, ended: &CancellationToken) {
    let mut next = 0u64;
    loop {
        let last = tokio::select! {
            () = ended.cancelled() => true,
            () = tokio::time::sleep(LOG_SHIPPING) => false,
        };
        let lines = log.take();
        if !lines.is_empty() {
            match store.append_task_log(task, next, &lines).await {
                Ok(true) => next += lines.len() as u64,
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(error = %err, n_lines = lines.len(), "failed to ship the step's output; its followers miss these lines");
                    next += lines.len() as u64;
                }
            }
        }
        if last {
            return;
        }
    }
}
