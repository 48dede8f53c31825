//! Blobs of service plugins (grant `blobs`): resumable uploads and ranged
//! reads, no HTTP. The bytes go to the blob store ([`store`]: a folder of
//! the data dir, or an S3-compatible bucket shared by several gateway
//! processes) and never pass through WebAssembly; the registry keeps how far
//! each upload got.
//!
//! An upload is stored as pieces, one object per appended request
//! (`<service>/<upload id>/<offset, 20 digits>`), recorded in the registry
//! only once the piece is whole and its checksum held: a request cut short,
//! a process killed mid-request or a lost race leaves the recorded offset
//! where it was, and the client resumes from there, on any process. The
//! whole blob's sha256 is computed as the bytes pass; a process that did not
//! see the earlier pieces reads them back once to catch up.

pub mod store;
pub mod tus;

use crate::clock::SharedClock;
use crate::host::service::{BlobNotice, BlobNoticeKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, WriteMultipart};
use registry_db::{AppendError, BlobPiece, BlobUpload, Registry, RegistryError};
use sha2::Digest;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An event of `upload` for its service, by `device`.
pub fn notice(kind: BlobNoticeKind, upload: &BlobUpload, device: Option<String>) -> BlobNotice {
    BlobNotice {
        kind,
        upload_id: upload.id.clone(),
        device_id: device,
        offset: unsigned(upload.offset),
        length: unsigned(upload.length),
        metadata: tus::parse_metadata(&upload.metadata)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        sha256: upload.sha256.clone(),
    }
}

/// How much of a local piece one blocking read takes: `object_store` reads
/// local files 8 KiB per blocking task, which held downloads to a quarter
/// of the upload speed.
const READ_CHUNK: u64 = 1 << 20;

/// The bytes of a read, local files in [`READ_CHUNK`]s.
fn stream_of(
    got: object_store::GetResult,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    use object_store::GetResultPayload;
    let range = got.range.clone();
    let (file, path) = match got.payload {
        GetResultPayload::File(file, path) => (file, path),
        GetResultPayload::Stream(stream) => return stream,
    };
    let failed = |e: std::io::Error| object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    };
    futures::stream::try_unfold(
        (file, range.start, range.end),
        move |(mut file, at, end)| {
            let path = path.clone();
            async move {
                if at >= end {
                    return Ok(None);
                }
                let read = tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Seek, SeekFrom};
                    file.seek(SeekFrom::Start(at))?;
                    let len = (end - at).min(READ_CHUNK);
                    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                    (&mut file).take(len).read_to_end(&mut buf)?;
                    if buf.is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("{} ends before byte {end}", path.display()),
                        ));
                    }
                    Ok((buf, file))
                })
                .await
                .map_err(|e| failed(std::io::Error::other(e)))?
                .map_err(failed)?;
                let (buf, file) = read;
                let next = at + buf.len() as u64;
                Ok(Some((Bytes::from(buf), (file, next, end))))
            }
        },
    )
    .boxed()
}

/// The `Upload-Metadata` of a blob stored whole: its media type as tus
/// clients send it (`filetype`).
pub fn filetype_metadata(content_type: &str) -> String {
    use base64::Engine;
    format!(
        "filetype {}",
        base64::engine::general_purpose::STANDARD.encode(content_type)
    )
}

/// The media type a blob's uploader gave (`filetype`, else `type`).
pub fn content_type(upload: &BlobUpload) -> Option<String> {
    let pairs = tus::parse_metadata(&upload.metadata).ok()?;
    ["filetype", "type"]
        .iter()
        .find_map(|k| pairs.get(*k))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Limits of blob uploads.
#[derive(Debug, Clone)]
pub struct BlobLimits {
    /// Largest blob accepted (bytes).
    pub max_length: u64,
    /// How long an incomplete upload may resume after its last byte.
    pub resume_for: Duration,
    /// Bytes a user may hold in one service's blobs (complete or not).
    pub user_bytes: u64,
    /// Blobs a user may hold in one service.
    pub user_blobs: u64,
    /// How often expired incomplete uploads are removed.
    pub sweep_every: Duration,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            max_length: 4 << 30,
            resume_for: Duration::from_secs(24 * 3600),
            user_bytes: 20 << 30,
            user_blobs: 10_000,
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// Whose blob: a service and the user (and device) acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Service id.
    pub service: String,
    /// User id.
    pub user: String,
    /// Device id, for a device token.
    pub device: Option<String>,
}

impl Owner {
    /// The blobs of `user` in `service`, whoever acts (no device).
    pub fn of(service: &str, user: &str) -> Owner {
        Owner {
            service: service.to_owned(),
            user: user.to_owned(),
            device: None,
        }
    }
}

/// A checksum algorithm of tus's checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl ChecksumAlgorithm {
    /// The names, as `Tus-Checksum-Algorithm` lists them.
    pub const NAMES: &'static str = "sha1,sha256";

    /// By name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The checksum a client sent with a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest it expects.
    pub digest: Vec<u8>,
}

