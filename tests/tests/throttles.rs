//! Guessing and starvation: failed logins per user name, wrong admin tokens
//! per client and refused credential checks per IM account are throttled
//! (after a burst, even the right answer waits); users checking credentials
//! never take the tokens deliveries need; one user's bindings and open event
//! streams are capped.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, hostile, manifest, webhook, TestGateway};
use gateway::Quota;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A gateway whose per-address limits stay out of the way.
async fn gateway() -> TestGateway {
    TestGateway::start_with(|c| {
        c.anonymous_quota = Quota {
            per_second: 1000,
            burst: 1000,
        };
        c.user_quota = c.anonymous_quota;
    })
    .await
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn failed_logins_throttle_the_user_name_even_for_the_right_password() {
    let gw = gateway().await;
    gw.user_token("carol").await;
    let wrong = json!({"username": "carol", "password": "not her password"});
    // The burst of failures answers as usual, then the name is locked.
    for _ in 0..11 {
        let r = gw.post_json("/v1/sessions", None, &wrong).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let right = json!({"username": "carol", "password": "correct horse battery"});
    let r = gw.post_json("/v1/sessions", None, &right).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r) >= 1);
    let msg = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(msg.contains("failed logins"), "{msg}");
    // Another user is not affected.
    gw.user_token("dave").await;
}

#[tokio::test]
async fn wrong_admin_tokens_throttle_the_client_even_for_the_right_token() {
    let gw = gateway().await;
    for _ in 0..11 {
        let r = gw
            .client
            .get(gw.url("/v1/admin/deliveries/dead"))
            .bearer_auth("a-guess-of-the-admin-token-that-is-wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = gw
        .client
        .get(gw.url("/v1/admin/deliveries/dead"))
        .bearer_auth(&gw.admin_token)
        .send()
        .await
        .unwrap();
    let msg = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(msg.contains("admin token"), "{msg}");
}

/// The hostile fixture as module `hostile`: its `verify` refuses any
/// `fetch:` account it cannot fetch, and accepts every other login.
async fn hostile_module(gw: &TestGateway, rate_limit: Value, allowed: &str) {
    let manifest = json!({"id": "hostile", "name": "Hostile", "allowed_hosts": [allowed],
        "rate_limit": rate_limit});
    let r = gw.upload_module(&manifest, &hostile()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn bind(gw: &TestGateway, token: &str, module: &str, account: &str) -> reqwest::Response {
    gw.post_json(
        "/v1/bindings",
        Some(token),
        &json!({"module": module, "account": account, "credentials": {"password": "guess"}}),
    )
    .await
}

#[tokio::test]
async fn refused_credential_checks_throttle_the_account_for_every_user() {
    let gw = gateway().await;
    hostile_module(&gw, json!(null), "http://127.0.0.1:10").await;
    let mallory = gw.user_token("mallory").await;
    // An account whose check the network refuses (a granted host where
    // nothing listens: the connector rejects it).
    let account = "fetch:http://127.0.0.1:10/refused";
    for _ in 0..6 {
        let r = bind(&gw, &mallory, "hostile", account).await;
        expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_credentials").await;
    }
    let r = bind(&gw, &mallory, "hostile", account).await;
    assert!(retry_after(&r) >= 1);
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The account is throttled for everyone, not only for the guesser.
    let eve = gw.user_token("eve").await;
    let r = bind(&gw, &eve, "hostile", account).await;
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Other accounts still bind.
    let r = bind(&gw, &eve, "hostile", "fine").await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn credential_checks_do_not_take_the_tokens_deliveries_need() {
    let gw = gateway().await;
    // A local server the hostile module may fetch: each check makes one
    // outbound request, paced by the module's rate limit.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno")
                    .await;
            });
        }
    });
    // One call a second, in a burst of 4 (interactive calls: a quarter).
    hostile_module(&gw, json!({"per_second": 1, "burst": 4}), origin.as_str()).await;
    assert_eq!(
        gw.upload_module(&manifest("alpha"), &webhook())
            .await
            .status(),
        StatusCode::CREATED
    );
    let user = gw.user_token("busy").await;
    assert_eq!(
        bind(&gw, &user, "hostile", "fine").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        bind(&gw, &user, "alpha", "me").await.status(),
        StatusCode::CREATED
    );
    // Another user sends credential checks that each call the network.
    let other = gw.user_token("checker").await;
    for i in 0..4 {
        let r = bind(&gw, &other, "hostile", &format!("fetch:{origin}/try{i}")).await;
        assert!(
            [
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&r.status()),
            "{}",
            r.status()
        );
    }
    // The delivery to the hostile network goes out at once: not deferred
    // behind a limiter the checks emptied.
    let id = gw
        .report(&user, "alpha", json!({"signature": "mine"}))
        .await;
    let change = gw.settled(&user, &id).await;
    assert_eq!(change["status"], "delivered", "{change}");
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    let deferred = metrics
        .lines()
        .any(|l| l.contains("module=\"hostile\"") && l.contains("outcome=\"deferred\""));
    assert!(
        !deferred,
        "the delivery waited for the checks' tokens:\n{metrics}"
    );
}

