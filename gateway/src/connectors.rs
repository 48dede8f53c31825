//! Loaded connectors: joins the registry (plugin bytes, manifests) and the
//! plugin host (compiled plugins), with a cache of one `InstancePre` per
//! module version. Neither HTTP nor SQL lives here.

use crate::host::{
    CallError, Description, Grants, InvalidPlugin, LoadedPlugin, Pacing, PluginHost, PushOutcome,
    Settings,
};
use crate::modules::{self, Manifest, ManifestExt};
use crate::rate_limit::OutboundLimiter;
use crate::secrets::MasterKey;
use registry_db::{Module, NewModule, RateQuota, Registry, RegistryError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A connector ready to call: plugin plus the module's grants.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Module version the plugin belongs to.
    pub version: i64,
    /// The compiled plugin.
    pub plugin: LoadedPlugin,
    /// Origins and config of the module.
    pub grants: Arc<Grants>,
    /// The module's outbound rate limit (manifest `rate_limit`) for
    /// deliveries, shared by every push of this module in this process, and
    /// on PostgreSQL by every process on the database.
    pub limiter: Option<Arc<OutboundLimiter>>,
    /// A separate, smaller budget (a quarter of the rate limit, at least 1
    /// per second) for interactive calls (a new binding's `verify`, a
    /// `fetch` of an account's settings), so that users checking
    /// credentials or polling, right or wrong, never take the tokens
    /// deliveries need.
    pub interactive: Option<Arc<OutboundLimiter>>,
}

impl Ready {
    fn new(version: i64, plugin: LoadedPlugin, manifest: &Manifest, registry: &Registry) -> Self {
        let limiter = |share: u32, key: String| {
            manifest.rate_limit.and_then(|limit| {
                let quota = RateQuota {
                    per_second: limit.per_second.div_ceil(share),
                    burst: limit.burst.div_ceil(share),
                };
                OutboundLimiter::new(registry, key, quota).map(Arc::new)
            })
        };
        Ready {
            version,
            plugin,
            grants: Arc::new(manifest.grants()),
            limiter: limiter(1, format!("module:{}", manifest.id)),
            interactive: limiter(4, format!("module:{}:interactive", manifest.id)),
        }
    }
}

