//! Declared credential and config fields (ABI 2): the gateway checks a
//! user's credentials at binding and the operator's config at upload
//! against what the connector declares, before the connector runs, and
//! names the field; users see what to enter in `GET /v1/modules`. Connectors
//! of the frozen ABI 1 keep loading and working as before.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::MockNetwork;
use e2e_tests::{expect_error, legacy_v1, plugin, target, webhook, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn a_module_config_that_misses_or_mistypes_a_declared_field_is_refused_at_upload() {
    let gw = TestGateway::start().await;
    let mut manifest = e2e_tests::manifest("hook");
    let cases = [
        (json!({"secret": "s"}), "config.url: missing"),
        (
            json!({"url": "not a url", "secret": "s"}),
            "config.url: must be an absolute http",
        ),
        (
            json!({"url": "http://127.0.0.1:9/hook", "secret": 42}),
            "config.secret: must be a non-empty string",
        ),
        (
            json!({"url": "http://127.0.0.1:9/hook", "secret": "s", "secrett": "s"}),
            "config.secrett: not a field of this module; its fields are url, secret",
        ),
    ];
    for (config, says) in cases {
        manifest["config"] = config.clone();
        let message = expect_error(
            gw.upload_module(&manifest, &webhook()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_manifest",
        )
        .await;
        assert!(message.contains(says), "{config}: {message}");
    }
    // Nothing was installed by the refused uploads.
    let modules: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(modules["modules"], json!([]));
}

#[tokio::test]
async fn credentials_are_checked_against_the_declared_fields_before_the_connector_runs() {
    let gw = TestGateway::start().await;
    // The XMPP connector needs a password; its API is a mock that records
    // every call, so a refusal that reached the connector would show.
    let api = MockNetwork::start().await;
    let manifest = json!({"id": "xmpp", "name": "XMPP", "allowed_hosts": [api.origin],
        "config": {"api": format!("{}/api", api.origin), "admin_user": "admin@localhost",
                   "admin_password": "admin-pw"}});
    let r = gw.upload_module(&manifest, &plugin("xmpp_connector")).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let listed: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(
        listed["modules"][0]["credentials"],
        json!([{"name": "password", "label": "Password", "kind": "secret", "secret": true,
                "required": true, "help": "the password of this XMPP account"}])
    );

    let token = gw.user_token("alice").await;
    let cases = [
        (
            json!({}),
            "credentials.password: missing; this module needs it (Password)",
        ),
        (
            json!({"password": ""}),
            "credentials.password: must be a non-empty string",
        ),
        (
            json!({"password": 1234}),
            "credentials.password: must be a non-empty string",
        ),
        (
            json!({"password": "pw", "pasword": "pw"}),
            "credentials.pasword: not a field of this module; its fields are password",
        ),
    ];
    for (credentials, says) in cases {
        let body =
            json!({"module": "xmpp", "account": "alice@localhost", "credentials": credentials});
        let message = expect_error(
            gw.post_json("/v1/bindings", Some(&token), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        assert!(message.contains(says), "{credentials}: {message}");
    }
    assert!(
        api.hits().is_empty(),
        "the connector ran: {:?}",
        api.hits().len()
    );
    let list: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(list["bindings"], json!([]));
    // Shape mistakes are not guesses: they do not count towards the
    // refused-credentials throttle (10 per user), so a user who fixes the
    // field is not locked out.
    for _ in 0..12 {
        let body = json!({"module": "xmpp", "account": "alice@localhost", "credentials": {}});
        let r = gw.post_json("/v1/bindings", Some(&token), &body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_of_the_first_abi_still_loads_binds_and_delivers() {
    let gw = TestGateway::start().await;
    let legacy = json!({"id": "legacy", "name": "Legacy", "config": {"anything": ["goes"]}});
    let r = gw.upload_module(&legacy, &legacy_v1()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = gw
        .upload_module(&e2e_tests::manifest("source"), &webhook())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let listed: Value = gw.get_json("/v1/modules", None).await;
    let module = listed["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "legacy")
        .unwrap()
        .clone();
    assert_eq!(module["fields"], json!(["signature"]));
    assert!(module.get("credentials").is_none(), "undeclared: {module}");

    let token = gw.user_token("alice").await;
    let bind = |module: &str, credentials: Value| json!({"module": module, "account": "alice", "credentials": credentials});
    expect_error(
        gw.post_json(
            "/v1/bindings",
            Some(&token),
            &bind("legacy", json!({"password": "wrong"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    for (module, credentials) in [
        ("legacy", json!({"free": {"form": true}})),
        ("source", json!({})),
    ] {
        let r = gw
            .post_json("/v1/bindings", Some(&token), &bind(module, credentials))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "bind {module}");
    }
    let id = gw
        .report(
            &token,
            "source",
            json!({"signature": "a signature longer than twenty"}),
        )
        .await;
    let change = gw.settled(&token, &id).await;
    let t = target(&change, "legacy");
    assert_eq!(t["status"], "delivered", "{change}");
    assert_eq!(t["applied_fields"], json!(["signature"]), "{t}");
    assert_eq!(
        t["truncated_fields"],
        json!(["signature"]),
        "cut to its 20 characters: {t}"
    );
}
