//! The master key and the database belong together: every node of one
//! database needs the key its data is sealed with. A node with another key (its
//! own data dir, a lost master-key file) refuses to start with a message that
//! says what to do, instead of failing every delivery it claims. Checked on
//! SQLite (two data dirs, one database file) and on PostgreSQL (one scratch
//! database; mandatory under `CI=true`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{manifest, postgres_admin_url, webhook, TestGateway};
use gateway::secrets::MasterKey;
use gateway::RunError;
use registry_db::scratch::ScratchDatabase;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

/// Runs `scenario` with the URL of a fresh SQLite database (outside every
/// data dir) and then of a fresh PostgreSQL database, when one is configured.
async fn on_each_database(scenario: impl AsyncFn(String)) {
    let shared = tempfile::tempdir().expect("temp dir");
    scenario(format!(
        "sqlite://{}?mode=rwc",
        shared.path().join("shared.db").display()
    ))
    .await;
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "keys_test")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    scenario(db.url().to_owned()).await;
    db.drop_now().await.expect("drop scratch database");
}

/// A gateway on `url` with its own data dir (and so its own master key
/// unless `adjust` sets one).
async fn node(url: &str, adjust: impl FnOnce(&mut gateway::Config)) -> TestGateway {
    let url = url.to_owned();
    TestGateway::start_with(move |c| {
        c.database_url = url;
        adjust(c);
    })
    .await
}

/// What `run()` answers for `config`, which must be a refusal to start.
async fn refusal(config: gateway::Config) -> RunError {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // Shutdown is due at once: a gateway that starts at all stops again and
    // answers Ok, so a missing refusal fails below instead of hanging.
    match gateway::run(config, listener, async {}).await {
        Err(e) => e,
        Ok(()) => panic!("a gateway whose master key does not open the data started"),
    }
}

/// A config for a node with its own fresh data dir on `url`.
fn fresh_node_config(url: &str, data_dir: &Path) -> gateway::Config {
    let mut config = gateway::Config::new(data_dir).expect("config");
    config.database_url = url.to_owned();
    config
}

/// Asserts `error` is the key mismatch and its message says what to do.
fn assert_key_mismatch(error: &RunError, data_dir: &Path) {
    assert!(
        matches!(error, RunError::MasterKeyMismatch { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for hint in [
        "master key",
        "GATEWAY_MASTER_KEY",
        &data_dir.join("master-key").display().to_string(),
        "same key",
    ] {
        assert!(message.contains(hint), "{hint:?} missing in: {message}");
    }
}

/// The key of a node's data dir, as its master-key file holds it.
fn key_of(gateway: &TestGateway) -> MasterKey {
    let text = std::fs::read_to_string(gateway.data_dir.path().join("master-key")).expect("key");
    MasterKey::parse(&text).expect("valid key")
}

/// Deletes the key check value, as in a database created before there was
/// one (migration 0005 adds the table empty).
async fn forget_key_check(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    sqlx::query("DELETE FROM key_check")
        .execute(&pool)
        .await
        .expect("delete");
    pool.close().await;
}

async fn has_key_check(url: &str) -> bool {
    let registry = registry_db::Registry::connect(url).await.expect("connect");
    let stored = registry.key_check().await.expect("read");
    registry.close().await;
    stored.is_some()
}

#[tokio::test]
async fn a_second_node_with_another_key_refuses_to_start() {
    on_each_database(async |url| {
        let first = node(&url, |_| {}).await;
        // Its own data dir, so a freshly generated key of its own.
        let other = tempfile::tempdir().expect("temp dir");
        let error = refusal(fresh_node_config(&url, other.path())).await;
        assert_key_mismatch(&error, other.path());
        // The refusal changed nothing: the first node goes on serving.
        assert_eq!(first.get("/readyz", None).await.status(), StatusCode::OK);

        // A node whose key file was lost generates another key: refused too.
        let dir = first.data_dir.path();
        let key_file = dir.join("master-key");
        let original = std::fs::read_to_string(&key_file).expect("key file");
        std::fs::remove_file(&key_file).expect("lose the key file");
        let error = refusal(fresh_node_config(&url, dir)).await;
        assert_key_mismatch(&error, dir);
        // With the original key file back it starts (and stops at once).
        std::fs::write(&key_file, &original).expect("restore the key file");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        gateway::run(fresh_node_config(&url, dir), listener, async {})
            .await
            .expect("the original key starts");
        first.stop().await.expect("clean stop");
    })
    .await;
}

#[tokio::test]
async fn a_second_node_with_the_same_key_starts_and_opens_the_sealed_data() {
    on_each_database(async |url| {
        let first = node(&url, |_| {}).await;
        let key = key_of(&first);
        // The operator copied the first node's key (file or environment).
        let second = node(&url, move |c| c.master_key = key).await;
        // Binding through the second node runs the connector with the module
        // config the first node sealed.
        let token = bind_through(&first, &second).await;
        let listed = first.get_json("/v1/bindings", Some(&token)).await;
        assert_eq!(listed["bindings"].as_array().unwrap().len(), 1);
        // Two nodes with the key stored one check value, which still keeps
        // a third key out.
        assert!(has_key_check(&url).await, "no check value stored");
        let other = tempfile::tempdir().expect("temp dir");
        let error = refusal(fresh_node_config(&url, other.path())).await;
        assert_key_mismatch(&error, other.path());
        first.stop().await.expect("clean stop");
        second.stop().await.expect("clean stop");
    })
    .await;
}

#[tokio::test]
async fn a_database_from_before_key_checks_is_checked_against_its_sealed_data() {
    on_each_database(async |url| {
        let first = node(&url, |_| {}).await;
        let key = key_of(&first);
        // Module config only: a sealed module config is the sample.
        let upload = first.upload_module(&manifest("matrix"), &webhook()).await;
        assert_eq!(upload.status(), StatusCode::CREATED);
        forget_key_check(&url).await;
        let other = tempfile::tempdir().expect("temp dir");
        let error = refusal(fresh_node_config(&url, other.path())).await;
        assert_key_mismatch(&error, other.path());
        assert!(!has_key_check(&url).await, "a wrong key stored its check");

        // With a binding: its sealed credentials are the sample.
        let token = first.user_token("bob").await;
        let bind = json!({"module": "matrix", "account": "@bob:localhost",
                          "credentials": {"password": "pw"}});
        let r = first.post_json("/v1/bindings", Some(&token), &bind).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        forget_key_check(&url).await;
        let error = refusal(fresh_node_config(&url, other.path())).await;
        assert_key_mismatch(&error, other.path());

        // The right key passes the check and stores the check value, which
        // then refuses the other key by itself.
        let second = node(&url, move |c| c.master_key = key).await;
        assert!(has_key_check(&url).await, "no check value stored");
        let error = refusal(fresh_node_config(&url, other.path())).await;
        assert_key_mismatch(&error, other.path());
        first.stop().await.expect("clean stop");
        second.stop().await.expect("clean stop");
    })
    .await;
}

/// Uploads a module on `first`, binds an account through `second`, and
/// returns the user's session token.
async fn bind_through(first: &TestGateway, second: &TestGateway) -> String {
    let upload = first.upload_module(&manifest("matrix"), &webhook()).await;
    assert_eq!(upload.status(), StatusCode::CREATED);
    let token = first.user_token("alice").await;
    let bind = json!({"module": "matrix", "account": "@alice:localhost",
                      "credentials": {"password": "pw"}});
    let r = second.post_json("/v1/bindings", Some(&token), &bind).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    token
}
