//! The `Broker` port on RabbitMQ (lapin): durable quorum work queues with a delivery
//! limit and a dead-letter queue, publisher confirms, manual acknowledgement,
//! delayed retry through per-delay queues, and a topic exchange for progress events.
//!
//! # Topology
//!
//! Every name below is prefixed with [`AmqpOptions::prefix`].
//!
//! - Work queue `<queue>` (e.g. `drover.tasks`), declared on first publish or consume:
//!   durable quorum queue with `x-delivery-limit = delivery_limit - 1` (RabbitMQ
//!   counts *returns*, the port counts *deliveries*: a message returned
//!   `delivery_limit` times has been delivered that often), `x-dead-letter-exchange =
//!   drover.dead-letter` with the `at-least-once` dead-letter strategy (which needs
//!   `x-overflow = reject-publish`), and `x-expires` when
//!   [`AmqpOptions::queue_expiry`] is set.
//! - Fanout exchange `drover.dead-letter` bound to the quorum queue
//!   `drover.dead-letter` (no dead-letter exchange of its own; an explicit, huge
//!   `x-delivery-limit`, since RabbitMQ 4 would otherwise default to 20 and drop).
//! - Headers exchange `drover.delay`; queue `drover.delay.<ms>` per delay, bound on
//!   the header `drover-delay-ms = <ms>`, with `x-message-ttl = <ms>` and
//!   `x-dead-letter-exchange = ""`: a copy published there with the work queue's
//!   name as routing key expires back into the work queue. Delay queues expire
//!   (`x-expires`) once unused for twice their delay plus a minute (or plus
//!   [`AmqpOptions::queue_expiry`]); declaring one on every retry renews that lease.
//! - Topic exchange `drover.events`, routing key `<deployment id>.<event name>`;
//!   each subscription is an exclusive, auto-delete server-named queue bound with
//!   `#` (every event) or `*.cancel_requested` (a worker's cancellations), capped
//!   at 4096 messages (the oldest are dropped for a subscriber that falls behind).
//!
//! Exchanges are durable. With [`AmqpOptions::queue_expiry`] (tests) they are
//! also auto-delete, and each is bound to the dead-letter queue (the event and
//! delay exchanges by a binding that matches nothing), so that they are deleted
//! with it once it expires and a test leaves nothing behind.
//!
//! # Counting deliveries
//!
//! `Delivery::delivery_count` is `x-drover-deliveries` (deliveries before a
//! `retry_after` copy was made, since a copy starts a fresh server count) plus
//! `x-delivery-count` (the quorum queue's returns) plus one. `requeue` of a delivery
//! at the limit dead-letters it itself with a reason; a delivery whose channel died
//! at the limit is dead-lettered by RabbitMQ, and the reason is then read from
//! `x-death` when the dead-letter queue is consumed.
//!
//! # Connection loss
//!
//! One connection per broker. When an operation finds it lost, a background task
//! re-establishes it with exponential backoff and jitter for up to
//! [`AmqpOptions::reconnect_timeout`]; operations wait for it. Consumers re-create
//! their channel and subscription transparently; deliveries made on the lost
//! channel cannot be settled any more (settling returns an error) and come back
//! from RabbitMQ. Once reconnection gives up, every operation fails with
//! [`BrokerError::GaveUp`] (not transient) and consumers end, so that the process
//! exits and its supervisor restarts it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, error, info, warn};

use super::{
    Acker, Broker, BrokerError, Consumer, DEAD_LETTER_QUEUE, DELIVERY_LIMIT, Delivery, EventStream,
    Message, REASON_HEADER, TASKS_QUEUE,
};
use crate::config::redact_url;
use crate::events::Event;

/// The exchange that dead-lettered messages go through (to [`DEAD_LETTER_QUEUE`]).
const DEAD_LETTER_EXCHANGE: &str = "drover.dead-letter";
/// The topic exchange progress events fan out on.
const EVENTS_EXCHANGE: &str = "drover.events";
/// The binding of a subscription to the cancellations only.
const CANCELLATIONS: &str = "*.cancel_requested";
/// The headers exchange that routes `retry_after` copies to their delay queue.
const DELAY_EXCHANGE: &str = "drover.delay";
/// Delay queues are named this followed by their delay in milliseconds.
const DELAY_QUEUE_PREFIX: &str = "drover.delay.";

/// On a `retry_after` copy: how many deliveries the message had before the copy.
const DELIVERIES_HEADER: &str = "x-drover-deliveries";
/// On a `retry_after` copy: its delay in milliseconds, which picks its delay queue.
/// Not `x-…`: a headers exchange ignores binding arguments that start with `x-`.
const DELAY_HEADER: &str = "drover-delay-ms";
/// With [`AmqpOptions::queue_expiry`], what the event and delay exchanges are
/// anchored to the dead-letter queue with: a routing key and a header that no
/// message carries.
const ANCHOR: &str = "drover-anchor";
/// Set by quorum queues: how many times the message was returned to the queue.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// Set by RabbitMQ on dead-lettering: why and from where, most recent first.
const DEATH_HEADER: &str = "x-death";

/// How many events a subscriber's queue holds before the oldest are dropped.
const EVENT_BUFFER: i64 = 4096;
/// How many events are on their way to one subscriber at a time.
const EVENT_PREFETCH: u16 = 256;
/// The dead-letter queue keeps what it holds however often it is inspected.
const DEAD_LETTER_QUEUE_DELIVERY_LIMIT: i64 = i32::MAX as i64;
/// How long one attempt to open a connection (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The heartbeat asked for when the URL does not say, so that a silently dead
/// connection is noticed within seconds rather than minutes.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// How long `check_connectivity` waits for a connection being re-established.
const CONNECTIVITY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a publish is attempted (a lost channel, an unknown confirm)
/// before it fails; waiting for a lost connection is not counted.
const PUBLISH_ATTEMPTS: usize = 6;
/// How long a dropped consumer takes to hand back the messages buffered for it.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How an [`AmqpBroker`] names, limits and recovers things.
#[derive(Clone, Debug)]
pub struct AmqpOptions {
    /// Prepended to the name of every queue and exchange, so that several drover
    /// installations (or tests) can share one RabbitMQ virtual host.
    pub prefix: String,
    /// How many times a message is delivered before it is dead-lettered (at least 1).
    pub delivery_limit: u32,
    /// When set, queues declared here are deleted by RabbitMQ after being unused
    /// (no consumer, no declaration) for this long (`x-expires`). Meant for tests.
    pub queue_expiry: Option<Duration>,
    /// How long to keep trying to re-establish a lost connection before giving up.
    pub reconnect_timeout: Duration,
    /// How long a publish waits for RabbitMQ's confirm before the outcome is deemed
    /// unknown and the message is published again, with the same message id.
    pub confirm_timeout: Duration,
    /// The connection's name as RabbitMQ shows it (`connection_name` in
    /// `rabbitmqctl list_connections client_properties`).
    pub connection_name: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            delivery_limit: DELIVERY_LIMIT,
            queue_expiry: None,
            reconnect_timeout: Duration::from_secs(120),
            confirm_timeout: Duration::from_secs(10),
            connection_name: "drover".to_owned(),
        }
    }
}

