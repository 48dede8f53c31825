//! T2 media jobs and T3 kept results, pure: how long the operator keeps a
//! result, and what asking for a job's result answers at a moment. The
//! gateway queues and runs the jobs (grant `media`); this service routes
//! them and keeps their ids per user.

use serde::{Deserialize, Serialize};

/// How long a result is kept when the operator does not say: a day.
pub const DEFAULT_KEEP_SECS: u64 = 24 * 3600;
/// The shortest keep time an operator may set: a minute.
pub const MIN_KEEP_SECS: u64 = 60;
/// The longest: 30 days.
pub const MAX_KEEP_SECS: u64 = 30 * 24 * 3600;

/// The keep time in milliseconds for the operator's setting.
pub fn keep_ms(setting: Option<u64>) -> u64 {
    setting
        .unwrap_or(DEFAULT_KEEP_SECS)
        .clamp(MIN_KEEP_SECS, MAX_KEEP_SECS)
        * 1000
}

/// A job of the user's, as this service remembers it (the gateway keeps
/// the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The gateway's job id.
    pub id: String,
    /// When it was sent, ms since the epoch.
    pub created_at: u64,
}

/// What a job's result is at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultState {
    /// Not there yet: the job waits or runs.
    Pending,
    /// The job failed: there is no result.
    Failed,
    /// Kept: it may be fetched (again).
    Kept,
    /// Its keep time ran out (at this time, ms): deleted.
    Expired(u64),
}

/// Where a job's result stands at `now`, from what the gateway says: done
/// or failed, until when the result is kept and when it was deleted.
pub fn result_state(
    done: bool,
    failed: bool,
    kept_until: Option<u64>,
    gone_at: Option<u64>,
    now: u64,
) -> ResultState {
    if failed {
        return ResultState::Failed;
    }
    if !done {
        return ResultState::Pending;
    }
    match (kept_until, gone_at) {
        (Some(until), _) if now >= until => ResultState::Expired(until),
        (until, Some(gone)) => ResultState::Expired(until.unwrap_or(gone)),
        _ => ResultState::Kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_keep_time_is_bounded() {
        assert_eq!(keep_ms(None), DEFAULT_KEEP_SECS * 1000);
        assert_eq!(keep_ms(Some(1)), MIN_KEEP_SECS * 1000);
        assert_eq!(keep_ms(Some(u64::MAX / 2000)), MAX_KEEP_SECS * 1000);
        assert_eq!(keep_ms(Some(3600)), 3_600_000);
    }

    #[test]
    fn a_result_is_kept_until_its_time_then_gone_even_before_the_sweep() {
        assert_eq!(
            result_state(false, false, None, None, 5),
            ResultState::Pending
        );
        assert_eq!(
            result_state(false, true, None, None, 5),
            ResultState::Failed
        );
        assert_eq!(
            result_state(true, false, Some(10), None, 9),
            ResultState::Kept
        );
        // Past its time, not yet swept: already gone for the client.
        assert_eq!(
            result_state(true, false, Some(10), None, 10),
            ResultState::Expired(10)
        );
        // Swept (a clock that went back changes nothing).
        assert_eq!(
            result_state(true, false, Some(10), Some(12), 3),
            ResultState::Expired(10)
        );
    }
}
