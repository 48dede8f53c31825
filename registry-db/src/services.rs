//! Service plugins (DRAFT): their rows, and the durable timers the host
//! keeps for them.

use crate::{from_millis, json_column, to_millis, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A service plugin as stored (the plugin bytes apart).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    /// Id (the `/v1/services/{id}` segment).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Increases with every upload.
    pub version: i64,
    /// Hex SHA-256 of the plugin.
    pub plugin_digest: String,
    /// The manifest (its config sealed by the caller).
    pub manifest: Value,
    /// False once removed.
    pub enabled: bool,
    /// Latest upload.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, version, plugin_digest, manifest, enabled, updated_at";

fn from_row(row: &AnyRow) -> Result<ServiceRow> {
    Ok(ServiceRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        plugin_digest: row.try_get("plugin_digest")?,
        manifest: json_column(row, "manifest")?
            .ok_or_else(|| RegistryError::Corrupt("service without manifest".into()))?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

/// A due timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// Service.
    pub service_id: String,
    /// User.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Until when this process holds it.
    pub leased_until: DateTime<Utc>,
}

impl Registry {
    /// Stores a service, or a new version of it (enabled again).
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_service(
        &self,
        id: &str,
        name: &str,
        plugin: Vec<u8>,
        plugin_digest: &str,
        manifest: &Value,
        now: DateTime<Utc>,
    ) -> Result<ServiceRow> {
        let sql = format!(
            "INSERT INTO services (id, name, version, plugin_digest, plugin, manifest, enabled, \
             created_at, updated_at) VALUES ($1, $2, 1, $3, $4, $5, 1, $6, $6) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             version = services.version + 1, plugin_digest = excluded.plugin_digest, \
             plugin = excluded.plugin, manifest = excluded.manifest, enabled = 1, \
             updated_at = excluded.updated_at RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(id)
            .bind(name)
            .bind(plugin_digest)
            .bind(plugin)
            .bind(serde_json::to_string(manifest)?)
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await?;
        from_row(rows.first().ok_or(RegistryError::NotFound)?)
    }

    /// The enabled services, by id.
    pub async fn list_services(&self) -> Result<Vec<ServiceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM services WHERE enabled = 1 ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// One enabled service; `NotFound` when unknown or removed.
    pub async fn service(&self, id: &str) -> Result<ServiceRow> {
        let sql = format!("SELECT {COLUMNS} FROM services WHERE id = $1 AND enabled = 1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        from_row(&row)
    }

    /// The plugin bytes of a service's current version.
    pub async fn service_plugin(&self, id: &str) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT plugin FROM services WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        Ok(row.try_get("plugin")?)
    }

    /// Removes a service (its data stays until it is uploaded again).
    pub async fn disable_service(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query(
            "UPDATE services SET enabled = 0, updated_at = $2 WHERE id = $1 AND enabled = 1",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound);
        }
        Ok(())
    }

    /// Sets (or moves) a timer.
    pub async fn schedule_timer(
        &self,
        service: &str,
        user: &str,
        name: &str,
        due: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_timers (service_id, user_id, name, due_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (service_id, user_id, name) DO UPDATE SET due_at = excluded.due_at",
        )
        .bind(service)
        .bind(user)
        .bind(name)
        .bind(to_millis(due))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels a timer (nothing when there is none).
    pub async fn cancel_timer(&self, service: &str, user: &str, name: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM service_timers WHERE service_id = $1 AND user_id = $2 AND name = $3",
        )
        .bind(service)
        .bind(user)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the timers due at `now`, each by one process only, until
    /// `lease_until`: a process that dies before [`Registry::finish_timer`]
    /// leaves them due again then (at least once).
    pub async fn take_due_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueTimer>> {
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        let rows = sqlx::query(
            "SELECT service_id, user_id, name FROM service_timers WHERE due_at <= $1 \
             ORDER BY due_at LIMIT $2",
        )
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let timer = DueTimer {
                service_id: row.try_get("service_id")?,
                user_id: row.try_get("user_id")?,
                name: row.try_get("name")?,
                leased_until: lease_until,
            };
            let done = sqlx::query(
                "UPDATE service_timers SET due_at = $5 WHERE service_id = $1 AND user_id = $2 \
                 AND name = $3 AND due_at <= $4",
            )
            .bind(&timer.service_id)
            .bind(&timer.user_id)
            .bind(&timer.name)
            .bind(to_millis(now))
            .bind(to_millis(lease_until))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                due.push(timer);
            }
        }
        tx.commit().await?;
        Ok(due)
    }

    /// Clears a timer that ran, unless it was set again meanwhile.
    pub async fn finish_timer(&self, timer: &DueTimer) -> Result<()> {
        sqlx::query(
            "DELETE FROM service_timers WHERE service_id = $1 AND user_id = $2 AND name = $3 \
             AND due_at = $4",
        )
        .bind(&timer.service_id)
        .bind(&timer.user_id)
        .bind(&timer.name)
        .bind(to_millis(timer.leased_until))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
