//! A real Synapse (Matrix homeserver) on loopback for the connector tests:
//! installed by `scripts/test-servers.sh` into `target/test-servers`, started
//! here with its own config, SQLite database and a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running Synapse; stopped on drop.
pub struct Synapse {
    /// Base URL, e.g. `http://127.0.0.1:43123`.
    pub base: String,
    /// The origin to grant the connector (same as `base`).
    pub origin: String,
    python: PathBuf,
    config: PathBuf,
    child: Child,
    _dir: TempDir,
}

/// Where `scripts/test-servers.sh` puts the Synapse virtualenv.
fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-servers/synapse-venv/bin/python")
}

/// Settings applied on top of Synapse's generated config: loopback listener,
/// rate limits raised for tests, no federation key servers.
const OVERRIDES: &str = r#"
import sys, yaml
path, port = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    cfg = yaml.safe_load(f)
cfg["listeners"] = [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                     "tls": False, "x_forwarded": False,
                     "resources": [{"names": ["client"], "compress": False}]}]
fast = {"per_second": 1000, "burst_count": 1000}
for key in ["rc_message", "rc_registration", "rc_joins", "rc_3pid_validation",
            "rc_invites", "rc_admin_redaction", "rc_media_create", "rc_presence"]:
    cfg[key] = fast if key not in ("rc_joins", "rc_invites", "rc_presence") else (
        {"local": fast, "remote": fast} if key == "rc_joins" else
        {"per_room": fast, "per_user": fast, "per_issuer": fast} if key == "rc_invites" else
        {"per_user": fast})
cfg["rc_login"] = {"address": fast, "account": fast, "failed_attempts": fast}
cfg["trusted_key_servers"] = []
cfg["suppress_key_server_warning"] = True
cfg["report_stats"] = False
cfg["presence"] = {"enabled": True}
with open(path, "w") as f:
    yaml.safe_dump(cfg, f)
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Synapse {
    /// The `matrix` module's manifest for this server, with the reference
    /// connector's `detect` hints.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::json!({
            "id": "matrix",
            "name": "Matrix",
            "allowed_hosts": [self.origin],
            "rate_limit": {"per_second": 20, "burst": 20},
            "config": {"homeserver": self.base},
            "detect": crate::detect_hints("matrix"),
        })
    }

    /// Starts a homeserver named `localhost` on a free port. Without the
    /// virtualenv: `None` with a note, or a panic under `CI=true`.
    pub async fn start() -> Option<Synapse> {
        Self::start_on(free_port()).await
    }

    /// Like [`Synapse::start`], on `127.0.0.1:port` (which must be free).
    pub async fn start_on(port: u16) -> Option<Synapse> {
        let python = venv_python();
        if !python.exists() {
            let msg = format!(
                "Synapse is not installed ({} missing): run scripts/test-servers.sh",
                python.display()
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("{msg}; Matrix tests skipped (outside CI only)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("homeserver.yaml");
        run(
            Command::new(&python)
                .current_dir(dir.path())
                .args(["-m", "synapse.app.homeserver", "--server-name", "localhost"])
                .arg("--config-path")
                .arg(&config)
                .args(["--generate-config", "--report-stats=no"]),
            "generating the Synapse config",
        );
        run(
            Command::new(&python)
                .args(["-c", OVERRIDES])
                .arg(&config)
                .arg(port.to_string()),
            "adjusting the Synapse config",
        );
        let log = std::fs::File::create(dir.path().join("stdout.log")).expect("log file");
        let child = Command::new(&python)
            .current_dir(dir.path())
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start Synapse");
        let base = format!("http://127.0.0.1:{port}");
        let mut synapse = Synapse {
            origin: base.clone(),
            base,
            python,
            config,
            child,
            _dir: dir,
        };
        synapse.wait_ready().await;
        Some(synapse)
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("{}/_matrix/client/versions", self.base);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self._dir.path().join("stdout.log"))
                    .unwrap_or_default();
                panic!("Synapse exited with {status}:\n{log}");
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Synapse did not answer on {} within 90 s", self.base);
    }

    /// Creates a local user; returns the Matrix user id.
    pub fn register(&self, user: &str, password: &str) -> String {
        run(
            Command::new(&self.python)
                .args(["-m", "synapse._scripts.register_new_matrix_user", "-c"])
                .arg(&self.config)
                .args(["-u", user, "-p", password, "--no-admin", &self.base]),
            "registering a Matrix user",
        );
        format!("@{user}:localhost")
    }

    /// Logs in as a user and returns an access token (for independent reads).
    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&serde_json::json!({"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user}, "password": password}))
            .send()
            .await
            .expect("login");
        assert!(r.status().is_success(), "login as {user}: {}", r.status());
        let body: serde_json::Value = r.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// A client-server API read as the holder of `token`: (status, JSON).
    async fn read(&self, token: &str, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("read from Synapse");
        let status = r.status();
        (status, r.json().await.unwrap_or_default())
    }

    /// The presence `status_msg` of `user_id` as Synapse holds it.
    pub async fn status_msg(&self, token: &str, user_id: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(user_id));
        let (status, body) = self.read(token, &path).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body["status_msg"].as_str().map(str::to_owned)
    }

    /// Sets `user_id`'s presence status message, as a Matrix client does.
    pub async fn set_status_msg(&self, token: &str, user_id: &str, text: &str) {
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(user_id));
        let r = reqwest::Client::new()
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"presence": "online", "status_msg": text}))
            .send()
            .await
            .expect("set presence on Synapse");
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }

    /// The profile `avatar_url` (an `mxc://` URI) of `user_id`, if set.
    pub async fn avatar_url(&self, token: &str, user_id: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/profile/{}", encode(user_id));
        let (status, body) = self.read(token, &path).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body["avatar_url"].as_str().map(str::to_owned)
    }

    /// Sets `user_id`'s avatar to a PNG, as a Matrix client does: the
    /// image uploaded as media, then the profile's `avatar_url`.
    pub async fn set_avatar(&self, token: &str, user_id: &str, png: Vec<u8>) {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(token)
            .header("content-type", "image/png")
            .body(png)
            .send()
            .await
            .expect("upload to Synapse");
        assert!(r.status().is_success(), "media upload: {}", r.status());
        let uploaded: serde_json::Value = r.json().await.expect("upload answer");
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", encode(user_id));
        let r = client
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"avatar_url": uploaded["content_uri"]}))
            .send()
            .await
            .expect("set the avatar on Synapse");
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }

    /// The bytes of an `mxc://` media item, as a Matrix client downloads them.
    pub async fn download(&self, token: &str, mxc: &str) -> Vec<u8> {
        let media = mxc.strip_prefix("mxc://").expect("an mxc:// URI");
        let r = reqwest::Client::new()
            .get(format!(
                "{}/_matrix/client/v1/media/download/{media}",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("download from Synapse");
        assert!(r.status().is_success(), "download {mxc}: {}", r.status());
        r.bytes().await.expect("media bytes").to_vec()
    }

    /// Stops the homeserver cleanly: SIGTERM, then SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user id as a URL path segment.
fn encode(user_id: &str) -> String {
    user_id.replace('@', "%40").replace(':', "%3A")
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
