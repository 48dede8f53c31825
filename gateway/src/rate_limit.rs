//! A module's outbound rate limit (manifest `rate_limit`): in memory for one
//! process (SQLite), or shared through PostgreSQL so that the network sees
//! at most its quota plus burst however many gateway processes push to it.

use governor::DefaultDirectRateLimiter;
use registry_db::{Backend, RateQuota, Registry};
use std::num::NonZeroU32;
use std::time::Duration;

/// How long to wait when the shared limiter cannot be read: the database
/// is what every push needs anyway, so pushes pause rather than overrun.
const UNREADABLE_WAIT: Duration = Duration::from_secs(1);

/// One budget of outbound requests.
#[derive(Debug)]
pub enum OutboundLimiter {
    /// This process only (SQLite: one process per database), `governor`'s
    /// GCRA in memory.
    Local(DefaultDirectRateLimiter),
    /// Every process on the database: one GCRA row per key, taken with one
    /// atomic statement (`Registry::take_rate_token`).
    Shared {
        /// The database the processes share.
        registry: Registry,
        /// The budget's row.
        key: String,
        /// Its quota.
        quota: RateQuota,
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
            } => match registry
                .take_rate_token(key, *quota, chrono::Utc::now())
                .await
            {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::warn!(error = %e, key = %key, "shared rate limit unreadable");
                    Err(UNREADABLE_WAIT)
                }
            },
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

fn local(limiter: &DefaultDirectRateLimiter) -> Result<(), Duration> {
    use governor::clock::Clock;
    limiter.check().map_err(|not_until| {
        not_until.wait_time_from(governor::clock::DefaultClock::default().now())
    })
}
