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
//! `BENCH_USERS` changes the ingest/delivery user count (default 10,000) and
//! `BENCH_RSS_USERS` the RSS scenario's (default 100,000).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use axum::body::Bytes;
use axum::extract::State;
use common::{percentiles, rss_bytes, rss_parts, webhook_wasm};
use futures::StreamExt;
use gateway::secrets::{credentials_context, sha256_hex, MasterKey};
use registry_db::{NewBinding, Registry, SealedCredentials};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Arrival time of each signature at the receiver.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

struct Receiver {
    origin: String,
    arrivals: Arrivals,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

async fn receiver() -> Receiver {
    async fn hook(
        State((arrivals, count)): State<(Arrivals, Arc<std::sync::atomic::AtomicUsize>)>,
        body: Bytes,
    ) -> &'static str {
        let now = Instant::now();
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Some(s) = v["settings"]["signature"].as_str() {
                arrivals.lock().unwrap().entry(s.to_owned()).or_insert(now);
            }
        }
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let arrivals: Arrivals = Arc::default();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .fallback(hook)
        .with_state((arrivals.clone(), count.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        origin,
        arrivals,
        count,
    }
}

fn manifest(id: &str, origin: &str, per_second: u32, burst: u32) -> Value {
    json!({
        "id": id, "name": id, "allowed_hosts": [origin],
        "rate_limit": {"per_second": per_second, "burst": burst},
        "config": {"url": format!("{origin}/hook"), "secret": "bench"},
    })
}

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
    c.admin_token = gateway::secrets::Secret::new("bench-admin-token-0123456789abcdef".to_owned());
    c.delivery.concurrency = concurrency;
    c.delivery.poll_interval = Duration::from_millis(20);
    c.user_quota = gateway::Quota {
        per_second: 100_000,
        burst: 100_000,
    };
    c
}

async fn upload(base: &str, manifest: &Value, wasm: &[u8]) {
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            reqwest::multipart::Part::bytes(wasm.to_vec()).file_name("p.wasm"),
        );
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/admin/modules"))
        .bearer_auth("bench-admin-token-0123456789abcdef")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Users `{prefix}{i}` straight into the registry (argon2 at 100,000
/// registrations would measure the password hash), each with a session
/// token and a binding of every module in `modules`. Returns the tokens.
async fn seed_users(
    registry: &Registry,
    key: &MasterKey,
    prefix: &str,
    n: usize,
    modules: &[&str],
) -> Vec<String> {
    let now = chrono::Utc::now();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let tokens: Vec<String> = (0..n).map(|i| format!("{prefix}-token-{i}")).collect();
    futures::stream::iter(0..n)
        .map(|i| {
            let (registry, key, token) = (registry.clone(), key.clone(), tokens[i].clone());
            async move {
                let user = format!("{prefix}{i}");
                registry.create_user(&user, &user, hash, now).await.unwrap();
                registry
                    .create_session(
                        &sha256_hex(token.as_bytes()),
                        &user,
                        now,
                        now + chrono::Duration::days(1),
                    )
                    .await
                    .unwrap();
                for module in modules {
                    let id = format!("{user}-{module}");
                    let sealed = key.seal(
                        br#"{"token":"t"}"#,
                        credentials_context(&id, &user).as_bytes(),
                    );
                    registry
                        .create_binding(
                            NewBinding {
                                id,
                                user_id: user.clone(),
                                module_id: (*module).to_owned(),
                                account: format!("{user}@{module}"),
                                credentials: SealedCredentials(sealed),
                            },
                            now,
                        )
                        .await
                        .unwrap();
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    tokens
}

async fn post_change(client: &reqwest::Client, base: &str, token: &str, signature: String) {
    let r = client
        .post(format!("{base}/v1/changes"))
        .bearer_auth(token)
        .json(&json!({"module": "source", "settings": {"signature": signature}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
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
        let arrivals = sink.arrivals.lock().unwrap().clone();
        let lat: Vec<Duration> = answered
            .iter()
            .filter_map(|(s, at)| arrivals.get(s).map(|a| a.saturating_duration_since(*at)))
            .collect();
        if lat.len() == answered.len() || Instant::now() > deadline {
            break lat;
        }
        drop(arrivals);
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
    println!(
        "  at 500 changes/s: commit -> first push p50 {p50:.2?}, p99 {p99:.2?} ({} of {} arrived)",
        latencies.len(),
        answered.len()
    );
    worker.stop().await;
    api.stop().await;
    registry.close().await;
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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "-p", "gateway", "--bin", "gateway"])
        .status()
        .unwrap();
    assert!(status.success());
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
    let mut child = std::process::Command::new(root.join("target/release/gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("GATEWAY_MASTER_KEY", key.to_hex())
        .env("GATEWAY_ADMIN_TOKEN", "bench-admin-token-0123456789abcdef")
        .env("GATEWAY_USER_RATE", "100000")
        .env("GATEWAY_USER_BURST", "100000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    let client = reqwest::Client::new();
    futures::stream::iter(tokens.iter().step_by(users.max(1000) / 1000).enumerate())
        .map(|(i, t)| post_change(&client, &base, t, format!("rss-{i}")))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    while sink.count.load(std::sync::atomic::Ordering::Relaxed) < 2000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().to_string();
    println!(
        "rss: gateway serving 10 modules, {users} users x 3 bindings, after 1,000 changes: {:.1} MiB ({})",
        rss_bytes(&pid) as f64 / 1048576.0,
        rss_parts(&pid)
    );
    let _ = child.kill();
    let _ = child.wait();
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
        throughput("SQLite", &sqlite, users, &wasm).await;
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match registry_db::scratch::ScratchDatabase::create(&admin, "bench").await {
            Ok(db) => {
                throughput("PostgreSQL", db.url(), users, &wasm).await;
                db.drop_now().await.unwrap();
            }
            Err(e) => println!("PostgreSQL: skipped ({e})"),
        }
        coalescing(&wasm).await;
        rss(rss_users, &wasm).await;
    });
}
