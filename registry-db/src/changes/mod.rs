//! Change reports (S4, S5): the change, its per-target deliveries (the
//! outbox), the idempotency row and the user's profile, written in one
//! transaction ([`record`], with latest-wins in [`supersede`]); and reading
//! them back ([`read`]). This module holds the row mapping they share with
//! the delivery workers.

mod read;
mod record;
mod supersede;

use crate::federation_types::SettingsMap;
use crate::{from_millis, Change, Delivery, RegistryError, Result};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

pub(crate) const DELIVERY_COLUMNS: &str = "seq, id, change_id, user_id, binding_id, module_id, \
     account, settings, status, attempts, last_error, applied_fields, truncated_fields, \
     superseded_by, dead, next_attempt_at, created_at, updated_at, delivered_at";

pub(crate) fn settings_from_text(text: &str) -> Result<SettingsMap> {
    match serde_json::from_str(text)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(RegistryError::Corrupt(format!("settings {other}"))),
    }
}

pub(crate) fn settings_text(settings: &SettingsMap) -> Result<String> {
    Ok(serde_json::to_string(settings)?)
}

fn fields_from_row(row: &AnyRow, column: &str) -> Result<Vec<String>> {
    let text: Option<String> = row.try_get(column)?;
    Ok(match text {
        Some(t) => serde_json::from_str(&t)?,
        None => Vec::new(),
    })
}

pub(crate) fn delivery_from_row(row: &AnyRow) -> Result<Delivery> {
    let status: String = row.try_get("status")?;
    let delivered_at: Option<i64> = row.try_get("delivered_at")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        change_id: row.try_get("change_id")?,
        user_id: row.try_get("user_id")?,
        binding_id: row.try_get("binding_id")?,
        module_id: row.try_get("module_id")?,
        account: row.try_get("account")?,
        settings: settings_from_text(&row.try_get::<String, _>("settings")?)?,
        status: status.parse()?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        applied_fields: fields_from_row(row, "applied_fields")?,
        truncated_fields: fields_from_row(row, "truncated_fields")?,
        superseded_by: row.try_get("superseded_by")?,
        dead: row.try_get::<i64, _>("dead")? != 0,
        next_attempt_at: from_millis(row.try_get("next_attempt_at")?)?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        delivered_at: delivered_at.map(from_millis).transpose()?,
    })
}

const CHANGE_COLUMNS: &str =
    "seq, id, user_id, module_id, binding_id, settings, status, created_at";

fn change_from_row(row: &AnyRow) -> Result<Change> {
    Ok(Change {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        user_id: row.try_get("user_id")?,
        module_id: row.try_get("module_id")?,
        binding_id: row.try_get("binding_id")?,
        settings: settings_from_text(&row.try_get::<String, _>("settings")?)?,
        suppressed: row.try_get::<String, _>("status")? == "suppressed",
        created_at: from_millis(row.try_get("created_at")?)?,
        targets: Vec::new(),
    })
}

/// Open deliveries no worker holds: the ones a newer value may still replace.
const UNCLAIMED_OPEN: &str =
    "status IN ('pending', 'retrying') AND (locked_until IS NULL OR locked_until < $2)";

/// Unclaimed open deliveries to a binding, oldest first, with their settings.
pub(crate) async fn unclaimed_open(
    tx: &mut Transaction<'static, Any>,
    binding_id: &str,
    now_ms: i64,
) -> Result<Vec<(String, SettingsMap)>> {
    let sql = format!(
        "SELECT id, settings FROM deliveries WHERE binding_id = $1 AND {UNCLAIMED_OPEN} \
         ORDER BY seq"
    );
    let rows = sqlx::query(&sql)
        .bind(binding_id)
        .bind(now_ms)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                settings_from_text(&row.try_get::<String, _>("settings")?)?,
            ))
        })
        .collect()
}
