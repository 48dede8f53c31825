//! `POST /v1/users`: registration (S1).

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::openapi::{ClientLimit, JsonBody};
use super::{audit, AppState};
use crate::accounts::{self, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use gateway_api::{Credentials, UserView};
use registry_db::RegistryError;

/// Routes of this resource (rate limited per IP by the caller).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users", post(create_user))
}

/// Registers a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = Credentials, responses(
    ClientLimit, JsonBody,
    (status = 201, body = UserView),
    (status = 409, description = "username_taken", body = ErrorBody),
    (status = 422, description = "invalid_username, weak_password, invalid_body (wrong JSON \
        types, missing or unknown fields)", body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !accounts::valid_username(&body.username) {
        return Err(ApiError::unprocessable(
            "invalid_username",
            "a username has 3-64 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let password = body.password.expose().clone();
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::unprocessable(
            "weak_password",
            format!("a password needs at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::unprocessable(
            "weak_password",
            format!("a password has at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let id = uuid::Uuid::new_v4().to_string();
    let user = match state
        .registry
        .create_user(&id, &body.username, &hash, state.config.clock.now())
        .await
    {
        Ok(user) => user,
        Err(RegistryError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "username_taken",
                format!("the username {:?} is taken", body.username),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    audit(
        &state,
        &format!("user:{}", user.id),
        "user.create",
        &user.id,
        serde_json::json!({"username": user.username}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            id: user.id,
            username: user.username,
        }),
    ))
}
