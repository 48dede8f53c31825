//! Writing change reports: each batch in one transaction, split into rounds
//! of distinct users, each round a few multi-row statements per table.

use super::read::stored_receipt;
use super::settings_text;
use super::supersede::{forget_reported_fields, supersede_unclaimed};
use crate::federation_types::SettingsMap;
use crate::sql::{params, rows, ROWS_PER_STATEMENT};
use crate::{to_millis, Backend, ChangeRecorded, NewChange, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};
use std::collections::{HashMap, HashSet};

type Tx = Transaction<'static, Any>;

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
            lock_users(&mut tx, &batch).await?;
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
        tx: &mut Tx,
        round: Vec<NewChange>,
        now_ms: i64,
    ) -> Result<Vec<ChangeRecorded>> {
        let mut recorded = claim_idempotency_keys(tx, &round, now_ms).await?;
        let new: Vec<&NewChange> = round
            .iter()
            .zip(&recorded)
            .filter(|(_, done)| done.is_none())
            .map(|(c, _)| c)
            .collect();
        if new.is_empty() {
            return Ok(recorded.into_iter().flatten().collect());
        }
        let texts: Vec<String> = new
            .iter()
            .map(|c| settings_text(&c.settings))
            .collect::<Result<_>>()?;
        let seqs = insert_changes(tx, &new, &texts, now_ms).await?;
        for (done, c) in recorded.iter_mut().filter(|d| d.is_none()).zip(&new) {
            *done = Some(ChangeRecorded::Created {
                seq: seq_of(&seqs, c)?,
            });
        }
        // Echoes are stored for the record only: no targets, no profile.
        let active: Vec<(&NewChange, &String)> = new
            .iter()
            .zip(&texts)
            .filter(|(c, _)| !c.suppressed)
            .map(|(c, text)| (*c, text))
            .collect();
        if !active.is_empty() {
            let changes: Vec<&NewChange> = active.iter().map(|(c, _)| *c).collect();
            forget_reported_fields(self.backend, tx, &changes, now_ms).await?;
            let older = supersede_unclaimed(tx, &changes, now_ms).await?;
            insert_deliveries(tx, &changes, &seqs, older, now_ms).await?;
            merge_profiles(self.backend, tx, &active, now_ms).await?;
        }
        Ok(recorded.into_iter().flatten().collect())
    }
}

/// One writer per user at a time on PostgreSQL, so `seq` follows commit
/// order for everything latest-wins compares. Locked in id order: two
/// batches never wait on each other in a cycle.
async fn lock_users(tx: &mut Tx, batch: &[NewChange]) -> Result<()> {
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
    lock.execute(&mut **tx).await?;
    Ok(())
}

/// Stores the round's idempotency keys with their receipts. A key used
/// before answers the first receipt (`Replayed`) and its change takes no
/// further part; the others are `None`, still to record.
async fn claim_idempotency_keys(
    tx: &mut Tx,
    round: &[NewChange],
    now_ms: i64,
) -> Result<Vec<Option<ChangeRecorded>>> {
    let mut recorded = vec![None; round.len()];
    let keyed: Vec<(usize, &str, &serde_json::Value)> = round
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.idempotency.as_ref().map(|(k, r)| (i, k.as_str(), r)))
        .collect();
    if keyed.is_empty() {
        return Ok(recorded);
    }
    let sql = format!(
        "INSERT INTO idempotency_keys (user_id, key, receipt, created_at) \
         VALUES {} ON CONFLICT DO NOTHING RETURNING user_id",
        rows(keyed.len(), 3, 2, &["$1"])
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for (i, key, receipt) in &keyed {
        query = query
            .bind(round[*i].user_id.as_str())
            .bind(*key)
            .bind(serde_json::to_string(receipt)?);
    }
    // A round holds each user once, so the user names the fresh key.
    let fresh: HashSet<String> = query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get("user_id"))
        .collect::<std::result::Result<_, _>>()?;
    for (i, key, _) in &keyed {
        let user = &round[*i].user_id;
        if !fresh.contains(user) {
            let first = stored_receipt(&mut **tx, user, key)
                .await?
                .ok_or(RegistryError::NotFound)?;
            recorded[*i] = Some(ChangeRecorded::Replayed(first));
        }
    }
    Ok(recorded)
}

/// Inserts the change rows (`texts`: their settings as stored) and answers
/// each change's `seq` by id.
async fn insert_changes(
    tx: &mut Tx,
    changes: &[&NewChange],
    texts: &[String],
    now_ms: i64,
) -> Result<HashMap<String, i64>> {
    let sql = format!(
        "INSERT INTO changes (id, user_id, module_id, binding_id, settings, status, \
         created_at) VALUES {} RETURNING id, seq",
        rows(changes.len(), 6, 2, &["$1"])
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for (c, text) in changes.iter().zip(texts) {
        query = query
            .bind(c.id.as_str())
            .bind(c.user_id.as_str())
            .bind(c.module_id.as_str())
            .bind(c.binding_id.as_deref())
            .bind(text.as_str())
            .bind(if c.suppressed { "suppressed" } else { "active" });
    }
    query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("seq")?)))
        .collect()
}

fn seq_of(seqs: &HashMap<String, i64>, change: &NewChange) -> Result<i64> {
    seqs.get(&change.id)
        .copied()
        .ok_or_else(|| RegistryError::Corrupt(format!("change {} got no seq", change.id)))
}

/// Inserts one pending delivery per target. Each carries the settings of
/// the deliveries it superseded (`older`, per binding) under its own.
async fn insert_deliveries(
    tx: &mut Tx,
    changes: &[&NewChange],
    seqs: &HashMap<String, i64>,
    mut older: HashMap<String, SettingsMap>,
    now_ms: i64,
) -> Result<()> {
    let mut deliveries = Vec::new();
    for c in changes {
        let seq = seq_of(seqs, c)?;
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
    Ok(())
}

/// Merges each change's settings (as stored text) into its user's profile,
/// field by field.
async fn merge_profiles(
    backend: Backend,
    tx: &mut Tx,
    active: &[(&NewChange, &String)],
    now_ms: i64,
) -> Result<()> {
    let merge = match backend {
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
    for (c, text) in active {
        query = query.bind(c.user_id.as_str()).bind(text.as_str());
    }
    query.execute(&mut **tx).await?;
    Ok(())
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
