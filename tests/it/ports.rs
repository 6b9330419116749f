//! Port suites: the contract of the `Broker` and `Locks` ports, written once as
//! functions over `Arc<dyn Broker>` / `Arc<dyn Locks>` and instantiated per adapter
//! by `broker_suite!` and `locks_suite!` (quickwit's `metastore_test_suite!`).
//!
//! The suites use real, short delays and unique queue and lock names, so that they
//! can run unchanged against a shared RabbitMQ and Redis: another test's messages on
//! a shared queue (the dead-letter queue) are left alone, and events are told apart
//! by their deployment id.

use std::sync::Arc;
use std::time::Duration;

use shared::broker::{
    Broker, Consumer, DEAD_LETTER_QUEUE, Delivery, MemoryBroker, Message, REASON_HEADER,
};
use shared::events::Event;
use shared::ids::{DeploymentId, TenantId};
use shared::locks::{LockToken, Locks, MemoryLocks};
use tokio::time::{Instant, timeout};

/// How long anything expected is waited for before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long something that must not happen is watched for.
const QUIET: Duration = Duration::from_millis(200);
/// The delivery limit every broker under the suite is built with.
pub(crate) const TEST_DELIVERY_LIMIT: u32 = 3;

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

fn message(body: &str) -> Message {
    let mut message = Message::new(unique("message"), body.as_bytes().to_vec());
    message
        .headers
        .insert("x-test".to_owned(), "kept".to_owned());
    message
}

/// The next delivery; fails the test when none comes.
async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    timeout(PATIENCE, consumer.next())
        .await
        .expect("no delivery came")
        .expect("the consumer closed")
        .expect("the delivery failed")
}

/// Fails the test when a delivery comes within `within`.
async fn assert_no_delivery(consumer: &mut Box<dyn Consumer>, within: Duration) {
    if let Ok(delivery) = timeout(within, consumer.next()).await {
        panic!("expected no delivery, got {delivery:?}");
    }
}

/// Takes the message `id` from the dead-letter queue, which other tests may share:
/// their messages are held unsettled meanwhile and handed back at the end.
async fn dead_lettered(broker: &Arc<dyn Broker>, id: &str) -> Delivery {
    let mut consumer = broker
        .consume(DEAD_LETTER_QUEUE, 1000)
        .await
        .expect("consume the dead-letter queue");
    let mut others = Vec::new();
    loop {
        let delivery = next(&mut consumer).await;
        if delivery.message.id == id {
            return delivery;
        }
        others.push(delivery);
    }
}

pub(crate) mod broker_suite {
    //! The `Broker` contract.

    use super::*;

