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
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod federation;
pub mod host;
pub mod http;
pub mod media;
pub mod metrics;
pub mod modules;
pub mod secrets;

pub use config::{Config, Quota};

use std::future::Future;
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
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish and returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let registry = registry_db::Registry::connect(&config.database_url).await?;
    let host = host::PluginHost::new(config.host_limits.clone())?;
    let connectors = Arc::new(connectors::Connectors::new(
        host,
        registry.clone(),
        config.master_key.clone(),
    ));
    let limits = http::limits::Limiters::new(config.anonymous_quota, config.user_quota)?;
    let metrics = metrics::Metrics::new()?;
    let federation = Arc::new(federation::Federation::new(
        registry.clone(),
        connectors.clone(),
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
    let state = http::AppState::new(http::Shared {
        registry: registry.clone(),
        connectors,
        bindings,
        federation: federation.clone(),
        config,
        limits,
        metrics,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(federation::worker::run(federation, stopped));
    let janitor = tokio::spawn(janitor(state.clone()));
    let app = http::router(state);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Stop claiming at once; pushes in flight finish below.
        let _ = stop.send(true);
    })
    .await;
    let _ = workers.await;
    janitor.abort();
    registry.close().await;
    served?;
    Ok(())
}

/// Periodic housekeeping: expired sessions, idle rate-limit keys.
async fn janitor(state: http::AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.limits.shrink();
        if let Err(e) = state
            .registry
            .purge_expired_sessions(state.config.clock.now())
            .await
        {
            tracing::warn!(error = %e, "expired sessions not purged");
        }
    }
}
