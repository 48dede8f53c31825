//! `GET /v1/openapi.json`: the OpenAPI document, generated from the handlers'
//! annotations and the DTO types.

use super::{bindings, changes, deliveries, error, health, media, modules, sessions, users};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Presence and settings federation gateway", version = "1"),
    paths(
        health::healthz, health::readyz, health::metrics,
        users::create_user,
        sessions::create_session, sessions::delete_session,
        modules::list_modules, modules::upload_module, modules::delete_module,
        bindings::create_binding, bindings::list_bindings, bindings::delete_binding,
        bindings::current_settings,
        media::upload,
        changes::create_change, changes::list_changes, changes::get_change,
        changes::change_events, changes::profile,
        deliveries::dead_letters, deliveries::redrive,
    ),
    components(schemas(
        error::ErrorBody, gateway_api::Manifest, gateway_api::RateLimit,
        gateway_api::DoneEvent, gateway_api::StreamError,
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The generated document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Routes of this resource.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let doc = document();
    Router::new().route("/v1/openapi.json", get(move || async move { Json(doc) }))
}
