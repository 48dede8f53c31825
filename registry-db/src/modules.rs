//! The supported-module library (S2).

use crate::{
    from_millis, json_column, to_millis, Module, NewModule, Registry, RegistryError, Result,
};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

const MODULE_COLUMNS: &str =
    "id, name, version, plugin_digest, manifest, description, enabled, created_at, updated_at";

fn module_from_row(row: &AnyRow) -> Result<Module> {
    Ok(Module {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        plugin_digest: row.try_get("plugin_digest")?,
        manifest: json_column(row, "manifest")?
            .ok_or_else(|| RegistryError::Corrupt("module without manifest".into()))?,
        description: json_column(row, "description")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

impl Registry {
    /// Stores a module, or replaces the plugin of an existing id with a new
    /// version (and enables it again if it had been removed). A pause of
    /// the module's deliveries ends and its waiting deliveries are due at
    /// once: the new version may be the fix they were waiting for.
    pub async fn upsert_module(&self, new: NewModule, now: DateTime<Utc>) -> Result<Module> {
        let manifest = serde_json::to_string(&new.manifest)?;
        let description = new
            .description
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let sql = format!(
            "INSERT INTO modules (id, name, version, plugin_digest, plugin, manifest, description, \
             enabled, created_at, updated_at) VALUES ($1, $2, 1, $3, $4, $5, $6, 1, $7, $7) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             version = modules.version + 1, plugin_digest = excluded.plugin_digest, \
             plugin = excluded.plugin, manifest = excluded.manifest, \
             description = excluded.description, enabled = 1, updated_at = excluded.updated_at \
             RETURNING {MODULE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new.id)
            .bind(&new.name)
            .bind(&new.plugin_digest)
            .bind(new.plugin)
            .bind(manifest)
            .bind(description)
            .bind(to_millis(now))
            .fetch_one(&self.pool)
            .await?;
        sqlx::query("DELETE FROM module_pauses WHERE module_id = $1")
            .bind(&new.id)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2 WHERE module_id = $1 \
             AND status IN ('pending', 'retrying') AND next_attempt_at > $2",
        )
        .bind(&new.id)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        module_from_row(&row)
    }

    /// Modules ordered by id; only the supported ones unless `include_removed`.
    pub async fn list_modules(&self, include_removed: bool) -> Result<Vec<Module>> {
        let sql =
            format!("SELECT {MODULE_COLUMNS} FROM modules WHERE enabled = 1 OR $1 = 1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(i64::from(include_removed))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(module_from_row).collect()
    }

    /// One module by id, whether enabled or not.
    pub async fn module(&self, id: &str) -> Result<Module> {
        let sql = format!("SELECT {MODULE_COLUMNS} FROM modules WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        module_from_row(&row)
    }

    /// The plugin bytes of a module's current version, with that version.
    pub async fn module_plugin(&self, id: &str) -> Result<(i64, Vec<u8>)> {
        let row = sqlx::query("SELECT version, plugin FROM modules WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        Ok((row.try_get("version")?, row.try_get("plugin")?))
    }

    /// Removes a module from the library. Its bindings stay, its rows stay
    /// (history, re-upload); `NotFound` if it is not currently supported.
    pub async fn disable_module(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query(
            "UPDATE modules SET enabled = 0, updated_at = $2 WHERE id = $1 AND enabled = 1",
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
}
