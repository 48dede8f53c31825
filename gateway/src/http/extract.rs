//! Request extractors that answer with [`ApiError`] instead of axum's plain
//! text rejections: JSON bodies, query strings, bearer authentication. What
//! each answers is declared once for the OpenAPI document in
//! [`super::openapi`] (`JsonBody`, `QueryString`, `UserAuth`, `AdminAuth`).

use super::error::ApiError;
use super::AppState;
use crate::secrets::{constant_time_eq, sha256_hex};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use registry_db::{RegistryError, SessionOwner, User};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// A JSON body; malformed JSON `400`, wrong content type `415`, wrong types or
/// missing fields `422 invalid_body`, too large `413`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "malformed_json",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "bad_request",
    };
    ApiError::new(status, code, rejection.body_text())
}

/// A query string; a parameter that does not parse `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing_token", "Authorization: Bearer <token> required")
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                "the Authorization header is not a bearer token",
            )
        })
}

async fn session_owner(state: &AppState, token: &str) -> Result<Option<SessionOwner>, ApiError> {
    match state
        .registry
        .session_owner(&sha256_hex(token.as_bytes()), state.config.clock.now())
        .await
    {
        Ok(owner) => Ok(Some(owner)),
        Err(RegistryError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The client's own address (the peer, or what trusted proxies say).
pub fn client_address(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    Some(state.limits.address(Some(peer), &parts.headers))
}

/// The user a valid session token belongs to (rate limited per user). A
/// device token is a session too: then `device_id` names the device, and
/// the request records it as seen.
#[derive(Debug)]
pub struct AuthUser {
    /// The logged-in user.
    pub user: User,
    /// Hash of the session token used, to log that session out.
    pub token_hash: String,
    /// The device of a device token.
    pub device_id: Option<String>,
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let owner = session_owner(state, token).await?.ok_or_else(|| {
            ApiError::unauthorized("invalid_token", "the session token is unknown or expired")
        })?;
        state.limits.check_user(&owner.user.id)?;
        let ip = client_address(parts, state);
        if let Some(device) = &owner.device_id {
            let ip = ip.map(|ip| ip.to_string());
            state
                .devices
                .seen(device, owner.device_seen, ip.as_deref())
                .await;
        }
        Ok(AuthUser {
            token_hash: sha256_hex(token.as_bytes()),
            user: owner.user,
            device_id: owner.device_id,
            ip,
        })
    }
}

/// A request made with a device token: the user and the device.
#[derive(Debug)]
pub struct AuthDevice {
    /// The device's user.
    pub user: User,
    /// The device.
    pub device_id: String,
    /// Hash of the device token.
    pub token_hash: String,
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
}

impl FromRequestParts<AppState> for AuthDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = AuthUser::from_request_parts(parts, state).await?;
        let device_id = auth.device_id.ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "device_token_required",
                "this route acts as a device: use the token POST /v1/devices gave the device",
            )
        })?;
        Ok(AuthDevice {
            user: auth.user,
            device_id,
            token_hash: auth.token_hash,
            ip: auth.ip,
        })
    }
}

/// Proof that the request carries the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let client = state
            .limits
            .client(super::limits::peer(&parts.extensions), &parts.headers);
        // After a burst of wrong tokens from one client, even the right one
        // is refused for a while: guessing gains nothing by speed.
        state
            .limits
            .admin
            .check(&client)
            .map_err(|t| super::limits::throttled(t, "wrong admin tokens from this client"))?;
        if constant_time_eq(token, state.config.admin_token.expose()) {
            state.limits.check_user("admin")?;
            return Ok(Admin);
        }
        if session_owner(state, token).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs the admin token, not a user session",
            ));
        }
        state.limits.admin.failed(&client);
        Err(ApiError::unauthorized(
            "invalid_token",
            "the admin token is wrong",
        ))
    }
}
