//! `GET /v1/openapi.json`: the OpenAPI document, generated from the handlers'
//! annotations and the DTO types.
//!
//! The error answers an extractor gives are declared once here, as
//! [`IntoResponses`] types a handler lists before its own answers (a later
//! entry for the same status replaces an earlier one, so a handler can give
//! its own description):
//! `responses(UserAuth, JsonBody, (status = 201, body = ...), ...)`.
//! `tests/tests/openapi_truth.rs` checks that the served document keeps them.

use super::{
    bindings, changes, deliveries, devices, error, health, media, modules, services, sessions,
    users,
};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{IntoResponses, Modify, OpenApi};

/// An error answer with the JSON error body.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

fn header(description: &str, kind: Type) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

/// `401` with `WWW-Authenticate: Bearer`.
fn unauthorized(description: &str) -> ResponseBuilder {
    error_response(description).header(
        "WWW-Authenticate",
        header("`Bearer`, on every 401", Type::String),
    )
}

/// `429` with `Retry-After`.
pub fn rate_limited(description: &str) -> RefOr<Response> {
    error_response(description)
        .header(
            "Retry-After",
            header("whole seconds to wait, at least 1", Type::Integer),
        )
        .build()
        .into()
}

fn responses<const N: usize>(
    list: [(u16, RefOr<Response>); N],
) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, response)| (status.to_string(), response))
        .collect()
}

/// What the user session extractor ([`super::extract::AuthUser`]) answers.
pub struct UserAuth;

impl IntoResponses for UserAuth {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                401,
                unauthorized(
                    "missing_token: no Authorization header; invalid_token: not a bearer \
                     token, or an unknown or expired session",
                )
                .build()
                .into(),
            ),
            (
                429,
                rate_limited("rate_limited: the user's request quota (50/s, burst 200 by default)"),
            ),
        ])
    }
}

/// What the admin token extractor ([`super::extract::Admin`]) answers.
pub struct AdminAuth;

impl IntoResponses for AdminAuth {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                401,
                unauthorized(
                    "missing_token: no Authorization header; invalid_token: not a bearer \
                     token, or not the admin token",
                )
                .build()
                .into(),
            ),
            (
                403,
                error_response("forbidden: a user session, not the admin token")
                    .build()
                    .into(),
            ),
            (
                429,
                rate_limited(
                    "rate_limited: the admin token's request quota, or 10 wrong admin tokens \
                     from this client (then one a minute, even the right one)",
                ),
            ),
        ])
    }
}

/// What the per-client limit of registration and login answers.
pub struct ClientLimit;

impl IntoResponses for ClientLimit {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            429,
            rate_limited("rate_limited: the client's request quota (5/s, burst 20 by default)"),
        )])
    }
}

/// What the JSON body extractor ([`super::extract::ApiJson`]) answers.
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                400,
                error_response("malformed_json: the body is not JSON")
                    .build()
                    .into(),
            ),
            (
                413,
                error_response("payload_too_large: above the body limit (10 MiB by default)")
                    .build()
                    .into(),
            ),
            (
                415,
                error_response("unsupported_media_type: the Content-Type is not application/json")
                    .build()
                    .into(),
            ),
            (
                422,
                error_response("invalid_body: wrong JSON types, missing or unknown fields")
                    .build()
                    .into(),
            ),
        ])
    }
}

/// What the query string extractor ([`super::extract::ApiQuery`]) answers.
pub struct QueryString;

impl IntoResponses for QueryString {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            400,
            error_response("invalid_query: a parameter of the wrong type")
                .build()
                .into(),
        )])
    }
}

/// What a route with an `{id}` answers for an id it does not know.
pub struct PathId;

impl IntoResponses for PathId {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                400,
                error_response("bad_request: the id is not UTF-8 once percent-decoded")
                    .build()
                    .into(),
            ),
            (
                404,
                error_response("not_found: no such id (or another user's)")
                    .build()
                    .into(),
            ),
        ])
    }
}

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
        devices::register_device, devices::list_devices, devices::device_history,
        devices::delete_device, devices::device_events,
        media::upload,
        changes::create_change, changes::list_changes, changes::get_change,
        changes::change_events, changes::profile,
        deliveries::dead_letters, deliveries::redrive,
        services::list_services, services::upload_service, services::delete_service,
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
