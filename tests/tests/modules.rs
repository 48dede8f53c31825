//! The supported-module library (S2): operators upload connectors, everyone
//! lists them, bad plugins and manifests are refused with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{
    expect_error, greedy, manifest, webhook, TestGateway, CORE_MODULE, EMPTY_COMPONENT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn an_operator_uploads_replaces_and_removes_a_module_without_restart() {
    let gw = TestGateway::start().await;
    let r = gw.get("/v1/modules", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"modules": []}));

    let r = gw.upload_module(&manifest("matrix"), &webhook()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["id"], "matrix");
    assert_eq!(created["version"], 1);

    let r = gw.upload_module(&manifest("matrix"), &webhook()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);

    let listed: Value = gw.get_json("/v1/modules", None).await;
    let modules = listed["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 1);
    assert_eq!(modules[0]["name"], "matrix network");
    assert_eq!(modules[0]["version"], 2);
    assert_eq!(modules[0]["detect"]["executables"][0], "matrix-client");
    // What the connector's describe() reported.
    assert_eq!(modules[0]["fields"], json!(["avatar", "signature", "mood"]));
    assert_eq!(modules[0]["limits"]["max_signature_chars"], 1000);
    assert_eq!(modules[0]["limits"]["avatar"]["formats"][0], "image/png");
    let text = listed.to_string();
    assert!(
        !text.contains("module-secret") && !text.contains("allowed_hosts"),
        "grants and module config are not public: {text}"
    );

    assert_eq!(
        gw.delete("/v1/admin/modules/matrix", Some(&gw.admin_token))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let listed: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(listed["modules"], json!([]));
    expect_error(
        gw.delete("/v1/admin/modules/matrix", Some(&gw.admin_token))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn module_secrets_are_not_stored_in_clear() {
    let gw = TestGateway::start().await;
    let r = gw.upload_module(&manifest("webhook"), &webhook()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let db = std::fs::read(gw.data_dir.path().join("gateway.db")).unwrap();
    let wal = std::fs::read(gw.data_dir.path().join("gateway.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(21).any(|w| w == b"webhook-module-secret"),
            "module config secret found in the database files"
        );
    }
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let gw = TestGateway::start().await;
    let user = gw.user_token("mallory").await;
    let no_token = gw
        .client
        .post(gw.url("/v1/admin/modules"))
        .send()
        .await
        .unwrap();
    expect_error(no_token, StatusCode::UNAUTHORIZED, "missing_token").await;
    expect_error(
        gw.upload_module_as(&user, manifest("matrix").to_string(), &webhook())
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        gw.upload_module_as("guessed-token", manifest("matrix").to_string(), &webhook())
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        gw.delete("/v1/admin/modules/matrix", Some(&user)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let listed: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(listed["modules"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn junk_and_core_modules_are_refused_with_the_reason() {
    let gw = TestGateway::start().await;
    let junk = expect_error(
        gw.upload_module(&manifest("matrix"), b"definitely not wasm")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(junk.contains("not a WebAssembly binary"), "{junk}");
    let core = expect_error(
        gw.upload_module(&manifest("matrix"), CORE_MODULE).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(core.contains("core WebAssembly module"), "{core}");
    let bare = expect_error(
        gw.upload_module(&manifest("matrix"), EMPTY_COMPONENT).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(bare.contains("no gateway-abi section"), "{bare}");
    let broken = expect_error(
        gw.upload_module(&manifest("matrix"), b"\0asm\x0d\0\x01\0\x07\xff\xff")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(broken.contains("does not compile"), "{broken}");
    let listed: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(listed["modules"], json!([]), "no refused upload was stored");
}

/// A connector links only what connectors are given: one that reads files
/// imports `wasi:filesystem` and is refused at upload, before any of its
/// code runs, with the interface named.
#[tokio::test]
async fn a_connector_importing_what_it_is_not_granted_is_refused_at_upload() {
    let gw = TestGateway::start().await;
    let refused = expect_error(
        gw.upload_module(&manifest("greedy"), &greedy()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(
        refused.contains("the plugin imports wasi:filesystem/")
            && refused.contains("which no plugin is granted"),
        "{refused}"
    );
    let listed: Value = gw.get_json("/v1/modules", None).await;
    assert_eq!(listed["modules"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn bad_manifests_and_missing_parts_are_refused() {
    let gw = TestGateway::start().await;
    let admin = gw.admin_token.clone();
    let cases = [
        ("not json", "invalid_manifest"),
        (r#"{"id": "Matrix!", "name": "x"}"#, "invalid_manifest"),
        (
            r#"{"id": "m", "name": "x", "allowed_hosts": ["127.0.0.1"]}"#,
            "invalid_manifest",
        ),
        (
            r#"{"id": "m", "name": "x", "rate_limit": {"per_second": 0, "burst": 1}}"#,
            "invalid_manifest",
        ),
        (
            r#"{"id": "m", "name": "x", "grants": []}"#,
            "invalid_manifest",
        ),
        (
            r#"{"id": "m", "name": "x", "allowed_hosts": "http://h:1"}"#,
            "invalid_manifest",
        ),
    ];
    for (text, code) in cases {
        let msg = expect_error(
            gw.upload_module_as(&admin, text.to_owned(), &webhook())
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
        assert!(msg.contains("manifest"), "{msg}");
    }
    // Only the manifest part: the plugin is missing.
    let form = reqwest::multipart::Form::new().text("manifest", manifest("m").to_string());
    let r = gw
        .client
        .post(gw.url("/v1/admin/modules"))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin").await;
    // JSON instead of multipart.
    let r = gw
        .post_json("/v1/admin/modules", Some(&admin), &manifest("m"))
        .await;
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn uploads_are_in_the_audit_log() {
    let gw = TestGateway::start().await;
    gw.upload_module(&manifest("xmpp"), &webhook()).await;
    gw.delete("/v1/admin/modules/xmpp", Some(&gw.admin_token))
        .await;
    let url = gateway::config::default_database_url(gw.data_dir.path());
    let registry = registry_db::Registry::connect(&url).await.unwrap();
    let actions: Vec<_> = registry
        .audit_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.subject))
        .collect();
    assert_eq!(
        actions,
        [
            (
                "admin".to_owned(),
                "module.delete".to_owned(),
                "xmpp".to_owned()
            ),
            (
                "admin".to_owned(),
                "module.upload".to_owned(),
                "xmpp".to_owned()
            ),
        ]
    );
}
