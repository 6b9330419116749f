//! drover's worker: consumes task dispatches, takes the component's lock and a new
//! fence, claims the task in the store, acknowledges the delivery, runs the driver
//! and records the result under the same fence (DESIGN.md 5.1, steps 4 and 5).
//!
//! A delivery is acknowledged as soon as the claim is committed, never held for a
//! whole step: from then on the store's lease, not the broker, keeps the task.

mod batcher;
pub mod driver;
mod executor;
mod keeper;

use std::sync::Arc;
use std::time::Duration;

use shared::backends::Backends;
use shared::broker::{BrokerError, TASKS_QUEUE};
use shared::config::WorkerConfig;
use shared::outbox;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::driver::Driver;

/// How often the worker's relay looks at the outbox without being woken.
const RELAY_POLL: Duration = Duration::from_secs(5);

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("failed to consume `{TASKS_QUEUE}`: {0}")]
    Consume(#[from] BrokerError),
    #[error("the broker closed the consumer of `{TASKS_QUEUE}`")]
    ConsumerClosed,
}

/// What a worker needs besides the backends.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Identifies this worker in claims, locks and logs.
    pub id: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub lock_ttl: Duration,
    pub lock_retry: Duration,
    /// Runs of a transiently failing step before its task fails.
    pub max_attempts: u32,
    /// The first retry's delay; doubled for each further one, with jitter.
    pub retry_delay: Duration,
    /// The most tasks of one tenant that run at once, fleet-wide.
    pub tenant_limit: u32,
}

impl WorkerOptions {
    /// Options from the configuration, with a fresh worker id.
    pub fn new(config: &WorkerConfig) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            id: format!("worker-{}-{}", std::process::id(), &suffix[..8]),
            concurrency: config.concurrency,
            lease: config.lease,
            lock_ttl: config.lock_ttl,
            lock_retry: config.lock_retry,
            max_attempts: config.max_attempts,
            retry_delay: config.retry_delay,
            tenant_limit: config.tenant_limit,
        }
    }
}

/// How a worker is told to stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Stop taking tasks; running steps finish and their results are recorded.
    pub drain: CancellationToken,
    /// Stop at once: running steps are killed and their tasks handed back, to run
    /// again as their next attempt on another worker (or, when the store cannot be
    /// written, once their leases expire). Implies `drain`.
    pub abort: CancellationToken,
}

impl Default for Shutdown {
    fn default() -> Self {
        let abort = CancellationToken::new();
        Self {
            drain: abort.child_token(),
            abort,
        }
    }
}

/// Runs a worker until `shutdown.drain` is cancelled; then stops taking tasks and
/// waits for the running ones (which `shutdown.abort` kills).
pub async fn run(
    options: WorkerOptions,
    backends: Backends,
    driver: Arc<dyn Driver>,
    shutdown: Shutdown,
) -> Result<(), WorkerError> {
    let mut consumer = backends
        .broker
        .consume(TASKS_QUEUE, options.concurrency)
        .await?;
    // The prefetch bounds unsettled deliveries; this bounds running steps, which
    // go on after their delivery is acknowledged.
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let backends_for_relay = backends.clone();
    let tenant_limit = options.tenant_limit;
    let keeper = Arc::new(keeper::Keeper::new(
        backends.clone(),
        options.lock_ttl,
        options.lease,
    ));
    let (recorder, recording) = batcher::Batcher::<batcher::Record>::new(backends.store.clone());
    let recording = tokio::spawn(recording.run());
    let (claimer, claiming) = batcher::Batcher::<batcher::ClaimTasks>::new(backends.store.clone());
    let claiming = tokio::spawn(claiming.run());
    let executor = Arc::new(executor::Executor::new(
        options,
        backends,
        driver,
        keeper.clone(),
        claimer,
        recorder,
        shutdown.abort.clone(),
    ));
    let stop_keeper = CancellationToken::new();
    // Cancellations heard from the events exchange stop their steps at once.
    let hearing = match backends_for_relay.broker.subscribe_cancellations().await {
        Ok(events) => {
            let (keeper, stop) = (keeper.clone(), stop_keeper.clone());
            Some(tokio::spawn(
                async move { keeper.hear(events, &stop).await },
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, "failed to subscribe to cancellations; they are learned from lease extensions");
            None
        }
    };
    // The running tasks' locks and leases, kept alive together until they all ended.
    let keeping = tokio::spawn({
        let stop = stop_keeper.clone();
        async move { keeper.run(&stop).await }
    });
    let mut running = JoinSet::new();
    // Dispatches this worker's results write go out at once, from here.
    let stop_relay = CancellationToken::new();
    let relay = tokio::spawn({
        let (backends, stop) = (backends_for_relay, stop_relay.clone());
        async move { outbox::relay(&backends, RELAY_POLL, tenant_limit, &stop).await }
    });
    tracing::info!(worker = %executor.worker_id(), "worker started");
    let result = loop {
        let slot = tokio::select! {
            () = shutdown.drain.cancelled() => break Ok(()),
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break Ok(()),
            },
        };
        let delivery = tokio::select! {
            () = shutdown.drain.cancelled() => break Ok(()),
            delivery = consumer.next() => delivery,
        };
        match delivery {
            Some(Ok(delivery)) => {
                let executor = executor.clone();
                running.spawn(async move {
                    executor.handle(delivery).await;
                    drop(slot);
                });
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "failed to receive a delivery");
            }
            None => break Err(WorkerError::ConsumerClosed),
        }
        // Collect finished tasks so the set does not grow without bound.
        while running.try_join_next().is_some() {}
    };
    while running.join_next().await.is_some() {}
    let worker_id = executor.worker_id().to_owned();
    // The last claimer and recorder go with the executor; then their loops end.
    drop(executor);
    if let Err(err) = claiming.await {
        tracing::error!(error = %err, "the worker's claimer crashed");
    }
    if let Err(err) = recording.await {
        tracing::error!(error = %err, "the worker's recorder crashed");
    }
    stop_keeper.cancel();
    if let Err(err) = keeping.await {
        tracing::error!(error = %err, "the worker's keep-alive crashed");
    }
    if let Some(hearing) = hearing
        && let Err(err) = hearing.await
    {
        tracing::error!(error = %err, "the worker's event listener crashed");
    }
    stop_relay.cancel();
    match relay.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "the worker's outbox relay stopped"),
        Err(err) => tracing::error!(error = %err, "the worker's outbox relay crashed"),
    }
    tracing::info!(worker = %worker_id, "worker stopped");
    result
}