/// The broker on RabbitMQ. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// What RabbitMQ holds of one of drover's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Its full (prefixed) name.
    pub name: String,
    pub declared: bool,
    /// Its messages ready for delivery, and its consumers.
    pub messages: u32,
    pub consumers: u32,
}

impl AmqpBroker {
    /// Looks at the tasks' and the dead letters' queues by passive declarations:
    /// a queue not declared yet says so, and is not created. (The shared
    /// exchanges and the dead-letter queue are declared on connecting, as by
    /// every role.)
    pub async fn inspect(&self) -> Result<Vec<Inspected>, BrokerError> {
        let link = self.inner.link().await?;
        let mut queues = Vec::new();
        for queue in [TASKS_QUEUE, DEAD_LETTER_QUEUE] {
            let queue = self.inner.queue_name(queue);
            // A failed passive declaration closes its channel: one channel each.
            let channel = link
                .connection
                .create_channel()
                .await
                .map_err(failed_to_open)?;
            let declared = channel
                .queue_declare(
                    short(&queue.full).map_err(BrokerError::Connection)?,
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .ok();
            let _ = channel.close(200, "inspected".into()).await;
            queues.push(Inspected {
                name: queue.full,
                declared: declared.is_some(),
                messages: declared.as_ref().map_or(0, |queue| queue.message_count()),
                consumers: declared.as_ref().map_or(0, |queue| queue.consumer_count()),
            });
        }
        Ok(queues)
    }

    /// Subscribes to the events whose routing keys match `binding`.
    async fn subscribe_bound(
        &self,
        binding: &'static str,
    ) -> Result<Box<dyn EventStream>, BrokerError> {
        let link = self.inner.link().await?;
        let subscription = self
            .inner
            .subscribe_events_once(&link, binding)
            .await
            .map_err(BrokerError::Connection)?;
        Ok(Box::new(AmqpEvents {
            inner: self.inner.clone(),
            binding,
            subscription: Some(subscription),
        }))
    }

    /// Connects to the RabbitMQ at `url` (`amqp://user:password@host:port/vhost`,
    /// the default virtual host being `%2f`) and declares the shared topology (the
    /// dead-letter exchange and queue, the event and delay exchanges).
    ///
    /// Makes one attempt: a broker that is not there at start-up is an error for the
    /// caller (or its supervisor) to retry. Later losses are recovered from.
    pub async fn connect(url: &str, options: AmqpOptions) -> Result<AmqpBroker, BrokerError> {
        let redacted = redact_url(url);
        let mut uri: AMQPUri = url.parse().map_err(|err| {
            BrokerError::Connection(format!("invalid AMQP URL `{redacted}`: {err}"))
        })?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
        }
        let options = AmqpOptions {
            delivery_limit: options.delivery_limit.max(1),
            ..options
        };
        let names = Names::new(&options.prefix);
        let (state, _) = watch::channel(LinkState::Connecting);
        let inner = Arc::new(Inner {
            uri,
            url: redacted,
            options,
            names,
            state,
            declared: Mutex::new(Declared::default()),
            n_links: AtomicU64::new(0),
        });
        let link = inner.open_link().await.map_err(BrokerError::Connection)?;
        info!(url = %inner.url, prefix = %inner.options.prefix, link = link.id, "connected to RabbitMQ");
        inner.state.send_replace(LinkState::Up(Arc::new(link)));
        Ok(AmqpBroker { inner })
    }
}

/// The full (prefixed) names of the shared topology.
#[derive(Debug)]
struct Names {
    dead_letter_exchange: String,
    events_exchange: String,
    delay_exchange: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            dead_letter_exchange: format!("{prefix}{DEAD_LETTER_EXCHANGE}"),
            events_exchange: format!("{prefix}{EVENTS_EXCHANGE}"),
            delay_exchange: format!("{prefix}{DELAY_EXCHANGE}"),
        }
    }
}

fn failed_to_open(err: lapin::Error) -> BrokerError {
    BrokerError::Connection(format!("failed to open a channel: {err}"))
}

/// The state of the broker's one connection.
#[derive(Debug)]
enum LinkState {
    Up(Arc<Link>),
    /// A task is re-establishing the connection.
    Connecting,
    /// Reconnection gave up, for this reason: the broker is unusable for good.
    GaveUp(String),
}

/// What was declared on the current connection, so that publishing need not
/// declare every time. Forgotten on reconnection and after any failed publish.
#[derive(Debug, Default)]
struct Declared {
    topology: bool,
    queues: HashSet<String>,
}

struct Inner {
    uri: AMQPUri,
    /// The URL without its password, for messages.
    url: String,
    options: AmqpOptions,
    names: Names,
    state: watch::Sender<LinkState>,
    declared: Mutex<Declared>,
    /// Connections opened so far, to tell them apart in logs.
    n_links: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.url)
            .field("prefix", &self.options.prefix)
            .field("delivery_limit", &self.options.delivery_limit)
            .finish_non_exhaustive()
    }
}

/// One connection and the channels shared by publishers.
#[derive(Debug)]
struct Link {
    id: u64,
    connection: Connection,
    /// Publishes work messages (with confirms) and declares what they need.
    publisher: LazyChannel,
    /// Publishes events, without confirms.
    events: LazyChannel,
}

impl Link {
    fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }
}

