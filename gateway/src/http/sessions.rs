//! `POST /v1/sessions` (login) and `DELETE /v1/sessions/current` (logout).

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use super::limits::throttled;
use super::openapi::{ClientLimit, JsonBody, UserAuth};
use super::AppState;
use crate::accounts;
use crate::secrets::{random_token, sha256_hex};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use gateway_api::{Credentials, SessionView};
use registry_db::RegistryError;

/// The login route (rate limited per IP by the caller).
pub fn login_router() -> Router<AppState> {
    Router::new().route("/v1/sessions", post(create_session))
}

/// The logout route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/sessions/current", delete(delete_session))
}

/// RFC 3339 with milliseconds, the format of every time in the API.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Logs in.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = Credentials, responses(
    ClientLimit, JsonBody,
    (status = 201, body = SessionView),
    (status = 401, description = "invalid_credentials: the same answer for an unknown user \
        and a wrong password", body = ErrorBody, headers(("WWW-Authenticate" = String))),
    (status = 429, description = "rate_limited: per client, or after 10 failed logins \
        for the user name (one more every 30 s)", body = ErrorBody,
        headers(("Retry-After" = u64, description = "whole seconds to wait, at least 1")))))]
pub async fn create_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    // Guessing one user's password is throttled whatever address it comes
    // from (the per-address limit alone does not stop a botnet).
    state
        .limits
        .login
        .check(&body.username)
        .map_err(|t| throttled(t, "failed logins for this user name"))?;
    let found = match state.registry.user_credentials(&body.username).await {
        Ok(found) => Some(found),
        Err(RegistryError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let phc = found
        .as_ref()
        .map(|f| f.password_hash.clone())
        .unwrap_or_else(|| accounts::decoy_hash().to_owned());
    let password = body.password.expose().clone();
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &phc))
        .await
        .map_err(ApiError::internal)?;
    let user = match (found, ok) {
        (Some(found), true) => found.user,
        _ => {
            state.limits.login.failed(&body.username);
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "unknown username or wrong password",
            ));
        }
    };
    let token = random_token();
    let now = state.config.clock.now();
    let ttl = chrono::Duration::from_std(state.config.session_ttl)
        .unwrap_or_else(|_| chrono::Duration::hours(24));
    let expires_at = now + ttl;
    state
        .registry
        .create_session(&sha256_hex(token.as_bytes()), &user.id, now, expires_at)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            token,
            expires_at: rfc3339(expires_at),
        }),
    ))
}

/// Logs out the session whose token authorised this request.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", security(("bearer" = [])), responses(
    UserAuth,
    (status = 204, description = "logged out")))]
pub async fn delete_session(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<StatusCode, ApiError> {
    state.registry.delete_session(&auth.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
