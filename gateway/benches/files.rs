//! File sync, one gateway node on SQLite with blobs in its data dir:
//! - upload throughput through tus on loopback: a file in 8 MiB `PATCH`es
//!   (1 GiB by default) against the raw write speed of the same disk (the
//!   same bytes in the same chunks written to a file in the same folder, no
//!   fsync, as the blob store writes; measured before and after the uploads,
//!   the faster one counts), and the ratio; the process's RSS
//!   before, at its peak during, and after uploads of 1/4 of the size and
//!   of the whole size (it must not grow with the size),
//! - status fan-out: 100 devices of one user, each holding its event
//!   stream and refused the file while it uploads; from the `204` of the
//!   upload's last byte to `files.file.available` on every device (p50,
//!   p99, last), over several files.
//!
//! Run: `cargo bench -p gateway --bench files` (builds the files plugin
//! first). `BENCH_UPLOAD_MIB` (default 1024), `BENCH_WAITERS` (default 100),
//! `BENCH_FANOUT_FILES` (default 5), `BENCH_DIR` (the folder whose disk is
//! measured; default the system's temp folder) and `BENCH_SCENARIOS`
//! (`throughput,fanout`) change what runs.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use base64::Engine;
use common::{env_or, files_wasm, mib, open_stream, percentiles, rss_bytes, Node, Seen};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 8 << 20;
const WAIT: Duration = Duration::from_secs(60);

fn wanted(item: &str) -> bool {
    std::env::var("BENCH_SCENARIOS").map_or(true, |list| list.split(',').any(|v| v.trim() == item))
}

/// A gateway node with the files service installed.
async fn start(waiters: usize) -> Node {
    // `BENCH_DIR` picks the disk (default: the system's temp folder).
    let dir = match std::env::var("BENCH_DIR") {
        Ok(root) => tempfile::tempdir_in(root),
        Err(_) => tempfile::tempdir(),
    }
    .unwrap();
    let node = Node::start(dir, |c| {
        c.delivery.concurrency = 0;
        c.devices.max_streams_per_user = waiters + 8;
    })
    .await;
    node.install_service(
        &json!({"id": "files", "name": "Files",
            "grants": ["kv", "devices", "events", "clock", "log", "blobs"]}),
        files_wasm(),
    )
    .await;
    node
}

