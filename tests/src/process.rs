//! The workspace's real binaries as child processes: `gateway` for tests that
//! kill it (SIGKILL mid-delivery) or run several processes on one database,
//! `monitor` for the end user's app. Both are this package's binaries
//! `e2e-gateway` and `e2e-monitor` (the same entry points as the real ones),
//! which Cargo builds fresh before the tests run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A binary of this package, next to the running test executable's folder
/// (`target/<profile>/deps/..`).
pub fn package_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: it is built by `cargo test -p e2e-tests`",
        path.display()
    );
    path
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
        Self::start_listening("127.0.0.1:0", args, envs).await
    }

    /// [`GatewayProcess::start`] on `listen` (`IP:PORT`), e.g. the
    /// [`GatewayProcess::addr`] of a killed process, so that clients which
    /// remember the address (the monitor's session) find it again.
    pub async fn start_listening(
        listen: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> GatewayProcess {
        use std::io::BufRead;
        let mut child = Command::new(package_binary("e2e-gateway"))
            .args(["serve", "--listen", listen])
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

    /// The address it listens on (`IP:PORT`).
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
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
