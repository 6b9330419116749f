//! Automatic rollback: a failed deployment that opted in is answered by a rollback
//! to the release it started from.
//!
//! Every scheduler looks for armed deployments; the rollback's idempotency key is
//! derived from the failed deployment, so however many schedulers find one, it
//! gets exactly one rollback. A scheduler that dies between submitting and
//! disarming leaves it armed, and the next look submits nothing new.

use std::time::Duration;

use shared::backends::Backends;
use shared::store::{AutoRollback, Idempotency, StoreError};
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;
use crate::submit::{SubmitError, rollback};

/// The idempotency key of a failed deployment's automatic rollback.
fn idempotency_key(failed: shared::ids::DeploymentId) -> String {
    format!("auto-rollback:{failed}")
}

/// Submits the automatic rollbacks that are due, every `every`.
pub(crate) async fn run(
    backends: &Backends,
    every: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        match roll_back_failed(backends).await {
            Ok(()) => {}
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "failed to submit automatic rollbacks; will try again");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn roll_back_failed(backends: &Backends) -> Result<(), StoreError> {
    let store = backends.store.as_ref();
    for due in store.armed_auto_rollbacks().await? {
        let AutoRollback {
            tenant,
            app,
            deployment,
            to,
        } = due;
        if let Some(version) = to {
            let key = idempotency_key(deployment);
            let idempotency = Idempotency {
                request_hash: key.clone(),
                key,
            };
            match rollback(
                store,
                tenant,
                &app,
                version,
                Some(idempotency),
                Some(deployment),
            )
            .await
            {
                Ok(submitted) => tracing::info!(
                    failed = %deployment,
                    rollback = %submitted.id,
                    to = version,
                    "deployment failed: rolling back automatically"
                ),
                Err(SubmitError::Store(err)) => return Err(err),
                Err(err) => {
                    tracing::error!(failed = %deployment, error = %err, "cannot roll back automatically");
                }
            }
        } else {
            tracing::info!(failed = %deployment, "deployment failed: no earlier release to roll back to");
        }
        store.disarm_auto_rollback(deployment).await?;
    }
    Ok(())
}
