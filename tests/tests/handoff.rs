//! Handoff (H1-H6) through the real gateway (DRAFT): the service plugin
//! uploaded like a connector, devices registered, a session opened on one
//! terminal and handed to another.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::sse::EventStream;
use e2e_tests::{expect_error, service_plugin, TestGateway};
use reqwest::multipart;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn upload(gw: &TestGateway, manifest: &Value) -> reqwest::Response {
    let form = multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            multipart::Part::bytes(service_plugin("handoff")).file_name("handoff.wasm"),
        );
    gw.client
        .post(gw.url("/v1/admin/services"))
        .bearer_auth(&gw.admin_token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn manifest() -> Value {
    json!({"id": "handoff", "name": "Handoff",
           "grants": ["kv", "devices", "events", "timers", "clock"]})
}

async fn device(gw: &TestGateway, user: &str, id: &str) -> String {
    let body = json!({"id": id, "name": id, "capabilities": ["org.example.editor"]});
    let r = gw.post_json("/v1/devices", Some(user), &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn call(
    gw: &TestGateway,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = gw
        .client
        .request(
            method.parse().unwrap(),
            gw.url(&format!("/v1/services/handoff{path}")),
        )
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_from_one_terminal_to_another() {
    let gw = TestGateway::start().await;
    // Without the kv grant the plugin does not link.
    let mut ungranted = manifest();
    ungranted["grants"] = json!(["devices", "events", "timers", "clock"]);
    let message = expect_error(
        upload(&gw, &ungranted).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(message.contains("gateway:service/kv"), "{message}");
    assert_eq!(upload(&gw, &manifest()).await.status(), StatusCode::CREATED);

    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    let (status, session) = call(
        &gw,
        &t1,
        "POST",
        "/sessions",
        json!({"app": "org.example.editor", "state": {"line": 7}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    // Progress from the holder at the right version; a stale one is refused.
    let (status, _) = call(
        &gw,
        &t1,
        "PUT",
        &format!("/sessions/{sid}"),
        json!({"version": 1, "state": {"line": 8}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, stale) = call(
        &gw,
        &t1,
        "PUT",
        &format!("/sessions/{sid}"),
        json!({"version": 1, "state": {"line": 9}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert_eq!(stale["error"]["code"], "stale_version");

    let inbox = gw
        .client
        .get(gw.url("/v1/devices/current/events"))
        .bearer_auth(&t2)
        .send()
        .await
        .unwrap();
    let mut inbox = EventStream::new(inbox);
    let (status, asked) = call(
        &gw,
        &t1,
        "POST",
        &format!("/sessions/{sid}/switch"),
        json!({"to": "t2"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    let offer = loop {
        let e = inbox
            .next_within(Duration::from_secs(10))
            .await
            .expect("an offer");
        if e.event == "handoff.offer" {
            break e;
        }
    };
    assert_eq!(offer.data["state"], json!({"line": 8}));
    let wid = offer.data["switch_id"].as_str().unwrap().to_owned();
    let (status, accepted) = call(
        &gw,
        &t2,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let (_, now) = call(&gw, &t2, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(now["holder"], "t2");
    let (_, log) = call(
        &gw,
        &t1,
        "GET",
        &format!("/sessions/{sid}/log"),
        json!(null),
    )
    .await;
    let events: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["opened", "progress", "offered", "accepted", "moved"],
        "{log}"
    );
}
