//! File sync across gateway processes: two gateways on one PostgreSQL with
//! their blobs in one S3-compatible bucket (moto, on loopback), an upload
//! begun on one and finished and downloaded on the other; and a gateway
//! killed with SIGKILL mid-upload, restarted on its data: the upload
//! resumes from the offset it reports and the file's sha256 holds.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use e2e_tests::process::GatewayProcess;
use e2e_tests::{crash_kit, postgres_admin_url, s3_server, service_plugin, TestGateway};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

const UPLOADS: &str = "/v1/services/files/uploads";

fn manifest() -> Value {
    json!({"id": "files", "name": "Files",
        "grants": ["kv", "devices", "events", "clock", "log", "blobs"]})
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

/// A device token of a new user `name` on the gateway at `base`.
async fn device_token(client: &Client, base: &str, name: &str) -> String {
    let body = json!({"username": name, "password": "correct horse battery"});
    let r = client
        .post(format!("{base}/v1/users"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let session: Value = client
        .post(format!("{base}/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = session["token"].as_str().unwrap();
    let device: Value = client
        .post(format!("{base}/v1/devices"))
        .bearer_auth(user)
        .json(&json!({"id": "laptop", "name": "laptop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    device["token"].as_str().unwrap().to_owned()
}

/// Announces a file and creates its upload: (file id, upload path).
async fn begin(client: &Client, base: &str, token: &str, size: usize) -> (String, String) {
    let batch: Value = client
        .post(format!("{base}/v1/services/files/batches"))
        .bearer_auth(token)
        .json(&json!({"files": [{"name": "big.bin", "type": "application/octet-stream", "size": size}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = batch["files"][0]["id"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{base}{UPLOADS}"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", size.to_string())
        .header(
            "Upload-Metadata",
            format!(
                "file_id {}",
                base64::engine::general_purpose::STANDARD.encode(&id)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    (id, r.headers()["location"].to_str().unwrap().to_owned())
}

async fn patch(client: &Client, base: &str, token: &str, at: &str, offset: usize, bytes: &[u8]) {
    let r = client
        .patch(format!("{base}{at}"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
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

async fn offset(client: &Client, base: &str, token: &str, at: &str) -> usize {
    let r = client
        .head(format!("{base}{at}"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn download(client: &Client, base: &str, token: &str, id: &str) -> (Value, Vec<u8>) {
    let record: Value = client
        .get(format!("{base}/v1/services/files/files/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client
        .get(format!("{base}/v1/services/files/files/{id}/content"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{record}");
    (record, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_begun_on_one_node_ends_and_downloads_on_another_through_s3() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let Some((s3, bucket)) = s3_server() else {
        return;
    };
    let db = registry_db::scratch::ScratchDatabase::create(&admin_url, "gateway_files_nodes")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let store = format!(
        "s3://{bucket}/{prefix}?endpoint={s3}&region=us-east-1&allow_http=true&skip_signature=true"
    );
    let key = gateway::secrets::MasterKey::generate();
    let start = |key: gateway::secrets::MasterKey| {
        let (url, store) = (db.url().to_owned(), store.clone());
        TestGateway::start_with(move |c| {
            c.database_url = url;
            c.master_key = key;
            c.blob_store = Some(store);
        })
    };
    let a = start(key.clone()).await;
    let b = start(key).await;
    let r = a
        .upload_service(&manifest(), &service_plugin("files"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let client = Client::new();
    let token = device_token(&client, &a.base, "alice").await;
    // 12 MiB: more than one S3 multipart part per piece.
    let file = content(12 << 20);
    let (id, at) = begin(&client, &a.base, &token, file.len()).await;
    patch(&client, &a.base, &token, &at, 0, &file[..7 << 20]).await;
    // Node B has not seen the first piece: it reads it back from the
    // bucket to carry the file's sha256 on.
    assert_eq!(offset(&client, &b.base, &token, &at).await, 7 << 20);
    patch(&client, &b.base, &token, &at, 7 << 20, &file[7 << 20..]).await;
    let (record, bytes) = download(&client, &a.base, &token, &id).await;
    assert_eq!(record["status"], "11");
    assert_eq!(record["sha256"], hex::encode(sha2::Sha256::digest(&file)));
    assert!(bytes == file, "node A sent other bytes");
    let (_, bytes) = download(&client, &b.base, &token, &id).await;
    assert!(bytes == file, "node B sent other bytes");
    // Nothing of it in the data dirs: the bucket holds the bytes.
    assert!(!a.data_dir.path().join("blobs/files").exists());
    assert!(!b.data_dir.path().join("blobs/files").exists());
}

/// Uploads the files service to a gateway process, as the admin.
async fn install(client: &Client, gw: &GatewayProcess) {
    crash_kit::upload_service(client, gw, &manifest(), &service_plugin("files")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_upload_resumes_it_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let envs = crash_kit::envs(&crash_kit::hex_key());
    let args = ["--data-dir", dir.as_str()];
    let mut gw = crash_kit::start(&args, &envs).await;
    let client = Client::new();
    install(&client, &gw).await;
    let token = device_token(&client, &gw.base, "alice").await;
    let file = content(3 << 20);
    let (id, at) = begin(&client, &gw.base, &token, file.len()).await;
    patch(&client, &gw.base, &token, &at, 0, &file[..1 << 20]).await;

    // A PATCH of the rest whose first half is on the wire when the gateway
    // is killed.
    let mut socket = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let head = format!(
        "PATCH {at} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {}\r\nContent-Length: {}\r\n\r\n",
        gw.addr(),
        1 << 20,
        file.len() - (1 << 20)
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&file[1 << 20..2 << 20]).await.unwrap();
    socket.flush().await.unwrap();
    let addr = gw.addr().to_owned();
    gw.kill();
    drop(socket);

    let gw = crash_kit::start_listening(&addr, &args, &envs).await;
    let resume = offset(&client, &gw.base, &token, &at).await;
    // The piece on the wire died with the process; the stored one holds.
    assert_eq!(resume, 1 << 20);
    patch(&client, &gw.base, &token, &at, resume, &file[resume..]).await;
    let (record, bytes) = download(&client, &gw.base, &token, &id).await;
    assert_eq!(record["status"], "11");
    assert_eq!(record["sha256"], hex::encode(sha2::Sha256::digest(&file)));
    assert!(bytes == file);
}
