//! `POST /v1/media`: avatar uploads, decoded and checked before they are kept.

use super::error::{ApiError, ErrorBody};
use super::extract::AuthUser;
use super::AppState;
use crate::media::{self, DecodeLimits, MediaError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use gateway_api::MediaView;
use registry_db::Media;

/// Routes of this resource.
pub fn router(max_media_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/v1/media",
        post(upload).layer(DefaultBodyLimit::max(max_media_bytes)),
    )
}

/// Stores an avatar image (raw bytes in the body).
#[utoipa::path(post, path = "/v1/media", tag = "changes",
    request_body(content = Vec<u8>, content_type = "image/png"),
    responses(
    (status = 201, body = MediaView),
    (status = 413, description = "payload_too_large", body = ErrorBody),
    (status = 415, description = "unsupported_media_type", body = ErrorBody),
    (status = 422, description = "invalid_image", body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    auth: AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<MediaView>), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = body.to_vec();
    let (bytes, checked) = tokio::task::spawn_blocking(move || {
        let checked = media::inspect(&bytes, &declared, &DecodeLimits::default());
        (bytes, checked)
    })
    .await
    .map_err(ApiError::internal)?;
    let info = checked.map_err(|e| match e {
        MediaError::UnsupportedType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.to_string(),
        ),
        _ => ApiError::unprocessable("invalid_image", e.to_string()),
    })?;
    let stored = Media {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: auth.user.id,
        sha256: info.sha256,
        content_type: info.content_type,
        width: info.width,
        height: info.height,
        data: bytes,
        created_at: state.config.clock.now(),
    };
    state.registry.put_media(&stored).await?;
    Ok((
        StatusCode::CREATED,
        Json(MediaView {
            id: stored.id,
            sha256: stored.sha256,
            content_type: stored.content_type,
            width: stored.width,
            height: stored.height,
        }),
    ))
}
