//! The supported-module library (S2): `GET /v1/modules` for everyone,
//! `POST/DELETE /v1/admin/modules` for operators.

use super::error::{ApiError, ErrorBody};
use super::extract::Admin;
use super::openapi::{AdminAuth, PathId};
use super::{audit, AppState};
use crate::connectors::ConnectorsError;
use crate::host::{SettingField, SettingKind};
use crate::modules::{Manifest, ManifestExt};
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use gateway_api::{CredentialField, ModuleList, ModuleView};
use registry_db::RegistryError;
use utoipa::ToSchema;

/// Routes of this resource.
pub fn router(max_plugin_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/modules", get(list_modules))
        .route(
            "/v1/admin/modules",
            post(upload_module).layer(DefaultBodyLimit::max(max_plugin_bytes)),
        )
        .route("/v1/admin/modules/{id}", delete(delete_module))
}

/// A module as clients see it (no grants, no config).
pub fn module_view(m: &registry_db::Module) -> ModuleView {
    let described = |key: &str| m.description.as_ref().and_then(|d| d.get(key)).cloned();
    ModuleView {
        id: m.id.clone(),
        name: m.name.clone(),
        version: m.version,
        fields: described("fields")
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default(),
        limits: described("limits").unwrap_or_else(|| serde_json::json!({})),
        moods: described("moods")
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default(),
        detect: m
            .manifest
            .get("detect")
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default(),
        credentials: described("credentials")
            .and_then(|f| serde_json::from_value::<Vec<SettingField>>(f).ok())
            .map(|fields| fields.into_iter().map(credential_field).collect()),
    }
}

fn credential_field(f: SettingField) -> CredentialField {
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|k| k.as_str().map(str::to_owned))
        .unwrap_or_default();
    CredentialField {
        name: f.name,
        label: f.label,
        secret: f.kind == SettingKind::Secret,
        kind,
        required: f.required,
        help: f.help,
    }
}

/// Lists the supported modules.
#[utoipa::path(get, path = "/v1/modules", tag = "modules", responses((status = 200, body = ModuleList)))]
pub async fn list_modules(State(state): State<AppState>) -> Result<Json<ModuleList>, ApiError> {
    let modules = state.registry.list_modules(false).await?;
    Ok(Json(ModuleList {
        modules: modules.iter().map(module_view).collect(),
    }))
}

/// Multipart upload: a `manifest` JSON part and a `plugin` part (.wasm
/// component), no other part. (Read part by part by the handler; the serde
/// attribute only tells the document that other parts are refused.)
#[derive(Debug, ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ModuleUpload {
    /// The manifest JSON.
    manifest: Manifest,
    /// The WebAssembly component.
    #[schema(value_type = String, format = Binary)]
    plugin: Vec<u8>,
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "invalid_multipart"
    };
    ApiError::new(status, code, e.body_text())
}

/// The `manifest` and `plugin` parts of an upload (of a module or a
/// service), with the errors both document.
pub(super) async fn manifest_and_plugin(
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(String, Vec<u8>), ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected multipart/form-data with parts 'manifest' and 'plugin': {}",
                rejection.body_text()
            ),
        )
    })?;
    let (mut manifest_text, mut plugin) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("manifest") => manifest_text = Some(field.text().await.map_err(multipart_error)?),
            Some("plugin") => plugin = Some(field.bytes().await.map_err(multipart_error)?.to_vec()),
            other => {
                return Err(ApiError::unprocessable(
                    "invalid_multipart",
                    format!("unexpected part {other:?}; expected 'manifest' and 'plugin'"),
                ))
            }
        }
    }
    let manifest_text = manifest_text.ok_or_else(|| {
        ApiError::unprocessable("invalid_manifest", "the 'manifest' part is missing")
    })?;
    let plugin = plugin
        .ok_or_else(|| ApiError::unprocessable("invalid_plugin", "the 'plugin' part is missing"))?;
    Ok((manifest_text, plugin))
}

/// Registers a module or replaces its connector (new version, no restart).
#[utoipa::path(post, path = "/v1/admin/modules", tag = "admin",
    security(("bearer" = [])),
    request_body(content = ModuleUpload, content_type = "multipart/form-data"),
    responses(
        AdminAuth,
        (status = 201, body = ModuleView),
        (status = 400, description = "invalid_multipart: a malformed multipart body", body = ErrorBody),
        (status = 413, description = "payload_too_large: above the plugin upload limit \
            (64 MiB by default)", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: not multipart/form-data", body = ErrorBody),
        (status = 422, description = "invalid_manifest (missing, not JSON, a rule broken, or a \
            config field the connector declares missing, undeclared or of the wrong kind), \
            invalid_plugin (missing, not a component, wrong world or ABI version, does not \
            compile), invalid_multipart (another part name)", body = ErrorBody)))]
pub async fn upload_module(
    State(state): State<AppState>,
    _admin: Admin,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<ModuleView>), ApiError> {
    let (manifest_text, plugin) = manifest_and_plugin(multipart).await?;
    let manifest = Manifest::parse(&manifest_text)
        .map_err(|e| ApiError::unprocessable("invalid_manifest", e.to_string()))?;

    let module = match state
        .connectors
        .install(manifest, plugin, state.config.clock.now())
        .await
    {
        Ok(module) => module,
        Err(ConnectorsError::Invalid(e)) => {
            return Err(ApiError::unprocessable("invalid_plugin", e.to_string()))
        }
        Err(e @ ConnectorsError::Config(_)) => {
            return Err(ApiError::unprocessable("invalid_manifest", e.to_string()))
        }
        Err(ConnectorsError::Registry(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    audit(
        &state,
        "admin",
        "module.upload",
        &module.id,
        serde_json::json!({"version": module.version, "plugin_sha256": module.plugin_digest}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(module_view(&module))))
}

/// Removes a module from the library; its bindings stay but receive nothing.
#[utoipa::path(delete, path = "/v1/admin/modules/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "module id")),
    responses(AdminAuth, PathId, (status = 204, description = "removed")))]
pub async fn delete_module(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .registry
        .disable_module(&id, state.config.clock.now())
        .await
    {
        Ok(()) => {}
        Err(RegistryError::NotFound) => {
            return Err(ApiError::not_found(&format!("supported module {id:?}")))
        }
        Err(e) => return Err(e.into()),
    }
    state.connectors.forget(&id);
    audit(&state, "admin", "module.delete", &id, serde_json::json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}
