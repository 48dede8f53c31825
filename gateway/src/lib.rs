//! # gateway
//!
//! The presence and settings federation gateway: users bind IM accounts once,
//! a monitor app reports a change made on one network, and the gateway pushes
//! it to every other bound network through WebAssembly connector plugins.
//!
//! Along the data's way: [`config`] (what a process runs with), [`http`]
//! (router, handlers, DTOs, the one error type), [`host`] (the wasmtime plugin
//! host; knows nothing of HTTP), [`registry_db`] underneath for storage.
//! [`run`] is the entry point used by `main` and by the tests. The wire
//! types live in `gateway-api`, shared with the `monitor` app.

pub mod accounts;
pub mod bindings;
pub mod blobs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod devices;
pub mod federation;
pub mod host;
pub mod http;
pub mod media;
pub mod metrics;
pub mod modules;
pub mod notices;
pub mod processing;
pub mod rate_limit;
pub mod secrets;
pub mod services;
pub mod text;
pub mod throttle;

pub use config::{Config, Quota};

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The registry database could not be opened or migrated.
    #[error("registry database: {0}")]
    Registry(#[from] registry_db::RegistryError),
    /// The plugin host could not be created.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// A rate-limit quota in the configuration is zero.
    #[error(transparent)]
    Quota(#[from] http::limits::ZeroQuota),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A service given to install at start is refused.
    #[error("bundled service {source_path}: {error}")]
    BundledService {
        /// Where its manifest and plugin were read from.
        source_path: String,
        /// Why it was refused.
        error: services::ServiceError,
    },
    /// A connector given to install at start is refused.
    #[error("bundled module {source_path}: {error}")]
    BundledModule {
        /// Where its manifest and plugin were read from.
        source_path: String,
        /// Why it was refused.
        error: connectors::ConnectorsError,
    },
    /// The blob store cannot be opened.
    #[error(transparent)]
    BlobStore(#[from] blobs::store::StoreError),
    /// The master key does not open the data the database already holds
    /// sealed: another key sealed it. Every delivery would fail, so the
    /// gateway does not start.
    #[error(
        "master key mismatch: this database holds credentials and module config sealed with \
         another master key (a node with its own data dir, or a master-key file that was lost \
         and generated anew), so this node could not decrypt them and every delivery would \
         fail; refusing to start. Start it with the original key: set GATEWAY_MASTER_KEY to \
         it, or put it into {}. Every node sharing one database needs the same key",
        .key_file.display()
    )]
    MasterKeyMismatch {
        /// Where this node looks for its key when GATEWAY_MASTER_KEY is unset.
        key_file: std::path::PathBuf,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// The gateway's parts wired together (registry, plugin host, domain
/// services, the HTTP state), not yet serving nor working in the
/// background: what [`run`] serves, and what a benchmark mounts routes of
/// its own beside ([`http::router_with`]).
pub struct Assembly {
    /// The HTTP layer's state (every domain service in it).
    pub state: http::AppState,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Assembly {
    /// Tells the background work and the event streams to stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Checks `config`, opens the registry (refusing a master key other than
/// the one its data is sealed with) and wires the gateway's parts.
pub async fn assemble(config: Config) -> Result<Assembly, RunError> {
    config.check()?;
    let registry =
        registry_db::Registry::connect_with(&config.database_url, config.database_connections)
            .await?;
    // A key other than the one the stored data is sealed with would fail
    // every delivery this node claims, for good: refuse to start instead.
    match secrets::check_master_key(&config.master_key, &registry, config.clock.now()).await {
        Ok(secrets::KeyCheck::Verified) => {}
        Ok(first) => tracing::info!(check = ?first, "master key check value stored"),
        Err(e) => {
            registry.close().await;
            return Err(match e {
                secrets::KeyCheckError::Mismatch => RunError::MasterKeyMismatch {
                    key_file: config.data_dir.join("master-key"),
                },
                secrets::KeyCheckError::Registry(e) => RunError::Registry(e),
            });
        }
    }
    let host = host::PluginHost::new(config.host_limits.clone())?;
    let connectors = Arc::new(connectors::Connectors::new(
        host.clone(),
        registry.clone(),
        config.master_key.clone(),
    ));
    let limits = http::limits::Limiters::new(
        config.anonymous_quota,
        config.user_quota,
        config.trusted_proxies.clone(),
    )?;
    let metrics = metrics::Metrics::new()?;
    let media = Arc::new(media::MediaLibrary::new(
        registry.clone(),
        config.clock.clone(),
        metrics.clone(),
        config.media.clone(),
    ));
    let federation = Arc::new(federation::Federation::new(
        registry.clone(),
        connectors.clone(),
        media.clone(),
        config.master_key.clone(),
        config.delivery.clone(),
        metrics.clone(),
        config.clock.clone(),
    ));
    let bindings = Arc::new(bindings::Bindings::new(
        registry.clone(),
        connectors.clone(),
        config.master_key.clone(),
        config.clock.clone(),
    ));
    let devices = Arc::new(devices::Devices::new(
        registry.clone(),
        config.clock.clone(),
        config.devices.clone(),
    ));
    let blob_store = blobs::store::open(config.blob_store.as_deref(), &config.data_dir)?;
    let blobs = Arc::new(blobs::Blobs::new(
        registry.clone(),
        blob_store,
        config.blobs.clone(),
        config.clock.clone(),
    ));
    let jobs = Arc::new(processing::jobs::Jobs::new(
        registry.clone(),
        blobs.clone(),
        devices.clone(),
        config.clock.clone(),
        config.jobs.clone(),
    ));
    let services = Arc::new(services::Services::new(
        host,
        registry.clone(),
        devices.clone(),
        blobs.clone(),
        jobs.clone(),
        config.clock.clone(),
    ));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let state = http::AppState::new(http::Shared {
        devices,
        services,
        blobs,
        jobs,
        registry,
        connectors,
        bindings,
        media,
        federation,
        config,
        limits,
        metrics,
        stopping,
        streams: Default::default(),
    });
    Ok(Assembly { state, stop })
}

/// Says what became of a plugin given to install at start: its new
/// version, or that the same plugin was installed already.
fn log_bundled(kind: &str, source: &str, installed: Option<(String, i64)>) {
    match installed {
        Some((id, version)) => tracing::info!(%id, version, source, "bundled {kind} installed"),
        None => tracing::info!(source, "bundled {kind} already installed"),
    }
}

/// Serves the gateway on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish and returns.
pub async fn run(
    mut config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // The plugins' bytes are needed once: they do not stay in the shared config.
    let bundles = std::mem::take(&mut config.bundled_services);
    let modules = std::mem::take(&mut config.bundled_modules);
    let Assembly { state, stop } = assemble(config).await?;
    for bundle in modules {
        let installed = state
            .connectors
            .ensure(&bundle.manifest, bundle.plugin, state.config.clock.now())
            .await
            .map_err(|error| RunError::BundledModule {
                source_path: bundle.source.clone(),
                error,
            })?;
        log_bundled(
            "module",
            &bundle.source,
            installed.map(|m| (m.id, m.version)),
        );
    }
    for bundle in bundles {
        let installed = state
            .services
            .ensure(&bundle.manifest, bundle.plugin, state.config.clock.now())
            .await
            .map_err(|error| RunError::BundledService {
                source_path: bundle.source.clone(),
                error,
            })?;
        log_bundled(
            "service",
            &bundle.source,
            installed.map(|s| (s.id, s.version)),
        );
    }
    let stopping = state.stopping.clone();
    let (federation, devices, services, jobs, registry) = (
        state.federation.clone(),
        state.devices.clone(),
        state.services.clone(),
        state.jobs.clone(),
        state.registry.clone(),
    );
    let media_jobs = tokio::spawn(jobs.run(services.clone(), stopping.clone()));
    let notices = {
        let federation = federation.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move { federation.relay_notices(stopping).await })
    };
    let device_notices = {
        let devices = devices.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move { devices.relay_notices(stopping).await })
    };
    let timers = {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            services
                .run_timers(Duration::from_millis(250), stopping)
                .await
        })
    };
    let workers = tokio::spawn(federation::worker::run(federation, stopping.clone()));
    let janitor = tokio::spawn(janitor(state.clone()));
    let app = http::router(state);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Stop claiming at once and end event streams; requests and pushes
        // in flight finish below.
        let _ = stop.send(true);
    })
    .into_future();
    // In-flight requests get a grace period, not forever: a client that
    // keeps a connection busy cannot hold the process.
    let served = tokio::select! {
        served = served => served,
        () = grace_after(stopping, SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running {SHUTDOWN_GRACE:?} after shutdown began; stopping anyway");
            Ok(())
        }
    };
    let _ = workers.await;
    let _ = notices.await;
    let _ = device_notices.await;
    let _ = timers.await;
    let _ = media_jobs.await;
    janitor.abort();
    registry.close().await;
    served?;
    Ok(())
}

