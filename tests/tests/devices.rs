//! Devices (H5): registration and device tokens, the control list with
//! active and silent states, the history, and each device's durable inbox
//! over server-sent events (replay with `Last-Event-ID`, events kept for an
//! offline device, nothing from another user).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::eventually;
use e2e_tests::sse::EventStream;
use e2e_tests::{expect_error, TestGateway};
use gateway::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Registers device `id` for the user of `token`; (status, body).
async fn register(gw: &TestGateway, token: &str, id: &str) -> (StatusCode, Value) {
    let body = json!({"id": id, "name": format!("{id}'s name"), "platform": "linux",
        "capabilities": ["org.example.editor"], "port": 47000});
    let r = gw.post_json("/v1/devices", Some(token), &body).await;
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A new device's token.
async fn device_token(gw: &TestGateway, token: &str, id: &str) -> String {
    let (status, body) = register(gw, token, id).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Opens the inbox stream of a device, with `Last-Event-ID` when given.
async fn inbox(gw: &TestGateway, token: &str, last: Option<&str>) -> EventStream {
    let mut request = gw
        .client
        .get(gw.url("/v1/devices/current/events"))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    EventStream::new(request.send().await.unwrap())
}

/// The `device.joined` events (id, device) a stream gives before the
/// join of a new marker device `marker` of `user` registered now: all it
/// had to give (markers of earlier calls left out).
async fn joined(
    gw: &TestGateway,
    user: &str,
    stream: &mut EventStream,
    marker: &str,
) -> Vec<(String, String)> {
    device_token(gw, user, marker).await;
    let mut seen = Vec::new();
    loop {
        let event = stream
            .next_within(Duration::from_secs(10))
            .await
            .expect("the marker's join arrives");
        assert_eq!(event.event, "device.joined", "{event:?}");
        let device = event.data["device"].as_str().unwrap().to_owned();
        if device == marker {
            return seen;
        }
        if !device.starts_with("marker-") {
            seen.push((event.id.unwrap(), device));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_id_belongs_to_one_user_and_its_token_acts_as_that_device() {
    let gw = TestGateway::start().await;
    let alice = gw.user_token("alice").await;
    let bob = gw.user_token("bob").await;

    let (status, first) = register(&gw, &alice, "pc-1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["capabilities"], json!(["org.example.editor"]));
    let old_token = first["token"].as_str().unwrap().to_owned();
    // The same user again: updated, a new token, the old one ends.
    let (status, again) = register(&gw, &alice, "pc-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let token = again["token"].as_str().unwrap().to_owned();
    assert_ne!(token, old_token);
    assert_eq!(
        gw.get("/v1/devices", Some(&old_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Another user cannot take the id.
    let (status, taken) = register(&gw, &bob, "pc-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    assert_eq!(taken["error"]["code"], "device_taken");

    // The device token is a session of alice, seen as this device.
    let listed = gw.get_json("/v1/devices", Some(&token)).await;
    let device = &listed["devices"][0];
    assert_eq!(device["id"], "pc-1");
    assert_eq!(device["state"], "active");
    assert_eq!(device["ip"], "127.0.0.1");
    assert_eq!(device["port"], 47000);
    assert_eq!(
        gw.get_json("/v1/devices", Some(&bob)).await["devices"],
        json!([])
    );
    // The inbox needs a device token.
    expect_error(
        gw.get("/v1/devices/current/events", Some(&alice)).await,
        StatusCode::FORBIDDEN,
        "device_token_required",
    )
    .await;

    // Bob cannot remove it; alice can, and its token ends.
    expect_error(
        gw.delete("/v1/devices/pc-1", Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        gw.delete("/v1/devices/pc-1", Some(&alice)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        gw.get("/v1/devices", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let history = gw.get_json("/v1/devices/history", Some(&alice)).await;
    let events: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["left", "updated", "joined"], "{history}");
}

#[tokio::test]
async fn bad_registrations_get_clear_errors_and_store_nothing() {
    let gw = TestGateway::start().await;
    let alice = gw.user_token("alice").await;
    let long = "x".repeat(129);
    let cases = [
        (json!({"id": "", "name": "n"}), "id is 1-128"),
        (json!({"id": long, "name": "n"}), "id is 1-128"),
        (json!({"id": "a\u{7}b", "name": "n"}), "control characters"),
        (json!({"id": "ok", "name": " "}), "name is 1-100"),
        (
            json!({"id": "ok", "name": "n", "port": 0}),
            "port is 1-65535",
        ),
        (
            json!({"id": "ok", "name": "n", "capabilities": vec!["c"; 65]}),
            "at most 64",
        ),
        (json!({"id": "ok", "name": "n", "port": 70000}), ""),
        (json!({"id": "ok", "name": "n", "colour": "red"}), "colour"),
        (json!({"id": 5, "name": "n"}), ""),
    ];
    for (body, says) in cases {
        let message = expect_error(
            gw.post_json("/v1/devices", Some(&alice), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        assert!(message.contains(says), "{body}: {message}");
    }
    let malformed = gw
        .client
        .post(gw.url("/v1/devices"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"id\":")
        .send()
        .await
        .unwrap();
    expect_error(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;
    expect_error(
        gw.post_json("/v1/devices", None, &json!({"id": "x", "name": "n"}))
            .await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    assert_eq!(
        gw.get_json("/v1/devices", Some(&alice)).await["devices"],
        json!([])
    );
    assert_eq!(
        gw.get_json("/v1/devices/history", Some(&alice)).await["entries"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_its_events_on_reconnect_and_last_event_id_replays() {
    let gw = TestGateway::start().await;
    let alice = gw.user_token("alice").await;
    let bob = gw.user_token("bob").await;
    let phone = device_token(&gw, &alice, "phone").await;
    // While the phone is offline, two more devices of alice join, and one
    // of bob's (which must never reach alice's phone).
    device_token(&gw, &alice, "laptop").await;
    device_token(&gw, &bob, "bobs-pc").await;
    device_token(&gw, &alice, "tablet").await;

    let mut stream = inbox(&gw, &phone, None).await;
    assert_eq!(
        joined(&gw, &alice, &mut stream, "marker-1").await,
        [("1".into(), "laptop".into()), ("2".into(), "tablet".into())]
    );
    // Live: a device joining now arrives at once (after the marker, 3).
    device_token(&gw, &alice, "watch").await;
    let live = stream.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (live.id.as_deref(), &live.data["device"]),
        (Some("4"), &json!("watch"))
    );
    drop(stream);

    // Offline again; then a reconnect without Last-Event-ID starts after
    // what was sent.
    device_token(&gw, &alice, "tv").await;
    let mut stream = inbox(&gw, &phone, None).await;
    assert_eq!(
        joined(&gw, &alice, &mut stream, "marker-2").await,
        [("5".into(), "tv".into())]
    );
    drop(stream);
    // Last-Event-ID replays everything after it.
    let mut stream = inbox(&gw, &phone, Some("2")).await;
    assert_eq!(
        joined(&gw, &alice, &mut stream, "marker-3").await,
        [("4".into(), "watch".into()), ("5".into(), "tv".into())]
    );
    drop(stream);
    let bad = gw
        .client
        .get(gw.url("/v1/devices/current/events"))
        .bearer_auth(&phone)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;

    // Removing the device ends its open stream.
    let mut stream = inbox(&gw, &phone, None).await;
    assert_eq!(
        gw.delete("/v1/devices/phone", Some(&alice)).await.status(),
        StatusCode::NO_CONTENT
    );
    let end = stream.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(end.event, "error", "{end:?}");
    assert!(stream.next_within(Duration::from_secs(5)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_turn_silent_when_unseen_and_stay_active_while_streaming() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| {
        c.clock = shared;
        c.devices.tidy_every = Duration::from_millis(50);
    })
    .await;
    let alice = gw.user_token("alice").await;
    let phone = device_token(&gw, &alice, "phone").await;
    let laptop = device_token(&gw, &alice, "laptop").await;
    let state_of = |id: &'static str| {
        let gw = &gw;
        let alice = alice.clone();
        move || {
            let alice = alice.clone();
            async move {
                let listed = gw.get_json("/v1/devices", Some(&alice)).await;
                let device = listed["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["id"] == id)
                    .cloned()
                    .unwrap();
                device["state"].as_str().unwrap().to_owned()
            }
        }
    };
    // The laptop holds its stream; the phone says nothing for 61 s.
    let stream = inbox(&gw, &laptop, None).await;
    clock.advance(Duration::from_secs(61));
    eventually(
        "the phone to turn silent",
        Duration::from_secs(10),
        || async { (state_of("phone")().await == "silent").then_some(()) },
    )
    .await;
    assert_eq!(state_of("laptop")().await, "active", "it holds its stream");

    // The phone comes back: one request is enough.
    assert_eq!(
        gw.get("/v1/devices", Some(&phone)).await.status(),
        StatusCode::OK
    );
    assert_eq!(state_of("phone")().await, "active");
    // The laptop closes its stream and goes quiet.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    clock.advance(Duration::from_secs(61));
    eventually(
        "the laptop to turn silent",
        Duration::from_secs(10),
        || async { (state_of("laptop")().await == "silent").then_some(()) },
    )
    .await;

    let history = gw.get_json("/v1/devices/history", Some(&alice)).await;
    let phone_events: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["device"] == "phone")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // Newest first; the phone also went silent again while the clock jumped.
    assert_eq!(phone_events.last(), Some(&"joined"), "{history}");
    let oldest_first: Vec<&str> = phone_events.iter().rev().copied().collect();
    assert!(
        oldest_first.starts_with(&["joined", "silent", "active"]),
        "{history}"
    );
}
