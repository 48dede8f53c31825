//! The media service: uploads decoded on a bounded pool and kept within
//! each user's quota, images nothing needs purged after a retention time,
//! and transcoded avatars cached, so a change fanned out to many networks
//! with the same limits is transcoded once.

use super::codec::{self, AvatarTarget, DecodeLimits, MediaError, Transcoded};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use registry_db::{Media, Registry, RegistryError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What one user and the whole process may spend on images.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Bytes of images one user may keep stored.
    pub quota_bytes: u64,
    /// Images that no open delivery and no current avatar needs are deleted
    /// this long after their upload.
    pub retention: Duration,
    /// Image decodes and transcodes running at once, for all users: each
    /// may use up to `decode.max_alloc_bytes` of memory and a core.
    pub workers: usize,
    /// Bytes of transcoded avatars kept in memory.
    pub cache_bytes: u64,
    /// Limits of one decode (against decompression bombs).
    pub decode: DecodeLimits,
}

impl Default for MediaLimits {
    /// 64 MiB per user, a day of retention, one worker per core, 32 MiB of
    /// cached avatars.
    fn default() -> Self {
        MediaLimits {
            quota_bytes: 64 * 1024 * 1024,
            retention: Duration::from_secs(24 * 3600),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            cache_bytes: 32 * 1024 * 1024,
            decode: DecodeLimits::default(),
        }
    }
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not an image of a handled type, or not decodable within the limits.
    #[error(transparent)]
    Image(#[from] MediaError),
    /// The user's stored images would exceed the quota.
    #[error(
        "your stored images take {used} bytes of your {quota}-byte quota, so this one \
         ({size} bytes) does not fit; images that no pending delivery and not your current \
         avatar needs are deleted {retention_hours} h after their upload"
    )]
    Quota {
        /// Bytes stored now.
        used: u64,
        /// Bytes of this upload.
        size: u64,
        /// The quota.
        quota: u64,
        /// Hours until unused images are deleted.
        retention_hours: u64,
    },
    /// The image work could not run (logged, not shown).
    #[error("{0}")]
    Internal(String),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Why an avatar could not be prepared for a network.
#[derive(Debug, thiserror::Error)]
pub enum AvatarError {
    /// The image is no longer stored.
    #[error("the avatar image was deleted")]
    Deleted,
    /// The image cannot be made to fit the network's limits.
    #[error("the avatar does not fit this network: {0}")]
    DoesNotFit(MediaError),
    /// Storage or the image work failed; worth trying again.
    #[error("{0}")]
    Retry(String),
}

/// At most `permits` CPU-heavy jobs at once, on Tokio's blocking pool.
pub struct ImagePool {
    permits: Semaphore,
}

impl ImagePool {
    /// A pool running `workers` jobs at once (at least one).
    pub fn new(workers: usize) -> Self {
        ImagePool {
            permits: Semaphore::new(workers.max(1)),
        }
    }

    /// Runs `job` once a slot is free; `Err` if it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let _slot = self
            .permits
            .acquire()
            .await
            .map_err(|e| format!("image pool closed: {e}"))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| format!("image work stopped: {e}"))
    }
}

/// One avatar as one network's limits want it: (user, media id, limits).
type AvatarKey = (String, String, u32, u32, Vec<String>);

/// Weighs cached avatars by their bytes.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<AvatarKey, Arc<Transcoded>> for ByBytes {
    fn weight(&self, _key: &AvatarKey, value: &Arc<Transcoded>) -> u64 {
        value.data.len().max(1) as u64
    }
}

/// The media service.
pub struct MediaLibrary {
    registry: Registry,
    clock: SharedClock,
    metrics: Metrics,
    limits: MediaLimits,
    pool: ImagePool,
    avatars: quick_cache::sync::Cache<AvatarKey, Arc<Transcoded>, ByBytes>,
}

impl MediaLibrary {
    /// Wires the parts together.
    pub fn new(
        registry: Registry,
        clock: SharedClock,
        metrics: Metrics,
        limits: MediaLimits,
    ) -> Self {
        // Avatars are some tens of KiB: the item estimate only sizes the
        // table; the byte capacity is what bounds memory.
        let items = usize::try_from(limits.cache_bytes / (32 * 1024))
            .unwrap_or(1024)
            .max(16);
        MediaLibrary {
            registry,
            clock,
            metrics,
            pool: ImagePool::new(limits.workers),
            avatars: quick_cache::sync::Cache::with_weighter(items, limits.cache_bytes, ByBytes),
            limits,
        }
    }

