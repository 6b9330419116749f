//! The pruner: deletes what is older than `[store] retain`: finished deployments
//! and saved plans.

use std::future::Future;
use std::time::Duration;

use shared::backends::Backends;
use shared::store::StoreError;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// Rows deleted per statement, so that a large backlog is deleted in short
/// transactions.
const BATCH: u64 = 1000;

/// Every `every` (and at start), deletes the deployments that ended, and the
/// plans saved, more than `retain` ago. Transient failures are logged and tried
/// again next time.
pub(crate) async fn prune(
    backends: &Backends,
    retain: Duration,
    every: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    let store = backends.store.as_ref();
    loop {
        let n_pruned = in_batches("finished deployments", || {
            store.prune_finished(retain, BATCH)
        })
        .await?;
        if n_pruned > 0 {
            tracing::info!(n_pruned, retain = ?retain, "pruned finished deployments");
        }
        let n_pruned = in_batches("saved plans", || store.prune_saved_plans(retain, BATCH)).await?;
        if n_pruned > 0 {
            tracing::info!(n_pruned, retain = ?retain, "pruned saved plans");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Runs `batch` until it deletes less than a full batch; how many it deleted. A
/// transient failure ends the round early (logged); another one is the pruner's.
async fn in_batches<F, Fut>(what: &str, mut batch: F) -> Result<u64, SchedulerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut n_pruned = 0;
    loop {
        match batch().await {
            Ok(n) => {
                n_pruned += n;
                if n < BATCH {
                    return Ok(n_pruned);
                }
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "failed to prune {what}; will try again");
                return Ok(n_pruned);
            }
            Err(err) => return Err(err.into()),
        }
    }
}
