//! Service plugins and device inboxes, on SQLite and (when reachable)
//! PostgreSQL, one gateway node each:
//! - switch latency: the handoff service's `POST .../sessions/{id}/switch`
//!   answered `202` -> the target device's inbox stream yields
//!   `handoff.offer` (p50/p99; the holder alternates by accepting),
//! - service call overhead: a session read (`GET`) and a progress update
//!   (`PUT`: two kv reads and one kv commit of two keys) through the plugin,
//!   against the same reads and writes done by a native axum handler on the
//!   same router, authentication and middleware, plus the store alone and
//!   an authenticated `GET /v1/devices` for scale,
//! - inbox fan-out: 1,000 devices each holding its event stream, one event
//!   for each (through the API: a new device of every user, whose
//!   `device.joined` reaches the user's other devices; and one
//!   `Devices::publish` of one event to all 1,000), time until every stream
//!   has it, and the process's RSS before and with the streams open.
//!
//! Run: `cargo bench -p gateway --bench services` (builds the handoff
//! plugin first; PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, a scratch database per
//! scenario). `BENCH_SWITCHES` (default 500), `BENCH_SERVICE_REQUESTS`
//! (requests per measured phase, default 4,000), `BENCH_CLIENTS` (default
//! 64) and `BENCH_DEVICES` (default 1,000) change the sizes;
//! `BENCH_DATABASES` (`sqlite,postgres`) and `BENCH_SCENARIOS`
//! (`fanout,switch,calls`) pick what runs. The RSS figures are of this
//! process, so they are cleanest when the fan-out is the first scenario to
//! run in it (e.g. `BENCH_DATABASES=postgres` for PostgreSQL's).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{env_or, handoff_wasm, mib, open_stream, percentiles, rss_bytes, Seen};
use futures::StreamExt;
use gateway::host::service::KV_MAX_KEYS;
use gateway::http::extract::AuthUser;
use gateway::http::AppState;
use gateway::secrets::MasterKey;
use registry_db::{KvError, KvWrite, Registry};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const APP: &str = "org.example.editor";
/// Longest wait for any one event before the bench gives up.
const WAIT: Duration = Duration::from_secs(30);
/// The gateway's cap on event streams per user
/// (`DeviceLimits::max_streams_per_user`, by default
/// `gateway::http::streams::MAX_STREAMS_PER_USER`): the fan-out spreads its devices over users of this many.
const STREAMS_PER_USER: usize = gateway::http::streams::MAX_STREAMS_PER_USER;

/// Whether `item` is in the comma-separated list `var` (all when unset).
fn wanted(var: &str, item: &str) -> bool {
    std::env::var(var).map_or(true, |list| list.split(',').any(|v| v.trim() == item))
}

/// Where a scenario's gateway keeps its data.
enum Database {
    Sqlite,
    /// The admin URL scratch databases are created from.
    Postgres(String),
}

/// A database of its own for one scenario.
struct Fresh {
    url: String,
    dir: tempfile::TempDir,
    scratch: Option<registry_db::scratch::ScratchDatabase>,
}

impl Database {
    fn label(&self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite",
            Database::Postgres(_) => "PostgreSQL",
        }
    }

    async fn fresh(&self) -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        match self {
            Database::Sqlite => Fresh {
                url: gateway::config::default_database_url(dir.path()),
                dir,
                scratch: None,
            },
            Database::Postgres(admin) => {
                let scratch = registry_db::scratch::ScratchDatabase::create(admin, "bench")
                    .await
                    .unwrap();
                Fresh {
                    url: scratch.url().to_owned(),
                    dir,
                    scratch: Some(scratch),
                }
            }
        }
    }
}

impl Fresh {
    fn config(&self) -> gateway::Config {
        let mut c = gateway::Config::new(self.dir.path()).unwrap();
        c.database_url = self.url.clone();
        c.admin_token = gateway::secrets::Secret::new(ADMIN.to_owned());
        // Nothing to deliver here: an API-only node.
        c.delivery.concurrency = 0;
        c.user_quota = gateway::Quota {
            per_second: 1_000_000,
            burst: 1_000_000,
        };
        c
    }

