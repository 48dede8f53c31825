//! Several `gateway serve` processes (the release build) on one PostgreSQL:
//! - scale-out: deliveries per second with 1, 2 and 4 delivering processes
//!   draining the same queue to a loopback network answering 200 (every
//!   outcome persisted), and the ratios 2/1 and 4/1;
//! - crash redelivery: a process with 64 pushes in flight (the network holds
//!   each 3 s) is killed with SIGKILL while a second process runs; how long
//!   until the second one pushed each of them (lease 10 s, renewed every
//!   third while a push runs).
//!
//! Run: `cargo bench -p gateway --bench cluster` (PostgreSQL from
//! `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! `BENCH_USERS` changes the changes per round, default 10,000, each with
//! two targets).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use common::outbox::{
    manifest, post_change, receiver, receiver_holding, release_gateway, seed_users, upload,
    Process, Receiver,
};
use common::{env_or, percentiles, webhook_wasm};
use futures::StreamExt;
use gateway::secrets::MasterKey;
use registry_db::Registry;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A process on the shared database with `concurrency` delivery slots.
fn node(
    binary: &Path,
    key: &MasterKey,
    url: &str,
    concurrency: usize,
) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let concurrency = concurrency.to_string();
    let process = Process::start(
        binary,
        key,
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--database-url",
            url,
            "--delivery-concurrency",
            &concurrency,
        ],
    );
    (process, dir)
}

async fn report(client: &reqwest::Client, base: &str, tokens: &[String], tag: &str) {
    futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, t)| post_change(client, base, t, format!("{tag}-{i}")))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// Starts `n` delivering processes on a filled queue; deliveries per second
/// from the first push until every outcome is stored.
async fn drain(
    binary: &Path,
    key: &MasterKey,
    url: &str,
    registry: &Registry,
    sink: &Receiver,
    n: usize,
) -> f64 {
    let before = sink.count.load(Ordering::Relaxed);
    let total = registry.open_deliveries().await.unwrap() as usize;
    let nodes: Vec<_> = (0..n).map(|_| node(binary, key, url, 64)).collect();
    while sink.count.load(Ordering::Relaxed) == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while registry.open_deliveries().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(nodes);
    rate
}

async fn scale_out(binary: &Path, key: &MasterKey, url: &str, wasm: &[u8], users: usize) {
    let sink = receiver().await;
    let (api, _api_dir) = node(binary, key, url, 0);
    for id in ["source", "sink1", "sink2"] {
        upload(
            &api.base,
            &manifest(id, &sink.origin, 1_000_000, 1_000_000),
            wasm,
        )
        .await;
    }
    let registry = Registry::connect(url).await.unwrap();
    let tokens = seed_users(&registry, key, "u", users, &["source", "sink1", "sink2"]).await;
    let client = reqwest::Client::new();
    let mut rates = Vec::new();
    for n in [1, 2, 4] {
        report(&client, &api.base, &tokens, &format!("round{n}")).await;
        let rate = drain(binary, key, url, &registry, &sink, n).await;
        println!(
            "  {n} process(es): {rate:>8.0} deliveries/s ({} deliveries, outcomes persisted)",
            users * 2
        );
        rates.push(rate);
    }
    println!(
        "  ratio 2/1: {:.2}, 4/1: {:.2} (2 cores, shared with PostgreSQL and this load)",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );
    registry.close().await;
}

async fn crash(binary: &Path, key: &MasterKey, url: &str, wasm: &[u8]) {
    const IN_FLIGHT: usize = 64;
    let slow = receiver_holding(Duration::from_secs(3)).await;
    let (api, _api_dir) = node(binary, key, url, 0);
    upload(
        &api.base,
        &manifest("slow", &slow.origin, 1_000_000, 1_000_000),
        wasm,
    )
    .await;
    let registry = Registry::connect(url).await.unwrap();
    let tokens = seed_users(&registry, key, "k", IN_FLIGHT, &["source", "slow"]).await;
    let client = reqwest::Client::new();
    let (mut doomed, _doomed_dir) = node(binary, key, url, IN_FLIGHT);
    report(&client, &api.base, &tokens, "crash").await;
    while slow.count.load(Ordering::Relaxed) < IN_FLIGHT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_survivor, _survivor_dir) = node(binary, key, url, IN_FLIGHT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    doomed.kill();
    let deadline = killed + Duration::from_secs(60);
    let redelivered = loop {
        let after: Vec<Duration> = slow
            .first_arrivals(Some(killed))
            .into_values()
            .map(|at| at - killed)
            .collect();
        if after.len() == IN_FLIGHT || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (p50, _, _) = percentiles(redelivered.clone());
    let max = redelivered.iter().max().copied().unwrap_or_default();
    println!(
        "  crash: {} of {IN_FLIGHT} deliveries in flight on a SIGKILLed process pushed again by the other: p50 {p50:.2?}, max {max:.2?} after the kill",
        redelivered.len()
    );
    registry.close().await;
}

fn main() {
    let users = env_or("BENCH_USERS", 10_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let wasm = webhook_wasm();
        let binary = release_gateway();
        let key = MasterKey::generate();
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let db = registry_db::scratch::ScratchDatabase::create(&admin, "cluster")
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        println!("cluster on PostgreSQL:");
        scale_out(&binary, &key, db.url(), &wasm, users).await;
        crash(&binary, &key, db.url(), &wasm).await;
        db.drop_now().await.unwrap();
    });
}
