//! The user's application list (S3): `POST/GET /v1/bindings`,
//! `DELETE /v1/bindings/{id}`.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use super::sessions::rfc3339;
use super::{audit, AppState};
use crate::connectors::ConnectorsError;
use crate::host::CallError;
use crate::secrets::Secret;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use registry_db::{NewBinding, RegistryError, SealedCredentials};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/bindings", get(list_bindings).post(create_binding))
        .route("/v1/bindings/{id}", delete(delete_binding))
        .route("/v1/bindings/{id}/settings", get(current_settings))
}

/// Longest account login accepted.
const MAX_ACCOUNT_BYTES: usize = 320;
/// Largest credentials object accepted (serialized).
const MAX_CREDENTIALS_BYTES: usize = 16 * 1024;

/// A binding request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBindingRequest {
    /// A supported module id.
    pub module: String,
    /// The account login on that network, e.g. `@alice:example.org`.
    pub account: String,
    /// Credentials for that account, e.g. `{"password": "..."}`. Never returned.
    #[schema(value_type = Object)]
    pub credentials: Secret<Map<String, Value>>,
}

/// A binding as its owner sees it (never with credentials).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BindingView {
    /// Opaque id.
    pub id: String,
    /// Module id.
    pub module: String,
    /// Account login.
    pub account: String,
    /// RFC 3339.
    pub created_at: String,
    /// Settings the gateway last applied to this account (absent in the create answer).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub last_applied: Option<Option<Value>>,
}

/// The user's application list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BindingList {
    /// Bindings, oldest first.
    pub bindings: Vec<BindingView>,
}

fn view(b: registry_db::Binding, with_last_applied: bool) -> BindingView {
    BindingView {
        id: b.id,
        module: b.module_id,
        account: b.account,
        created_at: rfc3339(b.created_at),
        last_applied: with_last_applied.then_some(b.last_applied),
    }
}

async fn unsupported(state: &AppState, module: &str) -> ApiError {
    let supported = match state.registry.list_modules(false).await {
        Ok(list) if !list.is_empty() => list
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
            .join(", "),
        Ok(_) => "none yet".to_owned(),
        Err(_) => "unknown (registry unavailable)".to_owned(),
    };
    ApiError::unprocessable(
        "unsupported_module",
        format!("module {module:?} is not supported; supported modules: {supported}"),
    )
}

/// Asks the module's connector whether the credentials work.
async fn check_credentials(
    state: &AppState,
    module: &str,
    account: &str,
    credentials: &[u8],
) -> Result<(), ApiError> {
    let json = String::from_utf8_lossy(credentials).into_owned();
    match state.connectors.verify(module, account, json).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(CallError::AuthFailed(why) | CallError::Rejected(why))) => {
            Err(ApiError::unprocessable(
                "invalid_credentials",
                format!("the {module} server refused these credentials: {why}"),
            ))
        }
        Ok(Err(CallError::RateLimited(secs))) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "module_unavailable",
            format!("the {module} server asks to wait {secs} s before checking credentials"),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "module_unavailable",
            format!("could not check the credentials with {module}: {e}"),
        )),
        Err(ConnectorsError::Unsupported(_)) => Err(unsupported(state, module).await),
        Err(ConnectorsError::Registry(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Binds an IM account to the user.
#[utoipa::path(post, path = "/v1/bindings", tag = "bindings", security(("bearer" = [])),
    request_body = NewBindingRequest, responses(
        (status = 201, body = BindingView),
        (status = 401, body = ErrorBody),
        (status = 409, description = "already_bound", body = ErrorBody),
        (status = 422, description = "unsupported_module, invalid_account, invalid_credentials", body = ErrorBody)))]
pub async fn create_binding(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<NewBindingRequest>,
) -> Result<(StatusCode, Json<BindingView>), ApiError> {
    match state.registry.module(&body.module).await {
        Ok(m) if m.enabled => {}
        Ok(_) | Err(RegistryError::NotFound) => return Err(unsupported(&state, &body.module).await),
        Err(e) => return Err(e.into()),
    }
    let account = body.account.trim();
    if account.is_empty()
        || account.len() > MAX_ACCOUNT_BYTES
        || account.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "invalid_account",
            format!("the account is 1-{MAX_ACCOUNT_BYTES} bytes without control characters"),
        ));
    }
    let plaintext = serde_json::to_vec(body.credentials.expose()).map_err(ApiError::internal)?;
    if plaintext.len() > MAX_CREDENTIALS_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_credentials",
            format!("credentials are at most {MAX_CREDENTIALS_BYTES} bytes"),
        ));
    }
    check_credentials(&state, &body.module, account, &plaintext).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = state.config.master_key.seal(
        &plaintext,
        crate::secrets::credentials_context(&id, &auth.user.id).as_bytes(),
    );
    let new = NewBinding {
        id,
        user_id: auth.user.id.clone(),
        module_id: body.module.clone(),
        account: account.to_owned(),
        credentials: SealedCredentials(sealed),
    };
    let binding = match state.registry.create_binding(new, chrono::Utc::now()).await {
        Ok(b) => b,
        Err(RegistryError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_bound",
                format!("{} account {account:?} is already bound", body.module),
            ))
        }
        Err(e) => return Err(e.into()),
    };
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
    responses((status = 200, body = BindingList), (status = 401, body = ErrorBody)))]
