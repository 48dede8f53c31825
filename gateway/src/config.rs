//! Runtime configuration of one gateway process.

use crate::clock::SharedClock;
use crate::host::HostLimits;
use crate::secrets::{self, MasterKey, Secret, SecretError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A governor quota: sustained rate plus burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests replenished per second.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

/// Everything `run()` needs. Build it with [`Config::new`] and adjust fields.
#[derive(Clone)]
pub struct Config {
    /// Folder for the SQLite database and generated secrets.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Most connections this process opens to PostgreSQL (a third for write
    /// transactions), besides one per LISTEN relay.
    pub database_connections: u32,
    /// Bearer token of the operator's admin endpoints.
    pub admin_token: Secret<String>,
    /// Key sealing IM credentials at rest.
    pub master_key: MasterKey,
    /// Largest request body accepted (bytes); above it: `413`.
    pub max_body_bytes: usize,
    /// Largest plugin upload accepted (bytes).
    pub max_plugin_bytes: usize,
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// Per client IP, on `POST /v1/users` and `POST /v1/sessions`.
    pub anonymous_quota: Quota,
    /// Per user (or the admin), on every authenticated endpoint.
    pub user_quota: Quota,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` name the
    /// client (for per-client limits); empty: every peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Deadline, memory cap and pool size of plugin calls.
    pub host_limits: HostLimits,
    /// How deliveries are claimed, retried and given up.
    pub delivery: DeliveryConfig,
    /// Image storage and work: quotas, retention, workers, avatar cache.
    pub media: crate::media::MediaLimits,
    /// Device tokens and inboxes.
    pub devices: crate::devices::DeviceLimits,
    /// Where service blobs live: `None` for `<data_dir>/blobs`, else
    /// `file:///path` or `s3://bucket[/prefix]` (see [`crate::blobs::store`]).
    pub blob_store: Option<String>,
    /// Blob uploads: largest blob, time to resume, per-user quotas.
    pub blobs: crate::blobs::BlobLimits,
    /// Media jobs: the worker processes, the queue's runner.
    pub jobs: crate::processing::jobs::JobsConfig,
    /// Service plugins installed at start unless the same plugin is installed
    /// already (`--install-service`; the README's first command brings the
    /// reference files and handoff services this way).
    pub bundled_services: Vec<Bundled>,
    /// Connectors installed at start the same way (`--install-module`; the
    /// README's first command brings the reference connectors, set up for
    /// the demo networks on loopback).
    pub bundled_modules: Vec<Bundled>,
    /// What "now" is (the system clock; tests inject their own).
    pub clock: SharedClock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("session_ttl", &self.session_ttl)
            .field("host_limits", &self.host_limits)
            .field("delivery", &self.delivery)
            .field("media", &self.media)
            .field("devices", &self.devices)
            .field("blob_store", &self.blob_store)
            .field("blobs", &self.blobs)
            .field("jobs", &self.jobs)
            .field("bundled_services", &self.bundled_services)
            .field("bundled_modules", &self.bundled_modules)
            .finish_non_exhaustive()
    }
}

/// A plugin (a service or a connector) with its manifest, to install at
/// start.
#[derive(Clone)]
pub struct Bundled {
    /// Where it was read from, for messages.
    pub source: String,
    /// The manifest, as `POST /v1/admin/services` or `POST
    /// /v1/admin/modules` takes it (JSON).
    pub manifest: String,
    /// The `.wasm` component.
    pub plugin: Vec<u8>,
}

impl std::fmt::Debug for Bundled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundled")
            .field("source", &self.source)
            .field("plugin_bytes", &self.plugin.len())
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A lease that may run out while its push is still running would let
    /// another process push the same delivery again.
    #[error(
        "the delivery lease ({lease:?}) must be longer than the plugin call deadline ({deadline:?})"
    )]
    LeaseTooShort {
        /// The lease.
        lease: Duration,
        /// The call deadline.
        deadline: Duration,
    },
    /// An admin token short enough to guess.
    #[error("the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters")]
    WeakAdminToken,
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl Config {
    /// Refuses settings that cannot work together.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.delivery.lease <= self.host_limits.call_timeout {
            return Err(ConfigError::LeaseTooShort {
                lease: self.delivery.lease,
                deadline: self.host_limits.call_timeout,
            });
        }
        if self.admin_token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return Err(ConfigError::WeakAdminToken);
        }
        Ok(())
    }
}

/// Delivery workers' settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deliveries pushed at once by this process; 0 for an API-only process
    /// (other processes sharing the database deliver).
    pub concurrency: usize,
    /// How long a claim holds before another process may take the delivery
    /// (must exceed the plugin call deadline). A worker renews the leases of
    /// its pushes in flight every third of it, so a delivery of a process
    /// that died is pushed elsewhere within about one lease.
    pub lease: Duration,
    /// How often the queue is checked when nothing wakes the workers (other
    /// processes' changes, scheduled retries).
    pub poll_interval: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// Age after which a failing delivery becomes a dead letter.
    pub max_age: Duration,
    /// Largest avatar upload accepted by `POST /v1/media` (bytes).
    pub max_media_bytes: usize,
    /// How often a change's event stream re-reads the change when no notice
    /// came: a safety net only, since this process's workers and (on
    /// PostgreSQL) every other process announce each outcome.
    pub stream_recheck: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 32,
            lease: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            max_media_bytes: 8 * 1024 * 1024,
            stream_recheck: Duration::from_secs(15),
        }
    }
}

/// Default body limit: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default plugin upload limit: 64 MiB (debug-built components are large).
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

impl Config {
    /// Defaults for `data_dir`: the SQLite file inside it and secrets read from
    /// (or generated into) it.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, SecretError> {
        Self::with_secrets(data_dir.into(), None, None)
    }

    /// Like [`Config::new`], with secrets from the environment when given.
    pub fn with_secrets(
        data_dir: PathBuf,
        admin_token: Option<String>,
        master_key: Option<String>,
    ) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io {
            path: data_dir.display().to_string(),
            source,
        };
        if !data_dir.exists() {
            std::fs::create_dir_all(&data_dir).map_err(io)?;
        }
        // The database holds password hashes and sealed credentials: only
        // the gateway's user may read the folder, whoever created it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data_dir)
                .map_err(io)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    "the data dir was open to other users (mode {:o}); it is now 0700",
                    mode & 0o777
                );
            }
        }
        Ok(Config {
            database_url: default_database_url(&data_dir),
            database_connections: registry_db::DEFAULT_POSTGRES_CONNECTIONS,
            admin_token: secrets::admin_token(admin_token, &data_dir)?,
            master_key: secrets::master_key(master_key, &data_dir)?,
            data_dir,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_BYTES,
            session_ttl: Duration::from_secs(24 * 3600),
            anonymous_quota: Quota {
                per_second: 5,
                burst: 20,
            },
            user_quota: Quota {
                per_second: 50,
                burst: 200,
            },
            trusted_proxies: Vec::new(),
            host_limits: HostLimits::default(),
            delivery: DeliveryConfig::default(),
            media: crate::media::MediaLimits::default(),
            devices: crate::devices::DeviceLimits::default(),
            blob_store: None,
            blobs: crate::blobs::BlobLimits::default(),
            jobs: crate::processing::jobs::JobsConfig::default(),
            bundled_services: Vec::new(),
            bundled_modules: Vec::new(),
            clock: crate::clock::system(),
        })
    }
}

/// The embedded default: `<data_dir>/gateway.db`.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gateway.db").display())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_data_dir_open_to_others_is_made_private() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("data");
        // Made by hand (`mkdir data`), before the gateway ever ran.
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        Config::new(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
