//! Reading changes back: one change, a page of them, the profile they built
//! and the receipt stored under an idempotency key.

use super::{
    change_from_row, delivery_from_row, settings_from_text, CHANGE_COLUMNS, DELIVERY_COLUMNS,
};
use crate::federation_types::SettingsMap;
use crate::{from_millis, Change, Delivery, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use sqlx::{Any, Row};
use std::collections::HashMap;

impl Registry {
    /// The receipt stored under a user's `Idempotency-Key`, if any.
    pub async fn idempotent_receipt(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        stored_receipt(&self.pool, user_id, key).await
    }

    /// One of the user's changes with its targets; `NotFound` for another
    /// user's change too.
    pub async fn change(&self, user_id: &str, id: &str) -> Result<Change> {
        let sql = format!("SELECT {CHANGE_COLUMNS} FROM changes WHERE user_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let mut change = change_from_row(&row)?;
        change.targets = self.deliveries_of_change(&change.id).await?;
        Ok(change)
    }

    /// The targets of a change, in creation order.
    pub async fn deliveries_of_change(&self, change_id: &str) -> Result<Vec<Delivery>> {
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE change_id = $1 ORDER BY seq");
        let rows = sqlx::query(&sql)
            .bind(change_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// The user's changes, newest first, older than the change `before` when
    /// given (a cursor), each with its targets in creation order. Two queries
    /// whatever the page size: the page, then all its targets.
    pub async fn list_changes(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Change>> {
        let sql = format!(
            "SELECT {CHANGE_COLUMNS} FROM changes WHERE user_id = $1 AND \
             ($2 = '' OR seq < (SELECT seq FROM changes WHERE user_id = $1 AND id = $2)) \
             ORDER BY seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(before.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut changes = rows
            .iter()
            .map(change_from_row)
            .collect::<Result<Vec<_>>>()?;
        let (Some(newest), Some(oldest)) = (changes.first(), changes.last()) else {
            return Ok(changes);
        };
        // The page is every change of the user between its oldest and newest
        // `seq`, so one range finds all their targets, whatever the page
        // size (a change committed meanwhile has a higher `seq`; its targets
        // would be left out below anyway).
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE change_id IN \
             (SELECT id FROM changes WHERE user_id = $1 AND seq >= $2 AND seq <= $3) \
             ORDER BY seq"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(oldest.seq)
            .bind(newest.seq)
            .fetch_all(&self.pool)
            .await?;
        let mut targets: HashMap<String, Vec<Delivery>> = HashMap::new();
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            targets
                .entry(delivery.change_id.clone())
                .or_default()
                .push(delivery);
        }
        for change in &mut changes {
            change.targets = targets.remove(&change.id).unwrap_or_default();
        }
        Ok(changes)
    }

    /// The user's current federated settings and when they last changed.
    pub async fn profile(&self, user_id: &str) -> Result<Option<(SettingsMap, DateTime<Utc>)>> {
        let row = sqlx::query("SELECT settings, updated_at FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok((
                settings_from_text(&row.try_get::<String, _>("settings")?)?,
                from_millis(row.try_get("updated_at")?)?,
            ))
        })
        .transpose()
    }
}

/// The receipt under a user's idempotency key, read through `executor` so
/// a recording transaction sees the row that beat it.
pub(super) async fn stored_receipt<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    user_id: &str,
    key: &str,
) -> Result<Option<serde_json::Value>> {
    let row = sqlx::query("SELECT receipt FROM idempotency_keys WHERE user_id = $1 AND key = $2")
        .bind(user_id)
        .bind(key)
        .fetch_optional(executor)
        .await?;
    row.map(|row| Ok(serde_json::from_str(&row.try_get::<String, _>("receipt")?)?))
        .transpose()
}
