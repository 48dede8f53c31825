//! Service plugins: the `gateway:service@1.0.0` world on the same
//! engine, isolation and WASI as connectors (`CallState`), plus the host
//! capabilities a service's manifest grants, one module each. A plugin that
//! imports a capability its manifest does not grant does not link: it is
//! refused at upload, naming the import.
//!
//! Capabilities reach the gateway's storage and devices through
//! [`ServiceBackend`], so this module stays free of the registry and HTTP.

mod blobs;
mod clock;
mod config;
mod devices;
mod events;
mod http;
mod kv;
mod log;
mod media;
mod timers;

use super::{CallState, InvalidPlugin};
use std::sync::Arc;

mod generated {
    //! wasmtime's bindings of the service world.
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/service-v1",
        world: "service",
        // A request still waiting when the call's deadline passes ends
        // the call (see `http.rs`).
        imports: { "gateway:service/http.send": trappable },
    });
}

use generated::gateway;
pub use generated::gateway::service::types as wit;
pub(super) use generated::ServicePre;

/// A capability an operator grants a service in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `gateway:service/kv`: the key-value store.
    Kv,
    /// `gateway:service/devices`: the user's devices.
    Devices,
    /// `gateway:service/events`: events to the user's devices.
    Events,
    /// `gateway:service/timers`: durable timers.
    Timers,
    /// `gateway:service/http`: outbound HTTP to the manifest's
    /// `allowed_hosts`.
    Http,
    /// `gateway:service/log`.
    Log,
    /// `gateway:service/clock`.
    Clock,
    /// `gateway:service/blobs`, and the host's tus upload endpoint at the
    /// service's `/uploads` and blob downloads (the bytes never pass
    /// through the plugin).
    Blobs,
    /// `gateway:service/media`: media jobs run by the gateway's worker
    /// processes, their results kept as blobs of the service.
    Media,
}

