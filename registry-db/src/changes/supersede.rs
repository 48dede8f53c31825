//! Latest-wins while a change is recorded: older unclaimed deliveries to the
//! same bindings give way to the new ones, and reports from a network itself
//! drop the older values they overtake.

use super::{settings_from_text, settings_text, UNCLAIMED_OPEN};
use crate::federation_types::SettingsMap;
use crate::sql::{case_map, params, ROWS_PER_STATEMENT};
use crate::{Backend, NewChange, Result};
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

/// Marks every unclaimed open delivery to the changes' targets superseded
/// by the change now targeting that binding, and answers their settings
/// merged per binding, oldest first (the new deliveries carry them on).
pub(super) async fn supersede_unclaimed(
    tx: &mut Transaction<'static, Any>,
    changes: &[&NewChange],
    now_ms: i64,
) -> Result<HashMap<String, SettingsMap>> {
    let targets: Vec<(&str, &str)> = changes
        .iter()
        .flat_map(|c| {
            c.targets
                .iter()
                .map(|t| (t.binding_id.as_str(), c.id.as_str()))
        })
        .collect();
    let mut older: Vec<(String, i64, SettingsMap)> = Vec::new();
    for chunk in targets.chunks(ROWS_PER_STATEMENT) {
        let (superseded_by, ids) = case_map("binding_id", 2, chunk.len());
        let sql = format!(
            "UPDATE deliveries SET status = 'superseded', \
             superseded_by = {superseded_by}, updated_at = $1 \
             WHERE binding_id IN ({ids}) AND status IN ('pending', 'retrying') \
             AND (locked_until IS NULL OR locked_until < $1) RETURNING binding_id, seq, settings"
        );
        let mut query = sqlx::query(&sql).bind(now_ms);
        for (binding, change) in chunk {
            query = query.bind(*binding).bind(*change);
        }
        for row in query.fetch_all(&mut **tx).await? {
            older.push((
                row.try_get("binding_id")?,
                row.try_get("seq")?,
                settings_from_text(&row.try_get::<String, _>("settings")?)?,
            ));
        }
    }
    older.sort_by_key(|(_, seq, _)| *seq);
    let mut merged: HashMap<String, SettingsMap> = HashMap::new();
    for (binding, _, settings) in older {
        merged.entry(binding).or_default().extend(settings);
    }
    Ok(merged)
}

/// Marks a delivery superseded by `change_id` if no worker claimed it
/// meanwhile; false when it was claimed (it then goes out first).
async fn supersede(
    tx: &mut Transaction<'static, Any>,
    delivery_id: &str,
    change_id: &str,
    now_ms: i64,
) -> Result<bool> {
    let sql = format!(
        "UPDATE deliveries SET status = 'superseded', superseded_by = $3, updated_at = $2 \
         WHERE id = $1 AND {UNCLAIMED_OPEN}"
    );
    let done = sqlx::query(&sql)
        .bind(delivery_id)
        .bind(now_ms)
        .bind(change_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The networks of the changes' sources reported these fields themselves:
/// pending older values for them must not overwrite them, and what the
/// gateway once applied there no longer holds for those fields.
pub(super) async fn forget_reported_fields(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    changes: &[&NewChange],
    now_ms: i64,
) -> Result<()> {
    let reported: HashMap<&str, &NewChange> = changes
        .iter()
        .flat_map(|c| c.sources.iter().map(move |s| (s.as_str(), *c)))
        .collect();
    let sources: Vec<&str> = reported.keys().copied().collect();
    for chunk in sources.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, binding_id, settings FROM deliveries WHERE binding_id IN ({}) \
             AND status IN ('pending', 'retrying') AND (locked_until IS NULL OR locked_until < $1)",
            params(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now_ms);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let id: String = row.try_get("id")?;
            let binding: String = row.try_get("binding_id")?;
            let Some(change) = reported.get(binding.as_str()) else {
                continue;
            };
            let mut older = settings_from_text(&row.try_get::<String, _>("settings")?)?;
            older.retain(|field, _| !change.settings.contains_key(field));
            if older.is_empty() {
                supersede(tx, &id, &change.id, now_ms).await?;
            } else {
                let sql = format!(
                    "UPDATE deliveries SET settings = $3, updated_at = $2 WHERE id = $1 AND {UNCLAIMED_OPEN}"
                );
                sqlx::query(&sql)
                    .bind(&id)
                    .bind(now_ms)
                    .bind(settings_text(&older)?)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    // What the gateway applied there, without the reported fields (NULL
    // once nothing is left): one statement per set of reported fields.
    let mut by_fields: HashMap<Vec<&String>, Vec<&str>> = HashMap::new();
    for (source, change) in &reported {
        let fields: Vec<&String> = change.settings.keys().collect();
        if !fields.is_empty() {
            by_fields.entry(fields).or_default().push(source);
        }
    }
    for (fields, sources) in by_fields {
        for chunk in sources.chunks(ROWS_PER_STATEMENT) {
            let removed = match backend {
                Backend::Sqlite => {
                    format!("json_remove(last_applied, {})", params(1, fields.len()))
                }
                Backend::Postgres => format!(
                    "(last_applied::jsonb{})::text",
                    (1..=fields.len())
                        .map(|p| format!(" - ${p}::text"))
                        .collect::<String>()
                ),
            };
            let sql = format!(
                "UPDATE bindings SET last_applied = NULLIF({removed}, '{{}}') \
                 WHERE last_applied IS NOT NULL AND id IN ({})",
                params(fields.len() + 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for field in &fields {
                query = query.bind(match backend {
                    Backend::Sqlite => format!("$.{field}"),
                    Backend::Postgres => (*field).clone(),
                });
            }
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut **tx).await?;
        }
    }
    Ok(())
}
