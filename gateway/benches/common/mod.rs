//! Helpers shared by the benchmarks.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
