//! The `monitor` binary as a terminal of the files service, against a
//! gateway started through `run()` with the reference files plugin: two
//! monitor installations of one user (a laptop and a phone). The laptop
//! uploads (manifest, then tus in 8 MiB chunks with progress bars); the
//! phone lists, downloads, waits for a file still uploading, and keeps a
//! folder in step; `monitor devices` is the control list.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use e2e_tests::monitor::{Monitor, Ran};
use e2e_tests::{service_plugin, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: (&str, &str) = ("MONITOR_PASSWORD", "correct horse battery");
/// Upper bound for a monitor process to print what the test waits for (a
/// guard against hanging forever, not a timing assumption).
const PATIENCE: Duration = Duration::from_secs(120);

async fn gateway() -> TestGateway {
    let gw = TestGateway::start().await;
    let manifest = json!({"id": "files", "name": "Files",
        "grants": ["kv", "devices", "events", "clock", "log", "blobs"]});
    let r = gw.upload_service(&manifest, &service_plugin("files")).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    gw
}

/// A monitor installation of `user` registered as device `id`.
async fn terminal(gw: &TestGateway, user: &str, id: &str, first: bool) -> Monitor {
    let m = Monitor::new();
    if first {
        m.register(&gw.base, user).await;
    } else {
        m.run(
            &["--server", &gw.base, "login", "--username", user],
            &[PASSWORD],
        )
        .await
        .ok();
    }
    m.run(&["device", "register", "--id", id, "--name", id], &[])
        .await
        .ok()
        .says(&format!("registered this terminal as device {id}"));
    m
}

/// The id `files list` shows for the file named `name`, with its status.
fn listed(ran: &Ran, name: &str) -> (String, String) {
    let out = ran.output();
    let line = out
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed in:\n{out}"));
    let mut words = line.split_whitespace();
    (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_uploaded_on_one_terminal_are_listed_fetched_and_synced_on_another() {
    let gw = gateway().await;
    let laptop = terminal(&gw, "alice", "laptop", true).await;
    let phone = terminal(&gw, "alice", "phone", false).await;
    let work = tempfile::tempdir().unwrap();
    let notes = work.path().join("notes.txt");
    std::fs::write(&notes, "meet at noon\n").unwrap();
    // Three PATCHes of at most 8 MiB.
    let big: Vec<u8> = (0..(17u32 << 20)).map(|i| (i % 241) as u8).collect();
    let big_path = work.path().join("big.bin");
    std::fs::write(&big_path, &big).unwrap();

    let up = laptop
        .run(
            &[
                "files",
                "upload",
                notes.to_str().unwrap(),
                big_path.to_str().unwrap(),
            ],
            &[],
        )
        .await
        .ok();
    assert!(up.output().contains("big.bin"), "{up:#?}");
    let uploads: Value =
        serde_json::from_str(&std::fs::read_to_string(laptop.file("uploads.json")).unwrap())
            .unwrap();
    assert_eq!(uploads, json!({}), "finished uploads are forgotten");

    let list = phone.run(&["files", "list"], &[]).await.ok();
    let (_, status) = listed(&list, "notes.txt");
    assert_eq!(status, "11");
    let (big_id, status) = listed(&list, "big.bin");
    assert_eq!(status, "11");
    let out = work.path().join("fetched.bin");
    phone
        .run(
            &["files", "get", &big_id, "--output", out.to_str().unwrap()],
            &[],
        )
        .await
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), big);

    // A file announced but not uploaded: `get` waits for it.
    let token = laptop.device_token();
    let announced: Value = gw
        .client
        .post(gw.url("/v1/services/files/batches"))
        .bearer_auth(&token)
        .json(&json!({"files": [{"name": "later.txt", "type": "text/plain", "size": 5}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let later = announced["files"][0]["id"].as_str().unwrap().to_owned();
    let later_out = work.path().join("later.txt");
    let mut waiting = phone.spawn(
        &[
            "files",
            "get",
            &later,
            "--output",
            later_out.to_str().unwrap(),
        ],
        &[],
    );
    let mut stderr = BufReader::new(waiting.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("waiting for it") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(
        said.contains("later.txt is 01 (0 of 5 bytes uploaded)"),
        "{said}"
    );
    let id64 = base64::engine::general_purpose::STANDARD.encode(&later);
    let created = gw
        .client
        .post(gw.url("/v1/services/files/uploads"))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "5")
        .header("Upload-Metadata", format!("file_id {id64}"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let at = created.headers()["location"].to_str().unwrap().to_owned();
    let r = gw
        .client
        .patch(gw.url(&at))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let status = tokio::time::timeout(PATIENCE, waiting.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&later_out).unwrap(), "later");

    // A folder in step: its own file goes up, the others come down.
    let folder = work.path().join("synced");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("photo.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
    phone
        .run(&["files", "sync", folder.to_str().unwrap()], &[])
        .await
        .ok();
    assert_eq!(
        std::fs::read_to_string(folder.join("notes.txt")).unwrap(),
        "meet at noon\n"
    );
    assert_eq!(std::fs::read(folder.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(folder.join("later.txt")).unwrap(),
        "later"
    );
    let list = laptop
        .run(&["files", "list", "--status", "11"], &[])
        .await
        .ok();
    assert_eq!(listed(&list, "photo.jpg").1, "11");

    // The control list, with each device's last address.
    let devices = phone.run(&["devices"], &[]).await.ok();
    let out = devices.output();
    let phone_line = out
        .lines()
        .find(|l| l.starts_with("phone"))
        .unwrap_or_default();
    assert!(phone_line.contains("(this terminal)"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("laptop")), "{out}");
    assert!(out.contains("at 127.0.0.1"), "{out}");

    // An upload order from the laptop, answered by the phone's inbox: the
    // ordered file goes up and the laptop sees it (R2, R3).
    let ordered = work.path().join("ordered.txt");
    std::fs::write(&ordered, "from the phone\n").unwrap();
    let mut inbox = phone.spawn(&["handoff", "inbox", "--accept", "--once"], &[]);
    let mut lines = BufReader::new(inbox.stderr.take().unwrap()).lines();
    tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening for the events") {
                return;
            }
        }
    })
    .await
    .unwrap();
    let order: Value = gw
        .client
        .post(gw.url("/v1/services/files/orders"))
        .bearer_auth(&token)
        .json(&json!({"device": "phone", "paths": [ordered.to_str().unwrap()]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["route"], "direct", "both on loopback: {order}");
    let done = tokio::time::timeout(PATIENCE, inbox.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let printed = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(done.status.success(), "{printed}");
    assert!(printed.contains("uploaded 1 file(s)"), "{printed}");
    let list = laptop
        .run(&["files", "list", "--status", "11"], &[])
        .await
        .ok();
    assert_eq!(listed(&list, "ordered.txt").1, "11");

    // Bad input: an unknown id, a missing file.
    let ran = phone.run(&["files", "get", "nope"], &[]).await.code(1);
    assert!(ran.output().contains("no such file"), "{ran:#?}");
    let ran = laptop
        .run(&["files", "upload", "/nonexistent/x"], &[])
        .await
        .code(1);
    assert!(ran.output().contains("/nonexistent/x"), "{ran:#?}");
}
