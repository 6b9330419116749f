//! The outbox relay: publishes the dispatches that transactions wrote to the
//! outbox, a batch at a time with its confirms awaited together, then deletes them.
//!
//! Every role process runs one, woken at once by its own store after each commit
//! that wrote outbox rows, so a DAG level costs one broker hop; relays claim rows
//! (PostgreSQL re-checks each row a concurrent claim took), so several relays do
//! not publish the same row. The claim is fair across tenants: each tenant's oldest
//! rows first, the tenants in turn, and none of a tenant that has its
//! `tenant-limit` of tasks handed out already: those wait in the outbox, not in
//! the broker ahead of other tenants' work. A relay that dies between publish and delete leaves its rows to be claimed
//! again when its claim expires: a message may be published twice, never lost, and
//! consumers are idempotent.

use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backends::Backends;
use crate::broker::BrokerError;
use crate::store::StoreError;

/// The most outbox rows published per round.
const BATCH: u64 = 256;
/// How long a relay's claim on rows lasts before another relay may take them.
const CLAIM: Duration = Duration::from_secs(15);
/// How long a handed-out task may wait for a worker's claim before the reaper takes
/// its dispatch for lost and dispatches it again: long enough that a dispatch only
/// waiting in a busy queue rarely gets a duplicate.
const REDISPATCH_AFTER: Duration = Duration::from_secs(300);

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the outbox relay failed: {0}")]
    Store(#[from] StoreError),
    #[error("the outbox relay failed: {0}")]
    Broker(#[from] BrokerError),
}

impl RelayError {
    fn is_transient(&self) -> bool {
        match self {
            RelayError::Store(err) => err.is_transient(),
            RelayError::Broker(err) => err.is_transient(),
        }
    }
}

/// Relays until `shutdown` is cancelled: whenever the store signals a commit, and
/// every `poll_every` anyway (for rows other processes left, retries whose backoff
/// has passed, or tenants whose tasks ended elsewhere). Each tenant has at most
/// `tenant_limit` tasks handed out at once (see [`crate::store::OutboxStore::claim_outbox`]).
/// Transient failures are logged and retried at the next round.
pub async fn relay(
    backends: &Backends,
    poll_every: Duration,
    tenant_limit: u32,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let signal = backends.store.outbox_signal();
    loop {
        let n_published = match relay_once(backends, tenant_limit).await {
            Ok(n_published) => n_published,
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "outbox relay round failed; will try again");
                0
            }
            Err(err) => return Err(err),
        };
        if n_published as u64 == BATCH {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = signal.notified() => {}
            () = tokio::time::sleep(poll_every) => {}
        }
    }
}

/// One round: claim, publish, delete. Returns how many messages were published.
async fn relay_once(backends: &Backends, tenant_limit: u32) -> Result<usize, RelayError> {
    let batch = backends
        .store
        .claim_outbox(BATCH, CLAIM, tenant_limit, REDISPATCH_AFTER)
        .await?;
    if batch.is_empty() {
        return Ok(0);
    }
    // Published together: the confirms are awaited at once, not one by one.
    let outcomes = join_all(batch.iter().map(|message| {
        let dispatch = &message.dispatch;
        let span = tracing::info_span!(
            "dispatch",
            tenant = %dispatch.tenant,
            app = %dispatch.app,
            deployment = %dispatch.deployment,
            task = %dispatch.task,
            attempt = dispatch.attempt,
        );
        crate::trace::join(&span, dispatch.deployment);
        backends
            .broker
            .publish(&message.queue, dispatch.to_message())
            .instrument(span)
    }))
    .await;
    let mut published = Vec::with_capacity(batch.len());
    let mut failure = None;
    for (message, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Ok(()) => published.push(message.id),
            Err(err) => {
                failure.get_or_insert(err);
            }
        }
    }
    // What was confirmed is deleted even when another publish failed.
    backends.store.delete_outbox(&published).await?;
    crate::metrics::published(published.len());
    tracing::debug!(n_messages = published.len(), "relayed outbox messages");
    match failure {
        Some(err) => Err(err.into()),
        None => Ok(published.len()),
    }
}