/// A channel opened on first use and again after it closed (a channel error closes
/// it, as does a confirm given up on).
#[derive(Debug)]
struct LazyChannel {
    confirms: bool,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl LazyChannel {
    fn new(confirms: bool) -> Self {
        Self {
            confirms,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// The channel, and whether it replaces one that closed (perhaps for want of an
    /// exchange: what was declared may be gone).
    async fn get(&self, connection: &Connection) -> lapin::Result<(Channel, bool)> {
        let mut guard = self.channel.lock().await;
        let replaces = match guard.as_ref() {
            Some(channel) if channel.status().connected() => return Ok((channel.clone(), false)),
            Some(_) => true,
            None => false,
        };
        let channel = connection.create_channel().await?;
        if self.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        *guard = Some(channel.clone());
        Ok((channel, replaces))
    }

    /// Stops using `channel` (if still the current one) and closes it, so that a
    /// late confirm cannot be mistaken for another message's.
    async fn discard(&self, channel: &Channel) {
        let mut guard = self.channel.lock().await;
        if guard
            .as_ref()
            .is_some_and(|current| current.id() == channel.id())
        {
            *guard = None;
        }
        drop(guard);
        // In the background: on a stalled connection the close waits as long.
        let channel = channel.clone();
        tokio::spawn(async move {
            if channel.status().connected() {
                let _ = channel.close(200, "discarded".into()).await;
            }
        });
    }
}

/// Whether a queue is a work queue or the dead-letter queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueKind {
    Work,
    DeadLetter,
}

/// A queue by the port's name and by RabbitMQ's (prefixed) name.
#[derive(Clone, Debug)]
struct QueueName {
    name: String,
    full: String,
    kind: QueueKind,
}

/// Where a confirmed publish goes.
#[derive(Clone, Copy, Debug)]
enum Route<'a> {
    /// Straight to a queue, through the default exchange.
    Queue(&'a QueueName),
    /// To the dead-letter queue, through the dead-letter exchange.
    DeadLetter(&'a QueueName),
    /// To the delay queue of `ms`, from which it expires back into the queue.
    Delay(&'a QueueName, u64),
}

impl Route<'_> {
    fn queue(&self) -> &QueueName {
        match self {
            Route::Queue(queue) | Route::DeadLetter(queue) | Route::Delay(queue, _) => queue,
        }
    }
}

/// Why one publish attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// The connection is gone for good.
    GaveUp(BrokerError),
    /// Trying again cannot help.
    Fatal(String),
    /// Trying again may help (a lost channel or connection, an unknown confirm).
    Retry(String),
    /// RabbitMQ returned the message: what it should go to is missing.
    Unroutable,
}

fn short(value: &str) -> Result<ShortString, String> {
    ShortString::try_new(value).map_err(|err| format!("`{value}` is too long: {err}"))
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn int(value: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The delay queue a delay goes to: its milliseconds (rounded up, so never sooner
/// than asked) kept to two significant digits, so that jittered delays share a
/// few queues instead of making one each.
fn delay_bucket_ms(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    if ms < 100 {
        return ms;
    }
    let step = 10u64.pow(ms.ilog10() - 1);
    ms.div_ceil(step).saturating_mul(step)
}

/// The backoff between attempts of one operation.
fn retry_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

impl Inner {
    fn queue_name(&self, name: &str) -> QueueName {
        QueueName {
            name: name.to_owned(),
            full: format!("{}{name}", self.options.prefix),
            kind: if name == DEAD_LETTER_QUEUE {
                QueueKind::DeadLetter
            } else {
                QueueKind::Work
            },
        }
    }

    fn declared(&self) -> MutexGuard<'_, Declared> {
        // Plain data: usable after a panic elsewhere.
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_declarations(&self) {
        *self.declared() = Declared::default();
    }

    /// The current connection, re-established first if it was lost.
    async fn link(self: &Arc<Self>) -> Result<Arc<Link>, BrokerError> {
        let mut state = self.state.subscribe();
        loop {
            let lost = {
                match &*state.borrow_and_update() {
                    LinkState::Up(link) if link.is_connected() => return Ok(link.clone()),
                    LinkState::Up(_) => true,
                    LinkState::Connecting => false,
                    LinkState::GaveUp(reason) => {
                        return Err(BrokerError::GaveUp(reason.clone()));
                    }
                }
            };
            if lost {
                // The one caller that notices the loss first starts the reconnection.
                let started = self.state.send_if_modified(|state| match state {
                    LinkState::Up(link) if !link.is_connected() => {
                        warn!(url = %self.url, link = link.id, "lost the RabbitMQ connection; reconnecting");
                        *state = LinkState::Connecting;
                        true
                    }
                    _ => false,
                });
                if started {
                    tokio::spawn(self.clone().reconnect());
                }
                continue;
            }
            if state.changed().await.is_err() {
                return Err(BrokerError::Closed);
            }
        }
    }

    /// Re-establishes the connection with exponential backoff and jitter, or gives up
    /// after `reconnect_timeout`.
    async fn reconnect(self: Arc<Self>) {
        let started = Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.options.reconnect_timeout));
        let attempt = AtomicU32::new(0);
        let result = (|| {
            attempt.fetch_add(1, Ordering::Relaxed);
            self.open_link()
        })
        .retry(backoff)
        .notify(|err, retry_in| {
            warn!(
                url = %self.url,
                error = %err,
                retry_in_ms = millis(retry_in),
                "failed to reconnect to RabbitMQ"
            );
        })
        .await;
        match result {
            Ok(link) => {
                info!(
                    url = %self.url,
                    link = link.id,
                    attempt = attempt.load(Ordering::Relaxed),
                    downtime_ms = millis(started.elapsed()),
                    "reconnected to RabbitMQ"
                );
                self.state.send_replace(LinkState::Up(Arc::new(link)));
            }
            Err(err) => {
                let reason = format!(
                    "gave up reconnecting to RabbitMQ at `{}` after {:?}: {err}",
                    self.url, self.options.reconnect_timeout
                );
                error!(url = %self.url, attempt = attempt.load(Ordering::Relaxed), error = %err, "gave up reconnecting to RabbitMQ");
                self.state.send_replace(LinkState::GaveUp(reason));
            }
        }
    }

    /// Opens a connection and declares the shared topology on it.
    async fn open_link(&self) -> Result<Link, String> {
        let id = self.n_links.fetch_add(1, Ordering::Relaxed) + 1;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.options.connection_name.as_str().into());
        let connection = timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await
        .map_err(|_| {
            format!(
                "failed to connect to RabbitMQ at `{}`: no answer within {CONNECT_TIMEOUT:?}",
                self.url
            )
        })?
        .map_err(|err| format!("failed to connect to RabbitMQ at `{}`: {err}", self.url))?;
        let link = Link {
            id,
            connection,
            publisher: LazyChannel::new(true),
            events: LazyChannel::new(false),
        };
        self.forget_declarations();
        let (channel, _) = link.publisher.get(&link.connection).await.map_err(|err| {
            format!(
                "failed to open a channel on RabbitMQ at `{}`: {err}",
                self.url
            )
        })?;
        self.declare_topology(&channel).await?;
        Ok(link)
    }

    // ---- topology ----

    fn work_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        // RabbitMQ dead-letters a message returned more than `x-delivery-limit` times,
        // that is on its `x-delivery-limit + 1`th delivery's return.
        arguments.insert(
            "x-delivery-limit".into(),
            int(u64::from(self.options.delivery_limit - 1)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.names.dead_letter_exchange),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        arguments.insert("x-overflow".into(), long_string("reject-publish"));
        self.insert_expiry(&mut arguments);
        arguments
    }

    fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DEAD_LETTER_QUEUE_DELIVERY_LIMIT),
        );
        self.insert_expiry(&mut arguments);
        arguments
    }

    fn delay_queue_arguments(&self, ms: u64) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        arguments.insert("x-message-ttl".into(), int(ms));
        // Expired messages go to the default exchange with the routing key they were
        // published with: the name of the queue they wait to return to.
        arguments.insert("x-dead-letter-exchange".into(), long_string(""));
        arguments.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        arguments.insert("x-overflow".into(), long_string("reject-publish"));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DEAD_LETTER_QUEUE_DELIVERY_LIMIT),
        );
        // Unused for twice its delay plus a margin, the queue has moved its last
        // message on and can go.
        let margin = self.options.queue_expiry.map_or(60_000, millis);
        arguments.insert(
            "x-expires".into(),
            int(ms.saturating_mul(2).saturating_add(margin)),
        );
        arguments
    }

    fn insert_expiry(&self, arguments: &mut FieldTable) {
        if let Some(expiry) = self.options.queue_expiry {
            arguments.insert("x-expires".into(), int(millis(expiry).max(1)));
        }
    }

    fn durable() -> QueueDeclareOptions {
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        }
    }

    async fn declare_exchange(
        &self,
        channel: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), String> {
        channel
            .exchange_declare(
                short(name)?,
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: self.options.queue_expiry.is_some(),
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|err| format!("failed to declare exchange `{name}`: {err}"))
    }

    async fn declare_queue(&self, channel: &Channel, queue: &QueueName) -> Result<(), String> {
        let arguments = match queue.kind {
            QueueKind::Work => self.work_queue_arguments(),
            QueueKind::DeadLetter => self.dead_letter_queue_arguments(),
        };
        channel
            .queue_declare(short(&queue.full)?, Self::durable(), arguments)
            .await
            .map_err(|err| format!("failed to declare queue `{}`: {err}", queue.full))?;
        if queue.kind == QueueKind::DeadLetter {
            channel
                .queue_bind(
                    short(&queue.full)?,
                    short(&self.names.dead_letter_exchange)?,
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|err| format!("failed to bind queue `{}`: {err}", queue.full))?;
        }
        debug!(queue = %queue.full, "declared queue");
        Ok(())
    }

    async fn declare_topology(&self, channel: &Channel) -> Result<(), String> {
        self.declare_exchange(
            channel,
            &self.names.dead_letter_exchange,
            ExchangeKind::Fanout,
        )
        .await?;
        self.declare_queue(channel, &self.queue_name(DEAD_LETTER_QUEUE))
            .await?;
        self.declare_exchange(channel, &self.names.events_exchange, ExchangeKind::Topic)
            .await?;
        self.declare_exchange(channel, &self.names.delay_exchange, ExchangeKind::Headers)
            .await?;
        if self.options.queue_expiry.is_some() {
            let dead_letter_queue = short(&format!("{}{DEAD_LETTER_QUEUE}", self.options.prefix))?;
            let mut never = FieldTable::default();
            never.insert("x-match".into(), long_string("all"));
            never.insert(ANCHOR.into(), long_string(ANCHOR));
            for (exchange, routing_key, arguments) in [
                (&self.names.events_exchange, ANCHOR, FieldTable::default()),
                (&self.names.delay_exchange, "", never),
            ] {
                channel
                    .queue_bind(
                        dead_letter_queue.clone(),
                        short(exchange)?,
                        routing_key.into(),
                        QueueBindOptions::default(),
                        arguments,
                    )
                    .await
                    .map_err(|err| format!("failed to anchor exchange `{exchange}`: {err}"))?;
            }
        }
        self.declared().topology = true;
        Ok(())
    }

    /// Declares the delay queue of `ms` and binds it; done for every delayed message,
    /// which renews the queue's expiry lease.
    async fn declare_delay_queue(&self, channel: &Channel, ms: u64) -> Result<(), String> {
        let name = format!("{}{DELAY_QUEUE_PREFIX}{ms}", self.options.prefix);
        channel
            .queue_declare(
                short(&name)?,
                Self::durable(),
                self.delay_queue_arguments(ms),
            )
            .await
            .map_err(|err| format!("failed to declare queue `{name}`: {err}"))?;
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), long_string("all"));
        binding.insert(DELAY_HEADER.into(), long_string(&ms.to_string()));
        channel
            .queue_bind(
                short(&name)?,
                short(&self.names.delay_exchange)?,
                "".into(),
                QueueBindOptions::default(),
                binding,
            )
            .await
            .map_err(|err| format!("failed to bind queue `{name}`: {err}"))
    }

    /// Declares what `route` needs, unless already done on this connection.
    async fn prepare(&self, channel: &Channel, route: Route<'_>) -> Result<(), String> {
        if !self.declared().topology {
            self.declare_topology(channel).await?;
        }
        match route {
            Route::Queue(queue) => {
                if !self.declared().queues.contains(&queue.full) {
                    self.declare_queue(channel, queue).await?;
                    self.declared().queues.insert(queue.full.clone());
                }
            }
            Route::DeadLetter(_) => {}
            Route::Delay(_, ms) => self.declare_delay_queue(channel, ms).await?,
        }
        Ok(())
    }

    // ---- publishing ----

    /// Publishes `message` along `route` and waits for RabbitMQ's confirm. An
    /// unknown outcome (no confirm in time, a nack, a lost channel) is retried with
    /// the same message id: consumers are idempotent.
    async fn publish(
        self: &Arc<Self>,
        route: Route<'_>,
        message: &Message,
        bookkeeping: &[(&str, AMQPValue)],
    ) -> Result<(), BrokerError> {
        let queue = route.queue().name.clone();
        let failed = |message: String| BrokerError::Publish {
            queue: queue.clone(),
            message,
        };
        let mut headers = write_headers(&message.headers).map_err(&failed)?;
        for (key, value) in bookkeeping {
            headers.insert((*key).into(), value.clone());
        }
        if let Route::Delay(_, ms) = route {
            headers.insert(DELAY_HEADER.into(), long_string(&ms.to_string()));
        }
        let properties = BasicProperties::default()
            .with_message_id(short(&message.id).map_err(&failed)?)
            .with_delivery_mode(2)
            .with_headers(headers);
        let mut delays = retry_backoff().with_max_times(PUBLISH_ATTEMPTS - 1).build();
        let mut returned = false;
        loop {
            let outcome = self
                .publish_once(route, &message.body, properties.clone())
                .await;
            let reason = match outcome {
                Ok(()) => return Ok(()),
                Err(AttemptError::GaveUp(err)) => return Err(err),
                Err(AttemptError::Fatal(reason)) => return Err(failed(reason)),
                Err(AttemptError::Unroutable) if returned => {
                    return Err(failed(format!(
                        "RabbitMQ returned message `{}` as unroutable",
                        message.id
                    )));
                }
                Err(AttemptError::Unroutable) => {
                    // The queue or binding went away (e.g. expired): declare it again.
                    returned = true;
                    "returned as unroutable".to_owned()
                }
                Err(AttemptError::Retry(reason)) => reason,
            };
            self.forget_declarations();
            let Some(delay) = delays.next() else {
                return Err(failed(reason));
            };
            warn!(
                queue = %queue,
                message_id = %message.id,
                error = %reason,
                retry_in_ms = millis(delay),
                "publish outcome unknown; publishing again"
            );
            sleep(delay).await;
        }
    }

    async fn publish_once(
        self: &Arc<Self>,
        route: Route<'_>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AttemptError> {
        let link = self.link().await.map_err(AttemptError::GaveUp)?;
        let (channel, replaces) = link
            .publisher
            .get(&link.connection)
            .await
            .map_err(|err| AttemptError::Retry(format!("failed to open a channel: {err}")))?;
        if replaces {
            self.forget_declarations();
        }
        self.prepare(&channel, route)
            .await
            .map_err(AttemptError::Retry)?;
        let (exchange, routing_key) = match route {
            Route::Queue(queue) => ("", queue.full.as_str()),
            Route::DeadLetter(queue) => (
                self.names.dead_letter_exchange.as_str(),
                queue.full.as_str(),
            ),
            Route::Delay(queue, _) => (self.names.delay_exchange.as_str(), queue.full.as_str()),
        };
        let confirm = channel
            .basic_publish(
                short(exchange).map_err(AttemptError::Fatal)?,
                short(routing_key).map_err(AttemptError::Fatal)?,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(|err| AttemptError::Retry(format!("failed to publish: {err}")))?;
        let confirmed = timeout(self.options.confirm_timeout, confirm).await;
        let outcome = match &confirmed {
            Err(_) => "timeout",
            Ok(Err(_)) => "lost",
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => "ack",
            Ok(Ok(Confirmation::Ack(Some(_)))) => "unroutable",
            Ok(Ok(Confirmation::Nack(_))) => "nack",
        };
        crate::metrics::count_by(crate::metrics::PUBLISH_CONFIRMS, "outcome", outcome);
        match confirmed {
            Err(_) => {
                link.publisher.discard(&channel).await;
                Err(AttemptError::Retry(format!(
                    "no confirm within {:?}",
                    self.options.confirm_timeout
                )))
            }
            Ok(Err(err)) => Err(AttemptError::Retry(format!(
                "lost the channel before the confirm: {err}"
            ))),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(AttemptError::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) => Err(AttemptError::Retry(
                "RabbitMQ nacked the message".to_owned(),
            )),
        }
    }

    // ---- consuming ----

    /// Opens a channel with `prefetch`, declares `queue` and subscribes to it;
    /// retried until `reconnect_timeout` has passed without success.
    async fn subscribe(
        self: &Arc<Self>,
        queue: &QueueName,
        prefetch: u16,
    ) -> Result<Subscription, BrokerError> {
        let deadline = Instant::now() + self.options.reconnect_timeout;
        let mut delays = retry_backoff().build();
        loop {
            let link = self.link().await?;
            let reason = match self.subscribe_once(&link, queue, prefetch).await {
                Ok(subscription) => return Ok(subscription),
                Err(reason) => reason,
            };
            match delays.next() {
                Some(delay) if Instant::now() + delay < deadline => {
                    warn!(queue = %queue.name, error = %reason, retry_in_ms = millis(delay), "failed to consume; retrying");
                    sleep(delay).await;
                }
                _ => {
                    return Err(BrokerError::Connection(format!(
                        "failed to consume `{}`: {reason}",
                        queue.name
                    )));
                }
            }
        }
    }

    async fn subscribe_once(
        &self,
        link: &Link,
        queue: &QueueName,
        prefetch: u16,
    ) -> Result<Subscription, String> {
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| format!("failed to open a channel: {err}"))?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|err| format!("failed to set the prefetch: {err}"))?;
        self.declare_queue(&channel, queue).await?;
        let tag = format!("drover-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                short(&queue.full)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| format!("failed to subscribe: {err}"))?;
        debug!(queue = %queue.full, prefetch, link = link.id, "subscribed");
        Ok(Subscription { channel, consumer })
    }

    /// Subscribes to the events exchange with a queue of the subscriber's own,
    /// bound with `binding`.
    async fn subscribe_events_once(
        &self,
        link: &Link,
        binding: &str,
    ) -> Result<Subscription, String> {
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| format!("failed to open a channel: {err}"))?;
        channel
            .basic_qos(EVENT_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|err| format!("failed to set the prefetch: {err}"))?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(EVENT_BUFFER));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(|err| format!("failed to declare an event queue: {err}"))?;
        channel
            .queue_bind(
                queue.name().clone(),
                short(&self.names.events_exchange)?,
                short(binding)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| format!("failed to bind the event queue: {err}"))?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| format!("failed to subscribe to events: {err}"))?;
        Ok(Subscription { channel, consumer })
    }

    /// The deliveries counted against the limit, the reason for dead-lettering
    /// one that is over the limit, and whether it is.
    fn over_limit(&self, queue: &QueueName, delivery_count: u32) -> Option<String> {
        (queue.kind == QueueKind::Work && delivery_count > self.options.delivery_limit)
            .then(|| self.limit_reason())
    }

    fn limit_reason(&self) -> String {
        format!("delivery limit of {} reached", self.options.delivery_limit)
    }
}

