//! Locks in Redis for the distributed fleet: `SET NX PX` with a random token,
//! renewal by a compare-and-pexpire script and release by a compare-and-delete
//! script, so that only the holder of a lock can extend or free it.
//!
//! The lock `key` lives at `{prefix}lock:{key}`; its value is `<token> <holder>`
//! (tokens contain no spaces, holders may). A lock lost to expiry or to a Redis that
//! restarted without its data simply makes `renew` answer `false`: the lock is for
//! efficiency, the store's fence keeps a stale holder from recording anything.

use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use async_trait::async_trait;
use tracing::debug;

use super::{LockError, LockToken, Locks};
use crate::config::redact_url;

/// How long one command may wait for Redis's answer before it fails (transiently).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt to open a connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Extends each lock at `KEYS[i]` to `ARGV[#KEYS + 1]` milliseconds if its value
/// starts with the token `ARGV[i]` and a space; answers, for each, 1 when it did and
/// 0 when the lock is lost.
const RENEW: &str = r"
local ttl = ARGV[#KEYS + 1]
local renewed = {}
for i, key in ipairs(KEYS) do
    local value = redis.call('GET', key)
    local ours = ARGV[i] .. ' '
    if value and string.sub(value, 1, string.len(ours)) == ours then
        renewed[i] = redis.call('PEXPIRE', key, ttl)
    else
        renewed[i] = 0
    end
end
return renewed
";

/// Deletes the lock at `KEYS[1]` if its value starts with the token `ARGV[1]` and a
/// space; answers 1 when it did, 0 when the lock was already lost.
const RELEASE: &str = r"
local value = redis.call('GET', KEYS[1])
local ours = ARGV[1] .. ' '
if value and string.sub(value, 1, string.len(ours)) == ours then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// The lock service on Redis.
///
/// Cheap to share: the connection is multiplexed and re-established by itself after
/// Redis goes away (the command that met the failure reports it, the next ones wait
/// for the new connection).
#[derive(Clone)]
pub struct RedisLocks {
    connection: ConnectionManager,
    /// Prepended to every key, so that tests and several drover installations can
    /// share one Redis.
    prefix: String,
    /// The server's URL without its password, for messages.
    url: String,
    renew: Script,
    release: Script,
}

impl fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocks")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`)
    /// and checks that it answers. Every lock `key` is stored at
    /// `{prefix}lock:{key}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLocks, LockError> {
        let redacted = redact_url(url);
        let client = Client::open(url).map_err(|err| {
            LockError::Connection(format!("invalid Redis URL `{redacted}`: {err}"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_max_delay(MAX_RECONNECT_DELAY);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|err| {
                LockError::Connection(format!("failed to connect to Redis at `{redacted}`: {err}"))
            })?;
        let locks = RedisLocks {
            connection,
            prefix: prefix.to_owned(),
            url: redacted,
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        };
        // A server that wants a password, or is not Redis, says so now rather than at
        // the first lock.
        locks.check_connectivity().await?;
        debug!(url = %locks.url, prefix = %locks.prefix, "connected to Redis for locks");
        Ok(locks)
    }

    /// Where the lock `key` is stored.
    fn redis_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    fn failed(&self, action: &str, key: &str, err: &RedisError) -> LockError {
        LockError::Connection(format!(
            "failed to {action} lock `{key}` on Redis at `{}`: {err}",
            self.url
        ))
    }
}

/// `ttl` in whole milliseconds for `PX`/`PEXPIRE`, rounded up so that a lock never
/// lives shorter than asked, and at least 1 (Redis refuses 0).
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Whether `token` can be one of ours: a token with a space could match a prefix
/// of another holder's value, so it never is.
fn well_formed(token: &LockToken) -> bool {
    !token.0.is_empty() && !token.0.contains(' ')
}

#[async_trait]
impl Locks for RedisLocks {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, LockError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // A timed-out SET may still have taken the lock; nobody knows its token then,
        // so it is freed by its TTL.
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(format!("{token} {holder}"))
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed("acquire", key, &err))?;
        let acquired = set.is_some();
        debug!(key, holder, acquired, "lock acquire");
        Ok(acquired.then_some(LockToken(token)))
    }

    async fn renew_all(
        &self,
        held: &[(&str, &LockToken)],
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError> {
        let ours: Vec<&(&str, &LockToken)> = held
            .iter()
            .filter(|(_, token)| well_formed(token))
            .collect();
        let mut answers = Vec::new().into_iter();
        if !ours.is_empty() {
            let mut invocation = self.renew.prepare_invoke();
            for (key, token) in &ours {
                invocation.key(self.redis_key(key)).arg(&token.0);
            }
            let renewed: Vec<i64> = invocation
                .arg(millis(ttl))
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(|err| {
                    let locks = match ours.len() {
                        1 => ours[0].0.to_owned(),
                        n => format!("{} (and {} more)", ours[0].0, n - 1),
                    };
                    self.failed("renew", &locks, &err)
                })?;
            answers = renewed.into_iter();
        }
        let renewed = held
            .iter()
            .map(|(_, token)| well_formed(token) && answers.next() == Some(1))
            .collect();
        debug!(n_locks = held.len(), ?renewed, "locks renew");
        Ok(renewed)
    }

    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        if !well_formed(token) {
            return Ok(false);
        }
        let released: i64 = self
            .release
            .key(self.redis_key(key))
            .arg(&token.0)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed("release", key, &err))?;
        let released = released == 1;
        debug!(key, released, "lock release");
        Ok(released)
    }

    async fn holder(&self, key: &str) -> Result<Option<String>, LockError> {
        let value: Option<String> = ::redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed("read the holder of", key, &err))?;
        // A value without the separator was not written by drover; whoever wrote it
        // still holds the key.
        Ok(value.map(|value| match value.split_once(' ') {
            Some((_token, holder)) => holder.to_owned(),
            None => value,
        }))
    }

    async fn check_connectivity(&self) -> Result<(), LockError> {
        ::redis::cmd("PING")
            .query_async::<String>(&mut self.connection.clone())
            .await
            .map_err(|err| {
                LockError::Connection(format!("no answer from Redis at `{}`: {err}", self.url))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_secs(30)), 30_000);
        assert_eq!(millis(Duration::from_micros(1_500)), 2);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn tokens_with_spaces_are_never_ours() {
        assert!(well_formed(&LockToken("0123abcd".to_owned())));
        assert!(!well_formed(&LockToken(String::new())));
        assert!(!well_formed(&LockToken("0123 worker-1".to_owned())));
    }
}
