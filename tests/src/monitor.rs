//! The real `monitor` binary, driven as a user drives it from a shell: each
//! [`Monitor`] has its own config dir and home folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// Environment variables the monitor reads; cleared so the caller's own
/// settings never leak into a test.
const MONITOR_ENV: [&str; 6] = [
    "MONITOR_SERVER",
    "MONITOR_CONFIG_DIR",
    "MONITOR_PASSWORD",
    "MONITOR_CREDENTIALS",
    "MONITOR_PROFILE",
    "XDG_CONFIG_HOME",
];

/// One user's monitor installation.
pub struct Monitor {
    /// Config dir (session, bindings, queue).
    pub config: TempDir,
    /// Home folder (for `scan` and profile files).
    pub home: TempDir,
}

/// What one command did.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Ran {
    /// Asserts exit code `code`; returns self for more checks.
    pub fn code(self, code: i32) -> Ran {
        assert_eq!(self.code, code, "exit code of a monitor command: {self:#?}");
        self
    }

    /// Asserts success.
    pub fn ok(self) -> Ran {
        self.code(0)
    }

    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts that the output holds `text`.
    pub fn says(self, text: &str) -> Ran {
        assert!(
            self.output().contains(text),
            "expected {text:?} in the monitor's output: {self:#?}"
        );
        self
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A fresh installation.
    pub fn new() -> Monitor {
        Monitor {
            config: tempfile::tempdir().expect("config dir"),
            home: tempfile::tempdir().expect("home dir"),
        }
    }

    /// The config dir.
    pub fn dir(&self) -> &Path {
        self.config.path()
    }

    fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Command {
        let mut command =
            tokio::process::Command::new(crate::process::package_binary("e2e-monitor"));
        for var in MONITOR_ENV {
            command.env_remove(var);
        }
        command
            .arg("--config-dir")
            .arg(self.config.path())
            .args(args)
            .env("HOME", self.home.path())
            .envs(envs.iter().copied())
            .kill_on_drop(true);
        command
    }

    /// Runs `monitor ARGS` with `stdin` as its input and waits for it.
    pub async fn run_with(&self, args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Ran {
        let mut child = self
            .command(args, envs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(180),
            child.wait_with_output(),
        )
        .await
        .unwrap_or_else(|_| panic!("monitor {args:?} did not finish in 180 s"))
        .expect("monitor output");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `monitor ARGS` with nothing on stdin.
    pub async fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Ran {
        self.run_with(args, envs, "").await
    }

    /// Starts a long-running `monitor ARGS` (e.g. `watch`); killed on drop.
    pub fn spawn(&self, args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Child {
        self.command(args, envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor")
    }

    /// `monitor register` of `user` at `server` (password from the environment).
    pub async fn register(&self, server: &str, user: &str) -> Ran {
        self.run(
            &["--server", server, "register", "--username", user],
            &[("MONITOR_PASSWORD", "correct horse battery")],
        )
        .await
        .ok()
    }

    /// A file in the config dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.config.path().join(name)
    }

    /// The session token the monitor keeps.
    pub fn token(&self) -> String {
        self.token_in("session.json")
    }

    /// The device token the monitor keeps (after `device register`).
    pub fn device_token(&self) -> String {
        self.token_in("device.json")
    }

    fn token_in(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.file(file)).expect(file);
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }
}

/// A long-running monitor a test talks to: what it printed so far (stdout
/// and stderr, prompts without a newline included) and its stdin.
pub struct Talking {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    printed: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Monitor {
    /// Starts `monitor ARGS` with stdin open for answers; killed on drop.
    pub fn talk(&self, args: &[&str], envs: &[(&str, &str)]) -> Talking {
        use tokio::io::AsyncReadExt;
        let mut child = self
            .command(args, envs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor");
        let stdin = child.stdin.take().expect("stdin");
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipes: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for mut pipe in pipes {
            let printed = printed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut text) = printed.lock() {
                        text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Talking {
            child,
            stdin,
            printed,
        }
    }
}

impl Talking {
    /// Everything printed so far.
    pub fn printed(&self) -> String {
        self.printed.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits until `text` has been printed `times` times in all; panics
    /// after `within`.
    pub async fn wait_for(&self, text: &str, times: usize, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.printed().matches(text).count() < times {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{text:?} not printed {times} time(s) within {within:?}: {}",
                self.printed()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Writes `line` and a newline to its stdin.
    pub async fn answer(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("answer");
    }

    /// Kills it; what it printed.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        self.printed()
    }
}

/// Pidgin's prefs (current saved status `current`, buddy icon `icon`) and
/// saved statuses, in Pidgin's own formats.
pub fn pidgin_files(home: &Path, current: u64, statuses: &[(u64, &str)], icon: &str) {
    let dir = home.join(".purple");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prefs.xml"),
        format!(
            "<?xml version='1.0' encoding='UTF-8' ?>\n\n<pref version='1' name='/'>\n\
             \t<pref name='purple'>\n\t\t<pref name='savedstatus'>\n\
             \t\t\t<pref name='default' type='int' value='{current}'/>\n\
             \t\t\t<pref name='isidleaway' type='bool' value='0'/>\n\t\t</pref>\n\t</pref>\n\
             \t<pref name='pidgin'>\n\t\t<pref name='accounts'>\n\
             \t\t\t<pref name='buddyicon' type='path' value='{icon}'/>\n\t\t</pref>\n\t</pref>\n</pref>\n"
        ),
    )
    .unwrap();
    let saved: String = statuses
        .iter()
        .map(|(created, message)| {
            format!(
                "\t<status type='away' name='s{created}' created='{created}' lastused='{created}' \
                 usage_count='1'>\n\t\t<state>away</state>\n\t\t<message>{message}</message>\n\t</status>\n"
            )
        })
        .collect();
    std::fs::write(
        dir.join("status.xml"),
        format!("<?xml version='1.0' encoding='UTF-8' ?>\n\n<statuses version='1.0'>\n{saved}</statuses>\n"),
    )
    .unwrap();
}
