//! Service plugins (DRAFT) as a domain service: upload (compile, link with
//! the granted capabilities, store, make live without a restart), the
//! catalogue, requests routed to a service acting for its caller, and the
//! runner of the services' durable timers. [`Backend`] is what the host's
//! capabilities do here: the registry's key-value store and timers, the
//! device registry and inboxes, the gateway's clock.

use crate::blobs::{BlobError, Blobs, Owner};
use crate::clock::SharedClock;
use crate::devices::Devices;
use crate::host::service::{
    BlobInfo, BlobNotice, Capability, DeviceInfo, JobError, JobInfo, KvEntry, KvFailure, KvWrite,
    LoadedService, NewJob, ServiceBackend, ServiceRequest, ServiceResponse, ServiceScope,
    KV_MAX_KEYS,
};
use crate::host::{CallError, Grants, InvalidPlugin, PluginHost};
use crate::processing::jobs::Jobs;
use registry_db::{DeviceState, KvError, Registry, RegistryError, ServiceRow};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The manifest is not JSON of the manifest's shape.
    #[error("manifest is not valid: {0}")]
    ManifestShape(#[from] serde_json::Error),
    /// The manifest breaks a rule.
    #[error("manifest field {0}")]
    Manifest(String),
    /// The plugin was refused.
    #[error(transparent)]
    Invalid(#[from] InvalidPlugin),
    /// No such service (or removed).
    #[error("service {0:?} is not installed")]
    Unknown(String),
    /// The plugin failed while answering.
    #[error("the service failed: {0}")]
    Call(CallError),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A blocking task failed.
    #[error("internal: {0}")]
    Internal(String),
}

pub use gateway_api::ServiceManifest;

/// What the gateway does with a service manifest beyond its wire shape.
pub trait ServiceManifestExt: Sized {
    /// Parses and checks a manifest; the capabilities it grants.
    fn parse(text: &str) -> Result<(Self, Vec<Capability>), ServiceError>;
    /// Checks the fields' rules; the capabilities granted.
    fn check(&self) -> Result<Vec<Capability>, ServiceError>;
    /// The permissions and config a call of this service gets.
    fn grants(&self) -> Grants;
}

impl ServiceManifestExt for ServiceManifest {
    fn parse(text: &str) -> Result<(Self, Vec<Capability>), ServiceError> {
        let manifest: ServiceManifest = serde_json::from_str(text)?;
        let capabilities = manifest.check()?;
        Ok((manifest, capabilities))
    }

    fn check(&self) -> Result<Vec<Capability>, ServiceError> {
        if !crate::modules::valid_id(&self.id) {
            return Err(ServiceError::Manifest(
                "id: 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter".into(),
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            return Err(ServiceError::Manifest("name: 1-100 characters".into()));
        }
        for origin in &self.allowed_hosts {
            crate::modules::parse_origin(origin)
                .map_err(|reason| ServiceError::Manifest(format!("allowed_hosts: {reason}")))?;
        }
        let mut capabilities = Vec::new();
        for grant in &self.grants {
            let capability = Capability::parse(grant).ok_or_else(|| {
                let known: Vec<&str> = Capability::ALL.iter().map(|(n, _)| *n).collect();
                ServiceError::Manifest(format!(
                    "grants: unknown capability {grant:?}; known: {}",
                    known.join(", ")
                ))
            })?;
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        Ok(capabilities)
    }

    fn grants(&self) -> Grants {
        Grants {
            module_id: self.id.clone(),
            allowed_origins: self.allowed_hosts.clone(),
            config_json: Value::Object(self.config.clone()).to_string(),
        }
    }
}

struct Ready {
    version: i64,
    loaded: LoadedService,
    grants: Arc<Grants>,
    capabilities: Vec<Capability>,
}

/// A service's live version, resolved once per request.
#[derive(Clone)]
pub struct Mounted {
    id: String,
    ready: Arc<Ready>,
}

impl Mounted {
    /// Whether the operator granted the service `capability`.
    pub fn grants(&self, capability: Capability) -> bool {
        self.ready.capabilities.contains(&capability)
    }

    /// Whether `method path` is one of the service's public routes.
    pub fn is_public(&self, method: &str, path: &str) -> bool {
        matches(&self.ready.loaded.public_routes, method, path)
    }

    /// Whether `method path` is one of the routes whose body the gateway
    /// stores as a blob first (only with the grant `blobs`).
    pub fn is_blob_route(&self, method: &str, path: &str) -> bool {
        self.grants(Capability::Blobs) && matches(&self.ready.loaded.blob_routes, method, path)
    }
}

fn matches(routes: &[(String, String)], method: &str, path: &str) -> bool {
    routes
        .iter()
        .any(|(m, prefix)| m.eq_ignore_ascii_case(method) && path.starts_with(prefix.as_str()))
}

/// How long a process holds a due timer before another may run it again
/// (timers run at least once: a process killed mid-run leaves it due).
const TIMER_LEASE: Duration = Duration::from_secs(30);

/// The installed services.
pub struct Services {
    registry: Registry,
    host: PluginHost,
    backend: Arc<Backend>,
    cache: RwLock<HashMap<String, Arc<Ready>>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Wraps the host, the registry and the devices.
    pub fn new(
        host: PluginHost,
        registry: Registry,
        devices: Arc<Devices>,
        blobs: Arc<Blobs>,
        jobs: Arc<Jobs>,
        clock: SharedClock,
    ) -> Self {
        Services {
            backend: Arc::new(Backend {
                registry: registry.clone(),
                devices,
                blobs,
                jobs,
                clock,
            }),
            registry,
            host,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Checks and stores a service plugin and makes it live.
    pub async fn install(
        &self,
        manifest: ServiceManifest,
        capabilities: Vec<Capability>,
        plugin: Vec<u8>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ServiceRow, ServiceError> {
        let grants = manifest.grants();
        let host = self.host.clone();
        let granted = capabilities.clone();
        let (plugin, loaded) = tokio::task::spawn_blocking(move || {
            host.load_service(&plugin, grants, &granted)
                .map(|loaded| (plugin, loaded))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let stored =
            serde_json::to_value(&manifest).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let row = self
            .registry
            .upsert_service(
                &manifest.id,
                &manifest.name,
                plugin.clone(),
                &crate::secrets::sha256_hex(&plugin),
                &stored,
                now,
            )
            .await?;
        let ready = Arc::new(Ready {
            version: row.version,
            loaded,
            grants: Arc::new(manifest.grants()),
            capabilities,
        });
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(row.id.clone(), ready);
        }
        Ok(row)
    }

    /// Installs `plugin` with `manifest` (JSON) unless that service is
    /// installed with the same plugin already; `None` then. A service the
    /// operator removed is installed again: stop passing it to keep it out.
    pub async fn ensure(
        &self,
        manifest: &str,
        plugin: Vec<u8>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ServiceRow>, ServiceError> {
        let (manifest, capabilities) = ServiceManifest::parse(manifest)?;
        match self.registry.service(&manifest.id).await {
            Ok(row) if row.plugin_digest == crate::secrets::sha256_hex(&plugin) => return Ok(None),
            Ok(_) | Err(RegistryError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.install(manifest, capabilities, plugin, now)
            .await
            .map(Some)
    }

    /// The installed services.
    pub async fn list(&self) -> Result<Vec<ServiceRow>, ServiceError> {
        Ok(self.registry.list_services().await?)
    }

    /// Removes a service.
    pub async fn remove(
        &self,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ServiceError> {
        match self.registry.disable_service(id, now).await {
            Err(RegistryError::NotFound) => return Err(ServiceError::Unknown(id.to_owned())),
            other => other?,
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(id);
        }
        Ok(())
    }

    /// The live version of a service (reloaded when another process
    /// uploaded a newer one).
    async fn ready(&self, id: &str) -> Result<Arc<Ready>, ServiceError> {
        let row = match self.registry.service(id).await {
            Ok(row) => row,
            Err(RegistryError::NotFound) => return Err(ServiceError::Unknown(id.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(id).cloned())
            .filter(|r| r.version == row.version);
        if let Some(ready) = cached {
            return Ok(ready);
        }
        let manifest: ServiceManifest = serde_json::from_value(row.manifest.clone())
            .map_err(|e| ServiceError::Internal(format!("stored manifest of {id}: {e}")))?;
        let capabilities = manifest.check()?;
        let plugin = self.registry.service_plugin(id).await?;
        let grants = manifest.grants();
        let host = self.host.clone();
        let granted = capabilities.clone();
        let loaded =
            tokio::task::spawn_blocking(move || host.load_service(&plugin, grants, &granted))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let ready = Arc::new(Ready {
            version: row.version,
            loaded,
            grants: Arc::new(manifest.grants()),
            capabilities,
        });
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id.to_owned(), ready.clone());
        }
        Ok(ready)
    }

    /// The live version of service `id`; `Unknown` when not installed.
    pub async fn mounted(&self, id: &str) -> Result<Mounted, ServiceError> {
        Ok(Mounted {
            id: id.to_owned(),
            ready: self.ready(id).await?,
        })
    }

    /// Routes a request to a service, acting for its caller.
    pub async fn call(
        &self,
        service: Mounted,
        request: ServiceRequest,
    ) -> Result<ServiceResponse, ServiceError> {
        let Mounted { id, ready } = service;
        let scope = ServiceScope {
            service_id: id,
            user_id: request.caller.as_ref().map(|(user, _)| user.clone()),
            backend: self.backend.clone(),
        };
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            host.handle(&ready.loaded, ready.grants.clone(), scope, request)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::Call)
    }

    /// Tells service `service` what happened to a blob of `user`'s; its
    /// refusal (meaningful for `Created`) as `Ok(Err(text))`. A service
    /// not granted `blobs` hears nothing.
    pub async fn blob_event(
        &self,
        service: &str,
        user: &str,
        notice: BlobNotice,
    ) -> Result<Result<(), String>, ServiceError> {
        let ready = self.ready(service).await?;
        if !ready.capabilities.contains(&Capability::Blobs) {
            return Ok(Ok(()));
        }
        let scope = ServiceScope {
            service_id: service.to_owned(),
            user_id: Some(user.to_owned()),
            backend: self.backend.clone(),
        };
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            host.on_blob(&ready.loaded, ready.grants.clone(), scope, notice)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::Call)
    }

    /// Runs due timers until `stop` turns true, checking every `every`.
    pub async fn run_timers(&self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let now = self.backend.clock.now();
            let lease = chrono::Duration::from_std(TIMER_LEASE).unwrap_or(chrono::Duration::MAX);
            let due = match self.registry.take_due_timers(now, now + lease, 100).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "service timers not read");
                    continue;
                }
            };
            for timer in due {
                let Ok(ready) = self.ready(&timer.service_id).await else {
                    // Removed: its timers wait for it to come back.
                    continue;
                };
                let scope = ServiceScope {
                    service_id: timer.service_id.clone(),
                    user_id: Some(timer.user_id.clone()),
                    backend: self.backend.clone(),
                };
                let host = self.host.clone();
                let name = timer.name.clone();
                let ran = tokio::task::spawn_blocking(move || {
                    host.on_timer(&ready.loaded, ready.grants.clone(), scope, &name)
                })
                .await;
                if let Ok(Err(e)) = ran {
                    tracing::warn!(service = %timer.service_id, timer = %timer.name, error = %e, "a service timer failed");
                }
                // Done (a failure is not retried: the plugin would fail
                // again); kept when the plugin moved it meanwhile.
                if let Err(e) = self.registry.finish_timer(&timer).await {
                    tracing::warn!(error = %e, "a service timer not cleared; it runs again after its lease");
                }
            }
        }
    }
}

/// The capabilities' implementation on the gateway.
pub struct Backend {
    registry: Registry,
    devices: Arc<Devices>,
    blobs: Arc<Blobs>,
    jobs: Arc<Jobs>,
    clock: SharedClock,
}

fn kv_failure(e: KvError) -> KvFailure {
    match e {
        KvError::Conflict(key) => KvFailure::Conflict(key),
        KvError::Full(max) => KvFailure::Full(max),
        KvError::Registry(e) => KvFailure::Failed(e.to_string()),
    }
}

fn entry(e: registry_db::KvEntry) -> KvEntry {
    KvEntry {
        key: e.key,
        value: e.value,
        version: u64::try_from(e.version).unwrap_or(0),
    }
}

#[async_trait::async_trait]
impl ServiceBackend for Backend {
    async fn kv_get(
        &self,
        service: &str,
        user: &str,
        key: &str,
    ) -> Result<Option<KvEntry>, KvFailure> {
        self.registry
            .kv_get(service, user, key)
            .await
            .map(|e| e.map(entry))
            .map_err(|e| KvFailure::Failed(e.to_string()))
    }

    async fn kv_scan(
        &self,
        service: &str,
        user: &str,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<KvEntry>, KvFailure> {
        self.registry
            .kv_list(service, user, prefix, after, limit)
            .await
            .map(|entries| entries.into_iter().map(entry).collect())
            .map_err(|e| KvFailure::Failed(e.to_string()))
    }

    async fn kv_find(
        &self,
        service: &str,
        key: &str,
    ) -> Result<Option<(String, KvEntry)>, KvFailure> {
        self.registry
            .kv_find(service, key)
            .await
            .map(|found| found.map(|(user, e)| (user, entry(e))))
            .map_err(|e| KvFailure::Failed(e.to_string()))
    }

    async fn kv_commit(
        &self,
        service: &str,
        user: &str,
        writes: Vec<KvWrite>,
    ) -> Result<Vec<u64>, KvFailure> {
        let writes: Vec<registry_db::KvWrite> = writes
            .into_iter()
            .map(|w| registry_db::KvWrite {
                key: w.key,
                value: w.value,
                expect: w.expect.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            })
            .collect();
        self.registry
            .kv_commit(service, user, &writes, KV_MAX_KEYS)
            .await
            .map(|versions| {
                versions
                    .into_iter()
                    .map(|v| u64::try_from(v).unwrap_or(0))
                    .collect()
            })
            .map_err(kv_failure)
    }

    async fn devices(&self, user: &str) -> Vec<DeviceInfo> {
        self.devices
            .list(user)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|d| DeviceInfo {
                id: d.id,
                name: d.name,
                capabilities: d.capabilities,
                active: d.state == DeviceState::Active,
                ip: d.ip,
                port: d.port,
                last_seen_ms: u64::try_from(d.last_seen.timestamp_millis()).unwrap_or(0),
            })
            .collect()
    }

    async fn publish(
        &self,
        user: &str,
        devices: Vec<String>,
        kind: String,
        payload: String,
    ) -> Result<(), String> {
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let ids: Vec<&str> = devices.iter().map(String::as_str).collect();
        match self.devices.publish_for(user, &ids, &kind, &payload).await {
            Err(crate::devices::DeviceError::NotFound) => {
                Err("one of the devices is not one of the user's devices".into())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    async fn schedule(&self, service: &str, user: &str, name: &str, at_ms: u64) {
        let due = chrono::DateTime::from_timestamp_millis(i64::try_from(at_ms).unwrap_or(i64::MAX))
            .unwrap_or_else(|| self.clock.now());
        if let Err(e) = self.registry.schedule_timer(service, user, name, due).await {
            tracing::warn!(service, error = %e, "service timer not stored");
        }
    }

    async fn cancel(&self, service: &str, user: &str, name: &str) {
        if let Err(e) = self.registry.cancel_timer(service, user, name).await {
            tracing::warn!(service, error = %e, "service timer not cancelled");
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    async fn blob(&self, service: &str, user: &str, id: &str) -> Option<BlobInfo> {
        let upload = self
            .blobs
            .status(&Owner::of(service, user), id)
            .await
            .ok()?;
        Some(BlobInfo {
            id: upload.id,
            length: u64::try_from(upload.length).unwrap_or(0),
            offset: u64::try_from(upload.offset).unwrap_or(0),
            sha256: upload.sha256,
        })
    }

    async fn delete_blob(&self, service: &str, user: &str, id: &str) -> bool {
        match self.blobs.delete(&Owner::of(service, user), id).await {
            Ok(()) => true,
            Err(BlobError::NotFound) => false,
            Err(e) => {
                tracing::warn!(service, blob = id, error = %e, "a blob was not deleted");
                false
            }
        }
    }

    async fn submit_job(&self, job: NewJob) -> Result<JobInfo, JobError> {
        self.jobs.submit(job).await
    }

    async fn job(&self, service: &str, user: &str, id: &str) -> Option<JobInfo> {
        match self.jobs.get(service, user, id).await {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(service, job = id, error = %e, "a media job was not read");
                None
            }
        }
    }
}
