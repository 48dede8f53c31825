//! The HTTP layer: router, handlers (one module per resource), DTOs and the one
//! error type. It never touches wasmtime or SQL directly.

pub mod bindings;
pub mod blobs;
pub mod changes;
pub mod deliveries;
pub mod devices;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod media;
pub mod modules;
pub mod openapi;
pub mod services;
pub mod sessions;
pub mod streams;
pub mod tus;
pub mod users;
pub mod web;

use crate::bindings::Bindings;
use crate::config::Config;
use crate::connectors::Connectors;
use crate::federation::Federation;
use crate::metrics::Metrics;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use registry_db::{AuditEvent, Registry};
use std::sync::Arc;
use std::time::Instant;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
pub struct Shared {
    /// The registry database.
    pub registry: Registry,
    /// Loaded connector plugins.
    pub connectors: Arc<Connectors>,
    /// The users' application lists.
    pub bindings: Arc<Bindings>,
    /// Uploaded images.
    pub media: Arc<crate::media::MediaLibrary>,
    /// Change reports and their delivery.
    pub federation: Arc<Federation>,
    /// The users' devices and their inboxes.
    pub devices: Arc<crate::devices::Devices>,
    /// Service plugins.
    pub services: Arc<crate::services::Services>,
    /// Blobs of service plugins (tus uploads, ranged reads).
    pub blobs: Arc<crate::blobs::Blobs>,
    /// Media jobs of service plugins, queued durably.
    pub jobs: Arc<crate::processing::jobs::Jobs>,
    /// The process configuration.
    pub config: Config,
    /// Inbound rate limiters.
    pub limits: limits::Limiters,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Turns true when the gateway begins to shut down: event streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Open event streams per user.
    pub streams: Arc<streams::OpenStreams>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

/// Records an audit event; a failure is logged, not returned, because the
/// action itself already happened.
pub async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) {
    let event = AuditEvent {
        at: state.config.clock.now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
    };
    if let Err(e) = state.registry.record_audit(&event).await {
        tracing::warn!(error = %e, action, "audit event not recorded");
    }
}

async fn record_metrics(state: AppState, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .inc();
    response
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The whole API with `extra` routes beside it, behind the same layers
/// (body limit, panic catcher, metrics, JSON errors): benchmarks mount a
/// native handler this way to compare it with a plugin's.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let anonymous = users::router().merge(sessions::login_router()).route_layer(
        middleware::from_fn_with_state(state.clone(), limits::limit_by_ip),
    );
    let metrics_state = state.clone();
    Router::new()
        .merge(anonymous)
        .merge(health::router())
        .merge(sessions::router())
        .merge(modules::router(state.config.max_plugin_bytes))
        .merge(bindings::router())
        .merge(devices::router())
        .merge(services::router(state.config.max_plugin_bytes))
        .merge(changes::router())
        .merge(deliveries::router())
        .merge(media::router(state.config.delivery.max_media_bytes))
        .merge(openapi::router())
        .merge(web::router())
        .merge(extra)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(middleware::from_fn(move |req, next| {
            record_metrics(metrics_state.clone(), req, next)
        }))
        .layer(middleware::from_fn(error::json_errors))
}
