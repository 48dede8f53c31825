//! The gateway on PostgreSQL (the multi-node mode): the same API flow as on
//! SQLite, and two gateway processes sharing one database see each other's
//! writes. Mandatory under `CI=true`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, manifest, postgres_admin_url, webhook, TestGateway};
use registry_db::scratch::ScratchDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn two_gateways_share_one_postgres_registry() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "gateway_test")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let url = db.url().to_owned();
    let key = gateway::secrets::MasterKey::generate();
    let (url_a, key_a) = (url.clone(), key.clone());
    let a = TestGateway::start_with(move |c| {
        c.database_url = url_a;
        c.master_key = key_a;
    })
    .await;
    let b = TestGateway::start_with(move |c| {
        c.database_url = url;
        c.master_key = key;
    })
    .await;

    assert_eq!(
        a.upload_module(&manifest("matrix"), &webhook())
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = a.user_token("alice").await;
    // A session made on one node is valid on the other.
    let bind = json!({"module": "matrix", "account": "@alice:localhost",
                      "credentials": {"password": "pw"}});
    assert_eq!(
        b.post_json("/v1/bindings", Some(&token), &bind)
            .await
            .status(),
        StatusCode::CREATED
    );
    expect_error(
        a.post_json("/v1/bindings", Some(&token), &bind).await,
        StatusCode::CONFLICT,
        "already_bound",
    )
    .await;
    let listed: Value = a.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(listed["bindings"].as_array().unwrap().len(), 1);
    let modules: Value = b.get_json("/v1/modules", None).await;
    assert_eq!(modules["modules"][0]["id"], "matrix");
    expect_error(
        b.post_json(
            "/v1/users",
            None,
            &json!({"username": "alice", "password": "another one"}),
        )
        .await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
    assert_eq!(b.get("/readyz", None).await.status(), StatusCode::OK);

    a.stop().await.unwrap();
    b.stop().await.unwrap();
    db.drop_now().await.unwrap();
}

/// An event stream on one node hears of a delivery another node made as it
/// happens: the nodes announce outcomes through PostgreSQL (LISTEN/NOTIFY)
/// instead of each stream polling the database. Here the stream's own
/// re-read is an hour away, so only the announcement can end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_node_hears_of_a_delivery_made_by_another() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "gateway_notices")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let key = gateway::secrets::MasterKey::generate();
    let (url, key_a) = (db.url().to_owned(), key.clone());
    // Node A answers the API only; node B delivers.
    let a = TestGateway::start_with(move |c| {
        c.database_url = url;
        c.master_key = key_a;
        c.delivery.concurrency = 0;
        c.delivery.stream_recheck = std::time::Duration::from_secs(3600);
    })
    .await;
    let url = db.url().to_owned();
    let b = TestGateway::start_with(move |c| {
        c.database_url = url;
        c.master_key = key;
        c.delivery.poll_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let mut mocks = Vec::new();
    let token = a.user_token("alice").await;
    for id in ["source", "alpha"] {
        let mock = e2e_tests::mock::MockNetwork::start().await;
        let r = a
            .upload_module(&mock.manifest(id, 100, 100), &webhook())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let bind = json!({"module": id, "account": format!("alice@{id}"), "credentials": {}});
        let r = a.post_json("/v1/bindings", Some(&token), &bind).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        mocks.push(mock);
    }
    // Pushes wait until the stream is open.
    mocks[1].then([e2e_tests::mock::Reply::Slow(
        std::time::Duration::from_millis(500),
    )]);
    let id = a
        .report(&token, "source", json!({"signature": "across nodes"}))
        .await;
    let r = a
        .get(&format!("/v1/changes/{id}/events"), Some(&token))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), r.text())
        .await
        .expect("the stream ended with the delivery, not with its hourly re-read")
        .unwrap();
    assert!(text.contains("event: done"), "{text}");
    assert!(text.contains("\"status\":\"delivered\""), "{text}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    db.drop_now().await.unwrap();
}

/// A device's inbox stream on one node hears of an event another node
/// stored, through PostgreSQL's notices (its own re-read is an hour away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_stream_on_one_node_gets_an_event_published_by_another() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "gateway_device_notices")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let key = gateway::secrets::MasterKey::generate();
    let start = |key: gateway::secrets::MasterKey| {
        let url = db.url().to_owned();
        TestGateway::start_with(move |c| {
            c.database_url = url;
            c.master_key = key;
            c.devices.stream_recheck = std::time::Duration::from_secs(3600);
        })
    };
    let a = start(key.clone()).await;
    let b = start(key).await;
    let token = a.user_token("alice").await;
    async fn register(gw: &TestGateway, token: &str, id: &str) -> String {
        let body = json!({"id": id, "name": id});
        let r = gw.post_json("/v1/devices", Some(token), &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
    let phone = register(&b, &token, "phone").await;
    let response = b
        .client
        .get(b.url("/v1/devices/current/events"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    let mut stream = e2e_tests::sse::EventStream::new(response);
    // Nothing yet; then node A stores an event for the phone.
    assert!(stream
        .next_within(std::time::Duration::from_millis(300))
        .await
        .is_none());
    register(&a, &token, "laptop").await;
    let event = stream
        .next_within(std::time::Duration::from_secs(10))
        .await
        .expect("the event reaches the other node's stream");
    assert_eq!(event.event, "device.joined");
    assert_eq!(event.data["device"], "laptop");
    // Both nodes list the same devices.
    let listed = b.get_json("/v1/devices", Some(&token)).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 2, "{listed}");
}