/// Logs a settlement made in the background that did not happen: its channel is
/// gone, and RabbitMQ takes the message back with it.
fn unsettled(action: &str, result: &lapin::Result<bool>) {
    match result {
        Ok(true) => {}
        Ok(false) => debug!(action, "not settled: the channel closed"),
        Err(err) => debug!(action, error = %err, "not settled"),
    }
}

// ---- headers ----

/// The message's headers as AMQP headers.
fn write_headers(headers: &BTreeMap<String, String>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (key, value) in headers {
        table.insert(short(key)?, long_string(value));
    }
    Ok(table)
}

/// What the adapter and RabbitMQ keep in a message's headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Bookkeeping {
    /// Deliveries before a `retry_after` copy was made (`x-drover-deliveries`).
    prior_deliveries: u32,
    /// Times the queue got the message back (`x-delivery-count`).
    returns: u32,
    /// Why, and from which queue, RabbitMQ last dead-lettered the message.
    death: Option<(String, String)>,
}

impl Bookkeeping {
    /// Deliveries so far, this one included.
    fn delivery_count(&self) -> u32 {
        self.prior_deliveries
            .saturating_add(self.returns)
            .saturating_add(1)
    }
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    let value: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(v) => String::from_utf8_lossy(v.as_bytes()).parse().ok()?,
        AMQPValue::ShortString(v) => v.as_str().parse().ok()?,
        _ => return None,
    };
    Some(u32::try_from(value.max(0)).unwrap_or(u32::MAX))
}

fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_owned()),
        _ => None,
    }
}

/// Splits AMQP headers into the message's own (string-valued) headers and the
/// bookkeeping of the adapter and RabbitMQ, which the message does not show.
fn read_headers(table: Option<&FieldTable>) -> (BTreeMap<String, String>, Bookkeeping) {
    let mut headers = BTreeMap::new();
    let mut bookkeeping = Bookkeeping::default();
    let Some(table) = table else {
        return (headers, bookkeeping);
    };
    for (key, value) in table {
        match key.as_str() {
            DELIVERIES_HEADER => bookkeeping.prior_deliveries = as_u32(value).unwrap_or(0),
            DELIVERY_COUNT_HEADER => bookkeeping.returns = as_u32(value).unwrap_or(0),
            DEATH_HEADER => {
                // The most recent death comes first.
                if let AMQPValue::FieldArray(deaths) = value
                    && let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first()
                {
                    let field = |name: &str| {
                        death
                            .inner()
                            .get(name)
                            .and_then(as_string)
                            .unwrap_or_default()
                    };
                    bookkeeping.death = Some((field("reason"), field("queue")));
                }
            }
            DELAY_HEADER => {}
            key if key.starts_with("x-first-death-") || key.starts_with("x-last-death-") => {}
            key => {
                if let Some(value) = as_string(value) {
                    headers.insert(key.to_owned(), value);
                }
            }
        }
    }
    (headers, bookkeeping)
}

