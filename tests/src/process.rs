//! The workspace's real binaries as child processes: `gateway` for tests that
//! kill it (SIGKILL mid-delivery) or run several processes on one database,
//! `monitor` for the end user's app.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The debug binary `name` of this workspace (`gateway`, `monitor`), built
/// (or found fresh) once per test process.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "-p", "gateway", "--bin", name])
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the {name} binary failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(root.join("target/debug").join(name))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A running `gateway serve` child; killed with SIGKILL when dropped.
pub struct GatewayProcess {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
}

impl GatewayProcess {
    /// Starts `gateway serve` on a free port with `args` and `envs` added, and
    /// waits until it answers `/readyz`.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> GatewayProcess {
        use std::io::BufRead;
        let mut child = Command::new(workspace_binary("gateway"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied())
            .env("GATEWAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gateway");
        let stdout = child.stdout.take().expect("stdout");
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .expect("join")
        .expect("first line");
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let process = GatewayProcess { base, child };
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(format!("{}/readyz", process.base)).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return process;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gateway at {} never became ready", process.base);
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no shutdown code runs, leases stay taken.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
