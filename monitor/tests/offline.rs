//! The `monitor` binary on its own, with no gateway to talk to: what a user
//! sees before logging in, and that a report made while the gateway is
//! unreachable is kept on disk, in order, and shown as the user wrote it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn monitor(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_monitor"))
        .arg("--config-dir")
        .arg(config)
        .args(args)
        .env_remove("MONITOR_SERVER")
        .env_remove("MONITOR_PASSWORD")
        .env("HOME", config)
        .output()
        .expect("run the monitor binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn commands_before_login_say_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = monitor(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not logged in"), "{}", text(&out));
}

#[test]
fn a_login_to_an_unreachable_gateway_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let out = Command::new(env!("CARGO_BIN_EXE_monitor"))
        .args(["--config-dir", dir.path().to_str().unwrap()])
        .args(["--server", &server, "login", "--username", "bob"])
        .env("MONITOR_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cannot reach the gateway at {server}")),
        "{}",
        text(&out)
    );
}

#[test]
fn reports_wait_on_disk_while_the_gateway_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let session = serde_json::json!({
        "server": format!("http://127.0.0.1:{}", closed_port()),
        "username": "bob",
        "token": "t",
        "expires_at": "2099-01-01T00:00:00.000Z",
    });
    std::fs::write(dir.path().join("session.json"), session.to_string()).unwrap();

    for signature in ["first", "second"] {
        let out = monitor(
            dir.path(),
            &["report", "--module", "matrix", "--signature", signature],
        );
        assert_eq!(out.status.code(), Some(3), "queued: {}", text(&out));
        assert!(text(&out).contains("kept on disk"), "{}", text(&out));
    }
    let queued = std::fs::read_dir(dir.path().join("queue")).unwrap().count();
    assert_eq!(queued, 2, "two reports in the queue folder");

    // `status` lists them oldest first, as the user wrote them, before it
    // fails to reach the gateway for the rest.
    let out = monitor(dir.path(), &["status"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("2 report(s) waiting"), "{shown}");
    let first = shown.find("signature \"first\"").expect(&shown);
    let second = shown.find("signature \"second\"").expect(&shown);
    assert!(first < second, "oldest first: {shown}");
}

#[test]
fn handoff_before_device_registration_says_how_to_register() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["handoff", "open", "--app", "org.example.editor"][..],
        &["handoff", "inbox", "--accept", "--once"][..],
        &["handoff", "log", "some-session"][..],
    ] {
        let out = monitor(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains(
                "this terminal is not registered as a device: run `monitor device register` first"
            ),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = monitor(dir.path(), &["device", "register", "--id", "t1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not logged in"), "{}", text(&out));
}