/// The reason for a message that RabbitMQ dead-lettered, in the port's words.
fn death_reason(reason: &str, queue: &str, prefix: &str, delivery_limit: u32) -> String {
    let queue = queue.strip_prefix(prefix).unwrap_or(queue);
    match reason {
        "delivery_limit" => {
            format!(
                "delivery limit of {delivery_limit} reached on `{queue}` (dead-lettered by RabbitMQ)"
            )
        }
        reason => format!("{reason} on `{queue}` (dead-lettered by RabbitMQ)"),
    }
}

// ---- the port ----

#[async_trait]
impl Broker for AmqpBroker {
    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        let queue = self.inner.queue_name(queue);
        self.inner
            .publish(Route::Queue(&queue), &message, &[])
            .await?;
        debug!(queue = %queue.name, message_id = %message.id, "published");
        Ok(())
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let queue = self.inner.queue_name(queue);
        let prefetch = u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX);
        let subscription = self.inner.subscribe(&queue, prefetch).await?;
        Ok(Box::new(AmqpConsumer {
            inner: self.inner.clone(),
            queue,
            prefetch,
            subscription: Some(subscription),
        }))
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        let failed = |message: String| BrokerError::Publish {
            queue: EVENTS_EXCHANGE.to_owned(),
            message,
        };
        let body = serde_json::to_vec(event).map_err(|err| failed(err.to_string()))?;
        // Events are best effort: a publisher does not wait long for a connection.
        let link = timeout(self.inner.options.confirm_timeout, self.inner.link())
            .await
            .map_err(|_| failed("not connected to RabbitMQ".to_owned()))??;
        let (channel, replaces) = link
            .events
            .get(&link.connection)
            .await
            .map_err(|err| failed(format!("failed to open a channel: {err}")))?;
        if replaces {
            // The channel may have closed because the exchange had gone.
            self.inner
                .declare_topology(&channel)
                .await
                .map_err(&failed)?;
        }
        let published = channel
            .basic_publish(
                short(&self.inner.names.events_exchange).map_err(&failed)?,
                short(&format!("{}.{}", event.deployment(), event.name())).map_err(&failed)?,
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
        if let Err(err) = published {
            link.events.discard(&channel).await;
            return Err(failed(err.to_string()));
        }
        Ok(())
    }

    async fn subscribe_events(&self) -> Result<Box<dyn EventStream>, BrokerError> {
        self.subscribe_bound("#").await
    }

    async fn subscribe_cancellations(&self) -> Result<Box<dyn EventStream>, BrokerError> {
        self.subscribe_bound(CANCELLATIONS).await
    }

    async fn check_connectivity(&self) -> Result<(), BrokerError> {
        match timeout(CONNECTIVITY_TIMEOUT, self.inner.link()).await {
            Ok(link) => link.map(drop),
            Err(_) => Err(BrokerError::Connection(format!(
                "not connected to RabbitMQ at `{}`: reconnecting",
                self.inner.url
            ))),
        }
    }
}

/// A channel subscribed to a queue.
#[derive(Debug)]
struct Subscription {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Subscription {
    /// Unsubscribes and hands back the messages RabbitMQ sent but nobody received,
    /// in the background. The channel stays open while deliveries made on it are
    /// unsettled, so that they can still be settled.
    fn release(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Without a runtime the channel closes when its last handle goes, and
            // RabbitMQ takes the messages back then.
            return;
        };
        runtime.spawn(async move {
            let Subscription {
                channel,
                mut consumer,
            } = self;
            if channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
                .is_err()
            {
                return;
            }
            while let Ok(Some(Ok(delivery))) = timeout(RELEASE_TIMEOUT, consumer.next()).await {
                let result = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                unsettled("return a buffered delivery", &result);
            }
        });
    }
}

/// Deliveries from one queue, on a channel of their own.
#[derive(Debug)]
struct AmqpConsumer {
    inner: Arc<Inner>,
    queue: QueueName,
    prefetch: u16,
    /// `None` between a lost subscription and its replacement.
    subscription: Option<Subscription>,
}

