//! Inbound rate limits (governor): per client IP on registration and login,
//! per user on everything authenticated. Over the quota: `429` + `Retry-After`.

use super::error::ApiError;
use super::AppState;
use crate::config::Quota;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::DefaultKeyedRateLimiter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

/// Errors building limiters from configuration.
#[derive(Debug, thiserror::Error)]
#[error("rate limit quotas must be at least 1 per second with a burst of at least 1")]
pub struct ZeroQuota;

/// The gateway's inbound limiters.
pub struct Limiters {
    anonymous: DefaultKeyedRateLimiter<IpAddr>,
    user: DefaultKeyedRateLimiter<String>,
}

fn quota(q: Quota) -> Result<governor::Quota, ZeroQuota> {
    let rate = NonZeroU32::new(q.per_second).ok_or(ZeroQuota)?;
    let burst = NonZeroU32::new(q.burst).ok_or(ZeroQuota)?;
    Ok(governor::Quota::per_second(rate).allow_burst(burst))
}

fn retry_after(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

impl Limiters {
    /// Builds the limiters; refuses zero quotas.
    pub fn new(anonymous: Quota, user: Quota) -> Result<Self, ZeroQuota> {
        Ok(Limiters {
            anonymous: governor::RateLimiter::keyed(quota(anonymous)?),
            user: governor::RateLimiter::keyed(quota(user)?),
        })
    }

    /// Takes one request from `key`'s quota.
    pub fn check_user(&self, key: &str) -> Result<(), ApiError> {
        self.user.check_key(&key.to_owned()).map_err(retry_after)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.anonymous.check_key(&ip).map_err(retry_after)
    }

    /// Forgets keys whose quota is full again, so memory stays bounded.
    pub fn shrink(&self) {
        self.anonymous.retain_recent();
        self.user.retain_recent();
        self.anonymous.shrink_to_fit();
        self.user.shrink_to_fit();
    }
}

/// Middleware for the anonymous endpoints: one quota per client IP.
pub async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match state.limits.check_ip(ip) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