    async fn drop_now(self) {
        if let Some(scratch) = self.scratch {
            scratch.drop_now().await.unwrap();
        }
    }
}

/// A gateway served by `gateway::run` in this process.
struct Node {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), gateway::RunError>>,
}

async fn wait_ready(base: &str) {
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
}

impl Node {
    async fn start(config: gateway::Config) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        wait_ready(&base).await;
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

/// The gateway as `gateway::run` assembles it (`gateway::assemble`), served
/// with the bench's native routes beside the API (`http::router_with`), so
/// that a native handler runs behind the same HTTP server, authentication
/// extractor, rate limiter and layers as the plugin route. Not started,
/// because nothing here needs them: delivery workers, the janitor, service
/// timers and notice relays.
struct Assembled {
    base: String,
    state: AppState,
    assembly: gateway::Assembly,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Assembled {
    async fn start(config: gateway::Config) -> Assembled {
        let assembly = gateway::assemble(config).await.unwrap();
        let state = assembly.state.clone();
        let app = gateway::http::router_with(state.clone(), native_routes());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, shut) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = shut.await;
            })
            .await
        });
        wait_ready(&base).await;
        Assembled {
            base,
            state,
            assembly,
            shutdown: Some(shutdown),
            server,
        }
    }

    async fn stop(mut self) {
        self.assembly.stop();
        let _ = self.shutdown.take().map(|s| s.send(()));
        let _ = (&mut self.server).await;
        self.state.registry.close().await;
    }
}

// ---- The native equivalent of the handoff plugin's session routes ----

/// `GET`/`PUT /bench/native/sessions/{id}`: what the handoff plugin does for
/// `GET`/`PUT /v1/services/handoff/sessions/{id}`, on the same rows of the
/// key-value store (service `handoff`, the caller's user, `session/{id}`,
/// the step counter `logn/{id}` and `log/{id}/{step}`, in the plugin's
/// JSON), written as a plain handler, mounted behind the API's layers and
/// authenticated by the same `AuthUser` extractor `route_to_service` runs.
fn native_routes() -> Router<AppState> {
    Router::new().route(
        "/bench/native/sessions/{id}",
        get(native_get).put(native_put),
    )
}

