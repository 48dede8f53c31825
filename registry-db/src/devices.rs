//! Devices (H5): a user's terminals, each with a durable event inbox
//! (ids increasing per device, replayable), and the history of their joins,
//! leaves and state changes. A device token is a session row bound to the
//! device.

use crate::{from_millis, to_millis, Registry, RegistryError, Result, User};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Whether a device is reachable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Holds an event stream or was seen recently.
    Active,
    /// Not seen for a while.
    Silent,
}

impl DeviceState {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Silent => "silent",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(DeviceState::Active),
            "silent" => Ok(DeviceState::Silent),
            other => Err(RegistryError::Corrupt(format!("device state {other:?}"))),
        }
    }
}

/// One device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Stable id (IMEI, MAC, ...), unique across users.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name shown to the user.
    pub name: String,
    /// Platform, e.g. "linux", "android".
    pub platform: Option<String>,
    /// Application ids or activity types it can continue.
    pub capabilities: Vec<String>,
    /// Last network address seen.
    pub ip: Option<String>,
    /// Port it listens on for direct transfers, if it said.
    pub port: Option<u16>,
    /// Active or silent.
    pub state: DeviceState,
    /// When it was last seen.
    pub last_seen: DateTime<Utc>,
    /// When it first registered.
    pub created_at: DateTime<Utc>,
}

/// What a device registration says.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Stable id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Platform.
    pub platform: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Address it registered from.
    pub ip: Option<String>,
    /// Port it listens on.
    pub port: Option<u16>,
}

/// One event of a device's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// Id, increasing per device (the SSE `id:`).
    pub seq: i64,
    /// Kind, e.g. `handoff.offer` (the SSE `event:`).
    pub kind: String,
    /// JSON payload (the SSE `data:`).
    pub payload: String,
    /// When it was published.
    pub created_at: DateTime<Utc>,
}

/// One entry of a user's device history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHistoryEntry {
    /// The device.
    pub device_id: String,
    /// `joined`, `updated`, `active`, `silent` or `left`.
    pub event: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A session and, for a device token, its device.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    /// The user.
    pub user: User,
    /// The device the token is bound to.
    pub device_id: Option<String>,
    /// When that device was last seen.
    pub device_seen: Option<DateTime<Utc>>,
}

const DEVICE_COLUMNS: &str =
    "id, user_id, name, platform, capabilities, ip, port, state, last_seen, created_at";