    /// A published message is delivered once, intact, and an ack settles it for good.
    pub(crate) async fn publish_consume_ack(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("hello");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.message.id, sent.id);
        assert_eq!(delivery.message.body, sent.body);
        assert_eq!(
            delivery.message.headers.get("x-test").map(String::as_str),
            Some("kept")
        );
        assert_eq!(delivery.delivery_count, 1);
        delivery.ack().await.expect("ack");
        assert_no_delivery(&mut consumer, QUIET).await;
    }

    /// Messages come in the order they were published.
    pub(crate) async fn deliveries_keep_publish_order(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent: Vec<Message> = (0..5).map(|idx| message(&format!("m{idx}"))).collect();
        for message in &sent {
            broker
                .publish(&queue, message.clone())
                .await
                .expect("publish");
        }
        let mut consumer = broker.consume(&queue, 10).await.expect("consume");
        for message in &sent {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.message.id, message.id);
            delivery.ack().await.expect("ack");
        }
    }

    /// A delivery dropped unsettled (its worker died) comes back, counted.
    pub(crate) async fn an_unsettled_delivery_comes_back(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("again");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        let first = next(&mut consumer).await;
        assert_eq!(first.delivery_count, 1);
        drop(first);
        let second = next(&mut consumer).await;
        assert_eq!(second.message, sent);
        assert_eq!(second.delivery_count, 2);
        second.ack().await.expect("ack");
        assert_no_delivery(&mut consumer, QUIET).await;
    }

    /// A requeued message is delivered again at once, counted.
    pub(crate) async fn requeue_redelivers(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("requeue me");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        next(&mut consumer).await.requeue().await.expect("requeue");
        let again = next(&mut consumer).await;
        assert_eq!(again.message, sent);
        assert_eq!(again.delivery_count, 2);
        again.ack().await.expect("ack");
        assert_no_delivery(&mut consumer, QUIET).await;
    }

    /// `retry_after(d)` hands the message back no sooner than `d`, and then does.
    pub(crate) async fn retry_after_waits_its_delay(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("later");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        let delay = Duration::from_millis(400);
        let retried_at = Instant::now();
        next(&mut consumer)
            .await
            .retry_after(delay)
            .await
            .expect("retry_after");
        assert_no_delivery(&mut consumer, delay / 2).await;
        let again = next(&mut consumer).await;
        assert!(
            retried_at.elapsed() >= delay,
            "redelivered after {:?}, before the delay of {delay:?}",
            retried_at.elapsed()
        );
        assert_eq!(again.message, sent);
        again.ack().await.expect("ack");
    }

    /// Retries for lack of a lock are not failed deliveries: however many, the message
    /// is not dead-lettered for them.
    pub(crate) async fn retry_after_does_not_count_towards_the_limit(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("patient");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        for _ in 0..TEST_DELIVERY_LIMIT + 2 {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.message.id, sent.id);
            delivery
                .retry_after(Duration::from_millis(10))
                .await
                .expect("retry_after");
        }
        next(&mut consumer).await.ack().await.expect("ack");
    }

    /// A dead-lettered message moves to the dead-letter queue with the reason, and
    /// leaves its own queue.
    pub(crate) async fn dead_letter_moves_the_message_with_its_reason(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent = message("poison");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        next(&mut consumer)
            .await
            .dead_letter("not a task dispatch")
            .await
            .expect("dead_letter");
        assert_no_delivery(&mut consumer, QUIET).await;

        let dead = dead_lettered(&broker, &sent.id).await;
        assert_eq!(dead.message.body, sent.body);
        assert_eq!(
            dead.message.headers.get(REASON_HEADER).map(String::as_str),
            Some("not a task dispatch")
        );
        dead.ack().await.expect("ack");
    }

    /// A consumer holds at most `prefetch` unsettled deliveries: the next one waits
    /// until one of them is settled.
    pub(crate) async fn prefetch_bounds_unsettled_deliveries(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent: Vec<Message> = (0..3).map(|idx| message(&format!("m{idx}"))).collect();
        for message in &sent {
            broker
                .publish(&queue, message.clone())
                .await
                .expect("publish");
        }
        let mut consumer = broker.consume(&queue, 2).await.expect("consume");
        let first = next(&mut consumer).await;
        let second = next(&mut consumer).await;
        assert_no_delivery(&mut consumer, QUIET).await;
        first.ack().await.expect("ack");
        let third = next(&mut consumer).await;
        assert_eq!(third.message.id, sent[2].id);
        assert_no_delivery(&mut consumer, QUIET).await;
        second.ack().await.expect("ack");
        third.ack().await.expect("ack");
    }

    /// A message requeued until the delivery limit lands in the dead-letter queue:
    /// it is delivered `TEST_DELIVERY_LIMIT` times, then never again on its queue.
    pub(crate) async fn a_message_past_the_delivery_limit_is_dead_lettered(
        broker: Arc<dyn Broker>,
    ) {
        let queue = unique("drover.test");
        let sent = message("doomed");
        broker.publish(&queue, sent.clone()).await.expect("publish");
        let mut consumer = broker.consume(&queue, 1).await.expect("consume");
        for count in 1..=TEST_DELIVERY_LIMIT {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.message.id, sent.id);
            assert_eq!(delivery.delivery_count, count);
            delivery.requeue().await.expect("requeue");
        }
        assert_no_delivery(&mut consumer, QUIET).await;

        let dead = dead_lettered(&broker, &sent.id).await;
        assert_eq!(dead.message.body, sent.body);
        assert!(
            dead.message.headers.contains_key(REASON_HEADER),
            "{:?}",
            dead.message.headers
        );
        dead.ack().await.expect("ack");
    }

    /// Consumers of one queue share its messages: each is delivered to one of them.
    pub(crate) async fn competing_consumers_share_a_queue(broker: Arc<dyn Broker>) {
        let queue = unique("drover.test");
        let sent: Vec<Message> = (0..20).map(|idx| message(&format!("m{idx}"))).collect();
        let n_consumers = 3;
        let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut workers = Vec::new();
        for _ in 0..n_consumers {
            let mut consumer = broker.consume(&queue, 2).await.expect("consume");
            let received_tx = received_tx.clone();
            workers.push(tokio::spawn(async move {
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery.expect("the delivery failed");
                    let id = delivery.message.id.clone();
                    delivery.ack().await.expect("ack");
                    if received_tx.send(id).is_err() {
                        break;
                    }
                }
            }));
        }
        for message in &sent {
            broker
                .publish(&queue, message.clone())
                .await
                .expect("publish");
        }
        let mut received = Vec::new();
        while received.len() < sent.len() {
            let id = timeout(PATIENCE, received_rx.recv())
                .await
                .expect("a message was not delivered")
                .expect("every consumer stopped");
            received.push(id);
        }
        // Anything more would be a message delivered twice.
        let extra = timeout(QUIET, received_rx.recv()).await;
        assert!(extra.is_err(), "a message was delivered twice: {extra:?}");
        for worker in workers {
            worker.abort();
        }
        received.sort();
        let mut expected: Vec<String> = sent.iter().map(|message| message.id.clone()).collect();
        expected.sort();
        assert_eq!(received, expected);
    }

    /// Progress events reach every subscriber, from the moment it subscribed on.
    pub(crate) async fn events_reach_every_subscriber(broker: Arc<dyn Broker>) {
        let tenant = TenantId::generate();
        let deployment = DeploymentId::generate();
        let skipped = |task: &str| Event::TaskSkipped {
            tenant,
            deployment,
            task: task.parse().expect("a valid task id"),
        };
        let before = skipped("deploy:early");
        broker.publish_event(&before).await.expect("publish_event");
        let mut subscribers = Vec::new();
        for _ in 0..3 {
            subscribers.push(broker.subscribe_events().await.expect("subscribe_events"));
        }
        let event = skipped("deploy:api");
        broker.publish_event(&event).await.expect("publish_event");
        for subscriber in &mut subscribers {
            // A shared broker carries other tests' events too.
            let received = timeout(PATIENCE, async {
                loop {
                    let received = subscriber.next().await.expect("the event stream closed");
                    if received.deployment() == deployment {
                        return received;
                    }
                }
            })
            .await
            .expect("a subscriber missed the event");
            assert_eq!(
                received, event,
                "a subscriber got an event from before it subscribed"
            );
        }
    }

    /// A subscriber to cancellations hears them, and no other event.
    pub(crate) async fn cancellation_subscribers_hear_only_cancellations(broker: Arc<dyn Broker>) {
        let tenant = TenantId::generate();
        let deployment = DeploymentId::generate();
        let mut cancellations = broker
            .subscribe_cancellations()
            .await
            .expect("subscribe_cancellations");
        let skipped = Event::TaskSkipped {
            tenant,
            deployment,
            task: "deploy:api".parse().expect("a valid task id"),
        };
        broker.publish_event(&skipped).await.expect("publish_event");
        let cancel = Event::CancelRequested { tenant, deployment };
        broker.publish_event(&cancel).await.expect("publish_event");
        // A shared broker carries other tests' cancellations too.
        let received = timeout(PATIENCE, async {
            loop {
                let received = cancellations.next().await.expect("the event stream closed");
                if received.deployment() == deployment {
                    return received;
                }
            }
        })
        .await
        .expect("the subscriber missed the cancellation");
        assert_eq!(
            received, cancel,
            "a subscriber to cancellations heard another event"
        );
    }
}