impl AmqpConsumer {
    /// The port's delivery for an AMQP one, or `None` when the adapter settled it
    /// itself (past the delivery limit).
    async fn receive(&self, channel: &Channel, delivery: AmqpDelivery) -> Option<Delivery> {
        let (mut headers, bookkeeping) = read_headers(delivery.properties.headers().as_ref());
        let delivery_count = bookkeeping.delivery_count();
        if self.queue.kind == QueueKind::DeadLetter
            && !headers.contains_key(REASON_HEADER)
            && let Some((reason, queue)) = &bookkeeping.death
        {
            headers.insert(
                REASON_HEADER.to_owned(),
                death_reason(
                    reason,
                    queue,
                    &self.inner.options.prefix,
                    self.inner.options.delivery_limit,
                ),
            );
        }
        let message = Message {
            id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            headers,
            body: delivery.data,
        };
        let acker = AmqpAcker {
            inner: self.inner.clone(),
            queue: self.queue.clone(),
            channel: channel.clone(),
            acker: delivery.acker,
            message: message.clone(),
            delivery_count,
            settled: false,
        };
        // Only a count carried over from before a `retry_after` can pass the limit
        // here; RabbitMQ enforces it on the rest.
        if let Some(reason) = self.inner.over_limit(&self.queue, delivery_count) {
            warn!(queue = %self.queue.name, message_id = %message.id, delivery_count, "delivery limit reached; dead-lettering");
            if let Err(err) = Box::new(acker).dead_letter(&reason).await {
                warn!(queue = %self.queue.name, error = %err, "failed to dead-letter a message past its delivery limit");
            }
            return None;
        }
        Some(Delivery::new(message, delivery_count, Box::new(acker)))
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if self.subscription.is_none() {
                match self.inner.subscribe(&self.queue, self.prefetch).await {
                    Ok(subscription) => {
                        info!(queue = %self.queue.name, "consumer re-created");
                        self.subscription = Some(subscription);
                    }
                    Err(err) => {
                        error!(queue = %self.queue.name, error = %err, "consumer closed");
                        return None;
                    }
                }
            }
            let subscription = self.subscription.as_mut()?;
            match subscription.consumer.next().await {
                Some(Ok(delivery)) => {
                    let channel = subscription.channel.clone();
                    if let Some(delivery) = self.receive(&channel, delivery).await {
                        return Some(Ok(delivery));
                    }
                }
                Some(Err(err)) => {
                    warn!(queue = %self.queue.name, error = %err, "consumer failed; re-creating it");
                    self.subscription = None;
                }
                None => {
                    warn!(queue = %self.queue.name, "consumer cancelled; re-creating it");
                    self.subscription = None;
                }
            }
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            subscription.release();
        }
    }
}

/// Settles one delivery on the channel it came from.
#[derive(Debug)]
struct AmqpAcker {
    inner: Arc<Inner>,
    queue: QueueName,
    /// Keeps the channel open until the delivery is settled, even once its consumer
    /// is gone.
    channel: Channel,
    acker: lapin::Acker,
    message: Message,
    delivery_count: u32,
    /// Whether an acknowledgement was sent (or the delivery is lost with its channel).
    settled: bool,
}

impl AmqpAcker {
    fn error(&self, message: impl Into<String>) -> BrokerError {
        BrokerError::Settle {
            message_id: self.message.id.clone(),
            message: message.into(),
        }
    }

    /// Interprets lapin's answer: `Ok(false)` means the channel closed (or the
    /// delivery was settled already); RabbitMQ then redelivers the message.
    fn settled(&self, action: &str, result: lapin::Result<bool>) -> Result<(), BrokerError> {
        match result {
            Ok(true) => {
                debug!(queue = %self.queue.name, message_id = %self.message.id, action, "settled");
                Ok(())
            }
            Ok(false) => Err(self.error(format!(
                "failed to {action}: the channel closed; RabbitMQ will redeliver the message"
            ))),
            Err(err) => Err(self.error(format!("failed to {action}: {err}"))),
        }
    }

    async fn basic_ack(&mut self) -> Result<(), BrokerError> {
        self.settled = true;
        let result = self.acker.ack(BasicAckOptions::default()).await;
        self.settled("acknowledge", result)
    }

    async fn basic_requeue(&mut self) -> Result<(), BrokerError> {
        self.settled = true;
        let result = self
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
        self.settled("requeue", result)
    }

    /// Moves a copy with `reason` to the dead-letter queue, then acknowledges.
    async fn move_to_dead_letter(&mut self, reason: &str) -> Result<(), BrokerError> {
        let mut copy = self.message.clone();
        copy.headers
            .insert(REASON_HEADER.to_owned(), reason.to_owned());
        self.inner
            .publish(Route::DeadLetter(&self.queue), &copy, &[])
            .await
            .map_err(|err| self.error(format!("failed to dead-letter: {err}")))?;
        warn!(queue = %self.queue.name, message_id = %self.message.id, reason, "dead-lettered");
        self.basic_ack().await
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.basic_ack().await
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        if self.queue.kind == QueueKind::Work
            && self.delivery_count >= self.inner.options.delivery_limit
        {
            let reason = self.inner.limit_reason();
            return match self.move_to_dead_letter(&reason).await {
                Ok(()) => Ok(()),
                // RabbitMQ's own limit dead-letters it once returned.
                Err(_) if !self.settled => self.basic_requeue().await,
                Err(err) => Err(err),
            };
        }
        self.basic_requeue().await
    }

    async fn retry_after(mut self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let ms = delay_bucket_ms(delay);
        let route = if ms == 0 {
            Route::Queue(&self.queue)
        } else {
            Route::Delay(&self.queue, ms)
        };
        // The copy starts a new count on the server; this delivery is not held
        // against the message.
        let prior = self.delivery_count.saturating_sub(1);
        self.inner
            .publish(
                route,
                &self.message,
                &[(DELIVERIES_HEADER, int(u64::from(prior)))],
            )
            .await
            .map_err(|err| self.error(format!("failed to delay: {err}")))?;
        debug!(queue = %self.queue.name, message_id = %self.message.id, delay_ms = ms, "delayed");
        self.basic_ack().await
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> Result<(), BrokerError> {
        self.move_to_dead_letter(reason).await
    }
}

impl Drop for AmqpAcker {
    /// An unsettled delivery goes back to its queue, counted; RabbitMQ applies the
    /// delivery limit.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // RabbitMQ takes it back when the channel closes.
            return;
        };
        let acker = self.acker.clone();
        let channel = self.channel.clone();
        let message_id = self.message.id.clone();
        runtime.spawn(async move {
            let result = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            if !matches!(result, Ok(true)) {
                debug!(%message_id, ?result, "could not return a dropped delivery; RabbitMQ takes it back with its channel");
            }
            drop(channel);
        });
    }
}

/// Progress events from a queue of the subscriber's own.
#[derive(Debug)]
struct AmqpEvents {
    inner: Arc<Inner>,
    /// What the queue is bound with.
    binding: &'static str,
    subscription: Option<Subscription>,
}

