//! The on-disk report queue with several writers at once: threads sharing a
//! config dir, and `monitor report` processes running side by side. No
//! queued report may be lost or overwritten, each writer's reports stay in
//! the order it made them, and only one process sends the queue at a time.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use monitor::store::{QueuedReport, Store};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn report(writer: usize, n: usize) -> QueuedReport {
    QueuedReport {
        module: "matrix".into(),
        account: None,
        settings: gateway_api::Settings {
            avatar: None,
            signature: Some(format!("w{writer}-{n}")),
            mood: None,
        },
        avatar: None,
        idempotency_key: format!("w{writer}-{n}"),
        source: format!("writer {writer}"),
        from_local_client: false,
    }
}

/// The queue's signatures, oldest first.
fn queued_signatures(store: &Store) -> Vec<String> {
    store
        .queued()
        .unwrap()
        .into_iter()
        .map(|(_, _, report)| report.settings.signature.unwrap())
        .collect()
}

/// Every writer's `w{writer}-{n}` appear exactly once, `n` ascending.
fn assert_all_in_order(signatures: &[String], writers: usize, per_writer: usize) {
    assert_eq!(
        signatures.len(),
        writers * per_writer,
        "every report queued once: {signatures:?}"
    );
    for writer in 0..writers {
        let prefix = format!("w{writer}-");
        let mine: Vec<usize> = signatures
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..per_writer).collect::<Vec<_>>(),
            "writer {writer}'s reports, all and in the order it made them"
        );
    }
}

/// Nothing but the reports (and lock files beside the queue) is left: no
/// temp file of a write.
fn assert_no_temp_files(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("queue"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".json") && !name.ends_with(".image"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn eight_threads_enqueue_200_reports_and_none_is_lost_or_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let (writers, per_writer) = (8, 25);
    let start = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            // A store of its own per thread, as each process opens its own.
            let store = Store::open(dir.path().to_owned()).unwrap();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for n in 0..per_writer {
                    store.enqueue(&report(writer, n)).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a writer failed");
    }
    let store = Store::open(dir.path().to_owned()).unwrap();
    let signatures = queued_signatures(&store);
    assert_all_in_order(&signatures, writers, per_writer);
    let numbers: Vec<u64> = store.waiting().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>(), "numbered 1 to 200");
    assert_no_temp_files(dir.path());
}

#[test]
fn a_rejected_report_is_not_replaced_by_a_later_one_with_the_same_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_owned()).unwrap();
    // The queue empties between the two, so both are number 1.
    let first = store.enqueue(&report(0, 0)).unwrap();
    store.reject(&first, "first reason").unwrap();
    let second = store.enqueue(&report(0, 1)).unwrap();
    assert_eq!(first, second, "numbers start again in an empty queue");
    store.reject(&second, "second reason").unwrap();

    assert!(store.waiting().unwrap().is_empty());
    let mut reasons: Vec<String> = std::fs::read_dir(dir.path().join("rejected"))
        .unwrap()
        .flatten()
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            value["rejected_because"].as_str().unwrap().to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["first reason", "second reason"]);
}

#[test]
fn only_one_holder_may_send_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_owned()).unwrap();
    let other = Store::open(dir.path().to_owned()).unwrap();
    let sending = store.lock_sending().unwrap();
    assert!(other.try_lock_sending().unwrap().is_none(), "taken");
    let waiter = std::thread::spawn(move || other.lock_sending().map(drop));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the other waits for its turn");
    drop(sending);
    waiter.join().unwrap().unwrap();
    assert!(store.try_lock_sending().unwrap().is_some(), "free again");
}

// --- the real binary ---------------------------------------------------

/// A config dir logged in to a gateway that is not there: `monitor report`
/// queues the report and exits 3.
fn offline_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let session = serde_json::json!({
        "server": format!("http://127.0.0.1:{port}"),
        "username": "bob",
        "token": "t",
        "expires_at": "2099-01-01T00:00:00.000Z",
    });
    std::fs::write(dir.path().join("session.json"), session.to_string()).unwrap();
    dir
}

fn report_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_monitor"));
    command
        .arg("--config-dir")
        .arg(config)
        .args(["report", "--module", "matrix"])
        .args(args)
        .env_remove("MONITOR_SERVER")
        .env_remove("MONITOR_PASSWORD")
        .env("HOME", config)
        .stdin(Stdio::null());
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn two_monitor_processes_reporting_at_once_keep_every_report_in_order() {
    let dir = offline_config();
    let (writers, per_writer) = (2, 12);
    let start = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let config = dir.path().to_owned();
            let start = Arc::clone(&start);
            // Each writer runs its reports one after the other, as a script
            // would, while the other writer does the same.
            std::thread::spawn(move || {
                start.wait();
                for n in 0..per_writer {
                    let signature = format!("w{writer}-{n}");
                    let out = report_command(&config, &["--signature", &signature])
                        .output()
                        .unwrap();
                    assert_eq!(out.status.code(), Some(3), "queued: {}", text(&out));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a writer failed");
    }
    let store = Store::open(dir.path().to_owned()).unwrap();
    assert_all_in_order(&queued_signatures(&store), writers, per_writer);
    assert_no_temp_files(dir.path());
}

#[test]
fn a_report_waits_while_another_monitor_sends_the_queue() {
    let dir = offline_config();
    let store = Store::open(dir.path().to_owned()).unwrap();
    let sending = store.lock_sending().unwrap();
    let mut child = report_command(dir.path(), &["--signature", "waiting"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the report does not go ahead while another monitor sends"
    );
    assert!(
        store.waiting().unwrap().is_empty(),
        "nor is it queued, to be sent by the other monitor behind its back"
    );
    drop(sending);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("another monitor is sending"),
        "{}",
        text(&out)
    );
    assert_eq!(queued_signatures(&store), ["waiting"]);
}

#[cfg(unix)]
#[test]
fn a_queued_avatar_copy_is_private_and_written_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = offline_config();
    let avatar = dir.path().join("me.png");
    image::RgbImage::new(4, 4).save(&avatar).unwrap();
    let out = report_command(dir.path(), &["--avatar", avatar.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "queued: {}", text(&out));

    let store = Store::open(dir.path().to_owned()).unwrap();
    let queued = store.queued().unwrap();
    assert_eq!(queued.len(), 1);
    let copy = &queued[0].2.avatar.as_ref().unwrap().file;
    assert_eq!(
        std::fs::read(copy).unwrap(),
        std::fs::read(&avatar).unwrap()
    );
    let mode = std::fs::metadata(copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy is the user's only, like the report");
    assert_no_temp_files(dir.path());
}