enum PieceHasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl PieceHasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => PieceHasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => PieceHasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            PieceHasher::Sha1(h) => h.update(bytes),
            PieceHasher::Sha256(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            PieceHasher::Sha1(h) => h.finalize().to_vec(),
            PieceHasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Hashes the bytes of one appended request on a blocking thread while the
/// request's task goes on receiving and writing them, so the digests do not
/// stall the network on a machine with a core to spare. Bounded: at most
/// [`HashPipe::DEPTH`] received chunks wait for the hasher.
struct HashPipe {
    bytes: Option<tokio::sync::mpsc::Sender<Bytes>>,
    hashed: tokio::task::JoinHandle<(sha2::Sha256, Option<Vec<u8>>)>,
}

impl HashPipe {
    const DEPTH: usize = 32;

    fn start(mut whole: sha2::Sha256, mut piece: Option<PieceHasher>) -> Self {
        let (bytes, mut received) = tokio::sync::mpsc::channel::<Bytes>(Self::DEPTH);
        let hashed = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = received.blocking_recv() {
                whole.update(&chunk);
                if let Some(piece) = piece.as_mut() {
                    piece.update(&chunk);
                }
            }
            (whole, piece.map(PieceHasher::finish))
        });
        Self {
            bytes: Some(bytes),
            hashed,
        }
    }

    async fn feed(&self, chunk: Bytes) {
        if let Some(bytes) = &self.bytes {
            // The hasher only stops when the sender is dropped.
            let _ = bytes.send(chunk).await;
        }
    }

    /// The running whole-blob hasher and the piece's digest, if one was asked.
    async fn finish(mut self) -> Result<(sha2::Sha256, Option<Vec<u8>>), BlobError> {
        self.bytes.take();
        (&mut self.hashed)
            .await
            .map_err(|e| BlobError::Store(object_store::Error::JoinError { source: e }))
    }
}

/// Why a blob operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No such upload of this user (another user's counts as unknown).
    #[error("no such upload")]
    NotFound,
    /// The upload stayed incomplete past its expiry and was given up.
    #[error("the upload expired at {0}; start it again")]
    Expired(DateTime<Utc>),
    /// The request starts elsewhere than where the upload stands.
    #[error("the upload is at offset {current}, not {sent}")]
    OffsetMismatch {
        /// Where the upload stands.
        current: u64,
        /// What the request said.
        sent: u64,
    },
    /// More bytes than the announced length.
    #[error("the upload is {length} bytes long; the request goes past its end")]
    BeyondLength {
        /// Announced length.
        length: u64,
    },
    /// Above the largest blob.
    #[error("uploads are at most {max} bytes")]
    TooLong {
        /// The limit.
        max: u64,
    },
    /// The user's blobs would exceed a quota.
    #[error("{0}")]
    Quota(String),
    /// The piece's checksum did not hold (nothing of it was kept).
    #[error("the checksum of the request's body does not match; nothing of it was kept")]
    ChecksumMismatch,
    /// The blob store failed.
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The upload after it.
    pub upload: BlobUpload,
    /// Bytes of this request kept.
    pub received: u64,
    /// The request's body ended early (connection dropped): the upload
    /// stopped before its length.
    pub interrupted: bool,
}

/// Blobs of all services.
pub struct Blobs {
    registry: Registry,
    store: Arc<dyn ObjectStore>,
    limits: BlobLimits,
    clock: SharedClock,
    /// Running sha256 of uploads this process appended to, by id, with the
    /// offset it covers.
    hashers: Mutex<HashMap<String, (u64, sha2::Sha256)>>,
}

fn piece_path(upload: &BlobUpload, offset: u64) -> Path {
    Path::from(format!("{}/{}/{offset:020}", upload.service_id, upload.id))
}

fn upload_prefix(upload: &BlobUpload) -> Path {
    Path::from(format!("{}/{}", upload.service_id, upload.id))
}

