//! Change reports (S4, S5): the change, its per-target deliveries (the
//! outbox), the idempotency row and the user's profile, written in one
//! transaction; and reading them back.

use crate::federation_types::SettingsMap;
use crate::sql::{case_map, params, rows, ROWS_PER_STATEMENT};
use crate::{
    from_millis, to_millis, Backend, Change, ChangeRecorded, Delivery, DeliveryStatus, NewChange,
    Registry, RegistryError, Result, StoredAnswer,
};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::{HashMap, HashSet};

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
        self.record_changes(vec![new], now)
            .await?
            .pop()
            .ok_or(RegistryError::NotFound)
    }

    /// [`Registry::record_change`] for several reports in one transaction
    /// (group commit), in order: a later report in the batch supersedes an
    /// earlier one exactly as if it had come in its own transaction. On an
    /// error nothing of the batch is stored.
    pub async fn record_changes(
        &self,
        batch: Vec<NewChange>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecorded>> {
        let now_ms = to_millis(now);
        let (mut tx, _writer) = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // One writer per user at a time, so `seq` follows commit order
            // for everything latest-wins compares. Locked in id order: two
            // batches never wait on each other in a cycle.
            let mut users: Vec<&str> = batch.iter().map(|c| c.user_id.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            let sql = format!(
                "SELECT id FROM users WHERE id IN ({}) ORDER BY id FOR UPDATE",
                params(1, users.len())
            );
            let mut lock = sqlx::query(&sql);
            for user in users {
                lock = lock.bind(user);
            }
            lock.execute(&mut *tx).await?;
        }
        let mut recorded = Vec::with_capacity(batch.len());
        for round in rounds(batch) {
            recorded.extend(self.record_round(&mut tx, round, now_ms).await?);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records changes of distinct users with a few multi-row statements
    /// (no two of them touch the same bindings, so their order within the
    /// round does not matter).
    async fn record_round(
        &self,
        tx: &mut Transaction<'static, Any>,
        round: Vec<NewChange>,
        now_ms: i64,
    ) -> Result<Vec<ChangeRecorded>> {
        let mut recorded: Vec<Option<ChangeRecorded>> = vec![None; round.len()];
        // Idempotency keys first: a repeated one answers the first answer
        // and takes no further part.
        let keyed: Vec<(usize, &str, &StoredAnswer)> = round
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.idempotency.as_ref().map(|(k, a)| (i, k.as_str(), a)))
            .collect();
        if !keyed.is_empty() {
            let sql = format!(
                "INSERT INTO idempotency_keys (user_id, key, status_code, response, created_at) \
                 VALUES {} ON CONFLICT DO NOTHING RETURNING user_id",
                rows(keyed.len(), 4, 2, &["$1"])
            );
            let mut query = sqlx::query(&sql).bind(now_ms);
            for (i, key, answer) in &keyed {
                query = query
                    .bind(round[*i].user_id.as_str())
                    .bind(*key)
                    .bind(i64::from(answer.status_code))
                    .bind(serde_json::to_string(&answer.body)?);
            }
            let fresh: HashSet<String> = query
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|row| row.try_get("user_id"))
                .collect::<std::result::Result<_, _>>()?;
            for (i, key, _) in &keyed {
                let user = &round[*i].user_id;
                if !fresh.contains(user) {
                    let first = stored_answer(&mut **tx, user, key)
                        .await?
                        .ok_or(RegistryError::NotFound)?;
                    recorded[*i] = Some(ChangeRecorded::Replayed(first));
                }
            }
        }
        let new: Vec<(usize, &NewChange)> = round
            .iter()
            .enumerate()
            .filter(|(i, _)| recorded[*i].is_none())
            .collect();
        if new.is_empty() {
            return Ok(recorded.into_iter().flatten().collect());
        }
        let texts: Vec<String> = new
            .iter()
            .map(|(_, c)| settings_text(&c.settings))
            .collect::<Result<_>>()?;
        let sql = format!(
            "INSERT INTO changes (id, user_id, module_id, binding_id, settings, status, \
             created_at) VALUES {} RETURNING id, seq",
            rows(new.len(), 6, 2, &["$1"])
        );
        let mut query = sqlx::query(&sql).bind(now_ms);
        for ((_, c), text) in new.iter().zip(&texts) {
            query = query
                .bind(c.id.as_str())
                .bind(c.user_id.as_str())
                .bind(c.module_id.as_str())
                .bind(c.binding_id.as_deref())
                .bind(text.as_str())
                .bind(if c.suppressed { "suppressed" } else { "active" });
        }
        let seqs: HashMap<String, i64> = query
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("seq")?)))
            .collect::<Result<_>>()?;
        let seq_of = |c: &NewChange| {
            seqs.get(&c.id)
                .copied()
                .ok_or_else(|| RegistryError::Corrupt(format!("change {} got no seq", c.id)))
        };
        for (i, c) in &new {
            recorded[*i] = Some(ChangeRecorded::Created { seq: seq_of(c)? });
        }
        let active: Vec<(&NewChange, &String)> = new
            .iter()
            .zip(&texts)
            .filter(|((_, c), _)| !c.suppressed)
            .map(|((_, c), text)| (*c, text))
            .collect();
        if !active.is_empty() {
            let changes: Vec<&NewChange> = active.iter().map(|(c, _)| *c).collect();
            forget_reported_fields(self.backend, tx, &changes, now_ms).await?;
            let mut older = supersede_unclaimed(tx, &changes, now_ms).await?;
            let mut deliveries = Vec::new();
            for c in &changes {
                let seq = seq_of(c)?;
                for target in &c.targets {
                    let mut merged = older.remove(&target.binding_id).unwrap_or_default();
                    merged.extend(c.settings.clone());
                    deliveries.push((*c, target, seq, settings_text(&merged)?));
                }
            }
            for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO deliveries (id, change_id, change_seq, user_id, binding_id, \
                     module_id, account, settings, status, attempts, dead, next_attempt_at, \
                     created_at, updated_at) VALUES {}",
                    rows(
                        chunk.len(),
                        8,
                        2,
                        &["'pending'", "0", "0", "$1", "$1", "$1"]
                    )
                );
                let mut query = sqlx::query(&sql).bind(now_ms);
                for (c, target, seq, text) in chunk {
                    query = query
                        .bind(target.id.as_str())
                        .bind(c.id.as_str())
                        .bind(*seq)
                        .bind(c.user_id.as_str())
                        .bind(target.binding_id.as_str())
                        .bind(target.module_id.as_str())
                        .bind(target.account.as_str())
                        .bind(text.as_str());
                }
                query.execute(&mut **tx).await?;
            }
            let merge = match self.backend {
                Backend::Sqlite => "json_patch(profiles.settings, excluded.settings)",
                Backend::Postgres => "(profiles.settings::jsonb || excluded.settings::jsonb)::text",
            };
            let sql = format!(
                "INSERT INTO profiles (user_id, settings, updated_at) VALUES {} \
                 ON CONFLICT (user_id) DO UPDATE SET settings = {merge}, \
                 updated_at = excluded.updated_at",
                rows(active.len(), 2, 2, &["$1"])
            );
            let mut query = sqlx::query(&sql).bind(now_ms);
            for (c, text) in &active {
                query = query.bind(c.user_id.as_str()).bind(text.as_str());
            }
            query.execute(&mut **tx).await?;
        }
        Ok(recorded.into_iter().flatten().collect())
    }

    /// The answer stored under a user's `Idempotency-Key`, if any.
    pub async fn idempotent_answer(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>> {
        stored_answer(&self.pool, user_id, key).await
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

async fn stored_answer<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    user_id: &str,
    key: &str,
) -> Result<Option<StoredAnswer>> {
    let row = sqlx::query(
        "SELECT status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(executor)
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

/// Splits a batch, in order, into rounds in which each user appears once.
fn rounds(batch: Vec<NewChange>) -> Vec<Vec<NewChange>> {
    let mut rounds: Vec<(HashSet<String>, Vec<NewChange>)> = Vec::new();
    for change in batch {
        // After the last round holding this user, so the user's changes
        // keep their order.
        let after = rounds
            .iter()
            .rposition(|(users, _)| users.contains(&change.user_id))
            .map_or(0, |i| i + 1);
        if after == rounds.len() {
            rounds.push((HashSet::new(), Vec::new()));
        }
        let (users, changes) = &mut rounds[after];
        users.insert(change.user_id.clone());
        changes.push(change);
    }
    rounds.into_iter().map(|(_, changes)| changes).collect()
}

/// Marks every unclaimed open delivery to the changes' targets superseded
/// by the change now targeting that binding, and answers their settings
/// merged per binding, oldest first (the new deliveries carry them on).
async fn supersede_unclaimed(
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
async fn forget_reported_fields(
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