pub(crate) mod locks_suite {
    //! The `Locks` contract.

    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    fn key() -> String {
        unique("tenant/app/component")
    }

    async fn acquire(
        locks: &Arc<dyn Locks>,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Option<LockToken> {
        locks.acquire(key, holder, ttl).await.expect("acquire")
    }

    async fn holder(locks: &Arc<dyn Locks>, key: &str) -> Option<String> {
        locks.holder(key).await.expect("holder")
    }

    /// While one holds a lock nobody else takes it; other keys are free.
    pub(crate) async fn acquire_is_exclusive(locks: Arc<dyn Locks>) {
        let key = key();
        let token = acquire(&locks, &key, "worker-1", LONG).await;
        assert!(token.is_some());
        assert_eq!(acquire(&locks, &key, "worker-2", LONG).await, None);
        assert_eq!(
            acquire(&locks, &key, "worker-1", LONG).await,
            None,
            "a lock is not re-entrant"
        );
        let other = self::key();
        assert!(acquire(&locks, &other, "worker-2", LONG).await.is_some());
    }

    /// `holder` names who holds the lock, and nobody once it is released.
    pub(crate) async fn holder_names_the_holder(locks: Arc<dyn Locks>) {
        let key = key();
        assert_eq!(holder(&locks, &key).await, None);
        let token = acquire(&locks, &key, "worker-1 (deployment 7)", LONG)
            .await
            .expect("the lock is free");
        assert_eq!(
            holder(&locks, &key).await.as_deref(),
            Some("worker-1 (deployment 7)")
        );
        assert!(locks.release(&key, &token).await.expect("release"));
        assert_eq!(holder(&locks, &key).await, None);
    }

    /// Only the holder's token renews or releases a lock, and only once released is
    /// it free for another.
    pub(crate) async fn renew_and_release_need_the_token(locks: Arc<dyn Locks>) {
        let key = key();
        let token = acquire(&locks, &key, "worker-1", LONG)
            .await
            .expect("the lock is free");
        let forged = LockToken("forged".to_owned());
        assert!(!locks.renew(&key, &forged, LONG).await.expect("renew"));
        assert!(!locks.release(&key, &forged).await.expect("release"));
        assert_eq!(holder(&locks, &key).await.as_deref(), Some("worker-1"));
        assert!(locks.renew(&key, &token, LONG).await.expect("renew"));
        assert!(
            !locks.release(&self::key(), &token).await.expect("release"),
            "a token is for its own key"
        );

        assert!(locks.release(&key, &token).await.expect("release"));
        assert!(
            !locks.release(&key, &token).await.expect("release"),
            "released twice"
        );
        assert!(
            !locks.renew(&key, &token, LONG).await.expect("renew"),
            "renewed after release"
        );
        assert!(acquire(&locks, &key, "worker-2", LONG).await.is_some());
    }

    /// A lock nobody renews expires after its TTL, and another may then take it.
    pub(crate) async fn a_lock_expires_after_its_ttl(locks: Arc<dyn Locks>) {
        let key = key();
        let ttl = Duration::from_millis(100);
        let token = acquire(&locks, &key, "worker-1", ttl)
            .await
            .expect("the lock is free");
        assert_eq!(acquire(&locks, &key, "worker-2", LONG).await, None);
        tokio::time::sleep(ttl * 3).await;
        assert_eq!(holder(&locks, &key).await, None);
        assert!(
            !locks.renew(&key, &token, LONG).await.expect("renew"),
            "renewed an expired lock"
        );
        assert!(acquire(&locks, &key, "worker-2", LONG).await.is_some());
        assert_eq!(holder(&locks, &key).await.as_deref(), Some("worker-2"));
    }

    /// Renewing pushes the expiry out by the new TTL.
    pub(crate) async fn renew_extends_the_ttl(locks: Arc<dyn Locks>) {
        let key = key();
        let ttl = Duration::from_millis(200);
        let token = acquire(&locks, &key, "worker-1", ttl)
            .await
            .expect("the lock is free");
        tokio::time::sleep(ttl / 2).await;
        assert!(
            locks
                .renew(&key, &token, Duration::from_secs(2))
                .await
                .expect("renew")
        );
        tokio::time::sleep(ttl).await;
        assert_eq!(holder(&locks, &key).await.as_deref(), Some("worker-1"));
        assert_eq!(acquire(&locks, &key, "worker-2", LONG).await, None);
    }

    /// Many locks are renewed at once: each answer, in the order asked, says whether
    /// that token still held its lock; the locks it did not hold keep their holders.
    /// (That only the held ones are extended is checked per adapter: paused time
    /// for the in-process locks, the keys' TTLs on Redis.)
    pub(crate) async fn many_locks_are_renewed_at_once(locks: Arc<dyn Locks>) {
        let (held, released, taken_over) = (key(), key(), key());
        let token = acquire(&locks, &held, "worker-1", LONG)
            .await
            .expect("the lock is free");
        let gone = acquire(&locks, &released, "worker-1", LONG)
            .await
            .expect("the lock is free");
        assert!(locks.release(&released, &gone).await.expect("release"));
        acquire(&locks, &taken_over, "worker-2", LONG)
            .await
            .expect("the lock is free");
        let forged = LockToken("forged".to_owned());
        let spaced = LockToken("has a space".to_owned());
        let renewed = locks
            .renew_all(
                &[
                    (&released, &gone),
                    (&held, &token),
                    (&taken_over, &forged),
                    (&taken_over, &spaced),
                ],
                LONG,
            )
            .await
            .expect("renew_all");
        assert_eq!(renewed, [false, true, false, false]);
        assert_eq!(
            locks.renew_all(&[], LONG).await.expect("renew_all"),
            Vec::<bool>::new()
        );
        assert_eq!(holder(&locks, &held).await.as_deref(), Some("worker-1"));
        assert_eq!(holder(&locks, &released).await, None);
        assert_eq!(
            holder(&locks, &taken_over).await.as_deref(),
            Some("worker-2")
        );
    }

    /// The holder whose lock expired and was taken cannot release or renew the new
    /// holder's lock with its stale token.
    pub(crate) async fn a_stale_token_cannot_touch_the_new_holder(locks: Arc<dyn Locks>) {
        let key = key();
        let ttl = Duration::from_millis(100);
        let stale = acquire(&locks, &key, "worker-1", ttl)
            .await
            .expect("the lock is free");
        tokio::time::sleep(ttl * 3).await;
        let fresh = acquire(&locks, &key, "worker-2", LONG)
            .await
            .expect("the expired lock is free");
        assert_ne!(stale, fresh);
        assert!(!locks.release(&key, &stale).await.expect("release"));
        assert!(!locks.renew(&key, &stale, LONG).await.expect("renew"));
        assert_eq!(holder(&locks, &key).await.as_deref(), Some("worker-2"));
        assert!(locks.release(&key, &fresh).await.expect("release"));
    }
}

// ---- the suites, once per adapter ----

/// One `#[tokio::test]` per case of `$suite`, each on a fresh adapter from `$connect`
/// (an async expression). Usable from the modules declared after `ports` in
/// `main.rs` (`#[macro_use]`), one per real adapter.
macro_rules! port_suite {
    ($suite:ident, $adapter:ident, $connect:expr; $($case:ident),+ $(,)?) => {
        mod $adapter {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    crate::ports::$suite::$case($connect.await).await;
                }
            )+
        }
    };
}

