//! Cloud tasks (T1-T3) through the real gateway and HTTP: the `tasks`
//! service plugin. T1: the preset client offered per device, declined and
//! kept away until the operator's period has run on the gateway's clock
//! (moved, not slept), offered again then, accepted; a device's own
//! request; a newer version offered to a device that took the old one.
//! T2 backups: made on one device, listed by device and kind, restored on
//! another; never another user's; bodies the service refuses keep nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, service_plugin, TestGateway};
use gateway::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
/// How long a declined offer stays away in these tests.
const AGAIN_SECS: u64 = 3600;

fn manifest(config: Value) -> Value {
    json!({"id": "tasks", "name": "Cloud tasks",
        "grants": ["kv", "events", "timers", "clock", "log", "blobs", "media"], "config": config})
}

fn client(version: &str) -> Value {
    json!({"client": {"name": "Gateway monitor", "version": version,
        "url": "https://downloads.example.org/monitor"},
        "offer_again_after_secs": AGAIN_SECS})
}

async fn install(gw: &TestGateway, config: Value) {
    let r = gw
        .upload_service(&manifest(config), &service_plugin("tasks"))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn offer(gw: &TestGateway, token: &str, action: &str) -> (StatusCode, Value) {
    let path = format!("/v1/services/tasks/offer{action}");
    let r = if action.is_empty() {
        gw.get(&path, Some(token)).await
    } else {
        gw.post_json(&path, Some(token), &json!(null)).await
    };
    (r.status(), r.json().await.unwrap())
}

async fn status_of(gw: &TestGateway, token: &str) -> String {
    let (status, seen) = offer(gw, token, "").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    seen["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_client_offer_comes_back_after_the_operators_period_never_earlier() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| c.clock = shared).await;
    install(&gw, client("1.0")).await;
    let alice = gw.user_token("alice").await;
    let phone = gw.device_token(&alice, "phone").await;
    let mut inbox = gw.inbox(&phone).await;

    // The gateway offers the client the first time the device looks.
    let (status, offered) = offer(&gw, &phone, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(offered["status"], "offered");
    assert_eq!(offered["asked_by"], "gateway");
    assert_eq!(offered["client"]["version"], "1.0");
    let event = inbox
        .next_of("tasks.offer", WAIT)
        .await
        .expect("offer event");
    assert_eq!(event.data["client"]["name"], "Gateway monitor");

    // Declined: kept away for the operator's period.
    let (status, declined) = offer(&gw, &phone, "/decline").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(declined["status"], "declined");
    let again_at =
        chrono::DateTime::parse_from_rfc3339(declined["offer_again_at"].as_str().unwrap()).unwrap();
    let answered_at =
        chrono::DateTime::parse_from_rfc3339(declined["answered_at"].as_str().unwrap()).unwrap();
    assert_eq!((again_at - answered_at).num_seconds(), AGAIN_SECS as i64);
    // Answers need an offer: accepting a declined one is refused.
    let (status, body) = offer(&gw, &phone, "/accept").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_offered");

    // A second short of the period: still declined, nothing sent.
    clock.advance(Duration::from_secs(AGAIN_SECS - 1));
    assert!(
        inbox
            .next_of("tasks.offer", Duration::from_millis(1500))
            .await
            .is_none(),
        "offered again before the period ran"
    );
    assert_eq!(status_of(&gw, &phone).await, "declined");

    // Past it: the timer offers it again and the device hears of it.
    clock.advance(Duration::from_secs(2));
    let event = inbox
        .next_of("tasks.offer", WAIT)
        .await
        .expect("offered again after the period");
    assert_eq!(event.data["status"], "offered");
    assert_eq!(status_of(&gw, &phone).await, "offered");
    let (status, accepted) = offer(&gw, &phone, "/accept").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(accepted["status"], "accepted");
    // The answer is kept: a later look, a repeated accept change nothing.
    clock.advance(Duration::from_secs(10 * AGAIN_SECS));
    assert_eq!(status_of(&gw, &phone).await, "accepted");
    assert_eq!(offer(&gw, &phone, "/accept").await.1["status"], "accepted");

    // Answers are per device: the laptop asks for the client itself, and
    // is offered it at once even right after declining.
    let laptop = gw.device_token(&alice, "laptop").await;
    let (status, asked) = offer(&gw, &laptop, "/request").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (asked["status"].as_str(), asked["asked_by"].as_str()),
        (Some("offered"), Some("device"))
    );
    assert_eq!(
        offer(&gw, &laptop, "/decline").await.1["status"],
        "declined"
    );
    assert_eq!(offer(&gw, &laptop, "/request").await.1["status"], "offered");
    assert_eq!(status_of(&gw, &phone).await, "accepted");

    // The operator publishes 1.1: the phone, which took 1.0, is offered it.
    install(&gw, client("1.1")).await;
    let (_, newer) = offer(&gw, &phone, "").await;
    assert_eq!(
        (
            newer["status"].as_str(),
            newer["client"]["version"].as_str()
        ),
        (Some("offered"), Some("1.1"))
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn offers_need_a_device_a_configured_client_and_known_routes() {
    let gw = TestGateway::start().await;
    install(&gw, json!({})).await;
    let alice = gw.user_token("alice").await;
    let phone = gw.device_token(&alice, "phone").await;
    // No client configured: nothing to offer, and asking says why.
    assert_eq!(status_of(&gw, &phone).await, "none");
    let r = gw
        .post_json(
            "/v1/services/tasks/offer/request",
            Some(&phone),
            &json!(null),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "no_client").await;

    install(&gw, client("1.0")).await;
    // A user token is not a device.
    let r = gw.get("/v1/services/tasks/offer", Some(&alice)).await;
    expect_error(r, StatusCode::FORBIDDEN, "device_required").await;
    let r = gw.get("/v1/services/tasks/offer", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = gw
        .get("/v1/services/tasks/offer/accept", Some(&phone))
        .await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let r = gw
        .post_json("/v1/services/tasks/offer/maybe", Some(&phone), &json!(null))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    // Another user's device has its own offer.
    let bob = gw.user_token("bob").await;
    let bobs_phone = gw.device_token(&bob, "bobs-phone").await;
    assert_eq!(offer(&gw, &phone, "/decline").await.1["status"], "declined");
    assert_eq!(status_of(&gw, &bobs_phone).await, "offered");
    assert_eq!(status_of(&gw, &phone).await, "declined");

    // An operator config the plugin cannot use says so instead of offering.
    install(
        &gw,
        json!({"client": {"name": "x", "version": "1", "url": "ftp://x"}}),
    )
    .await;
    let r = gw.get("/v1/services/tasks/offer", Some(&phone)).await;
    let message = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "misconfigured").await;
    assert!(message.contains("client.url"), "{message}");
    gw.stop().await.unwrap();
}

fn backups(gw: &TestGateway, token: &str, method: &str, path: &str) -> reqwest::RequestBuilder {
    gw.client
        .request(
            method.parse().unwrap(),
            gw.url(&format!("/v1/services/tasks/backups{path}")),
        )
        .bearer_auth(token)
}

#[tokio::test]
async fn a_backup_made_on_one_device_is_restored_on_another_and_on_no_other_users() {
    let gw = TestGateway::start_with(|c| c.blobs.user_bytes = 4 << 20).await;
    install(&gw, json!({})).await;
    let alice = gw.user_token("alice").await;
    let phone = gw.device_token(&alice, "phone").await;
    let laptop = gw.device_token(&alice, "laptop").await;
    let contacts: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("Contact {i}"), "phone": format!("+1555{i:07}")}))
        .collect();
    let contacts = serde_json::to_vec(&contacts).unwrap();
    assert!(contacts.len() > 1 << 16, "bigger than a service body");
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();

    let r = backups(&gw, &phone, "PUT", "/contacts")
        .header("content-type", "application/json")
        .body(contacts.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: Value = r.json().await.unwrap();
    assert_eq!(
        (made["kind"].as_str(), made["device"].as_str()),
        (Some("contacts"), Some("phone"))
    );
    assert_eq!(made["size"], contacts.len());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&contacts));
    assert_eq!(made["sha256"], sha.as_str());
    let r = backups(&gw, &laptop, "PUT", "/photos")
        .header("content-type", "image/png")
        .body(photo.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let photos: Value = r.json().await.unwrap();

    // Listed for the user, by device and by kind.
    let listed = |v: Value| -> Vec<String> {
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = gw
        .get_json("/v1/services/tasks/backups", Some(&alice))
        .await;
    assert_eq!(listed(all).len(), 2);
    let by_phone = gw
        .get_json("/v1/services/tasks/backups?device=phone", Some(&laptop))
        .await;
    assert_eq!(listed(by_phone), [made["id"].as_str().unwrap()]);
    let by_kind = gw
        .get_json("/v1/services/tasks/backups?kind=photos", Some(&phone))
        .await;
    assert_eq!(listed(by_kind), [photos["id"].as_str().unwrap()]);

    // Restored on the laptop, byte for byte, with its type.
    let id = made["id"].as_str().unwrap();
    let r = backups(&gw, &laptop, "GET", &format!("/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.bytes().await.unwrap().as_ref(), contacts.as_slice());

    // Bob sees none of it and cannot restore it.
    let bob = gw.user_token("bob").await;
    let bobs = gw.device_token(&bob, "bobs-phone").await;
    let none = gw.get_json("/v1/services/tasks/backups", Some(&bobs)).await;
    assert!(listed(none).is_empty());
    let r = backups(&gw, &bobs, "GET", &format!("/{id}/content"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_backup").await;
    // Bad requests store nothing: the quota is as free as before.
    let r = backups(&gw, &phone, "PUT", "/passwords")
        .body(vec![1u8; 3 << 20])
        .send()
        .await
        .unwrap();
    let message = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_kind").await;
    assert!(message.contains("contacts"), "{message}");
    let r = backups(&gw, &alice, "PUT", "/photos")
        .body(vec![1u8; 3 << 20])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "device_required").await;
    // Past the user's quota (4 MiB with what is stored): refused up front.
    let r = backups(&gw, &phone, "PUT", "/photos")
        .body(vec![1u8; 4 << 20])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    // A body without a length.
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::from_static(b"[]"),
    )]));
    let r = backups(&gw, &phone, "PUT", "/contacts")
        .body(chunked)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::LENGTH_REQUIRED, "length_required").await;
    // The 3 MiB refused above left room: it fits now.
    let r = backups(&gw, &phone, "PUT", "/photos")
        .body(vec![1u8; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    // Deleted: gone from the list and its bytes with it.
    let r = backups(&gw, &phone, "DELETE", &format!("/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = backups(&gw, &laptop, "GET", &format!("/{id}/content"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_backup").await;
    let r = backups(&gw, &phone, "GET", "?kind=secrets")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;

    // A client cannot pass off another blob or size as its body's: the
    // gateway-blob headers the service reads are the gateway's own.
    let r = backups(&gw, &phone, "PUT", "/photos")
        .header("gateway-blob", photos["id"].as_str().unwrap())
        .header("gateway-blob-size", "999999")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: Value = r.json().await.unwrap();
    assert_eq!(made["size"], 5);
    let id = made["id"].as_str().unwrap();
    let r = backups(&gw, &phone, "GET", &format!("/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    gw.stop().await.unwrap();
}

/// A share of `body`, as `token`'s user, living `expires_in` seconds.
async fn share(gw: &TestGateway, token: &str, body: Vec<u8>, expires_in: u64) -> reqwest::Response {
    gw.client
        .post(gw.url(&format!(
            "/v1/services/tasks/shares?expires_in={expires_in}"
        )))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_is_fetched_by_id_without_login_until_it_expires_or_is_revoked() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| {
        c.clock = shared;
        c.blobs.user_bytes = 1 << 20;
        // The session outlives the 30 days the clock moves below.
        c.session_ttl = Duration::from_secs(60 * 24 * 3600);
    })
    .await;
    install(&gw, json!({})).await;
    let alice = gw.user_token("alice").await;
    let bob = gw.user_token("bob").await;
    let public = |id: &str| gw.url(&format!("/v1/services/tasks/shares/{id}"));

    let r = share(&gw, &alice, b"meeting notes".to_vec(), 3600).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: Value = r.json().await.unwrap();
    let id = made["share_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "128 random bits");
    assert_eq!(made["state"], "active");

    // Anyone holding the id fetches it, without a token or with another
    // user's.
    let r = reqwest::get(public(&id)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"meeting notes");
    let r = gw
        .client
        .get(public(&id))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"meeting notes");
    // Ids that are not shares.
    let r = reqwest::get(public("0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "unknown_share").await;
    let r = reqwest::get(public("..%2F..")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Listing and revoking are the owner's: bob sees none and revokes none.
    let mine = gw.get_json("/v1/services/tasks/shares", Some(&alice)).await;
    assert_eq!(mine["shares"][0]["share_id"], id.as_str());
    let theirs = gw.get_json("/v1/services/tasks/shares", Some(&bob)).await;
    assert_eq!(theirs["shares"], json!([]));
    let r = gw
        .delete(&format!("/v1/services/tasks/shares/{id}"), Some(&bob))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_share").await;
    let r = gw.get("/v1/services/tasks/shares", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = share(&gw, &alice, b"x".to_vec(), 10).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;

    // A big share fills most of alice's 1 MiB; past its hour it answers 410
    // and its bytes are gone, so another as big fits again.
    let big = vec![7u8; 700 << 10];
    let r = share(&gw, &alice, big.clone(), 3600).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let big_id = r.json::<Value>().await.unwrap()["share_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = share(&gw, &alice, big.clone(), 3600).await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    clock.advance(Duration::from_secs(3601));
    for id in [&id, &big_id] {
        let r = reqwest::get(public(id)).await.unwrap();
        let message = expect_error(r, StatusCode::GONE, "share_expired").await;
        assert!(message.contains("expired at"), "{message}");
    }
    let mut fits = false;
    for _ in 0..50 {
        let r = share(&gw, &alice, big.clone(), 3600).await;
        if r.status() == StatusCode::CREATED {
            fits = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fits, "the expired share's bytes were not removed");
    let mine = gw.get_json("/v1/services/tasks/shares", Some(&alice)).await;
    let states: Vec<&str> = mine["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "expired", "expired"]);

    // Revoked by its owner: 410 at once, and saying so.
    let newest = mine["shares"][0]["share_id"].as_str().unwrap().to_owned();
    let r = gw
        .delete(&format!("/v1/services/tasks/shares/{newest}"), Some(&alice))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reqwest::get(public(&newest)).await.unwrap();
    expect_error(r, StatusCode::GONE, "share_revoked").await;

    // 30 days after they ended, ended shares are forgotten: 404, unlisted.
    clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    let mut forgotten = false;
    for _ in 0..50 {
        let mine = gw.get_json("/v1/services/tasks/shares", Some(&alice)).await;
        if mine["shares"].as_array().unwrap().is_empty() {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(forgotten, "ended shares were kept past 30 days");
    for id in [&id, &newest] {
        let r = reqwest::get(public(id)).await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "unknown_share").await;
    }
    gw.stop().await.unwrap();
}
