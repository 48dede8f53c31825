//! A module's outbound rate limit (manifest `rate_limit`): in memory for one
//! process (SQLite), or shared through PostgreSQL so that the network sees
//! at most its quota plus burst however many gateway processes push to it.

use governor::DefaultDirectRateLimiter;
use registry_db::{Backend, RateQuota, Registry};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// How long to wait when the shared limiter cannot be read: the database
/// is what every push needs anyway, so pushes pause rather than overrun.
const UNREADABLE_WAIT: Duration = Duration::from_secs(1);

/// How long tokens reserved in one statement stay usable. A request goes
/// out at most this long after its token was granted, so a window of the
/// network could see up to `per_second * HOLD` tokens granted just before
/// it: the shared row's burst is lowered by as many, and the network never
/// sees more than quota plus burst.
const HOLD: Duration = Duration::from_millis(50);

/// Most tokens one process reserves in one statement.
const MAX_BATCH: u32 = 64;

/// One budget of outbound requests.
#[derive(Debug)]
pub enum OutboundLimiter {
    /// This process only (SQLite: one process per database), `governor`'s
    /// GCRA in memory.
    Local(DefaultDirectRateLimiter),
    /// Every process on the database: one GCRA row per key, taken with one
    /// atomic statement (`Registry::take_rate_tokens`). A fast quota is
    /// taken a few tokens at a time (what [`HOLD`] of it allows, at most
    /// [`MAX_BATCH`]), so a busy module costs one statement per batch
    /// rather than per request; a slow one (under 40/s) or one whose burst
    /// has no room for it takes one token per statement.
    Shared {
        /// The database the processes share.
        registry: Registry,
        /// The budget's row.
        key: String,
        /// Its quota.
        quota: RateQuota,
        /// Tokens reserved and not used yet, and until when they are good;
        /// or, after a refusal, none until the instant a token is free.
        /// Held across the statement: one refill at a time per process, the
        /// others then served from it.
        held: tokio::sync::Mutex<Held>,
    },
}

impl OutboundLimiter {
    /// A limiter of `quota` for `key`: shared when the registry is
    /// PostgreSQL, local otherwise. `None` when the quota is zero.
    pub fn new(registry: &Registry, key: String, quota: RateQuota) -> Option<Self> {
        let rate = NonZeroU32::new(quota.per_second)?;
        let burst = NonZeroU32::new(quota.burst)?;
        Some(match registry.backend() {
            Backend::Postgres => OutboundLimiter::Shared {
                registry: registry.clone(),
                key,
                quota,
                held: tokio::sync::Mutex::new(Held {
                    tokens: 0,
                    until: Instant::now(),
                    refused: false,
                }),
            },
            Backend::Sqlite => OutboundLimiter::Local(governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            )),
        })
    }

    /// Takes a token now, or says how long until one is free.
    pub async fn check(&self) -> Result<(), Duration> {
        match self {
            OutboundLimiter::Local(limiter) => local(limiter),
            OutboundLimiter::Shared {
                registry,
                key,
                quota,
                held,
            } => {
                let mut held = held.lock().await;
                let now = Instant::now();
                if now < held.until {
                    if held.refused {
                        // Refused a moment ago: no need to ask again yet.
                        return Err(held.until - now);
                    }
                    if held.tokens > 0 {
                        held.tokens -= 1;
                        return Ok(());
                    }
                }
                let (row, batch) = batching(*quota);
                match registry
                    .take_rate_tokens(key, row, chrono::Utc::now(), batch)
                    .await
                {
                    Ok(Ok(granted)) => {
                        *held = Held {
                            tokens: granted - 1,
                            until: now + HOLD,
                            refused: false,
                        };
                        Ok(())
                    }
                    Ok(Err(wait)) => {
                        *held = Held {
                            tokens: 0,
                            until: now + wait,
                            refused: true,
                        };
                        Err(wait)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, key = %key, "shared rate limit unreadable");
                        Err(UNREADABLE_WAIT)
                    }
                }
            }
        }
    }

    /// [`OutboundLimiter::check`] from a blocking thread (a plugin call);
    /// a shared limiter needs the runtime's handle.
    pub fn check_blocking(&self, runtime: Option<&tokio::runtime::Handle>) -> Result<(), Duration> {
        match (self, runtime) {
            (OutboundLimiter::Local(limiter), _) => local(limiter),
            (OutboundLimiter::Shared { .. }, Some(runtime)) => runtime.block_on(self.check()),
            (OutboundLimiter::Shared { .. }, None) => Err(UNREADABLE_WAIT),
        }
    }
}

/// The quota the shared row is taken with, and how many tokens one
/// statement reserves: one at a time (the quota as it is) unless the burst
/// has room for twice what [`HOLD`] of the rate is, which is then set aside
/// from the burst for the tokens held.
fn batching(quota: RateQuota) -> (RateQuota, u32) {
    let hold_tokens =
        u32::try_from((u128::from(quota.per_second) * HOLD.as_millis()).div_ceil(1000))
            .unwrap_or(u32::MAX);
    if hold_tokens < 2 || quota.burst / 2 < hold_tokens {
        return (quota, 1);
    }
    let row = RateQuota {
        per_second: quota.per_second,
        burst: quota.burst - hold_tokens,
    };
    (row, hold_tokens.min(MAX_BATCH))
}

/// What one process holds of a shared budget.
#[derive(Debug)]
pub struct Held {
    tokens: u32,
    until: Instant,
    refused: bool,
}

fn local(limiter: &DefaultDirectRateLimiter) -> Result<(), Duration> {
    use governor::clock::Clock;
    limiter.check().map_err(|not_until| {
        not_until.wait_time_from(governor::clock::DefaultClock::default().now())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_or_tight_quotas_take_one_token_at_a_time() {
        let q = |per_second, burst| RateQuota { per_second, burst };
        assert_eq!(batching(q(10, 20)), (q(10, 20), 1));
        // 50 ms of 100/s is 5 tokens, but a burst of 8 has no room for 10.
        assert_eq!(batching(q(100, 8)), (q(100, 8), 1));
        // Room for it: 5 set aside from the burst, 5 per statement.
        assert_eq!(batching(q(100, 10)), (q(100, 5), 5));
        // A fast quota: at most 64 per statement.
        assert_eq!(
            batching(q(1_000_000, 1_000_000)),
            (q(1_000_000, 950_000), 64)
        );
    }
}
