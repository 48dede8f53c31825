//! Instructions per ingest and per delivery, counted by valgrind's
//! callgrind in the release `gateway serve` process (SQLite, webhook
//! connector, a loopback network answering 200): a figure that does not move
//! with the machine's load or clock, so a regression shows without timing
//! noise.
//!
//! Method: each run starts from the same copy of one seeded data dir, and
//! reports one at a time (so every run commits the same transactions). An
//! API-only process takes `N` change reports, another `2N`; the difference of
//! their totals over `N` is one ingest (start-up, shutdown and the plugin
//! compile cancel out). The same with delivering processes, each change
//! pushed to two networks, gives ingest plus two deliveries.
//!
//! Run: `cargo bench -p gateway --bench instructions` (needs `valgrind`;
//! `BENCH_CHANGES` sets `N`, default 100; about 5 minutes).
//! `BENCH_CALLGRIND_DIR=DIR` keeps the four callgrind files there, for
//! `callgrind_annotate` (where the instructions go).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use common::outbox::{
    manifest, post_change, receiver, release_gateway, seed_users, upload, Process, Receiver,
};
use common::{env_or, webhook_wasm};
use futures::StreamExt;
use gateway::secrets::MasterKey;
use registry_db::Registry;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Copies the seeded data dir (files only; it has no sub-folders that
/// matter here) into a fresh one.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
        }
    }
    to
}

/// Total instructions of one `gateway serve` under callgrind that takes
/// `n` reports (delivering them when `deliver`).
async fn counted(
    binary: &Path,
    seeded: &Path,
    key: &MasterKey,
    tokens: &[String],
    sink: &Receiver,
    n: usize,
    deliver: bool,
) -> u64 {
    let dir = copy_dir(seeded);
    let out = dir.path().join("callgrind.out");
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let concurrency = if deliver { "2" } else { "0" };
    let mut node = Process::start_wrapped(
        &["valgrind", "--tool=callgrind", "--quiet", &out_arg],
        binary,
        key,
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--delivery-concurrency",
            concurrency,
            // Each instance reserves gigabytes of address space; valgrind
            // allows far less than the default 256 of them.
            "--plugin-instances",
            "2",
        ],
    );
    let before = sink.count.load(Ordering::Relaxed);
    let client = reqwest::Client::new();
    futures::stream::iter(tokens[..n].iter().enumerate())
        .map(|(i, t)| post_change(&client, &node.base, t, format!("counted-{i}")))
        // One at a time: the same transactions in every run (concurrent
        // reports would share group commits differently from run to run).
        .buffer_unordered(1)
        .collect::<Vec<_>>()
        .await;
    if deliver {
        let url = gateway::config::default_database_url(dir.path());
        let registry = Registry::connect(&url).await.unwrap();
        while sink.count.load(Ordering::Relaxed) < before + 2 * n
            || registry.open_deliveries().await.unwrap() > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry.close().await;
    }
    node.terminate();
    if let Ok(keep) = std::env::var("BENCH_CALLGRIND_DIR") {
        let kind = if deliver { "delivered" } else { "ingest" };
        let kept = Path::new(&keep).join(format!("callgrind.{kind}-{n}.out"));
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&out, &kept).unwrap();
        println!(
            "  kept {} (callgrind_annotate --inclusive=yes)",
            kept.display()
        );
    }
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("callgrind totals")
}

fn main() {
    let n = env_or("BENCH_CHANGES", 100);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let wasm = webhook_wasm();
        let binary = release_gateway();
        let key = MasterKey::generate();
        let sink = receiver().await;
        let seeded = tempfile::tempdir().unwrap();
        {
            let mut node = Process::start(&binary, &key, &["--data-dir", seeded.path().to_str().unwrap()]);
            for id in ["source", "sink1", "sink2"] {
                upload(&node.base, &manifest(id, &sink.origin, 1_000_000, 1_000_000), &wasm).await;
            }
            node.terminate();
        }
        let url = gateway::config::default_database_url(seeded.path());
        let registry = Registry::connect(&url).await.unwrap();
        let tokens = seed_users(&registry, &key, "i", 2 * n, &["source", "sink1", "sink2"]).await;
        registry.close().await;

        let mut totals = Vec::new();
        for k in [n, 2 * n] {
            totals.push(counted(&binary, seeded.path(), &key, &tokens, &sink, k, false).await);
        }
        let per_ingest = (totals[1] - totals[0]) as f64 / n as f64;
        let mut delivered = Vec::new();
        for k in [n, 2 * n] {
            delivered.push(counted(&binary, seeded.path(), &key, &tokens, &sink, k, true).await);
        }
        let per_change = (delivered[1] - delivered[0]) as f64 / n as f64;
        let per_delivery = (per_change - per_ingest) / 2.0;
        println!("instructions (callgrind, release gateway on SQLite, N = {n}):");
        println!("  per ingest (POST /v1/changes, 2 targets): {per_ingest:>12.0}");
        println!("  per delivery (claim, push through the webhook connector, outcome stored): {per_delivery:>12.0}");
        println!(
            "  totals: ingest {} / {}, ingest + delivery {} / {}",
            totals[0], totals[1], delivered[0], delivered[1]
        );
    });
}