pub async fn list_bindings(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<BindingList>, ApiError> {
    let bindings = state.registry.list_bindings(&auth.user.id).await?;
    Ok(Json(BindingList {
        bindings: bindings.into_iter().map(|b| view(b, true)).collect(),
    }))
}

/// Unbinds an account.
#[utoipa::path(delete, path = "/v1/bindings/{id}", tag = "bindings", security(("bearer" = [])),
    params(("id" = String, Path, description = "binding id")),
    responses((status = 204, description = "unbound"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_binding(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.registry.delete_binding(&auth.user.id, &id).await {
        Ok(()) => {}
        Err(RegistryError::NotFound) => return Err(ApiError::not_found("binding")),
        Err(e) => return Err(e.into()),
    }
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

/// An avatar as the network holds it (the image itself is not returned).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvatarView {
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub bytes: usize,
    /// Hex SHA-256 of the image bytes.
    pub sha256: String,
}

/// What an account holds on its network now, read through the connector.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrentSettings {
    /// Binding id.
    pub binding_id: String,
    /// Module id.
    pub module: String,
    /// Account login.
    pub account: String,
    /// Current signature, if the network has one.
    pub signature: Option<String>,
    /// Current mood, if the network has one.
    pub mood: Option<String>,
    /// Current avatar, if any.
    pub avatar: Option<AvatarView>,
    /// Fields whose current value is the one the gateway last applied there:
    /// not a change of the user's (a monitor must not report them).
    pub applied_by_gateway: Vec<String>,
}

/// Reads an account's current settings from its network (connector
/// `fetch`), for a monitor that polls instead of watching the IM client.
#[utoipa::path(get, path = "/v1/bindings/{id}/settings", tag = "bindings",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "binding id")),
    responses((status = 200, body = CurrentSettings), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "invalid_credentials, unsupported_module", body = ErrorBody),
        (status = 501, description = "fetch_unsupported: the connector cannot read settings back",
            body = ErrorBody),
        (status = 502, description = "module_unavailable", body = ErrorBody),
        (status = 503, description = "module_unavailable (the network asks to wait)",
            body = ErrorBody)))]
pub async fn current_settings(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<CurrentSettings>, ApiError> {
    let binding = match state.registry.binding(&auth.user.id, &id).await {
        Ok(b) => b,
        Err(RegistryError::NotFound) => return Err(ApiError::not_found("binding")),
        Err(e) => return Err(e.into()),
    };
    let module = binding.module_id.clone();
    let credentials = state
        .config
        .master_key
        .open_credentials(&binding.credentials.0, &binding.id, &binding.user_id)
        .ok_or_else(|| ApiError::internal("the stored credentials cannot be decrypted"))?;
    let settings = match state
        .connectors
        .fetch(&module, &binding.account, credentials)
        .await
    {
        Ok(Ok(settings)) => settings,
        Ok(Err(CallError::AuthFailed(why))) => {
            return Err(ApiError::unprocessable(
                "invalid_credentials",
                format!("the {module} server refused the stored credentials: {why}"),
            ))
        }
        Ok(Err(CallError::Rejected(why))) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "fetch_unsupported",
                format!("the {module} connector cannot read these settings: {why}"),
            ))
        }
        Ok(Err(CallError::RateLimited(secs))) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "module_unavailable",
                format!("the {module} server asks to wait {secs} s"),
            ))
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "module_unavailable",
                format!("could not read the settings from {module}: {e}"),
            ))
        }
        Err(ConnectorsError::Unsupported(_)) => return Err(unsupported(&state, &module).await),
        Err(ConnectorsError::Registry(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let avatar = settings.avatar.map(|image| AvatarView {
        content_type: image.content_type,
        bytes: image.data.len(),
        sha256: crate::secrets::sha256_hex(&image.data),
    });
    let applied = binding.last_applied.unwrap_or_default();
    let mut applied_by_gateway = Vec::new();
    let current = [
        ("signature", settings.signature.clone()),
        ("mood", settings.mood.clone()),
        (
            "avatar",
            avatar
                .as_ref()
                .map(|a| crate::federation::normalise::avatar_key(&a.sha256)),
        ),
    ];
    for (field, value) in current {
        if value.is_some() && applied.get(field).and_then(Value::as_str) == value.as_deref() {
            applied_by_gateway.push(field.to_owned());
        }
    }
    Ok(Json(CurrentSettings {
        binding_id: binding.id,
        module,
        account: binding.account,
        signature: settings.signature,
        mood: settings.mood,
        avatar,
        applied_by_gateway,
    }))
}
