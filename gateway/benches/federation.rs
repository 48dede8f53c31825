//! Settings federation throughput, on SQLite and (when reachable) PostgreSQL:
//! - ingest: `POST /v1/changes` per second (users with 3 bindings each),
//! - sustained deliveries per second to a loopback receiver answering 200,
//!   every attempt persisted,
//! - commit-to-first-attempt latency at a paced 500 changes/s,
//! - coalescing: 100 signature changes in 1 s to a network allowed 1 push/s,
//! - gateway RSS with 10 modules and 100,000 users of 3 bindings each.
//!
//! Run: `cargo bench -p gateway --bench federation` (PostgreSQL from
//! `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! `BENCH_USERS` changes the ingest/delivery user count (default 10,000),
//! `BENCH_RSS_USERS` the RSS scenario's (default 100,000), and `BENCH_ONLY`
//! picks scenarios (`sqlite,postgres,coalescing,rss`; default all).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use common::outbox::{
    manifest, post_change, receiver, release_gateway, seed_users, upload, Process,
};
use common::{percentiles, rss_bytes, rss_parts, webhook_wasm, ADMIN};
use futures::StreamExt;
use gateway::secrets::MasterKey;
use registry_db::Registry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A gateway served in this process.
struct Node {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), gateway::RunError>>,
}

impl Node {
    async fn start(config: gateway::Config) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        while client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Node {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = (&mut self.task).await;
    }
}

fn config(
    dir: &std::path::Path,
    url: &str,
    key: &MasterKey,
    concurrency: usize,
) -> gateway::Config {
    let mut c = gateway::Config::new(dir).unwrap();
    c.database_url = url.to_owned();
    c.master_key = key.clone();
    c.admin_token = gateway::secrets::Secret::new(ADMIN.to_owned());
    c.delivery.concurrency = concurrency;
    c.delivery.poll_interval = Duration::from_millis(20);
    c.user_quota = gateway::Quota {
        per_second: 100_000,
        burst: 100_000,
    };
    c
}

