//! Registration, login, logout and the inbound rate limits (S1).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn a_user_registers_logs_in_and_out() {
    let gw = TestGateway::start().await;
    let creds = json!({"username": "alice", "password": "correct horse"});
    let r = gw.post_json("/v1/users", None, &creds).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["username"], "alice");
    assert!(user["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(user.get("password").is_none());

    let r = gw.post_json("/v1/sessions", None, &creds).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let session: Value = r.json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 43, "token carries >= 256 bits");
    let expires = chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap())
        .expect("RFC 3339 expiry");
    assert!(expires > chrono::Utc::now());

    let r = gw.get("/v1/bindings", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK, "the token works");
    let r = gw.delete("/v1/sessions/current", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = gw.get("/v1/bindings", Some(&token)).await;
    let www = r.headers().get("www-authenticate").cloned();
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(www.unwrap(), "Bearer");
}

#[tokio::test]
async fn registration_rules_are_enforced_with_clear_codes() {
    let gw = TestGateway::start().await;
    let ok = json!({"username": "bob", "password": "long enough"});
    assert_eq!(
        gw.post_json("/v1/users", None, &ok).await.status(),
        StatusCode::CREATED
    );
    let again = json!({"username": "bob", "password": "another password"});
    expect_error(
        gw.post_json("/v1/users", None, &again).await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    for bad in ["ab", "Bob", "bob smith", "bøb", &"x".repeat(65)] {
        let body = json!({"username": bad, "password": "long enough"});
        expect_error(
            gw.post_json("/v1/users", None, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        )
        .await;
    }
    let weak = json!({"username": "carol", "password": "1234567"});
    expect_error(
        gw.post_json("/v1/users", None, &weak).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weak_password",
    )
    .await;
    // Eight characters, even multi-byte ones, is enough.
    let eight = json!({"username": "carol", "password": "ééééééé✓"});
    assert_eq!(
        gw.post_json("/v1/users", None, &eight).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let gw = TestGateway::start().await;
    gw.user_token("dave").await;
    let wrong = gw
        .post_json(
            "/v1/sessions",
            None,
            &json!({"username": "dave", "password": "not the password"}),
        )
        .await;
    let m1 = expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let unknown = gw
        .post_json(
            "/v1/sessions",
            None,
            &json!({"username": "nobody", "password": "whatever123"}),
        )
        .await;
    let m2 = expect_error(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(m1, m2);
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let clock = gateway::clock::ManualClock::new();
    let gw = TestGateway::start_with(|c| {
        c.session_ttl = std::time::Duration::from_secs(60);
        c.clock = clock.shared();
    })
    .await;
    let token = gw.user_token("erin").await;
    clock.advance(std::time::Duration::from_secs(59));
    assert_eq!(
        gw.get("/v1/bindings", Some(&token)).await.status(),
        StatusCode::OK
    );
    clock.advance(std::time::Duration::from_secs(2));
    expect_error(
        gw.get("/v1/bindings", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_ip() {
    let gw = TestGateway::start_with(|c| {
        c.anonymous_quota = gateway::Quota {
            per_second: 1,
            burst: 3,
        }
    })
    .await;
    let body = json!({"username": "nobody", "password": "whatever123"});
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let r = gw.post_json("/v1/sessions", None, &body).await;
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    assert_eq!(
        &statuses[..3],
        [StatusCode::UNAUTHORIZED; 3],
        "burst of 3 allowed"
    );
    let r = limited.expect("the 4th attempt within a second is limited");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn authenticated_calls_are_rate_limited_per_user() {
    let gw = TestGateway::start_with(|c| {
        c.user_quota = gateway::Quota {
            per_second: 1,
            burst: 2,
        }
    })
    .await;
    let alice = gw.user_token("alice").await;
    let bob = gw.user_token("bob").await;
    assert_eq!(
        gw.get("/v1/bindings", Some(&alice)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        gw.get("/v1/bindings", Some(&alice)).await.status(),
        StatusCode::OK
    );
    let r = gw.get("/v1/bindings", Some(&alice)).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user still has a full quota.
    assert_eq!(
        gw.get("/v1/bindings", Some(&bob)).await.status(),
        StatusCode::OK
    );
}
