//! Throttles on failures: after a burst of failed attempts for one key
//! (a login name, a client address, an IM account), further attempts are
//! refused until the quota refills, whether they would succeed or not, so
//! guessing gains nothing by speed. Successful attempts cost nothing.
//! No HTTP here: callers turn [`Throttled`] into their own answer.

use governor::clock::{Clock, DefaultClock, Reference};
use governor::DefaultKeyedRateLimiter;
use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

/// Too many failures for a key: wait this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed attempts; retry after {} s", retry_after_secs(*.0))]
pub struct Throttled(pub Duration);

/// Whole seconds to wait, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// How many failures a key may have: `burst` at once, one more every
/// `refill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureQuota {
    /// Failures that pass in a row; the next one locks the key out.
    pub burst: u32,
    /// Time for one more.
    pub refill: Duration,
}

type Instant = <DefaultClock as Clock>::Instant;

/// Failure counts per key.
pub struct FailureGate<K: Hash + Eq + Clone> {
    failures: DefaultKeyedRateLimiter<K>,
    /// Keys whose quota ran out, until when.
    locked: Mutex<HashMap<K, Instant>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> FailureGate<K> {
    /// A gate with `quota`; a zero burst or refill is taken as one.
    pub fn new(quota: FailureQuota) -> Self {
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        let refill = quota.refill.max(Duration::from_millis(1));
        let per = governor::Quota::with_period(refill)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        FailureGate {
            failures: governor::RateLimiter::keyed(per),
            locked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// May `key` try now?
    pub fn check(&self, key: &K) -> Result<(), Throttled> {
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        match locked.get(key) {
            Some(until) if *until > now => Err(Throttled(until.duration_since(now).into())),
            Some(_) => {
                locked.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failure of `key`; once its quota is used up, `key` is
    /// refused until a failure would fit again.
    pub fn failed(&self, key: &K) {
        if let Err(not_until) = self.failures.check_key(key) {
            let until = not_until.earliest_possible();
            let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
            locked.insert(key.clone(), until);
        }
    }

    /// Forgets keys with a full quota and locks that ran out.
    pub fn shrink(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = self.clock.now();
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        locked.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_after_its_failures_and_others_are_not() {
        let gate = FailureGate::new(FailureQuota {
            burst: 3,
            refill: Duration::from_secs(60),
        });
        let (alice, bob) = ("alice".to_owned(), "bob".to_owned());
        for _ in 0..3 {
            assert_eq!(gate.check(&alice), Ok(()));
            gate.failed(&alice);
        }
        // The fourth failure is over the quota: alice is locked out.
        gate.failed(&alice);
        let Err(Throttled(wait)) = gate.check(&alice) else {
            panic!("alice not throttled");
        };
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert_eq!(gate.check(&bob), Ok(()));
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
