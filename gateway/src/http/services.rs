//! Plugin-hosted services: `GET /v1/services`,
//! `POST/DELETE /v1/admin/services`, and `/v1/services/{id}/...` routed to
//! the service plugin after the caller is authenticated (user or device
//! token), except on the routes the service declares public.

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, AuthUser};
use super::modules::manifest_and_plugin;
use super::openapi::{AdminAuth, PathId};
use super::{audit, AppState};
use crate::host::service::{Capability, ServiceRequest};
use crate::host::CallError;
use crate::services::{ServiceError, ServiceManifest, ServiceManifestExt};
use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Multipart, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use gateway_api::{ServiceList, ServiceView};
use serde_json::json;
use utoipa::ToSchema;

/// Largest request body passed to a service.
const MAX_SERVICE_BODY: usize = 1 << 20;

/// Routes of this resource.
pub fn router(max_plugin_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(list_services))
        .route(
            "/v1/admin/services",
            post(upload_service).layer(DefaultBodyLimit::max(max_plugin_bytes)),
        )
        .route("/v1/admin/services/{id}", delete(delete_service))
        .route("/v1/services/{id}", any(route_to_service))
        .route("/v1/services/{id}/{*rest}", any(route_to_service))
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Manifest(_) | ServiceError::ManifestShape(_) => {
                ApiError::unprocessable("invalid_manifest", message)
            }
            ServiceError::Invalid(_) => ApiError::unprocessable("invalid_plugin", message),
            ServiceError::Unknown(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_service", message)
            }
            ServiceError::Call(call) => {
                // The plugin's own words (a panic message) stay in the log.
                tracing::warn!("{message}");
                match call {
                    CallError::Timeout(ms) => ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "service_timeout",
                        format!("the service did not answer within its {ms} ms deadline"),
                    ),
                    CallError::MemoryLimit(bytes) => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "service_failed",
                        format!(
                            "the service needed more than its {} MiB of memory",
                            bytes >> 20
                        ),
                    ),
                    CallError::Trap(_) => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "service_failed",
                        "the service crashed (its operator's log has the details)",
                    ),
                    _ => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "service_failed",
                        "the service failed; try again",
                    ),
                }
            }
            ServiceError::Registry(e) => e.into(),
            ServiceError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

fn view(row: &registry_db::ServiceRow) -> ServiceView {
    ServiceView {
        id: row.id.clone(),
        name: row.name.clone(),
        version: row.version,
    }
}

/// The installed services.
#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, body = ServiceList)))]
pub async fn list_services(State(state): State<AppState>) -> Result<Json<ServiceList>, ApiError> {
    let services = state.services.list().await?;
    Ok(Json(ServiceList {
        services: services.iter().map(view).collect(),
    }))
}

/// Multipart upload: a `manifest` JSON part and a `plugin` part (a
/// component of the SDK's service world), no other part.
#[derive(Debug, ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ServiceUpload {
    /// The manifest JSON.
    manifest: ServiceManifest,
    /// The WebAssembly component.
    #[schema(value_type = String, format = Binary)]
    plugin: Vec<u8>,
}

/// Installs a service plugin or replaces it (new version, no restart).
#[utoipa::path(post, path = "/v1/admin/services", tag = "admin",
    security(("bearer" = [])),
    request_body(content = ServiceUpload, content_type = "multipart/form-data"),
    responses(
        AdminAuth,
        (status = 201, body = ServiceView),
        (status = 400, description = "invalid_multipart: a malformed multipart body", body = ErrorBody),
        (status = 413, description = "payload_too_large: above the plugin upload limit \
            (64 MiB by default)", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: not multipart/form-data", body = ErrorBody),
        (status = 422, description = "invalid_manifest (missing, not JSON, a rule broken, an \
            unknown grant), invalid_plugin (missing, not a component, not the service world, \
            an import whose capability the manifest does not grant, does not compile), \
            invalid_multipart (another part name)", body = ErrorBody)))]
pub async fn upload_service(
    State(state): State<AppState>,
    _admin: Admin,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let (manifest, plugin) = manifest_and_plugin(multipart).await?;
    let (manifest, capabilities) = ServiceManifest::parse(&manifest)?;
    let row = state
        .services
        .install(manifest, capabilities, plugin, state.config.clock.now())
        .await?;
    audit(
        &state,
        "admin",
        "service.upload",
        &row.id,
        json!({"version": row.version, "plugin_sha256": row.plugin_digest}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view(&row))))
}

/// Removes a service (its users' data stays until it is uploaded again).
#[utoipa::path(delete, path = "/v1/admin/services/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "service id")),
    responses(AdminAuth, PathId,
        (status = 404, description = "unknown_service: not installed", body = ErrorBody),
        (status = 204, description = "removed")))]
pub async fn delete_service(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.services.remove(&id, state.config.clock.now()).await?;
    audit(&state, "admin", "service.delete", &id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes a request to its service plugin.
pub async fn route_to_service(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let rest = path.strip_prefix("/v1/services/").unwrap_or_default();
    let (id, below) = match rest.split_once('/') {
        Some((id, below)) => (id.to_owned(), format!("/{below}")),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let method = parts.method.as_str().to_owned();
    let service = state.services.mounted(&id).await?;
    let blobs = service.grants(Capability::Blobs);
    if blobs && super::tus::is_tus_path(&below) {
        return Ok(super::tus::handle(&state, &id, &below, parts, body).await);
    }
    let caller = if service.is_public(&method, &below) {
        None
    } else {
        let auth = AuthUser::from_request_parts(&mut parts, &state).await?;
        Some((auth.user.id, auth.device_id))
    };
    let owner = caller.clone().map(|(user, device)| crate::blobs::Owner {
        service: id.clone(),
        user,
        device,
    });
    // The caller's own headers, without the token and without anything
    // that could pass for the gateway's word on a blob.
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            *name != axum::http::header::AUTHORIZATION
                && !name.as_str().starts_with(super::blobs::BLOB_HEADER)
        })
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // A blob route's body becomes a blob first; the plugin hears its id.
    let (stored, body) = match &owner {
        Some(owner) if service.is_blob_route(&method, &below) => {
            let blob =
                super::blobs::store_body(&state, owner, &parts.headers, Body::new(body)).await?;
            headers.extend(super::blobs::stored_headers(&blob));
            (Some(blob.id), Vec::new())
        }
        _ => {
            let body = to_bytes(Body::new(body), MAX_SERVICE_BODY)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("service requests are at most {MAX_SERVICE_BODY} bytes"),
                    )
                })?;
            (None, body.to_vec())
        }
    };
    let request = ServiceRequest {
        method,
        path: below,
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
        caller: caller.clone(),
    };
    let answer = state.services.call(service, request).await;
    // A stored body the plugin did not take is not kept.
    if let (Some(blob), Some(owner)) = (&stored, &owner) {
        if !answer
            .as_ref()
            .is_ok_and(|a| (200..300).contains(&a.status))
        {
            let _ = state.blobs.delete(owner, blob).await;
        }
    }
    let answer = answer?;
    // A blob the answer names is sent in its place (grant `blobs`).
    if let (true, Some(blob)) = (blobs, answer.named_blob().map(str::to_owned)) {
        // On a public route the plugin names a blob of one of its users.
        let owner = match owner {
            Some(owner) => owner,
            None => state.blobs.owner_of(&id, &blob).await.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "service_failed",
                    "the service named a file that is not stored",
                )
            })?,
        };
        return super::blobs::download(&state, owner, &blob, &parts.headers, answer).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
