//! A real ejabberd on loopback for the XMPP connector tests.
//!
//! Each [`Ejabberd`] is a private node: its own config, spool (Mnesia), logs
//! and node name in a temp dir, one HTTP listener on `127.0.0.1:<free port>`
//! serving `/api` (`mod_http_api`) and nothing else (no c2s, s2s, MQTT, STUN).
//! The node is started with the `erl` and `ERL_LIBS` that `ejabberdctl`
//! itself uses, but directly, as the current user: `ejabberdctl` insists on
//! switching to the `ejabberd` user when run as root and reads Debian's
//! `ejabberdctl.cfg`, which overrides `--config`. Erlang distribution does not
//! listen (`-dist_listen false`) and no epmd is started, so other Erlang
//! nodes on the machine (RabbitMQ) are untouched. SIGTERM stops the node
//! cleanly (Erlang runs `init:stop()`), and a watchdog inside the node stops
//! it when the test process is gone, so a killed test run leaves nothing.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running private ejabberd 23.01 node.
pub struct Ejabberd {
    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:40123/api`.
    pub api: String,
    /// `scheme://host:port` of the API, for a module's `allowed_hosts`.
    pub origin: String,
    /// The one XMPP domain it serves (`localhost`).
    pub domain: String,
    /// The admin JID (`admin@localhost`), in `acl: admin` and allowed the API.
    pub admin_user: String,
    /// The admin's password.
    pub admin_password: String,
    node: String,
    erl: PathBuf,
    erl_libs: Option<String>,
    dir: TempDir,
    child: Mutex<Option<Child>>,
    client: Client,
}

/// Where `ejabberdctl` is, if ejabberd is installed.
fn ejabberdctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("ejabberdctl"))
        .find(|file| file.is_file())
}

/// The value of a `NAME="..."` or `NAME='...'` line of the ejabberdctl script.
fn script_value(script: &str, name: &str) -> Option<String> {
    script.lines().find_map(|line| {
        let value = line.trim().strip_prefix(name)?.strip_prefix('=')?;
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty() && !value.contains('$')).then(|| value.to_owned())
    })
}

fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn config(port: u16, admin_user: &str) -> String {
    format!(
        r#"# Private test node: loopback HTTP API only.
hosts:
  - localhost
loglevel: info
log_rotate_count: 0
auth_method: internal
acme:
  auto: false
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
acl:
  admin:
    user:
      - "{admin_user}"
api_permissions:
  "admin access":
    who:
      access:
        allow:
          - acl: admin
    what:
      - "*"
      - "!stop"
      - "!start"
modules:
  mod_admin_extra: {{}}
  mod_http_api: {{}}
  mod_vcard:
    search: false
"#
    )
}

