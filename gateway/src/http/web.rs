//! The end users' web page (`web/`, built into `web/dist` by
//! `./scripts/build-web.sh`), embedded in the binary when it is compiled:
//!
//! - `GET /`: `index.html`, revalidated on every load (`Cache-Control: no-cache`).
//! - `GET /assets/{*path}`: the hashed scripts, styles, images and fonts, kept
//!   by browsers for a year (`immutable`).
//! - `GET /<name.ext>`: any other file at the root of `web/dist` (e.g.
//!   `/favicon.svg`), one route per embedded file, so an unknown path keeps the
//!   router's JSON `404 not_found`.
//!
//! Text files go gzipped when the browser accepts it. Every file answers with an `ETag` (the SHA-256 of its bytes) and `304` to a
//! matching `If-None-Match`. Every answer of these routes carries a strict
//! Content-Security-Policy (no inline script or style, no other host) and the
//! usual hardening headers. When `web/dist` was not built, `build.rs` embeds a
//! one-page fallback that says how to build it. The page is not part of the
//! JSON API and is not in the OpenAPI document.

use super::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use std::borrow::Cow;

/// The files of `web/dist` (or of the fallback page), as `build.rs` found them.
#[derive(rust_embed::Embed)]
#[folder = "$GATEWAY_WEB_DIR"]
struct Dist;

/// The Content-Security-Policy of every answer of these routes.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `Cache-Control` of files whose name does not change with their content.
const REVALIDATE: &str = "no-cache";
/// `Cache-Control` of the hashed files under `/assets/`.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Routes of the web page.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset));
    for name in Dist::iter().filter(|name| is_root_file(name)) {
        let path = format!("/{name}");
        let name = name.into_owned();
        router = router.route(
            &path,
            get(move |headers: HeaderMap| async move { serve(&name, REVALIDATE, &headers) }),
        );
    }
    // Scripts and styles go gzipped to browsers that take it (a third of
    // the bytes on a phone's link); tiny files and images stay as they are.
    router
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(middleware::map_response(security_headers))
}

/// `GET /`: the page.
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", REVALIDATE, &headers)
}

/// `GET /assets/{*path}`: a hashed file of the page.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if !is_safe(&path) {
        return ApiError::not_found("asset").into_response();
    }
    serve(&format!("assets/{path}"), IMMUTABLE, &headers)
}

/// A file at the root of the dist folder that gets a route of its own: not
/// the page itself, with an extension, and of characters a route may hold.
fn is_root_file(name: &str) -> bool {
    name != "index.html"
        && !name.starts_with('.')
        && name.contains('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A relative path of plain segments: no `..`, `.`, empty segment, backslash
/// or NUL can reach outside the embedded files (which only match known names
/// anyway).
fn is_safe(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// The embedded file `name`, or `304` when `If-None-Match` names its ETag, or
/// `404 not_found`.
fn serve(name: &str, cache_control: &'static str, request: &HeaderMap) -> Response {
    let Some(file) = Dist::get(name) else {
        return ApiError::not_found("file").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cache_control = HeaderValue::from_static(cache_control);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches_etag(request, &etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, cache_control),
            ],
        )
            .into_response();
    }
    let body = match file.data {
        Cow::Borrowed(bytes) => Bytes::from_static(bytes),
        Cow::Owned(bytes) => Bytes::from(bytes),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache_control),
        ],
        Body::from(body),
    )
        .into_response()
}

/// Whether `If-None-Match` lists `etag` (weakly compared, as RFC 9110 says
/// for this header) or is `*`.
fn matches_etag(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The `Content-Type` of a file by its extension.
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, ext)| ext);
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Middleware: the Content-Security-Policy and hardening headers on every
/// answer of these routes, errors included.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        for bad in [
            "", "..", "../x", "a/../b", "./a", "a//b", "a\\..\\b", "a\0", "a/",
        ] {
            assert!(!is_safe(bad), "{bad:?}");
        }
        for good in ["index-abc123.js", "fonts/a.woff2", "a..b.css"] {
            assert!(is_safe(good), "{good:?}");
        }
    }

    #[test]
    fn root_files_are_plain_names_with_an_extension() {
        assert!(is_root_file("favicon.svg"));
        assert!(is_root_file("robots.txt"));
        for no in [
            "index.html",
            "assets/a.js",
            ".hidden",
            "healthz",
            "a b.txt",
            "{x}.js",
        ] {
            assert!(!is_root_file(no), "{no:?}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let etag = "\"abc\"";
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            matches_etag(&headers, etag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abcd\""));
        assert!(!matches_etag(&HeaderMap::new(), etag));
    }

    #[test]
    fn the_page_is_embedded() {
        let index = Dist::get("index.html").map(|f| f.data.into_owned());
        assert!(index.is_some_and(
            |html| html.starts_with(b"<!doctype html") || html.starts_with(b"<!DOCTYPE html")
        ));
    }
}
