//! The outbox relay and the lease reaper.

use std::time::Duration;

use shared::backends::Backends;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// The most outbox rows published per round.
const BATCH: u64 = 256;

/// Publishes outbox rows with confirms, then deletes them. A crash between the two
/// publishes them again; consumers are idempotent, so nothing is lost or doubled.
/// Woken at once by the store after a commit, with a slow poll as the safety net.
pub(crate) async fn relay(
    backends: &Backends,
    poll_every: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    let signal = backends.store.outbox_signal();
    loop {
        let batch = backends.store.outbox_batch(BATCH).await?;
        if batch.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = signal.notified() => {}
                () = tokio::time::sleep(poll_every) => {}
            }
            continue;
        }
        let mut published = Vec::with_capacity(batch.len());
        for message in batch {
            backends
                .broker
                .publish(&message.queue, message.dispatch.to_message())
                .await?;
            published.push(message.id);
        }
        backends.store.delete_outbox(&published).await?;
        tracing::debug!(n_messages = published.len(), "relayed outbox messages");
    }
}

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
