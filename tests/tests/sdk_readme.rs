//! The plugin author's path: the worked examples of plugin-sdk/README.md,
//! copied into a fresh crate, build with one cargo command and load with one
//! `POST /v1/admin/modules` (connectors) or `POST /v1/admin/services`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The body of the first fenced block that starts with ```` ```{lang} ````
/// after `after` in the README.
fn block(readme: &str, after: &str, lang: &str) -> String {
    let start = readme.find(after).expect("section");
    let fence = format!("```{lang}\n");
    let open = start + readme[start..].find(&fence).expect("block") + fence.len();
    let close = open + readme[open..].find("```").expect("end of block");
    readme[open..close].to_owned()
}

/// Builds a README example (`code`) as a crate of its own named `name`
/// with the README's connector Cargo.toml and cargo config; the `.wasm`.
fn build_example(readme: &str, name: &str, code: &str) -> Vec<u8> {
    let manifest = block(readme, "`Cargo.toml`:", "toml").replace("parrot-connector", name);
    build_crate(readme, &manifest, name, code)
}

/// Builds `code` with the Cargo.toml `manifest` (naming the crate `name`).
fn build_crate(readme: &str, manifest: &str, name: &str, code: &str) -> Vec<u8> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let manifest = manifest.replace(
        "/path/to/gateway/plugin-sdk",
        &sdk.canonicalize().unwrap().display().to_string(),
    );
    let cargo_config = block(readme, "`.cargo/config.toml`", "toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    // A workspace of its own, as in a separate repository.
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), code).unwrap();
    std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
    std::fs::write(dir.path().join(".cargo/config.toml"), cargo_config).unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/target");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's {name} does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    std::fs::read(target.join(file)).unwrap()
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/README.md"))
        .unwrap()
}

