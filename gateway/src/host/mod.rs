//! The plugin host: one wasmtime `Engine` (pooling allocator, epoch
//! interruption), an `InstancePre` per module version, a fresh `Store` per
//! connector call with a deadline and a memory cap, and the imports a plugin
//! is granted (outbound HTTP to granted origins, log, clock, and the part of
//! WASI a Rust connector imports, its blocking calls cut at the deadline).
//!
//! This module knows nothing of HTTP serving (no axum here): callers pass
//! bytes, grants and settings and get typed results back.

mod abi;
mod bindings;
pub mod dns;
mod outbound;
pub mod schema;
pub mod service;
mod stderr;
pub mod types;
mod wasi;

pub use abi::SUPPORTED_ABI;
pub use types::{
    AvatarLimits, CallError, Description, Field, Grants, HttpRequest, HttpResponse, Image, Limits,
    PushOutcome, SettingField, SettingKind, Settings,
};

use crate::rate_limit::OutboundLimiter;
use bindings::Pre;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Why an uploaded plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPlugin {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (missing the \\0asm magic number)")]
    NotWasm,
    /// A core module where a component is required.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (cargo build --target wasm32-wasip2) so it is a component"
    )]
    CoreModule,
    /// A WebAssembly binary of an unknown encoding version or layer.
    #[error("unsupported WebAssembly encoding (version {version}, layer {layer})")]
    UnknownEncoding {
        /// Encoding version field.
        version: u16,
        /// Layer field (0 core, 1 component).
        layer: u16,
    },
    /// Missing or unsupported ABI version.
    #[error("{0}")]
    Abi(String),
    /// The component does not compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component is not a connector of this ABI (wrong world, unknown imports).
    #[error("the component does not fit the world it was uploaded for: {0}")]
    World(String),
    /// `describe()` failed.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// `describe()` declared credential or config fields that break the rules.
    #[error("{0}")]
    Declaration(String),
}

/// Errors creating the host.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the WebAssembly engine: {0}")]
pub struct HostError(String);

/// Limits applied to every plugin call.
#[derive(Debug, Clone)]
pub struct HostLimits {
    /// Wall-clock budget of one call, network included.
    pub call_timeout: Duration,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Largest HTTP answer a plugin may receive.
    pub max_response_bytes: usize,
    /// Instances that may exist at once (pool size).
    pub max_instances: u32,
    /// Let granted host names resolve to private and reserved addresses
    /// (see [`dns`]); granted IP addresses are always used as written.
    pub allow_private_dns: bool,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            call_timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_response_bytes: 16 << 20,
            max_instances: 256,
            allow_private_dns: false,
        }
    }
}

/// How often the engine's epoch advances; deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A compiled, linked connector ready to instantiate.
#[derive(Clone)]
pub struct LoadedPlugin {
    pre: Pre,
    /// What the connector said about itself when loaded.
    pub description: Description,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Per-call store data: WASI context, limits, grants, outbound client.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    grants: Arc<Grants>,
    outbound: Outbound,
    deadline: Instant,
    memory_cap: usize,
    memory_exceeded: bool,
    /// The latest output on the plugin's stderr (a panic message).
    stderr: stderr::StderrTail,
    /// An outbound request refused because its origin is not granted.
    denied: Option<String>,
    /// For a service call: who it acts for, and its capabilities.
    service: Option<service::ServiceScope>,
}

#[derive(Clone)]
struct Outbound {
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Handle>,
    in_process: Option<InProcessHttp>,
    max_response_bytes: usize,
    limiter: Option<Arc<OutboundLimiter>>,
    /// The caller already took the first request's token from `limiter`.
    prepaid: bool,
}

/// The outbound rate limit a call runs under.
#[derive(Clone, Default)]
pub struct Pacing {
    /// The module's limiter (manifest `rate_limit`); `None`: unlimited.
    pub limiter: Option<Arc<OutboundLimiter>>,
    /// True when the caller took the token of the call's first request
    /// itself (the delivery workers do, to defer instead of waiting).
    pub prepaid: bool,
}

