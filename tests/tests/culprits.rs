//! Errors that name the right culprit: a host the operator did not grant is
//! the operator's to fix, not a wrong password of the user's nor a refusal
//! of the network. Binding answers `503 module_misconfigured`; deliveries
//! wait for the operator (uncounted) instead of failing, and go out as soon
//! as the operator uploads a fixed manifest.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::{eventually, MockNetwork};
use e2e_tests::{expect_error, target, webhook, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A webhook manifest posting to `mock`, granted `granted`.
fn manifest(id: &str, mock: &MockNetwork, granted: &str) -> Value {
    let mut manifest = mock.manifest(id, 100, 100);
    manifest["allowed_hosts"] = json!([granted]);
    manifest
}

/// Waits until the change's target on `module` waits for the operator:
/// pending, no attempt counted, not a dead letter.
async fn waits_for_the_operator(gw: &TestGateway, token: &str, id: &str, module: &str) {
    let path = format!("/v1/changes/{id}");
    let waiting = eventually(
        "the delivery to wait for the operator",
        Duration::from_secs(30),
        || async {
            let change = gw.get_json(&path, Some(token)).await;
            let t = target(&change, module).clone();
            t["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("waiting for the operator"))
                .then_some(t)
        },
    )
    .await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["attempts"], 0, "not counted: {waiting}");
    assert_eq!(waiting["dead_letter"], false, "{waiting}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_granted_is_the_operators_problem_not_the_users() {
    let gw = TestGateway::start_with(|c| {
        c.delivery.poll_interval = Duration::from_millis(50);
    })
    .await;
    let (source, network) = (MockNetwork::start().await, MockNetwork::start().await);
    let upload = |manifest: Value| {
        let gw = &gw;
        async move {
            let r = gw.upload_module(&manifest, &webhook()).await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    };
    upload(source.manifest("source", 100, 100)).await;
    // The operator granted another host than the one the config names.
    upload(manifest("hook", &network, "http://127.0.0.1:9")).await;
    let token = gw.user_token("alice").await;
    let bind = |module: &str| json!({"module": module, "account": "alice", "credentials": {}});
    let message = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &bind("hook"))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "module_misconfigured",
    )
    .await;
    assert!(message.contains("not set up correctly"), "{message}");
    assert!(
        !message.contains("credentials refused") && !message.contains("127.0.0.1"),
        "no blame on the user, no config shown: {message}"
    );

    // Fixed: the user binds. Then the operator breaks the grant again.
    upload(manifest("hook", &network, &network.origin)).await;
    for module in ["source", "hook"] {
        let r = gw
            .post_json("/v1/bindings", Some(&token), &bind(module))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "bind {module}");
    }
    upload(manifest("hook", &network, "http://127.0.0.1:9")).await;
    let id = gw
        .report(
            &token,
            "source",
            json!({"signature": "waits for the operator"}),
        )
        .await;
    waits_for_the_operator(&gw, &token, &id, "hook").await;
    assert!(network.hits().is_empty());

    // The operator uploads a fixed manifest: the delivery goes out now,
    // not after the pause.
    upload(manifest("hook", &network, &network.origin)).await;
    let change = gw.settled(&token, &id).await;
    assert_eq!(target(&change, "hook")["status"], "delivered", "{change}");
    assert_eq!(network.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_says_misconfigured_blames_the_operator_and_pauses() {
    let gw = TestGateway::start_with(|c| {
        c.delivery.poll_interval = Duration::from_millis(50);
    })
    .await;
    for (manifest, plugin) in [
        (e2e_tests::manifest("source"), webhook()),
        (
            json!({"id": "hostile", "name": "Hostile"}),
            e2e_tests::hostile(),
        ),
    ] {
        let r = gw.upload_module(&manifest, &plugin).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let token = gw.user_token("alice").await;
    let bind = |module: &str, account: &str| json!({"module": module, "account": account, "credentials": {}});
    let message = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &bind("hostile", "badconfig"))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "module_misconfigured",
    )
    .await;
    assert!(
        message.contains("not set up correctly") && !message.contains("operator-secret-42"),
        "a plain sentence, not the operator's details: {message}"
    );

    for module in ["source", "hostile"] {
        let r = gw
            .post_json("/v1/bindings", Some(&token), &bind(module, "fine"))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "bind {module}");
    }
    let id = gw
        .report(&token, "source", json!({"signature": "badconfig"}))
        .await;
    waits_for_the_operator(&gw, &token, &id, "hostile").await;
}
