//! The in-process broker of the embedded default: the same semantics as RabbitMQ
//! (prefetch, manual settlement, redelivery of unsettled messages, delayed retry,
//! a delivery limit with a dead-letter queue), in memory. Messages do not survive
//! the process; the embedded scheduler re-dispatches from the store at start-up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};

use super::{
    Acker, Broker, BrokerError, Consumer, DEAD_LETTER_QUEUE, DELIVERY_LIMIT, Delivery, EventStream,
    Message, REASON_HEADER,
};
use crate::events::{CANCEL_REQUESTED, Event};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// The in-process broker.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    events: broadcast::Sender<Event>,
    delivery_limit: u32,
}

#[derive(Debug, Default)]
struct Queue {
    messages: Mutex<VecDeque<Queued>>,
    notify: Notify,
}

#[derive(Debug)]
struct Queued {
    message: Message,
    /// Deliveries so far.
    delivery_count: u32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::with_delivery_limit(DELIVERY_LIMIT)
    }

    /// A broker that dead-letters a message after `delivery_limit` deliveries.
    pub fn with_delivery_limit(delivery_limit: u32) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
                events,
                delivery_limit,
            }),
        }
    }

    /// How many messages wait in `queue` (not counting unsettled deliveries).
    pub fn queue_len(&self, queue: &str) -> usize {
        lock(&self.inner.queue(queue).messages).len()
    }
}

impl Inner {
    fn queue(&self, name: &str) -> Arc<Queue> {
        lock(&self.queues)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn push(&self, queue: &str, queued: Queued) {
        let queue = self.queue(queue);
        lock(&queue.messages).push_back(queued);
        queue.notify.notify_one();
    }

    fn dead_letter(&self, mut message: Message, reason: &str) {
        message
            .headers
            .insert(REASON_HEADER.to_owned(), reason.to_owned());
        self.push(
            DEAD_LETTER_QUEUE,
            Queued {
                message,
                delivery_count: 0,
            },
        );
    }

    /// Puts a message that was delivered `delivery_count` times back, or dead-letters
    /// it once the limit is reached.
    fn redeliver(&self, queue: &str, message: Message, delivery_count: u32) {
        if delivery_count >= self.delivery_limit {
            let reason = format!("delivery limit of {} reached", self.delivery_limit);
            self.dead_letter(message, &reason);
        } else {
            self.push(
                queue,
                Queued {
                    message,
                    delivery_count,
                },
            );
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        self.inner.push(
            queue,
            Queued {
                message,
                delivery_count: 0,
            },
        );
        Ok(())
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            name: queue.to_owned(),
            queue: self.inner.queue(queue),
            prefetch: Arc::new(Semaphore::new(prefetch.max(1))),
        }))
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        // No subscriber is not an error: events are best effort.
        let _ = self.inner.events.send(event.clone());
        Ok(())
    }

    async fn subscribe_events(&self) -> Result<Box<dyn EventStream>, BrokerError> {
        Ok(Box::new(MemoryEvents {
            receiver: self.inner.events.subscribe(),
            only: None,
        }))
    }

    async fn subscribe_cancellations(&self) -> Result<Box<dyn EventStream>, BrokerError> {
        Ok(Box::new(MemoryEvents {
            receiver: self.inner.events.subscribe(),
            only: Some(CANCEL_REQUESTED),
        }))
    }

    async fn check_connectivity(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryConsumer {
    inner: Arc<Inner>,
    name: String,
    queue: Arc<Queue>,
    prefetch: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let permit = self.prefetch.clone().acquire_owned().await.ok()?;
        loop {
            let popped = lock(&self.queue.messages).pop_front();
            if let Some(Queued {
                message,
                delivery_count,
            }) = popped
            {
                let delivery_count = delivery_count + 1;
                let acker = MemoryAcker {
                    inner: self.inner.clone(),
                    queue: self.name.clone(),
                    message: Some(message.clone()),
                    delivery_count,
                    _permit: permit,
                };
                return Some(Ok(Delivery::new(message, delivery_count, Box::new(acker))));
            }
            self.queue.notify.notified().await;
        }
    }
}

/// Settles a memory delivery; holds a prefetch permit until then.
#[derive(Debug)]
struct MemoryAcker {
    inner: Arc<Inner>,
    queue: String,
    /// `None` once settled.
    message: Option<Message>,
    delivery_count: u32,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.message = None;
        Ok(())
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        if let Some(message) = self.message.take() {
            self.inner
                .redeliver(&self.queue, message, self.delivery_count);
        }
        Ok(())
    }

    async fn retry_after(mut self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        if let Some(message) = self.message.take() {
            let inner = self.inner.clone();
            let queue = self.queue.clone();
            // A retry for lack of a lock is not a failed delivery: the count stays.
            let delivery_count = self.delivery_count - 1;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.push(
                    &queue,
                    Queued {
                        message,
                        delivery_count,
                    },
                );
            });
        }
        Ok(())
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<(), BrokerError> {
        if let Some(message) = self.message.take() {
            self.inner.dead_letter(message, reason);
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    /// An unsettled delivery comes back, as when a RabbitMQ channel closes.
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.inner
                .redeliver(&self.queue, message, self.delivery_count);
        }
    }
}

#[derive(Debug)]
struct MemoryEvents {
    receiver: broadcast::Receiver<Event>,
    /// The one event name this subscriber hears, if not all.
    only: Option<&'static str>,
}

#[async_trait]
impl EventStream for MemoryEvents {
    async fn next(&mut self) -> Option<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) if self.only.is_none_or(|name| name == event.name()) => {
                    return Some(event);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                    tracing::warn!(
                        n_missed,
                        "event subscriber fell behind; events were dropped"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
