//! The `Locks` port against Redis: the shared locks suite, plus what only Redis can
//! show — the TTL Redis keeps on the key, another client's value left alone, and a
//! lock whose key vanished (as after a restart without data).
//!
//! Redis is required: a missing server fails these tests, never skips them. Each test
//! has its own key prefix, so they share one Redis (`DROVER_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) with each other and with anything else; they never flush
//! or stop it.

use std::sync::Arc;
use std::time::Duration;

use crate::support::redis_url;
use redis::aio::MultiplexedConnection;
use shared::locks::{LockError, LockToken, Locks, RedisLocks};

const LONG: Duration = Duration::from_secs(30);

/// A key prefix of one test's own.
fn test_prefix() -> String {
    format!("test-{}:", uuid::Uuid::new_v4().simple())
}

fn unique_key() -> String {
    format!("tenant/app/component-{}", uuid::Uuid::new_v4().simple())
}

/// Locks under `prefix`. Panics (failing the test) when Redis is not reachable.
async fn connect(prefix: &str) -> RedisLocks {
    let url = redis_url();
    RedisLocks::connect(&url, prefix).await.unwrap_or_else(|err| {
        panic!(
            "Redis at {url} is required for this test (start it with `redis-server --daemonize yes \
             --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`): {err}"
        )
    })
}

/// Fresh locks for one case of the suite.
async fn redis_locks() -> Arc<dyn Locks> {
    Arc::new(connect(&test_prefix()).await)
}

mod locks {
    use super::*;
    locks_suite!(redis, redis_locks());
}

/// One test's locks, with a plain connection of its own to look at and tamper with
/// the keys behind them, as another client would.
struct Fixture {
    locks: RedisLocks,
    prefix: String,
    raw: MultiplexedConnection,
}

impl Fixture {
    async fn new() -> Fixture {
        let prefix = test_prefix();
        let locks = connect(&prefix).await;
        let raw = redis::Client::open(redis_url())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a plain connection to Redis");
        Fixture { locks, prefix, raw }
    }

    /// The Redis key behind the lock `key`.
    fn raw_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(self.raw_key(key))
            .query_async(&mut self.raw.clone())
            .await
            .expect("GET")
    }

    /// The key's remaining time to live in milliseconds (-2: no key, -1: no TTL).
    async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(self.raw_key(key))
            .query_async(&mut self.raw.clone())
            .await
            .expect("PTTL")
    }

    /// Writes the lock `key` as another drover process holding `token` would.
    async fn set_foreign(&self, key: &str, token: &str, holder: &str, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).expect("a short TTL");
        redis::cmd("SET")
            .arg(self.raw_key(key))
            .arg(format!("{token} {holder}"))
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut self.raw.clone())
            .await
            .expect("SET");
    }

    /// Deletes the key behind the lock `key`, as a Redis restarted without its data
    /// would have lost it (without disturbing anyone else's keys).
    async fn lose(&self, key: &str) {
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.raw_key(key))
            .query_async(&mut self.raw.clone())
            .await
            .expect("DEL");
        assert_eq!(deleted, 1, "the lock's key was there to lose");
    }

    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Option<LockToken> {
        self.locks.acquire(key, holder, ttl).await.expect("acquire")
    }

    async fn renew(&self, key: &str, token: &LockToken, ttl: Duration) -> bool {
        self.locks.renew(key, token, ttl).await.expect("renew")
    }

    async fn release(&self, key: &str, token: &LockToken) -> bool {
        self.locks.release(key, token).await.expect("release")
    }

    async fn holder(&self, key: &str) -> Option<String> {
        self.locks.holder(key).await.expect("holder")
    }
}

/// The lock is one key under the prefix, `<token> <holder>`, with Redis keeping its
/// TTL: set by `acquire`, replaced by `renew`, gone with `release`.
#[tokio::test]
async fn the_lock_is_a_prefixed_key_with_a_px_ttl() {
    let fixture = Fixture::new().await;
    let key = unique_key();
    let token = fixture
        .acquire(&key, "worker-1 (deployment 7)", LONG)
        .await
        .expect("the lock is free");
    assert_eq!(
        fixture.get(&key).await,
        Some(format!("{} worker-1 (deployment 7)", token.0))
    );
    let ttl = fixture.pttl(&key).await;
    assert!(0 < ttl && ttl <= 30_000, "PTTL after acquire: {ttl}");

    assert!(fixture.renew(&key, &token, Duration::from_secs(60)).await);
    let ttl = fixture.pttl(&key).await;
    assert!(30_000 < ttl && ttl <= 60_000, "PTTL after renew: {ttl}");

    assert!(fixture.release(&key, &token).await);
    assert_eq!(fixture.pttl(&key).await, -2, "the key outlived its release");
}