/// Ingest, sustained delivery and paced latency on one database.
async fn throughput(label: &str, url: &str, users: usize, wasm: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let sink = receiver().await;
    let api = Node::start(config(dir.path(), url, &key, 0)).await;
    upload(
        &api.base,
        &manifest("source", &sink.origin, 1_000_000, 1_000_000),
        wasm,
    )
    .await;
    for sink_id in ["sink1", "sink2"] {
        upload(
            &api.base,
            &manifest(sink_id, &sink.origin, 1_000_000, 1_000_000),
            wasm,
        )
        .await;
    }
    let registry = Registry::connect(url).await.unwrap();
    let modules = ["source", "sink1", "sink2"];
    let tokens = seed_users(&registry, &key, "u", users, &modules).await;
    let paced = seed_users(&registry, &key, "p", 2_500, &modules).await;
    let client = reqwest::Client::new();

    // Ingest on an API-only node: nothing is delivered meanwhile.
    eprintln!("{label}: ingest of {users} changes");
    let started = Instant::now();
    futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, t)| post_change(&client, &api.base, t, format!("bulk-{i}")))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let ingest = users as f64 / started.elapsed().as_secs_f64();
    let deliveries = users * 2;

    // The ceiling this machine puts on any authenticated request: the same
    // clients reading `GET /v1/profile` (session check plus one read).
    let started = Instant::now();
    futures::stream::iter(tokens.iter())
        .map(|t| {
            let request = client
                .get(format!("{}/v1/profile", api.base))
                .bearer_auth(t)
                .send();
            async move { assert_eq!(request.await.unwrap().status(), 200) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let reads = users as f64 / started.elapsed().as_secs_f64();

    // A delivering node drains the queue.
    let dir2 = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let worker = Node::start(config(dir2.path(), url, &key, 64)).await;
    while sink.count.load(std::sync::atomic::Ordering::Relaxed) < deliveries {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = started.elapsed();
    while registry.open_deliveries().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let persisted = started.elapsed();
    let stages = stage_breakdown(&client, &worker.base).await;

    // 500 changes/s for 5 s with delivery running: commit -> first push.
    eprintln!("{label}: pacing 500 changes/s for 5 s");
    let mut answered = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut inflight = futures::stream::FuturesUnordered::new();
    for (i, token) in paced.iter().enumerate() {
        tick.tick().await;
        let (client, base, token) = (client.clone(), worker.base.clone(), token.clone());
        inflight.push(tokio::spawn(async move {
            let signature = format!("paced-{i}");
            post_change(&client, &base, &token, signature.clone()).await;
            (signature, Instant::now())
        }));
    }
    while let Some(done) = inflight.next().await {
        let (signature, at) = done.unwrap();
        answered.insert(signature, at);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let latencies = loop {
        let arrivals = sink.first_arrivals(None);
        let lat: Vec<Duration> = answered
            .iter()
            .filter_map(|(s, at)| arrivals.get(s).map(|a| a.saturating_duration_since(*at)))
            .collect();
        if lat.len() == answered.len() || Instant::now() > deadline {
            break lat;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (p50, p99, _) = percentiles(latencies.clone());
    println!("{label}:");
    println!("  ingest:   {ingest:>8.0} changes/s ({users} changes, 2 targets each, 64 clients)");
    println!("  (ceiling: {reads:>8.0} authenticated GET /v1/profile/s, same clients)");
    println!(
        "  delivery: {:>8.0} deliveries/s pushed ({deliveries} in {drain:.2?}), {:.0}/s with every outcome persisted ({persisted:.2?})",
        deliveries as f64 / drain.as_secs_f64(),
        deliveries as f64 / persisted.as_secs_f64()
    );
    println!("  where the delivering node's time went (its stage metrics): {stages}");
    println!(
        "  at 500 changes/s: commit -> first push p50 {p50:.2?}, p99 {p99:.2?} ({} of {} arrived)",
        latencies.len(),
        answered.len()
    );
    worker.stop().await;
    api.stop().await;
    registry.close().await;
}

/// The delivery worker's stages from a node's `/metrics`: per stage, how
/// many times it ran, its mean time and, for batches, their mean size.
async fn stage_breakdown(client: &reqwest::Client, base: &str) -> String {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str, stage: &str| {
        let key = format!("{name}{{stage=\"{stage}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ["claim", "push", "record"]
        .iter()
        .map(|stage| {
            let count = value("gateway_delivery_stage_seconds_count", stage);
            let mean = value("gateway_delivery_stage_seconds_sum", stage) / count.max(1.0);
            let size = value("gateway_delivery_batch_size_sum", stage) / count.max(1.0);
            let per = if *stage == "push" {
                String::new()
            } else {
                format!(" of {size:.1} deliveries")
            };
            format!("{stage} {count:.0} × {:.2} ms{per}", mean * 1000.0)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// 100 signature changes within 1 s to a network allowed 1 push/s.
async fn coalescing(wasm: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let url = gateway::config::default_database_url(dir.path());
    let sink = receiver().await;
    let node = Node::start(config(dir.path(), &url, &key, 32)).await;
    upload(
        &node.base,
        &manifest("source", &sink.origin, 1000, 1000),
        wasm,
    )
    .await;
    upload(&node.base, &manifest("slow", &sink.origin, 1, 1), wasm).await;
    let registry = Registry::connect(&url).await.unwrap();
    let token = seed_users(&registry, &key, "c", 1, &["source", "slow"]).await[0].clone();
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..100 {
        tick.tick().await;
        post_change(&client, &node.base, &token, format!("status-{i:03}")).await;
    }
    while registry.open_deliveries().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushes = sink.count.load(std::sync::atomic::Ordering::Relaxed);
    let last = registry
        .binding("c0", "c0-slow")
        .await
        .unwrap()
        .last_applied;
    println!(
        "coalescing: 100 changes in 1 s to a 1 push/s network -> {pushes} pushes, last applied {}",
        last.map(|v| v["signature"].to_string()).unwrap_or_default()
    );
    node.stop().await;
}

/// RSS of a `gateway serve` process with 10 modules and `users` users with
/// 3 bindings each, after serving some traffic.
async fn rss(users: usize, wasm: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let binary = release_gateway();
    let key = MasterKey::generate();
    let sink = receiver().await;
    let url = gateway::config::default_database_url(dir.path());
    {
        let node = Node::start(config(dir.path(), &url, &key, 0)).await;
        for i in 0..10 {
            let id = if i == 0 {
                "source".to_owned()
            } else {
                format!("m{i}")
            };
            upload(&node.base, &manifest(&id, &sink.origin, 1000, 1000), wasm).await;
        }
        node.stop().await;
    }
    let registry = Registry::connect(&url).await.unwrap();
    let tokens = seed_users(&registry, &key, "r", users, &["source", "m1", "m2"]).await;
    registry.close().await;
    let node = Process::start(&binary, &key, &["--data-dir", dir.path().to_str().unwrap()]);
    let base = node.base.clone();
    let client = reqwest::Client::new();
    futures::stream::iter(tokens.iter().step_by(users.max(1000) / 1000).enumerate())
        .map(|(i, t)| post_change(&client, &base, t, format!("rss-{i}")))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    while sink.count.load(std::sync::atomic::Ordering::Relaxed) < 2000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = node.child.id().to_string();
    println!(
        "rss: gateway serving 10 modules, {users} users x 3 bindings, after 1,000 changes: {:.1} MiB ({})",
        rss_bytes(&pid) as f64 / 1048576.0,
        rss_parts(&pid)
    );
}

/// Whether `BENCH_ONLY` (a comma-separated list of scenario names) selects
/// `scenario`; all run when it is unset.
fn selected(scenario: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == scenario))
}

fn main() {
    let users = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rss_users = std::env::var("BENCH_RSS_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let wasm = webhook_wasm();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = gateway::config::default_database_url(dir.path());
        if selected("sqlite") {
            throughput("SQLite", &sqlite, users, &wasm).await;
        }
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        if selected("postgres") {
            let db = registry_db::scratch::ScratchDatabase::create(&admin, "bench")
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
            throughput("PostgreSQL", db.url(), users, &wasm).await;
            db.drop_now().await.unwrap();
        }
        if selected("coalescing") {
            coalescing(&wasm).await;
        }
        if selected("rss") {
            rss(rss_users, &wasm).await;
        }
    });
}