/// The broker suite for one adapter, built with `TEST_DELIVERY_LIMIT`.
macro_rules! broker_suite {
    ($adapter:ident, $connect:expr) => {
        port_suite!(broker_suite, $adapter, $connect;
            publish_consume_ack,
            deliveries_keep_publish_order,
            an_unsettled_delivery_comes_back,
            requeue_redelivers,
            retry_after_waits_its_delay,
            retry_after_does_not_count_towards_the_limit,
            dead_letter_moves_the_message_with_its_reason,
            prefetch_bounds_unsettled_deliveries,
            a_message_past_the_delivery_limit_is_dead_lettered,
            competing_consumers_share_a_queue,
            events_reach_every_subscriber,
            cancellation_subscribers_hear_only_cancellations,
        );
    };
}

/// The locks suite for one adapter.
macro_rules! locks_suite {
    ($adapter:ident, $connect:expr) => {
        port_suite!(locks_suite, $adapter, $connect;
            acquire_is_exclusive,
            holder_names_the_holder,
            renew_and_release_need_the_token,
            a_lock_expires_after_its_ttl,
            renew_extends_the_ttl,
            many_locks_are_renewed_at_once,
            a_stale_token_cannot_touch_the_new_holder,
        );
    };
}

async fn memory_broker() -> Arc<dyn Broker> {
    Arc::new(MemoryBroker::with_delivery_limit(TEST_DELIVERY_LIMIT))
}

