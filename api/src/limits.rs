//! Rate limits: each token may make `rate` requests a second, sustained, and
//! `burst` at once, and so may each hook's signed deliveries (which carry no
//! token); beyond that a request is answered 429 with `Retry-After`, before it
//! does any work.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shared::ids::{HookId, TokenId};

/// Whose requests are counted together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Limited {
    Token(TokenId),
    Hook(HookId),
}

/// The limiter of a running API, shared by its requests.
#[derive(Clone)]
pub struct RateLimits {
    limiter: Arc<DefaultKeyedRateLimiter<Limited>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    /// `rate` requests a second per token (and per hook), `burst` at once; `None`
    /// when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<RateLimits> {
        let rate = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(RateLimits {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            clock: DefaultClock::default(),
        })
    }

    /// Counts a request of `whose`: `Err` with how long to wait when it is over
    /// its limit.
    pub(crate) fn check(&self, whose: Limited) -> Result<(), Duration> {
        self.limiter
            .check_key(&whose)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}
