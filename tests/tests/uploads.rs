//! The host's tus endpoint (tus 1.0.0: core, creation,
//! creation-with-upload, termination, checksum, expiration) at
//! `/v1/services/{id}/uploads` of a service granted `blobs`, through the
//! real gateway and HTTP: uploads in pieces and resumed after a cut
//! connection, the bytes stored whole in the blob store, every refusal with
//! its status and nothing of a refused piece kept, quotas, another user's
//! upload, expiry and its clean-up; on SQLite and PostgreSQL.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use e2e_tests::{expect_error, postgres_admin_url, service_plugin, TestGateway};
use gateway::clock::ManualClock;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::json;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ENDPOINT: &str = "/v1/services/handoff/uploads";

/// Any service granted `blobs` gets the endpoint: the handoff plugin here.
async fn with_blobs(gw: &TestGateway) {
    let manifest = json!({"id": "handoff", "name": "Handoff",
        "grants": ["kv", "devices", "events", "timers", "clock", "blobs"]});
    let r = gw
        .upload_service(&manifest, &service_plugin("handoff"))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

fn tus(gw: &TestGateway, method: &str, path: &str, token: &str) -> RequestBuilder {
    gw.client
        .request(method.parse().unwrap(), gw.url(path))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Creates an upload of `length` bytes; its URL path.
async fn create(gw: &TestGateway, token: &str, length: usize, name: &str) -> String {
    let r = tus(gw, "POST", ENDPOINT, token)
        .header("Upload-Length", length.to_string())
        .header(
            "Upload-Metadata",
            format!("filename {}", b64(name.as_bytes())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(header(&r, "tus-resumable"), "1.0.0");
    assert!(r.headers().contains_key("upload-expires"));
    let location = header(&r, "location");
    assert!(location.starts_with(&format!("{ENDPOINT}/")), "{location}");
    location
}

fn patch(gw: &TestGateway, token: &str, at: &str, offset: usize) -> RequestBuilder {
    tus(gw, "PATCH", at, token)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
}

async fn offset_of(gw: &TestGateway, token: &str, at: &str) -> usize {
    let r = tus(gw, "HEAD", at, token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "cache-control"), "no-store");
    header(&r, "upload-offset").parse().unwrap()
}

/// The stored pieces of an upload, read back from the blob store's folder
/// in order and joined.
fn stored(data_dir: &Path, at: &str) -> Vec<u8> {
    let id = at.rsplit('/').next().unwrap();
    let folder: PathBuf = data_dir.join("blobs").join("handoff").join(id);
    let mut pieces: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().path())
        .collect();
    pieces.sort();
    pieces
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Pieces, a cut connection, refusals, resume, completion: what a tus
/// client sees, on the gateway `gw` (SQLite or PostgreSQL).
async fn upload_in_pieces(gw: &TestGateway) -> (Vec<u8>, String) {
    with_blobs(gw).await;
    let alice = gw.user_token("alice").await;
    let file = content(300_000);
    let at = create(gw, &alice, file.len(), "notes.bin").await;
    assert_eq!(offset_of(gw, &alice, &at).await, 0);

    // The first 100,000 bytes with a sha1 that holds.
    let first = &file[..100_000];
    let r = patch(gw, &alice, &at, 0)
        .header(
            "Upload-Checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(first))),
        )
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), "100000");
    assert!(r.headers().contains_key("upload-expires"));

    // A piece whose sha256 does not hold: 460, nothing kept.
    let r = patch(gw, &alice, &at, 100_000)
        .header(
            "Upload-Checksum",
            format!("sha256 {}", b64(&sha2::Sha256::digest(b"something else"))),
        )
        .body(file[100_000..150_000].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::from_u16(460).unwrap(), "checksum_mismatch").await;
    assert_eq!(offset_of(gw, &alice, &at).await, 100_000);

    // A stale offset: 409, nothing kept.
    let r = patch(gw, &alice, &at, 50_000)
        .body(file[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::CONFLICT, "offset_mismatch").await;
    // Past the announced length: 413, nothing kept.
    let r = patch(gw, &alice, &at, 100_000)
        .body(vec![0u8; 200_001])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(offset_of(gw, &alice, &at).await, 100_000);

    // The connection cut after 64 KiB of a 200,000-byte PATCH: what
    // arrived is kept.
    gw.cut_patch(
        &alice,
        &at,
        100_000,
        200_000,
        &file[100_000..100_000 + 65_536],
    )
    .await;
    let mut resumed_at = 0;
    for _ in 0..200 {
        resumed_at = offset_of(gw, &alice, &at).await;
        if resumed_at == 165_536 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        resumed_at, 165_536,
        "the bytes before the cut were not kept"
    );

    // Resume from the offset the server reports, to the end.
    let r = patch(gw, &alice, &at, resumed_at)
        .body(file[resumed_at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), file.len().to_string());
    assert!(
        !r.headers().contains_key("upload-expires"),
        "a complete upload does not expire"
    );
    let r = tus(gw, "HEAD", &at, &alice).send().await.unwrap();
    assert_eq!(header(&r, "upload-length"), file.len().to_string());
    assert_eq!(
        header(&r, "upload-metadata"),
        format!("filename {}", b64(b"notes.bin"))
    );
    // Complete: another byte is past the end.
    let r = patch(gw, &alice, &at, file.len())
        .body(vec![1u8])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Another user knows nothing of it, and cannot end it.
    let bob = gw.user_token("bob").await;
    let r = tus(gw, "HEAD", &at, &bob).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = patch(gw, &bob, &at, file.len())
        .body(vec![])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_upload").await;
    let r = tus(gw, "DELETE", &at, &bob).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_upload").await;
    assert_eq!(offset_of(gw, &alice, &at).await, file.len());

    // creation-with-upload: the first bytes in the POST.
    let small = content(5_000);
    let r = tus(gw, "POST", ENDPOINT, &alice)
        .header("Upload-Length", "5000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(small[..2_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-offset"), "2000");
    let small_at = header(&r, "location");
    let r = patch(gw, &alice, &small_at, 2_000)
        .body(small[2_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Termination: gone, and its bytes with it.
    let r = tus(gw, "DELETE", &small_at, &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = tus(gw, "HEAD", &small_at, &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    (file, at)
}

#[tokio::test]
async fn a_file_uploads_in_pieces_and_resumes_after_a_cut_connection() {
    let gw = TestGateway::start().await;
    let (file, at) = upload_in_pieces(&gw).await;
    assert_eq!(stored(gw.data_dir.path(), &at), file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_the_same_on_postgresql() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = registry_db::scratch::ScratchDatabase::create(&admin_url, "gateway_uploads")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let url = db.url().to_owned();
    let gw = TestGateway::start_with(move |c| c.database_url = url).await;
    let (file, at) = upload_in_pieces(&gw).await;
    assert_eq!(stored(gw.data_dir.path(), &at), file);
}

#[tokio::test]
async fn requests_that_break_the_protocol_are_refused_with_its_statuses() {
    let gw = TestGateway::start_with(|c| {
        c.blobs.max_length = 1_000_000;
        c.blobs.user_bytes = 1_500_000;
        c.blobs.user_blobs = 3;
    })
    .await;
    // Without the grant, /uploads is the plugin's own path.
    let manifest = json!({"id": "handoff", "name": "Handoff",
        "grants": ["kv", "devices", "events", "timers", "clock"]});
    let r = gw
        .upload_service(&manifest, &service_plugin("handoff"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let alice = gw.user_token("alice").await;
    let r = tus(&gw, "OPTIONS", ENDPOINT, &alice).send().await.unwrap();
    assert!(!r.headers().contains_key("tus-version"));
    with_blobs(&gw).await;

    // Discovery, without a token.
    let r = gw
        .client
        .request(reqwest::Method::OPTIONS, gw.url(ENDPOINT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-version"), "1.0.0");
    assert_eq!(
        header(&r, "tus-extension"),
        "creation,creation-with-upload,termination,checksum,expiration"
    );
    assert_eq!(header(&r, "tus-checksum-algorithm"), "sha1,sha256");
    assert_eq!(header(&r, "tus-max-size"), "1000000");

    // No token; no Tus-Resumable.
    let r = gw
        .client
        .post(gw.url(ENDPOINT))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = gw
        .client
        .post(gw.url(ENDPOINT))
        .bearer_auth(&alice)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "tus-version"), "1.0.0");
    expect_error(r, StatusCode::PRECONDITION_FAILED, "tus_version").await;

    // Creation: length missing, not a number, deferred, too long; metadata
    // that is not base64.
    for (name, value, status, code) in [
        ("X-Nothing", "1", StatusCode::BAD_REQUEST, "invalid_header"),
        (
            "Upload-Length",
            "-5",
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            "Upload-Length",
            "ten",
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            "Upload-Defer-Length",
            "1",
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            "Upload-Length",
            "1000001",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        let r = tus(&gw, "POST", ENDPOINT, &alice)
            .header(name, value)
            .send()
            .await
            .unwrap();
        expect_error(r, status, code).await;
    }
    let r = tus(&gw, "POST", ENDPOINT, &alice)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", "filename not*base64")
        .send()
        .await
        .unwrap();
    let message = expect_error(r, StatusCode::BAD_REQUEST, "invalid_header").await;
    assert!(message.contains("filename"), "{message}");

    // Appending: wrong content type, no offset, an unknown algorithm, an
    // unknown upload, a method the endpoint does not answer.
    let at = create(&gw, &alice, 10, "a").await;
    let r = tus(&gw, "PATCH", &at, &alice)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = tus(&gw, "PATCH", &at, &alice)
        .header("Content-Type", "application/offset+octet-stream")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_header").await;
    let r = patch(&gw, &alice, &at, 0)
        .header("Upload-Checksum", "md5 AAAA")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let message = expect_error(r, StatusCode::BAD_REQUEST, "invalid_header").await;
    assert!(message.contains("md5"), "{message}");
    let r = patch(&gw, &alice, &format!("{ENDPOINT}/0123456789abcdef"), 0)
        .body("0123456789")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_upload").await;
    let r = tus(&gw, "GET", &at, &alice).send().await.unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(offset_of(&gw, &alice, &at).await, 0);

    // Quotas: bytes, then files; each names what is left.
    create(&gw, &alice, 900_000, "b").await;
    let r = tus(&gw, "POST", ENDPOINT, &alice)
        .header("Upload-Length", "700000")
        .send()
        .await
        .unwrap();
    let message = expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert!(message.contains("599990"), "{message}");
    create(&gw, &alice, 10, "c").await;
    let r = tus(&gw, "POST", ENDPOINT, &alice)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    let message = expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert!(message.contains("3 files"), "{message}");
    // Another user's quota is their own.
    let bob = gw.user_token("bob").await;
    create(&gw, &bob, 10, "d").await;
}

#[tokio::test]
async fn an_upload_left_past_its_expiry_answers_410_and_its_bytes_are_removed() {
    let clock = ManualClock::new();
    let moved = clock.clone();
    let gw = TestGateway::start_with(move |c| {
        c.clock = std::sync::Arc::new(moved);
        c.blobs.resume_for = Duration::from_secs(3600);
        // Seldom enough that the sweep rarely comes between the clock's
        // move and the PATCH that must see 410 (after it, the upload is
        // gone: 404); often enough for the wait below.
        c.blobs.sweep_every = Duration::from_secs(1);
    })
    .await;
    with_blobs(&gw).await;
    let alice = gw.user_token("alice").await;
    let at = create(&gw, &alice, 1_000, "partial").await;
    let r = patch(&gw, &alice, &at, 0)
        .body(vec![7u8; 400])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let done = create(&gw, &alice, 3, "whole").await;
    let r = patch(&gw, &alice, &done, 0)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Each piece gives the upload another hour to resume.
    clock.advance(Duration::from_secs(3000));
    let r = patch(&gw, &alice, &at, 400)
        .body(vec![7u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    clock.advance(Duration::from_secs(3599));
    assert_eq!(offset_of(&gw, &alice, &at).await, 500);
    clock.advance(Duration::from_secs(2));
    let r = patch(&gw, &alice, &at, 500)
        .body(vec![7u8; 500])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::GONE, "upload_expired").await;
    // The sweep removes it, bytes and all; the complete one stays.
    let folder = gw
        .data_dir
        .path()
        .join("blobs/handoff")
        .join(at.rsplit('/').next().unwrap());
    for _ in 0..200 {
        if !folder.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !folder.exists(),
        "the expired upload's bytes are still there"
    );
    let r = tus(&gw, "HEAD", &at, &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(offset_of(&gw, &alice, &done).await, 3);
    assert_eq!(stored(gw.data_dir.path(), &done), b"abc");
}
