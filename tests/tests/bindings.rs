//! The user's application list (S3): binding accounts of supported modules.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::MockNetwork;
use e2e_tests::{expect_error, manifest, webhook, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn with_modules(ids: &[&str]) -> TestGateway {
    let gw = TestGateway::start().await;
    for id in ids {
        let r = gw.upload_module(&manifest(id), &webhook()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    gw
}

/// Nobody binds someone else's account: the connector makes the binding
/// prove it (the webhook receiver confirms only the credentials it gave that
/// account), and one account of a module belongs to one user.
#[tokio::test]
async fn an_account_is_bound_only_by_whoever_proves_it_and_only_once() {
    let receiver = MockNetwork::start().await;
    receiver.accounts([("alice".to_owned(), json!({"token": "alice-token"}))]);
    let gw = TestGateway::start().await;
    let r = gw
        .upload_module(&receiver.manifest("hook", 100, 100), &webhook())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let bind = |token: Value| json!({"module": "hook", "account": "alice", "credentials": token});

    // Mallory names Alice's account without her token: refused.
    let mallory = gw.user_token("mallory").await;
    for credentials in [json!({}), json!({"token": "guess"})] {
        let message = expect_error(
            gw.post_json("/v1/bindings", Some(&mallory), &bind(credentials))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_credentials",
        )
        .await;
        assert!(message.contains("does not accept"), "{message}");
    }

    // Alice proves it.
    let alice = gw.user_token("alice").await;
    let r = gw
        .post_json(
            "/v1/bindings",
            Some(&alice),
            &bind(json!({"token": "alice-token"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Even with the token, a second user cannot hold the same account...
    let message = expect_error(
        gw.post_json(
            "/v1/bindings",
            Some(&mallory),
            &bind(json!({"token": "alice-token"})),
        )
        .await,
        StatusCode::CONFLICT,
        "account_taken",
    )
    .await;
    assert!(message.contains("another user"), "{message}");
    // ... and Alice binding it again hears it is hers, without a check.
    let checks = receiver.verifications().len();
    expect_error(
        gw.post_json(
            "/v1/bindings",
            Some(&alice),
            &bind(json!({"token": "alice-token"})),
        )
        .await,
        StatusCode::CONFLICT,
        "already_bound",
    )
    .await;
    assert_eq!(receiver.verifications().len(), checks);
    let theirs: Value = gw.get_json("/v1/bindings", Some(&mallory)).await;
    assert_eq!(theirs["bindings"], json!([]));
}

#[tokio::test]
async fn a_user_binds_lists_and_unbinds_accounts() {
    let gw = with_modules(&["matrix", "xmpp"]).await;
    let token = gw.user_token("alice").await;
    let body = json!({"module": "matrix", "account": "@alice:localhost",
                      "credentials": {"password": "matrix-password-123"}});
    let r = gw.post_json("/v1/bindings", Some(&token), &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["module"], "matrix");
    assert_eq!(created["account"], "@alice:localhost");
    assert!(created["created_at"].as_str().is_some());
    assert!(created.get("credentials").is_none());

    expect_error(
        gw.post_json("/v1/bindings", Some(&token), &body).await,
        StatusCode::CONFLICT,
        "already_bound",
    )
    .await;
    let xmpp = json!({"module": "xmpp", "account": "alice@localhost",
                      "credentials": {"password": "xmpp-password-123"}});
    assert_eq!(
        gw.post_json("/v1/bindings", Some(&token), &xmpp)
            .await
            .status(),
        StatusCode::CREATED
    );

    let r = gw.get("/v1/bindings", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.contains("password-123"), "credentials leaked: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let bindings = list["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[0]["id"], created["id"]);
    assert_eq!(bindings[0]["last_applied"], Value::Null);

    // Another user sees none of them and cannot delete them.
    let bob = gw.user_token("bob").await;
    let theirs: Value = gw.get_json("/v1/bindings", Some(&bob)).await;
    assert_eq!(theirs["bindings"], json!([]));
    let path = format!("/v1/bindings/{}", created["id"].as_str().unwrap());
    expect_error(
        gw.delete(&path, Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    assert_eq!(
        gw.delete(&path, Some(&token)).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        gw.delete(&path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(list["bindings"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn binding_an_unsupported_module_names_the_supported_ones() {
    let gw = with_modules(&["matrix", "xmpp"]).await;
    let token = gw.user_token("alice").await;
    let body = json!({"module": "icq", "account": "12345", "credentials": {"password": "x"}});
    let msg = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_module",
    )
    .await;
    assert!(
        msg.contains("icq") && msg.contains("matrix") && msg.contains("xmpp"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_removed_module_refuses_new_bindings_but_keeps_old_ones() {
    let gw = with_modules(&["matrix"]).await;
    let token = gw.user_token("alice").await;
    let body = json!({"module": "matrix", "account": "@a:localhost", "credentials": {"access_token": "t"}});
    assert_eq!(
        gw.post_json("/v1/bindings", Some(&token), &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    gw.delete("/v1/admin/modules/matrix", Some(&gw.admin_token))
        .await;
    let other = json!({"module": "matrix", "account": "@b:localhost", "credentials": {}});
    let msg = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_module",
    )
    .await;
    assert!(msg.contains("none yet"), "{msg}");
    let list: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(list["bindings"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_binding_requests_get_clear_errors() {
    let gw = with_modules(&["matrix"]).await;
    let token = gw.user_token("alice").await;
    for (body, code) in [
        (
            json!({"module": "matrix", "account": "  ", "credentials": {}}),
            "invalid_account",
        ),
        (
            json!({"module": "matrix", "account": "a\nb", "credentials": {}}),
            "invalid_account",
        ),
        (
            json!({"module": "matrix", "account": "a", "credentials": "pw"}),
            "invalid_body",
        ),
        (
            json!({"module": "matrix", "credentials": {}}),
            "invalid_body",
        ),
        (
            json!({"module": 7, "account": "a", "credentials": {}}),
            "invalid_body",
        ),
    ] {
        expect_error(
            gw.post_json("/v1/bindings", Some(&token), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
    }
    let big = json!({"module": "matrix", "account": "a", "credentials": {"k": "x".repeat(20_000)}});
    expect_error(
        gw.post_json("/v1/bindings", Some(&token), &big).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    expect_error(
        gw.post_json("/v1/bindings", None, &json!({})).await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    let list: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(
        list["bindings"],
        json!([]),
        "no bad request stored anything"
    );
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest() {
    let gw = with_modules(&["xmpp"]).await;
    let token = gw.user_token("alice").await;
    let body = json!({"module": "xmpp", "account": "alice@localhost",
                      "credentials": {"password": "plaintext-canary-4711"}});
    assert_eq!(
        gw.post_json("/v1/bindings", Some(&token), &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    let dir = gw.data_dir.path().to_owned();
    gw.stop().await.unwrap();
    for file in ["gateway.db", "gateway.db-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(21).any(|w| w == b"plaintext-canary-4711"),
            "credential found in clear in {file}"
        );
    }
}

#[tokio::test]
async fn the_connector_checks_credentials_before_anything_is_stored() {
    let gw = TestGateway::start().await;
    // The legacy connector's verify() refuses the password "wrong".
    let legacy = json!({"id": "legacy", "name": "Legacy"});
    assert_eq!(
        gw.upload_module(&legacy, &e2e_tests::legacy_v1())
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = gw.user_token("alice").await;
    let body =
        json!({"module": "legacy", "account": "alice", "credentials": {"password": "wrong"}});
    let msg = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    assert!(msg.contains("wrong password"), "{msg}");
    let list: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(list["bindings"], json!([]));
}
