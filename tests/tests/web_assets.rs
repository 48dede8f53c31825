//! The end users' web page embedded in the gateway: `GET /` and the files it
//! names under `/assets/`, with their content types, cache headers, ETags and
//! the Content-Security-Policy; unknown paths keep the JSON `404 not_found`.
//!
//! Without `web/dist` (no node on this machine) the gateway embeds a fallback
//! page that says how to build it, and this test checks that page instead of
//! the assets; under `CI=true` the fallback fails it, since `scripts/test.sh`
//! builds the page first (`./scripts/build-web.sh`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, TestGateway};
use reqwest::{Response, StatusCode};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the fallback page of `gateway/build.rs` says.
const FALLBACK: &str = "web page was not built";

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header on {}", response.url()))
        .to_str()
        .unwrap()
}

fn assert_hardened(response: &Response) {
    assert_eq!(header(response, "content-security-policy"), CSP);
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    assert_eq!(header(response, "referrer-policy"), "no-referrer");
    assert_eq!(header(response, "x-frame-options"), "DENY");
}

/// The local paths the page links (`src="/..."`, `href="/..."`).
fn linked_paths(html: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for attribute in ["src=\"/", "href=\"/"] {
        for (at, _) in html.match_indices(attribute) {
            let rest = &html[at + attribute.len() - 1..];
            let path = &rest[..rest.find('"').unwrap()];
            if !path.starts_with("//") && path.len() > 1 {
                paths.push(path.to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("webmanifest") => "application/manifest+json",
        other => panic!("the test knows no content type for {path} ({other:?})"),
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_headers() {
    let gw = TestGateway::start().await;

    let page = gw.get("/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert_hardened(&page);
    let page_etag = header(&page, "etag").to_owned();
    let html = page.text().await.unwrap();
    assert!(html.to_ascii_lowercase().contains("<html"), "{html}");

    let again = gw
        .client
        .get(gw.url("/"))
        .header("if-none-match", &page_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_hardened(&again);

    let head = gw.client.head(gw.url("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-type"), "text/html; charset=utf-8");
    assert_hardened(&head);
    assert!(head.bytes().await.unwrap().is_empty());

    if html.contains(FALLBACK) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the gateway embeds the fallback page under CI=true: web/dist was not built \
             (./scripts/build-web.sh) before the gateway"
        );
        eprintln!("web/dist is not built: checking the fallback page only");
        assert!(html.contains("./scripts/build-web.sh"), "{html}");
        assert!(html.contains("npm ci"), "{html}");
        assert!(!html.contains("/assets/"), "{html}");
    } else {
        let linked = linked_paths(&html);
        let assets: Vec<&String> = linked
            .iter()
            .filter(|p| p.starts_with("/assets/"))
            .collect();
        assert!(
            assets.iter().any(|p| p.ends_with(".js")),
            "the page names no script under /assets/: {html}"
        );
        for path in &linked {
            let response = gw.get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, "content-type"), expected_type(path));
            assert_hardened(&response);
            let cache = if path.starts_with("/assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            assert_eq!(header(&response, "cache-control"), cache, "{path}");
            let etag = header(&response, "etag").to_owned();
            assert!(etag.len() == 66 && etag.starts_with('"'), "{path}: {etag}");
            assert!(!response.bytes().await.unwrap().is_empty(), "{path}");

            let cached = gw
                .client
                .get(gw.url(path))
                .header("if-none-match", format!("W/\"x\", {etag}"))
                .send()
                .await
                .unwrap();
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(header(&cached, "etag"), etag);
            assert!(cached.bytes().await.unwrap().is_empty(), "{path}");

            let stale = gw
                .client
                .get(gw.url(path))
                .header("if-none-match", "\"not-it\"")
                .send()
                .await
                .unwrap();
            assert_eq!(stale.status(), StatusCode::OK, "{path}");
        }
        // Scripts go gzipped to a browser that takes it.
        let script = assets.iter().find(|p| p.ends_with(".js")).unwrap();
        let plain = gw.get(script, None).await.bytes().await.unwrap();
        let raw = reqwest::Client::builder().no_gzip().build().unwrap();
        let zipped = raw
            .get(gw.url(script))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&zipped, "content-encoding"), "gzip");
        assert_hardened(&zipped);
        let zipped = zipped.bytes().await.unwrap();
        assert_eq!(zipped[..2], [0x1f, 0x8b], "not gzip");
        assert!(
            zipped.len() * 2 < plain.len(),
            "{} of {} bytes",
            zipped.len(),
            plain.len()
        );
    }
}

#[tokio::test]
async fn unknown_paths_keep_the_json_404() {
    let gw = TestGateway::start().await;
    for path in [
        "/assets/nope.js",
        "/nope",
        "/nope.js",
        "/assets/..%2F..%2FCargo.toml",
        "/assets/%2E%2E/%2E%2E/Cargo.toml",
        "/assets/",
    ] {
        expect_error(gw.get(path, None).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let asset_404 = gw.get("/assets/nope.js", None).await;
    assert_hardened(&asset_404);
    let r = gw.client.post(gw.url("/")).send().await.unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[test]
fn links_are_read_from_the_page() {
    let html = r#"<link rel="icon" href="/favicon.svg"><script type="module" crossorigin
        src="/assets/index-AbC123.js"></script><link rel="stylesheet" href="/assets/index-x.css">
        <a href="//elsewhere/x">x</a><a href="/">home</a>"#;
    assert_eq!(
        linked_paths(html),
        [
            "/assets/index-AbC123.js",
            "/assets/index-x.css",
            "/favicon.svg"
        ]
    );
}