/// Renewing many locks at once replaces the TTL of each key its token holds, in one
/// call, and leaves the others' TTLs as they were.
#[tokio::test]
async fn renew_all_replaces_the_ttls_of_the_held_keys_only() {
    let fixture = Fixture::new().await;
    let (ours, theirs) = (unique_key(), unique_key());
    let token = fixture
        .acquire(&ours, "worker-1", LONG)
        .await
        .expect("the lock is free");
    fixture
        .acquire(&theirs, "worker-2", LONG)
        .await
        .expect("the lock is free");
    let forged = LockToken("forged".to_owned());
    let renewed = fixture
        .locks
        .renew_all(
            &[(&ours, &token), (&theirs, &forged)],
            Duration::from_secs(60),
        )
        .await
        .expect("renew_all");
    assert_eq!(renewed, [true, false]);
    let ttl = fixture.pttl(&ours).await;
    assert!(
        30_000 < ttl && ttl <= 60_000,
        "PTTL of the renewed key: {ttl}"
    );
    let ttl = fixture.pttl(&theirs).await;
    assert!(0 < ttl && ttl <= 30_000, "PTTL of the key not ours: {ttl}");
}

/// A lock another client holds (with its own token) is neither renewed nor released
/// by anyone else, even with a token that is a prefix of its own or one that held the
/// lock before; its value and TTL stay as that client wrote them.
#[tokio::test]
async fn another_clients_lock_is_neither_renewed_nor_released() {
    let fixture = Fixture::new().await;
    let key = unique_key();
    let theirs = uuid::Uuid::new_v4().simple().to_string();
    fixture.set_foreign(&key, &theirs, "worker-b", LONG).await;
    let written = fixture.get(&key).await;

    assert_eq!(fixture.acquire(&key, "worker-a", LONG).await, None);
    assert_eq!(fixture.holder(&key).await.as_deref(), Some("worker-b"));
    let elsewhere = fixture
        .acquire(&unique_key(), "worker-a", LONG)
        .await
        .expect("another key is free");
    let prefix_of_theirs = LockToken(theirs[..8].to_owned());
    let with_their_holder = LockToken(format!("{theirs} worker-b"));
    for token in [&elsewhere, &prefix_of_theirs, &with_their_holder] {
        assert!(!fixture.renew(&key, token, Duration::from_secs(60)).await);
        assert!(!fixture.release(&key, token).await);
    }
    assert_eq!(fixture.get(&key).await, written);
    let ttl = fixture.pttl(&key).await;
    assert!(0 < ttl && ttl <= 30_000, "their TTL was changed: {ttl}");

    // Our lock, lost and taken by the other client meanwhile: our token is stale.
    let key = unique_key();
    let ours = fixture
        .acquire(&key, "worker-a", LONG)
        .await
        .expect("the lock is free");
    fixture.set_foreign(&key, &theirs, "worker-b", LONG).await;
    assert!(!fixture.renew(&key, &ours, Duration::from_secs(60)).await);
    assert!(!fixture.release(&key, &ours).await);
    assert_eq!(fixture.holder(&key).await.as_deref(), Some("worker-b"));
    let ttl = fixture.pttl(&key).await;
    assert!(0 < ttl && ttl <= 30_000, "their TTL was changed: {ttl}");
}

/// When the lock's key disappears (Redis restarted without its data), renewal
/// answers `false` so the holder stops renewing, and another holder may take it;
/// the old token then touches nothing.
#[tokio::test]
async fn a_lock_whose_key_vanished_is_lost() {
    let fixture = Fixture::new().await;
    let key = unique_key();
    let stale = fixture
        .acquire(&key, "worker-1", LONG)
        .await
        .expect("the lock is free");
    fixture.lose(&key).await;

    assert!(!fixture.renew(&key, &stale, LONG).await);
    assert_eq!(fixture.pttl(&key).await, -2, "renew brought the key back");
    assert_eq!(fixture.holder(&key).await, None);

    let fresh = fixture
        .acquire(&key, "worker-2", LONG)
        .await
        .expect("the lost lock is free");
    assert!(!fixture.renew(&key, &stale, LONG).await);
    assert!(!fixture.release(&key, &stale).await);
    assert_eq!(fixture.holder(&key).await.as_deref(), Some("worker-2"));
    assert!(fixture.release(&key, &fresh).await);
}

/// Two installations (two prefixes) on one Redis lock the same key independently.
#[tokio::test]
async fn prefixes_keep_installations_apart() {
    let first = connect(&test_prefix()).await;
    let second = connect(&test_prefix()).await;
    let key = unique_key();
    let token = first
        .acquire(&key, "first", LONG)
        .await
        .expect("acquire")
        .expect("the lock is free");
    assert!(
        second
            .acquire(&key, "second", LONG)
            .await
            .expect("acquire")
            .is_some()
    );
    assert_eq!(
        second.holder(&key).await.expect("holder").as_deref(),
        Some("second")
    );
    assert!(!second.release(&key, &token).await.expect("release"));
    assert_eq!(
        first.holder(&key).await.expect("holder").as_deref(),
        Some("first")
    );
}

/// A Redis that cannot be reached is a transient connection error naming the server,
/// without the URL's password.
#[tokio::test]
async fn an_unreachable_redis_is_a_connection_error_without_the_password() {
    let err = RedisLocks::connect("redis://drover:hunter2@127.0.0.1:1/0", &test_prefix())
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, LockError::Connection(_)), "{err:?}");
    assert!(
        err.to_string().contains("redis://drover:***@127.0.0.1:1/0"),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    assert!(err.is_transient());
}
