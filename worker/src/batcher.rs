//! Goes to the store together with what arrives together: the claims of the
//! deliveries that arrive while others are being claimed, and the results that end
//! while others are being recorded, each go in one transaction instead of one
//! transaction each.
//!
//! An item waits for nothing but a free call: with fewer than [`IN_FLIGHT`] calls
//! under way it goes at once, alone. When a batch fails, its items go one by one,
//! so that one item's error is not every item's.

use std::sync::Arc;

use async_trait::async_trait;
use shared::store::{Claim, ClaimOutcome, RecordOutcome, Store, StoreError, TaskResult};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Calls under way at once, per kind of call.
const IN_FLIGHT: usize = 2;
/// The most items one transaction takes.
const MAX_BATCH: usize = 64;

/// A store call that takes many items at once.
#[async_trait]
pub(crate) trait Batch: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Outcome: Send + 'static;

    /// All of `items`, each outcome in their order; an error is every item's.
    async fn together(
        store: &dyn Store,
        items: &[Self::Item],
    ) -> Result<Vec<Result<Self::Outcome, StoreError>>, StoreError>;

    async fn alone(store: &dyn Store, item: &Self::Item) -> Result<Self::Outcome, StoreError>;
}

/// Records results ([`Store::record_results`]).
#[derive(Debug)]
pub(crate) struct Record;

#[async_trait]
impl Batch for Record {
    type Item = TaskResult;
    type Outcome = RecordOutcome;

    async fn together(
        store: &dyn Store,
        results: &[TaskResult],
    ) -> Result<Vec<Result<RecordOutcome, StoreError>>, StoreError> {
        Ok(store
            .record_results(results)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }

    async fn alone(store: &dyn Store, result: &TaskResult) -> Result<RecordOutcome, StoreError> {
        store.record_result(result).await
    }
}

/// Claims tasks ([`shared::store::TaskStore::claim_tasks`]).
#[derive(Debug)]
pub(crate) struct ClaimTasks;

#[async_trait]
impl Batch for ClaimTasks {
    type Item = Claim;
    type Outcome = ClaimOutcome;

    async fn together(
        store: &dyn Store,
        claims: &[Claim],
    ) -> Result<Vec<Result<ClaimOutcome, StoreError>>, StoreError> {
        Ok(store.claim_tasks(claims).await)
    }

    async fn alone(store: &dyn Store, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        store.claim_task(claim).await
    }
}

type Answer<B> = oneshot::Sender<Result<<B as Batch>::Outcome, StoreError>>;
type Queued<B> = (<B as Batch>::Item, Answer<B>);

/// Hands items to the loop ([`Batching::run`]).
pub(crate) struct Batcher<B: Batch> {
    sender: mpsc::UnboundedSender<Queued<B>>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<B: Batch> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// The loop's end of a [`Batcher`].
pub(crate) struct Batching<B: Batch> {
    store: Arc<dyn Store>,
    receiver: mpsc::UnboundedReceiver<Queued<B>>,
}

impl<B: Batch> Batcher<B> {
    pub(crate) fn new(store: Arc<dyn Store>) -> (Self, Batching<B>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, Batching { store, receiver })
    }

    /// `item`'s outcome, perhaps decided together with others.
    pub(crate) async fn call(&self, item: B::Item) -> Result<B::Outcome, StoreError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Database("the worker's store batching has stopped".into());
        self.sender.send((item, answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl<B: Batch> Batching<B> {
    /// Takes items until every [`Batcher`] is dropped and the last call has ended.
    pub(crate) async fn run(mut self) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Ok(permit) = in_flight.clone().acquire_owned().await {
            let Some(first) = self.receiver.recv().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(queued) => batch.push(queued),
                    Err(_) => break,
                }
            }
            let store = self.store.clone();
            tokio::spawn(async move {
                call::<B>(store.as_ref(), batch).await;
                drop(permit);
            });
        }
        // Wait for the calls under way.
        let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
    }
}

async fn call<B: Batch>(store: &dyn Store, batch: Vec<Queued<B>>) {
    let (items, answers): (Vec<B::Item>, Vec<Answer<B>>) = batch.into_iter().unzip();
    if items.len() > 1 {
        match B::together(store, &items).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
                return;
            }
            Err(err) => tracing::debug!(
                error = %err,
                n_items = items.len(),
                "failed to go to the store together; going one by one"
            ),
        }
    }
    for (item, answer) in items.iter().zip(answers) {
        let _ = answer.send(B::alone(store, item).await);
    }
}
