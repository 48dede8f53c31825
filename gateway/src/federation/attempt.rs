//! The delivery decision: what one attempt comes to (delivered, retry when,
//! pause the module, give up, dead letter), as a pure function of what the
//! worker saw, the delivery, the retry policy and the time. The worker does
//! the I/O around it; everything it decides is unit-tested here.

use crate::config::DeliveryConfig;
use crate::host::{CallError, Field, PushOutcome};
use chrono::{DateTime, Utc};
use registry_db::{AttemptOutcome, Delivery, SettingsMap};
use std::time::Duration;

/// How long a module that is not set up correctly (a host its connector
/// needs is not granted) pauses before its connector is asked again; a new
/// upload of the module ends the pause at once.
pub const MISCONFIGURED_PAUSE: Duration = Duration::from_secs(3600);

/// How failing deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// Age after which a failing delivery becomes a dead letter.
    pub max_age: Duration,
}

impl From<&DeliveryConfig> for RetryPolicy {
    fn from(c: &DeliveryConfig) -> Self {
        RetryPolicy {
            backoff_base: c.backoff_base,
            backoff_max: c.backoff_max,
            max_attempts: c.max_attempts,
            max_age: c.max_age,
        }
    }
}

/// Settings as prepared for the network: what was cut or converted on the
/// gateway's side, and the values as the network will store them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// Fields the gateway shortened or converted (texts cut, avatar
    /// transcoded).
    pub truncated: Vec<String>,
    /// The normalised values, remembered for echo suppression.
    pub values: SettingsMap,
    /// Why reported fields were not sent (a mood the network does not know).
    pub notes: Vec<String>,
}

/// What the worker saw of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The connector was called.
    Called {
        /// What was sent.
        prepared: Prepared,
        /// Its answer.
        result: Result<PushOutcome, CallError>,
    },
    /// Not attempted: the module's outbound rate limit has no token for
    /// `wait`.
    Paced {
        /// Until the limiter has a token.
        wait: Duration,
    },
    /// Cannot ever be attempted (the binding or module is gone, the
    /// credentials do not open, the avatar cannot fit the network).
    Impossible(String),
    /// Cannot be attempted now (storage or the plugin host failed).
    NotNow(String),
}