    /// Checks and stores an image of the user. The same bytes sent again
    /// give the stored image back instead of a copy; an image that does not
    /// fit the user's quota is refused before it is decoded.
    pub async fn upload(
        &self,
        user_id: &str,
        declared_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Media, UploadError> {
        let sha256 = crate::secrets::sha256_hex(&bytes);
        if let Some(stored) = self.registry.media_by_digest(user_id, &sha256).await? {
            if same_type(declared_type, &stored.content_type) {
                return Ok(stored);
            }
        }
        let now = self.clock.now();
        self.purge_user(user_id).await?;
        let used = self.registry.media_bytes(user_id).await?;
        let size = bytes.len() as u64;
        if used.saturating_add(size) > self.limits.quota_bytes {
            return Err(UploadError::Quota {
                used,
                size,
                quota: self.limits.quota_bytes,
                retention_hours: self.limits.retention.as_secs() / 3600,
            });
        }
        let declared = declared_type.to_owned();
        let decode = self.limits.decode;
        self.metrics
            .image_jobs
            .with_label_values(&["inspect"])
            .inc();
        let (bytes, checked) = self
            .pool
            .run(move || {
                let checked = codec::inspect(&bytes, &declared, &decode);
                (bytes, checked)
            })
            .await
            .map_err(UploadError::Internal)?;
        let info = checked?;
        let media = Media {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_owned(),
            sha256: info.sha256,
            content_type: info.content_type,
            width: info.width,
            height: info.height,
            data: bytes,
            created_at: now,
        };
        self.registry.put_media(&media).await?;
        Ok(media)
    }

    /// The user's image `media_id` made to fit `target`, transcoded once
    /// for every delivery that needs it this way (waiters share one run).
    pub async fn avatar(
        &self,
        user_id: &str,
        media_id: &str,
        target: AvatarTarget,
    ) -> Result<Arc<Transcoded>, AvatarError> {
        let key: AvatarKey = (
            user_id.to_owned(),
            media_id.to_owned(),
            target.max_pixels,
            target.max_bytes,
            target.formats.clone(),
        );
        let guard = match self.avatars.get_value_or_guard_async(&key).await {
            Ok(cached) => return Ok(cached),
            Err(guard) => guard,
        };
        let media = match self.registry.media(user_id, media_id).await {
            Ok(media) => media,
            Err(RegistryError::NotFound) => return Err(AvatarError::Deleted),
            Err(e) => return Err(AvatarError::Retry(format!("registry: {e}"))),
        };
        self.metrics
            .image_jobs
            .with_label_values(&["transcode"])
            .inc();
        let done = self
            .pool
            .run(move || codec::transcode(&media.data, &media.content_type, &target))
            .await
            .map_err(AvatarError::Retry)?;
        let transcoded = Arc::new(done.map_err(AvatarError::DoesNotFit)?);
        let _ = guard.insert(transcoded.clone());
        Ok(transcoded)
    }

    /// Deletes every user's images that nothing needs and that are older
    /// than the retention time; how many were deleted.
    pub async fn purge(&self) -> Result<u64, RegistryError> {
        let before = self.clock.now() - self.retention();
        self.registry.purge_unused_media(before, None).await
    }

    async fn purge_user(&self, user_id: &str) -> Result<u64, RegistryError> {
        let before = self.clock.now() - self.retention();
        self.registry
            .purge_unused_media(before, Some(user_id))
            .await
    }

    fn retention(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.limits.retention).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// Whether a declared Content-Type names the stored type (parameters and
/// case ignored).
fn same_type(declared: &str, stored: &str) -> bool {
    declared
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_runs_no_more_jobs_at_once_than_it_has_workers() {
        let pool = Arc::new(ImagePool::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Long enough for the other jobs to pile up.
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "more jobs than workers ran at once"
        );
    }

    #[test]
    fn a_declared_type_matches_with_parameters_and_case() {
        assert!(same_type("Image/PNG; charset=binary", "image/png"));
        assert!(!same_type("image/jpeg", "image/png"));
    }
}
