//! Rate limits shared through the database: a GCRA (generic cell rate
//! algorithm) per key, one atomic statement per take, so every gateway
//! process on one PostgreSQL draws from the same budget.

use crate::{Backend, Registry, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A quota: `per_second` takes on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Sustained takes per second (at least 1).
    pub per_second: u32,
    /// Takes allowed at once after a quiet period (at least 1).
    pub burst: u32,
}

impl RateQuota {
    fn interval_us(self) -> i64 {
        (1_000_000 / i64::from(self.per_second.max(1))).max(1)
    }
}

impl Registry {
    /// Takes one token of `key` at `now`: `Ok(Ok(()))` when granted,
    /// `Ok(Err(wait))` with the time until one is free.
    pub async fn take_rate_token(
        &self,
        key: &str,
        quota: RateQuota,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), Duration>> {
        Ok(self.take_rate_tokens(key, quota, now, 1).await?.map(|_| ()))
    }

    /// Takes up to `wanted` tokens of `key` at `now` in one statement:
    /// `Ok(Ok(n))` with the `n` granted (at least 1), `Ok(Err(wait))` with
    /// the time until one is free. Over any window of `t` seconds at most
    /// `burst + per_second * t` tokens are granted, however many processes
    /// take.
    pub async fn take_rate_tokens(
        &self,
        key: &str,
        quota: RateQuota,
        now: DateTime<Utc>,
        wanted: u32,
    ) -> Result<std::result::Result<u32, Duration>> {
        let now_us = now.timestamp_micros();
        let interval = quota.interval_us();
        let tolerance = interval * i64::from(quota.burst.max(1));
        let greatest = match self.backend {
            Backend::Postgres => "GREATEST",
            Backend::Sqlite => "MAX",
        };
        let least = match self.backend {
            Backend::Postgres => "LEAST",
            Backend::Sqlite => "MIN",
        };
        // Every SET expression reads the row as it was: `base` is the old
        // arrival time (or now), and what fits is (now + tolerance - base)
        // divided by the interval, at most `wanted`.
        let base = format!("{greatest}(rate_limits.tat_us, $2)");
        let fits = format!("{least}($5, ($2 + $4 - {base}) / $3)");
        let granted: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO rate_limits (key, tat_us, granted) \
             VALUES ($1, $2 + $3 * {least}($5, $4 / $3), {least}($5, $4 / $3)) \
             ON CONFLICT (key) DO UPDATE SET tat_us = {base} + $3 * {fits}, granted = {fits} \
             WHERE $2 + $4 - {base} >= $3 \
             RETURNING granted"
        ))
        .bind(key)
        .bind(now_us)
        .bind(interval)
        .bind(tolerance)
        .bind(i64::from(wanted.max(1)))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(granted) = granted {
            return Ok(Ok(u32::try_from(granted).unwrap_or(1).max(1)));
        }
        let tat: i64 = sqlx::query_scalar("SELECT tat_us FROM rate_limits WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(now_us);
        let wait_us = tat.max(now_us) + interval - tolerance - now_us;
        Ok(Err(Duration::from_micros(
            u64::try_from(wait_us).unwrap_or(0).max(1),
        )))
    }
}
