//! Keeps a worker's running tasks alive: every period, one renewal of all their
//! component locks and one extension of all their leases, however many tasks run.
//!
//! A task whose deployment was cancelled is asked to stop (SIGTERM, then SIGKILL
//! after the grace period) while its lease is still kept: at once when the
//! cancellation's event arrives ([`Keeper::hear`]), else when the next extension
//! of its lease reports it. A task whose lease cannot
//! be extended has been handed to someone else: its step is killed, since its
//! result would be refused anyway. A task whose lock was lost goes on: the fence
//! still guards its result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shared::backends::Backends;
use shared::broker::EventStream;
use shared::events::Event;
use shared::ids::{DeploymentId, TenantId};
use shared::locks::LockToken;
use shared::store::{Lease, LeasedTask};
use tokio_util::sync::CancellationToken;

use crate::driver::StepStop;

/// The running tasks of one worker, kept alive together.
#[derive(Debug)]
pub(crate) struct Keeper {
    backends: Backends,
    lock_ttl: Duration,
    lease: Duration,
    kept: Mutex<HashMap<u64, Kept>>,
    next_id: AtomicU64,
}

/// One running task.
#[derive(Debug)]
struct Kept {
    tenant: TenantId,
    lock_key: String,
    token: LockToken,
    task: LeasedTask,
    step: StepStop,
    /// Until a renewal finds the lock lost.
    lock_held: bool,
    /// The task's span, for what is logged about it.
    span: tracing::Span,
}

/// Keeps a task alive until dropped.
#[derive(Debug)]
pub(crate) struct Keeping {
    keeper: Arc<Keeper>,
    id: u64,
}

impl Drop for Keeping {
    fn drop(&mut self) {
        self.keeper.kept().remove(&self.id);
    }
}

impl Kept {
    /// Asks the step of a task whose deployment was cancelled to stop, once.
    fn stop_cancelled(&self) {
        if !self.step.terminate.is_cancelled() {
            self.span.in_scope(|| {
                tracing::info!("the deployment was cancelled; stopping the step");
            });
            self.step.terminate.cancel();
        }
    }
}

impl Keeper {
    pub(crate) fn new(backends: Backends, lock_ttl: Duration, lease: Duration) -> Self {
        Self {
            backends,
            lock_ttl,
            lease,
            kept: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Often enough to keep locks and leases alive, and to learn of a cancellation
    /// within a second.
    pub(crate) fn period(&self) -> Duration {
        (self.lock_ttl.min(self.lease) / 3)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10))
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<u64, Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `task`'s lock and lease alive, and tells its `step` when to stop, until
    /// the answer is dropped. The current span is the task's.
    pub(crate) fn keep(
        self: &Arc<Self>,
        tenant: TenantId,
        lock_key: &str,
        token: &LockToken,
        task: LeasedTask,
        step: &StepStop,
    ) -> Keeping {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.kept().insert(
            id,
            Kept {
                tenant,
                lock_key: lock_key.to_owned(),
                token: token.clone(),
                task,
                step: step.clone(),
                lock_held: true,
                span: tracing::Span::current(),
            },
        );
        Keeping {
            keeper: self.clone(),
            id,
        }
    }

    /// Stops the steps of `deployment` of `tenant` this worker runs: its
    /// cancellation was asked ([`Event::CancelRequested`]).
    pub(crate) fn cancelled(&self, tenant: TenantId, deployment: DeploymentId) {
        for kept in self.kept().values() {
            if kept.task.deployment == deployment && kept.tenant == tenant {
                kept.stop_cancelled();
            }
        }
    }

    /// Stops the steps of the deployments whose cancellation `events` announce,
    /// until `stop` or the end of `events`.
    pub(crate) async fn hear(&self, mut events: Box<dyn EventStream>, stop: &CancellationToken) {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Event::CancelRequested { tenant, deployment }) => {
                    self.cancelled(tenant, deployment);
                }
                Some(_) => {}
                None => {
                    tracing::warn!(
                        "the subscription to cancellations ended; they are learned from lease extensions"
                    );
                    return;
                }
            }
        }
    }

    /// Keeps the tasks alive every [`Keeper::period`] until `stop`.
    pub(crate) async fn run(&self, stop: &CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.period()) => {}
            }
            self.keep_alive().await;
        }
    }

    /// One round: the locks first, then the leases. A task that ended meanwhile is
    /// no longer kept, and what the round learned about it is dropped.
    async fn keep_alive(&self) {
        let (locks, leases): (Vec<_>, Vec<_>) = {
            let kept = self.kept();
            let locks = kept
                .iter()
                .filter(|(_, kept)| kept.lock_held)
                .map(|(id, kept)| (*id, kept.lock_key.clone(), kept.token.clone()))
                .collect();
            let leases = kept
                .iter()
                .map(|(id, kept)| (*id, kept.task.clone()))
                .collect();
            (locks, leases)
        };
        if leases.is_empty() {
            return;
        }
        if !locks.is_empty() {
            let held: Vec<(&str, &LockToken)> = locks
                .iter()
                .map(|(_, key, token)| (key.as_str(), token))
                .collect();
            match self.backends.locks.renew_all(&held, self.lock_ttl).await {
                Ok(renewed) => {
                    let mut kept = self.kept();
                    for ((id, _, _), renewed) in locks.iter().zip(renewed) {
                        if let (Some(kept), false) = (kept.get_mut(id), renewed) {
                            kept.lock_held = false;
                            kept.span.in_scope(|| {
                                tracing::warn!(
                                    "lost the component lock; the fence still guards the result"
                                );
                            });
                        }
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    n_locks = locks.len(),
                    "failed to renew the component locks"
                ),
            }
        }
        let tasks: Vec<LeasedTask> = leases.iter().map(|(_, task)| task.clone()).collect();
        match self.backends.store.extend_leases(&tasks, self.lease).await {
            Ok(answers) => {
                let mut kept = self.kept();
                for ((id, _), lease) in leases.iter().zip(answers) {
                    let Some(task) = kept.get(id) else {
                        continue;
                    };
                    match lease {
                        Lease::Extended => {}
                        Lease::CancelRequested => task.stop_cancelled(),
                        Lease::Lost => {
                            task.span.in_scope(|| {
                                tracing::warn!(
                                    "the task was handed to another worker; killing the step"
                                );
                            });
                            task.step.kill.cancel();
                            kept.remove(id);
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(
                error = %err,
                n_tasks = tasks.len(),
                "failed to extend the tasks' leases"
            ),
        }
    }
}
