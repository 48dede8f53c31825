//! Change reports (S4, S5): the change, its per-target deliveries (the
//! outbox), the idempotency row and the user's profile, written in one
//! transaction; and reading them back.

use crate::federation_types::SettingsMap;
use crate::{
    from_millis, to_millis, Backend, Change, ChangeRecorded, Delivery, DeliveryStatus, NewChange,
    Registry, RegistryError, Result, StoredAnswer,
};
use chrono::{DateTime, Utc};
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

impl Registry {
    /// Records a change with its targets in one transaction (the outbox).
    /// Older unclaimed deliveries to a target are superseded and their other
    /// fields folded into the new one (latest-wins coalescing).
    pub async fn record_change(
        &self,
        new: NewChange,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecorded> {
        let now_ms = to_millis(now);
        let (mut tx, _writer) = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // One writer per user at a time, so `seq` follows commit order
            // for everything latest-wins compares.
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(&new.user_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((key, answer)) = &new.idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, status_code, response, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&new.user_id)
            .bind(key)
            .bind(i64::from(answer.status_code))
            .bind(serde_json::to_string(&answer.body)?)
            .bind(now_ms)
            .execute(&mut *tx)
            .await;
            match inserted.map_err(RegistryError::from) {
                Ok(_) => {}
                Err(RegistryError::Conflict { .. }) => {
                    drop(tx);
                    return self
                        .idempotent_answer(&new.user_id, key)
                        .await?
                        .map(ChangeRecorded::Replayed)
                        .ok_or(RegistryError::NotFound);
                }
                Err(e) => return Err(e),
            }
        }
        let settings = settings_text(&new.settings)?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO changes (id, user_id, module_id, binding_id, settings, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(&new.id)
        .bind(&new.user_id)
        .bind(&new.module_id)
        .bind(&new.binding_id)
        .bind(&settings)
        .bind(if new.suppressed { "suppressed" } else { "active" })
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        if !new.suppressed {
            for source in &new.sources {
                forget_reported_fields(&mut tx, source, &new, now_ms).await?;
            }
            for target in &new.targets {
                let mut merged = SettingsMap::new();
                for (id, older) in unclaimed_open(&mut tx, &target.binding_id, now_ms).await? {
                    if supersede(&mut tx, &id, &new.id, now_ms).await? {
                        merged.extend(older);
                    }
                }
                merged.extend(new.settings.clone());
                sqlx::query(
                    "INSERT INTO deliveries (id, change_id, change_seq, user_id, binding_id, \
                     module_id, account, settings, status, attempts, dead, next_attempt_at, \
                     created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, 0, $9, $9, $9)",
                )
                .bind(&target.id)
                .bind(&new.id)
                .bind(seq)
                .bind(&new.user_id)
                .bind(&target.binding_id)
                .bind(&target.module_id)
                .bind(&target.account)
                .bind(settings_text(&merged)?)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            let current: Option<String> =
                sqlx::query_scalar("SELECT settings FROM profiles WHERE user_id = $1")
                    .bind(&new.user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut profile = current
                .as_deref()
                .map(settings_from_text)
                .transpose()?
                .unwrap_or_default();
            profile.extend(new.settings.clone());
            sqlx::query(
                "INSERT INTO profiles (user_id, settings, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings, \
                 updated_at = excluded.updated_at",
            )
            .bind(&new.user_id)
            .bind(settings_text(&profile)?)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ChangeRecorded::Created { seq })
    }

    /// The answer stored under a user's `Idempotency-Key`, if any.
    pub async fn idempotent_answer(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>> {
        let row = sqlx::query(
            "SELECT status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let code: i64 = row.try_get("status_code")?;
            Ok(StoredAnswer {
                status_code: u16::try_from(code)
                    .map_err(|_| RegistryError::Corrupt(format!("status code {code}")))?,
                body: serde_json::from_str(&row.try_get::<String, _>("response")?)?,
            })
        })
        .transpose()
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
    /// given (a cursor), each with its targets.
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
        for change in &mut changes {
            change.targets = self.deliveries_of_change(&change.id).await?;
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

/// The network of `binding_id` reported these fields itself: pending older
/// values for them must not overwrite it, and what the gateway once applied
/// there is no longer what it holds.
async fn forget_reported_fields(
    tx: &mut Transaction<'static, Any>,
    binding_id: &str,
    change: &NewChange,
    now_ms: i64,
) -> Result<()> {
    for (id, mut older) in unclaimed_open(tx, binding_id, now_ms).await? {
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
    let applied: Option<Option<String>> =
        sqlx::query_scalar("SELECT last_applied FROM bindings WHERE id = $1")
            .bind(binding_id)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(Some(text)) = applied {
        let mut applied = settings_from_text(&text)?;
        applied.retain(|field, _| !change.settings.contains_key(field));
        let value = (!applied.is_empty())
            .then(|| settings_text(&applied))
            .transpose()?;
        sqlx::query("UPDATE bindings SET last_applied = $2 WHERE id = $1")
            .bind(binding_id)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Targets' statuses folded into the change's: `pending` until every target
/// is final, then `delivered` (superseded counts: a newer change carried it),
/// `failed`, or `partial`.
pub fn change_status(change: &Change) -> &'static str {
    if change.suppressed {
        return "suppressed";
    }
    if change.targets.iter().any(|t| !t.status.is_final()) {
        return "pending";
    }
    let failed = change
        .targets
        .iter()
        .filter(|t| t.status == DeliveryStatus::Failed)
        .count();
    match failed {
        0 => "delivered",
        n if n == change.targets.len() => "failed",
        _ => "partial",
    }
}
