//! The key-value store the host gives service plugins: scoped to a
//! service and a user, every key versioned, writes of one commit atomic and
//! each able to require the version it read (compare-and-swap).

use crate::{Registry, RegistryError, Result};
use sqlx::Row;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Key.
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Increases with every write; starts at 1.
    pub version: i64,
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// Key.
    pub key: String,
    /// New value; `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// `Some(0)`: the key must not exist; `Some(v)`: it must be at version
    /// `v`; `None`: whatever it is.
    pub expect: Option<i64>,
}

/// Why a commit wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A write's expectation did not hold (the key names it).
    #[error("conflict on key {0:?}")]
    Conflict(String),
    /// The commit would leave the service's user with more than this many
    /// keys.
    #[error("at most {0} keys per user")]
    Full(i64),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for KvError {
    fn from(e: sqlx::Error) -> Self {
        KvError::Registry(e.into())
    }
}

impl Registry {
    /// One key of a service's user.
    pub async fn kv_get(&self, service: &str, user: &str, key: &str) -> Result<Option<KvEntry>> {
        let row = sqlx::query(
            "SELECT key, value, version FROM service_kv \
             WHERE service_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(service)
        .bind(user)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(KvEntry {
                key: row.try_get("key")?,
                value: row.try_get("value")?,
                version: row.try_get("version")?,
            })
        })
        .transpose()
    }

    /// `key` of whichever user of `service` holds it, with that user's id
    /// (the first by user id if several do).
    pub async fn kv_find(&self, service: &str, key: &str) -> Result<Option<(String, KvEntry)>> {
        let row = sqlx::query(
            "SELECT user_id, key, value, version FROM service_kv \
             WHERE service_id = $1 AND key = $2 ORDER BY user_id LIMIT 1",
        )
        .bind(service)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                row.try_get("user_id")?,
                KvEntry {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                    version: row.try_get("version")?,
                },
            ))
        })
        .transpose()
    }

    /// Keys starting with `prefix` after `after`, in key order.
    pub async fn kv_list(
        &self,
        service: &str,
        user: &str,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<KvEntry>> {
        // A range instead of LIKE: no escaping of '%' and '_' in keys.
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT key, value, version FROM service_kv \
             WHERE service_id = $1 AND user_id = $2 AND key >= $3 AND key < $4 AND key > $5 \
             ORDER BY key LIMIT $6",
        )
        .bind(service)
        .bind(user)
        .bind(prefix)
        .bind(upper)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KvEntry {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                    version: row.try_get("version")?,
                })
            })
            .collect()
    }

    /// Applies `writes` atomically: all or, when one expectation fails or
    /// the service's user would hold more than `max_keys` keys, none. The
    /// new versions in order (0 for a delete).
    pub async fn kv_commit(
        &self,
        service: &str,
        user: &str,
        writes: &[KvWrite],
        max_keys: i64,
    ) -> std::result::Result<Vec<i64>, KvError> {
        let (mut tx, _guard) = self.begin_write().await?;
        let mut versions = Vec::with_capacity(writes.len());
        let mut created = false;
        for write in writes {
            let current: Option<i64> = sqlx::query(
                "SELECT version FROM service_kv \
                 WHERE service_id = $1 AND user_id = $2 AND key = $3",
            )
            .bind(service)
            .bind(user)
            .bind(&write.key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("version"))
            .transpose()?;
            if let Some(expect) = write.expect {
                if current.unwrap_or(0) != expect {
                    return Err(KvError::Conflict(write.key.clone()));
                }
            }
            match (&write.value, current) {
                (None, _) => {
                    sqlx::query(
                        "DELETE FROM service_kv WHERE service_id = $1 AND user_id = $2 AND key = $3",
                    )
                    .bind(service)
                    .bind(user)
                    .bind(&write.key)
                    .execute(&mut *tx)
                    .await?;
                    versions.push(0);
                }
                (Some(value), Some(version)) => {
                    // The version in the WHERE makes a concurrent writer on
                    // PostgreSQL (read committed) lose instead of overwrite.
                    let done = sqlx::query(
                        "UPDATE service_kv SET value = $4, version = version + 1 \
                         WHERE service_id = $1 AND user_id = $2 AND key = $3 AND version = $5",
                    )
                    .bind(service)
                    .bind(user)
                    .bind(&write.key)
                    .bind(value.clone())
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(KvError::Conflict(write.key.clone()));
                    }
                    versions.push(version + 1);
                }
                (Some(value), None) => {
                    let done = sqlx::query(
                        "INSERT INTO service_kv (service_id, user_id, key, value, version) \
                         VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING",
                    )
                    .bind(service)
                    .bind(user)
                    .bind(&write.key)
                    .bind(value.clone())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(KvError::Conflict(write.key.clone()));
                    }
                    versions.push(1);
                    created = true;
                }
            }
        }
        if created {
            // Counted inside the transaction, after the writes: on
            // PostgreSQL two concurrent commits may each see the other's
            // keys missing and pass together, overshooting by at most one
            // commit's new keys.
            let keys: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM service_kv WHERE service_id = $1 AND user_id = $2",
            )
            .bind(service)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
            if keys > max_keys {
                return Err(KvError::Full(max_keys));
            }
        }
        tx.commit().await?;
        Ok(versions)
    }
}
