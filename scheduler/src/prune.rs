//! The pruner: deletes finished deployments older than `[store] retain`.

use std::time::Duration;

use shared::backends::Backends;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// Deployments deleted per statement, so that a large backlog is deleted in short
/// transactions.
const BATCH: u64 = 1000;

/// Every `every` (and at start), deletes the deployments that ended more than
/// `retain` ago. Transient failures are logged and tried again next time.
pub(crate) async fn prune(
    backends: &Backends,
    retain: Duration,
    every: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        let mut n_pruned = 0;
        loop {
            match backends.store.prune_finished(retain, BATCH).await {
                Ok(n) => {
                    n_pruned += n;
                    if n < BATCH {
                        break;
                    }
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(error = %err, "failed to prune finished deployments; will try again");
                    break;
                }
                Err(err) => return Err(err.into()),
            }
        }
        if n_pruned > 0 {
            tracing::info!(n_pruned, retain = ?retain, "pruned finished deployments");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}
