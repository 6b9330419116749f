//! The `Locks` port: one lease-based lock per component, so that two deployments
//! never touch the same component at once.
//!
//! A lock is for efficiency, not correctness: it can be lost (expiry, a restarted
//! Redis). Correctness comes from the fence the store hands out with each
//! acquisition (see [`crate::ids::Fence`]).

mod memory;
mod redis;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::TenantId;
use crate::names::{AppName, ComponentName};

pub use self::redis::RedisLocks;
pub use memory::MemoryLocks;

/// Why a lock operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lost the lock service connection: {0}")]
    Connection(String),
}

impl LockError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        true
    }
}

/// Proof of holding a lock: only its holder can renew or release it.
#[derive(Clone, PartialEq, Eq)]
pub struct LockToken(pub String);

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockToken(..)")
    }
}

/// The key of a component's lock (and of its fence): `tenant/app/component`.
pub fn component_lock_key(tenant: TenantId, app: &AppName, component: &ComponentName) -> String {
    format!("{tenant}/{app}/{component}")
}

/// A lock service.
#[async_trait]
pub trait Locks: Send + Sync + fmt::Debug {
    /// Takes `key` for `ttl` when nobody holds it. `holder` says who takes it (shown to
    /// operators who ask why a task waits). `None` when someone else holds it.
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, LockError>;

    /// Extends each lock `(key, token)` by `ttl` if its token still holds it, all in
    /// one round trip (a worker renews the locks of all its tasks at once); for
    /// each, in order, `false` when it was lost.
    async fn renew_all(
        &self,
        held: &[(&str, &LockToken)],
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError>;

    /// Extends the lock by `ttl` if `token` still holds it; `false` when it was lost.
    async fn renew(&self, key: &str, token: &LockToken, ttl: Duration) -> Result<bool, LockError> {
        let renewed = self.renew_all(&[(key, token)], ttl).await?;
        Ok(renewed.first().copied().unwrap_or(false))
    }

    /// Releases the lock if `token` still holds it; `false` when it was already lost.
    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError>;

    /// Who holds `key` now, if anyone.
    async fn holder(&self, key: &str) -> Result<Option<String>, LockError>;

    /// Whether the lock service answers (for readiness checks).
    async fn check_connectivity(&self) -> Result<(), LockError>;
}
