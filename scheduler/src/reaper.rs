//! The lease reaper.

use std::time::Duration;

use shared::backends::Backends;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// Hands every task whose lease expired out again, as a new attempt.
pub(crate) async fn reap(
    backends: &Backends,
    every: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        match backends.store.requeue_expired().await {
            Ok(requeued) => {
                for dispatch in requeued {
                    tracing::warn!(
                        deployment = %dispatch.deployment,
                        task = %dispatch.task,
                        attempt = dispatch.attempt,
                        "lease expired; task handed out again"
                    );
                }
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "failed to reap expired leases; will try again");
            }
            Err(err) => return Err(err.into()),
        }
    }
}