#[tokio::test]
async fn one_user_has_at_most_64_bindings() {
    let gw = gateway().await;
    assert_eq!(
        gw.upload_module(&manifest("alpha"), &webhook())
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = gw.user_token("hoarder").await;
    for i in 0..64 {
        let r = bind(&gw, &token, "alpha", &format!("account-{i}")).await;
        assert_eq!(r.status(), StatusCode::CREATED, "binding {i}");
    }
    let r = bind(&gw, &token, "alpha", "one-too-many").await;
    expect_error(r, StatusCode::CONFLICT, "too_many_bindings").await;
}

#[tokio::test]
async fn one_user_has_at_most_16_open_event_streams() {
    // Nothing delivers: the change stays pending, its streams stay open.
    let gw = TestGateway::start_with(|c| c.delivery.concurrency = 0).await;
    let (token, id) = gw.user_with_a_change("streamer").await;
    let path = format!("/v1/changes/{id}/events");
    let mut open = Vec::new();
    for _ in 0..16 {
        let r = gw.get(&path, Some(&token)).await;
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    expect_error(
        gw.get(&path, Some(&token)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
    )
    .await;
    // Another user's streams are counted apart: while the first user is
    // at the cap, a neighbour still opens a stream of their own change.
    let (other, theirs) = gw.user_with_a_change("neighbour").await;
    let r = gw
        .get(&format!("/v1/changes/{theirs}/events"), Some(&other))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    drop(open);
}

/// Reading an account's settings back (`fetch`) is an interactive call: it
/// spends the module's small interactive budget, never more, so a user
/// polling cannot exceed the network's rate limit nor take the delivery
/// tokens.
#[tokio::test]
async fn reading_settings_back_is_paced_by_the_interactive_budget() {
    // A budget wait longer than half the call's deadline is refused, not
    // waited out: with 1 s calls, a second read within the second is.
    let gw = TestGateway::start_with(|c| {
        c.anonymous_quota = Quota {
            per_second: 1000,
            burst: 1000,
        };
        c.user_quota = c.anonymous_quota;
        c.host_limits.call_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", server.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = server.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    // One call a second in a burst of 4: interactive calls get 1 a second.
    hostile_module(&gw, json!({"per_second": 1, "burst": 4}), origin.as_str()).await;
    let token = gw.user_token("poller").await;
    let r = gw
        .post_json(
            "/v1/bindings",
            Some(&token),
            &json!({"module": "hostile", "account": "reader",
                    "credentials": {"fetch": format!("{origin}/profile")}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/bindings/{id}/settings");
    let mut answered = Vec::new();
    for _ in 0..3 {
        let r = gw.get(&path, Some(&token)).await;
        answered.push(r.status());
        if r.status() == StatusCode::OK {
            assert_eq!(r.json::<Value>().await.unwrap()["signature"], "status 200");
        } else {
            expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "module_unavailable").await;
        }
    }
    assert_eq!(answered[0], StatusCode::OK);
    assert!(
        answered.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "three reads at once all went out: {answered:?}"
    );
    let ok = answered.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        ok,
        "refused reads never reached the network"
    );
}
