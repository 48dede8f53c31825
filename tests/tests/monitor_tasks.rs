//! The `monitor` binary answering the preset client the tasks service
//! offers (T1), against a gateway started through `run()` with the
//! reference tasks plugin: `monitor offer` shows and answers it, and
//! `handoff inbox` answers the `tasks.offer` events. T2: `monitor backup`
//! on one terminal and `monitor restore` on another of the same user;
//! `monitor share` prints a link anyone may fetch until it is revoked;
//! `monitor process` makes a thumbnail, and says why a damaged file fails
//! and what to try.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::monitor::Monitor;
use e2e_tests::{service_plugin, TestGateway};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_and_answers_the_preset_client_offer() {
    let gw = TestGateway::start().await;
    let manifest = json!({"id": "tasks", "name": "Cloud tasks",
        "grants": ["kv", "events", "timers", "clock", "log", "blobs", "media"],
        "config": {"client": {"name": "Gateway monitor", "version": "2.0",
            "url": "https://downloads.example.org/monitor"}, "offer_again_after_secs": 86400}});
    let r = gw.upload_service(&manifest, &service_plugin("tasks")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    m.run(
        &["device", "register", "--id", "phone", "--name", "phone"],
        &[],
    )
    .await
    .ok();
    let token = m.device_token();
    let status = async || {
        gw.get_json("/v1/services/tasks/offer", Some(&token)).await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // The first look is the gateway's offer; the inbox declines it.
    m.run(&["offer"], &[])
        .await
        .ok()
        .says("the gateway offers Gateway monitor 2.0 (https://downloads.example.org/monitor)");
    m.run(&["handoff", "inbox", "--decline", "not now", "--once"], &[])
        .await
        .ok()
        .says("tasks.offer: the gateway offers Gateway monitor 2.0")
        .says("declined Gateway monitor 2.0 (https://downloads.example.org/monitor); offered again after");
    assert_eq!(status().await, "declined");

    // The user changes their mind: asked for again, accepted from the inbox.
    m.run(&["offer", "request"], &[])
        .await
        .ok()
        .says("the gateway offers Gateway monitor 2.0");
    m.run(&["handoff", "inbox", "--accept", "--once"], &[])
        .await
        .ok()
        .says("accepted Gateway monitor 2.0");
    assert_eq!(status().await, "accepted");
    m.run(&["offer"], &[])
        .await
        .ok()
        .says("accepted Gateway monitor 2.0");
    // Declining what was accepted is refused with the service's reason.
    m.run(&["offer", "decline"], &[])
        .await
        .code(1)
        .says("no offer is waiting for this device's answer");
    gw.stop().await.unwrap();
}

/// A terminal of `user` registered as device `id`; `first` registers the
/// user, else it logs in.
async fn terminal(gw: &TestGateway, user: &str, id: &str, first: bool) -> Monitor {
    let m = Monitor::new();
    if first {
        m.register(&gw.base, user).await;
    } else {
        m.run(
            &["--server", &gw.base, "login", "--username", user],
            &[("MONITOR_PASSWORD", "correct horse battery")],
        )
        .await
        .ok();
    }
    m.run(&["device", "register", "--id", id, "--name", id], &[])
        .await
        .ok();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_backs_up_restores_shares_and_processes() {
    let gw = TestGateway::start().await;
    let manifest = json!({"id": "tasks", "name": "Cloud tasks",
        "grants": ["kv", "events", "timers", "clock", "log", "blobs", "media"]});
    let r = gw.upload_service(&manifest, &service_plugin("tasks")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let phone = terminal(&gw, "alice", "alice-phone", true).await;
    let laptop = terminal(&gw, "alice", "alice-laptop", false).await;
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();

    // Backed up on the phone, restored on the laptop, checked by sha256.
    let data = json!([{"name": "Bob", "phone": "+1 555 0100"}]).to_string();
    std::fs::write(path("contacts.json"), &data).unwrap();
    phone
        .run(&["backup", "contacts", &path("contacts.json")], &[])
        .await
        .ok()
        .says("backed up");
    laptop
        .run(&["restore", "--list", "--from-device", "alice-phone"], &[])
        .await
        .ok()
        .says("contacts  from alice-phone");
    laptop
        .run(
            &[
                "restore",
                "--kind",
                "contacts",
                "-o",
                &path("restored.json"),
            ],
            &[],
        )
        .await
        .ok()
        .says("restored contacts");
    assert_eq!(
        std::fs::read_to_string(path("restored.json")).unwrap(),
        data
    );
    // Another user has nothing to restore.
    let mallory = terminal(&gw, "mallory", "mallory-phone", true).await;
    mallory
        .run(&["restore", "--kind", "contacts"], &[])
        .await
        .code(1)
        .says("no backup of yours matches");

    // A share link works without login until it is revoked.
    std::fs::write(path("notes.txt"), "meeting at noon").unwrap();
    let ran = phone
        .run(&["share", &path("notes.txt"), "--expires-in", "3600"], &[])
        .await
        .ok();
    let link = ran.stdout.trim().to_owned();
    assert!(link.starts_with(&gw.base), "{link}");
    let fetched = reqwest::get(&link).await.unwrap();
    assert_eq!(fetched.text().await.unwrap(), "meeting at noon");
    let id = link.rsplit('/').next().unwrap().to_owned();
    phone
        .run(&["share", "--revoke", &id], &[])
        .await
        .ok()
        .says("revoked");
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 410);

    // A thumbnail through the gateway's workers, written next to the input.
    image::RgbImage::from_fn(300, 150, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(path("photo.png"))
        .unwrap();
    phone
        .run(
            &["process", "thumbnail", &path("photo.png"), "-p", "side=60"],
            &[],
        )
        .await
        .ok()
        .says("uploading")
        .says("thumbnail done");
    let thumb = image::open(path("photo.thumbnail.png")).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (60, 30));
    // A damaged file: the reason and what to try, exit code 1.
    std::fs::write(
        path("broken.png"),
        &std::fs::read(path("photo.png")).unwrap()[..60],
    )
    .unwrap();
    phone
        .run(
            &[
                "process",
                "convert",
                &path("broken.png"),
                "-p",
                "to=image/jpeg",
            ],
            &[],
        )
        .await
        .code(1)
        .says("failed (corrupt_input)")
        .says("what to try:");
    gw.stop().await.unwrap();
}
