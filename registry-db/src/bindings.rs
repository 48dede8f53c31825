//! Bindings: each user's application list (S3).

use crate::{
    from_millis, json_column, to_millis, Binding, NewBinding, Registry, RegistryError, Result,
    SealedCredentials,
};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

const BINDING_COLUMNS: &str =
    "id, user_id, module_id, account, credentials, last_applied, created_at";

fn binding_from_row(row: &AnyRow) -> Result<Binding> {
    Ok(Binding {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        module_id: row.try_get("module_id")?,
        account: row.try_get("account")?,
        credentials: SealedCredentials(row.try_get("credentials")?),
        last_applied: json_column(row, "last_applied")?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

impl Registry {
    /// Adds a binding to the user's application list;
    /// `Conflict{bindings_module_account_key}` if another user has that
    /// account of that module bound (one account belongs to one user). If
    /// the user has it bound already, the conflict names either that or
    /// `bindings_user_module_account_key`: callers check their own list first.
    pub async fn create_binding(&self, new: NewBinding, now: DateTime<Utc>) -> Result<Binding> {
        sqlx::query(
            "INSERT INTO bindings (id, user_id, module_id, account, credentials, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.id)
        .bind(&new.user_id)
        .bind(&new.module_id)
        .bind(&new.account)
        .bind(new.credentials.0.clone())
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(Binding {
            id: new.id,
            user_id: new.user_id,
            module_id: new.module_id,
            account: new.account,
            credentials: new.credentials,
            last_applied: None,
            created_at: from_millis(to_millis(now))?,
        })
    }

    /// The user's bindings, oldest first.
    pub async fn list_bindings(&self, user_id: &str) -> Result<Vec<Binding>> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE user_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(binding_from_row).collect()
    }

    /// One of the user's bindings; `NotFound` for another user's binding too.
    pub async fn binding(&self, user_id: &str, id: &str) -> Result<Binding> {
        let sql = format!("SELECT {BINDING_COLUMNS} FROM bindings WHERE user_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        binding_from_row(&row)
    }

    /// Bindings by id, whoever they belong to (the delivery workers read
    /// the targets of a claimed batch at once). Missing ids are left out.
    pub async fn bindings_by_id(&self, ids: &[&str]) -> Result<Vec<Binding>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE id IN ({})",
            crate::sql::params(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(binding_from_row).collect()
    }

    /// The oldest binding of any user, `None` when there is none: one sample
    /// of sealed credentials, to check a master key against a registry that
    /// has no key check value yet.
    pub async fn first_binding(&self) -> Result<Option<Binding>> {
        let sql = format!("SELECT {BINDING_COLUMNS} FROM bindings ORDER BY created_at, id LIMIT 1");
        let row = sqlx::query(&sql).fetch_optional(&self.pool).await?;
        row.as_ref().map(binding_from_row).transpose()
    }

    /// Removes one of the user's bindings.
    pub async fn delete_binding(&self, user_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM bindings WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound);
        }
        Ok(())
    }

    /// Records the settings the gateway last applied to a binding.
    pub async fn set_last_applied(
        &self,
        binding_id: &str,
        settings: &serde_json::Value,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE bindings SET last_applied = $2 WHERE id = $1")
            .bind(binding_id)
            .bind(serde_json::to_string(settings)?)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound);
        }
        Ok(())
    }
}