/// Why a connector could not be installed or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorsError {
    /// The plugin was refused.
    #[error(transparent)]
    Invalid(#[from] InvalidPlugin),
    /// The module is not (or no longer) supported.
    #[error("module {0:?} is not supported")]
    Unsupported(String),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A stored manifest could not be read (wrong master key?).
    #[error("stored manifest of {module}: {reason}")]
    Manifest {
        /// Module id.
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// The manifest's config does not fit the fields the connector declares.
    #[error("manifest field config.{0}")]
    Config(crate::host::schema::FieldProblem),
    /// A manifest given as text is not one.
    #[error("invalid manifest: {0}")]
    InvalidManifest(#[from] modules::ManifestError),
    /// A blocking task failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// How long a cached connector is used before its module row is read again
/// (a newer upload or a removal by another process shows up within this).
const RECHECK: Duration = Duration::from_secs(1);

/// The gateway's connectors.
pub struct Connectors {
    host: PluginHost,
    registry: Registry,
    master_key: MasterKey,
    cache: RwLock<HashMap<String, (Arc<Ready>, Instant)>>,
    /// One compilation at a time: many deliveries to a module not yet loaded
    /// in this process wait for one compile instead of each compiling.
    loading: tokio::sync::Mutex<()>,
    /// The supported modules with their descriptions, read at most every
    /// [`RECHECK`] (every change report needs them).
    library: RwLock<Option<(Arc<Library>, Instant)>>,
    /// Slots of interactive calls (verify, fetch) running at once.
    interactive: tokio::sync::Semaphore,
}

/// Supported module ids with what each connector said about itself.
pub type Library = HashMap<String, Option<Description>>;

impl Connectors {
    /// Wraps the host and the registry.
    pub fn new(host: PluginHost, registry: Registry, master_key: MasterKey) -> Self {
        let slots = (host.limits().max_instances / 4).max(1) as usize;
        Connectors {
            interactive: tokio::sync::Semaphore::new(slots),
            host,
            registry,
            master_key,
            cache: RwLock::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            library: RwLock::new(None),
        }
    }

    /// Validates a plugin (compiles, links, `describe()`), stores it as the
    /// module's new version and makes it live without a restart.
    pub async fn install(
        &self,
        manifest: Manifest,
        plugin: Vec<u8>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Module, ConnectorsError> {
        let grants = manifest.grants();
        let host = self.host.clone();
        let (plugin, loaded) = tokio::task::spawn_blocking(move || {
            host.load(&plugin, grants).map(|loaded| (plugin, loaded))
        })
        .await
        .map_err(|e| ConnectorsError::Internal(e.to_string()))??;
        if let Some(fields) = &loaded.description.config {
            crate::host::schema::check_object(fields, &manifest.config)
                .map_err(ConnectorsError::Config)?;
        }
        let description = serde_json::to_value(&loaded.description)
            .map_err(|e| ConnectorsError::Internal(e.to_string()))?;
        let new = NewModule {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            plugin_digest: crate::secrets::sha256_hex(&plugin),
            plugin,
            manifest: manifest.to_stored(&self.master_key),
            description: Some(description),
        };
        let module = self.registry.upsert_module(new, now).await?;
        self.remember(
            &module.id,
            Ready::new(module.version, loaded, &manifest, &self.registry),
        );
        self.forget_library();
        Ok(module)
    }

    /// Installs `plugin` with `manifest` (JSON) unless that module is
    /// supported with the same plugin already; `None` then, and the stored
    /// manifest (which the operator may have changed since) stays. A module
    /// the operator removed is installed again: stop passing it to keep it
    /// out.
    pub async fn ensure(
        &self,
        manifest: &str,
        plugin: Vec<u8>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Module>, ConnectorsError> {
        let manifest = Manifest::parse(manifest)?;
        match self.registry.module(&manifest.id).await {
            Ok(row) if row.enabled && row.plugin_digest == crate::secrets::sha256_hex(&plugin) => {
                return Ok(None)
            }
            Ok(_) | Err(RegistryError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.install(manifest, plugin, now).await.map(Some)
    }

    fn remember(&self, id: &str, ready: Ready) {
        // Replaces the previous version: calls already running keep theirs.
        self.remember_arc(id, Arc::new(ready));
    }

    /// Drops a removed module's connector at once in this process (other
    /// processes notice within [`RECHECK`]).
    pub fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(id);
        }
        self.forget_library();
    }

    fn forget_library(&self) {
        if let Ok(mut library) = self.library.write() {
            *library = None;
        }
    }

    /// The supported modules and their descriptions (changes made by another
    /// process show up within [`RECHECK`]).
    pub async fn library(&self) -> Result<Arc<Library>, RegistryError> {
        if let Some((library, read)) = self.library.read().ok().and_then(|l| l.clone()) {
            if read.elapsed() < RECHECK {
                return Ok(library);
            }
        }
        let library: Arc<Library> = Arc::new(
            self.registry
                .list_modules(false)
                .await?
                .into_iter()
                .map(|m| {
                    let description = m
                        .description
                        .and_then(|d| serde_json::from_value::<Description>(d).ok());
                    (m.id, description)
                })
                .collect(),
        );
        if let Ok(mut cached) = self.library.write() {
            *cached = Some((library.clone(), Instant::now()));
        }
        Ok(library)
    }

    fn cached(&self, module_id: &str) -> Option<(Arc<Ready>, Instant)> {
        self.cache
            .read()
            .ok()
            .and_then(|c| c.get(module_id).cloned())
    }

    /// The current connector of a supported module, compiled on first use
    /// (another gateway process may have uploaded a newer version).
    pub async fn get(&self, module_id: &str) -> Result<Arc<Ready>, ConnectorsError> {
        if let Some((ready, checked)) = self.cached(module_id) {
            if checked.elapsed() < RECHECK {
                return Ok(ready);
            }
        }
        let module = match self.registry.module(module_id).await {
            Ok(m) if m.enabled => m,
            Ok(_) | Err(RegistryError::NotFound) => {
                return Err(ConnectorsError::Unsupported(module_id.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let _loading = self.loading.lock().await;
        if let Some((ready, _)) = self.cached(module_id) {
            if ready.version == module.version {
                self.remember_arc(module_id, ready.clone());
                return Ok(ready);
            }
        }
        let manifest =
            modules::stored_manifest(&module.manifest, &self.master_key).map_err(|reason| {
                ConnectorsError::Manifest {
                    module: module_id.to_owned(),
                    reason,
                }
            })?;
        let (version, bytes) = self.registry.module_plugin(module_id).await?;
        let host = self.host.clone();
        let grants = manifest.grants();
        let loaded = tokio::task::spawn_blocking(move || host.load(&bytes, grants))
            .await
            .map_err(|e| ConnectorsError::Internal(e.to_string()))??;
        let ready = Arc::new(Ready::new(version, loaded, &manifest, &self.registry));
        self.remember_arc(module_id, ready.clone());
        Ok(ready)
    }

    fn remember_arc(&self, id: &str, ready: Arc<Ready>) {
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id.to_owned(), (ready, Instant::now()));
        }
    }

    /// Runs a connector call on the blocking pool: a call keeps its thread
    /// busy while the plugin runs.
    async fn blocking<T: Send + 'static>(
        &self,
        ready: Arc<Ready>,
        call: impl FnOnce(&PluginHost, &Ready) -> T + Send + 'static,
    ) -> Result<T, ConnectorsError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || call(&host, &ready))
            .await
            .map_err(|e| ConnectorsError::Internal(e.to_string()))
    }

    /// A slot for an interactive call: together they hold at most a quarter
    /// of the plugin instances, so users' checks and reads cannot take the
    /// slots deliveries need.
    async fn interactive_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ConnectorsError> {
        self.interactive
            .acquire()
            .await
            .map_err(|e| ConnectorsError::Internal(e.to_string()))
    }

    /// Checks an account's credentials with the module's connector.
    pub async fn verify(
        &self,
        module_id: &str,
        login: &str,
        credentials_json: String,
    ) -> Result<Result<(), CallError>, ConnectorsError> {
        let ready = self.get(module_id).await?;
        let login = login.to_owned();
        let _slot = self.interactive_slot().await?;
        self.blocking(ready, move |host, ready| {
            let limiter = ready.interactive.clone();
            host.verify(
                &ready.plugin,
                ready.grants.clone(),
                limiter,
                &login,
                &credentials_json,
            )
        })
        .await
    }

    /// Reads an account's current settings through the module's connector.
    pub async fn fetch(
        &self,
        module_id: &str,
        login: &str,
        credentials_json: String,
    ) -> Result<Result<Settings, CallError>, ConnectorsError> {
        let ready = self.get(module_id).await?;
        let login = login.to_owned();
        let _slot = self.interactive_slot().await?;
        self.blocking(ready, move |host, ready| {
            host.fetch(
                &ready.plugin,
                ready.grants.clone(),
                ready.interactive.clone(),
                &login,
                &credentials_json,
            )
        })
        .await
    }

    /// Pushes settings to an account through a connector from
    /// [`Connectors::get`]; `prepaid` when the caller already took the first
    /// request's token from `ready.limiter`.
    pub async fn push(
        &self,
        ready: Arc<Ready>,
        login: String,
        credentials_json: String,
        settings: Settings,
        prepaid: bool,
    ) -> Result<Result<PushOutcome, CallError>, ConnectorsError> {
        self.blocking(ready, move |host, ready| {
            let pacing = Pacing {
                limiter: ready.limiter.clone(),
                prepaid,
            };
            let grants = ready.grants.clone();
            host.push(
                &ready.plugin,
                grants,
                pacing,
                &login,
                &credentials_json,
                &settings,
            )
        })
        .await
    }
}
