//! Helpers for the end-to-end tests: a gateway started through
//! [`gateway::run`] on a free loopback port with its own temp data dir, an HTTP
//! client, plugin fixtures and the PostgreSQL switch.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

pub mod crash_kit;
pub mod ejabberd;
pub mod mock;
pub mod monitor;
pub mod process;
pub mod sse;
pub mod synapse;

use reqwest::{multipart, Client, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The smallest valid WebAssembly component.
pub const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
/// A 1x1 PNG image.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
/// The smallest valid core WebAssembly module (not a component).
pub const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// Builds `crate_name` of the wasm32-wasip2 workspace at `workspace` (once per
/// test process) and returns its `.wasm` component.
fn wasm(workspace: &str, crate_name: &str) -> Vec<u8> {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(workspace);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = built
        .entry(crate_name.to_owned())
        .or_insert_with(|| build_wasm(&root, &crate_name.replace('_', "-")))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(format!("{crate_name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn build_wasm(root: &Path, package: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Run inside the workspace so its .cargo/config.toml (stack size) applies.
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {package} in {} failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`):\n{}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(root.join("target/wasm32-wasip2/release"))
}

/// The `detect` hints shipped with a reference connector (`plugins/NAME/detect.json`).
pub fn detect_hints(plugin_dir: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(plugin_dir)
        .join("detect.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// A reference plugin from `plugins/`, e.g. `webhook_connector`.
pub fn plugin(crate_name: &str) -> Vec<u8> {
    wasm("../plugins", crate_name)
}

/// The misbehaving fixture connector from `tests/fixtures/hostile`.
pub fn hostile() -> Vec<u8> {
    wasm("fixtures", "hostile_connector")
}

/// A connector that reads files (`tests/fixtures/greedy`): it imports
/// `wasi:filesystem`, which no connector is granted.
pub fn greedy() -> Vec<u8> {
    wasm("fixtures", "greedy_connector")
}

/// A reference service plugin from `plugins/NAME` (a workspace of its own),
/// e.g. `handoff` for `handoff_service`.
pub fn service_plugin(dir: &str) -> Vec<u8> {
    wasm(&format!("../plugins/{dir}"), &format!("{dir}_service"))
}

/// A connector of the frozen ABI 1 from `tests/fixtures/legacy-v1`.
pub fn legacy_v1() -> Vec<u8> {
    wasm("fixtures", "legacy_v1_connector")
}

/// The reference webhook connector.
pub fn webhook() -> Vec<u8> {
    plugin("webhook_connector")
}

/// A gateway stopped by [`TestGateway::stop_keeping_data`].
pub struct Stopped {
    data_dir: TempDir,
    addr: std::net::SocketAddr,
}

/// A running gateway.
pub struct TestGateway {
    pub base: String,
    pub admin_token: String,
    pub client: Client,
    pub data_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), gateway::RunError>>,
}

impl TestGateway {
    /// A gateway on SQLite with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose config `adjust` may change first.
    pub async fn start_with(adjust: impl FnOnce(&mut gateway::Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = gateway::Config::new(data_dir.path()).expect("config");
        config.jobs.program = media_worker();
        adjust(&mut config);
        Self::launch(config, data_dir, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Stops (gracefully) and keeps the data dir and address for [`Self::start_again`].
    pub async fn stop_keeping_data(mut self) -> Stopped {
        let addr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("gateway task")
            .expect("clean stop");
        Stopped {
            data_dir: self.data_dir,
            addr,
        }
    }

    /// The stopped gateway again, with its data, at its old address.
    pub async fn start_again(stopped: Stopped) -> Self {
        Self::start_again_with(stopped, |_| {}).await
    }

    /// Like [`Self::start_again`], with a config `adjust` may change first.
    pub async fn start_again_with(
        stopped: Stopped,
        adjust: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let mut config = gateway::Config::new(stopped.data_dir.path()).expect("config");
        config.jobs.program = media_worker();
        adjust(&mut config);
        Self::launch(config, stopped.data_dir, stopped.addr).await
    }

    async fn launch(
        config: gateway::Config,
        data_dir: TempDir,
        addr: std::net::SocketAddr,
    ) -> Self {
        let admin_token = config.admin_token.expose().clone();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let mut gw = TestGateway {
            base,
            admin_token,
            client: Client::new(),
            data_dir,
            stop: Some(stop),
            task,
        };
        gw.wait_ready().await;
        gw
    }

    /// Waits for `/readyz`; a `run()` that ended first (a refused config)
    /// is reported with its error.
    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if self.task.is_finished() {
                let ended = (&mut self.task).await;
                panic!("gateway::run() ended before it was ready: {ended:?}");
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gateway at {} never became ready", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Graceful stop; returns what `run()` returned.
    pub async fn stop(mut self) -> Result<(), gateway::RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("gateway task")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    /// GET that must answer 200 with JSON; returns the JSON.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        let r = self.get(path, token).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.expect("JSON body")
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    /// The change `id` once every target is final (`status` no longer `pending`).
    pub async fn settled(&self, token: &str, id: &str) -> Value {
        let path = format!("/v1/changes/{id}");
        mock::eventually(
            &format!("{path} to settle"),
            std::time::Duration::from_secs(120),
            || async {
                let change = self.get_json(&path, Some(token)).await;
                (change["status"] != "pending").then_some(change)
            },
        )
        .await
    }

    /// Registers `name` with a fixed password and returns a session token.
    pub async fn user_token(&self, name: &str) -> String {
        let creds = json!({"username": name, "password": "correct horse battery"});
        let r = self.post_json("/v1/users", None, &creds).await;
        assert_eq!(r.status(), StatusCode::CREATED, "register {name}");
        let r = self.post_json("/v1/sessions", None, &creds).await;
        assert_eq!(r.status(), StatusCode::CREATED, "login {name}");
        r.json::<Value>().await.expect("json")["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Registers device `id` for the user of `user_token`; its device token.
    pub async fn device_token(&self, user_token: &str, id: &str) -> String {
        let r = self
            .post_json(
                "/v1/devices",
                Some(user_token),
                &json!({"id": id, "name": id}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "register device {id}");
        r.json::<Value>().await.expect("json")["token"]
            .as_str()
            .expect("device token")
            .to_owned()
    }

    /// Reports `settings` from `module` for the user of `token`; the change
    /// id of the `202`.
    pub async fn report(&self, token: &str, module: &str, settings: Value) -> String {
        let body = json!({"module": module, "settings": settings});
        let r = self.post_json("/v1/changes", Some(token), &body).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "report from {module}");
        r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("change id")
            .to_owned()
    }

    /// Webhook modules `alpha` and `beta`, a user `name` with an account on
    /// each, and a change reported from alpha: the user's token and the
    /// change id. (On a gateway with delivery concurrency 0 the change
    /// stays pending.)
    pub async fn user_with_a_change(&self, name: &str) -> (String, String) {
        for id in ["alpha", "beta"] {
            let r = self.upload_module(&manifest(id), &webhook()).await;
            assert_eq!(r.status(), StatusCode::CREATED, "upload {id}");
        }
        let token = self.user_token(name).await;
        for module in ["alpha", "beta"] {
            let body = json!({"module": module, "account": name, "credentials": {}});
            let r = self.post_json("/v1/bindings", Some(&token), &body).await;
            assert_eq!(r.status(), StatusCode::CREATED, "bind {module}");
        }
        let id = self
            .report(&token, "alpha", json!({"signature": "still pending"}))
            .await;
        (token, id)
    }

    /// Uploads a module as the admin.
    pub async fn upload_module(&self, manifest: &Value, plugin: &[u8]) -> Response {
        self.upload_module_as(&self.admin_token.clone(), manifest.to_string(), plugin)
            .await
    }

    pub async fn upload_module_as(&self, token: &str, manifest: String, plugin: &[u8]) -> Response {
        let form = multipart::Form::new().text("manifest", manifest).part(
            "plugin",
            multipart::Part::bytes(plugin.to_vec()).file_name("plugin.wasm"),
        );
        self.client
            .post(self.url("/v1/admin/modules"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }
}

/// The target of `module` in a change as `GET /v1/changes/{id}` shows it.
pub fn target<'a>(change: &'a Value, module: &str) -> &'a Value {
    change["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["module"] == module)
        .unwrap_or_else(|| panic!("no target {module} in {change}"))
}

/// A manifest for module `id` (the webhook connector's config shape), posting
/// to [`mock::shared_receiver`]: every account binds, every push fails. Its
/// rate limit lets tests bind many accounts at once (a binding's check is
/// paced by the interactive quarter of it).
pub fn manifest(id: &str) -> Value {
    let origin = mock::shared_receiver();
    json!({
        "id": id,
        "name": format!("{id} network"),
        "allowed_hosts": [origin],
        "rate_limit": {"per_second": 400, "burst": 400},
        "config": {"url": format!("{origin}/hook"), "secret": format!("{id}-module-secret")},
        "detect": {"executables": [format!("{id}-client")]}
    })
}

/// Asserts the documented error shape and returns (status, code, message).
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> String {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "status for body {text}");
    assert!(
        content_type.starts_with("application/json"),
        "error must be JSON, got {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "code in {text}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!message.is_empty(), "empty message in {text}");
    message
}

/// The PostgreSQL server to test against, from `TEST_DATABASE_URL`. Outside CI
/// its absence skips the PostgreSQL part (with a note); under `CI=true` it fails.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires TEST_DATABASE_URL to point at a PostgreSQL server"
            );
            eprintln!("TEST_DATABASE_URL unset: PostgreSQL part skipped (outside CI only)");
            None
        }
    }
}

/// The misbehaving fixture service from `tests/fixtures/hostile-service` (a
/// workspace of its own: it builds plugin-sdk's `service` feature).
pub fn hostile_service() -> Vec<u8> {
    wasm("fixtures/hostile-service", "hostile_service")
}

impl TestGateway {
    /// Uploads a service plugin as the admin (`POST /v1/admin/services`).
    pub async fn upload_service(&self, manifest: &Value, plugin: &[u8]) -> Response {
        let form = multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "plugin",
                multipart::Part::bytes(plugin.to_vec()).file_name("service.wasm"),
            );
        self.client
            .post(self.url("/v1/admin/services"))
            .bearer_auth(&self.admin_token)
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }
}

impl TestGateway {
    /// The event stream of the device holding `token`.
    pub async fn inbox(&self, token: &str) -> sse::EventStream {
        let r = self
            .client
            .get(self.url("/v1/devices/current/events"))
            .bearer_auth(token)
            .send()
            .await
            .expect("event stream");
        sse::EventStream::new(r)
    }

    /// A tus `PATCH` of upload `at` announcing `length` bytes from `offset`
    /// of which only `sent` go out before the connection closes (written on
    /// a raw socket: a client library would not send half a body).
    pub async fn cut_patch(
        &self,
        token: &str,
        at: &str,
        offset: usize,
        length: usize,
        sent: &[u8],
    ) {
        use tokio::io::AsyncWriteExt;
        let addr = self.base.trim_start_matches("http://");
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "PATCH {at} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        socket.write_all(sent).await.expect("write");
        socket.shutdown().await.expect("shutdown");
    }
}

/// The S3-compatible server of the tests (moto, from PyPI), started by
/// `scripts/s3-server.sh` on loopback if it is not running: its base URL
/// and bucket. Outside CI its absence (no PyPI) skips the S3 part (with a
/// note); under `CI=true` it fails.
pub fn s3_server() -> Option<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh");
    let out = Command::new("bash").arg(&script).arg("start").output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("S3 test server: "))
                .unwrap_or_else(|| panic!("unexpected output of s3-server.sh: {text}"));
            let (url, bucket) = line.split_once(" bucket ").expect("url and bucket");
            Some((url.to_owned(), bucket.to_owned()))
        }
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires the S3 test server: {why}"
            );
            eprintln!("no S3 test server ({why}): S3 part skipped (outside CI only)");
            None
        }
    }
}

/// The program the gateway starts media jobs with: this package's fresh
/// build of the gateway binary (the test executable cannot run them).
pub fn media_worker() -> std::path::PathBuf {
    process::package_binary("e2e-gateway")
}
