//! `POST /v1/media`: avatar uploads, decoded and checked before they are kept.

use super::error::{ApiError, ErrorBody};
use super::extract::AuthUser;
use super::openapi::UserAuth;
use super::AppState;
use crate::media::{MediaError, UploadError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use gateway_api::MediaView;

/// Routes of this resource.
pub fn router(max_media_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/v1/media",
        post(upload).layer(DefaultBodyLimit::max(max_media_bytes)),
    )
}

/// An image file as a request body.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Image(Vec<u8>);

/// Stores an avatar image (raw bytes in the body); the same bytes sent again
/// give the stored image back.
#[utoipa::path(post, path = "/v1/media", tag = "changes", security(("bearer" = [])),
    request_body(description = "the raw image bytes", content(
        (Image = "image/png"), (Image = "image/jpeg"), (Image = "image/gif"), (Image = "image/webp"))),
    responses(
    UserAuth,
    (status = 201, body = MediaView),
    (status = 409, description = "media_quota_exceeded: the user's stored images would exceed \
        the quota (64 MiB by default)", body = ErrorBody),
    (status = 413, description = "payload_too_large: above the media limit (8 MiB by default)",
        body = ErrorBody),
    (status = 415, description = "unsupported_media_type: not image/png, image/jpeg, \
        image/gif or image/webp", body = ErrorBody),
    (status = 422, description = "invalid_image: the bytes do not decode as the declared \
        type, or are too large in pixels (8192 a side)", body = ErrorBody)))]
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
    let stored = state
        .media
        .upload(&auth.user.id, &declared, body.to_vec())
        .await
        .map_err(|e| match e {
            UploadError::Image(MediaError::UnsupportedType(_)) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.to_string(),
            ),
            UploadError::Image(_) => ApiError::unprocessable("invalid_image", e.to_string()),
            UploadError::Quota { .. } => {
                ApiError::new(StatusCode::CONFLICT, "media_quota_exceeded", e.to_string())
            }
            UploadError::Internal(e) => ApiError::internal(e),
            UploadError::Registry(e) => e.into(),
        })?;
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
