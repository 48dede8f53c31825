//! The user's application list (S3): `POST/GET /v1/bindings`,
//! `DELETE /v1/bindings/{id}`.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use super::sessions::rfc3339;
use super::{audit, AppState};
use crate::bindings::{BindingError, NewAccount};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use gateway_api::{AvatarView, BindingList, BindingView, CurrentSettings, NewBindingRequest};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/bindings", get(list_bindings).post(create_binding))
        .route("/v1/bindings/{id}", delete(delete_binding))
        .route("/v1/bindings/{id}/settings", get(current_settings))
}

/// A binding as its owner sees it.
fn view(b: registry_db::Binding, with_last_applied: bool) -> BindingView {
    BindingView {
        id: b.id,
        module: b.module_id,
        account: b.account,
        created_at: rfc3339(b.created_at),
        last_applied: with_last_applied.then_some(b.last_applied),
    }
}

impl From<BindingError> for ApiError {
    fn from(e: BindingError) -> Self {
        let message = e.to_string();
        match e {
            BindingError::Unsupported { .. } => {
                ApiError::unprocessable("unsupported_module", message)
            }
            BindingError::InvalidAccount => ApiError::unprocessable("invalid_account", message),
            BindingError::CredentialFields(_) => ApiError::unprocessable("invalid_body", message),
            BindingError::InvalidCredentials(_) => {
                ApiError::unprocessable("invalid_credentials", message)
            }
            BindingError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_bindings", message)
            }
            BindingError::AlreadyBound { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_bound", message)
            }
            BindingError::AccountTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, "account_taken", message)
            }
            BindingError::NotFound => ApiError::not_found("binding"),
            BindingError::FetchUnsupported { .. } => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "fetch_unsupported", message)
            }
            BindingError::ModuleBusy { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "module_unavailable",
                message,
            ),
            BindingError::ModuleMisconfigured { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "module_misconfigured",
                message,
            ),
            BindingError::ModuleUnavailable(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "module_unavailable", message)
            }
            BindingError::Throttled(throttled) => {
                ApiError::rate_limited(crate::throttle::retry_after_secs(throttled.0))
                    .with_message(message)
            }
            BindingError::Internal(cause) => ApiError::internal(cause),
            BindingError::Registry(e) => e.into(),
        }
    }
}

/// Binds an IM account to the user.
#[utoipa::path(post, path = "/v1/bindings", tag = "bindings", security(("bearer" = [])),
    request_body = NewBindingRequest, responses(
        super::openapi::UserAuth, super::openapi::JsonBody,
        (status = 201, body = BindingView),
        (status = 409, description = "already_bound, account_taken (another user holds this account; said only after the credentials were checked), too_many_bindings (64 per user)", body = ErrorBody),
        (status = 422, description = "unsupported_module, invalid_account, invalid_credentials, invalid_body (wrong JSON types, missing or unknown fields)", body = ErrorBody),
        (status = 429, description = "rate_limited: the user's request quota, or too many refused credential checks of this account or this user", body = ErrorBody,
            headers(("Retry-After" = u64, description = "whole seconds to wait, at least 1"))),
        (status = 502, description = "module_unavailable: the network or its connector failed", body = ErrorBody),
        (status = 503, description = "module_unavailable (the network asks to wait), \
            module_misconfigured (the module is not set up correctly: the operator's to fix)",
            body = ErrorBody)))]
pub async fn create_binding(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<NewBindingRequest>,
) -> Result<(StatusCode, Json<BindingView>), ApiError> {
    let new = NewAccount {
        module: &body.module,
        account: &body.account,
        credentials: body.credentials.expose(),
    };
    let binding = state.bindings.bind(&auth.user.id, new).await?;
    audit(
        &state,
        &format!("user:{}", auth.user.id),
        "binding.create",
        &binding.id,
        serde_json::json!({"module": binding.module_id, "account": binding.account}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view(binding, false))))
}

/// The user's bindings.
#[utoipa::path(get, path = "/v1/bindings", tag = "bindings", security(("bearer" = [])),
    responses(super::openapi::UserAuth, (status = 200, body = BindingList)))]
pub async fn list_bindings(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<BindingList>, ApiError> {
    let bindings = state.bindings.list(&auth.user.id).await?;
    Ok(Json(BindingList {
        bindings: bindings.into_iter().map(|b| view(b, true)).collect(),
    }))
}

/// Unbinds an account.
#[utoipa::path(delete, path = "/v1/bindings/{id}", tag = "bindings", security(("bearer" = [])),
    params(("id" = String, Path, description = "binding id")),
    responses(super::openapi::UserAuth, super::openapi::PathId,
        (status = 204, description = "unbound")))]
pub async fn delete_binding(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.bindings.unbind(&auth.user.id, &id).await?;
    audit(
        &state,
        &format!("user:{}", auth.user.id),
        "binding.delete",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads an account's current settings from its network (connector
/// `fetch`), for a monitor that polls instead of watching the IM client.
#[utoipa::path(get, path = "/v1/bindings/{id}/settings", tag = "bindings",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "binding id")),
    responses(super::openapi::UserAuth, super::openapi::PathId,
        (status = 200, body = CurrentSettings),
        (status = 422, description = "invalid_credentials, unsupported_module", body = ErrorBody),
        (status = 501, description = "fetch_unsupported: the connector cannot read settings back",
            body = ErrorBody),
        (status = 502, description = "module_unavailable", body = ErrorBody),
        (status = 503, description = "module_unavailable (the network asks to wait), \
            module_misconfigured (the module is not set up correctly: the operator's to fix)",
            body = ErrorBody)))]
pub async fn current_settings(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<CurrentSettings>, ApiError> {
    let current = state.bindings.current_settings(&auth.user.id, &id).await?;
    let settings = current.settings;
    // Kept as a media of the user (deduplicated by digest), so the monitor
    // can report an avatar changed on the network.
    let media_id = match &settings.avatar {
        Some(image) => state
            .media
            .upload(&auth.user.id, &image.content_type, image.data.clone())
            .await
            .map(|m| m.id)
            .map_err(|e| tracing::debug!(error = %e, "a fetched avatar was not kept as media"))
            .ok(),
        None => None,
    };
    Ok(Json(CurrentSettings {
        binding_id: current.binding.id,
        module: current.binding.module_id,
        account: current.binding.account,
        signature: settings.signature,
        mood: settings.mood,
        avatar: settings.avatar.map(|image| AvatarView {
            content_type: image.content_type,
            bytes: image.data.len(),
            sha256: crate::secrets::sha256_hex(&image.data),
            media_id,
        }),
        applied_by_gateway: current.applied_by_gateway,
    }))
}