async fn memory_locks() -> Arc<dyn Locks> {
    Arc::new(MemoryLocks::new())
}

mod broker {
    use super::*;
    broker_suite!(memory, memory_broker());
}

mod locks {
    use super::*;
    locks_suite!(memory, memory_locks());

    /// MemoryLocks keeps time with `tokio::time`, so expiry is exact under paused time.
    /// Renewing many in-process locks at once extends only those whose token holds
    /// them.
    #[tokio::test(start_paused = true)]
    async fn memory_renew_all_extends_only_the_held_locks() {
        let locks = MemoryLocks::new();
        let ttl = Duration::from_secs(30);
        let ours = locks
            .acquire("t/a/ours", "worker-1", ttl)
            .await
            .expect("acquire")
            .expect("the lock is free");
        locks
            .acquire("t/a/theirs", "worker-2", ttl)
            .await
            .expect("acquire")
            .expect("the lock is free");
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        let forged = LockToken("forged".to_owned());
        let renewed = locks
            .renew_all(&[("t/a/ours", &ours), ("t/a/theirs", &forged)], ttl)
            .await
            .expect("renew_all");
        assert_eq!(renewed, [true, false]);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            locks.holder("t/a/ours").await.expect("holder").as_deref(),
            Some("worker-1")
        );
        assert_eq!(locks.holder("t/a/theirs").await.expect("holder"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_expiry_is_deterministic_under_paused_time() {
        let locks = MemoryLocks::new();
        let ttl = Duration::from_secs(30);
        let token = locks
            .acquire("t/a/c", "worker-1", ttl)
            .await
            .expect("acquire")
            .expect("the lock is free");
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert_eq!(
            locks.holder("t/a/c").await.expect("holder").as_deref(),
            Some("worker-1")
        );
        assert!(locks.renew("t/a/c", &token, ttl).await.expect("renew"));

        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert_eq!(
            locks.holder("t/a/c").await.expect("holder").as_deref(),
            Some("worker-1")
        );
        assert_eq!(
            locks
                .acquire("t/a/c", "worker-2", ttl)
                .await
                .expect("acquire"),
            None
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(locks.holder("t/a/c").await.expect("holder"), None);
        assert!(!locks.renew("t/a/c", &token, ttl).await.expect("renew"));
        let taken = locks
            .acquire("t/a/c", "worker-2", ttl)
            .await
            .expect("acquire");
        assert!(taken.is_some());
        assert!(!locks.release("t/a/c", &token).await.expect("release"));
    }
}
