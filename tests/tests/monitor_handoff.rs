//! The `monitor` binary as a terminal of the handoff service, against a
//! gateway started through `run()` with the reference handoff plugin: two
//! monitor installations of one user (two terminals) register as devices,
//! one opens a session and hands it to the other, which takes it over from
//! its event stream; the session's log tells the story. Also what a user
//! sees without a registered device, with a stale version, and when the
//! other terminal declines.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::eventually;
use e2e_tests::monitor::{Monitor, Ran};
use e2e_tests::{service_plugin, TestGateway};
use reqwest::{multipart, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const PASSWORD: (&str, &str) = ("MONITOR_PASSWORD", "correct horse battery");
const APP: &str = "org.example.editor";
/// Upper bound for a monitor process to print what the test waits for (a
/// guard against hanging forever, not a timing assumption).
const PATIENCE: Duration = Duration::from_secs(120);

/// A gateway with the handoff service installed.
async fn gateway() -> TestGateway {
    let gw = TestGateway::start().await;
    let manifest = json!({"id": "handoff", "name": "Handoff",
        "grants": ["kv", "devices", "events", "timers", "clock"]});
    let form = multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            multipart::Part::bytes(service_plugin("handoff")).file_name("handoff.wasm"),
        );
    let r = gw
        .client
        .post(gw.url("/v1/admin/services"))
        .bearer_auth(&gw.admin_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    gw
}

/// A monitor installation logged in as `user` (created by the first one).
async fn logged_in(gw: &TestGateway, user: &str, first: bool) -> Monitor {
    let m = Monitor::new();
    if first {
        m.register(&gw.base, user).await;
    } else {
        m.run(
            &["--server", &gw.base, "login", "--username", user],
            &[PASSWORD],
        )
        .await
        .ok()
        .says(&format!("logged in as {user}"));
    }
    m
}

/// `monitor device register --id ID`, able to continue [`APP`].
async fn register_device(m: &Monitor, id: &str) -> Ran {
    let name = format!("terminal {id}");
    m.run(
        &[
            "device",
            "register",
            "--id",
            id,
            "--name",
            &name,
            "--capability",
            APP,
        ],
        &[],
    )
    .await
    .ok()
    .says(&format!("registered this terminal as device {id}"))
}

/// The word after `marker` in the output of `ran`.
fn word_after(ran: &Ran, marker: &str) -> String {
    let out = ran.output();
    let start = out
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {ran:#?}"))
        + marker.len();
    out[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches([':', ';', ','])
        .to_owned()
}

/// `handoff open`: the new session's id.
async fn open(m: &Monitor, state: &str) -> String {
    let opened = m
        .run(&["handoff", "open", "--app", APP, "--state", state], &[])
        .await
        .ok()
        .says("at version 1, held by this terminal");
    word_after(&opened, "opened session ")
}

/// A long-running monitor command whose output is read line by line as it
/// comes (stdout and stderr together, in the order read).
struct Running {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(m: &Monitor, args: &[&str]) -> Running {
        let mut child = m.spawn(args, &[]);
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (pipe, tx) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                tx.clone(),
            ),
            (Box::new(stderr), tx),
        ] {
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn printed(&self) -> String {
        self.seen.join("\n")
    }

    /// Waits until a line holding `text` is printed; returns that line.
    async fn wait_for(&mut self, text: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "the monitor never printed {text:?}; it printed:\n{}",
                self.printed()
            ),
        }
    }

    /// Waits for the process to exit by itself: its exit code and all it printed.
    async fn exit(mut self) -> (i32, String) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the monitor did not exit; it printed:\n{}", self.printed()))
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.printed())
    }
}

