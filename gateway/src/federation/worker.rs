//! Delivery workers (S6): claim due deliveries with a lease, push each
//! through its module's connector, and record the outcome: delivered, retry
//! with exponential backoff and jitter (a network's "wait" pauses the whole
//! module), failed at once for permanent errors, dead letter after the
//! attempt or age cap.

use super::attempt::{chrono_duration, classify, jitter, Attempt, Prepared, RetryPolicy};
use super::{normalise, Federation};
use crate::connectors::ConnectorsError;
use crate::host::{Image, Settings};
use crate::media::library::AvatarError;
use crate::media::AvatarTarget;
use chrono::Utc;
use registry_db::{AttemptOutcome, AttemptRecorded, Binding, Delivery, RegistryError};
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
    let in_flight = Arc::new(InFlight::default());
    let renewer = tokio::spawn(renew(federation.clone(), worker.clone(), in_flight.clone()));
    let permits = Arc::new(Semaphore::new(federation.config.concurrency));
    let mut tasks = JoinSet::new();
    let (finished, outcomes) = mpsc::unbounded_channel();
    let outcomes = Arc::new(tokio::sync::Mutex::new(outcomes));
    let recorders: Vec<_> = (0..super::parallel_commits(&federation.registry))
        .map(|_| {
            tokio::spawn(record(
                federation.clone(),
                worker.clone(),
                outcomes.clone(),
                in_flight.clone(),
            ))
        })
        .collect();
    let mut depth_checked = tokio::time::Instant::now();
    while !*stop.borrow() {
        let free = permits.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let timer = Stage::start(&federation, "claim");
            let now = federation.clock.now();
            let lease = now + chrono_duration(federation.config.lease);
            match federation
                .registry
                .claim_deliveries(&worker, now, lease, free as i64)
                .await
            {
                Ok(claimed) => {
                    claimed_all = claimed.len() == free;
                    in_flight.add(claimed.iter().map(|d| d.id.clone()));
                    let mut bindings = targets_of(&federation, &claimed).await;
                    timer.batch(claimed.len());
                    for delivery in claimed {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let _ = federation.updates.send(delivery.change_id.clone());
                        let federation = federation.clone();
                        let finished = finished.clone();
                        let binding = bindings.remove(&delivery.binding_id);
                        tasks.spawn(async move {
                            let timer = Stage::start(&federation, "push");
                            let outcome = push(&federation, &delivery, binding).await;
                            timer.end();
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
    renewer.abort();
}

/// Ids of the deliveries this worker claimed and has not recorded yet.
#[derive(Default)]
struct InFlight(std::sync::Mutex<std::collections::HashSet<String>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, ids: impl IntoIterator<Item = String>) {
        self.set().extend(ids);
    }

    fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut set = self.set();
        for id in ids {
            set.remove(id);
        }
    }

    fn ids(&self) -> Vec<String> {
        self.set().iter().cloned().collect()
    }
}

/// Renews the leases of the pushes in flight every third of the lease, so a
/// short lease (the default 10 s) never runs out under a slow push (a large
/// avatar transcoded, a compile, a network near its deadline) but runs out
/// soon after this process dies.
async fn renew(federation: Arc<Federation>, worker: Arc<str>, in_flight: Arc<InFlight>) {
    let lease = federation.config.lease;
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ids = in_flight.ids();
        if ids.is_empty() {
            continue;
        }
        let until = federation.clock.now() + chrono_duration(lease);
        match federation.registry.renew_claims(&worker, &ids, until).await {
            Ok(renewed) => tracing::debug!(renewed, "delivery leases renewed"),
            Err(e) => tracing::warn!(error = %e, "renewing delivery leases failed"),
        }
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
    in_flight: Arc<InFlight>,
) {
    const MAX_BATCH: usize = 256;
    let mut batch = Vec::new();
    while super::next_batch(&outcomes, &mut batch, MAX_BATCH).await > 0 {
        let timer = Stage::start(&federation, "record");
        let now = federation.clock.now();
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
        in_flight.remove(batch.iter().map(|f| f.delivery.id.as_str()));
        let mut changes: Vec<&str> = batch
            .iter()
            .map(|f| f.delivery.change_id.as_str())
            .collect();
        changes.sort_unstable();
        changes.dedup();
        if let Err(e) = federation.registry.announce_changes(&changes).await {
            tracing::debug!(error = %e, "outcomes not announced to other processes");
        }
        timer.batch(batch.len());
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

/// Times one stage of the worker into `gateway_delivery_stage_seconds`.
struct Stage<'a> {
    federation: &'a Federation,
    stage: &'static str,
    started: std::time::Instant,
}

impl<'a> Stage<'a> {
    fn start(federation: &'a Federation, stage: &'static str) -> Self {
        Stage {
            federation,
            stage,
            started: std::time::Instant::now(),
        }
    }

    fn end(self) {
        self.federation
            .metrics
            .delivery_stage
            .with_label_values(&[self.stage])
            .observe(self.started.elapsed().as_secs_f64());
    }

    /// Ends the stage for a batch of `size` deliveries (nothing is counted
    /// for an empty one: an idle claim is not work).
    fn batch(self, size: usize) {
        if size > 0 {
            self.federation
                .metrics
                .delivery_batch
                .with_label_values(&[self.stage])
                .observe(size as f64);
            self.end();
        }
    }
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

/// Pushes one delivery and says what to record: the I/O of an attempt,
/// with the decision left to [`classify`].
async fn push(
    federation: &Federation,
    delivery: &Delivery,
    binding: Option<Binding>,
) -> AttemptOutcome {
    let attempt = attempt(federation, delivery, binding).await;
    let policy = RetryPolicy::from(&federation.config);
    classify(attempt, delivery, &policy, federation.clock.now(), jitter())
}

/// What one attempt came to.
async fn attempt(
    federation: &Federation,
    delivery: &Delivery,
    binding: Option<Binding>,
) -> Attempt {
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
        Err(RegistryError::NotFound) => {
            return Attempt::Impossible("the binding was removed".into())
        }
        Err(e) => return Attempt::NotNow(format!("registry: {e}")),
    };
    let ready = match federation.connectors.get(&delivery.module_id).await {
        Ok(r) => r,
        Err(ConnectorsError::Unsupported(m)) => {
            return Attempt::Impossible(format!("module {m:?} is no longer supported"))
        }
        Err(e) => return Attempt::NotNow(format!("connector: {e}")),
    };
    let Some(credentials) = federation.master_key.open_credentials(
        &binding.credentials.0,
        &binding.id,
        &binding.user_id,
    ) else {
        return Attempt::Impossible("the stored credentials cannot be decrypted".into());
    };
    // Latest-wins rather than a queue behind the rate limiter: without a
    // token now, the delivery goes back unclaimed until the limiter has one,
    // so newer values reported meanwhile replace it.
    if let Some(limiter) = &ready.limiter {
        if let Err(wait) = limiter.check().await {
            return Attempt::Paced { wait };
        }
    }
    let prepaid = ready.limiter.is_some();
    let (settings, prepared) = match prepare(federation, delivery, &ready.plugin.description).await
    {
        Ok(p) => p,
        Err(Prepare::Fail(e)) => return Attempt::Impossible(e),
        Err(Prepare::Retry(e)) => return Attempt::NotNow(e),
    };
    let called = federation
        .connectors
        .push(
            ready,
            binding.account.clone(),
            credentials,
            settings,
            prepaid,
        )
        .await;
    match called {
        Ok(result) => Attempt::Called { prepared, result },
        Err(e) => Attempt::NotNow(format!("connector: {e}")),
    }
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
) -> Result<(Settings, Prepared), Prepare> {
    let mut settings = Settings::default();
    let mut prepared = Prepared::default();
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
                if field == "mood" {
                    if let Err(why) = normalise::known_mood(&value, description) {
                        prepared.notes.push(why);
                        continue;
                    }
                }
                if cut {
                    prepared.truncated.push(field.clone());
                }
                prepared
                    .values
                    .insert(field.clone(), Value::String(value.clone()));
                if field == "signature" {
                    settings.signature = Some(value);
                } else {
                    settings.mood = Some(value);
                }
            }
            "avatar" => {
                let Some(limits) = description.limits.avatar.clone() else {
                    // The network takes no avatar: the connector reports it
                    // as not applied.
                    continue;
                };
                let target = AvatarTarget {
                    max_pixels: limits.max_pixels,
                    max_bytes: limits.max_bytes,
                    formats: limits.formats,
                };
                let image = match federation
                    .media
                    .avatar(&delivery.user_id, text, target)
                    .await
                {
                    Ok(image) => image,
                    Err(e @ (AvatarError::Deleted | AvatarError::DoesNotFit(_))) => {
                        return Err(Prepare::Fail(e.to_string()))
                    }
                    Err(e @ AvatarError::Retry(_)) => return Err(Prepare::Retry(e.to_string())),
                };
                if image.converted {
                    prepared.truncated.push("avatar".into());
                }
                prepared.values.insert(
                    "avatar".into(),
                    Value::String(normalise::avatar_key(&crate::secrets::sha256_hex(
                        &image.data,
                    ))),
                );
                settings.avatar = Some(Image {
                    content_type: image.content_type.clone(),
                    data: image.data.clone(),
                });
            }
            _ => {}
        }
    }
    Ok((settings, prepared))
}
