//! Records a worker's results: those that end while others are being recorded go
//! to the store together, in one transaction, instead of one transaction each.
//!
//! A result waits for nothing but a free recording: with fewer than
//! [`IN_FLIGHT`] recordings under way it is recorded at once, alone. When a batch
//! fails, its results are recorded one by one, so that one result's error is not
//! every result's.

use std::sync::Arc;

use shared::store::{RecordOutcome, Store, StoreError, TaskResult};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Recordings under way at once.
const IN_FLIGHT: usize = 2;
/// The most results one transaction records.
const MAX_BATCH: usize = 64;

type Answer = oneshot::Sender<Result<RecordOutcome, StoreError>>;

/// Hands results to the recording loop ([`Recorder::run`]).
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    sender: mpsc::UnboundedSender<(TaskResult, Answer)>,
}

/// The loop's end of a [`Recorder`].
#[derive(Debug)]
pub(crate) struct Recording {
    store: Arc<dyn Store>,
    receiver: mpsc::UnboundedReceiver<(TaskResult, Answer)>,
}

impl Recorder {
    pub(crate) fn new(store: Arc<dyn Store>) -> (Self, Recording) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, Recording { store, receiver })
    }

    /// Records `result`, perhaps together with others.
    pub(crate) async fn record(&self, result: TaskResult) -> Result<RecordOutcome, StoreError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Database("the worker's recorder has stopped".into());
        self.sender.send((result, answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Recording {
    /// Records results until every [`Recorder`] is dropped and the last recording
    /// has ended.
    pub(crate) async fn run(mut self) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Ok(permit) = in_flight.clone().acquire_owned().await {
            let Some(first) = self.receiver.recv().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            let store = self.store.clone();
            tokio::spawn(async move {
                record(store.as_ref(), batch).await;
                drop(permit);
            });
        }
        // Wait for the recordings under way.
        let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
    }
}

async fn record(store: &dyn Store, batch: Vec<(TaskResult, Answer)>) {
    let (results, answers): (Vec<TaskResult>, Vec<Answer>) = batch.into_iter().unzip();
    if results.len() > 1 {
        match store.record_results(&results).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
                return;
            }
            Err(err) => tracing::debug!(
                error = %err,
                n_results = results.len(),
                "failed to record results together; recording them one by one"
            ),
        }
    }
    for (result, answer) in results.iter().zip(answers) {
        let _ = answer.send(store.record_result(result).await);
    }
}