fn tail(file: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM and waits for a clean stop; SIGKILL after 20 s.
fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Ejabberd {
    /// The `xmpp` module's manifest for this server, with the reference
    /// connector's `detect` hints.
    pub fn manifest(&self) -> Value {
        json!({
            "id": "xmpp",
            "name": "XMPP",
            "allowed_hosts": [self.origin],
            "config": {"api": self.api, "admin_user": self.admin_user,
                       "admin_password": self.admin_password},
            "detect": crate::detect_hints("xmpp"),
        })
    }

    /// Starts a private node and waits until its API answers the admin.
    /// Without ejabberd installed: `None` with a note, or a panic under `CI=true`.
    pub async fn start() -> Option<Ejabberd> {
        Self::start_on(free_port(), &format!("admin-{}", random_hex())).await
    }

    /// Like [`Ejabberd::start`], with the API on `127.0.0.1:port` (which must
    /// be free) and the admin's password chosen by the caller.
    pub async fn start_on(port: u16, admin_password: &str) -> Option<Ejabberd> {
        let Some(ctl) = ejabberdctl() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires ejabberd (ejabberdctl not found); install it with \
                 scripts/test-servers.sh"
            );
            eprintln!(
                "ejabberd not installed (no ejabberdctl): XMPP test skipped (outside CI only)"
            );
            return None;
        };
        let script = std::fs::read_to_string(&ctl).unwrap_or_default();
        let erl = script_value(&script, "ERL").map_or_else(|| PathBuf::from("erl"), PathBuf::from);
        let erl_libs = script_value(&script, "ERL_LIBS");

        let dir = tempfile::Builder::new()
            .prefix("ejabberd-test-")
            .tempdir()
            .expect("temp dir");
        for sub in ["spool", "logs", "home"] {
            std::fs::create_dir(dir.path().join(sub)).expect("ejabberd dirs");
        }
        let domain = "localhost".to_owned();
        let admin_user = format!("admin@{domain}");
        std::fs::write(dir.path().join("ejabberd.yml"), config(port, &admin_user))
            .expect("write ejabberd.yml");
        let origin = format!("http://127.0.0.1:{port}");
        let node = Ejabberd {
            api: format!("{origin}/api"),
            origin,
            domain,
            admin_user,
            admin_password: admin_password.to_owned(),
            node: format!("gwtest{}@localhost", random_hex()),
            erl,
            erl_libs,
            dir,
            child: Mutex::new(None),
            client: Client::new(),
        };
        node.start_again().await;
        Some(node)
    }

    fn spawn(&self) -> Child {
        let root = self.dir.path();
        let logs = root.join("logs");
        let console = std::fs::File::create(logs.join("console.log")).expect("console log");
        let console_err = console.try_clone().expect("console log");
        let (admin, host) = self.admin_user.split_once('@').expect("admin is user@host");
        // Registers the admin once the node runs (an existing admin stays),
        // then watches the test process and stops the node when it is gone.
        let boot = format!(
            r#"ejabberd_auth:try_register(<<"{admin}">>, <<"{host}">>, <<"{password}">>),
            spawn(fun() ->
                Watch = fun(W) ->
                    timer:sleep(1000),
                    case os:cmd("kill -0 {parent} 2>/dev/null || echo gone") of
                        [] -> W(W);
                        _ -> init:stop()
                    end
                end,
                Watch(Watch)
            end)."#,
            password = self.admin_password,
            parent = std::process::id(),
        );
        let mut command = Command::new(&self.erl);
        command
            .args(["-sname", &self.node, "-setcookie", &random_hex()])
            .args(["-dist_listen", "false", "-start_epmd", "false"])
            // +Bi: Ctrl-C in the terminal (SIGINT to the whole process group)
            // would abort the VM from its break handler; ignore it and stop on
            // SIGTERM (`stop()`) or through the watchdog instead.
            .args(["-noinput", "+K", "true", "+Bi", "-mnesia", "dir"])
            .arg(format!("\"{}\"", root.join("spool").display()))
            .args(["-s", "ejabberd", "-eval", &boot])
            .current_dir(root.join("spool"))
            .env("HOME", root.join("home"))
            .env("EJABBERD_CONFIG_PATH", root.join("ejabberd.yml"))
            .env("EJABBERD_LOG_PATH", logs.join("ejabberd.log"))
            .env("ERL_CRASH_DUMP", logs.join("erl_crash.dump"))
            .env("ERL_CRASH_DUMP_BYTES", "0")
            .env_remove("ERL_FLAGS")
            .env_remove("ERL_AFLAGS")
            .env_remove("ERL_ZFLAGS")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err);
        if let Some(libs) = &self.erl_libs {
            command.env("ERL_LIBS", libs);
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.erl.display()))
    }

    /// The last lines of the node's logs, for failure messages.
    pub fn logs(&self) -> String {
        let logs = self.dir.path().join("logs");
        format!(
            "--- console ---\n{}\n--- ejabberd.log ---\n{}",
            tail(&logs.join("console.log"), 30),
            tail(&logs.join("ejabberd.log"), 30)
        )
    }

    /// Stops the node cleanly (its data stays for [`Ejabberd::start_again`]).
    /// Blocks for the few seconds ejabberd takes to shut down.
    pub fn stop(&self) {
        let taken = self.child.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(mut child) = taken {
            terminate(&mut child);
        }
    }

    /// Starts the same node (name, port, data) again after [`Ejabberd::stop`]
    /// and waits until the API answers; does nothing while it runs.
    pub async fn start_again(&self) {
        {
            let mut slot = self.child.lock().expect("child lock");
            if let Some(child) = slot.as_mut() {
                if matches!(child.try_wait(), Ok(None)) {
                    return;
                }
            }
            *slot = Some(self.spawn());
        }
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let args = json!({"user": self.admin_user.split('@').next(), "host": self.domain,
            "password": self.admin_password});
        loop {
            let (status, answer) = self.try_call("check_password", &args).await;
            if status == Some(StatusCode::OK) && answer == json!(0) {
                return;
            }
            let exited = self
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            if let Some(code) = exited {
                panic!("ejabberd exited with {code} during start\n{}", self.logs());
            }
            if Instant::now() > deadline {
                panic!(
                    "ejabberd's API at {} did not answer in 60 s: {status:?} {answer}\n{}",
                    self.api,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_call(&self, command: &str, args: &Value) -> (Option<StatusCode>, Value) {
        let sent = self
            .client
            .post(format!("{}/{command}", self.api))
            .basic_auth(&self.admin_user, Some(&self.admin_password))
            .json(args)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (Some(status), value)
            }
            Err(e) => (None, Value::String(e.to_string())),
        }
    }

    /// Calls an API command as the admin: (HTTP status, JSON answer).
    pub async fn call(&self, command: &str, args: &Value) -> (StatusCode, Value) {
        match self.try_call(command, args).await {
            (Some(status), value) => (status, value),
            (None, error) => panic!("ejabberd {command}: {error}\n{}", self.logs()),
        }
    }

    /// Creates the account `user@<domain>`.
    pub async fn register(&self, user: &str, password: &str) {
        let args = json!({"user": user, "host": self.domain, "password": password});
        let (status, answer) = self.call("register", &args).await;
        assert_eq!(status, StatusCode::OK, "register {user}: {answer}");
    }

    /// A vCard value (`get_vcard`, or `get_vcard2` with a subfield) as
    /// ejabberd holds it; `None` when the vCard or the field is missing.
    pub async fn vcard(&self, user: &str, name: &str, subname: Option<&str>) -> Option<String> {
        let mut args = json!({"user": user, "host": self.domain, "name": name});
        let command = match subname {
            Some(sub) => {
                args["subname"] = json!(sub);
                "get_vcard2"
            }
            None => "get_vcard",
        };
        match self.call(command, &args).await {
            (StatusCode::OK, answer) => Some(
                answer["content"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{command} answered {answer}"))
                    .to_owned(),
            ),
            (StatusCode::BAD_REQUEST, answer)
                if answer == "error_no_vcard_found"
                    || answer == "error_no_value_found_in_vcard" =>
            {
                None
            }
            (status, answer) => panic!("{command} {name}: {status} {answer}"),
        }
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        self.stop();
    }
}
