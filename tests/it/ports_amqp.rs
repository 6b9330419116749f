//! The broker suite against RabbitMQ, and what only RabbitMQ has: quorum queues
//! with a delivery limit, per-delay queues, and connections that get lost.
//!
//! RabbitMQ must be running (`DROVER_TEST_AMQP_URL`, by default the local one with
//! guest/guest) and `rabbitmqctl` must reach its node: a missing broker fails these
//! tests. Each test uses a queue and exchange prefix (and connection name) of its
//! own, and what it declares expires soon after it ends. Faults are confined to
//! the test's own connection — closed by `rabbitmqctl close_connection`, or cut,
//! refused or stalled by a proxy of its own — so that parallel tests go on undisturbed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::broker::{
    AmqpBroker, AmqpOptions, Broker, BrokerError, Consumer, DEAD_LETTER_QUEUE, Delivery, Message,
    REASON_HEADER, TASKS_QUEUE,
};
use tokio::time::{Instant, sleep, timeout};

use crate::ports::TEST_DELIVERY_LIMIT;
use crate::support::amqp_url;

/// How long anything expected is waited for before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long something that must not happen is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// Options with a prefix (and connection name) of the test's own.
fn test_options() -> AmqpOptions {
    let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
    AmqpOptions {
        connection_name: format!("drover-{prefix}"),
        prefix,
        delivery_limit: TEST_DELIVERY_LIMIT,
        queue_expiry: Some(Duration::from_secs(120)),
        ..AmqpOptions::default()
    }
}

async fn connect(url: &str, options: AmqpOptions) -> AmqpBroker {
    AmqpBroker::connect(url, options)
        .await
        .unwrap_or_else(|err| panic!("RabbitMQ is required for this test: {err}"))
}

async fn amqp_broker() -> Arc<dyn Broker> {
    Arc::new(connect(&amqp_url(), test_options()).await)
}

mod broker {
    use super::*;
    broker_suite!(amqp, amqp_broker());
}

// ---- helpers ----

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

/// Runs `rabbitmqctl` with `args`; its standard output.
fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("rabbitmqctl is required for this test: {err}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rabbitmqctl list_<what> <columns…> --formatter json`, as JSON objects.
fn list(what: &str, columns: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![what];
    args.extend_from_slice(columns);
    args.extend_from_slice(&["--formatter", "json", "--quiet"]);
    let out = rabbitmqctl(&args);
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("rabbitmqctl {args:?}: {err}: {out}"))
}

/// The value of argument `key` in a `list_queues … arguments` row
/// (`[[key, type, value], …]`).
fn argument(queue: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    queue["arguments"]
        .as_array()?
        .iter()
        .find(|triple| triple[0] == key)
        .map(|triple| triple[2].clone())
}

/// Closes every connection named `connection_name` on the RabbitMQ node; how many.
fn close_connections_named(connection_name: &str) -> usize {
    let out = rabbitmqctl(&["list_connections", "pid", "client_properties", "--quiet"]);
    let pids: Vec<String> = out
        .lines()
        .filter(|line| line.contains(connection_name))
        .filter_map(|line| line.split('\t').next())
        .map(str::to_owned)
        .collect();
    for pid in &pids {
        rabbitmqctl(&[
            "close_connection",
            pid,
            "drover test: closing the connection",
        ]);
    }
    pids.len()
}

