//! File sync (F1-F8, R1-R3) through the real gateway and HTTP: the `files`
//! service plugin with the host's blobs. A batch manifest, then a tus
//! upload whose statuses 01 -> 10 -> 00 (connection cut) -> 10 -> 11 a
//! second device sees on its event stream; a download refused until `11`
//! and `file.available` after; per-device download statuses; ranges;
//! re-upload, re-download and delete; upload orders with their route; bad
//! input and another user's files.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use e2e_tests::sse::EventStream;
use e2e_tests::{expect_error, service_plugin, TestGateway};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const UPLOADS: &str = "/v1/services/files/uploads";

async fn start() -> TestGateway {
    let gw = TestGateway::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let manifest = json!({"id": "files", "name": "Files",
        "grants": ["kv", "devices", "events", "clock", "log", "blobs"]});
    let r = gw.upload_service(&manifest, &service_plugin("files")).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    gw
}

/// A device of `user` seen at `ip`; its token.
async fn device(gw: &TestGateway, user: &str, id: &str, ip: &str) -> String {
    let r = gw
        .client
        .post(gw.url("/v1/devices"))
        .bearer_auth(user)
        .header("X-Forwarded-For", ip)
        .json(&json!({"id": id, "name": id, "port": 7000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn files(gw: &TestGateway, token: &str, method: &str, path: &str) -> RequestBuilder {
    gw.client
        .request(
            method.parse().unwrap(),
            gw.url(&format!("/v1/services/files{path}")),
        )
        .bearer_auth(token)
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    r.json().await.unwrap()
}

/// The next `files.file.updated` of file `id`; its status.
async fn next_status(stream: &mut EventStream, id: &str) -> String {
    loop {
        let event = stream
            .next_of("files.file.updated", WAIT)
            .await
            .expect("a file.updated event");
        if event.data["id"] == id {
            return event.data["status"].as_str().unwrap().to_owned();
        }
    }
}

fn tus(gw: &TestGateway, token: &str, method: &str, path: &str) -> RequestBuilder {
    gw.client
        .request(method.parse().unwrap(), gw.url(path))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn create_upload(
    gw: &TestGateway,
    token: &str,
    length: usize,
    metadata: &str,
) -> reqwest::Response {
    tus(gw, token, "POST", UPLOADS)
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .unwrap()
}

async fn patch(gw: &TestGateway, token: &str, at: &str, offset: usize, bytes: &[u8]) {
    let r = tus(gw, token, "PATCH", at)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
}

async fn record(gw: &TestGateway, token: &str, id: &str) -> Value {
    json_of(
        files(gw, token, "GET", &format!("/files/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await
}

/// Waits until the record's download status of `device` is `state`.
async fn download_state(gw: &TestGateway, token: &str, id: &str, device: &str, state: &str) {
    for _ in 0..200 {
        if record(gw, token, id).await["downloads"][device] == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the download of {device} never became {state}: {}",
        record(gw, token, id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_01_10_00_10_11_before_the_eyes_of_another_device() {
    let gw = start().await;
    let alice = gw.user_token("alice").await;
    let laptop = device(&gw, &alice, "laptop", "192.168.1.10").await;
    let phone = device(&gw, &alice, "phone", "192.168.1.20").await;
    let mut seen = gw.inbox(&phone).await;

    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&file));
    let batch = json!({"files": [
        {"name": "talk.mp4", "type": "video/mp4", "size": file.len(), "sha256": sha},
        {"name": "notes.txt", "type": "text/plain", "size": 5}]});
    let made = json_of(
        files(&gw, &laptop, "POST", "/batches")
            .json(&batch)
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = made["files"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(made["files"][0]["status"], "01");
    assert_eq!(made["files"][0]["batch_count"], 2);
    assert_eq!(made["files"][1]["batch_id"], made["batch_id"]);
    assert_eq!(next_status(&mut seen, &id).await, "01");

    // Not uploaded: refused with the status, and remembered.
    let r = files(&gw, &phone, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    let refused = json_of(r, StatusCode::CONFLICT).await;
    assert_eq!(refused["error"]["code"], "not_uploaded");
    assert_eq!(refused["status"], "01");

    let r = create_upload(&gw, &laptop, file.len(), &format!("file_id {}", b64(&id))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let at = r.headers()["location"].to_str().unwrap().to_owned();
    patch(&gw, &laptop, &at, 0, &file[..100_000]).await;
    assert_eq!(next_status(&mut seen, &id).await, "10");
    let r = files(&gw, &phone, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    let refused = json_of(r, StatusCode::CONFLICT).await;
    assert_eq!(refused["status"], "10");
    assert_eq!(refused["offset"], 100_000);

    gw.cut_patch(&laptop, &at, 100_000, 200_000, &file[100_000..150_000])
        .await;
    assert_eq!(next_status(&mut seen, &id).await, "00");
    let failed = record(&gw, &phone, &id).await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("150000 of 300000"),
        "{failed}"
    );

    let r = tus(&gw, &laptop, "HEAD", &at).send().await.unwrap();
    let resume: usize = r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resume, 150_000);
    patch(&gw, &laptop, &at, resume, &file[resume..]).await;
    assert_eq!(next_status(&mut seen, &id).await, "10");
    assert_eq!(next_status(&mut seen, &id).await, "11");
    let available = seen
        .next_of("files.file.available", WAIT)
        .await
        .expect("file.available");
    assert_eq!(available.data["id"], id.as_str());

    // The phone downloads it whole, then a range of it.
    let r = files(&gw, &phone, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), file.as_slice());
    download_state(&gw, &phone, &id, "phone", "done").await;
    let r = files(&gw, &laptop, "GET", &format!("/files/{id}/content"))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[1000..2000]);
    download_state(&gw, &laptop, &id, "laptop", "downloading").await;
    let r = files(&gw, &laptop, "GET", &format!("/files/{id}/content"))
        .header("Range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;
    let r = files(&gw, &laptop, "GET", &format!("/files/{id}/content"))
        .header("Range", "bytes=2000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[2000..]);
    download_state(&gw, &laptop, &id, "laptop", "done").await;

    // The list, and its view of succeeded files only.
    let all = json_of(
        files(&gw, &phone, "GET", "/files").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["files"].as_array().unwrap().len(), 2);
    let done = json_of(
        files(&gw, &phone, "GET", "/files?status=11")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let done = done["files"].as_array().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], id.as_str());
    assert_eq!(done[0]["uploaded_by"], "laptop");
    assert_eq!(done[0]["sha256"], sha.as_str());

    // Download again: the phone's status resets and it is told at once.
    let again = json_of(
        files(&gw, &phone, "POST", &format!("/files/{id}/redownload"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["downloads"]["phone"], "none");
    seen.next_of("files.file.available", WAIT)
        .await
        .expect("file.available again");

    // Upload again: back to 01, the uploader is told, downloads refused.
    let mut laptop_inbox = gw.inbox(&laptop).await;
    let back = json_of(
        files(&gw, &phone, "POST", &format!("/files/{id}/reupload"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(back["status"], "01");
    let told = laptop_inbox
        .next_of("files.file.reupload", WAIT)
        .await
        .expect("file.reupload");
    assert_eq!(told.data["id"], id.as_str());
    let r = files(&gw, &phone, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r, StatusCode::CONFLICT).await["status"], "01");
    let r = tus(&gw, &laptop, "HEAD", &at).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the old bytes are gone");

    // Delete: gone for everyone.
    let r = files(&gw, &laptop, "DELETE", &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let gone = seen
        .next_of("files.file.deleted", WAIT)
        .await
        .expect("file.deleted");
    assert_eq!(gone.data["id"], id.as_str());
    let r = files(&gw, &phone, "GET", &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_must_match_a_record_and_files_stay_their_users() {
    let gw = start().await;
    let alice = gw.user_token("alice").await;
    let laptop = device(&gw, &alice, "laptop", "192.168.1.10").await;
    let made = json_of(
        files(&gw, &laptop, "POST", "/batches")
            .json(
                &json!({"files": [{"name": "a.txt", "type": "text/plain", "size": 3,
                "sha256": hex::encode(sha2::Sha256::digest(b"abc"))}]}),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let id = made["files"][0]["id"].as_str().unwrap().to_owned();

    // The wrong size, an unknown record, no name: refused by the service.
    let r = create_upload(&gw, &laptop, 4, &format!("file_id {}", b64(&id))).await;
    let message = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "upload_refused").await;
    assert!(message.contains("3 bytes"), "{message}");
    let r = create_upload(&gw, &laptop, 3, &format!("file_id {}", b64("nope"))).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "upload_refused").await;
    let r = create_upload(&gw, &laptop, 3, "").await;
    let message = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "upload_refused").await;
    assert!(message.contains("filename"), "{message}");

    // Bytes whose sha256 is not the announced one: 00 with the reason.
    let r = create_upload(&gw, &laptop, 3, &format!("file_id {}", b64(&id))).await;
    let at = r.headers()["location"].to_str().unwrap().to_owned();
    patch(&gw, &laptop, &at, 0, b"abd").await;
    let bad = record(&gw, &laptop, &id).await;
    assert_eq!(bad["status"], "00");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("not the announced"),
        "{bad}"
    );
    // It may be uploaded again, right this time.
    let r = create_upload(&gw, &laptop, 3, &format!("file_id {}", b64(&id))).await;
    let at = r.headers()["location"].to_str().unwrap().to_owned();
    patch(&gw, &laptop, &at, 0, b"abc").await;
    assert_eq!(record(&gw, &laptop, &id).await["status"], "11");

    // A new file by name alone (a stock tus client's metadata).
    let r = create_upload(
        &gw,
        &laptop,
        2,
        &format!("filename {},filetype {}", b64("hi.txt"), b64("text/plain")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let at = r.headers()["location"].to_str().unwrap().to_owned();
    patch(&gw, &laptop, &at, 0, b"hi").await;
    let list = json_of(
        files(&gw, &laptop, "GET", "/files?status=11")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let named: Vec<&Value> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "hi.txt")
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0]["batch_count"], 1);
    assert_eq!(named[0]["type"], "text/plain");

    // Bob sees none of it.
    let bob = gw.user_token("bob").await;
    let r = files(&gw, &bob, "GET", &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_file").await;
    let r = files(&gw, &bob, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_file").await;
    let r = files(&gw, &bob, "DELETE", &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_file").await;
    let r = create_upload(&gw, &bob, 3, &format!("file_id {}", b64(&id))).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "upload_refused").await;
    let list = json_of(
        files(&gw, &bob, "GET", "/files").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["files"], json!([]));

    // Bad manifests and queries.
    for (body, why) in [
        (json!({"files": []}), "1 to"),
        (
            json!({"files": [{"name": "../x", "type": "text/plain", "size": 1}]}),
            "file names",
        ),
        (
            json!({"files": [{"name": "x", "type": "text", "size": 1}]}),
            "media type",
        ),
        (
            json!({"files": [{"name": "x", "type": "text/plain", "size": -1}]}),
            "u64",
        ),
        (
            json!({"files": [{"name": "x", "type": "text/plain", "size": 1, "sha256": "ab"}]}),
            "64 hex",
        ),
        (
            json!({"files": [{"name": "x", "type": "text/plain", "size": 1, "extra": 1}]}),
            "extra",
        ),
        (json!({"things": []}), "things"),
    ] {
        let r = files(&gw, &laptop, "POST", "/batches")
            .json(&body)
            .send()
            .await
            .unwrap();
        let message = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        assert!(message.contains(why), "{body}: {message}");
    }
    let r = files(&gw, &laptop, "POST", "/batches")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = files(&gw, &laptop, "GET", "/files?status=12")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_order_goes_direct_on_one_network_and_through_the_gateway_otherwise() {
    let gw = start().await;
    let alice = gw.user_token("alice").await;
    let laptop = device(&gw, &alice, "laptop", "192.168.1.10").await;
    let _phone = device(&gw, &alice, "phone", "192.168.1.20").await;
    let away = device(&gw, &alice, "away", "198.51.100.7").await;
    let mut phone_inbox = {
        // The phone's stream, opened from its network.
        let r = gw
            .client
            .get(gw.url("/v1/devices/current/events"))
            .bearer_auth(&_phone)
            .header("X-Forwarded-For", "192.168.1.20")
            .send()
            .await
            .unwrap();
        EventStream::new(r)
    };

    let order = json_of(
        files(&gw, &laptop, "POST", "/orders")
            .header("X-Forwarded-For", "192.168.1.10")
            .json(&json!({"device": "phone", "paths": ["/sdcard/DCIM/1.jpg"]}))
            .send()
            .await
            .unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(order["route"], "direct");
    assert_eq!(order["target"], json!({"ip": "192.168.1.20", "port": 7000}));
    let told = phone_inbox
        .next_of("files.upload.order", WAIT)
        .await
        .expect("upload.order");
    assert_eq!(told.data["order_id"], order["order_id"]);
    assert_eq!(told.data["route"], "direct");
    assert_eq!(told.data["paths"], json!(["/sdcard/DCIM/1.jpg"]));

    let relay = json_of(
        files(&gw, &laptop, "POST", "/orders")
            .json(&json!({"device": "away", "paths": ["/home/a.txt"]}))
            .send()
            .await
            .unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(relay["route"], "relay");
    assert!(relay.get("target").is_none());
    let _ = away;

    // Unknown devices, empty paths, a user token.
    let r = files(&gw, &laptop, "POST", "/orders")
        .json(&json!({"device": "tv", "paths": ["/a"]}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_device").await;
    let r = files(&gw, &laptop, "POST", "/orders")
        .json(&json!({"device": "phone", "paths": []}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = files(&gw, &alice, "POST", "/orders")
        .json(&json!({"device": "phone", "paths": ["/a"]}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "device_token_required").await;
}

/// The Python of `target/test-servers/clients-venv` (tuspy, installed by
/// `scripts/test-servers.sh`); `None` outside CI when it is missing.
fn tus_client_python() -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-servers/clients-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true requires tuspy: run ./scripts/test-servers.sh"
    );
    eprintln!(
        "tuspy missing ({}): run ./scripts/test-servers.sh; skipped",
        python.display()
    );
    None
}

/// tuspy, the tus project's own Python client, uploads a file in 64 KiB
/// chunks with sha1 checksums, stops, then a second client that knows only
/// the URL resumes it: the file is `11` and its bytes are the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_tus_client_uploads_and_resumes() {
    let Some(python) = tus_client_python() else {
        return;
    };
    let gw = start().await;
    let alice = gw.user_token("alice").await;
    let laptop = device(&gw, &alice, "laptop", "192.168.1.10").await;
    let file: Vec<u8> = (0..500_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holiday.raw");
    std::fs::write(&path, &file).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/tus_upload.py");
    let endpoint = gw.url(UPLOADS);
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([endpoint.as_str(), laptop.as_str()])
        .arg(&path)
        .args(["196608", "65536"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "tuspy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut lines = printed.lines();
    let url = lines.next().unwrap();
    assert!(url.starts_with(&format!("{endpoint}/")), "{url}");
    assert_eq!(
        lines.next(),
        Some("196608"),
        "the second client resumed elsewhere"
    );

    let list = json_of(
        files(&gw, &laptop, "GET", "/files?status=11")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let record = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "holiday.raw")
        .unwrap_or_else(|| panic!("no holiday.raw in {list}"))
        .clone();
    assert_eq!(record["size"], file.len());
    assert_eq!(record["sha256"], hex::encode(sha2::Sha256::digest(&file)));
    let id = record["id"].as_str().unwrap();
    let r = files(&gw, &laptop, "GET", &format!("/files/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), file.as_slice());
}
