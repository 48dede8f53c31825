//! Helpers shared by the benchmarks.
#![allow(dead_code)]

pub mod outbox;

use futures::StreamExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The number in environment variable `name`, else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes in MiB.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Builds the webhook connector (release, wasm32-wasip2) and returns it.
pub fn webhook_wasm() -> Vec<u8> {
    plugin_wasm("../plugins", "webhook-connector")
}

/// Builds the hostile fixture plugin (endless loop, memory bomb, fetches).
pub fn hostile_wasm() -> Vec<u8> {
    plugin_wasm("../tests/fixtures", "hostile-connector")
}

/// Builds `package` of the plugin workspace `workspace` (relative to this
/// crate) for wasm32-wasip2 and returns the component.
fn plugin_wasm(workspace: &str, package: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(workspace);
    // Inside the plugins workspace, so its .cargo/config.toml applies.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building {package} failed");
    let file = format!("{}.wasm", package.replace('-', "_"));
    std::fs::read(root.join("target/wasm32-wasip2/release").join(file)).expect("wasm")
}

/// Resident set size of process `pid` ("self" for this one), in bytes.
/// `RssAnon`, `RssFile` and `RssShmem` of process `pid`, in MiB, in one line:
/// the process's own memory apart from the file pages it maps (its
/// executable, and a database read through `mmap`, count in VmRSS).
pub fn rss_parts(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let kb: f64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
            name.starts_with("Rss")
                .then(|| format!("{name} {:.1} MiB", kb / 1024.0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn rss_bytes(pid: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// p50, p99 and mean of `samples`.
pub fn percentiles(
    mut samples: Vec<std::time::Duration>,
) -> (
    std::time::Duration,
    std::time::Duration,
    std::time::Duration,
) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<std::time::Duration>() / samples.len().max(1) as u32;
    (at(0.50), at(0.99), mean)
}

/// Builds the handoff service plugin (release, wasm32-wasip2; a workspace
/// of its own under `plugins/handoff`) and returns the component.
pub fn handoff_wasm() -> Vec<u8> {
    plugin_wasm("../plugins/handoff", "handoff-service")
}

/// One event read from a device's stream, stamped when its blank line was
/// parsed.
pub struct Seen {
    /// The stream's number.
    pub stream: usize,
    /// `event:`.
    pub event: String,
    /// `data:`.
    pub data: String,
    /// When its blank line was parsed.
    pub at: Instant,
}

/// Opens the inbox stream of the device `token` and passes every event to
/// `tx`, tagged `stream`, until the stream ends or the task is aborted.
pub async fn open_stream(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    stream: usize,
    tx: mpsc::UnboundedSender<Seen>,
) -> JoinHandle<()> {
    let r = client
        .get(format!("{base}/v1/devices/current/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    tokio::spawn(async move {
        let mut body = r.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let (mut event, mut data) = (String::new(), String::new());
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !event.is_empty() || !data.is_empty() {
                        let seen = Seen {
                            stream,
                            event: std::mem::take(&mut event),
                            data: std::mem::take(&mut data),
                            at: Instant::now(),
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
    })
}

/// Builds the files service plugin (release, wasm32-wasip2; a workspace of
/// its own under `plugins/files`) and returns the component.
pub fn files_wasm() -> Vec<u8> {
    plugin_wasm("../plugins/files", "files-service")
}

/// The admin token of [`Node`]s.
pub const ADMIN: &str = "bench-admin-token-0123456789abcdef";

/// A gateway served by `gateway::run` in this process, on SQLite in a
/// folder of its own, with rate limits out of the way.
pub struct Node {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client for it.
    pub client: reqwest::Client,
    /// Its data dir.
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    /// Starts a node on `dir`, its config changed by `adjust`; ready when
    /// it returns.
    pub async fn start(dir: tempfile::TempDir, adjust: impl FnOnce(&mut gateway::Config)) -> Node {
        let mut c = gateway::Config::new(dir.path()).unwrap();
        c.admin_token = gateway::secrets::Secret::new(ADMIN.to_owned());
        c.user_quota = gateway::Quota {
            per_second: 1_000_000,
            burst: 1_000_000,
        };
        c.anonymous_quota = c.user_quota;
        adjust(&mut c);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gateway::run(c, listener, async move {
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
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Node {
            base,
            client,
            dir,
            stop: Some(stop),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Installs a service plugin as the admin.
    pub async fn install_service(&self, manifest: &serde_json::Value, wasm: Vec<u8>) {
        admin_upload(
            &self.client,
            &self.url("/v1/admin/services"),
            manifest,
            wasm,
        )
        .await;
    }

    /// A new user `name`, logged in: the session token.
    pub async fn user(&self, name: &str) -> String {
        let body = serde_json::json!({"username": name, "password": "correct horse battery"});
        self.client
            .post(self.url("/v1/users"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let session: serde_json::Value = self
            .client
            .post(self.url("/v1/sessions"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        session["token"].as_str().unwrap().to_owned()
    }

    /// Device `id` of the user `user` (a session token): its token.
    pub async fn device(&self, user: &str, id: &str) -> String {
        let device: serde_json::Value = self
            .client
            .post(self.url("/v1/devices"))
            .bearer_auth(user)
            .json(&serde_json::json!({"id": id, "name": id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        device["token"].as_str().unwrap().to_owned()
    }

    /// Stops the node.
    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// Uploads a plugin with its manifest to an admin endpoint (modules or
/// services) as the admin; it must be taken (201).
pub async fn admin_upload(
    client: &reqwest::Client,
    url: &str,
    manifest: &serde_json::Value,
    wasm: Vec<u8>,
) {
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            reqwest::multipart::Part::bytes(wasm).file_name("plugin.wasm"),
        );
    let r = client
        .post(url)
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Builds the tasks service plugin and returns the component.
pub fn tasks_wasm() -> Vec<u8> {
    plugin_wasm("../plugins/tasks", "tasks-service")
}