/// A TCP proxy in front of RabbitMQ that a test can cut, close or stall, to lose
/// its own connection without touching anyone else's.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// New connections are closed at once.
    refusing: AtomicBool,
    /// Bytes are held until the proxy resumes.
    paused: AtomicBool,
    /// Both ends of every connection so far, to cut them.
    streams: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    fn start() -> Proxy {
        let target = amqp_target();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(ProxyState::default());
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut streams = accepting.streams.lock().expect("the proxy's streams");
                for stream in [&client, &server] {
                    if let Ok(stream) = stream.try_clone() {
                        streams.push(stream);
                    }
                }
                drop(streams);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let state = accepting.clone();
                    std::thread::spawn(move || forward(from, to, &state));
                }
            }
        });
        Proxy { addr, state }
    }

    /// The test URL, through the proxy.
    fn url(&self) -> String {
        let url = amqp_url();
        let (scheme, rest) = url.split_once("://").expect("an AMQP URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let userinfo = authority
            .rsplit_once('@')
            .map_or(String::new(), |(userinfo, _)| format!("{userinfo}@"));
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }

    /// Closes every connection made so far, as a network failure would.
    fn cut(&self) {
        for stream in self
            .state
            .streams
            .lock()
            .expect("the proxy's streams")
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Closes new connections at once: RabbitMQ is unreachable.
    fn refuse(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
    }

    /// Holds (or releases) every byte: the connection stalls.
    fn pause(&self, paused: bool) {
        self.state.paused.store(paused, Ordering::SeqCst);
    }
}

/// Where the test RabbitMQ listens.
fn amqp_target() -> SocketAddr {
    let url = amqp_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve the RabbitMQ address `{host_port}`"))
}

fn forward(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while state.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Waits until `broker` answers again (it reconnects in the background).
async fn until_connected(broker: &AmqpBroker) {
    let deadline = Instant::now() + PATIENCE;
    while let Err(err) = broker.check_connectivity().await {
        assert!(Instant::now() < deadline, "never reconnected: {err}");
        sleep(Duration::from_millis(100)).await;
    }
}

// ---- topology ----

/// Work queues are quorum queues with an explicit delivery limit (in RabbitMQ's
/// terms: returns, one less than deliveries) and the dead-letter exchange; the
/// dead-letter queue is a quorum queue bound to that exchange.
#[tokio::test]
async fn queues_are_quorum_with_a_delivery_limit_and_dead_letter_exchange() {
    let options = test_options();
    let prefix = options.prefix.clone();
    let broker = connect(&amqp_url(), options).await;
    broker
        .publish(TASKS_QUEUE, Message::new("m1", b"{}".to_vec()))
        .await
        .expect("publish");

    let queues = list("list_queues", &["name", "type", "arguments"]);
    let queue = |name: &str| {
        queues
            .iter()
            .find(|queue| queue["name"] == format!("{prefix}{name}"))
            .unwrap_or_else(|| panic!("no queue {prefix}{name} in {queues:?}"))
            .clone()
    };
    let tasks = queue(TASKS_QUEUE);
    assert_eq!(tasks["type"], "quorum", "{tasks}");
    assert_eq!(
        argument(&tasks, "x-delivery-limit"),
        Some(serde_json::json!(TEST_DELIVERY_LIMIT - 1)),
        "{tasks}"
    );
    assert_eq!(
        argument(&tasks, "x-dead-letter-exchange"),
        Some(serde_json::json!(format!("{prefix}drover.dead-letter"))),
        "{tasks}"
    );
    let dead = queue(DEAD_LETTER_QUEUE);
    assert_eq!(dead["type"], "quorum", "{dead}");
    assert_eq!(argument(&dead, "x-dead-letter-exchange"), None, "{dead}");

    let bindings = list("list_bindings", &["source_name", "destination_name"]);
    assert!(
        bindings.iter().any(|binding| {
            binding["source_name"] == format!("{prefix}drover.dead-letter")
                && binding["destination_name"] == format!("{prefix}{DEAD_LETTER_QUEUE}")
        }),
        "the dead-letter queue is not bound to the dead-letter exchange"
    );
}

/// Messages retried with different delays wait in different queues, and each
/// comes back once, after its own delay.
#[tokio::test]
async fn different_delays_do_not_mix() {
    let broker = amqp_broker().await;
    let queue = "drover.test.delays";
    broker
        .publish(queue, Message::new("short", b"short".to_vec()))
        .await
        .expect("publish");
    broker
        .publish(queue, Message::new("long", b"long".to_vec()))
        .await
        .expect("publish");
    let mut consumer = broker.consume(queue, 10).await.expect("consume");
    let retried_at = Instant::now();
    for _ in 0..2 {
        let delivery = next(&mut consumer).await;
        let delay = if delivery.message.id == "short" {
            300
        } else {
            900
        };
        delivery
            .retry_after(Duration::from_millis(delay))
            .await
            .expect("retry_after");
    }
    let first = next(&mut consumer).await;
    assert_eq!(first.message.id, "short");
    assert!(retried_at.elapsed() >= Duration::from_millis(300));
    first.ack().await.expect("ack");
    let second = next(&mut consumer).await;
    assert_eq!(second.message.id, "long");
    assert!(retried_at.elapsed() >= Duration::from_millis(900));
    second.ack().await.expect("ack");
    assert_no_delivery(&mut consumer, Duration::from_secs(1)).await;
}

/// With a queue expiry, a broker leaves nothing behind: its queues expire and its
/// exchanges go with them.
#[tokio::test]
async fn nothing_is_left_behind_once_queues_expire() {
    let options = AmqpOptions {
        queue_expiry: Some(Duration::from_secs(1)),
        ..test_options()
    };
    let prefix = options.prefix.clone();
    let broker = connect(&amqp_url(), options).await;
    broker
        .publish("drover.test.expiry", Message::new("m1", b"m1".to_vec()))
        .await
        .expect("publish");
    let mut consumer = broker
        .consume("drover.test.expiry", 1)
        .await
        .expect("consume");
    next(&mut consumer)
        .await
        .retry_after(Duration::from_millis(50))
        .await
        .expect("retry_after");
    next(&mut consumer).await.ack().await.expect("ack");
    let events = broker.subscribe_events().await.expect("subscribe_events");
    let ours = |rows: Vec<serde_json::Value>| -> Vec<String> {
        rows.iter()
            .filter_map(|row| row["name"].as_str())
            .filter(|name| name.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ours(list("list_exchanges", &["name"])).len(), 3);
    drop((events, consumer, broker));

    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<String> = ours(list("list_queues", &["name"]))
            .into_iter()
            .chain(ours(list("list_exchanges", &["name"])))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {left:?}");
        sleep(Duration::from_millis(500)).await;
    }
}

// ---- connection loss ----

/// A consumer survives its connection being closed by RabbitMQ
/// (`rabbitmqctl close_connection`, on this test's connection only): the delivery
/// it held cannot be acknowledged any more and comes back, and publishing and
/// consuming go on.
#[tokio::test]
async fn a_consumer_survives_its_connection_being_closed() {
    let options = test_options();
    let connection_name = options.connection_name.clone();
    let broker = connect(&amqp_url(), options).await;
    let queue = "drover.test.closed";
    broker
        .publish(queue, Message::new("before", b"before".to_vec()))
        .await
        .expect("publish");
    let mut consumer = broker.consume(queue, 1).await.expect("consume");
    let held = next(&mut consumer).await;
    assert_eq!(held.delivery_count, 1);

    assert_eq!(close_connections_named(&connection_name), 1);
    sleep(QUIET).await;
    let err = held
        .ack()
        .await
        .expect_err("acknowledged on a closed connection");
    assert!(matches!(err, BrokerError::Settle { .. }), "{err}");

    let again = next(&mut consumer).await;
    assert_eq!(again.message.id, "before");
    assert!(again.delivery_count >= 2, "{}", again.delivery_count);
    again.ack().await.expect("ack");
    broker
        .publish(queue, Message::new("after", b"after".to_vec()))
        .await
        .expect("publish after reconnecting");
    let after = next(&mut consumer).await;
    assert_eq!(after.message.id, "after");
    after.ack().await.expect("ack");
    assert_no_delivery(&mut consumer, QUIET).await;
    broker.check_connectivity().await.expect("connected again");
}

/// After a network failure the broker reconnects by itself: the consumer is
/// re-created, unsettled messages come back, nothing is lost or doubled.
#[tokio::test]
async fn reconnects_after_a_network_failure() {
    let proxy = Proxy::start();
    let broker = connect(&proxy.url(), test_options()).await;
    let queue = "drover.test.cut";
    for id in ["m1", "m2"] {
        broker
            .publish(queue, Message::new(id, id.as_bytes().to_vec()))
            .await
            .expect("publish");
    }
    let mut consumer = broker.consume(queue, 1).await.expect("consume");
    let first = next(&mut consumer).await;
    assert_eq!(first.message.id, "m1");

    proxy.cut();
    sleep(QUIET).await;
    assert!(
        first.ack().await.is_err(),
        "acknowledged on a cut connection"
    );
    until_connected(&broker).await;
    broker
        .publish(queue, Message::new("m3", b"m3".to_vec()))
        .await
        .expect("publish after reconnecting");
    let mut received = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut consumer).await;
        received.push(delivery.message.id.clone());
        delivery.ack().await.expect("ack");
    }
    // Where a message returned by a lost channel goes back in the queue differs
    // between RabbitMQ versions; that each comes exactly once does not.
    received.sort();
    assert_eq!(received, ["m1", "m2", "m3"]);
    assert_no_delivery(&mut consumer, QUIET).await;
}