/// The (device, event) columns of `handoff log`.
fn log_events(log: &Ran) -> Vec<(String, String)> {
    log.stdout
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.len() >= 3, "a log line: {line:?}");
            (words[1].to_owned(), words[2].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_the_terminal_that_accepts_it() {
    let gw = gateway().await;
    let t1 = logged_in(&gw, "alice", true).await;
    let t2 = logged_in(&gw, "alice", false).await;
    register_device(&t1, "t1").await;
    register_device(&t2, "t2").await;

    let listed = t1.run(&["device", "list"], &[]).await.ok();
    let line = |id: &str| {
        listed
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} in {listed:#?}"))
            .to_owned()
    };
    assert!(line("t1").contains("(this terminal)"), "{listed:#?}");
    assert!(line("t1").contains("active"), "{listed:#?}");
    assert!(line("t2").contains("terminal t2"), "{listed:#?}");
    assert!(!line("t2").contains("(this terminal)"), "{listed:#?}");

    let sid = open(&t1, r#"{"line": 7}"#).await;
    t1.run(
        &[
            "handoff",
            "push",
            &sid,
            "--version",
            "1",
            "--state",
            r#"{"line": 8}"#,
        ],
        &[],
    )
    .await
    .ok()
    .says(&format!("session {sid} is at version 2"));

    // The second terminal listens; once it does, the first hands it the session.
    let mut inbox = Running::start(&t2, &["handoff", "inbox", "--accept", "--once"]);
    inbox
        .wait_for("listening for the events of device t2")
        .await;
    let asked = t1
        .run(&["handoff", "switch", &sid, "--to", "t2"], &[])
        .await
        .ok()
        .says("offered to t2");
    let wid = word_after(&asked, "switch ");

    let (code, printed) = inbox.exit().await;
    assert_eq!(code, 0, "the inbox exits after accepting:\n{printed}");
    assert!(
        printed.contains(&format!(
            "handoff.offer: switch {wid} offers session {sid} ({APP}, version 2) from t1"
        )),
        "{printed}"
    );
    assert!(printed.contains(r#"state {"line":8}"#), "{printed}");
    assert!(
        printed.contains(&format!(
            "accepted switch {wid}: session {sid} ({APP}) is now held by this terminal (t2) at version 2"
        )),
        "{printed}"
    );

    // Both terminals see t2 holding it; the gateway agrees.
    t2.run(&["handoff", "show", &sid], &[])
        .await
        .ok()
        .says("held by t2 (this terminal)")
        .says("version 2")
        .says(r#"{"line":8}"#);
    let seen_from_t1 = t1.run(&["handoff", "show", &sid], &[]).await.ok();
    assert!(
        seen_from_t1.stdout.contains("held by t2\n"),
        "{seen_from_t1:#?}"
    );
    let r = gw
        .client
        .get(gw.url(&format!("/v1/services/handoff/sessions/{sid}")))
        .bearer_auth(t2.device_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["holder"], "t2");

    // The log tells the story, with the device of each step.
    let log = t1.run(&["handoff", "log", &sid], &[]).await.ok();
    let steps = log_events(&log);
    let expected = [
        ("t1", "opened"),
        ("t1", "progress"),
        ("t1", "offered"),
        ("t2", "accepted"),
        ("t2", "moved"),
    ];
    assert_eq!(
        steps,
        expected.map(|(d, e)| (d.to_owned(), e.to_owned())),
        "{log:#?}"
    );
    assert!(
        log.stdout.contains(&format!("switch_id={wid} to=t2")),
        "{log:#?}"
    );

    // The first terminal's inbox tells it the session left (and, before
    // that, that t2 joined); it remembers how far it read.
    let mut inbox = Running::start(&t1, &["handoff", "inbox"]);
    inbox.wait_for("device.joined: t2 (terminal t2").await;
    inbox
        .wait_for(&format!(
            "handoff.moved: session {sid} moved to t2; this terminal no longer holds it"
        ))
        .await;
    let cursor = t1.file("inbox.json");
    eventually("the inbox position", PATIENCE, || {
        let cursor = cursor.clone();
        async move {
            let text = std::fs::read_to_string(&cursor).ok()?;
            let id = serde_json::from_str::<Value>(&text).ok()?["last_event_id"].as_u64()?;
            (id >= 2).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_needs_a_device_and_the_latest_version() {
    let gw = gateway().await;
    let t1 = logged_in(&gw, "bob", true).await;
    t1.run(&["handoff", "open", "--app", APP], &[])
        .await
        .code(1)
        .says("this terminal is not registered as a device: run `monitor device register` first");
    t1.run(&["handoff", "inbox", "--once"], &[])
        .await
        .code(1)
        .says("run `monitor device register` first");

    register_device(&t1, "t1").await;
    let sid = open(&t1, r#"{"line": 1}"#).await;
    t1.run(
        &[
            "handoff",
            "push",
            &sid,
            "--version",
            "1",
            "--state",
            r#"{"line": 2}"#,
        ],
        &[],
    )
    .await
    .ok()
    .says("is at version 2");
    // A second push based on version 1 again: refused, nothing changes.
    t1.run(
        &["handoff", "push", &sid, "--version", "1", "--state", r#"{"line": 3}"#],
        &[],
    )
    .await
    .code(1)
    .says("the session is at version 2; read it and apply your change to it (stale_version, HTTP 409)")
    .says(&format!("`monitor handoff show {sid}`"));
    t1.run(&["handoff", "show", &sid], &[])
        .await
        .ok()
        .says("version 2")
        .says(r#"{"line":2}"#);
    t1.run(
        &[
            "handoff",
            "push",
            &sid,
            "--version",
            "2",
            "--state",
            "not json",
        ],
        &[],
    )
    .await
    .code(1)
    .says("--state is not JSON");

    // Registering again (same id, no flags) keeps the device and gives a
    // new token; the old one no longer works.
    let old = t1.device_token();
    t1.run(&["device", "register"], &[])
        .await
        .ok()
        .says("registered device t1 (terminal t1) again");
    assert_ne!(t1.device_token(), old);
    t1.run(&["device", "list"], &[])
        .await
        .ok()
        .says(&format!("can continue: {APP}  (this terminal)"));
    let r = gw
        .client
        .get(gw.url(&format!("/v1/services/handoff/sessions/{sid}")))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    t1.run(&["handoff", "show", &sid], &[])
        .await
        .ok()
        .says("held by t1 (this terminal)");

    // With no other terminal there is nobody to hand it to.
    t1.run(&["handoff", "switch", &sid], &[])
        .await
        .code(1)
        .says("no_target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_offer_leaves_the_session_where_it_was() {
    let gw = gateway().await;
    let t1 = logged_in(&gw, "carol", true).await;
    let t2 = logged_in(&gw, "carol", false).await;
    register_device(&t1, "t1").await;
    register_device(&t2, "t2").await;
    let sid = open(&t1, r#"{"page": 3}"#).await;

    let mut holder = Running::start(&t1, &["handoff", "inbox"]);
    holder
        .wait_for("listening for the events of device t1")
        .await;
    let mut other = Running::start(&t2, &["handoff", "inbox", "--decline", "busy", "--once"]);
    other
        .wait_for("listening for the events of device t2")
        .await;
    t1.run(&["handoff", "switch", &sid], &[])
        .await
        .ok()
        .says("offered to t2");

    let (code, printed) = other.exit().await;
    assert_eq!(code, 0, "{printed}");
    assert!(
        printed.contains("(busy): no other terminal takes it"),
        "{printed}"
    );
    holder
        .wait_for(&format!(
            "of session {sid} failed: no terminal took it, this terminal keeps it"
        ))
        .await;
    t2.run(&["handoff", "show", &sid], &[])
        .await
        .ok()
        .says("held by t1\n");
    let log = t1.run(&["handoff", "log", &sid], &[]).await.ok();
    let events: Vec<String> = log_events(&log).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        events,
        ["opened", "offered", "declined", "unplaced"],
        "{log:#?}"
    );
    assert!(log.stdout.contains("reason=busy"), "{log:#?}");
}