/// How long in-flight requests may run once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Completes `grace` after `stopping` turns true.
async fn grace_after(mut stopping: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        // The sender is gone without a stop: never complete.
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
}

/// Periodic housekeeping: expired sessions, idle rate-limit keys, images
/// nothing needs any more, uploads whose time to resume ran out.
async fn janitor(state: http::AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut devices = tokio::time::interval(state.devices.limits().tidy_every);
    let mut blobs = tokio::time::interval(state.blobs.limits().sweep_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = devices.tick() => {
                state.devices.tidy().await;
                continue;
            }
            _ = blobs.tick() => {
                match state.jobs.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "media job results past their keep time deleted"),
                    Err(e) => tracing::warn!(error = %e, "media job results not swept"),
                }
                match state.blobs.sweep().await {
                    Ok(gone) => {
                        if !gone.is_empty() {
                            tracing::info!(removed = gone.len(), "expired uploads removed");
                        }
                        for upload in gone {
                            let notice = blobs::notice(host::service::BlobNoticeKind::Expired, &upload, None);
                            let _ = state.services.blob_event(&upload.service_id, &upload.user_id, notice).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "expired uploads not removed"),
                }
                continue;
            }
        }
        state.limits.shrink();
        state.bindings.shrink();
        if let Err(e) = state
            .registry
            .purge_expired_sessions(state.config.clock.now())
            .await
        {
            tracing::warn!(error = %e, "expired sessions not purged");
        }
        match state.media.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "unused images purged"),
            Err(e) => tracing::warn!(error = %e, "unused images not purged"),
        }
    }
}
