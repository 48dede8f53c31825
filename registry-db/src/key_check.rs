//! The master key's check value: one row sealed with the gateway's master key
//! (the sealing itself is the gateway's business; this is storage only). Every
//! node of one database must hold the same key, and this row lets a node with
//! another key find out at start instead of at its first delivery.

use crate::{to_millis, Registry, Result};
use chrono::{DateTime, Utc};

impl Registry {
    /// The stored check value, `None` in a registry no gateway with this
    /// feature has started on yet.
    pub async fn key_check(&self) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT sealed FROM key_check WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Stores `sealed` as the check value unless there is one already, and
    /// returns the one stored: another node starting at the same moment may
    /// have stored its own first, and then that one is what counts.
    pub async fn init_key_check(&self, sealed: &[u8], now: DateTime<Utc>) -> Result<Vec<u8>> {
        // A durable write: losing the row would only mean checking the sealed
        // data again at the next start, but it is written once per database.
        let (mut tx, _writer) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO key_check (id, sealed, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(sealed.to_vec())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM key_check WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }
}
