//! Uploaded media (avatars), stored in the database so that every gateway
//! process sharing it can push them.

use crate::{from_millis, to_millis, Media, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

impl Registry {
    /// Stores an image the caller has already decoded and checked.
    pub async fn put_media(&self, media: &Media) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (id, user_id, sha256, content_type, width, height, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&media.id)
        .bind(&media.user_id)
        .bind(&media.sha256)
        .bind(&media.content_type)
        .bind(i64::from(media.width))
        .bind(i64::from(media.height))
        .bind(media.data.clone())
        .bind(to_millis(media.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One of the user's images; `NotFound` for another user's too.
    pub async fn media(&self, user_id: &str, id: &str) -> Result<Media> {
        let row = sqlx::query(
            "SELECT id, user_id, sha256, content_type, width, height, data, created_at \
             FROM media WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(RegistryError::NotFound)?;
        media_from_row(&row)
    }

    /// The user's image with these bytes (by their SHA-256), if stored: an
    /// avatar sent again is not stored twice.
    pub async fn media_by_digest(&self, user_id: &str, sha256: &str) -> Result<Option<Media>> {
        let row = sqlx::query(
            "SELECT id, user_id, sha256, content_type, width, height, data, created_at \
             FROM media WHERE user_id = $1 AND sha256 = $2 ORDER BY created_at, id LIMIT 1",
        )
        .bind(user_id)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(media_from_row).transpose()
    }

    /// Bytes the user's stored images take.
    pub async fn media_bytes(&self, user_id: &str) -> Result<u64> {
        let total: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(LENGTH(data)), 0) AS BIGINT) FROM media WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Deletes images uploaded before `before` that nothing needs any more
    /// (of one user, or of all when `user_id` is `None`): not the avatar of
    /// the user's current settings, and not in the settings of a delivery
    /// still open. Returns how many were deleted.
    pub async fn purge_unused_media(
        &self,
        before: DateTime<Utc>,
        user_id: Option<&str>,
    ) -> Result<u64> {
        // Media ids are UUIDs, so a substring match on the JSON text of the
        // settings finds exactly the references.
        let done = sqlx::query(
            "DELETE FROM media WHERE created_at < $1 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
             AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.user_id = media.user_id \
                 AND p.settings LIKE '%' || media.id || '%') \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.user_id = media.user_id \
                 AND d.status IN ('pending', 'retrying', 'delivering') \
                 AND d.settings LIKE '%' || media.id || '%')",
        )
        .bind(to_millis(before))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn media_from_row(row: &AnyRow) -> Result<Media> {
    let dimension = |column: &str| -> Result<u32> {
        let value: i64 = row.try_get(column)?;
        u32::try_from(value).map_err(|_| RegistryError::Corrupt(format!("{column} {value}")))
    };
    Ok(Media {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        sha256: row.try_get("sha256")?,
        content_type: row.try_get("content_type")?,
        width: dimension("width")?,
        height: dimension("height")?,
        data: row.try_get("data")?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}
