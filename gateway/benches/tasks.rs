//! Cloud tasks backups, one gateway node on SQLite with blobs in its data
//! dir, the tasks plugin, loopback HTTP:
//! - 10,000 contacts (one JSON document, as a phone exports them) backed up
//!   from one device and restored on another: contacts/s and MiB/s each
//!   way, the median of several rounds;
//! - 100 photos (2 MiB each, incompressible) backed up one request per
//!   photo, 4 at a time, and restored the same way on the other device:
//!   photos/s and MiB/s each way.
//!
//! Every restored byte is compared with what went up.
//!
//! Run: `cargo bench -p gateway --bench tasks` (builds the tasks plugin
//! first). `BENCH_CONTACTS` (10000), `BENCH_PHOTOS` (100),
//! `BENCH_PHOTO_KIB` (2048), `BENCH_ROUNDS` (5) change the workload.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use common::{env_or, mib, tasks_wasm, Node};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::time::Instant;

const PARALLEL: usize = 4;

/// `n` contacts as one JSON document, about 200 bytes each.
fn contacts(n: usize) -> Vec<u8> {
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("c{i:05}"), "name": format!("Contact Number {i}"),
                "phones": [format!("+1 555 {:04}", i % 10_000)],
                "emails": [format!("contact{i}@example.org")],
                "note": "met at the conference; prefers messages to calls"})
        })
        .collect();
    serde_json::to_vec(&json!({"contacts": list})).unwrap()
}

/// Incompressible bytes standing for a photo.
fn photo(seed: u64, size: usize) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out.into()
}

async fn put(
    node: &Node,
    token: &str,
    kind: &str,
    content_type: &str,
    body: bytes::Bytes,
) -> String {
    let r = node
        .client
        .put(node.url(&format!("/v1/services/tasks/backups/{kind}")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn content(node: &Node, token: &str, id: &str) -> bytes::Bytes {
    let r = node
        .client
        .get(node.url(&format!("/v1/services/tasks/backups/{id}/content")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap()
}

/// The ids of the backups of `kind` made by `device`, listed by `token`.
async fn listed(node: &Node, token: &str, device: &str, kind: &str) -> Vec<String> {
    let page: Value = node
        .client
        .get(node.url(&format!(
            "/v1/services/tasks/backups?device={device}&kind={kind}"
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_contacts = env_or("BENCH_CONTACTS", 10_000);
    let n_photos = env_or("BENCH_PHOTOS", 100);
    let photo_bytes = env_or("BENCH_PHOTO_KIB", 2048) << 10;
    let rounds = env_or("BENCH_ROUNDS", 5).max(1);
    let wasm = tasks_wasm();
    let node = Node::start(tempfile::tempdir().unwrap(), |c| {
        c.delivery.concurrency = 0;
    })
    .await;
    node.install_service(
        &json!({"id": "tasks", "name": "Cloud tasks",
            "grants": ["kv", "events", "timers", "clock", "log", "blobs", "media"]}),
        wasm,
    )
    .await;
    let user = node.user("alice").await;
    let phone = node.device(&user, "phone").await;
    let laptop = node.device(&user, "laptop").await;

    // Contacts: one document up from the phone, down on the laptop.
    let doc = bytes::Bytes::from(contacts(n_contacts));
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        put(&node, &phone, "contacts", "application/json", doc.clone()).await;
        up.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let newest = listed(&node, &laptop, "phone", "contacts").await;
        let got = content(&node, &laptop, &newest[0]).await;
        down.push(started.elapsed().as_secs_f64());
        assert!(got == doc, "the restored contacts differ");
    }
    let (up, down) = (median(up), median(down));
    println!(
        "contacts: {n_contacts} ({:.2} MiB) backed up in {:.1} ms = {:.0} contacts/s, {:.1} MiB/s; \
         restored on another device in {:.1} ms = {:.0} contacts/s, {:.1} MiB/s (median of {rounds})",
        mib(doc.len()),
        up * 1e3,
        n_contacts as f64 / up,
        mib(doc.len()) / up,
        down * 1e3,
        n_contacts as f64 / down,
        mib(doc.len()) / down,
    );

    // Photos: one request each, PARALLEL at a time.
    let photos: Vec<bytes::Bytes> = (0..n_photos)
        .map(|i| photo(i as u64, photo_bytes))
        .collect();
    let total = n_photos * photo_bytes;
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(photos.iter().cloned())
        .map(|p| put(&node, &phone, "photos", "image/jpeg", p))
        .buffered(PARALLEL)
        .collect()
        .await;
    let up = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let restorable = listed(&node, &laptop, "phone", "photos").await;
    assert_eq!(restorable.len(), n_photos);
    let got: Vec<bytes::Bytes> = futures::stream::iter(ids.iter())
        .map(|id| async { Ok::<_, ()>(content(&node, &laptop, id).await) })
        .buffered(PARALLEL)
        .try_collect()
        .await
        .unwrap();
    let down = started.elapsed().as_secs_f64();
    assert!(got == photos, "the restored photos differ");
    println!(
        "photos: {n_photos} x {} KiB ({:.0} MiB) backed up in {:.2} s = {:.1} photos/s, {:.1} MiB/s; \
         restored on another device in {:.2} s = {:.1} photos/s, {:.1} MiB/s ({PARALLEL} requests at a time)",
        photo_bytes >> 10,
        mib(total),
        up,
        n_photos as f64 / up,
        mib(total) / up,
        down,
        n_photos as f64 / down,
        mib(total) / down,
    );
    node.stop().await;
}