fn device_from_row(row: &AnyRow) -> Result<Device> {
    let capabilities: String = row.try_get("capabilities")?;
    let port: Option<i64> = row.try_get("port")?;
    Ok(Device {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        capabilities: serde_json::from_str(&capabilities)?,
        ip: row.try_get("ip")?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        state: DeviceState::parse(&row.try_get::<String, _>("state")?)?,
        last_seen: from_millis(row.try_get("last_seen")?)?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

async fn history(
    tx: &mut crate::WriteTx,
    user_id: &str,
    device_id: &str,
    event: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO device_history (user_id, device_id, event, at) VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(event)
    .bind(to_millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends an event to a device's inbox inside `tx`; its id.
async fn append(
    tx: &mut crate::WriteTx,
    device_id: &str,
    owner: Option<&str>,
    kind: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    // Read to the end (not fetch_optional): a write statement left
    // unfinished would keep SQLite from committing.
    let rows = match owner {
        None => sqlx::query(
            "UPDATE devices SET last_event = last_event + 1 WHERE id = $1 RETURNING last_event",
        )
        .bind(device_id),
        Some(owner) => sqlx::query(
            "UPDATE devices SET last_event = last_event + 1 WHERE id = $1 AND user_id = $2 \
             RETURNING last_event",
        )
        .bind(device_id)
        .bind(owner),
    }
    .fetch_all(&mut **tx)
    .await?;
    let seq: i64 = rows
        .first()
        .ok_or(RegistryError::NotFound)?
        .try_get("last_event")?;
    sqlx::query(
        "INSERT INTO device_events (device_id, seq, kind, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(device_id)
    .bind(seq)
    .bind(kind)
    .bind(payload)
    .bind(to_millis(now))
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

impl Registry {
    /// Registers a device of a user, or updates it when the user registered
    /// that id before (its earlier tokens end), and stores a new session
    /// bound to it. `Conflict{devices_pkey}` when another user has the id.
    /// True when the device is new.
    pub async fn register_device(
        &self,
        new: &NewDevice,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(Device, bool)> {
        let (mut tx, _guard) = self.begin_write().await?;
        let owner: Option<String> = sqlx::query("SELECT user_id FROM devices WHERE id = $1")
            .bind(&new.id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("user_id"))
            .transpose()?;
        let capabilities = serde_json::to_string(&new.capabilities)?;
        let port = new.port.map(i64::from);
        let created = match owner {
            Some(owner) if owner != new.user_id => {
                return Err(RegistryError::Conflict {
                    constraint: "devices_pkey".into(),
                })
            }
            Some(_) => {
                sqlx::query(
                    "UPDATE devices SET name = $2, platform = $3, capabilities = $4, ip = $5, \
                     port = $6, state = 'active', last_seen = $7 WHERE id = $1",
                )
                .bind(&new.id)
                .bind(&new.name)
                .bind(&new.platform)
                .bind(&capabilities)
                .bind(&new.ip)
                .bind(port)
                .bind(to_millis(now))
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM sessions WHERE device_id = $1")
                    .bind(&new.id)
                    .execute(&mut *tx)
                    .await?;
                history(&mut tx, &new.user_id, &new.id, "updated", now).await?;
                false
            }
            None => {
                sqlx::query(
                    "INSERT INTO devices (id, user_id, name, platform, capabilities, ip, port, \
                     state, last_seen, last_event, delivered, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, 0, 0, $8)",
                )
                .bind(&new.id)
                .bind(&new.user_id)
                .bind(&new.name)
                .bind(&new.platform)
                .bind(&capabilities)
                .bind(&new.ip)
                .bind(port)
                .bind(to_millis(now))
                .execute(&mut *tx)
                .await?;
                history(&mut tx, &new.user_id, &new.id, "joined", now).await?;
                true
            }
        };
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, device_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(&new.user_id)
        .bind(to_millis(now))
        .bind(to_millis(expires_at))
        .bind(&new.id)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1");
        let row = sqlx::query(&sql).bind(&new.id).fetch_one(&mut *tx).await?;
        let device = device_from_row(&row)?;
        tx.commit().await?;
        Ok((device, created))
    }

    /// The user's devices, oldest first.
    pub async fn list_devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// One of the user's devices; `NotFound` for another user's too.
    pub async fn device(&self, user_id: &str, id: &str) -> Result<Device> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        device_from_row(&row)
    }

    /// Removes one of the user's devices with its inbox and its sessions.
    pub async fn delete_device(&self, user_id: &str, id: &str, now: DateTime<Utc>) -> Result<()> {
        let (mut tx, _guard) = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound);
        }
        history(&mut tx, user_id, id, "left", now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user's device history, newest first, at most `limit` entries.
    pub async fn device_history(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<DeviceHistoryEntry>> {
        let rows = sqlx::query(
            "SELECT device_id, event, at FROM device_history WHERE user_id = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceHistoryEntry {
                    device_id: row.try_get("device_id")?,
                    event: row.try_get("event")?,
                    at: from_millis(row.try_get("at")?)?,
                })
            })
            .collect()
    }

    /// The owner of a live session and, for a device token, its device.
    pub async fn session_owner(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<SessionOwner> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.created_at, s.device_id, d.last_seen AS device_seen \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             LEFT JOIN devices d ON d.id = s.device_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(RegistryError::NotFound)?;
        let seen: Option<i64> = row.try_get("device_seen")?;
        Ok(SessionOwner {
            user: User {
                id: row.try_get("id")?,
                username: row.try_get("username")?,
                created_at: from_millis(row.try_get("created_at")?)?,
            },
            device_id: row.try_get("device_id")?,
            device_seen: seen.map(from_millis).transpose()?,
        })
    }

    /// Records that a device was seen now (from `ip` when known); a silent
    /// device becomes active, with a history entry.
    pub async fn touch_device(&self, id: &str, ip: Option<&str>, now: DateTime<Utc>) -> Result<()> {
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        let row = sqlx::query("SELECT user_id, state FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let user_id: String = row.try_get("user_id")?;
        let state: String = row.try_get("state")?;
        sqlx::query(
            "UPDATE devices SET last_seen = $2, state = 'active', ip = COALESCE($3, ip) WHERE id = $1",
        )
        .bind(id)
        .bind(to_millis(now))
        .bind(ip)
        .execute(&mut *tx)
        .await?;
        if state != "active" {
            history(&mut tx, &user_id, id, "active", now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that these devices (holding event streams, so active) are
    /// there now.
    pub async fn keep_devices_seen(&self, ids: &[&str], now: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE devices SET last_seen = $1 WHERE state = 'active' AND id IN ({})",
            crate::sql::params(2, ids.len())
        );
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        let mut query = sqlx::query(&sql).bind(to_millis(now));
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks active devices not seen since `cutoff` silent, with a history
    /// entry each; their ids.
    pub async fn mark_silent_devices(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        let rows = sqlx::query(
            "SELECT id, user_id FROM devices WHERE state = 'active' AND last_seen < $1",
        )
        .bind(to_millis(cutoff))
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let user_id: String = row.try_get("user_id")?;
            let done = sqlx::query(
                "UPDATE devices SET state = 'silent' WHERE id = $1 AND state = 'active' \
                 AND last_seen < $2",
            )
            .bind(&id)
            .bind(to_millis(cutoff))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                history(&mut tx, &user_id, &id, "silent", now).await?;
                ids.push(id);
            }
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Appends one event to each of these devices' inboxes in one durable
    /// transaction; (device, event id) of each. Unknown devices are skipped.
    pub async fn publish_device_events(
        &self,
        device_ids: &[&str],
        kind: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        let (mut tx, _guard) = self.begin_write().await?;
        let mut published = Vec::with_capacity(device_ids.len());
        for id in device_ids {
            match append(&mut tx, id, None, kind, payload, now).await {
                Ok(seq) => published.push(((*id).to_owned(), seq)),
                Err(RegistryError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(published)
    }

    /// Appends one event to each of these devices of `user`, all or
    /// nothing: `Err(NotFound)` (nothing stored) when one of them is not
    /// the user's; (device, event id) of each.
    pub async fn publish_user_device_events(
        &self,
        user: &str,
        device_ids: &[&str],
        kind: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        let (mut tx, _guard) = self.begin_write().await?;
        let mut published = Vec::with_capacity(device_ids.len());
        for id in device_ids {
            let seq = append(&mut tx, id, Some(user), kind, payload, now).await?;
            published.push(((*id).to_owned(), seq));
        }
        tx.commit().await?;
        Ok(published)
    }

    /// Events of a device's inbox after `after`, oldest first, at most `limit`.
    pub async fn device_events_after(
        &self,
        device_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<DeviceEvent>> {
        let rows = sqlx::query(
            "SELECT seq, kind, payload, created_at FROM device_events \
             WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(device_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceEvent {
                    seq: row.try_get("seq")?,
                    kind: row.try_get("kind")?,
                    payload: row.try_get("payload")?,
                    created_at: from_millis(row.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    /// The newest event id a stream has sent to the device.
    pub async fn device_delivered(&self, device_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT delivered FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        Ok(row.try_get("delivered")?)
    }

    /// Records that a stream sent the device's events up to `seq`.
    pub async fn mark_device_delivered(&self, device_id: &str, seq: i64) -> Result<()> {
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        sqlx::query(
            "UPDATE devices SET delivered = CASE WHEN delivered < $2 THEN $2 ELSE delivered END \
             WHERE id = $1",
        )
        .bind(device_id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes inbox events older than `keep_undelivered`, and delivered ones
    /// older than `keep_delivered`; how many.
    pub async fn purge_device_events(
        &self,
        keep_undelivered: DateTime<Utc>,
        keep_delivered: DateTime<Utc>,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM device_events WHERE created_at < $1 OR (created_at < $2 AND seq <= \
             (SELECT d.delivered FROM devices d WHERE d.id = device_events.device_id))",
        )
        .bind(to_millis(keep_undelivered))
        .bind(to_millis(keep_delivered))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