fn answer(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(status: StatusCode, code: &str) -> Response {
    answer(status, &json!({"error": {"code": code, "message": code}}))
}

fn session_view(s: &Value) -> Value {
    json!({"id": s["id"], "app": s["app"], "holder": s["holder"],
           "version": s["version"], "state": s["state"]})
}

async fn native_get(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Response {
    match state
        .registry
        .kv_get("handoff", &auth.user.id, &format!("session/{id}"))
        .await
    {
        Ok(Some(e)) => match serde_json::from_slice::<Value>(&e.value) {
            Ok(s) => answer(StatusCode::OK, &session_view(&s)),
            Err(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
        },
        Ok(None) => refused(StatusCode::NOT_FOUND, "not_found"),
        Err(_) => refused(StatusCode::SERVICE_UNAVAILABLE, "store_failed"),
    }
}

async fn native_put(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(device) = auth.device_id else {
        return refused(StatusCode::FORBIDDEN, "device_token_required");
    };
    let Ok(progress) = serde_json::from_slice::<Value>(&body) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    };
    let (Some(version), new_state) = (progress["version"].as_u64(), progress["state"].clone())
    else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    };
    let user = auth.user.id;
    let key = format!("session/{id}");
    let read = match state.registry.kv_get("handoff", &user, &key).await {
        Ok(Some(e)) => e,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "not_found"),
        Err(_) => return refused(StatusCode::SERVICE_UNAVAILABLE, "store_failed"),
    };
    let Ok(mut session) = serde_json::from_slice::<Value>(&read.value) else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "corrupt");
    };
    // The plugin's `Session::progress`: holder only, based on the current
    // version (a replay of the last update changes nothing), state size.
    if session["holder"].as_str() != Some(device.as_str()) {
        return refused(StatusCode::CONFLICT, "not_holder");
    }
    let current = session["version"].as_u64().unwrap_or(0);
    if version + 1 == current && session["state"] == new_state {
        return answer(StatusCode::OK, &session_view(&session));
    }
    if version != current {
        return refused(StatusCode::CONFLICT, "stale_version");
    }
    if new_state.to_string().len() > 64 * 1024 {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "state_too_large");
    }
    session["version"] = json!(current + 1);
    session["state"] = new_state;
    // The plugin's `logged`: read the step counter, store the step's
    // entries under the next number.
    let counter_key = format!("logn/{id}");
    let (step, counter_version) = match state.registry.kv_get("handoff", &user, &counter_key).await
    {
        Ok(Some(e)) => (
            serde_json::from_slice::<u64>(&e.value).unwrap_or(0),
            e.version,
        ),
        Ok(None) => (0, 0),
        Err(_) => return refused(StatusCode::SERVICE_UNAVAILABLE, "store_failed"),
    };
    let at = state
        .config
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let entries =
        json!([{"at": at, "device": device, "event": "progress", "version": current + 1}]);
    let writes = [
        KvWrite {
            key,
            value: Some(serde_json::to_vec(&session).unwrap()),
            expect: Some(read.version),
        },
        KvWrite {
            key: counter_key,
            value: Some(serde_json::to_vec(&(step + 1)).unwrap()),
            expect: Some(counter_version),
        },
        KvWrite {
            key: format!("log/{id}/{:012}", step + 1),
            value: Some(serde_json::to_vec(&entries).unwrap()),
            expect: Some(0),
        },
    ];
    match state
        .registry
        .kv_commit("handoff", &user, &writes, KV_MAX_KEYS)
        .await
    {
        Ok(_) => answer(StatusCode::OK, &session_view(&session)),
        Err(KvError::Conflict(_)) => refused(StatusCode::CONFLICT, "concurrent_change"),
        Err(_) => refused(StatusCode::SERVICE_UNAVAILABLE, "store_failed"),
    }
}

// ---- Users, devices, the service, event streams ----

async fn upload_handoff(base: &str, wasm: &[u8]) {
    let manifest = json!({"id": "handoff", "name": "Handoff",
                          "grants": ["kv", "devices", "events", "timers", "clock"]});
    let url = format!("{base}/v1/admin/services");
    common::admin_upload(&reqwest::Client::new(), &url, &manifest, wasm.to_vec()).await;
}

/// Users `{prefix}{i}` straight into the registry (argon2 would measure the
/// password hash), each with a session token and no binding; returns the
/// tokens.
async fn seed_users(registry: &Registry, prefix: &str, n: usize) -> Vec<String> {
    common::outbox::seed_users(registry, &MasterKey::generate(), prefix, n, &[]).await
}