/// Decides what to record for one attempt. `jitter` is a draw from
/// `0.5..=1.0`: a retry waits that share of the full backoff, so
/// deliveries failing together do not retry together.
pub fn classify(
    attempt: Attempt,
    delivery: &Delivery,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> AttemptOutcome {
    let fail = |error: String| AttemptOutcome::Failed { error, dead: false };
    let retry = |error: String, wait: Option<u32>| {
        retry_or_give_up(error, wait, delivery, policy, now, jitter)
    };
    match attempt {
        Attempt::Paced { wait } => AttemptOutcome::Deferred {
            until: now + chrono_duration(wait.max(Duration::from_millis(1))),
            reason: None,
        },
        Attempt::Impossible(error) => fail(error),
        Attempt::NotNow(error) => retry(error, None),
        Attempt::Called {
            prepared,
            result: Ok(outcome),
        } => delivered(prepared, &outcome),
        Attempt::Called { result: Err(e), .. } => match e {
            CallError::AuthFailed(m) => fail(format!("authentication failed: {m}")),
            CallError::Rejected(m) => fail(format!("rejected by the network: {m}")),
            CallError::RateLimited(secs) => {
                retry(format!("the network asked to wait {secs} s"), Some(secs))
            }
            // A connector bug: the same input crashes it again, so the
            // delivery goes to the dead letters at once (an admin redrives
            // it once the connector is fixed).
            // The operator's setup, not the network nor the value: the
            // module waits (uncounted) until a fixed upload ends the pause,
            // or the pause runs out and the connector is asked again.
            CallError::Misconfigured(m) => AttemptOutcome::Deferred {
                until: now + chrono_duration(MISCONFIGURED_PAUSE),
                reason: Some(format!(
                    "waiting for the operator: the {} module is not set up correctly ({m})",
                    delivery.module_id
                )),
            },
            CallError::Trap(m) => AttemptOutcome::Failed {
                error: format!("the connector crashed: {m}"),
                dead: true,
            },
            e => retry(e.to_string(), None),
        },
    }
}

/// A delivered push: the fields the network holds, those shortened on
/// either side (only among the applied ones), and their stored values.
fn delivered(prepared: Prepared, outcome: &PushOutcome) -> AttemptOutcome {
    let applied: Vec<String> = outcome.applied.iter().map(|f| field_name(*f)).collect();
    let mut truncated = prepared.truncated;
    for name in outcome.truncated.iter().map(|f| field_name(*f)) {
        if !truncated.contains(&name) {
            truncated.push(name);
        }
    }
    truncated.retain(|f| applied.contains(f));
    let mut values = prepared.values;
    values.retain(|field, _| applied.contains(field));
    AttemptOutcome::Delivered {
        applied,
        truncated,
        applied_settings: values,
        note: (!prepared.notes.is_empty()).then(|| prepared.notes.join("; ")),
    }
}

/// Another attempt later, or a dead letter once the attempt or age cap is
/// reached. `wait`: the network asked to wait (`Some(0)` without saying how
/// long); the whole module pauses until the retry.
fn retry_or_give_up(
    error: String,
    wait: Option<u32>,
    delivery: &Delivery,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> AttemptOutcome {
    let age = (now - delivery.created_at).to_std().unwrap_or_default();
    if delivery.attempts >= i64::from(policy.max_attempts) || age >= policy.max_age {
        return AttemptOutcome::Failed {
            error: format!("gave up after {} attempts: {error}", delivery.attempts),
            dead: true,
        };
    }
    let backoff = now + chrono_duration(backoff(policy, delivery.attempts, jitter));
    match wait {
        None => AttemptOutcome::Retry {
            error,
            at: backoff,
            pause_module_until: None,
        },
        Some(secs) => {
            let until = if secs == 0 {
                backoff
            } else {
                now + chrono::Duration::seconds(i64::from(secs))
            };
            AttemptOutcome::Retry {
                error,
                at: until,
                pause_module_until: Some(until),
            }
        }
    }
}

/// `base * 2^(attempts-1)`, capped, times `jitter` (clamped to `0.5..=1.0`).
pub fn backoff(policy: &RetryPolicy, attempts: i64, jitter: f64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = policy
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(policy.backoff_max);
    full.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A draw for [`classify`]'s `jitter`.
pub fn jitter() -> f64 {
    use rand::Rng;
    rand::thread_rng().gen_range(0.5..=1.0)
}

/// The wire name of a field.
pub fn field_name(field: Field) -> String {
    match field {
        Field::Avatar => "avatar",
        Field::Signature => "signature",
        Field::Mood => "mood",
    }
    .to_owned()
}

/// A std duration as chrono's (saturating).
pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use registry_db::DeliveryStatus;
    use serde_json::{json, Value};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    /// A delivery created a minute ago, after `attempts` attempts.
    fn delivery(attempts: i64) -> Delivery {
        Delivery {
            id: "d1".into(),
            seq: 1,
            change_id: "c1".into(),
            user_id: "u1".into(),
            binding_id: "b1".into(),
            module_id: "matrix".into(),
            account: "@alice:example.org".into(),
            settings: SettingsMap::new(),
            status: DeliveryStatus::Delivering,
            attempts,
            last_error: None,
            applied_fields: vec![],
            truncated_fields: vec![],
            superseded_by: None,
            dead: false,
            created_at: now() - chrono::Duration::minutes(1),
            next_attempt_at: now(),
            updated_at: now(),
            delivered_at: None,
        }
    }

    fn called(result: Result<PushOutcome, CallError>) -> Attempt {
        let values = json!({"signature": "hi", "mood": "happy"});
        let Value::Object(values) = values else {
            unreachable!()
        };
        Attempt::Called {
            prepared: Prepared {
                truncated: vec!["signature".into()],
                values,
                notes: Vec::new(),
            },
            result,
        }
    }

    fn decide(attempt: Attempt, attempts: i64) -> AttemptOutcome {
        classify(attempt, &delivery(attempts), &policy(), now(), 1.0)
    }

    #[test]
    fn a_delivered_push_keeps_only_the_applied_fields() {
        let outcome = PushOutcome {
            applied: vec![Field::Signature],
            truncated: vec![],
        };
        match decide(called(Ok(outcome)), 1) {
            AttemptOutcome::Delivered {
                applied,
                truncated,
                applied_settings,
                note,
            } => {
                assert_eq!(note, None);
                assert_eq!(applied, ["signature"]);
                assert_eq!(truncated, ["signature"], "cut on the gateway's side");
                assert_eq!(Value::Object(applied_settings), json!({"signature": "hi"}));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_the_connector_shortened_count_as_truncated_once() {
        let outcome = PushOutcome {
            applied: vec![Field::Signature, Field::Mood],
            truncated: vec![Field::Mood, Field::Signature],
        };
        match decide(called(Ok(outcome)), 1) {
            AttemptOutcome::Delivered { truncated, .. } => {
                assert_eq!(truncated, ["signature", "mood"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refused_credentials_and_rejected_values_fail_at_once() {
        for (error, says) in [
            (
                CallError::AuthFailed("bad password".into()),
                "authentication failed",
            ),
            (
                CallError::Rejected("too long".into()),
                "rejected by the network",
            ),
        ] {
            match decide(called(Err(error)), 1) {
                AttemptOutcome::Failed { error, dead } => {
                    assert!(error.starts_with(says), "{error}");
                    assert!(!dead, "a permanent error is not a dead letter");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            decide(Attempt::Impossible("the binding was removed".into()), 1),
            AttemptOutcome::Failed {
                error: "the binding was removed".into(),
                dead: false
            }
        );
    }

    #[test]
    fn retry_after_pauses_the_module_for_that_long() {
        let until = now() + chrono::Duration::seconds(30);
        assert_eq!(
            decide(called(Err(CallError::RateLimited(30))), 1),
            AttemptOutcome::Retry {
                error: "the network asked to wait 30 s".into(),
                at: until,
                pause_module_until: Some(until),
            }
        );
    }

    #[test]
    fn a_wait_without_retry_after_pauses_the_module_for_the_backoff() {
        // Third attempt: 1 s * 2^2.
        let until = now() + chrono::Duration::seconds(4);
        assert_eq!(
            decide(called(Err(CallError::RateLimited(0))), 3),
            AttemptOutcome::Retry {
                error: "the network asked to wait 0 s".into(),
                at: until,
                pause_module_until: Some(until),
            }
        );
    }

    #[test]
    fn transient_errors_back_off_exponentially_within_the_jitter_bounds() {
        let p = policy();
        for attempts in 1..=4i64 {
            let full = Duration::from_secs(1 << (attempts - 1));
            for (jitter, expected) in [(1.0, full), (0.5, full / 2)] {
                let outcome = classify(
                    called(Err(CallError::Transient("HTTP 502".into()))),
                    &delivery(attempts),
                    &p,
                    now(),
                    jitter,
                );
                assert_eq!(
                    outcome,
                    AttemptOutcome::Retry {
                        error: "temporary failure: HTTP 502".into(),
                        at: now() + chrono_duration(expected),
                        pause_module_until: None,
                    },
                    "attempt {attempts}, jitter {jitter}"
                );
            }
            let drawn = backoff(&p, attempts, jitter());
            assert!(drawn >= full / 2 && drawn <= full, "{drawn:?}");
        }
        // Capped at backoff_max, whatever the attempt.
        assert_eq!(backoff(&p, 40, 1.0), p.backoff_max);
        // Out-of-range draws are clamped.
        assert_eq!(backoff(&p, 1, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn a_misconfigured_module_waits_for_its_operator_uncounted() {
        match decide(
            called(Err(CallError::Misconfigured(
                "http://10.0.0.1:80 is not granted".into(),
            ))),
            3,
        ) {
            AttemptOutcome::Deferred { until, reason } => {
                assert_eq!(until, now() + chrono_duration(MISCONFIGURED_PAUSE));
                let reason = reason.expect("users see why");
                assert!(reason.starts_with("waiting for the operator"), "{reason}");
                assert!(reason.contains("is not granted"), "{reason}");
            }
            other => panic!("expected a pause, got {other:?}"),
        }
    }

    #[test]
    fn a_crashed_connector_is_a_dead_letter_at_once_with_its_message() {
        match decide(
            called(Err(CallError::Trap(
                "panicked at src/lib.rs:1:1: boom".into(),
            ))),
            1,
        ) {
            AttemptOutcome::Failed { error, dead } => {
                assert!(dead, "a dead letter, redrivable");
                assert!(
                    error.starts_with("the connector crashed: panicked at"),
                    "{error}"
                );
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn timeouts_and_storage_failures_are_retried_too() {
        for attempt in [
            called(Err(CallError::Timeout(5000))),
            Attempt::NotNow("registry: database is locked".into()),
        ] {
            assert!(
                matches!(
                    decide(attempt, 1),
                    AttemptOutcome::Retry {
                        pause_module_until: None,
                        ..
                    }
                ),
                "retried without pausing the module"
            );
        }
    }

    #[test]
    fn exhausted_attempts_or_age_make_a_dead_letter() {
        match decide(called(Err(CallError::Transient("down".into()))), 5) {
            AttemptOutcome::Failed { error, dead } => {
                assert!(dead);
                assert_eq!(error, "gave up after 5 attempts: temporary failure: down");
            }
            other => panic!("{other:?}"),
        }
        let mut old = delivery(1);
        old.created_at = now() - chrono::Duration::hours(2);
        assert!(matches!(
            classify(
                called(Err(CallError::RateLimited(5))),
                &old,
                &policy(),
                now(),
                1.0
            ),
            AttemptOutcome::Failed { dead: true, .. }
        ));
    }

    #[test]
    fn a_paced_attempt_is_deferred_not_counted() {
        assert_eq!(
            decide(
                Attempt::Paced {
                    wait: Duration::from_millis(250)
                },
                9
            ),
            AttemptOutcome::Deferred {
                until: now() + chrono::Duration::milliseconds(250),
                reason: None,
            }
        );
        // Even "no wait" defers a little, never into the past.
        assert_eq!(
            decide(
                Attempt::Paced {
                    wait: Duration::ZERO
                },
                1
            ),
            AttemptOutcome::Deferred {
                until: now() + chrono::Duration::milliseconds(1),
                reason: None,
            }
        );
    }
}
