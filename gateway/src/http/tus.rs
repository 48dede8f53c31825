//! `/v1/services/{id}/uploads[/{upload}]` of a service granted `blobs`:
//! the tus resumable upload protocol 1.0.0 (core, creation,
//! creation-with-upload, termination, checksum with sha1 and sha256,
//! expiration), so stock tus clients upload unchanged. The bytes stream
//! into the blob store ([`crate::blobs`]); errors are the API's JSON
//! bodies with the headers tus clients read.

use super::error::ApiError;
use super::extract::AuthUser;
use super::AppState;
use crate::blobs::tus::{self, TusError};
use crate::blobs::{Appended, BlobError, ChecksumAlgorithm, Owner};
use crate::host::service::{BlobNotice, BlobNoticeKind};
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use registry_db::BlobUpload;

/// Whether `below` (the path under the service) is the tus endpoint.
pub fn is_tus_path(below: &str) -> bool {
    below == "/uploads" || below.starts_with("/uploads/")
}

/// Answers one tus request of service `service`.
pub async fn handle(
    state: &AppState,
    service: &str,
    below: &str,
    mut parts: Parts,
    body: Body,
) -> Response {
    let answer = async {
        if parts.method == Method::OPTIONS {
            return Ok(options(state));
        }
        let resumable = parts
            .headers
            .get("tus-resumable")
            .map(HeaderValue::as_bytes);
        if resumable != Some(tus::VERSION.as_bytes()) {
            let mut refused = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "tus_version",
                format!("send Tus-Resumable: {}", tus::VERSION),
            )
            .into_response();
            refused
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(tus::VERSION));
            return Ok(refused);
        }
        let auth = AuthUser::from_request_parts(&mut parts, state).await?;
        let owner = Owner {
            service: service.to_owned(),
            user: auth.user.id,
            device: auth.device_id,
        };
        let upload = below.strip_prefix("/uploads/").filter(|u| !u.is_empty());
        match (&parts.method, upload) {
            (&Method::POST, None) => create(state, &owner, &parts, body).await,
            (&Method::HEAD, Some(id)) => head(state, &owner, id).await,
            (&Method::PATCH, Some(id)) => patch(state, &owner, id, &parts.headers, body).await,
            (&Method::DELETE, Some(id)) => {
                let upload = state.blobs.status(&owner, id).await.map_err(error)?;
                state.blobs.delete(&owner, id).await.map_err(error)?;
                if !upload.is_complete() {
                    tell(
                        state,
                        &owner,
                        notice(BlobNoticeKind::Terminated, &upload, &owner),
                    )
                    .await;
                }
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            (_, None) => Err(not_allowed("OPTIONS, POST")),
            (_, Some(_)) => Err(not_allowed("OPTIONS, HEAD, PATCH, DELETE")),
        }
    }
    .await;
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    response
}

fn not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("the tus endpoint answers {allow}"),
    )
}

fn options(state: &AppState) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(ChecksumAlgorithm::NAMES),
    );
    headers.insert(
        "tus-max-size",
        HeaderValue::from(state.blobs.limits().max_length),
    );
    response
}

/// A number header; `None` when absent.
fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        format!("{name} must be a non-negative integer"),
                    )
                })
        })
        .transpose()
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} must be ASCII text"))
            })
        })
        .transpose()
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(tus::OFFSET_OCTET_STREAM))
}

fn tus_error(e: TusError) -> ApiError {
    ApiError::bad_request("invalid_header", e.to_string())
}

async fn create(
    state: &AppState,
    owner: &Owner,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let headers = &parts.headers;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "invalid_header",
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = number(headers, "upload-length")?
        .ok_or_else(|| ApiError::bad_request("invalid_header", "Upload-Length is required"))?;
    let metadata = text(headers, "upload-metadata")?.unwrap_or_default();
    tus::parse_metadata(metadata).map_err(tus_error)?;
    let upload = state
        .blobs
        .create(owner, length, metadata.to_owned())
        .await
        .map_err(error)?;
    // The service may refuse the upload (an unknown record, a wrong size).
    let heard = state
        .services
        .blob_event(
            &owner.service,
            &owner.user,
            notice(BlobNoticeKind::Created, &upload, owner),
        )
        .await;
    let refusal = match heard {
        Ok(Ok(())) => None,
        Ok(Err(text)) => Some(ApiError::unprocessable("upload_refused", text)),
        Err(e) => Some(ApiError::from(e)),
    };
    if let Some(refusal) = refusal {
        let _ = state.blobs.delete(owner, &upload.id).await;
        return Err(refusal);
    }
    let location = format!("/v1/services/{}/uploads/{}", owner.service, upload.id);
    // creation-with-upload: the first bytes in the same request.
    let upload = if is_offset_stream(headers) && length > 0 {
        append(state, owner, &upload.id, 0, checksum(headers)?, body)
            .await?
            .upload
    } else {
        upload
    };
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::try_from(location) {
        headers.insert(header::LOCATION, location);
    }
    position(headers, &upload);
    Ok(response)
}