#[tokio::test]
async fn the_readme_example_builds_and_loads() {
    let readme = readme();
    let code = block(&readme, "`src/lib.rs`:", "rust,ignore");
    let wasm = build_example(&readme, "parrot-connector", &code);

    let gw = TestGateway::start().await;
    let mut manifest = json!({"id": "parrot", "name": "Parrot",
        "allowed_hosts": ["https://parrot.example:443"],
        "rate_limit": {"per_second": 2, "burst": 5},
        "config": {"apii": "https://parrot.example"}});
    // A typo in the operator's config is caught at upload, naming the field.
    let typo = expect_error(
        gw.upload_module(&manifest, &wasm).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_manifest",
    )
    .await;
    assert!(typo.contains("config.api: missing"), "{typo}");
    manifest["config"] = json!({"api": "https://parrot.example"});
    let r = gw.upload_module(&manifest, &wasm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let module: Value = r.json().await.unwrap();
    assert_eq!(module["fields"], json!(["signature"]));
    assert_eq!(module["limits"]["max_signature_chars"], 140);
    // What a user is asked for, as the README says.
    assert_eq!(module["credentials"][0]["name"], "token");
    assert_eq!(module["credentials"][0]["secret"], true);
    assert_eq!(module["credentials"][0]["label"], "API token");
}

/// A stand-in Jay server: login with the password `jay-pw`, then a profile
/// behind the session token.
async fn jay_server() -> (String, Arc<Mutex<Value>>) {
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::routing::{get, post};
    use axum::Json;
    let profile = Arc::new(Mutex::new(json!({"status": null, "mood": null})));
    let authorised = |headers: &HeaderMap| {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer session-1")
    };
    let (read, write) = (profile.clone(), profile.clone());
    let app = axum::Router::new()
        .route(
            "/api/login",
            post(|Json(body): Json<Value>| async move {
                if body["password"] == "jay-pw" {
                    (S::OK, Json(json!({"token": "session-1"})))
                } else {
                    (S::UNAUTHORIZED, Json(json!({"error": "wrong password"})))
                }
            }),
        )
        .route(
            "/api/profile",
            get(move |headers: HeaderMap| async move {
                if !authorised(&headers) {
                    return (S::UNAUTHORIZED, Json(json!({})));
                }
                (S::OK, Json(read.lock().unwrap().clone()))
            })
            .put(
                move |headers: HeaderMap, Json(body): Json<Value>| async move {
                    if !authorised(&headers) {
                        return S::UNAUTHORIZED;
                    }
                    let mut profile = write.lock().unwrap();
                    for (key, value) in body.as_object().cloned().unwrap_or_default() {
                        profile[key] = value;
                    }
                    S::NO_CONTENT
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, profile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_readme_example_logs_in_pushes_and_reads_back() {
    let readme = readme();
    let code = block(&readme, "`src/lib.rs` of the Jay connector:", "rust,ignore");
    let wasm = build_example(&readme, "jay-connector", &code);
    let (origin, profile) = jay_server().await;

    let gw = TestGateway::start().await;
    let manifest = json!({"id": "jay", "name": "Jay", "allowed_hosts": [origin],
        "config": {"api": origin}});
    let r = gw.upload_module(&manifest, &wasm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = gw.user_token("alice").await;
    let bind = |password: Value| json!({"module": "jay", "account": "alice", "credentials": {"password": password}});
    let missing = expect_error(
        gw.post_json(
            "/v1/bindings",
            Some(&token),
            &json!({"module": "jay", "account": "alice", "credentials": {}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(missing.contains("credentials.password"), "{missing}");
    let wrong = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &bind(json!("nope")))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    assert!(wrong.contains("HTTP 401"), "{wrong}");
    let r = gw
        .post_json("/v1/bindings", Some(&token), &bind(json!("jay-pw")))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let binding: Value = r.json().await.unwrap();

    // A change from another network lands on Jay, the mood in Jay's spelling.
    let r = gw
        .upload_module(&e2e_tests::manifest("alpha"), &e2e_tests::webhook())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json!({"module": "alpha", "account": "alice", "credentials": {}});
    assert_eq!(
        gw.post_json("/v1/bindings", Some(&token), &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    let id = gw
        .report(
            &token,
            "alpha",
            json!({"signature": "back on monday", "mood": "Busy"}),
        )
        .await;
    let change = gw.settled(&token, &id).await;
    let jay = e2e_tests::target(&change, "jay");
    assert_eq!(jay["status"], "delivered", "{change}");
    assert_eq!(
        *profile.lock().unwrap(),
        json!({"status": "back on monday", "mood": "busy"})
    );

    // fetch() reads it back through the gateway.
    let path = format!("/v1/bindings/{}/settings", binding["id"].as_str().unwrap());
    let current = gw.get_json(&path, Some(&token)).await;
    assert_eq!(current["signature"], "back on monday", "{current}");
    assert_eq!(current["mood"], "busy", "{current}");
}

/// The service example: a shared clipboard, built from the README, loaded
/// with the grants it imports, and used from two devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_service_example_builds_loads_and_serves_two_devices() {
    let readme = readme();
    let manifest = block(&readme, "`Cargo.toml` of a service", "toml");
    let code = block(&readme, "`src/lib.rs` of the service:", "rust,ignore");
    let wasm = build_crate(&readme, &manifest, "clipboard-service", &code);

    let gw = TestGateway::start().await;
    let upload = |grants: Value| {
        let manifest = json!({"id": "clipboard", "name": "Clipboard", "grants": grants});
        let gw = &gw;
        let wasm = &wasm;
        async move { gw.upload_service(&manifest, wasm).await }
    };
    // It imports `events`: without that grant it is refused, named.
    let refused = expect_error(
        upload(json!(["kv", "devices"])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(refused.contains("gateway:service/events"), "{refused}");
    let r = upload(json!(["kv", "devices", "events"])).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let alice = gw.user_token("alice").await;
    let mut tokens = Vec::new();
    for id in ["phone", "laptop"] {
        let r = gw
            .post_json("/v1/devices", Some(&alice), &json!({"id": id, "name": id}))
            .await;
        tokens.push(
            r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let stream = gw
        .client
        .get(gw.url("/v1/devices/current/events"))
        .bearer_auth(&tokens[1])
        .send()
        .await
        .unwrap();
    let mut laptop = e2e_tests::sse::EventStream::new(stream);
    let r = gw
        .client
        .put(gw.url("/v1/services/clipboard/clip"))
        .bearer_auth(&tokens[0])
        .json(&json!({"text": "copied on the phone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let event = laptop
        .next_of("clipboard.copied", std::time::Duration::from_secs(10))
        .await
        .expect("the laptop hears of the copy");
    assert_eq!(event.data["text"], "copied on the phone");
    assert_eq!(event.data["from"], "phone");
    let read = gw
        .get_json("/v1/services/clipboard/clip", Some(&tokens[1]))
        .await;
    assert_eq!(read["text"], "copied on the phone");
    // Another user's clipboard is their own.
    let bob = gw.user_token("bob").await;
    let r = gw.get("/v1/services/clipboard/clip", Some(&bob)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
