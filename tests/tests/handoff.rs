//! Handoff (H1-H6) through the real gateway and HTTP: the service plugin
//! uploaded like a connector, devices registered, sessions opened on one
//! terminal and handed to another in each of the three ways, declines and
//! expiries moving a switch along, `unplaced`, idempotent retries, bad
//! input, and two gateways on one PostgreSQL.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::sse::{EventStream, SseEvent};
use e2e_tests::{expect_error, postgres_admin_url, service_plugin, TestGateway};
use gateway::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const APP: &str = "org.example.editor";
const WAIT: Duration = Duration::from_secs(10);

async fn upload(gw: &TestGateway, manifest: &Value) -> reqwest::Response {
    gw.upload_service(manifest, &service_plugin("handoff"))
        .await
}

fn manifest() -> Value {
    json!({"id": "handoff", "name": "Handoff",
           "grants": ["kv", "devices", "events", "timers", "clock"]})
}

async fn device_on(gw: &TestGateway, user: &str, id: &str, apps: &[&str]) -> String {
    let body = json!({"id": id, "name": id, "capabilities": apps});
    let r = gw.post_json("/v1/devices", Some(user), &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn device(gw: &TestGateway, user: &str, id: &str) -> String {
    device_on(gw, user, id, &[APP]).await
}

/// A request to the handoff service; the status, the `Idempotent-Replayed`
/// header and the JSON answer.
async fn send(
    gw: &TestGateway,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
    key: Option<&str>,
) -> (StatusCode, bool, Value) {
    let mut request = gw
        .client
        .request(
            method.parse().unwrap(),
            gw.url(&format!("/v1/services/handoff{path}")),
        )
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let replayed = r.headers().contains_key("idempotent-replayed");
    (status, replayed, r.json().await.unwrap_or(Value::Null))
}

async fn call(
    gw: &TestGateway,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let (status, _, body) = send(gw, token, method, path, body, None).await;
    (status, body)
}

async fn open(gw: &TestGateway, token: &str, state: Value) -> String {
    let (status, session) = call(
        gw,
        token,
        "POST",
        "/sessions",
        json!({"app": APP, "state": state}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

async fn switch(gw: &TestGateway, token: &str, sid: &str, body: Value) -> Value {
    let (status, asked) = call(gw, token, "POST", &format!("/sessions/{sid}/switch"), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    asked
}

async fn offer_in(inbox: &mut EventStream) -> SseEvent {
    inbox
        .next_of("handoff.offer", WAIT)
        .await
        .expect("an offer on the target's stream")
}

/// The log's events, each as "event device" (and the reason of a decline).
async fn log_of(gw: &TestGateway, token: &str, sid: &str) -> Vec<String> {
    let (status, log) = call(
        gw,
        token,
        "GET",
        &format!("/sessions/{sid}/log"),
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut line = format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["device"].as_str().unwrap()
            );
            if let Some(to) = e["to"].as_str() {
                line.push_str(&format!(" to {to}"));
            }
            if let Some(reason) = e["reason"].as_str() {
                line.push_str(&format!(" ({reason})"));
            }
            line
        })
        .collect()
}

/// Eight progress updates based on the same version at once, spread over
/// `nodes`: exactly one is applied, the others are refused (409), and the
/// log has one progress line.
async fn concurrent_updates_apply_once(nodes: &[&TestGateway], token: &str, sid: &str) {
    let updates = (0..8).map(|i| {
        let gw = nodes[i % nodes.len()];
        async move {
            call(
                gw,
                token,
                "PUT",
                &format!("/sessions/{sid}"),
                json!({"version": 1, "state": {"writer": i}}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(updates).await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            code == "stale_version" || code == "concurrent_change",
            "{body}"
        );
    }
    let (_, now) = call(
        nodes[0],
        token,
        "GET",
        &format!("/sessions/{sid}"),
        json!(null),
    )
    .await;
    assert_eq!(now["version"], 2);
    assert_eq!(now["state"], won[0]["state"], "the winner's state is kept");
    let log = log_of(nodes[0], token, sid).await;
    assert_eq!(
        log.iter().filter(|l| l.starts_with("progress")).count(),
        1,
        "{log:?}"
    );
}

async fn started(gw: &TestGateway) {
    assert_eq!(upload(gw, &manifest()).await.status(), StatusCode::CREATED);
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
    started(&gw).await;

    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    // Concurrent updates on one node (SQLite): one wins.
    let raced = open(&gw, &t1, json!({})).await;
    concurrent_updates_apply_once(&[&gw], &t1, &raced).await;
    let sid = open(&gw, &t1, json!({"line": 7})).await;
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
    // Another device may not write progress into a session it does not hold.
    let (status, other) = call(
        &gw,
        &t2,
        "PUT",
        &format!("/sessions/{sid}"),
        json!({"version": 2, "state": {"line": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    assert_eq!(other["error"]["code"], "not_holder");

    let mut t2_inbox = gw.inbox(&t2).await;
    let mut t1_inbox = gw.inbox(&t1).await;
    let asked = switch(&gw, &t1, &sid, json!({"to": "t2"})).await;
    assert_eq!(asked["to"], "t2");
    let offer = offer_in(&mut t2_inbox).await;
    // The offer carries the state as the server has it.
    assert_eq!(offer.data["state"], json!({"line": 8}));
    assert_eq!(offer.data["version"], 2);
    assert_eq!(offer.data["from"], "t1");
    let wid = offer.data["switch_id"].as_str().unwrap().to_owned();
    assert_eq!(wid, asked["switch_id"].as_str().unwrap());
    let (status, accepted) = call(
        &gw,
        &t2,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["status"], "accepted");
    let moved = t1_inbox
        .next_of("handoff.moved", WAIT)
        .await
        .expect("the old holder is told");
    assert_eq!(moved.data["to"], "t2");
    let (_, now) = call(&gw, &t2, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(now["holder"], "t2");
    // The old holder's progress is refused from now on.
    let (status, _) = call(
        &gw,
        &t1,
        "PUT",
        &format!("/sessions/{sid}"),
        json!({"version": 2, "state": {"line": 10}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The user reads the log (and the session list) with a user token.
    assert_eq!(
        log_of(&gw, &alice, &sid).await,
        [
            "opened t1",
            "progress t1",
            "offered t1 to t2",
            "accepted t2",
            "moved t2"
        ]
    );
    let (status, list) = call(&gw, &alice, "GET", "/sessions", json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    let moved = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sid.as_str());
    assert_eq!(moved.unwrap()["holder"], "t2", "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_is_asked_by_push_by_pull_or_by_the_pairing_chain() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    let t3 = device(&gw, &alice, "t3").await;
    let mut t3_inbox = gw.inbox(&t3).await;
    let sid = open(&gw, &t1, json!({"page": 1})).await;

    // Push: the holder names the target.
    let pushed = switch(&gw, &t1, &sid, json!({"to": "t3"})).await;
    assert_eq!(pushed["to"], "t3");
    assert_eq!(offer_in(&mut t3_inbox).await.data["from"], "t1");

    // Pull: another device asks for itself, with or without naming itself.
    let pulled = switch(&gw, &t2, &sid, json!({})).await;
    assert_eq!(pulled["to"], "t2");
    let pulled = switch(&gw, &t2, &sid, json!({"to": "t2"})).await;
    assert_eq!(pulled["to"], "t2");
    // A device that does not hold the session cannot send it elsewhere.
    let (status, refused) = call(
        &gw,
        &t2,
        "POST",
        &format!("/sessions/{sid}/switch"),
        json!({"to": "t3"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "not_holder");

    // The chain: after the holder, wrapping around.
    let (status, chain) = call(
        &gw,
        &alice,
        "PUT",
        "/pairings",
        json!({"chain": ["t3", "t1", "t2"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{chain}");
    let chained = switch(&gw, &t1, &sid, json!({})).await;
    assert_eq!(chained["to"], "t2", "t2 follows t1 in the chain");
    let (_, read) = call(&gw, &t1, "GET", "/pairings", json!(null)).await;
    assert_eq!(read["chain"], json!(["t3", "t1", "t2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_moves_the_switch_along_the_chain_and_the_log_shows_each_step() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    let t3 = device(&gw, &alice, "t3").await;
    call(
        &gw,
        &alice,
        "PUT",
        "/pairings",
        json!({"chain": ["t1", "t2", "t3"]}),
    )
    .await;
    let (mut t2_inbox, mut t3_inbox) = (gw.inbox(&t2).await, gw.inbox(&t3).await);
    let sid = open(&gw, &t1, json!({"cursor": 42})).await;
    let asked = switch(&gw, &t1, &sid, json!({})).await;
    let wid = asked["switch_id"].as_str().unwrap().to_owned();
    assert_eq!(asked["to"], "t2");
    offer_in(&mut t2_inbox).await;

    // t3 has no offer: it may not answer it.
    let (status, early) = call(
        &gw,
        &t3,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{early}");
    assert_eq!(early["error"]["code"], "not_offered");

    let (status, declined) = call(
        &gw,
        &t2,
        "POST",
        &format!("/switches/{wid}/decline"),
        json!({"reason": "incompatible"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{declined}");
    assert_eq!(declined["to"], "t3");
    let offer = offer_in(&mut t3_inbox).await;
    assert_eq!(offer.data["switch_id"], wid.as_str());
    assert_eq!(offer.data["state"], json!({"cursor": 42}));
    let (status, _) = call(
        &gw,
        &t3,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (_, seen) = call(&gw, &alice, "GET", &format!("/switches/{wid}"), json!(null)).await;
    assert_eq!(seen["status"], "accepted");
    let answers: Vec<(&str, &str)> = seen["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["device"].as_str().unwrap(), t["answer"].as_str().unwrap()))
        .collect();
    assert_eq!(
        answers,
        [("t2", "declined: incompatible"), ("t3", "accepted")]
    );
    assert_eq!(
        log_of(&gw, &t3, &sid).await,
        [
            "opened t1",
            "offered t1 to t2",
            "declined t2 (incompatible)",
            "offered t2 to t3",
            "accepted t3",
            "moved t3"
        ]
    );
}

/// Offers expire on the gateway's clock (moved here, not slept): the
/// expired offer counts as a decline, the next device is offered, and when
/// nobody is left the switch is unplaced and the holder is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offers_expire_and_a_switch_nobody_takes_is_unplaced() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| c.clock = shared).await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    // t3 is active and can continue the app; t4 cannot.
    let t3 = device(&gw, &alice, "t3").await;
    let t4 = device_on(&gw, &alice, "t4", &["org.example.other"]).await;
    let (mut t1_inbox, mut t3_inbox, mut t4_inbox) = (
        gw.inbox(&t1).await,
        gw.inbox(&t3).await,
        gw.inbox(&t4).await,
    );
    let sid = open(&gw, &t1, json!({"track": 3})).await;
    // t2 is offline: its offer waits in its inbox until the TTL.
    let asked = switch(&gw, &t1, &sid, json!({"to": "t2"})).await;
    let wid = asked["switch_id"].as_str().unwrap().to_owned();

    // Not yet: a second short of the TTL nothing moves.
    clock.advance(Duration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, seen) = call(&gw, &t1, "GET", &format!("/switches/{wid}"), json!(null)).await;
    assert_eq!(
        (seen["status"].as_str(), seen["to"].as_str()),
        (Some("offered"), Some("t2"))
    );

    // Past it: t2's offer expired, t3 (active, capable) is offered, not t4.
    clock.advance(Duration::from_secs(2));
    let offer = offer_in(&mut t3_inbox).await;
    assert_eq!(offer.data["switch_id"], wid.as_str());
    // t3 lets it expire too: nobody is left.
    clock.advance(Duration::from_secs(61));
    let failed = t1_inbox
        .next_of("handoff.failed", WAIT)
        .await
        .expect("the holder is told nobody took the session");
    assert_eq!(failed.data["switch_id"], wid.as_str());
    let (_, seen) = call(&gw, &t1, "GET", &format!("/switches/{wid}"), json!(null)).await;
    assert_eq!(seen["status"], "unplaced");
    let answers: Vec<&str> = seen["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["expired", "expired"]);
    let (_, session) = call(&gw, &t1, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(session["holder"], "t1", "the holder keeps it");
    assert_eq!(
        log_of(&gw, &t1, &sid).await,
        [
            "opened t1",
            "offered t1 to t2",
            "declined t2 (expired)",
            "offered t2 to t3",
            "declined t3 (expired)",
            "unplaced t1"
        ]
    );
    // t4 was never offered (it cannot continue the app); the late offline
    // device's offer arrives with its expiry, so it can tell it is stale.
    assert!(t4_inbox
        .next_of("handoff.offer", Duration::from_millis(300))
        .await
        .is_none());
    let mut t2_inbox = gw.inbox(&t2).await;
    let late = offer_in(&mut t2_inbox).await;
    assert!(late.data["expires_at"].is_string(), "{}", late.data);
    let (status, too_late) = call(
        &gw,
        &t2,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{too_late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_change_nothing_twice() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let t2 = device(&gw, &alice, "t2").await;
    let body = json!({"app": APP, "state": {"a": 1}});
    let (status, replayed, first) =
        send(&gw, &t1, "POST", "/sessions", body.clone(), Some("open-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, replayed, again) = send(&gw, &t1, "POST", "/sessions", body, Some("open-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(first["id"], again["id"], "one session, not two");
    let (_, list) = call(&gw, &t1, "GET", "/sessions", json!(null)).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let sid = first["id"].as_str().unwrap().to_owned();

    // A progress update sent twice (its answer lost) is applied once.
    let progress = json!({"version": 1, "state": {"a": 2}});
    for _ in 0..2 {
        let (status, s) = call(
            &gw,
            &t1,
            "PUT",
            &format!("/sessions/{sid}"),
            progress.clone(),
        )
        .await;
        assert_eq!((status, s["version"].as_u64()), (StatusCode::OK, Some(2)));
    }

    let path = format!("/sessions/{sid}/switch");
    let (_, _, a) = send(&gw, &t1, "POST", &path, json!({"to": "t2"}), Some("sw-1")).await;
    let (status, replayed, b) =
        send(&gw, &t1, "POST", &path, json!({"to": "t2"}), Some("sw-1")).await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, true));
    assert_eq!(a["switch_id"], b["switch_id"]);
    let wid = a["switch_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, s) = call(
            &gw,
            &t2,
            "POST",
            &format!("/switches/{wid}/accept"),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, s["status"].as_str()),
            (StatusCode::OK, Some("accepted")),
            "{s}"
        );
    }
    assert_eq!(
        log_of(&gw, &t1, &sid).await,
        [
            "opened t1",
            "progress t1",
            "offered t1 to t2",
            "accepted t2",
            "moved t2"
        ]
    );
    // The same key from another device is that device's own request.
    let (status, replayed, _) = send(
        &gw,
        &t2,
        "POST",
        "/sessions",
        json!({"app": APP, "state": {}}),
        Some("open-1"),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let bob = gw.user_token("bob").await;
    let t1 = device(&gw, &alice, "t1").await;
    let b1 = device(&gw, &bob, "b1").await;
    let sid = open(&gw, &t1, json!({"n": 1})).await;
    let at = |p: &str| format!("/sessions/{sid}{p}");

    // Malformed JSON and wrong types.
    let r = gw
        .client
        .post(gw.url("/v1/services/handoff/sessions"))
        .bearer_auth(&t1)
        .header("content-type", "application/json")
        .body("{\"app\": ")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    for (method, path, body) in [
        (
            "POST",
            "/sessions".to_owned(),
            json!({"app": 5, "state": {}}),
        ),
        (
            "POST",
            "/sessions".to_owned(),
            json!({"app": "", "state": {}}),
        ),
        ("PUT", at(""), json!({"version": "one", "state": {}})),
        ("POST", at("/switch"), json!({"to": ["t2"]})),
        ("PUT", "/pairings".to_owned(), json!({"chain": "t1"})),
    ] {
        let (status, e) = call(&gw, &t1, method, &path, body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {e}"
        );
        assert_eq!(e["error"]["code"], "invalid_body", "{e}");
    }
    // A state over 64 KiB, and a body over the gateway's 1 MiB.
    let big = json!({"version": 1, "state": {"x": "a".repeat(70 * 1024)}});
    let (status, e) = call(&gw, &t1, "PUT", &at(""), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_eq!(e["error"]["code"], "state_too_large");
    let huge = json!({"version": 1, "state": {"x": "a".repeat(2 << 20)}});
    let (status, e) = call(&gw, &t1, "PUT", &at(""), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_eq!(e["error"]["code"], "payload_too_large");

    // Unknown ids, and another user's ids, are not found.
    for token in [&t1, &b1] {
        let (status, e) = call(&gw, token, "GET", "/sessions/nope", json!(null)).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }
    let (status, _) = call(&gw, &b1, "GET", &at(""), json!(null)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bob does not see alice's session"
    );
    let (status, _) = call(&gw, &b1, "PUT", &at(""), json!({"version": 1, "state": {}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&gw, &t1, "POST", "/switches/nope/accept", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bob's device is not a target for alice's session, nor part of her chain.
    let (status, e) = call(&gw, &t1, "POST", &at("/switch"), json!({"to": "b1"})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_device"))
    );
    let (status, e) = call(
        &gw,
        &alice,
        "PUT",
        "/pairings",
        json!({"chain": ["t1", "b1"]}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_device"))
    );
    // No target at all: the only device is the holder.
    let (status, e) = call(&gw, &t1, "POST", &at("/switch"), json!({})).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("no_target"))
    );

    // Wrong credentials: no token, a bad token, a user token acting.
    let r = gw
        .client
        .get(gw.url("/v1/services/handoff/sessions"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;
    let (status, _) = call(&gw, "not-a-token", "GET", "/sessions", json!(null)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, e) = call(
        &gw,
        &alice,
        "POST",
        "/sessions",
        json!({"app": APP, "state": {}}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("device_token_required"))
    );
    // Unknown routes and services.
    let (status, _) = call(&gw, &t1, "DELETE", "/sessions", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = gw.get("/v1/services/nope/sessions", Some(&t1)).await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_service").await;
    let r = gw
        .client
        .post(gw.url("/v1/services/handoff/sessions"))
        .bearer_auth(&t1)
        .header("idempotency-key", "k".repeat(200))
        .json(&json!({"app": APP, "state": {}}))
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    )
    .await;

    // Nothing was half-written: one session, at version 1, its log one line.
    let (_, list) = call(&gw, &alice, "GET", "/sessions", json!(null)).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["sessions"][0]["version"], 1);
    assert_eq!(log_of(&gw, &t1, &sid).await, ["opened t1"]);
    let (_, chain) = call(&gw, &alice, "GET", "/pairings", json!(null)).await;
    assert_eq!(chain["chain"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_replaced_services() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let sid = open(&gw, &t1, json!({})).await;
    // Replaced without restart: a new version, the data kept.
    let r = upload(&gw, &manifest()).await;
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    let listed = gw.get_json("/v1/services", Some(&alice)).await;
    assert_eq!(listed["services"][0]["version"], 2, "{listed}");
    let (status, _) = call(&gw, &t1, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    // Removed: 404 unknown_service, and gone from the list.
    let r = gw
        .delete("/v1/admin/services/handoff", Some(&gw.admin_token))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = gw
        .get(&format!("/v1/services/handoff/sessions/{sid}"), Some(&t1))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_service").await;
    let listed = gw.get_json("/v1/services", Some(&alice)).await;
    assert_eq!(listed["services"], json!([]));
    let r = gw
        .delete("/v1/admin/services/handoff", Some(&gw.admin_token))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_service").await;
    // Only operators upload or remove.
    let r = gw.delete("/v1/admin/services/handoff", Some(&alice)).await;
    assert!(r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNAUTHORIZED);
    // Back, with the session still there.
    started(&gw).await;
    let (status, _) = call(&gw, &t1, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(status, StatusCode::OK);
}

/// Two gateways on one PostgreSQL: the switch is asked on node A and the
/// target's stream is held on node B; B hears of the offer through the
/// database's notices, and the accept on B is seen on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_asked_on_one_node_reaches_a_stream_on_another() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = registry_db::scratch::ScratchDatabase::create(&admin_url, "gateway_handoff_nodes")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let key = gateway::secrets::MasterKey::generate();
    let start = |key: gateway::secrets::MasterKey| {
        let url = db.url().to_owned();
        TestGateway::start_with(move |c| {
            c.database_url = url;
            c.master_key = key;
            c.devices.stream_recheck = Duration::from_secs(3600);
        })
    };
    let a = start(key.clone()).await;
    let b = start(key).await;
    started(&a).await;
    let alice = a.user_token("alice").await;
    let t1 = device(&a, &alice, "t1").await;
    let t2 = device(&b, &alice, "t2").await;
    let mut t2_inbox = b.inbox(&t2).await;
    // Concurrent updates through both nodes (PostgreSQL): one wins.
    let raced = open(&a, &t1, json!({})).await;
    concurrent_updates_apply_once(&[&a, &b], &t1, &raced).await;
    let sid = open(&a, &t1, json!({"slide": 4})).await;
    let asked = switch(&a, &t1, &sid, json!({"to": "t2"})).await;
    let offer = offer_in(&mut t2_inbox).await;
    assert_eq!(offer.data["switch_id"], asked["switch_id"]);
    assert_eq!(offer.data["state"], json!({"slide": 4}));
    let wid = offer.data["switch_id"].as_str().unwrap();
    let (status, _) = call(
        &b,
        &t2,
        "POST",
        &format!("/switches/{wid}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, session) = call(&a, &t1, "GET", &format!("/sessions/{sid}"), json!(null)).await;
    assert_eq!(session["holder"], "t2");
}

/// The operator sets the offer TTL in the manifest's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_ttl_comes_from_the_manifest_config() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| c.clock = shared).await;
    let mut configured = manifest();
    configured["config"] = json!({"offer_ttl_secs": 5});
    assert_eq!(upload(&gw, &configured).await.status(), StatusCode::CREATED);
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    device(&gw, &alice, "t2").await;
    let mut t1_inbox = gw.inbox(&t1).await;
    let sid = open(&gw, &t1, json!({})).await;
    let asked = switch(&gw, &t1, &sid, json!({"to": "t2"})).await;
    let offered_at = chrono::DateTime::parse_from_rfc3339(asked["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let ttl = offered_at - gateway::clock::Clock::now(&clock);
    assert!((4_990..=5_000).contains(&ttl.num_milliseconds()), "{asked}");
    // Six seconds later the only target has let it expire: unplaced.
    clock.advance(Duration::from_secs(6));
    t1_inbox
        .next_of("handoff.failed", WAIT)
        .await
        .expect("unplaced after the configured 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_service_uploads_are_refused_clearly_and_install_nothing() {
    let gw = TestGateway::start().await;
    let plugin = service_plugin("handoff");
    for (manifest, says) in [
        (json!({"id": "Hand off", "name": "Handoff"}), "id:"),
        (json!({"id": "handoff", "name": " "}), "name:"),
        (
            json!({"id": "handoff", "name": "H", "grants": ["kv", "teleport"]}),
            "teleport",
        ),
        (
            json!({"id": "handoff", "name": "H", "grants": "kv"}),
            "expected a sequence",
        ),
        (
            json!({"id": "handoff", "name": "H", "colour": "red"}),
            "colour",
        ),
        (
            json!({"id": "handoff", "name": "H", "allowed_hosts": ["ftp://x:21"]}),
            "allowed_hosts",
        ),
    ] {
        let message = expect_error(
            gw.upload_service(&manifest, &plugin).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_manifest",
        )
        .await;
        assert!(message.contains(says), "{manifest}: {message}");
    }
    // Not a component; a connector instead of a service.
    let message = expect_error(
        gw.upload_service(&manifest(), b"\0asm not really").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(!message.is_empty());
    expect_error(
        gw.upload_service(&manifest(), &e2e_tests::webhook()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    // Without the admin token.
    let alice = gw.user_token("alice").await;
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest().to_string())
        .part("plugin", reqwest::multipart::Part::bytes(plugin));
    let r = gw
        .client
        .post(gw.url("/v1/admin/services"))
        .bearer_auth(&alice)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNAUTHORIZED);
    let listed = gw.get_json("/v1/services", None).await;
    assert_eq!(listed["services"], json!([]), "nothing installed");
}

/// A long session's log: each step is stored on its own (the log never
/// reaches the store's value limit) and read in pages of 200 steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_is_read_in_pages() {
    let gw = TestGateway::start().await;
    started(&gw).await;
    let alice = gw.user_token("alice").await;
    let t1 = device(&gw, &alice, "t1").await;
    let sid = open(&gw, &t1, json!({"n": 0})).await;
    for version in 1..=250u64 {
        let (status, _) = call(
            &gw,
            &t1,
            "PUT",
            &format!("/sessions/{sid}"),
            json!({"version": version, "state": {"n": version}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, first) = call(
        &gw,
        &t1,
        "GET",
        &format!("/sessions/{sid}/log"),
        json!(null),
    )
    .await;
    let entries = first["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 200);
    assert_eq!(entries[0]["event"], "opened");
    assert_eq!(entries[199]["version"], 200);
    let after = first["next_after"].as_str().expect("a next page");
    let (_, rest) = call(
        &gw,
        &t1,
        "GET",
        &format!("/sessions/{sid}/log?after={after}"),
        json!(null),
    )
    .await;
    let rest = rest["entries"].as_array().unwrap();
    assert_eq!(rest.len(), 51, "201 to 251");
    assert_eq!(rest[50]["version"], 251);
}
