//! The `Broker` port: durable work queues with confirmed publishes and manual
//! acknowledgement, plus a best-effort fan-out of progress events.
//!
//! Delivery is at-least-once: a delivery that is neither acknowledged nor settled
//! otherwise (its worker died, its channel closed) comes back. Consumers make that
//! harmless by being idempotent.

mod amqp;
mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::events::Event;

pub use amqp::{AmqpBroker, AmqpOptions, Inspected};
pub use memory::MemoryBroker;

/// The queue tasks are dispatched on.
pub const TASKS_QUEUE: &str = "drover.tasks";
/// Where messages go that cannot be processed: undecodable, or redelivered past the limit.
pub const DEAD_LETTER_QUEUE: &str = "drover.dead-letter";
/// How many times a message may be delivered and returned before it is dead-lettered.
pub const DELIVERY_LIMIT: u32 = 20;
/// The header that says why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-drover-reason";

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("lost the broker connection: {0}")]
    Connection(String),
    #[error("failed to publish to `{queue}`: {message}")]
    Publish { queue: String, message: String },
    #[error("failed to settle delivery of message `{message_id}`: {message}")]
    Settle { message_id: String, message: String },
    #[error("the broker is closed")]
    Closed,
    /// Reconnecting failed for good: the process should exit for its supervisor to
    /// restart it.
    #[error("{0}")]
    GaveUp(String),
}

impl BrokerError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, BrokerError::Closed | BrokerError::GaveUp(_))
    }
}

/// A message on a queue. `id` identifies it across redeliveries and republishes,
/// so that consumers can recognise duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(id: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            id: id.into(),
            headers: BTreeMap::new(),
            body,
        }
    }
}

/// A work-queue broker.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug {
    /// Publishes `message` to `queue`; returns once the broker has confirmed it.
    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError>;

    /// Consumes `queue` with at most `prefetch` unsettled deliveries at a time.
    async fn consume(&self, queue: &str, prefetch: usize)
    -> Result<Box<dyn Consumer>, BrokerError>;

    /// Sends a progress event to every current subscriber (not confirmed; may be lost).
    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError>;

    /// Receives the progress events published from now on.
    async fn subscribe_events(&self) -> Result<Box<dyn EventStream>, BrokerError>;

    /// Subscribes to the [`Event::CancelRequested`] events only, from now on (a
    /// worker stops the steps they name).
    async fn subscribe_cancellations(&self) -> Result<Box<dyn EventStream>, BrokerError>;

    /// Whether the broker answers (for readiness checks).
    async fn check_connectivity(&self) -> Result<(), BrokerError>;
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Consumer: Send + fmt::Debug {
    /// The next delivery; `None` once the broker closed the consumer.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;
}

/// A stream of progress events.
#[async_trait]
pub trait EventStream: Send + fmt::Debug {
    /// The next event; `None` once the stream is closed.
    async fn next(&mut self) -> Option<Event>;
}

/// Settles one delivery with the broker that made it.
#[async_trait]
pub trait Acker: Send + Sync + fmt::Debug {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Returns the message to its queue now; counts towards the delivery limit.
    async fn requeue(self: Box<Self>) -> Result<(), BrokerError>;
    /// Returns the message to its queue after `delay`; does not count towards the limit.
    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), BrokerError>;
    /// Moves the message to the dead-letter queue with `reason`.
    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), BrokerError>;
}

/// One delivery of a message. Dropping it unsettled returns the message to its queue.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    /// How many times this message has been delivered, this one included; a delivery
    /// returned with [`Delivery::retry_after`] does not count, so that waiting for a
    /// lock never reaches the delivery limit.
    pub delivery_count: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(message: Message, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Self {
            message,
            delivery_count,
            acker,
        }
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        self.acker.ack().await
    }

    pub async fn requeue(self) -> Result<(), BrokerError> {
        self.acker.requeue().await
    }

    pub async fn retry_after(self, delay: Duration) -> Result<(), BrokerError> {
        self.acker.retry_after(delay).await
    }

    pub async fn dead_letter(self, reason: &str) -> Result<(), BrokerError> {
        self.acker.dead_letter(reason).await
    }
}
