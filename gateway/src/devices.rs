//! Devices (H5): a user's terminals as a domain service. Registration (a
//! device token: a session bound to the device), the control list with
//! active/silent state, the history, and each device's durable inbox:
//! events are stored first, then streams are woken, in this process
//! directly and in the others through PostgreSQL notices.

use crate::clock::SharedClock;
use crate::secrets::{random_token, sha256_hex};
use registry_db::{Device, DeviceHistoryEntry, NewDevice, Registry, RegistryError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Lifetimes of device tokens and inbox events, and when a device is silent.
#[derive(Debug, Clone)]
pub struct DeviceLimits {
    /// How long a device token lasts (registering again gives a new one).
    pub token_ttl: Duration,
    /// A device not seen for this long (and holding no stream) is silent.
    pub active_window: Duration,
    /// Events not yet sent to their device are kept this long.
    pub keep_undelivered: Duration,
    /// Events a stream sent are kept this long, for replays.
    pub keep_delivered: Duration,
    /// How often silent devices are marked and old events purged.
    pub tidy_every: Duration,
    /// An open inbox stream re-reads its inbox this often even when nothing
    /// woke it (a safety net under the wake-ups and PostgreSQL notices).
    pub stream_recheck: Duration,
    /// Event streams (device inboxes and change streams) one user may hold
    /// open at once.
    pub max_streams_per_user: usize,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            active_window: Duration::from_secs(60),
            keep_undelivered: Duration::from_secs(7 * 24 * 3600),
            keep_delivered: Duration::from_secs(24 * 3600),
            tidy_every: Duration::from_secs(10),
            stream_recheck: Duration::from_secs(15),
            max_streams_per_user: crate::http::streams::MAX_STREAMS_PER_USER,
        }
    }
}

/// A request from a device records it as seen at most this often.
const SEEN_EVERY: Duration = Duration::from_secs(10);
/// Longest device id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Most capabilities a device may list.
pub const MAX_CAPABILITIES: usize = 64;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A field breaks its rule.
    #[error("{0}")]
    Invalid(String),
    /// Another user registered this id.
    #[error("device id {0:?} is registered by another user")]
    Taken(String),
    /// No such device of this user.
    #[error("device not found")]
    NotFound,
    /// Storage failed.
    #[error(transparent)]
    Registry(RegistryError),
}

impl From<RegistryError> for DeviceError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound => DeviceError::NotFound,
            e => DeviceError::Registry(e),
        }
    }
}

/// What a registration says (already parsed from the wire).
#[derive(Debug, Clone)]
pub struct Registration {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Platform.
    pub platform: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Port.
    pub port: Option<u16>,
}

/// A registered device and its new token.
#[derive(Debug)]
pub struct Registered {
    /// The device as stored.
    pub device: Device,
    /// True for a new device, false for one registered again.
    pub created: bool,
    /// The device token (shown once).
    pub token: String,
}

fn text_rule(field: &str, value: &str, max: usize) -> Result<(), DeviceError> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > max || value.chars().any(char::is_control) {
        return Err(DeviceError::Invalid(format!(
            "{field} is 1-{max} characters without control characters"
        )));
    }
    Ok(())
}

impl Registration {
    fn check(&self) -> Result<(), DeviceError> {
        text_rule("id", &self.id, MAX_ID_CHARS)?;
        text_rule("name", &self.name, 100)?;
        if let Some(platform) = &self.platform {
            text_rule("platform", platform, 64)?;
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(DeviceError::Invalid(format!(
                "at most {MAX_CAPABILITIES} capabilities"
            )));
        }
        for capability in &self.capabilities {
            text_rule("each capability", capability, 200)?;
        }
        if self.port == Some(0) {
            return Err(DeviceError::Invalid("port is 1-65535".into()));
        }
        Ok(())
    }
}

