//! Uploaded media (avatars), stored in the database so that every gateway
//! process sharing it can push them.

use crate::{from_millis, to_millis, Media, Registry, RegistryError, Result};
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
}
