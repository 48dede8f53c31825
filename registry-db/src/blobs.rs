//! Resumable uploads of service blobs: how far each got, which stored
//! pieces make it, until when it may resume. The bytes themselves are in the
//! gateway's blob store, never here.

use crate::{from_millis, to_millis, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// One upload (complete or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUpload {
    /// Unguessable id.
    pub id: String,
    /// The service it belongs to.
    pub service_id: String,
    /// The user who uploads.
    pub user_id: String,
    /// The device that created it, for a device token.
    pub device_id: Option<String>,
    /// Announced length in bytes.
    pub length: i64,
    /// Bytes stored so far.
    pub offset: i64,
    /// The client's `Upload-Metadata`, as sent.
    pub metadata: String,
    /// Hex sha256 of the whole blob, once complete.
    pub sha256: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last appended to.
    pub updated_at: DateTime<Utc>,
    /// Until when an incomplete upload may resume; `None` once complete.
    pub expires_at: Option<DateTime<Utc>>,
}

impl BlobUpload {
    /// Every byte stored.
    pub fn is_complete(&self) -> bool {
        self.offset == self.length
    }
}

/// A stored piece: `length` bytes of the blob from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobPiece {
    /// Where it starts in the blob.
    pub offset: i64,
    /// Its length.
    pub length: i64,
}

/// Why an append was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The upload is not at the offset the piece starts at (another
    /// request appended first, or it was deleted).
    #[error("the upload is no longer at offset {0}")]
    Moved(i64),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        AppendError::Registry(e.into())
    }
}

const COLUMNS: &str = "id, service_id, user_id, device_id, length, upload_offset, metadata, \
                       sha256, created_at, updated_at, expires_at";

fn upload(row: &sqlx::any::AnyRow) -> Result<BlobUpload> {
    Ok(BlobUpload {
        id: row.try_get("id")?,
        service_id: row.try_get("service_id")?,
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        length: row.try_get("length")?,
        offset: row.try_get("upload_offset")?,
        metadata: row.try_get("metadata")?,
        sha256: row.try_get("sha256")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_millis)
            .transpose()?,
    })
}

impl Registry {
    /// Records a new, empty upload.
    pub async fn create_blob_upload(&self, upload: &BlobUpload) -> Result<()> {
        let (mut tx, _guard) = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO blob_uploads ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&upload.id)
        .bind(&upload.service_id)
        .bind(&upload.user_id)
        .bind(&upload.device_id)
        .bind(upload.length)
        .bind(upload.offset)
        .bind(&upload.metadata)
        .bind(&upload.sha256)
        .bind(to_millis(upload.created_at))
        .bind(to_millis(upload.updated_at))
        .bind(upload.expires_at.map(to_millis))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One upload of a service; `None` when unknown.
    pub async fn blob_upload(&self, service: &str, id: &str) -> Result<Option<BlobUpload>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM blob_uploads WHERE service_id = $1 AND id = $2"
        ))
        .bind(service)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(upload).transpose()
    }

    /// Records a stored piece at the upload's current offset and moves the
    /// offset past it and its expiry to `expires_at`, unless another append
    /// moved it first. The last piece records the blob's sha256 and clears
    /// its expiry.
    pub async fn append_blob_piece(
        &self,
        id: &str,
        piece: BlobPiece,
        sha256: Option<&str>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> std::result::Result<BlobUpload, AppendError> {
        let (mut tx, _guard) = self.begin_write().await?;
        let end = piece.offset + piece.length;
        let moved = sqlx::query(
            "UPDATE blob_uploads SET upload_offset = $3, updated_at = $4, \
             sha256 = COALESCE($5, sha256), \
             expires_at = CASE WHEN $3 = length THEN NULL ELSE $6 END \
             WHERE id = $1 AND upload_offset = $2 AND $3 <= length",
        )
        .bind(id)
        .bind(piece.offset)
        .bind(end)
        .bind(to_millis(now))
        .bind(sha256)
        .bind(to_millis(expires_at))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            let now_at: Option<i64> =
                sqlx::query("SELECT upload_offset FROM blob_uploads WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("upload_offset"))
                    .transpose()?;
            return Err(AppendError::Moved(now_at.unwrap_or(-1)));
        }
        if piece.length > 0 {
            sqlx::query(
                "INSERT INTO blob_pieces (upload_id, piece_offset, length) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(piece.offset)
            .bind(piece.length)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM blob_uploads WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(upload(&row)?)
    }

    /// The stored pieces of an upload, in order.
    pub async fn blob_pieces(&self, id: &str) -> Result<Vec<BlobPiece>> {
        let rows = sqlx::query(
            "SELECT piece_offset, length FROM blob_pieces WHERE upload_id = $1 \
             ORDER BY piece_offset",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BlobPiece {
                    offset: row.try_get("piece_offset")?,
                    length: row.try_get("length")?,
                })
            })
            .collect()
    }

    /// Forgets an upload and its pieces; whether it existed.
    pub async fn delete_blob_upload(&self, service: &str, id: &str) -> Result<bool> {
        let (mut tx, _guard) = self.begin_write().await?;
        sqlx::query("DELETE FROM blob_pieces WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM blob_uploads WHERE service_id = $1 AND id = $2")
            .bind(service)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Incomplete uploads whose expiry passed, oldest first.
    pub async fn expired_blob_uploads(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<BlobUpload>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM blob_uploads WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        ))
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(upload).collect()
    }

    /// Bytes a user holds in a service's blobs (announced lengths, complete
    /// or not) and how many blobs.
    pub async fn blob_usage(&self, service: &str, user: &str) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) AS bytes, COUNT(*) AS blobs FROM blob_uploads \
             WHERE service_id = $1 AND user_id = $2",
        )
        .bind(service)
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("bytes")?, row.try_get("blobs")?))
    }
}
