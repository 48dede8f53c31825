//! The `monitor` binary answering the preset client the tasks service
//! offers (T1), against a gateway started through `run()` with the
//! reference tasks plugin: `monitor offer` shows and answers it, and
//! `handoff inbox` answers the `tasks.offer` events.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::monitor::Monitor;
use e2e_tests::{service_plugin, TestGateway};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_and_answers_the_preset_client_offer() {
    let gw = TestGateway::start().await;
    let manifest = json!({"id": "tasks", "name": "Cloud tasks",
        "grants": ["kv", "events", "timers", "clock", "log", "blobs"],
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