/// `Upload-Offset` and, while incomplete, `Upload-Expires`.
fn position(headers: &mut HeaderMap, upload: &BlobUpload) {
    headers.insert("upload-offset", HeaderValue::from(upload.offset));
    if let Some(at) = upload.expires_at {
        if let Ok(value) = HeaderValue::try_from(tus::http_date(at)) {
            headers.insert("upload-expires", value);
        }
    }
}

async fn head(state: &AppState, owner: &Owner, id: &str) -> Result<Response, ApiError> {
    let upload = state.blobs.status(owner, id).await.map_err(error)?;
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    position(headers, &upload);
    headers.insert("upload-length", HeaderValue::from(upload.length));
    if !upload.metadata.is_empty() {
        if let Ok(value) = HeaderValue::try_from(upload.metadata.as_str()) {
            headers.insert("upload-metadata", value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn checksum(headers: &HeaderMap) -> Result<Option<crate::blobs::Checksum>, ApiError> {
    text(headers, "upload-checksum")?
        .map(tus::parse_checksum)
        .transpose()
        .map_err(tus_error)
}

async fn patch(
    state: &AppState,
    owner: &Owner,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_offset_stream(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send Content-Type: {}", tus::OFFSET_OCTET_STREAM),
        ));
    }
    let offset = number(headers, "upload-offset")?
        .ok_or_else(|| ApiError::bad_request("invalid_header", "Upload-Offset is required"))?;
    let Appended { upload, .. } =
        append(state, owner, id, offset, checksum(headers)?, body).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    position(response.headers_mut(), &upload);
    Ok(response)
}

/// Appends a request's body. The service hears `started` when the first
/// bytes arrive, then `stored`, `interrupted` or `completed`. The append
/// and what follows run in a task of their own: when the client's
/// connection drops, the server drops the request's future, but what
/// arrived before the cut is still stored, recorded and told.
async fn append(
    state: &AppState,
    owner: &Owner,
    id: &str,
    offset: u64,
    checksum: Option<crate::blobs::Checksum>,
    body: Body,
) -> Result<Appended, ApiError> {
    let upload = state.blobs.status(owner, id).await.map_err(error)?;
    if u64::try_from(upload.offset).ok() != Some(offset) {
        return Err(error(BlobError::OffsetMismatch {
            current: u64::try_from(upload.offset).unwrap_or(0),
            sent: offset,
        }));
    }
    let mut body = body.into_data_stream();
    let first = body.next().await;
    if matches!(&first, Some(Ok(bytes)) if !bytes.is_empty()) {
        tell(
            state,
            owner,
            notice(BlobNoticeKind::Started, &upload, owner),
        )
        .await;
    }
    let body = futures::stream::iter(first).chain(body);
    let task_state = state.clone();
    let owner = owner.clone();
    tokio::spawn(async move {
        let state = task_state;
        let appended = state.blobs.append(upload, offset, checksum, body).await?;
        let kind = if appended.interrupted {
            Some(BlobNoticeKind::Interrupted)
        } else if appended.received == 0 {
            None
        } else if appended.upload.is_complete() {
            Some(BlobNoticeKind::Completed)
        } else {
            Some(BlobNoticeKind::Stored)
        };
        if let Some(kind) = kind {
            tell(&state, &owner, notice(kind, &appended.upload, &owner)).await;
        }
        Ok(appended)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(error)
}

fn notice(kind: BlobNoticeKind, upload: &BlobUpload, owner: &Owner) -> BlobNotice {
    crate::blobs::notice(kind, upload, owner.device.clone())
}

/// Tells the service; a failure is logged (the bytes are stored either
/// way, and the next event carries the news).
async fn tell(state: &AppState, owner: &Owner, notice: BlobNotice) {
    let kind = notice.kind;
    match state
        .services
        .blob_event(&owner.service, &owner.user, notice)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(text)) => {
            tracing::debug!(service = %owner.service, ?kind, "the service answered a blob event with: {text}")
        }
        Err(e) => {
            tracing::warn!(service = %owner.service, ?kind, error = %e, "a blob event did not reach its service")
        }
    }
}

pub(super) fn error(e: BlobError) -> ApiError {
    let message = e.to_string();
    match e {
        BlobError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "unknown_upload", message),
        BlobError::Expired(_) => ApiError::new(StatusCode::GONE, "upload_expired", message),
        BlobError::OffsetMismatch { .. } => {
            ApiError::new(StatusCode::CONFLICT, "offset_mismatch", message)
        }
        BlobError::BeyondLength { .. } | BlobError::TooLong { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        BlobError::Quota(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded", message)
        }
        BlobError::ChecksumMismatch => ApiError::new(
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum_mismatch",
            message,
        ),
        BlobError::Store(e) => ApiError::internal(format!("blob store: {e}")),
        BlobError::Registry(e) => e.into(),
    }
}