/// The device registry and inboxes.
pub struct Devices {
    registry: Registry,
    clock: SharedClock,
    limits: DeviceLimits,
    /// Ids of devices whose inbox grew (here or, relayed, elsewhere).
    grew: broadcast::Sender<Arc<str>>,
    /// Devices holding an event stream on this process, with how many.
    streaming: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open event stream of a device; dropping it closes it.
pub struct Streaming {
    streaming: Arc<Mutex<HashMap<String, usize>>>,
    device_id: String,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut open = self.streaming.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.device_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.device_id);
            }
        }
    }
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Devices {
    /// Wraps the registry.
    pub fn new(registry: Registry, clock: SharedClock, limits: DeviceLimits) -> Self {
        let (grew, _) = broadcast::channel(4096);
        Devices {
            registry,
            clock,
            limits,
            grew,
            streaming: Arc::default(),
        }
    }

    /// Records that the device holds an event stream here (it stays active
    /// while the returned guard lives) and that it is seen now.
    pub async fn stream_opened(&self, device_id: &str, ip: Option<&str>) -> Streaming {
        *self
            .streaming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(device_id.to_owned())
            .or_default() += 1;
        self.touch(device_id, ip).await;
        Streaming {
            streaming: self.streaming.clone(),
            device_id: device_id.to_owned(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &DeviceLimits {
        &self.limits
    }

    /// Registers a device of the user (or updates it, with a new token),
    /// from address `ip`. The user's other devices hear `device.joined`.
    pub async fn register(
        &self,
        user_id: &str,
        registration: Registration,
        ip: Option<String>,
    ) -> Result<Registered, DeviceError> {
        registration.check()?;
        let token = random_token();
        let now = self.clock.now();
        let new = NewDevice {
            id: registration.id.trim().to_owned(),
            user_id: user_id.to_owned(),
            name: registration.name.trim().to_owned(),
            platform: registration.platform.map(|p| p.trim().to_owned()),
            capabilities: registration.capabilities,
            ip,
            port: registration.port,
        };
        let (device, created) = match self
            .registry
            .register_device(
                &new,
                &sha256_hex(token.as_bytes()),
                now,
                now + chrono(self.limits.token_ttl),
            )
            .await
        {
            Ok(done) => done,
            Err(RegistryError::Conflict { .. }) => return Err(DeviceError::Taken(new.id)),
            Err(e) => return Err(e.into()),
        };
        if created {
            let payload =
                json!({"device": device.id, "name": device.name, "platform": device.platform});
            self.publish_to_others(user_id, &device.id, "device.joined", &payload)
                .await?;
        }
        Ok(Registered {
            device,
            created,
            token,
        })
    }

    /// The user's devices with their current state.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Device>, DeviceError> {
        Ok(self.registry.list_devices(user_id).await?)
    }

    /// The user's device history, newest first.
    pub async fn history(&self, user_id: &str) -> Result<Vec<DeviceHistoryEntry>, DeviceError> {
        Ok(self.registry.device_history(user_id, 200).await?)
    }

    /// Removes one of the user's devices (its token ends, its inbox goes);
    /// the other devices hear `device.left`.
    pub async fn remove(&self, user_id: &str, id: &str) -> Result<(), DeviceError> {
        self.registry
            .delete_device(user_id, id, self.clock.now())
            .await?;
        // Its open stream ends at its next check.
        let _ = self.grew.send(Arc::from(id));
        self.publish_to_others(user_id, id, "device.left", &json!({"device": id}))
            .await
    }

    async fn publish_to_others(
        &self,
        user_id: &str,
        except: &str,
        kind: &str,
        payload: &Value,
    ) -> Result<(), DeviceError> {
        let devices = self.registry.list_devices(user_id).await?;
        let others: Vec<&str> = devices
            .iter()
            .map(|d| d.id.as_str())
            .filter(|id| *id != except)
            .collect();
        self.publish(&others, kind, payload).await
    }

    /// Stores `kind` with `payload` in each device's inbox (durably), then
    /// wakes their streams in every process.
    pub async fn publish(
        &self,
        device_ids: &[&str],
        kind: &str,
        payload: &Value,
    ) -> Result<(), DeviceError> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let payload = payload.to_string();
        let published = self
            .registry
            .publish_device_events(device_ids, kind, &payload, self.clock.now())
            .await?;
        self.woken(&published).await;
        Ok(())
    }

    /// Stores `kind` with `payload` in each of these devices of `user_id`,
    /// all or nothing: `NotFound` (nothing stored) when one is not theirs.
    pub async fn publish_for(
        &self,
        user_id: &str,
        device_ids: &[&str],
        kind: &str,
        payload: &Value,
    ) -> Result<(), DeviceError> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let published = self
            .registry
            .publish_user_device_events(
                user_id,
                device_ids,
                kind,
                &payload.to_string(),
                self.clock.now(),
            )
            .await?;
        self.woken(&published).await;
        Ok(())
    }

    /// Wakes the streams of devices whose inbox grew, in every process.
    async fn woken(&self, published: &[(String, i64)]) {
        for (id, _) in published {
            let _ = self.grew.send(Arc::from(id.as_str()));
        }
        let ids: Vec<&str> = published.iter().map(|(id, _)| id.as_str()).collect();
        if let Err(e) = self.registry.announce_devices(&ids).await {
            // Other processes' streams find the events at their next recheck.
            tracing::warn!(error = %e, "device events not announced to other processes");
        }
    }

    /// Ids of devices whose inbox grew or which were removed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.grew.subscribe()
    }

    /// Records a request from a device (at most every few seconds).
    pub async fn seen(
        &self,
        device_id: &str,
        last_seen: Option<chrono::DateTime<chrono::Utc>>,
        ip: Option<&str>,
    ) {
        let now = self.clock.now();
        if last_seen.is_some_and(|seen| now - seen < chrono(SEEN_EVERY)) {
            return;
        }
        self.touch(device_id, ip).await;
    }

    /// Records that a device is there now (a stream opened or is alive).
    pub async fn touch(&self, device_id: &str, ip: Option<&str>) {
        if let Err(e) = self
            .registry
            .touch_device(device_id, ip, self.clock.now())
            .await
        {
            if !matches!(e, RegistryError::NotFound) {
                tracing::warn!(error = %e, "device not marked as seen");
            }
        }
    }

    /// Housekeeping: devices holding a stream here are seen now; others not
    /// seen within the active window become silent; old inbox events go.
    pub async fn tidy(&self) {
        let now = self.clock.now();
        let streaming: Vec<String> = self
            .streaming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let ids: Vec<&str> = streaming.iter().map(String::as_str).collect();
        if let Err(e) = self.registry.keep_devices_seen(&ids, now).await {
            tracing::warn!(error = %e, "streaming devices not marked as seen");
        }
        if let Err(e) = self
            .registry
            .mark_silent_devices(now - chrono(self.limits.active_window), now)
            .await
        {
            tracing::warn!(error = %e, "silent devices not marked");
        }
        match self
            .registry
            .purge_device_events(
                now - chrono(self.limits.keep_undelivered),
                now - chrono(self.limits.keep_delivered),
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old device events purged"),
            Err(e) => tracing::warn!(error = %e, "old device events not purged"),
        }
    }

    /// Passes other processes' device notices on to this process's
    /// streams until `stop` turns true; returns at once on SQLite.
    pub async fn relay_notices(&self, stop: tokio::sync::watch::Receiver<bool>) {
        crate::notices::relay(
            || self.registry.listen_devices(),
            |id| {
                let _ = self.grew.send(Arc::from(id.as_str()));
            },
            stop,
            "device events",
        )
        .await
    }
}
