//! Wakes the followers of deployments (`GET /v1/deployments/{id}/events`) when a
//! progress event about theirs is heard, so that each reads the store when its
//! deployment changed rather than on a short timer. Events are best effort, so a
//! follower that hears nothing still reads the store after [`FALLBACK`].

use std::time::Duration;

use shared::broker::{Broker, EventStream};
use shared::ids::DeploymentId;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;

/// How long a follower waits for an event about its deployment before it reads
/// the store anyway.
const FALLBACK: Duration = Duration::from_secs(1);

/// Events heard and not yet taken by every follower; a follower that falls
/// further behind reads the store at once.
const BACKLOG: usize = 1024;

/// The deployments that progress events were heard about, for their followers.
#[derive(Clone, Debug)]
pub struct Followers {
    heard: broadcast::Sender<DeploymentId>,
    fallback: Duration,
}

impl Default for Followers {
    fn default() -> Self {
        Self::new(FALLBACK)
    }
}

impl Followers {
    /// Followers that read the store at least every `fallback`.
    pub fn new(fallback: Duration) -> Self {
        let (heard, _) = broadcast::channel(BACKLOG);
        Self { heard, fallback }
    }

    /// Subscribes to the broker's progress events and hears them until
    /// `shutdown` (see [`Followers::listen`]); without them, followers read the
    /// store every `fallback`.
    pub async fn listen_to(&self, broker: &dyn Broker, shutdown: &CancellationToken) {
        match broker.subscribe_events().await {
            Ok(events) => self.listen(events, shutdown).await,
            Err(err) => {
                tracing::warn!(error = %err, fallback = ?self.fallback, "failed to subscribe to progress events; followers read the store on a timer");
            }
        }
    }

    /// Hears `events` until `shutdown` (or their stream ends), waking the
    /// followers of each event's deployment.
    pub async fn listen(&self, mut events: Box<dyn EventStream>, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => match event {
                    // No follower listening is no error.
                    Some(event) => _ = self.heard.send(event.deployment()),
                    None => {
                        tracing::warn!(fallback = ?self.fallback, "the progress events ended; followers read the store on a timer");
                        return;
                    }
                },
            }
        }
    }

    /// A follower's wait: taken before it first reads the store, so that what
    /// changes after that read wakes it.
    pub(crate) fn wait(&self) -> Wait {
        Wait {
            heard: self.heard.subscribe(),
            fallback: self.fallback,
        }
    }
}

/// One follower's view of what was heard.
#[derive(Debug)]
pub(crate) struct Wait {
    heard: broadcast::Receiver<DeploymentId>,
    fallback: Duration,
}

impl Wait {
    /// Returns once deployment `id` may have changed: an event about it was heard
    /// (or events were missed), or the fallback passed.
    pub(crate) async fn changed(&mut self, id: DeploymentId) {
        let fallback = tokio::time::sleep(self.fallback);
        tokio::pin!(fallback);
        loop {
            tokio::select! {
                () = &mut fallback => return,
                heard = self.heard.recv() => match heard {
                    Ok(heard) if heard != id => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return fallback.await,
                },
            }
        }
        // Events come in bursts (a task's end, the next one's start): what came
        // with this one is read with it.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = self.heard.try_recv() {}
    }
}
