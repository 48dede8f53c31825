//! Helpers shared by the benchmarks.
#![allow(dead_code)]

use futures::StreamExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
