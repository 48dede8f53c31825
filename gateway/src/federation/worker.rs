//! Delivery workers (S6): claim due deliveries with a lease, push each
//! through its module's connector, and record the outcome: delivered, retry
//! with exponential backoff and jitter (a network's "wait" pauses the whole
//! module), failed at once for permanent errors, dead letter after the
//! attempt or age cap.

use super::{normalise, Federation};
use crate::connectors::ConnectorsError;
use crate::host::{AvatarLimits, CallError, Field, Image, Settings};
use crate::media::{self, AvatarTarget};
use chrono::Utc;
use rand::Rng;
use registry_db::{AttemptOutcome, AttemptRecorded, Binding, Delivery, RegistryError, SettingsMap};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How long shutdown waits for pushes in flight before giving their leases
/// back to the queue.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Claims and pushes deliveries until `stop` turns true, then finishes the
/// pushes in flight (up to a grace period).
/// A concurrency of 0 makes an API-only process that delivers nothing.
pub async fn run(federation: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    if federation.config.concurrency == 0 {
        return;
    }
    let worker: Arc<str> = Arc::from(format!("gw-{}", uuid::Uuid::new_v4()));
    let permits = Arc::new(Semaphore::new(federation.config.concurrency));
    let mut tasks = JoinSet::new();
    let (finished, outcomes) = mpsc::unbounded_channel();
    let outcomes = Arc::new(tokio::sync::Mutex::new(outcomes));
    let recorders: Vec<_> = (0..super::parallel_commits(&federation.registry))
        .map(|_| tokio::spawn(record(federation.clone(), worker.clone(), outcomes.clone())))
        .collect();
    let mut depth_checked = tokio::time::Instant::now();
    while !*stop.borrow() {
        let free = permits.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let now = Utc::now();
            let lease = now + chrono_duration(federation.config.lease);
            match federation
                .registry
                .claim_deliveries(&worker, now, lease, free as i64)
                .await
            {
                Ok(claimed) => {
                    claimed_all = claimed.len() == free;
                    let mut bindings = targets_of(&federation, &claimed).await;
                    for delivery in claimed {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let _ = federation.updates.send(delivery.change_id.clone());
                        let federation = federation.clone();
                        let finished = finished.clone();
                        let binding = bindings.remove(&delivery.binding_id);
                        tasks.spawn(async move {
                            let outcome = push(&federation, &delivery, binding).await;
                            let _ = finished.send(Finished {
                                delivery,
                                outcome,
                                _permit: permit,
                            });
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming deliveries failed"),
            }
        }
        if depth_checked.elapsed() >= Duration::from_secs(1) {
            depth_checked = tokio::time::Instant::now();
            if let Ok(depth) = federation.registry.open_deliveries().await {
                federation.metrics.queue_depth.set(depth);
            }
        }
        if claimed_all {
            // More may be due: claim again as soon as a slot frees, for every
            // slot freed by then (one claim per batch, not per delivery).
            tokio::select! {
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stop.changed() => {}
            }
            // A claim scans the queue: let a few more slots free up first.
            let batch = (federation.config.concurrency / 4).max(1);
            let gather = tokio::time::sleep(Duration::from_millis(5));
            tokio::pin!(gather);
            while permits.available_permits() < batch {
                tokio::select! {
                    _ = tasks.join_next(), if !tasks.is_empty() => {}
                    _ = &mut gather => break,
                    _ = stop.changed() => break,
                }
            }
            while tasks.try_join_next().is_some() {}
            continue;
        }
        tokio::select! {
            _ = federation.wake.notified() => {}
            _ = tokio::time::sleep(federation.config.poll_interval) => {}
            _ = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.changed() => {}
        }
    }
    // Pushes in flight finish (their plugin calls are bounded by the call
    // deadline); the rest keep their lease and are claimed again later.
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    drop(tasks);
    drop(finished);
    for recorder in recorders {
        let _ = recorder.await;
    }
}

/// The target bindings of claimed deliveries, read in one query (a
/// delivery whose binding is missing here reads it again and fails if it
/// was removed).
async fn targets_of(federation: &Federation, claimed: &[Delivery]) -> HashMap<String, Binding> {
    let ids: Vec<&str> = claimed.iter().map(|d| d.binding_id.as_str()).collect();
    match federation.registry.bindings_by_id(&ids).await {
        Ok(found) => found.into_iter().map(|b| (b.id.clone(), b)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the claimed deliveries' bindings failed");
            HashMap::new()
        }
    }
}

/// A pushed delivery waiting for its outcome to be stored; its worker slot
/// is freed once it is.
struct Finished {
    delivery: Delivery,
    outcome: AttemptOutcome,
    _permit: OwnedSemaphorePermit,
}

/// Stores outcomes as they come, everything waiting in one transaction
/// (group commit: one commit for a burst of pushes instead of one each).
async fn record(
    federation: Arc<Federation>,
    worker: Arc<str>,
    outcomes: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished>>>,
) {
    const MAX_BATCH: usize = 256;
    let mut batch = Vec::new();
    while super::next_batch(&outcomes, &mut batch, MAX_BATCH).await > 0 {
        let now = Utc::now();
        let items = batch
            .iter()
            .map(|f| (f.delivery.id.clone(), f.outcome.clone()))
            .collect();
        let recorded = match federation
            .registry
            .finish_attempts(&worker, items, now)
            .await
        {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(e) => {
                // One by one, so one bad outcome does not hold back the rest.
                tracing::debug!(error = %e, "storing a batch of outcomes failed; one by one");
                let mut one_by_one = Vec::with_capacity(batch.len());
                for f in &batch {
                    one_by_one.push(
                        federation
                            .registry
                            .finish_attempt(&f.delivery.id, &worker, f.outcome.clone(), now)
                            .await,
                    );
                }
                one_by_one
            }
        };
        for (finished, recorded) in batch.drain(..).zip(recorded) {
            account(
                &federation,
                finished.delivery,
                &finished.outcome,
                recorded,
                now,
            );
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Metrics, log and status updates for one stored (or not) outcome.
fn account(
    federation: &Federation,
    delivery: Delivery,
    outcome: &AttemptOutcome,
    recorded: Result<AttemptRecorded, RegistryError>,
    now: chrono::DateTime<Utc>,
) {
    let label = match outcome {
        AttemptOutcome::Delivered { .. } => "delivered",
        AttemptOutcome::Retry { .. } => "retrying",
        AttemptOutcome::Deferred { .. } => "deferred",
        AttemptOutcome::Failed { dead: true, .. } => "dead",
        AttemptOutcome::Failed { .. } => "failed",
    };
    match recorded {
        Ok(AttemptRecorded::LeaseLost) => {
            tracing::warn!(delivery = %delivery.id, "lease lost before the outcome was stored");
        }
        Ok(recorded) => {
            let label = if recorded == AttemptRecorded::Superseded {
                "superseded"
            } else {
                label
            };
            federation
                .metrics
                .deliveries
                .with_label_values(&[delivery.module_id.as_str(), label])
                .inc();
            if label == "delivered" {
                let latency = (now - delivery.created_at).num_milliseconds().max(0);
                federation
                    .metrics
                    .delivery_latency
                    .with_label_values(&[delivery.module_id.as_str()])
                    .observe(latency as f64 / 1000.0);
            }
        }
        Err(e) => {
            // The lease runs out and another attempt follows.
            tracing::warn!(delivery = %delivery.id, error = %e, "delivery outcome not stored");
        }
    }
    let _ = federation.updates.send(delivery.change_id);
}

/// Pushes one delivery and says what to record.
async fn push(
    federation: &Federation,
    delivery: &Delivery,
    binding: Option<Binding>,
) -> AttemptOutcome {
    let config = &federation.config;
    let retry = |error: String, pause_secs: Option<u32>| -> AttemptOutcome {
        let now = Utc::now();
        let age = (now - delivery.created_at).to_std().unwrap_or_default();
        if delivery.attempts >= i64::from(config.max_attempts) || age >= config.max_age {
            return AttemptOutcome::Failed {
                error: format!("gave up after {} attempts: {error}", delivery.attempts),
                dead: true,
            };
        }
        match pause_secs {
            Some(secs) => {
                let until = now + chrono::Duration::seconds(i64::from(secs.max(1)));
                AttemptOutcome::Retry {
                    error,
                    at: until,
                    pause_module_until: Some(until),
                }
            }
            None => AttemptOutcome::Retry {
                error,
                at: now + chrono_duration(backoff(config, delivery.attempts)),
                pause_module_until: None,
            },
        }
    };
    let fail = |error: String| AttemptOutcome::Failed { error, dead: false };

    let binding = match binding {
        Some(b) if b.user_id == delivery.user_id => Ok(b),
        _ => {
            federation
                .registry
                .binding(&delivery.user_id, &delivery.binding_id)
                .await
        }
    };
    let binding = match binding {
        Ok(b) => b,
        Err(RegistryError::NotFound) => return fail("the binding was removed".into()),
        Err(e) => return retry(format!("registry: {e}"), None),
    };
    let ready = match federation.connectors.get(&delivery.module_id).await {
        Ok(r) => r,
        Err(ConnectorsError::Unsupported(m)) => {
            return fail(format!("module {m:?} is no longer supported"))
        }
        Err(e) => return retry(format!("connector: {e}"), None),
    };
    let credentials = match federation.master_key.open_credentials(
        &binding.credentials.0,
        &binding.id,
        &binding.user_id,
    ) {
        Some(c) => c,
        None => return fail("the stored credentials cannot be decrypted".into()),
    };
    // Latest-wins rather than a queue behind the rate limiter: without a
    // token now, the delivery goes back unclaimed until the limiter has one,
    // so newer values reported meanwhile replace it.
    if let Some(limiter) = &ready.limiter {
        if let Err(not_until) = limiter.check() {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return AttemptOutcome::Deferred {
                until: Utc::now() + chrono_duration(wait.max(Duration::from_millis(1))),
            };
        }
    }
    let prepaid = ready.limiter.is_some();
    let prepared = match prepare(federation, delivery, &ready.plugin.description).await {
        Ok(p) => p,
        Err(Prepare::Fail(e)) => return fail(e),
        Err(Prepare::Retry(e)) => return retry(e, None),
    };
    let called = federation
        .connectors
        .push(
            ready,
            binding.account.clone(),
            credentials,
            prepared.settings,
            prepaid,
        )
        .await;
    match called {
        Ok(Ok(outcome)) => {
            let applied: Vec<String> = outcome.applied.iter().map(|f| field_name(*f)).collect();
            let mut truncated = prepared.truncated;
            for f in &outcome.truncated {
                let name = field_name(*f);
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
            }
        }
        Ok(Err(CallError::AuthFailed(m))) => fail(format!("authentication failed: {m}")),
        Ok(Err(CallError::Rejected(m))) => fail(format!("rejected by the network: {m}")),
        Ok(Err(CallError::RateLimited(secs))) => {
            retry(format!("the network asked to wait {secs} s"), Some(secs))
        }
        Ok(Err(e)) => retry(e.to_string(), None),
        Err(e) => retry(format!("connector: {e}"), None),
    }
}

/// `base * 2^(attempts-1)`, capped, then a random point in its upper half so
/// that deliveries failing together do not retry together.
fn backoff(config: &crate::config::DeliveryConfig, attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = config
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(config.backoff_max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

fn field_name(field: Field) -> String {
    match field {
        Field::Avatar => "avatar",
        Field::Signature => "signature",
        Field::Mood => "mood",
    }
    .to_owned()
}

/// Settings ready for a connector, with the normalised values to remember.
struct Prepared {
    settings: Settings,
    truncated: Vec<String>,
    values: SettingsMap,
}

enum Prepare {
    Fail(String),
    Retry(String),
}

/// Cuts texts to the network's limits and transcodes the avatar to its
/// size and formats.
async fn prepare(
    federation: &Federation,
    delivery: &Delivery,
    description: &crate::host::Description,
) -> Result<Prepared, Prepare> {
    let mut prepared = Prepared {
        settings: Settings::default(),
        truncated: Vec::new(),
        values: SettingsMap::new(),
    };
    for (field, value) in &delivery.settings {
        let Some(text) = value.as_str() else {
            continue;
        };
        match field.as_str() {
            "signature" | "mood" => {
                let (value, cut) = if field == "signature" {
                    normalise::signature(text, Some(description))
                } else {
                    normalise::mood(text, Some(description))
                };
                if cut {
                    prepared.truncated.push(field.clone());
                }
                prepared
                    .values
                    .insert(field.clone(), Value::String(value.clone()));
                if field == "signature" {
                    prepared.settings.signature = Some(value);
                } else {
                    prepared.settings.mood = Some(value);
                }
            }
            "avatar" => {
                let Some(limits) = description.limits.avatar.clone() else {
                    // The network takes no avatar: the connector reports it
                    // as not applied.
                    continue;
                };
                let media = match federation.registry.media(&delivery.user_id, text).await {
                    Ok(m) => m,
                    Err(RegistryError::NotFound) => {
                        return Err(Prepare::Fail("the avatar image was deleted".into()))
                    }
                    Err(e) => return Err(Prepare::Retry(format!("registry: {e}"))),
                };
                let image = transcode(media.data, media.content_type, limits).await?;
                if image.1 {
                    prepared.truncated.push("avatar".into());
                }
                prepared.values.insert(
                    "avatar".into(),
                    Value::String(normalise::avatar_key(&crate::secrets::sha256_hex(
                        &image.0.data,
                    ))),
                );
                prepared.settings.avatar = Some(image.0);
            }
            _ => {}
        }
    }
    Ok(prepared)
}

async fn transcode(
    data: Vec<u8>,
    content_type: String,
    limits: AvatarLimits,
) -> Result<(Image, bool), Prepare> {
    let target = AvatarTarget {
        max_pixels: limits.max_pixels,
        max_bytes: limits.max_bytes,
        formats: limits.formats,
    };
    let done = tokio::task::spawn_blocking(move || media::transcode(&data, &content_type, &target))
        .await
        .map_err(|e| Prepare::Retry(format!("transcoding stopped: {e}")))?;
    match done {
        Ok(t) => Ok((
            Image {
                content_type: t.content_type,
                data: t.data,
            },
            t.converted,
        )),
        Err(e) => Err(Prepare::Fail(format!(
            "the avatar does not fit this network: {e}"
        ))),
    }
}
