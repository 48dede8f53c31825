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