#[async_trait]
impl EventStream for AmqpEvents {
    async fn next(&mut self) -> Option<Event> {
        let mut delays = retry_backoff()
            .with_total_delay(Some(self.inner.options.reconnect_timeout))
            .build();
        loop {
            if self.subscription.is_none() {
                let link = self.inner.link().await.ok()?;
                match self.inner.subscribe_events_once(&link, self.binding).await {
                    Ok(subscription) => {
                        // Events published meanwhile are lost: they are best effort.
                        info!("event subscription re-created");
                        self.subscription = Some(subscription);
                    }
                    Err(err) => {
                        let delay = delays.next()?;
                        warn!(error = %err, retry_in_ms = millis(delay), "failed to subscribe to events; retrying");
                        sleep(delay).await;
                        continue;
                    }
                }
            }
            let subscription = self.subscription.as_mut()?;
            match subscription.consumer.next().await {
                Some(Ok(delivery)) => {
                    let result = delivery.acker.ack(BasicAckOptions::default()).await;
                    unsettled("acknowledge an event", &result);
                    match serde_json::from_slice(&delivery.data) {
                        Ok(event) => return Some(event),
                        Err(err) => warn!(error = %err, "ignored an event that is not one"),
                    }
                }
                Some(Err(err)) => {
                    warn!(error = %err, "event subscription failed; re-creating it");
                    self.subscription = None;
                }
                None => {
                    warn!("event subscription cancelled; re-creating it");
                    self.subscription = None;
                }
            }
        }
    }
}

impl Drop for AmqpEvents {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            // The queue is exclusive and auto-delete: closing the channel removes it.
            runtime.spawn(async move {
                let _ = subscription.channel.close(200, "unsubscribed".into()).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(prefix: &str, delivery_limit: u32) -> AmqpOptions {
        AmqpOptions {
            prefix: prefix.to_owned(),
            delivery_limit,
            ..AmqpOptions::default()
        }
    }

    #[test]
    fn delays_are_rounded_up_to_two_significant_digits() {
        let ms = |ms: u64| delay_bucket_ms(Duration::from_millis(ms));
        assert_eq!(ms(0), 0);
        assert_eq!(delay_bucket_ms(Duration::from_micros(1)), 1);
        assert_eq!(ms(10), 10);
        assert_eq!(ms(99), 99);
        assert_eq!(ms(100), 100);
        assert_eq!(ms(400), 400);
        assert_eq!(ms(1234), 1300);
        assert_eq!(ms(1200), 1200);
        assert_eq!(ms(29_001), 30_000);
        assert_eq!(delay_bucket_ms(Duration::from_micros(400_001)), 410);
    }

    #[test]
    fn headers_round_trip_without_bookkeeping() {
        let mut headers = BTreeMap::new();
        headers.insert("x-test".to_owned(), "kept".to_owned());
        headers.insert(REASON_HEADER.to_owned(), "why".to_owned());
        let mut table = write_headers(&headers).unwrap();
        table.insert(DELIVERIES_HEADER.into(), int(2));
        table.insert(DELAY_HEADER.into(), long_string("400"));
        table.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongInt(3));
        table.insert("x-first-death-reason".into(), long_string("expired"));
        table.insert("x-number".into(), AMQPValue::LongInt(7));
        let (read, bookkeeping) = read_headers(Some(&table));
        assert_eq!(read, headers);
        assert_eq!(bookkeeping.prior_deliveries, 2);
        assert_eq!(bookkeeping.returns, 3);
        assert_eq!(bookkeeping.delivery_count(), 6);
        assert_eq!(read_headers(None).1.delivery_count(), 1);
    }

    #[test]
    fn the_latest_death_gives_the_reason() {
        let death = |reason: &str, queue: &str| {
            let mut death = FieldTable::default();
            death.insert("reason".into(), long_string(reason));
            death.insert("queue".into(), long_string(queue));
            death.insert("count".into(), AMQPValue::LongLongInt(1));
            AMQPValue::FieldTable(death)
        };
        let mut table = FieldTable::default();
        table.insert(
            DEATH_HEADER.into(),
            AMQPValue::FieldArray(
                vec![
                    death("delivery_limit", "t-1.drover.tasks"),
                    death("expired", "t-1.drover.delay.400"),
                ]
                .into(),
            ),
        );
        let (headers, bookkeeping) = read_headers(Some(&table));
        assert!(headers.is_empty());
        let (reason, queue) = bookkeeping.death.unwrap();
        assert_eq!(
            death_reason(&reason, &queue, "t-1.", 3),
            "delivery limit of 3 reached on `drover.tasks` (dead-lettered by RabbitMQ)"
        );
    }

    fn inner(options: AmqpOptions) -> Inner {
        Inner {
            uri: AMQPUri::default(),
            url: "amqp://localhost".to_owned(),
            names: Names::new(&options.prefix),
            options,
            state: watch::channel(LinkState::Connecting).0,
            declared: Mutex::new(Declared::default()),
            n_links: AtomicU64::new(0),
        }
    }

    #[test]
    fn work_queues_are_quorum_with_the_limit_in_returns_and_a_dead_letter_exchange() {
        let inner = inner(AmqpOptions {
            queue_expiry: Some(Duration::from_secs(60)),
            ..options("t-1.", 3)
        });
        let arguments = inner.work_queue_arguments();
        let get = |key: &str| arguments.inner().get(key).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-delivery-limit"), Some(int(2)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(long_string("t-1.drover.dead-letter"))
        );
        assert_eq!(get("x-expires"), Some(int(60_000)));
        assert_eq!(inner.queue_name("drover.tasks").full, "t-1.drover.tasks");
        assert_eq!(
            inner.queue_name(DEAD_LETTER_QUEUE).kind,
            QueueKind::DeadLetter
        );
    }

    #[test]
    fn delay_queues_expire_back_through_the_default_exchange() {
        let inner = inner(options("", DELIVERY_LIMIT));
        let arguments = inner.delay_queue_arguments(400);
        let get = |key: &str| arguments.inner().get(key).cloned();
        assert_eq!(get("x-message-ttl"), Some(int(400)));
        assert_eq!(get("x-dead-letter-exchange"), Some(long_string("")));
        assert_eq!(get("x-dead-letter-routing-key"), None);
        assert_eq!(get("x-expires"), Some(int(60_800)));
    }

    #[test]
    fn only_carried_counts_pass_the_limit_on_receipt() {
        let inner = inner(options("", 3));
        let work = inner.queue_name("drover.tasks");
        let dead = inner.queue_name(DEAD_LETTER_QUEUE);
        assert_eq!(inner.over_limit(&work, 3), None);
        assert_eq!(
            inner.over_limit(&work, 4).as_deref(),
            Some("delivery limit of 3 reached")
        );
        assert_eq!(inner.over_limit(&dead, 40), None);
    }
}