impl Node {
    /// Announces a file of `size` bytes and creates its upload.
    async fn begin(&self, token: &str, name: &str, size: usize) -> (String, String) {
        let batch: Value = self
            .client
            .post(self.url("/v1/services/files/batches"))
            .bearer_auth(token)
            .json(&json!({"files": [{"name": name, "type": "application/octet-stream", "size": size}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = batch["files"][0]["id"].as_str().unwrap().to_owned();
        let r = self
            .client
            .post(self.url("/v1/services/files/uploads"))
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
        assert_eq!(r.status(), 201);
        (id, r.headers()["location"].to_str().unwrap().to_owned())
    }

    async fn patch(&self, token: &str, at: &str, offset: usize, bytes: bytes::Bytes) {
        let r = self
            .client
            .patch(self.url(at))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
}

/// Samples this process's RSS every 20 ms until stopped; the peak.
fn rss_peak() -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let task = tokio::spawn(async move {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(rss_bytes("self"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    (done, task)
}

/// Uploads `size` bytes in 8 MiB PATCHes: the seconds it took and the peak
/// RSS meanwhile.
async fn upload(
    node: &Node,
    token: &str,
    name: &str,
    size: usize,
    chunk: &bytes::Bytes,
) -> (f64, usize) {
    let (_, at) = node.begin(token, name, size).await;
    let (done, peak) = rss_peak();
    let started = Instant::now();
    let mut offset = 0;
    while offset < size {
        let len = CHUNK.min(size - offset);
        node.patch(token, &at, offset, chunk.slice(..len)).await;
        offset += len;
    }
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    (secs, peak.await.unwrap())
}

/// The same bytes in the same chunks written to a file in `dir`.
fn raw_write(dir: &std::path::Path, size: usize, chunk: &[u8]) -> f64 {
    let path = dir.join("raw-write.bin");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    let mut written = 0;
    while written < size {
        let len = CHUNK.min(size - written);
        file.write_all(&chunk[..len]).unwrap();
        written += len;
    }
    drop(file);
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    secs
}

async fn throughput() {
    let size = env_or("BENCH_UPLOAD_MIB", 1024) << 20;
    let node = start(8).await;
    let user = node.user("alice").await;
    let token = node.device(&user, "laptop").await;
    let chunk = bytes::Bytes::from((0..CHUNK).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
    let rss_before = rss_bytes("self");
    // The disk is measured before and after the uploads (the page cache's
    // writeback state differs) and the faster figure is the reference.
    let raw_before = raw_write(node.dir.path(), size, &chunk);
    let (quarter_secs, quarter_peak) = upload(&node, &token, "quarter.bin", size / 4, &chunk).await;
    let (secs, peak) = upload(&node, &token, "whole.bin", size, &chunk).await;
    let rss_after = rss_bytes("self");
    let raw_after = raw_write(node.dir.path(), size, &chunk);
    let raw = raw_before.min(raw_after);
    let tus_rate = mib(size) / secs;
    let raw_rate = mib(size) / raw;
    println!(
        "upload throughput, tus on loopback, {} MiB in 8 MiB PATCHes:",
        size >> 20
    );
    println!(
        "  tus {tus_rate:.0} MiB/s ({secs:.2} s); raw write of the same disk {raw_rate:.0} MiB/s (best of {:.0} before and {:.0} after); ratio {:.2}",
        mib(size) / raw_before,
        mib(size) / raw_after,
        tus_rate / raw_rate
    );
    println!(
        "  {} MiB first: {:.0} MiB/s",
        size >> 22,
        mib(size / 4) / quarter_secs
    );
    println!(
        "  RSS: {:.1} MiB before; peak {:.1} MiB during the {} MiB upload, {:.1} MiB during the {} MiB upload; {:.1} MiB after",
        mib(rss_before),
        mib(quarter_peak),
        size >> 22,
        mib(peak),
        size >> 20,
        mib(rss_after)
    );
    node.stop().await;
}

async fn fanout() {
    let waiters = env_or("BENCH_WAITERS", 100);
    let files = env_or("BENCH_FANOUT_FILES", 5);
    let node = start(waiters).await;
    let user = node.user("bob").await;
    let uploader = node.device(&user, "uploader").await;
    let mut tokens = Vec::new();
    for i in 0..waiters {
        tokens.push(node.device(&user, &format!("d{i:03}")).await);
    }
    // Every waiting device holds its stream.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    for (n, token) in tokens.iter().enumerate() {
        open_stream(&node.client, &node.base, token, n, tx.clone()).await;
    }
    let mut latencies = Vec::new();
    let mut lasts = Vec::new();
    let body = bytes::Bytes::from(vec![7u8; 64 << 10]);
    for n in 0..files {
        let (id, at) = node
            .begin(&uploader, &format!("f{n}.bin"), body.len() * 2)
            .await;
        node.patch(&uploader, &at, 0, body.clone()).await;
        // Each device asks while it uploads: refused, and remembered.
        for token in &tokens {
            let r = node
                .client
                .get(node.url(&format!("/v1/services/files/files/{id}/content")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409);
        }
        let sent = Instant::now();
        node.patch(&uploader, &at, body.len(), body.clone()).await;
        let answered = Instant::now();
        let mut got = 0;
        let mut last = Duration::ZERO;
        while got < waiters {
            let seen = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            let data: Value = serde_json::from_str(&seen.data).unwrap_or_default();
            if seen.event == "files.file.available" && data["id"] == id.as_str() {
                got += 1;
                latencies.push(seen.at.saturating_duration_since(answered));
                last = last.max(seen.at.saturating_duration_since(sent));
            }
        }
        lasts.push(last);
    }
    let (p50, p99, mean) = percentiles(latencies);
    println!("status fan-out: the upload's last byte -> files.file.available on {waiters} waiting devices, {files} files:");
    println!(
        "  after the last PATCH's 204: p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms; from the last PATCH sent to the last device: worst {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        lasts.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    node.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if wanted("throughput") {
        throughput().await;
    }
    if wanted("fanout") {
        fanout().await;
    }
}
