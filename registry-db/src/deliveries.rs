//! Delivery workers' side of the outbox: claiming with a lease (SKIP LOCKED
//! on PostgreSQL), recording attempts, module pauses, dead letters.

use crate::changes::{
    delivery_from_row, settings_from_text, settings_text, unclaimed_open, DELIVERY_COLUMNS,
};
use crate::sql::{case_map, params};
use crate::SettingsMap;
use crate::{
    to_millis, AttemptOutcome, AttemptRecorded, Backend, Delivery, DeliveryStatus, Registry,
    RegistryError, Result,
};
use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

/// A delivered outcome in a batch: its place, delivery id, applied values.
type DeliveredItem = (usize, String, SettingsMap);

/// What an attempt that did not deliver leads to.
enum Unsuccessful {
    Retry {
        at: DateTime<Utc>,
        pause_module_until: Option<DateTime<Utc>>,
        /// False for a deferral: the claim is given back uncounted.
        attempted: bool,
    },
    Failed {
        dead: bool,
    },
}

/// Statuses a worker may still act on.
const OPEN: &str = "('pending', 'retrying', 'delivering')";

impl Registry {
    /// Claims up to `limit` due deliveries for `worker` until `lease_until`.
    /// Per binding only the oldest open delivery is claimable, so values reach
    /// a network in the order they were reported; paused modules wait. A
    /// delivery whose lease expired (its worker died) is claimed again.
    pub async fn claim_deliveries(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let skip_locked = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE deliveries SET status = 'delivering', locked_by = $1, locked_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE seq IN (SELECT d.seq FROM deliveries d \
               WHERE d.status IN {OPEN} AND d.next_attempt_at <= $3 \
               AND (d.locked_until IS NULL OR d.locked_until < $3) \
               AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.binding_id = d.binding_id \
                   AND o.seq < d.seq AND o.status IN {OPEN}) \
               AND NOT EXISTS (SELECT 1 FROM module_pauses p WHERE p.module_id = d.module_id \
                   AND p.until_ms > $3) \
               ORDER BY d.next_attempt_at, d.seq LIMIT $4 {skip_locked}) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let (mut tx, _writer) = self.begin_bookkeeping().await?;
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(to_millis(lease_until))
            .bind(to_millis(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    /// Records the outcome of an attempt by `worker`. A retry whose binding
    /// already has a newer unclaimed delivery is folded into that one instead
    /// (the newer values win), so an older value never follows a newer one.
    pub async fn finish_attempt(
        &self,
        delivery_id: &str,
        worker: &str,
        outcome: AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<AttemptRecorded> {
        self.finish_attempts(worker, vec![(delivery_id.to_owned(), outcome)], now)
            .await?
            .pop()
            .ok_or(RegistryError::NotFound)
    }

    /// [`Registry::finish_attempt`] for many outcomes in one transaction
    /// (the workers' group commit); a delivery that no longer exists counts
    /// as `LeaseLost`. On an error nothing of the batch is stored.
    pub async fn finish_attempts(
        &self,
        worker: &str,
        outcomes: Vec<(String, AttemptOutcome)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptRecorded>> {
        let now_ms = to_millis(now);
        let (mut tx, _writer) = self.begin_bookkeeping().await?;
        let mut recorded = vec![AttemptRecorded::LeaseLost; outcomes.len()];
        // Deliveries grouped by what they report, a few statements for all.
        let mut delivered: HashMap<(String, String, Option<String>), Vec<DeliveredItem>> =
            HashMap::new();
        for (i, (id, outcome)) in outcomes.into_iter().enumerate() {
            let (error, next) = match outcome {
                AttemptOutcome::Delivered {
                    applied,
                    truncated,
                    applied_settings,
                    note,
                } => {
                    delivered
                        .entry((
                            serde_json::to_string(&applied)?,
                            serde_json::to_string(&truncated)?,
                            note,
                        ))
                        .or_default()
                        .push((i, id, applied_settings));
                    continue;
                }
                AttemptOutcome::Retry {
                    error,
                    at,
                    pause_module_until,
                } => (
                    Some(error),
                    Unsuccessful::Retry {
                        at,
                        pause_module_until,
                        attempted: true,
                    },
                ),
                AttemptOutcome::Deferred { until, reason } => (
                    reason,
                    Unsuccessful::Retry {
                        at: until,
                        pause_module_until: Some(until),
                        attempted: false,
                    },
                ),
                AttemptOutcome::Failed { error, dead } => {
                    (Some(error), Unsuccessful::Failed { dead })
                }
            };
            recorded[i] = match self
                .finish_one(&mut tx, &id, worker, error, next, now_ms)
                .await
            {
                Err(RegistryError::NotFound) => AttemptRecorded::LeaseLost,
                done => done?,
            };
        }
        let mut applied_to: Vec<(String, SettingsMap)> = Vec::new();
        for ((applied, truncated, note), group) in delivered {
            let sql = format!(
                "UPDATE deliveries SET status = 'delivered', applied_fields = $3, \
                 truncated_fields = $4, last_error = $5, delivered_at = $2, locked_by = NULL, \
                 locked_until = NULL, updated_at = $2 \
                 WHERE status = 'delivering' AND locked_by = $1 AND id IN ({}) \
                 RETURNING id, binding_id",
                params(6, group.len())
            );
            let mut query = sqlx::query(&sql)
                .bind(worker)
                .bind(now_ms)
                .bind(&applied)
                .bind(&truncated)
                .bind(note);
            for (_, id, _) in &group {
                query = query.bind(id.as_str());
            }
            let stored: HashMap<String, String> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("binding_id")?)))
                .collect::<Result<_>>()?;
            for (i, id, settings) in group {
                if let Some(binding_id) = stored.get(&id) {
                    recorded[i] = AttemptRecorded::Stored;
                    if !settings.is_empty() {
                        applied_to.push((binding_id.clone(), settings));
                    }
                }
            }
        }
        self.merge_last_applied(&mut tx, &applied_to).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Merges applied values into bindings' `last_applied`, all bindings in
    /// one statement.
    async fn merge_last_applied(
        &self,
        tx: &mut Transaction<'static, Any>,
        applied: &[(String, SettingsMap)],
    ) -> Result<()> {
        if applied.is_empty() {
            return Ok(());
        }
        let (patch, ids) = case_map("id", 1, applied.len());
        let merged = match self.backend {
            Backend::Sqlite => format!("json_patch(COALESCE(last_applied, '{{}}'), {patch})"),
            Backend::Postgres => {
                format!("(COALESCE(last_applied, '{{}}')::jsonb || ({patch})::jsonb)::text")
            }
        };
        let sql = format!("UPDATE bindings SET last_applied = {merged} WHERE id IN ({ids})");
        let mut query = sqlx::query(&sql);
        for (binding_id, settings) in applied {
            query = query
                .bind(binding_id.as_str())
                .bind(settings_text(settings)?);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }

    /// Records an attempt that did not deliver (the lease owner's only).
    async fn finish_one(
        &self,
        tx: &mut Transaction<'static, Any>,
        delivery_id: &str,
        worker: &str,
        error: Option<String>,
        next: Unsuccessful,
        now_ms: i64,
    ) -> Result<AttemptRecorded> {
        let lock = self.lock_rows();
        let row = sqlx::query(&format!(
            "SELECT seq, binding_id, change_id, settings, status, locked_by \
             FROM deliveries WHERE id = $1 {lock}"
        ))
        .bind(delivery_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(RegistryError::NotFound)?;
        let status: String = row.try_get("status")?;
        let owner: Option<String> = row.try_get("locked_by")?;
        if status != DeliveryStatus::Delivering.as_str() || owner.as_deref() != Some(worker) {
            return Ok(AttemptRecorded::LeaseLost);
        }
        let seq: i64 = row.try_get("seq")?;
        let binding_id: String = row.try_get("binding_id")?;
        let release = "locked_by = NULL, locked_until = NULL, updated_at = $2";
        let recorded = match next {
            Unsuccessful::Retry {
                at,
                pause_module_until,
                attempted,
            } => {
                if let Some(until) = pause_module_until {
                    sqlx::query(
                        "INSERT INTO module_pauses (module_id, until_ms, reason) \
                         SELECT module_id, $2, $3 FROM deliveries WHERE id = $1 \
                         ON CONFLICT (module_id) DO UPDATE SET \
                         until_ms = CASE WHEN excluded.until_ms > module_pauses.until_ms \
                           THEN excluded.until_ms ELSE module_pauses.until_ms END, \
                         reason = excluded.reason",
                    )
                    .bind(delivery_id)
                    .bind(to_millis(until))
                    .bind(error.as_deref().unwrap_or("outbound rate limit"))
                    .execute(&mut **tx)
                    .await?;
                }
                let newer = unclaimed_open(tx, &binding_id, now_ms)
                    .await?
                    .into_iter()
                    .next();
                let own = settings_from_text(&row.try_get::<String, _>("settings")?)?;
                // A deferral gives its claim back uncounted.
                let uncount = i64::from(!attempted);
                match newer {
                    Some((newer_id, newer_settings)) => {
                        let mut merged = own;
                        merged.extend(newer_settings);
                        sqlx::query(
                            "UPDATE deliveries SET settings = $2 WHERE id = $1 AND seq > $3",
                        )
                        .bind(&newer_id)
                        .bind(settings_text(&merged)?)
                        .bind(seq)
                        .execute(&mut **tx)
                        .await?;
                        sqlx::query(&format!(
                            "UPDATE deliveries SET status = 'superseded', \
                             last_error = COALESCE($3, last_error), attempts = attempts - $5, \
                             superseded_by = (SELECT change_id FROM deliveries WHERE id = $4), \
                             {release} WHERE id = $1"
                        ))
                        .bind(delivery_id)
                        .bind(now_ms)
                        .bind(&error)
                        .bind(&newer_id)
                        .bind(uncount)
                        .execute(&mut **tx)
                        .await?;
                        AttemptRecorded::Superseded
                    }
                    None => {
                        sqlx::query(&format!(
                            "UPDATE deliveries SET \
                             status = CASE WHEN attempts - $5 > 0 THEN 'retrying' ELSE 'pending' END, \
                             attempts = attempts - $5, last_error = COALESCE($3, last_error), \
                             next_attempt_at = $4, {release} WHERE id = $1"
                        ))
                        .bind(delivery_id)
                        .bind(now_ms)
                        .bind(&error)
                        .bind(to_millis(at))
                        .bind(uncount)
                        .execute(&mut **tx)
                        .await?;
                        AttemptRecorded::Stored
                    }
                }
            }
            Unsuccessful::Failed { dead } => {
                sqlx::query(&format!(
                    "UPDATE deliveries SET status = 'failed', last_error = $3, dead = $4, \
                     {release} WHERE id = $1"
                ))
                .bind(delivery_id)
                .bind(now_ms)
                .bind(&error)
                .bind(i64::from(dead))
                .execute(&mut **tx)
                .await?;
                AttemptRecorded::Stored
            }
        };
        Ok(recorded)
    }

    /// Extends to `lease_until` the leases `worker` still holds on `ids` (its
    /// pushes in flight), so that a short lease runs out only when its
    /// worker stopped renewing it: died, or cut off from the database.
    /// Returns how many were renewed; a lease already taken over by another
    /// worker is not.
    pub async fn renew_claims(
        &self,
        worker: &str,
        ids: &[String],
        lease_until: DateTime<Utc>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE deliveries SET locked_until = $1 WHERE locked_by = $2 \
             AND status = 'delivering' AND id IN ({})",
            params(3, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(to_millis(lease_until)).bind(worker);
        for id in ids {
            query = query.bind(id);
        }
        let (mut tx, _writer) = self.begin_bookkeeping().await?;
        let renewed = query.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(renewed)
    }

    /// Gives back deliveries `worker` claimed but did not start (shutdown):
    /// they are due again at once, and the claim does not count as an attempt.
    pub async fn release_claims(&self, worker: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            sqlx::query(
                "UPDATE deliveries SET status = CASE WHEN attempts > 1 THEN 'retrying' \
                 ELSE 'pending' END, attempts = attempts - 1, locked_by = NULL, \
                 locked_until = NULL WHERE id = $1 AND locked_by = $2 AND status = 'delivering'",
            )
            .bind(id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Until when a module's endpoint is paused, if it is.
    pub async fn module_paused_until(
        &self,
        module_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT until_ms FROM module_pauses WHERE module_id = $1 AND until_ms > $2",
        )
        .bind(module_id)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?;
        until.map(crate::from_millis).transpose()
    }

    /// Deliveries not yet final, across all users (the queue depth).
    pub async fn open_deliveries(&self) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM deliveries WHERE status IN {OPEN}");
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    /// Dead letters (gave up after the attempt or age cap), newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE dead = 1 AND status = 'failed' \
             ORDER BY seq DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Sends a failed delivery again (admin redrive). Fields a newer delivery
    /// to the same binding has sent or will send are dropped, so an old value
    /// never overwrites a newer one; `State` if it is not failed or nothing
    /// is left to send.
    pub async fn redrive(&self, delivery_id: &str, now: DateTime<Utc>) -> Result<Delivery> {
        let now_ms = to_millis(now);
        let (mut tx, _writer) = self.begin_write().await?;
        let lock = self.lock_rows();
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 {lock}"
        ))
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RegistryError::NotFound)?;
        let delivery = delivery_from_row(&row)?;
        if delivery.status != DeliveryStatus::Failed {
            return Err(RegistryError::State(format!(
                "delivery is {}, only failed deliveries can be redriven",
                delivery.status.as_str()
            )));
        }
        let newer = sqlx::query(
            "SELECT settings FROM deliveries WHERE binding_id = $1 AND seq > $2 \
             AND status IN ('pending', 'retrying', 'delivering', 'delivered')",
        )
        .bind(&delivery.binding_id)
        .bind(delivery.seq)
        .fetch_all(&mut *tx)
        .await?;
        let mut settings = delivery.settings.clone();
        for row in &newer {
            let newer = settings_from_text(&row.try_get::<String, _>("settings")?)?;
            settings.retain(|field, _| !newer.contains_key(field));
        }
        if settings.is_empty() {
            return Err(RegistryError::State(
                "a newer change already carries every field of this delivery".into(),
            ));
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', settings = $3, attempts = 0, dead = 0, \
             next_attempt_at = $2, updated_at = $2 WHERE id = $1",
        )
        .bind(delivery_id)
        .bind(now_ms)
        .bind(settings_text(&settings)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Delivery {
            settings,
            status: DeliveryStatus::Pending,
            attempts: 0,
            dead: false,
            next_attempt_at: crate::from_millis(now_ms)?,
            updated_at: crate::from_millis(now_ms)?,
            ..delivery
        })
    }
}