impl Capability {
    /// Every capability, by its manifest name.
    pub const ALL: [(&'static str, Capability); 9] = [
        ("kv", Capability::Kv),
        ("devices", Capability::Devices),
        ("events", Capability::Events),
        ("timers", Capability::Timers),
        ("http", Capability::Http),
        ("log", Capability::Log),
        ("clock", Capability::Clock),
        ("blobs", Capability::Blobs),
        ("media", Capability::Media),
    ];

    /// The capability of a manifest name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    fn add_to_linker(
        self,
        linker: &mut wasmtime::component::Linker<CallState>,
    ) -> wasmtime::Result<()> {
        use wasmtime::component::HasSelf;
        match self {
            Capability::Kv => gateway::service::kv::add_to_linker::<_, HasSelf<_>>(linker, same),
            Capability::Devices => {
                gateway::service::devices::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Events => {
                gateway::service::events::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Timers => {
                gateway::service::timers::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Http => {
                gateway::service::http::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Log => gateway::service::log::add_to_linker::<_, HasSelf<_>>(linker, same),
            Capability::Clock => {
                gateway::service::clock::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Blobs => {
                gateway::service::blobs::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
            Capability::Media => {
                gateway::service::media::add_to_linker::<_, HasSelf<_>>(linker, same)
            }
        }
    }
}

/// The store data itself is what every capability works on.
fn same(state: &mut CallState) -> &mut CallState {
    state
}

/// One stored key of a service's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// Version, from 1.
    pub version: u64,
}

/// One write of an atomic commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// Key.
    pub key: String,
    /// New value; `None` deletes.
    pub value: Option<Vec<u8>>,
    /// Required version (`Some(0)`: absent).
    pub expect: Option<u64>,
}

/// Most keys a service keeps for one user: a commit that would go past it
/// writes nothing and fails with `too-large`, so one user cannot fill the
/// registry through a service.
pub const KV_MAX_KEYS: i64 = 100_000;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvFailure {
    /// The service's user would hold more than [`KV_MAX_KEYS`] keys.
    Full(i64),
    /// An expectation did not hold: nothing written.
    Conflict(String),
    /// A key or value above the limits.
    TooLarge(String),
    /// Storage failed.
    Failed(String),
}

/// A device as a service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Active now.
    pub active: bool,
    /// Last network address seen.
    pub ip: Option<String>,
    /// Port it listens on for direct transfers, if it said.
    pub port: Option<u16>,
    /// Last seen, in milliseconds since the epoch.
    pub last_seen_ms: u64,
}

/// What the capabilities do, provided by the gateway (the registry and the
/// device inboxes). Called from the plugin's blocking thread.
#[async_trait::async_trait]
pub trait ServiceBackend: Send + Sync + 'static {
    /// One key.
    async fn kv_get(
        &self,
        service: &str,
        user: &str,
        key: &str,
    ) -> Result<Option<KvEntry>, KvFailure>;
    /// Keys by prefix, after `after`.
    async fn kv_scan(
        &self,
        service: &str,
        user: &str,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<KvEntry>, KvFailure>;
    /// `key` of whichever user holds it, with the user's id.
    async fn kv_find(
        &self,
        service: &str,
        key: &str,
    ) -> Result<Option<(String, KvEntry)>, KvFailure>;
    /// An atomic commit.
    async fn kv_commit(
        &self,
        service: &str,
        user: &str,
        writes: Vec<KvWrite>,
    ) -> Result<Vec<u64>, KvFailure>;
    /// The user's devices.
    async fn devices(&self, user: &str) -> Vec<DeviceInfo>;
    /// Events to some of the user's devices.
    async fn publish(
        &self,
        user: &str,
        devices: Vec<String>,
        kind: String,
        payload: String,
    ) -> Result<(), String>;
    /// Sets a timer.
    async fn schedule(&self, service: &str, user: &str, name: &str, at_ms: u64);
    /// Cancels a timer.
    async fn cancel(&self, service: &str, user: &str, name: &str);
    /// Now, in milliseconds (the gateway's clock, injected in tests).
    fn now_ms(&self) -> u64;
    /// A blob of the user's in the service.
    async fn blob(&self, service: &str, user: &str, id: &str) -> Option<BlobInfo>;
    /// Deletes a blob of the user's; whether it existed.
    async fn delete_blob(&self, service: &str, user: &str, id: &str) -> bool;
    /// Queues a media job.
    async fn submit_job(&self, job: NewJob) -> Result<JobInfo, JobError>;
    /// A media job of the user's in the service.
    async fn job(&self, service: &str, user: &str, id: &str) -> Option<JobInfo>;
}

pub use crate::processing::JobError;

/// Where a media job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Its result is (or was) kept.
    Done,
    /// It failed.
    Failed,
}

/// A media job to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The service submitting it.
    pub service: String,
    /// The user it works for.
    pub user: String,
    /// What it does.
    pub kind: String,
    /// The input's id.
    pub input: String,
    /// Its parameters, a JSON object as text.
    pub params: String,
    /// How long its result is kept, in milliseconds.
    pub keep_ms: u64,
    /// The device told when it ends.
    pub device: Option<String>,
}

/// A media job as a service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// Id.
    pub id: String,
    /// What it does.
    pub kind: String,
    /// The input's id.
    pub input: String,
    /// Where it stands.
    pub state: JobState,
    /// The result blob while kept.
    pub result_blob: Option<String>,
    /// The result's media type.
    pub content_type: Option<String>,
    /// The result's size.
    pub size: Option<u64>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Submitted, in milliseconds since the epoch.
    pub created_ms: u64,
    /// Ended.
    pub finished_ms: Option<u64>,
    /// Result kept until.
    pub kept_until_ms: Option<u64>,
    /// Result deleted at.
    pub gone_ms: Option<u64>,
    /// Times a worker started it.
    pub attempts: u32,
}

/// A blob as a service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Upload id.
    pub id: String,
    /// Announced length.
    pub length: u64,
    /// Bytes stored.
    pub offset: u64,
    /// Hex sha256, once complete.
    pub sha256: Option<String>,
}

/// What happened to a blob, as `on-blob` hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobNoticeKind {
    /// A client created an upload (the plugin may refuse it).
    Created,
    /// A request's bytes started to arrive.
    Started,
    /// A request's bytes are stored; more are to come.
    Stored,
    /// A request ended early.
    Interrupted,
    /// Every byte is stored.
    Completed,
    /// Left incomplete past its expiry and removed.
    Expired,
    /// Ended by its uploader.
    Terminated,
    /// A download started.
    DownloadStarted,
    /// A download sent the last byte.
    DownloadDone,
    /// A download broke.
    DownloadBroken,
}

/// One blob event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobNotice {
    /// What happened.
    pub kind: BlobNoticeKind,
    /// The upload.
    pub upload_id: String,
    /// The device acting.
    pub device_id: Option<String>,
    /// Bytes stored (uploads) or where the download starts.
    pub offset: u64,
    /// The blob's length.
    pub length: u64,
    /// The upload's metadata.
    pub metadata: Vec<(String, String)>,
    /// Hex sha256, once complete.
    pub sha256: Option<String>,
}

