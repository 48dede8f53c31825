//! The settings-federation side of the benchmarks: a counting receiver
//! network, webhook modules, users seeded straight into the registry, change
//! reports, and `gateway serve` processes of the release build.

use axum::body::Bytes;
use axum::extract::State;
use futures::StreamExt;
use gateway::secrets::{credentials_context, sha256_hex, MasterKey};
use registry_db::{NewBinding, Registry, SealedCredentials};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every arrival of a signature at the receiver, in order.
type Log = Arc<Mutex<Vec<(String, Instant)>>>;

/// A network that counts what reaches it.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    log: Log,
    /// Requests received.
    pub count: Arc<AtomicUsize>,
}

impl Receiver {
    /// The first arrival of each signature that arrived after `since`
    /// (every one when `None`).
    pub fn first_arrivals(&self, since: Option<Instant>) -> HashMap<String, Instant> {
        let mut first = HashMap::new();
        for (signature, at) in self.log.lock().unwrap().iter() {
            if since.is_none_or(|since| *at > since) {
                first.entry(signature.clone()).or_insert(*at);
            }
        }
        first
    }
}

#[derive(Clone)]
struct Seen {
    log: Log,
    count: Arc<AtomicUsize>,
    hold: Duration,
}

/// A network answering 200 to everything, counting.
pub async fn receiver() -> Receiver {
    receiver_holding(Duration::ZERO).await
}

/// [`receiver`] that holds each request `hold` before answering (pushes
/// stay in flight).
pub async fn receiver_holding(hold: Duration) -> Receiver {
    async fn hook(State(seen): State<Seen>, body: Bytes) -> &'static str {
        let now = Instant::now();
        seen.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Some(s) = v["settings"]["signature"].as_str() {
                seen.log.lock().unwrap().push((s.to_owned(), now));
            }
        }
        if !seen.hold.is_zero() {
            tokio::time::sleep(seen.hold).await;
        }
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen {
        log: Arc::default(),
        count: Arc::default(),
        hold,
    };
    let app = axum::Router::new().fallback(hook).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        origin,
        log: seen.log,
        count: seen.count,
    }
}

/// A webhook module `id` pushing to `origin` under a rate limit.
pub fn manifest(id: &str, origin: &str, per_second: u32, burst: u32) -> Value {
    json!({
        "id": id, "name": id, "allowed_hosts": [origin],
        "rate_limit": {"per_second": per_second, "burst": burst},
        "config": {"url": format!("{origin}/hook"), "secret": "bench"},
    })
}

/// Uploads the webhook connector as module `manifest`.
pub async fn upload(base: &str, manifest: &Value, wasm: &[u8]) {
    let url = format!("{base}/v1/admin/modules");
    super::admin_upload(&reqwest::Client::new(), &url, manifest, wasm.to_vec()).await;
}

/// Users `{prefix}{i}` straight into the registry (argon2 at 100,000
/// registrations would measure the password hash), each with a session
/// token and a binding of every module in `modules`. Returns the tokens.
pub async fn seed_users(
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

/// Reports a signature change of `token`'s user from module `source`.
pub async fn post_change(client: &reqwest::Client, base: &str, token: &str, signature: String) {
    let r = client
        .post(format!("{base}/v1/changes"))
        .bearer_auth(token)
        .json(&json!({"module": "source", "settings": {"signature": signature}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

/// Builds the release `gateway` binary (the one operators run) and returns
/// its path.
pub fn release_gateway() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "-p", "gateway", "--bin", "gateway"])
        .status()
        .unwrap();
    assert!(status.success());
    root.join("target/release/gateway")
}

/// A `gateway serve` process; killed when dropped.
pub struct Process {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The child.
    pub child: std::process::Child,
}

impl Process {
    /// Starts `binary serve` on a free port with `args` and the bench's
    /// admin token, master key `key` and generous user limits.
    pub fn start(binary: &std::path::Path, key: &MasterKey, args: &[&str]) -> Process {
        Self::start_wrapped(&[], binary, key, args)
    }

    /// [`Process::start`] under `wrapper` (a command and its arguments,
    /// e.g. valgrind), when not empty.
    pub fn start_wrapped(
        wrapper: &[&str],
        binary: &std::path::Path,
        key: &MasterKey,
        args: &[&str],
    ) -> Process {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = std::process::Command::new(program);
                c.args(wrapper_args).arg(binary);
                c
            }
            None => std::process::Command::new(binary),
        };
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("GATEWAY_MASTER_KEY", key.to_hex())
            .env("GATEWAY_ADMIN_TOKEN", super::ADMIN)
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
        Process { base, child }
    }

    /// SIGTERM, then waits for the process to end (a clean shutdown).
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