impl From<Option<Arc<OutboundLimiter>>> for Pacing {
    fn from(limiter: Option<Arc<OutboundLimiter>>) -> Self {
        Pacing {
            limiter,
            prepaid: false,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Answers plugins' HTTP requests inside the process instead of the network
/// (benchmarks of the call overhead; grants and rate limits still apply).
pub type InProcessHttp = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// The shared engine, linker and outbound client.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: HostLimits,
    client: reqwest::Client,
    in_process: Option<InProcessHttp>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// The limits this host enforces.
    pub fn limits(&self) -> &HostLimits {
        &self.limits
    }

    /// Creates the engine (pooling allocator), the linker with the granted
    /// imports, and the epoch ticker thread.
    pub fn new(limits: HostLimits) -> Result<Self, HostError> {
        let err = |e: wasmtime::Error| HostError(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            // A component is a few core instances (its module, and the
            // shims wit-component adds): slots are cheap, memories are not.
            .total_core_instances(limits.max_instances * 4)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 2)
            .max_memory_size(limits.memory_bytes)
            // Instances live for one call and reuse pool slots: zeroing the
            // first 256 KiB (stack and data of a connector built with a small
            // stack, see plugins/.cargo/config.toml) with memset is cheaper
            // than madvise plus page faults on the next instantiation.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(err)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(err)?;
        bindings::add_to_linker(&mut linker).map_err(err)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| HostError(e.to_string()))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(32)
            .dns_resolver(std::sync::Arc::new(dns::GuardedResolver {
                allow_private: limits.allow_private_dns,
            }))
            .build()
            .map_err(|e| HostError(e.to_string()))?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            limits,
            client,
            in_process: None,
        })
    }

    /// The same host, with plugins' HTTP answered by `answer` in-process.
    pub fn with_in_process_http(mut self, answer: InProcessHttp) -> Self {
        self.in_process = Some(answer);
        self
    }

    /// Checks, compiles and links `bytes`, then runs `describe()` once.
    /// CPU-heavy: call it from a blocking thread inside a tokio runtime.
    pub fn load(&self, bytes: &[u8], grants: Grants) -> Result<LoadedPlugin, InvalidPlugin> {
        abi::check_header(bytes)?;
        let abi = abi::abi_version(bytes)?;
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| InvalidPlugin::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| InvalidPlugin::World(wasi::import_error(&e)))?;
        let pre =
            Pre::new(abi, instance_pre).map_err(|e| InvalidPlugin::World(format!("{e:#}")))?;
        let description: Description = self
            .call_sync(Arc::new(grants), Pacing::default(), None, |s| {
                pre.describe(s)
            })
            .map_err(InvalidPlugin::Describe)?;
        for (what, fields) in [
            ("credentials", &description.credentials),
            ("config", &description.config),
        ] {
            schema::check_declaration(what, fields.as_deref().unwrap_or_default())
                .map_err(InvalidPlugin::Declaration)?;
        }
        Ok(LoadedPlugin { pre, description })
    }

    /// Checks, compiles and links a service plugin with the capabilities
    /// its manifest grants, then runs `describe()` once. Blocking.
    pub fn load_service(
        &self,
        bytes: &[u8],
        grants: Grants,
        capabilities: &[service::Capability],
    ) -> Result<service::LoadedService, InvalidPlugin> {
        abi::check_header(bytes)?;
        abi::service_abi_version(bytes)?;
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| InvalidPlugin::Compile(format!("{e:#}")))?;
        let err = |e: wasmtime::Error| InvalidPlugin::Compile(format!("{e:#}"));
        let mut linker = Linker::<CallState>::new(&self.engine);
        wasi::add_to_linker(&mut linker).map_err(err)?;
        service::add_granted(&mut linker, capabilities).map_err(err)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| service::grant_error(&e))?;
        let pre = service::ServicePre::new(instance_pre)
            .map_err(|e| InvalidPlugin::World(format!("{e:#}")))?;
        let description = self
            .call_sync(Arc::new(grants), Pacing::default(), None, |s| {
                Ok(Ok(pre.instantiate(&mut *s)?.call_describe(s)?))
            })
            .map_err(InvalidPlugin::Describe)?;
        Ok(service::LoadedService {
            pre,
            public_routes: description
                .public_routes
                .into_iter()
                .map(|r| (r.method, r.path_prefix))
                .collect(),
            blob_routes: description
                .blob_routes
                .into_iter()
                .map(|r| (r.method, r.path_prefix))
                .collect(),
        })
    }

    /// Runs a service's `handle()` for a request, acting for `scope`.
    /// Blocking: call from a blocking thread inside a tokio runtime.
    pub fn handle(
        &self,
        loaded: &service::LoadedService,
        grants: Arc<Grants>,
        scope: service::ServiceScope,
        request: service::ServiceRequest,
    ) -> Result<service::ServiceResponse, CallError> {
        let request = service::wit::Request::from(request);
        self.call_sync(grants, Pacing::default(), Some(scope), |s| {
            Ok(Ok(loaded
                .pre
                .instantiate(&mut *s)?
                .call_handle(s, &request)?
                .into()))
        })
    }

    /// Runs a service's `on-timer()` for a due timer of `scope`'s user.
    pub fn on_timer(
        &self,
        loaded: &service::LoadedService,
        grants: Arc<Grants>,
        scope: service::ServiceScope,
        name: &str,
    ) -> Result<(), CallError> {
        let user = scope.user_id.clone().unwrap_or_default();
        self.call_sync(grants, Pacing::default(), Some(scope), |s| {
            Ok(Ok(loaded
                .pre
                .instantiate(&mut *s)?
                .call_on_timer(s, &user, name)?))
        })
    }

    /// Runs a service's `on-blob()` for an event of `scope`'s user: the
    /// plugin's refusal as `Ok(Err(text))`.
    pub fn on_blob(
        &self,
        loaded: &service::LoadedService,
        grants: Arc<Grants>,
        scope: service::ServiceScope,
        notice: service::BlobNotice,
    ) -> Result<Result<(), String>, CallError> {
        let user = scope.user_id.clone().unwrap_or_default();
        let event = service::wit::BlobEvent::from(notice);
        self.call_sync(grants, Pacing::default(), Some(scope), |s| {
            Ok(Ok(loaded
                .pre
                .instantiate(&mut *s)?
                .call_on_blob(s, &user, &event)?))
        })
    }

    fn call_sync<T>(
        &self,
        grants: Arc<Grants>,
        pacing: Pacing,
        service: Option<service::ServiceScope>,
        call: impl FnOnce(&mut Store<CallState>) -> bindings::Answer<T>,
    ) -> Result<T, CallError> {
        let stderr = stderr::StderrTail::default();
        let state = CallState {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            grants,
            outbound: Outbound {
                client: self.client.clone(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                in_process: self.in_process.clone(),
                max_response_bytes: self.limits.max_response_bytes,
                limiter: pacing.limiter,
                prepaid: pacing.prepaid,
            },
            deadline: Instant::now() + self.limits.call_timeout,
            memory_cap: self.limits.memory_bytes,
            memory_exceeded: false,
            stderr,
            denied: None,
            service,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        let ticks = (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let outcome = call(&mut store);
        match outcome {
            Ok(Ok(value)) => Ok(value),
            // The connector failed after the host refused it an origin:
            // whatever it says, the operator's grant is what to fix.
            Ok(Err(_)) if store.data().denied.is_some() => {
                let why = store.data_mut().denied.take().unwrap_or_default();
                tracing::warn!(module = %store.data().grants.module_id, "{why}: grant it in the module's allowed_hosts");
                Err(CallError::Misconfigured(why))
            }
            Ok(Err(CallError::Misconfigured(why))) => {
                tracing::warn!(module = %store.data().grants.module_id, "the connector says its module is misconfigured: {}", crate::text::log_line(&why));
                Err(CallError::Misconfigured(why))
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(self.classify_trap(&e, store.data())),
        }
    }

    fn classify_trap(&self, error: &wasmtime::Error, state: &CallState) -> CallError {
        if state.memory_exceeded {
            return CallError::MemoryLimit(self.limits.memory_bytes);
        }
        // Every pool slot in use (`--plugin-instances`): the gateway is
        // busy, the plugin did nothing wrong; a delivery tries again.
        if error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return CallError::Transient(format!(
                "the gateway is busy: all {} plugin instances are in use",
                self.limits.max_instances
            ));
        }
        // Stopped at the deadline either in wasm code (the epoch interrupt)
        // or waiting in a blocking host call (`wasi::DeadlineReached`).
        let interrupted = matches!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        );
        if interrupted || error.downcast_ref::<wasi::DeadlineReached>().is_some() {
            return CallError::Timeout(self.limits.call_timeout.as_millis() as u64);
        }
        let text = stderr::trap_text(&state.stderr.text(), &format!("{error:?}"));
        tracing::error!(module = %state.grants.module_id, "the connector crashed: {}", crate::text::log_line(&text));
        CallError::Trap(text)
    }

    /// Runs `verify()` for an account. Blocking: call from a blocking thread.
    pub fn verify(
        &self,
        plugin: &LoadedPlugin,
        grants: Arc<Grants>,
        limiter: Option<Arc<OutboundLimiter>>,
        login: &str,
        credentials_json: &str,
    ) -> Result<(), CallError> {
        let account = account(&grants, login, credentials_json);
        self.call_sync(grants, limiter.into(), None, |s| {
            plugin.pre.verify(s, account)
        })
    }

    /// Runs `push()` for an account. Blocking: call from a blocking thread.
    pub fn push(
        &self,
        plugin: &LoadedPlugin,
        grants: Arc<Grants>,
        pacing: impl Into<Pacing>,
        login: &str,
        credentials_json: &str,
        settings: &Settings,
    ) -> Result<PushOutcome, CallError> {
        let account = account(&grants, login, credentials_json);
        self.call_sync(grants, pacing.into(), None, |s| {
            plugin.pre.push(s, account, settings)
        })
    }

    /// Runs `fetch()` for an account. Blocking: call from a blocking thread.
    pub fn fetch(
        &self,
        plugin: &LoadedPlugin,
        grants: Arc<Grants>,
        pacing: impl Into<Pacing>,
        login: &str,
        credentials_json: &str,
    ) -> Result<Settings, CallError> {
        let account = account(&grants, login, credentials_json);
        self.call_sync(grants, pacing.into(), None, |s| {
            plugin.pre.fetch(s, account)
        })
    }
}

fn account(grants: &Grants, login: &str, credentials_json: &str) -> bindings::Account {
    bindings::Account {
        login: login.to_owned(),
        credentials: credentials_json.to_owned(),
        config: grants.config_json.clone(),
    }
}