/// A delivery at the limit whose channel dies is dead-lettered by RabbitMQ itself,
/// and read from the dead-letter queue with a reason.
#[tokio::test]
async fn rabbitmq_dead_letters_at_the_limit_with_a_reason() {
    let proxy = Proxy::start();
    let broker = connect(&proxy.url(), test_options()).await;
    let queue = "drover.test.crashing";
    broker
        .publish(queue, Message::new("crash", b"crash".to_vec()))
        .await
        .expect("publish");
    let mut consumer = broker.consume(queue, 1).await.expect("consume");
    for count in 1..TEST_DELIVERY_LIMIT {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.delivery_count, count);
        delivery.requeue().await.expect("requeue");
    }
    let last = next(&mut consumer).await;
    assert_eq!(last.delivery_count, TEST_DELIVERY_LIMIT);
    // The worker "crashes" with it: its connection dies before it can settle.
    proxy.cut();
    sleep(QUIET).await;
    drop(last);

    assert_no_delivery(&mut consumer, Duration::from_secs(1)).await;
    let mut dead_letters = broker
        .consume(DEAD_LETTER_QUEUE, 10)
        .await
        .expect("consume the dead-letter queue");
    let dead = next(&mut dead_letters).await;
    assert_eq!(dead.message.id, "crash");
    let reason = dead
        .message
        .headers
        .get(REASON_HEADER)
        .expect("a reason")
        .clone();
    assert!(reason.contains("delivery limit"), "{reason}");
    assert!(reason.contains(queue), "{reason}");
    dead.ack().await.expect("ack");
}