impl From<BlobNotice> for wit::BlobEvent {
    fn from(n: BlobNotice) -> Self {
        use wit::BlobEventKind as K;
        wit::BlobEvent {
            kind: match n.kind {
                BlobNoticeKind::Created => K::Created,
                BlobNoticeKind::Started => K::Started,
                BlobNoticeKind::Stored => K::Stored,
                BlobNoticeKind::Interrupted => K::Interrupted,
                BlobNoticeKind::Completed => K::Completed,
                BlobNoticeKind::Expired => K::Expired,
                BlobNoticeKind::Terminated => K::Terminated,
                BlobNoticeKind::DownloadStarted => K::DownloadStarted,
                BlobNoticeKind::DownloadDone => K::DownloadDone,
                BlobNoticeKind::DownloadBroken => K::DownloadBroken,
            },
            upload_id: n.upload_id,
            device_id: n.device_id,
            offset: n.offset,
            length: n.length,
            metadata: n.metadata,
            sha256: n.sha256,
        }
    }
}

/// Who a service call acts for, and how its capabilities reach the gateway.
#[derive(Clone)]
pub struct ServiceScope {
    /// The service.
    pub service_id: String,
    /// The user of the call (`None` on a public route).
    pub user_id: Option<String>,
    /// The capabilities' implementation.
    pub backend: Arc<dyn ServiceBackend>,
}

impl CallState {
    /// The current call's service scope (every capability import runs
    /// inside a service call).
    fn scope(&self) -> Option<&ServiceScope> {
        self.service.as_ref()
    }

    /// Runs a capability's future on the gateway's runtime, from the
    /// plugin's blocking thread.
    fn block_on<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        let runtime = self.outbound.runtime.clone()?;
        Some(runtime.block_on(future))
    }
}

/// Links the capabilities in `grants`; an import outside them makes
/// `instantiate_pre` fail, which [`grant_error`] turns into the reason.
pub(super) fn add_granted(
    linker: &mut wasmtime::component::Linker<CallState>,
    grants: &[Capability],
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    gateway::service::config::add_to_linker::<_, HasSelf<_>>(linker, same)?;
    for capability in grants {
        capability.add_to_linker(linker)?;
    }
    Ok(())
}

/// The refusal of a service whose imports the grants do not cover.
pub(super) fn grant_error(error: &wasmtime::Error) -> InvalidPlugin {
    let text = format!("{error:#}");
    let ungranted = Capability::ALL
        .iter()
        .find(|(name, _)| text.contains(&format!("gateway:service/{name}@")));
    match ungranted {
        Some((name, _)) => InvalidPlugin::World(format!(
            "the service imports gateway:service/{name}, which its manifest does not grant \
             (add \"{name}\" to \"grants\"): {text}"
        )),
        None => InvalidPlugin::World(super::wasi::import_error(error)),
    }
}

/// A request routed to a service, as the host passes it.
#[derive(Debug, Clone, Default)]
pub struct ServiceRequest {
    /// Method.
    pub method: String,
    /// Path below `/v1/services/{id}`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// The user and device calling (`None` on a public route).
    pub caller: Option<(String, Option<String>)>,
}

/// A service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The header a plugin names a blob with in an answer (sent in its
/// place), and the gateway tells a plugin the blob a blob route's body
/// became (with `-size` and `-sha256`).
pub const BLOB_HEADER: &str = "gateway-blob";

impl ServiceResponse {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The blob the answer names, if any.
    pub fn named_blob(&self) -> Option<&str> {
        self.header(BLOB_HEADER)
    }
}

impl From<ServiceRequest> for wit::Request {
    fn from(r: ServiceRequest) -> Self {
        wit::Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect(),
            body: r.body,
            caller: r
                .caller
                .map(|(user_id, device_id)| wit::Caller { user_id, device_id }),
        }
    }
}

impl From<wit::Response> for ServiceResponse {
    fn from(r: wit::Response) -> Self {
        ServiceResponse {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }
    }
}

/// A compiled, linked service ready to instantiate.
#[derive(Clone)]
pub struct LoadedService {
    pub(super) pre: ServicePre<CallState>,
    /// Routes answered without a token: (method, path prefix).
    pub public_routes: Vec<(String, String)>,
    /// Routes whose request body is stored as a blob before the call.
    pub blob_routes: Vec<(String, String)>,
}

impl std::fmt::Debug for LoadedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedService")
            .field("public_routes", &self.public_routes)
            .field("blob_routes", &self.blob_routes)
            .finish_non_exhaustive()
    }
}
