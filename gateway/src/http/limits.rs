//! Inbound rate limits (governor): per client IP on registration and login,
//! per user on everything authenticated; failure throttles per login name
//! and on wrong admin tokens per client. Over a quota: `429` +
//! `Retry-After`.
//!
//! The client IP is the TCP peer, unless the peer is a trusted proxy
//! (`Config::trusted_proxies`): then it is the last address before the
//! trusted ones in `Forwarded` (`for=`) or else `X-Forwarded-For`. IPv6
//! clients are grouped by /64, the block one subscriber usually holds.

use super::error::ApiError;
use super::AppState;
use crate::config::Quota;
use crate::throttle::{retry_after_secs, FailureGate, FailureQuota, Throttled};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::DefaultKeyedRateLimiter;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

/// Failed logins per user name before it is refused for a while.
pub const LOGIN_FAILURES: FailureQuota = FailureQuota {
    burst: 10,
    refill: Duration::from_secs(30),
};
/// Wrong admin tokens per client before it is refused for a while.
pub const ADMIN_FAILURES: FailureQuota = FailureQuota {
    burst: 10,
    refill: Duration::from_secs(60),
};

/// Errors building limiters from configuration.
#[derive(Debug, thiserror::Error)]
#[error("rate limit quotas must be at least 1 per second with a burst of at least 1")]
pub struct ZeroQuota;

/// The gateway's inbound limiters.
pub struct Limiters {
    anonymous: DefaultKeyedRateLimiter<IpAddr>,
    user: DefaultKeyedRateLimiter<String>,
    /// Failed logins per user name.
    pub login: FailureGate<String>,
    /// Wrong admin tokens per client.
    pub admin: FailureGate<IpAddr>,
    trusted_proxies: Vec<IpNet>,
}

/// A throttle's refusal as an answer.
pub fn throttled(t: Throttled, what: &str) -> ApiError {
    ApiError::rate_limited(retry_after_secs(t.0)).with_message(format!(
        "too many {what}; retry after {} s",
        retry_after_secs(t.0)
    ))
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
    pub fn new(
        anonymous: Quota,
        user: Quota,
        trusted_proxies: Vec<IpNet>,
    ) -> Result<Self, ZeroQuota> {
        Ok(Limiters {
            anonymous: governor::RateLimiter::keyed(quota(anonymous)?),
            user: governor::RateLimiter::keyed(quota(user)?),
            login: FailureGate::new(LOGIN_FAILURES),
            admin: FailureGate::new(ADMIN_FAILURES),
            trusted_proxies,
        })
    }

    /// The client a request comes from, as a rate-limit key: the peer, or
    /// what trusted proxies say the client was; IPv6 as its /64.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        group(self.address(peer, headers))
    }

    /// The client's own address: the peer, or what trusted proxies say.
    pub fn address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if trusted(&peer) {
            forwarded_for(headers)
                .into_iter()
                .rev()
                .find(|hop| !trusted(hop))
                .unwrap_or(peer)
        } else {
            peer
        }
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
        self.login.shrink();
        self.admin.shrink();
    }
}

/// The hops a proxy chain reports, nearest the client first: `Forwarded`
/// (RFC 7239 `for=`) when present, else `X-Forwarded-For`. Unparsable
/// entries (`unknown`, obfuscated names) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let forwarded: Vec<IpAddr> = values("forwarded")
        .iter()
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.eq_ignore_ascii_case("for").then(|| parse_node(value))?
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for")
        .iter()
        .filter_map(|v| parse_node(v))
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:80"`.
fn parse_node(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Ok(ip) = value.parse() {
        return Some(ip);
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let bracketed = value.strip_prefix('[')?;
    bracketed.split(']').next()?.parse().ok()
}

/// IPv6 addresses grouped by /64 (IPv4-mapped ones as IPv4).
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

/// Middleware for the anonymous endpoints: one quota per client IP.
pub async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = state
        .limits
        .client(peer(request.extensions()), request.headers());
    match state.limits.check_ip(ip) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The TCP peer's address, when the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limiters(trusted: &[&str]) -> Limiters {
        let q = Quota {
            per_second: 1,
            burst: 1,
        };
        let trusted = trusted.iter().map(|n| n.parse().unwrap()).collect();
        Limiters::new(q, q, trusted).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let l = limiters(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.7, 10.9.9.9")]);
        assert_eq!(
            l.client(Some(proxy), &xff),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // A client that is not a trusted proxy cannot pick its own key.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(l.client(Some(stranger), &xff), stranger);
        // Forwarded wins over X-Forwarded-For; quoted IPv6 with port.
        let fwd = headers(&[
            (
                "forwarded",
                r#"for="[2001:db8:1:2::7]:4711";proto=https, for=10.2.2.2"#,
            ),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            l.client(Some(proxy), &fwd),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        // A spoofed hop before the real client is ignored: the last
        // untrusted hop is the client the proxy saw.
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(
            l.client(Some(proxy), &spoofed),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = limiters(&[]);
        let a: IpAddr = "2001:db8:aa:bb:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:aa:bb:ffff::2".parse().unwrap();
        let other: IpAddr = "2001:db8:aa:bc::1".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(l.client(Some(a), &none), l.client(Some(b), &none));
        assert_ne!(l.client(Some(a), &none), l.client(Some(other), &none));
        assert!(l.check_ip(l.client(Some(a), &none)).is_ok());
        assert!(
            l.check_ip(l.client(Some(b), &none)).is_err(),
            "one bucket per /64"
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            l.client(Some(mapped), &none),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