/// A publish whose confirm does not come in time is published again with the same
/// message id: the message arrives, maybe twice, never under another id.
#[tokio::test]
async fn an_unconfirmed_publish_is_repeated_with_the_same_id() {
    let proxy = Proxy::start();
    let options = AmqpOptions {
        confirm_timeout: Duration::from_millis(300),
        ..test_options()
    };
    let broker = Arc::new(connect(&proxy.url(), options).await);
    let queue = "drover.test.unconfirmed";
    let mut consumer = broker.consume(queue, 10).await.expect("consume");
    // Once published to, the queue is known: the next publish goes straight out and
    // stalls waiting for its confirm.
    broker
        .publish(queue, Message::new("warm-up", b"warm-up".to_vec()))
        .await
        .expect("publish");
    next(&mut consumer).await.ack().await.expect("ack");

    proxy.pause(true);
    let publishing = tokio::spawn({
        let broker = broker.clone();
        async move {
            broker
                .publish(queue, Message::new("once", b"once".to_vec()))
                .await
        }
    });
    sleep(Duration::from_secs(1)).await;
    proxy.pause(false);
    timeout(PATIENCE, publishing)
        .await
        .expect("the publish never ended")
        .expect("the publish panicked")
        .expect("publish");

    let mut n_copies = 0;
    while let Ok(Some(delivery)) = timeout(Duration::from_secs(1), consumer.next()).await {
        let delivery = delivery.expect("the delivery failed");
        assert_eq!(delivery.message.id, "once");
        delivery.ack().await.expect("ack");
        n_copies += 1;
    }
    assert_eq!(n_copies, 2, "the unconfirmed copy and its republished twin");
}

/// When RabbitMQ stays away past the reconnection timeout the broker gives up:
/// operations fail with a connection error and consumers end, so that the process
/// can exit for its supervisor to restart it.
#[tokio::test]
async fn gives_up_when_rabbitmq_stays_away() {
    let proxy = Proxy::start();
    let options = AmqpOptions {
        reconnect_timeout: Duration::from_secs(1),
        ..test_options()
    };
    let broker = connect(&proxy.url(), options).await;
    let queue = "drover.test.away";
    let mut consumer = broker.consume(queue, 1).await.expect("consume");

    proxy.refuse();
    proxy.cut();
    let ended = timeout(PATIENCE, consumer.next())
        .await
        .expect("the consumer neither ended nor delivered");
    assert!(ended.is_none(), "{ended:?}");
    let err = broker
        .publish(queue, Message::new("m1", b"m1".to_vec()))
        .await
        .expect_err("published without RabbitMQ");
    assert!(matches!(err, BrokerError::GaveUp(_)), "{err}");
    assert!(!err.is_transient(), "giving up is for good: {err}");
    let err = broker
        .check_connectivity()
        .await
        .expect_err("connected without RabbitMQ");
    assert!(matches!(err, BrokerError::GaveUp(_)), "{err}");
}

/// A RabbitMQ that is not there at start-up is an error, not a hang.
#[tokio::test]
async fn connecting_to_nothing_fails() {
    let proxy = Proxy::start();
    proxy.refuse();
    let err = timeout(PATIENCE, AmqpBroker::connect(&proxy.url(), test_options()))
        .await
        .expect("connect hung")
        .expect_err("connected to nothing");
    assert!(matches!(err, BrokerError::Connection(_)), "{err}");
}
