//! The lease reaper.

use std::time::Duration;

use shared::backends::Backends;
use shared::model::TaskState;
use shared::store::Reaped;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// Hands every task whose lease expired out again, as a new attempt, or fails it
/// once it has had `max_attempts`.
pub(crate) async fn reap(
    backends: &Backends,
    every: Duration,
    max_attempts: u32,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        match backends.store.reap_expired(max_attempts).await {
            Ok(reaped) => {
                for reaped in reaped {
                    report(backends, reaped).await;
                }
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "failed to reap expired leases; will try again");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Logs what the reaper did and tells the world about failures.
async fn report(backends: &Backends, reaped: Reaped) {
    let action = match &reaped {
        Reaped::Requeued(_) => "requeued",
        Reaped::Redispatched(_) => "redispatched",
        Reaped::Ended { .. } => "ended",
    };
    shared::metrics::count_by(shared::metrics::REAPER_HAND_OUTS, "action", action);
    match &reaped {
        Reaped::Requeued(dispatch) => tracing::warn!(
            trace_id = %shared::trace::trace_id(dispatch.deployment),
            deployment = %dispatch.deployment,
            task = %dispatch.task,
            attempt = dispatch.attempt,
            "lease expired; task handed out again"
        ),
        Reaped::Redispatched(dispatch) => tracing::warn!(
            trace_id = %shared::trace::trace_id(dispatch.deployment),
            deployment = %dispatch.deployment,
            task = %dispatch.task,
            attempt = dispatch.attempt,
            "no worker claimed the task since it was handed out (its dispatch was lost?); dispatched again"
        ),
        Reaped::Ended {
            deployment,
            task,
            attempt,
            state,
            ..
        } => {
            let trace_id = shared::trace::trace_id(*deployment);
            if *state == TaskState::Cancelled {
                tracing::warn!(%trace_id, %deployment, %task, attempt, "lease expired in a cancelled deployment; task cancelled");
            } else {
                tracing::warn!(%trace_id, %deployment, %task, attempt, "lease expired too often; task failed");
            }
        }
    }
    backends
        .announce(&reaped.events("its workers stopped answering"))
        .await;
}
