//! In-process locks for the embedded default, with TTLs on `tokio::time::Instant`
//! so that tests with paused time are deterministic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{LockError, LockToken, Locks};

/// The in-process lock service.
#[derive(Debug, Default)]
pub struct MemoryLocks {
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    token: String,
    holder: String,
    expires_at: Instant,
}

impl MemoryLocks {
    pub fn new() -> Self {
        Self::default()
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The entry for `key` if it has not expired.
fn live<'a>(held: &'a mut HashMap<String, Held>, key: &str) -> Option<&'a mut Held> {
    held.get_mut(key)
        .filter(|held| held.expires_at > Instant::now())
}

#[async_trait]
impl Locks for MemoryLocks {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, LockError> {
        let mut held = self.held();
        if live(&mut held, key).is_some() {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().to_string();
        held.insert(
            key.to_owned(),
            Held {
                token: token.clone(),
                holder: holder.to_owned(),
                expires_at: Instant::now() + ttl,
            },
        );
        Ok(Some(LockToken(token)))
    }

    async fn renew_all(
        &self,
        renewed: &[(&str, &LockToken)],
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError> {
        let mut held = self.held();
        Ok(renewed
            .iter()
            .map(|(key, token)| match live(&mut held, key) {
                Some(lock) if lock.token == token.0 => {
                    lock.expires_at = Instant::now() + ttl;
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        let mut held = self.held();
        let ours = live(&mut held, key).is_some_and(|lock| lock.token == token.0);
        if ours {
            held.remove(key);
        }
        Ok(ours)
    }

    async fn holder(&self, key: &str) -> Result<Option<String>, LockError> {
        Ok(live(&mut self.held(), key).map(|lock| lock.holder.clone()))
    }

    async fn check_connectivity(&self) -> Result<(), LockError> {
        Ok(())
    }
}
