//! Blob downloads of a service granted `blobs`: a plugin answers a request
//! with the header `gateway-blob: <upload id>` and the gateway sends that
//! blob's bytes instead of the (empty) body, with `Range` support, telling
//! the plugin when the download started, finished or broke.

use super::error::ApiError;
use super::AppState;
use crate::blobs::tus::parse_range;
use crate::blobs::Owner;
use crate::host::service::{BlobNotice, BlobNoticeKind, ServiceResponse};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use registry_db::BlobUpload;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use crate::host::service::BLOB_HEADER;

/// Stores the body of a request to a blob route as a whole blob of
/// `owner`: it needs a `Content-Length` within the blob limits and the
/// user's quota; a body that ends early stores nothing.
pub async fn store_body(
    state: &AppState,
    owner: &Owner,
    headers: &HeaderMap,
    body: Body,
) -> Result<BlobUpload, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "send the body with a Content-Length",
            )
        })?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let upload = state
        .blobs
        .create(owner, length, crate::blobs::filetype_metadata(kind))
        .await
        .map_err(super::tus::error)?;
    let id = upload.id.clone();
    match state
        .blobs
        .append(upload, 0, None, body.into_data_stream())
        .await
    {
        Ok(appended) if appended.upload.is_complete() => Ok(appended.upload),
        outcome => {
            let _ = state.blobs.delete(owner, &id).await;
            Err(match outcome {
                Err(e) => super::tus::error(e),
                Ok(_) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_incomplete",
                    "the body ended before its Content-Length; nothing was stored",
                ),
            })
        }
    }
}

/// The headers of a stored blob route body for `handle`.
pub fn stored_headers(upload: &BlobUpload) -> [(String, String); 3] {
    [
        (BLOB_HEADER.to_owned(), upload.id.clone()),
        (format!("{BLOB_HEADER}-size"), upload.length.to_string()),
        (
            format!("{BLOB_HEADER}-sha256"),
            upload.sha256.clone().unwrap_or_default(),
        ),
    ]
}

/// Sends blob `blob` of `owner` as the answer to a request with `headers`,
/// with the plugin's own status and headers around it.
pub async fn download(
    state: &AppState,
    owner: Owner,
    blob: &str,
    headers: &HeaderMap,
    answer: ServiceResponse,
) -> Result<Response, ApiError> {
    let upload = state
        .blobs
        .status(&owner, blob)
        .await
        .ok()
        .filter(|u| u.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "service_failed",
                "the service named a file that is not stored (completely)",
            )
        })?;
    let length = u64::try_from(upload.length).unwrap_or(0);
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(asked, length) {
        Ok(range) => range,
        Err(e) => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                e.to_string(),
            )
            .into_response();
            if let Ok(value) = HeaderValue::try_from(format!("bytes */{length}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let partial = range.is_some();
    let range = range.unwrap_or(0..length);
    let bytes = state
        .blobs
        .read(&upload, range.clone())
        .await
        .map_err(|e| ApiError::internal(format!("blob {blob}: {e}")))?;
    let notice = |kind| BlobNotice {
        offset: range.start,
        ..crate::blobs::notice(kind, &upload, owner.device.clone())
    };
    // A refusal of a download event means nothing: the plugin already said
    // yes by naming the blob.
    let _ = state
        .services
        .blob_event(
            &owner.service,
            &owner.user,
            notice(BlobNoticeKind::DownloadStarted),
        )
        .await;
    let reaches_end = range.end == length;
    let services = state.services.clone();
    let (service, user) = (owner.service.clone(), owner.user.clone());
    let mut ended = notice(BlobNoticeKind::DownloadDone);
    let watched = Watched {
        inner: bytes,
        remaining: range.end - range.start,
        end: Some(Box::new(move |complete: bool| {
            if complete && !reaches_end {
                return;
            }
            if !complete {
                ended.kind = BlobNoticeKind::DownloadBroken;
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = services.blob_event(&service, &user, ended).await;
                });
            }
        })),
    };
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK)
    };
    let mut response = (status, Body::from_stream(watched)).into_response();
    let out = response.headers_mut();
    for (name, value) in answer.headers {
        if name.eq_ignore_ascii_case(BLOB_HEADER) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            out.insert(name, value);
        }
    }
    out.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(sha) = &upload.sha256 {
        if let Ok(etag) = HeaderValue::try_from(format!("\"{sha}\"")) {
            out.insert(header::ETAG, etag);
        }
    }
    if partial {
        let value = format!("bytes {}-{}/{length}", range.start, range.end - 1);
        if let Ok(value) = HeaderValue::try_from(value) {
            out.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

type Ended = Box<dyn FnOnce(bool) + Send>;

/// The bytes of a download, calling `end` once with whether every byte
/// went out: when the last byte is handed over (the server may stop
/// polling there, knowing the length), at the stream's first error, or
/// when the client went away and the body was dropped.
struct Watched {
    inner: BoxStream<'static, Result<Bytes, object_store::Error>>,
    remaining: u64,
    end: Option<Ended>,
}

impl Watched {
    fn finish(&mut self, complete: bool) {
        if let Some(end) = self.end.take() {
            end(complete);
        }
    }
}

impl Stream for Watched {
    type Item = Result<Bytes, object_store::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(bytes))) => {
                self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
                if self.remaining == 0 {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => {
                let complete = self.remaining == 0;
                self.finish(complete);
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.finish(false);
    }
}