/// Registers device `id` for the user of `user_token`; its device token.
async fn register_device(
    client: &reqwest::Client,
    base: &str,
    user_token: &str,
    id: &str,
) -> String {
    let r = client
        .post(format!("{base}/v1/devices"))
        .bearer_auth(user_token)
        .json(&json!({"id": id, "name": id, "capabilities": [APP]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The next event of stream `stream` named `event` whose data contains
/// `needle` (other events are passed over); its arrival time.
async fn next_of(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    stream: usize,
    event: &str,
    needle: &str,
) -> Instant {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {event} on stream {stream} within {WAIT:?}"))
            .expect("streams ended");
        if seen.stream == stream && seen.event == event && seen.data.contains(needle) {
            return seen.at;
        }
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- 1. Switch latency ----

async fn switch_latency(db: &Database, wasm: &[u8], switches: usize) {
    let label = db.label();
    let fresh = db.fresh().await;
    let node = Node::start(fresh.config()).await;
    upload_handoff(&node.base, wasm).await;
    let registry = Registry::connect(&fresh.url).await.unwrap();
    let user = seed_users(&registry, "s", 1).await.remove(0);
    let client = reqwest::Client::new();
    let ids = ["t1", "t2"];
    let tokens = [
        register_device(&client, &node.base, &user, ids[0]).await,
        register_device(&client, &node.base, &user, ids[1]).await,
    ];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let streams = [
        open_stream(&client, &node.base, &tokens[0], 0, tx.clone()).await,
        open_stream(&client, &node.base, &tokens[1], 1, tx).await,
    ];
    let (status, session) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/v1/services/handoff/sessions", node.base),
        &tokens[0],
        Some(json!({"app": APP, "state": {"line": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();

    eprintln!("{label}: {switches} switches");
    let (mut holder, mut target) = (0usize, 1usize);
    let warmup = 20;
    let mut after_202 = Vec::with_capacity(switches);
    let mut after_send = Vec::with_capacity(switches);
    let mut round_trips = Vec::with_capacity(switches);
    let mut early = 0;
    for i in 0..warmup + switches {
        let sent = Instant::now();
        let (status, asked) = call(
            &client,
            reqwest::Method::POST,
            format!("{}/v1/services/handoff/sessions/{sid}/switch", node.base),
            &tokens[holder],
            Some(json!({"to": ids[target]})),
        )
        .await;
        let answered = Instant::now();
        assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
        let wid = asked["switch_id"].as_str().unwrap().to_owned();
        let offered = next_of(&mut rx, target, "handoff.offer", &wid).await;
        if i >= warmup {
            // The plugin publishes the offer before it answers, so the
            // stream may yield it before the client has read the 202.
            if offered < answered {
                early += 1;
            }
            after_202.push(offered.saturating_duration_since(answered));
            after_send.push(offered.saturating_duration_since(sent));
            round_trips.push(answered - sent);
        }
        let (status, accepted) = call(
            &client,
            reqwest::Method::POST,
            format!("{}/v1/services/handoff/switches/{wid}/accept", node.base),
            &tokens[target],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{accepted}");
        std::mem::swap(&mut holder, &mut target);
    }
    let (p50, p99, _) = percentiles(after_202);
    let (s50, s99, _) = percentiles(after_send);
    // The session's log is one key rewritten at every step, so it grows
    // with every switch: the first and last switches' round trips show it.
    let edge = (switches / 10).max(1);
    let (first50, _, _) = percentiles(round_trips[..edge].to_vec());
    let (last50, _, _) = percentiles(round_trips[switches - edge..].to_vec());
    let (r50, r99, _) = percentiles(round_trips);
    let goal = if p99 <= Duration::from_millis(20) {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "{label}: switch 202 -> handoff.offer on the target's stream: p50 {:.2} ms, p99 {:.2} ms \
         ({switches} switches, {early} offers read before their 202; goal p99 <= 20 ms: {goal})",
        ms(p50),
        ms(p99)
    );
    println!(
        "{label}: switch request sent -> handoff.offer: p50 {:.2} ms, p99 {:.2} ms \
         (sent -> 202: p50 {:.2} ms, p99 {:.2} ms; p50 of the first {edge} {:.2} ms, of the last {edge} {:.2} ms)",
        ms(s50),
        ms(s99),
        ms(r50),
        ms(r99),
        ms(first50),
        ms(last50)
    );
    for s in streams {
        s.abort();
    }
    node.stop().await;
    registry.close().await;
    fresh.drop_now().await;
}

// ---- 2. Service call overhead ----

/// One client of the call benchmark: a device of its own user, with two
/// sessions (one updated through the plugin, one natively, so that both
/// start from a log of the same length).
struct Caller {
    token: String,
    plugin_sid: String,
    native_sid: String,
    plugin_version: AtomicI64,
    native_version: AtomicI64,
    user: String,
}

struct Phase {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self, label: &str, what: &str, clients: usize) -> String {
        let (p50, p99, _) = percentiles(self.latencies.clone());
        format!(
            "{label}: {what:<58} {:>6.0} /s, p50 {:.2} ms, p99 {:.2} ms ({} with {clients} clients)",
            self.rps(),
            ms(p50),
            ms(p99),
            self.latencies.len(),
        )
    }
}

/// `clients` tasks, each running `op(client)` `per_client` times in a row.
async fn drive<F, Fut>(clients: usize, per_client: usize, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    op(c).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(clients * per_client);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Phase {
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn get_ok(client: &reqwest::Client, url: String, token: &str) {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
}

async fn put_progress(client: &reqwest::Client, url: String, token: &str, version: &AtomicI64) {
    let v = version.load(Ordering::Relaxed);
    let r = client
        .put(url)
        .bearer_auth(token)
        .json(&json!({"version": v, "state": {"line": v + 1, "file": "src/lib.rs"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered: Value = r.json().await.unwrap();
    version.store(answered["version"].as_i64().unwrap(), Ordering::Relaxed);
}

/// The store alone: what the PUT handlers do to it (two reads, one commit
/// of both keys at the versions read and a log step), values rewritten
/// unchanged.
async fn store_pair(registry: &Registry, user: &str, sid: &str) {
    let (skey, lkey) = (format!("session/{sid}"), format!("logn/{sid}"));
    let s = registry
        .kv_get("handoff", user, &skey)
        .await
        .unwrap()
        .unwrap();
    let l = registry
        .kv_get("handoff", user, &lkey)
        .await
        .unwrap()
        .unwrap();
    registry
        .kv_commit(
            "handoff",
            user,
            &[
                KvWrite {
                    key: skey,
                    value: Some(s.value),
                    expect: Some(s.version),
                },
                KvWrite {
                    key: lkey,
                    value: Some(l.value),
                    expect: Some(l.version),
                },
                KvWrite {
                    key: format!("log/{sid}/bench"),
                    value: Some(b"[]".to_vec()),
                    expect: None,
                },
            ],
            KV_MAX_KEYS,
        )
        .await
        .unwrap();
}

async fn service_calls(db: &Database, wasm: &[u8], requests: usize, clients: usize) {
    let label = db.label();
    let fresh = db.fresh().await;
    let gw = Assembled::start(fresh.config()).await;
    upload_handoff(&gw.base, wasm).await;
    let registry = gw.state.registry.clone();
    let users = seed_users(&registry, "c", clients).await;
    let client = reqwest::Client::new();
    let mut callers = Vec::with_capacity(clients);
    for (i, user_token) in users.iter().enumerate() {
        let token = register_device(&client, &gw.base, user_token, &format!("c{i}-d")).await;
        let mut sids = Vec::new();
        for _ in 0..2 {
            let (status, s) = call(
                &client,
                reqwest::Method::POST,
                format!("{}/v1/services/handoff/sessions", gw.base),
                &token,
                Some(json!({"app": APP, "state": {"line": 1, "file": "src/lib.rs"}})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{s}");
            sids.push(s["id"].as_str().unwrap().to_owned());
        }
        callers.push(Caller {
            token,
            native_sid: sids.pop().unwrap(),
            plugin_sid: sids.pop().unwrap(),
            plugin_version: AtomicI64::new(1),
            native_version: AtomicI64::new(1),
            user: format!("c{i}"),
        });
    }
    let callers = Arc::new(callers);
    let per_client = (requests / clients).max(1);
    let base = gw.base.clone();
    let plugin_url = move |sid: &str| format!("{base}/v1/services/handoff/sessions/{sid}");
    let base = gw.base.clone();
    let native_url = move |sid: &str| format!("{base}/bench/native/sessions/{sid}");

    // Warm both paths (instance pool, connections, statement caches).
    for c in callers.iter() {
        for _ in 0..4 {
            get_ok(&client, plugin_url(&c.plugin_sid), &c.token).await;
            get_ok(&client, native_url(&c.native_sid), &c.token).await;
        }
    }
    eprintln!("{label}: service calls, {per_client} per client x {clients}");

    let (cl, cs, u) = (client.clone(), callers.clone(), plugin_url.clone());
    let plugin_get = drive(clients, per_client, move |i| {
        let (cl, c, u) = (cl.clone(), cs.clone(), u.clone());
        async move { get_ok(&cl, u(&c[i].plugin_sid), &c[i].token).await }
    })
    .await;
    let (cl, cs, u) = (client.clone(), callers.clone(), native_url.clone());
    let native_get = drive(clients, per_client, move |i| {
        let (cl, c, u) = (cl.clone(), cs.clone(), u.clone());
        async move { get_ok(&cl, u(&c[i].native_sid), &c[i].token).await }
    })
    .await;
    let (cl, cs, u) = (client.clone(), callers.clone(), plugin_url.clone());
    let plugin_put = drive(clients, per_client, move |i| {
        let (cl, c, u) = (cl.clone(), cs.clone(), u.clone());
        async move {
            let c = &c[i];
            put_progress(&cl, u(&c.plugin_sid), &c.token, &c.plugin_version).await
        }
    })
    .await;
    let (cl, cs, u) = (client.clone(), callers.clone(), native_url.clone());
    let native_put = drive(clients, per_client, move |i| {
        let (cl, c, u) = (cl.clone(), cs.clone(), u.clone());
        async move {
            let c = &c[i];
            put_progress(&cl, u(&c.native_sid), &c.token, &c.native_version).await
        }
    })
    .await;
    let (r, cs) = (registry.clone(), callers.clone());
    let store_get = drive(clients, per_client, move |i| {
        let (r, c) = (r.clone(), cs.clone());
        async move {
            let c = &c[i];
            let key = format!("session/{}", c.native_sid);
            r.kv_get("handoff", &c.user, &key).await.unwrap().unwrap();
        }
    })
    .await;
    let (r, cs) = (registry.clone(), callers.clone());
    let store_put = drive(clients, per_client, move |i| {
        let (r, c) = (r.clone(), cs.clone());
        async move { store_pair(&r, &c[i].user, &c[i].native_sid).await }
    })
    .await;
    let (cl, cs, base) = (client.clone(), callers.clone(), gw.base.clone());
    let devices = drive(clients, per_client, move |i| {
        let (cl, c, base) = (cl.clone(), cs.clone(), base.clone());
        async move { get_ok(&cl, format!("{base}/v1/devices"), &c[i].token).await }
    })
    .await;

    for (phase, what) in [
        (
            &plugin_get,
            "plugin GET /v1/services/handoff/sessions/{id} (1 kv read)",
        ),
        (&native_get, "native GET, same read behind the same stack"),
        (
            &plugin_put,
            "plugin PUT progress (2 kv reads, 1 commit of 3 keys)",
        ),
        (&native_put, "native PUT, same reads and commit, same stack"),
        (&store_get, "store only: Registry::kv_get"),
        (&store_put, "store only: Registry::kv_get x2 + kv_commit"),
        (&devices, "baseline: authenticated GET /v1/devices"),
    ] {
        println!("{}", phase.line(label, what, clients));
    }
    // Capacity per request at saturation: 1/throughput, i.e. the time the
    // machine spends per request with every client busy.
    let per = |p: &Phase| 1e6 / p.rps();
    println!(
        "{label}: plugin/native throughput: GET {:.2}, PUT {:.2}; plugin overhead at saturation: \
         GET +{:.0} us, PUT +{:.0} us per request (of {:.0} / {:.0} us)",
        plugin_get.rps() / native_get.rps(),
        plugin_put.rps() / native_put.rps(),
        per(&plugin_get) - per(&native_get),
        per(&plugin_put) - per(&native_put),
        per(&plugin_get),
        per(&plugin_put),
    );
    drop(callers);
    gw.stop().await;
    fresh.drop_now().await;
}

// ---- 3. Inbox fan-out ----

/// The soft `RLIMIT_NOFILE` of this process, raised to its hard limit (with
/// util-linux `prlimit`, no libc binding needed) when below `needed`.
fn open_files(needed: u64) -> u64 {
    let read = || -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default();
        let mut n = line
            .split_whitespace()
            .skip(3)
            .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        (n.next().unwrap_or(1024), n.next().unwrap_or(1024))
    };
    let (soft, hard) = read();
    if soft >= needed {
        return soft;
    }
    let target = hard.min(1 << 20);
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={target}:{hard}"))
        .status();
    read().0
}

/// `n` devices spread over users of at most [`STREAMS_PER_USER`] each;
/// per user its token and its devices' tokens.
async fn fleet(
    client: &reqwest::Client,
    base: &str,
    registry: &Registry,
    prefix: &str,
    n: usize,
) -> Vec<(String, Vec<String>)> {
    let users = n.div_ceil(STREAMS_PER_USER);
    let tokens = seed_users(registry, prefix, users).await;
    let mut fleet = Vec::with_capacity(users);
    for (u, token) in tokens.into_iter().enumerate() {
        let count = STREAMS_PER_USER.min(n - u * STREAMS_PER_USER);
        let devices =
            futures::stream::iter(0..count)
                .map(|k| {
                    let token = token.clone();
                    async move {
                        register_device(client, base, &token, &format!("{prefix}{u}-d{k}")).await
                    }
                })
                .buffered(8)
                .collect::<Vec<_>>()
                .await;
        fleet.push((token, devices));
    }
    fleet
}

/// Every device of the fleet holding its stream; events go to one channel.
async fn open_fleet(
    client: &reqwest::Client,
    base: &str,
    fleet: &[(String, Vec<String>)],
) -> (Vec<JoinHandle<()>>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tokens: Vec<&String> = fleet.iter().flat_map(|(_, d)| d.iter()).collect();
    let streams = futures::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| open_stream(client, base, token, i, tx.clone()))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    (streams, rx)
}

/// Waits until `n` distinct streams yielded `event` with `needle` in its
/// data; each stream's delay after `from`.
async fn arrivals(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
    event: &str,
    needle: &str,
    from: Instant,
) -> Vec<Duration> {
    let mut got = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => {
                if seen.event == event && seen.data.contains(needle) {
                    got.entry(seen.stream).or_insert(seen.at);
                }
            }
            _ => break,
        }
    }
    got.values()
        .map(|at| at.saturating_duration_since(from))
        .collect()
}

fn fan_out_line(label: &str, what: &str, n: usize, delays: &[Duration]) -> String {
    let last = delays.iter().max().copied().unwrap_or_default();
    let (p50, p99, _) = percentiles(if delays.is_empty() {
        vec![Duration::ZERO]
    } else {
        delays.to_vec()
    });
    format!(
        "{label}: fan-out {what}: {} of {n} streams in {:.1} ms -> {:.0} events/s \
         (per stream p50 {:.1} ms, p99 {:.1} ms)",
        delays.len(),
        ms(last),
        delays.len() as f64 / last.as_secs_f64().max(1e-9),
        ms(p50),
        ms(p99),
    )
}

/// Through the API on a `run()` gateway: every user registers one more
/// device at once; its `device.joined` reaches the user's other devices.
/// With the process's RSS before and with the streams open.
async fn fan_out_api(db: &Database, n: usize, first: bool) {
    let label = db.label();
    let fresh = db.fresh().await;
    let node = Node::start(fresh.config()).await;
    let registry = Registry::connect(&fresh.url).await.unwrap();
    let client = reqwest::Client::new();
    eprintln!("{label}: {n} devices for the API fan-out");
    let fleet = fleet(&client, &node.base, &registry, "f", n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes("self");
    let (streams, mut rx) = open_fleet(&client, &node.base, &fleet).await;
    // Let the replays of earlier device.joined events go out and settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = rss_bytes("self");
    while rx.try_recv().is_ok() {}

    let started = Instant::now();
    futures::stream::iter(fleet.iter().enumerate())
        .map(|(u, (token, _))| {
            let (client, base) = (&client, &node.base);
            async move { register_device(client, base, token, &format!("f{u}-late")).await }
        })
        .buffer_unordered(fleet.len())
        .collect::<Vec<_>>()
        .await;
    let answered = started.elapsed();
    let delays = arrivals(&mut rx, streams.len(), "device.joined", "-late\"", started).await;
    println!(
        "{}",
        fan_out_line(
            label,
            &format!(
                "device.joined via API ({} users register a device at once, all answered in {:.1} ms)",
                fleet.len(),
                ms(answered)
            ),
            streams.len(),
            &delays
        )
    );
    println!(
        "{label}: RSS of this process (gateway + bench clients): {:.1} MiB before opening streams, \
         {:.1} MiB with {} open (+{:.1} KiB per stream, client side included{})",
        mib(before),
        mib(open),
        streams.len(),
        (open.saturating_sub(before)) as f64 / 1024.0 / streams.len().max(1) as f64,
        if first {
            ""
        } else {
            "; after earlier scenarios, whose freed memory the streams reuse: understated"
        }
    );
    for s in streams {
        s.abort();
    }
    node.stop().await;
    registry.close().await;
    fresh.drop_now().await;
}

/// One `Devices::publish` of one event to all the fleet's devices, on the
/// assembled gateway (the in-process `Devices` is reachable there): one
/// inbox transaction, then every stream woken.
async fn fan_out_publish(db: &Database, n: usize) {
    let label = db.label();
    let fresh = db.fresh().await;
    let gw = Assembled::start(fresh.config()).await;
    let client = reqwest::Client::new();
    eprintln!("{label}: {n} devices for the one-publish fan-out");
    let fleet = fleet(&client, &gw.base, &gw.state.registry, "p", n).await;
    let (streams, mut rx) = open_fleet(&client, &gw.base, &fleet).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    let ids: Vec<String> = fleet
        .iter()
        .enumerate()
        .flat_map(|(u, (_, d))| (0..d.len()).map(move |k| format!("p{u}-d{k}")))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = Instant::now();
    gw.state
        .devices
        .publish(&ids, "bench.ping", &json!({"n": 1}))
        .await
        .unwrap();
    let committed = started.elapsed();
    let delays = arrivals(&mut rx, streams.len(), "bench.ping", "\"n\"", started).await;
    println!(
        "{}",
        fan_out_line(
            label,
            &format!(
                "one Devices::publish to all (inbox commit {:.1} ms)",
                ms(committed)
            ),
            streams.len(),
            &delays
        )
    );
    for s in streams {
        s.abort();
    }
    gw.stop().await;
    fresh.drop_now().await;
}

fn main() {
    let switches = env_or("BENCH_SWITCHES", 500);
    let requests = env_or("BENCH_SERVICE_REQUESTS", 4_000);
    let clients = env_or("BENCH_CLIENTS", 64);
    let mut devices = env_or("BENCH_DEVICES", 1_000);
    // Each stream is two descriptors here (client and server side).
    let needed = devices as u64 * 2 + 512;
    let limit = open_files(needed);
    if limit < needed {
        let fits = (limit.saturating_sub(512) / 2) as usize;
        println!(
            "open files limited to {limit}: the fan-out uses {fits} devices instead of {devices}"
        );
        devices = fits;
    }
    let wasm = handoff_wasm();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut databases = Vec::new();
        if wanted("BENCH_DATABASES", "sqlite") {
            databases.push(Database::Sqlite);
        }
        if wanted("BENCH_DATABASES", "postgres") {
            match registry_db::scratch::ScratchDatabase::create(&admin, "bench").await {
                Ok(probe) => {
                    probe.drop_now().await.unwrap();
                    databases.push(Database::Postgres(admin));
                }
                Err(e) => println!("PostgreSQL: skipped ({e})"),
            }
        }
        let mut first = true;
        for db in &databases {
            // The fan-out first: its RSS figures see the least of the
            // allocations earlier scenarios leave behind.
            if wanted("BENCH_SCENARIOS", "fanout") {
                fan_out_api(db, devices, first).await;
                fan_out_publish(db, devices).await;
            }
            if wanted("BENCH_SCENARIOS", "switch") {
                switch_latency(db, &wasm, switches).await;
            }
            if wanted("BENCH_SCENARIOS", "calls") {
                service_calls(db, &wasm, requests, clients).await;
            }
            first = false;
        }
    });
}