/// Both offsets of an upload are never negative.
fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Blobs {
    /// Over a store and the registry.
    pub fn new(
        registry: Registry,
        store: Arc<dyn ObjectStore>,
        limits: BlobLimits,
        clock: SharedClock,
    ) -> Self {
        Blobs {
            registry,
            store,
            limits,
            clock,
            hashers: Mutex::new(HashMap::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &BlobLimits {
        &self.limits
    }

    /// Starts an upload of `length` bytes.
    pub async fn create(
        &self,
        owner: &Owner,
        length: u64,
        metadata: String,
    ) -> Result<BlobUpload, BlobError> {
        if length > self.limits.max_length {
            return Err(BlobError::TooLong {
                max: self.limits.max_length,
            });
        }
        let (bytes, blobs) = self
            .registry
            .blob_usage(&owner.service, &owner.user)
            .await?;
        if unsigned(blobs) >= self.limits.user_blobs {
            return Err(BlobError::Quota(format!(
                "you hold {blobs} files, the most allowed; delete some first"
            )));
        }
        let free = self.limits.user_bytes.saturating_sub(unsigned(bytes));
        if length > free {
            return Err(BlobError::Quota(format!(
                "{length} bytes do not fit in your quota: {free} of {} bytes are free",
                self.limits.user_bytes
            )));
        }
        let now = self.clock.now();
        let upload = BlobUpload {
            id: uuid::Uuid::new_v4().simple().to_string(),
            service_id: owner.service.clone(),
            user_id: owner.user.clone(),
            device_id: owner.device.clone(),
            length: signed(length),
            offset: 0,
            metadata,
            sha256: (length == 0).then(|| hex::encode(sha2::Sha256::digest([]))),
            created_at: now,
            updated_at: now,
            expires_at: (length > 0).then(|| now + self.resume_for()),
        };
        self.registry.create_blob_upload(&upload).await?;
        Ok(upload)
    }

    fn resume_for(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.limits.resume_for).unwrap_or(chrono::Duration::MAX)
    }

    /// An upload of the owner's that has not expired.
    pub async fn status(&self, owner: &Owner, id: &str) -> Result<BlobUpload, BlobError> {
        let upload = self
            .registry
            .blob_upload(&owner.service, id)
            .await?
            .filter(|u| u.user_id == owner.user)
            .ok_or(BlobError::NotFound)?;
        match upload.expires_at {
            Some(at) if at <= self.clock.now() => Err(BlobError::Expired(at)),
            _ => Ok(upload),
        }
    }

    /// Who owns blob `id` of `service`: for a plugin's answer to a public
    /// request, where the plugin names a blob of one of its users itself
    /// (a share). The device is unknown.
    pub async fn owner_of(&self, service: &str, id: &str) -> Result<Owner, BlobError> {
        let upload = self
            .registry
            .blob_upload(service, id)
            .await?
            .ok_or(BlobError::NotFound)?;
        Ok(Owner {
            service: upload.service_id,
            user: upload.user_id,
            device: None,
        })
    }

    /// Appends the bytes of `body` to `upload` (as [`Blobs::status`] read
    /// it for its owner) at `offset`, which must be where the upload stands.
    /// Bytes of a body that ends early are kept (unless a checksum was sent:
    /// then it cannot hold, and the piece is dropped).
    pub async fn append<S, E>(
        &self,
        upload: BlobUpload,
        offset: u64,
        checksum: Option<Checksum>,
        mut body: S,
    ) -> Result<Appended, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let id = upload.id.clone();
        let current = unsigned(upload.offset);
        if offset != current {
            return Err(BlobError::OffsetMismatch {
                current,
                sent: offset,
            });
        }
        let length = unsigned(upload.length);
        let room = length - current;
        let whole = self.hasher_at(&upload).await?;
        let piece = checksum.as_ref().map(|c| PieceHasher::new(c.algorithm));
        let hashing = HashPipe::start(whole, piece);
        let path = piece_path(&upload, offset);
        let mut writer = WriteMultipart::new(self.store.put_multipart(&path).await?);
        let mut received = 0u64;
        let mut interrupted = false;
        while let Some(chunk) = body.next().await {
            let bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::debug!(upload = id, "upload body ended early: {e}");
                    interrupted = true;
                    break;
                }
            };
            if received + bytes.len() as u64 > room {
                let _ = writer.abort().await;
                return Err(BlobError::BeyondLength { length });
            }
            received += bytes.len() as u64;
            hashing.feed(bytes.clone()).await;
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            writer.put(bytes);
        }
        let (whole, piece) = match hashing.finish().await {
            Ok(hashed) => hashed,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        if let (Some(checksum), Some(piece)) = (checksum, piece) {
            if interrupted || piece != checksum.digest {
                let _ = writer.abort().await;
                return Err(BlobError::ChecksumMismatch);
            }
        }
        if received == 0 {
            let _ = writer.abort().await;
            return Ok(Appended {
                upload,
                received,
                interrupted,
            });
        }
        writer.finish().await?;
        let end = current + received;
        let sha256 = (end == length).then(|| hex::encode(whole.clone().finalize()));
        let now = self.clock.now();
        let recorded = self
            .registry
            .append_blob_piece(
                &id,
                BlobPiece {
                    offset: signed(current),
                    length: signed(received),
                },
                sha256.as_deref(),
                now,
                now + self.resume_for(),
            )
            .await;
        match recorded {
            Ok(upload) => {
                if end < length {
                    self.lock_hashers().insert(id.to_owned(), (end, whole));
                }
                Ok(Appended {
                    upload,
                    received,
                    interrupted,
                })
            }
            Err(AppendError::Moved(now_at)) => {
                let _ = self.store.delete(&path).await;
                Err(BlobError::OffsetMismatch {
                    current: unsigned(now_at),
                    sent: offset,
                })
            }
            Err(AppendError::Registry(e)) => {
                let _ = self.store.delete(&path).await;
                Err(e.into())
            }
        }
    }

    fn lock_hashers(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, sha2::Sha256)>> {
        self.hashers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running sha256 of the bytes before the upload's offset: this
    /// process's own, or read back from the store.
    async fn hasher_at(&self, upload: &BlobUpload) -> Result<sha2::Sha256, BlobError> {
        let offset = unsigned(upload.offset);
        if let Some((at, hasher)) = self.lock_hashers().remove(&upload.id) {
            if at == offset {
                return Ok(hasher);
            }
        }
        let mut hasher = sha2::Sha256::new();
        if offset > 0 {
            let mut bytes = self.read(upload, 0..offset).await?;
            while let Some(chunk) = bytes.try_next().await? {
                hasher.update(&chunk);
            }
        }
        Ok(hasher)
    }

    /// The bytes of `range` (within what is stored), piece after piece.
    pub async fn read(
        &self,
        upload: &BlobUpload,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, BlobError> {
        let pieces = self.registry.blob_pieces(&upload.id).await?;
        let mut parts = Vec::new();
        for piece in pieces {
            let start = unsigned(piece.offset);
            let end = start + unsigned(piece.length);
            if end <= range.start || start >= range.end {
                continue;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            parts.push((piece_path(upload, start), from..to));
        }
        let store = self.store.clone();
        Ok(futures::stream::iter(parts)
            .then(move |(path, range)| {
                let store = store.clone();
                async move {
                    let options = GetOptions {
                        range: Some(range.into()),
                        ..GetOptions::default()
                    };
                    store.get_opts(&path, options).await.map(stream_of)
                }
            })
            .try_flatten()
            .boxed())
    }

    /// Removes an upload of the owner's, complete or not, and its bytes.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<(), BlobError> {
        let upload = self
            .registry
            .blob_upload(&owner.service, id)
            .await?
            .filter(|u| u.user_id == owner.user)
            .ok_or(BlobError::NotFound)?;
        self.remove(&upload).await
    }

    async fn remove(&self, upload: &BlobUpload) -> Result<(), BlobError> {
        self.registry
            .delete_blob_upload(&upload.service_id, &upload.id)
            .await?;
        self.lock_hashers().remove(&upload.id);
        let prefix = upload_prefix(upload);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for object in objects {
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Stores `data` as a new, complete blob of `owner`'s, of media type
    /// `content_type` (within the blob limits and the owner's quota).
    pub async fn store_whole(
        &self,
        owner: &Owner,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<BlobUpload, BlobError> {
        let upload = self
            .create(owner, data.len() as u64, filetype_metadata(content_type))
            .await?;
        let id = upload.id.clone();
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(data)) });
        match self.append(upload, 0, None, Box::pin(body)).await {
            Ok(appended) if appended.upload.is_complete() => Ok(appended.upload),
            outcome => {
                let _ = self.delete(owner, &id).await;
                Err(match outcome {
                    Err(e) => e,
                    Ok(appended) => BlobError::OffsetMismatch {
                        current: unsigned(appended.upload.offset),
                        sent: unsigned(appended.upload.length),
                    },
                })
            }
        }
    }

    /// A complete blob of `owner`'s with all its bytes, when at most `max`
    /// bytes long (`TooLong` otherwise, `NotFound` while incomplete).
    pub async fn read_whole(
        &self,
        owner: &Owner,
        id: &str,
        max: u64,
    ) -> Result<(BlobUpload, Vec<u8>), BlobError> {
        let upload = self.status(owner, id).await?;
        if !upload.is_complete() {
            return Err(BlobError::NotFound);
        }
        let length = unsigned(upload.length);
        if length > max {
            return Err(BlobError::TooLong { max });
        }
        let mut data = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        let mut bytes = self.read(&upload, 0..length).await?;
        while let Some(chunk) = bytes.try_next().await? {
            data.extend_from_slice(&chunk);
        }
        Ok((upload, data))
    }

    /// Removes incomplete uploads whose time to resume ran out; the ones
    /// removed.
    pub async fn sweep(&self) -> Result<Vec<BlobUpload>, BlobError> {
        let expired = self
            .registry
            .expired_blob_uploads(self.clock.now(), 100)
            .await?;
        for upload in &expired {
            self.remove(upload).await?;
        }
        Ok(expired)
    }
}
