//! drover's scheduler: the pure [`planner`], the submission of deployments, and the
//! scheduler role — an outbox relay that also polls (for what other processes left
//! behind), and the reaper that hands tasks whose lease expired out again.

mod auto_rollback;
pub mod planner;
mod prune;
mod reaper;
mod submit;

use std::time::Duration;

use shared::backends::Backends;
use shared::config::WorkerConfig;
use shared::outbox::{self, RelayError};
use shared::store::StoreError;
use tokio_util::sync::CancellationToken;

pub use submit::{
    ExternalOutcome, Policies, SubmitError, Submitted, adopt, apply_plan, external_update,
    save_plan, submit, submit_rollback,
};

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the lease reaper failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// How the scheduler role runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How often the reaper looks for expired leases.
    pub reap_every: Duration,
    /// How often the relay looks at the outbox without being woken (the safety net).
    pub poll_every: Duration,
    /// How many times a task's lease may expire before the task fails.
    pub max_attempts: u32,
    /// How long finished deployments and saved plans are kept (`[store] retain`);
    /// `None`: forever.
    pub retain: Option<Duration>,
    /// How often the pruner deletes what is older.
    pub prune_every: Duration,
    /// The most tasks the relay hands out per tenant (`worker.tenant-limit`).
    pub tenant_limit: u32,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            reap_every: Duration::from_secs(5),
            poll_every: Duration::from_secs(1),
            max_attempts: 3,
            retain: None,
            prune_every: Duration::from_secs(3600),
            tenant_limit: WorkerConfig::default().tenant_limit,
        }
    }
}

impl SchedulerOptions {
    /// Options for a fleet of workers configured with `worker`: the reaper looks
    /// four times per lease (between every 100 ms and every 5 s), so an expired lease
    /// is noticed within a quarter of its length; a task fails after the workers'
    /// `max-attempts`; the relay hands out their `tenant-limit`.
    pub fn for_workers(worker: &WorkerConfig) -> Self {
        Self {
            reap_every: (worker.lease / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            max_attempts: worker.max_attempts,
            tenant_limit: worker.tenant_limit,
            ..Self::default()
        }
    }

    /// These options, keeping finished deployments for `retain` (`None`: forever).
    pub fn retaining(self, retain: Option<Duration>) -> Self {
        Self { retain, ..self }
    }
}

/// Runs the scheduler role until `shutdown` is cancelled.
pub async fn run(
    options: SchedulerOptions,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    if backends.broker_is_volatile {
        // The in-memory broker lost whatever a previous process had queued.
        let n_tasks = backends.store.redispatch_ready().await?;
        if n_tasks > 0 {
            tracing::info!(n_tasks, "re-dispatched ready tasks after start-up");
        }
    }
    tokio::try_join!(
        async {
            outbox::relay(
                &backends,
                options.poll_every,
                options.tenant_limit,
                &shutdown,
            )
            .await
            .map_err(SchedulerError::from)
        },
        reaper::reap(
            &backends,
            options.reap_every,
            options.max_attempts,
            &shutdown
        ),
        auto_rollback::run(&backends, options.reap_every, &shutdown),
        figures(&backends, &shutdown),
        async {
            match options.retain {
                Some(retain) => {
                    prune::prune(&backends, retain, options.prune_every, &shutdown).await
                }
                None => Ok(()),
            }
        },
    )?;
    Ok(())
}

/// How often a scheduler reads the store's figures into its metrics.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// Keeps the `drover_store_*` gauges of this process up to date. A failed read
/// leaves them as they were.
async fn figures(backends: &Backends, shutdown: &CancellationToken) -> Result<(), SchedulerError> {
    loop {
        match backends.store.figures().await {
            Ok(figures) => shared::metrics::store_figures(&figures),
            Err(err) => tracing::debug!(error = %err, "failed to read the store's figures"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(FIGURES_EVERY) => {}
        }
    }
}
