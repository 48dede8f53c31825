//! Plugins installed at start (`gateway serve --install-service` and
//! `--install-module`, which the README's first command uses for the
//! reference services and connectors): installed once, not again on a
//! restart with the same plugin (an operator's later manifest stays), a new
//! version when the plugin changed, and a manifest that does not fit the
//! plugin stops the start with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{plugin, service_plugin, TestGateway};
use gateway::config::Bundled;
use reqwest::StatusCode;
use serde_json::Value;

fn bundle(dir: &str, plugin: Vec<u8>) -> Bundled {
    let manifest = std::fs::read_to_string(format!(
        "{}/../plugins/{dir}/manifest.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    Bundled {
        source: format!("plugins/{dir}"),
        manifest,
        plugin,
    }
}

async fn versions(gw: &TestGateway) -> Vec<(String, i64)> {
    let list = gw.get_json("/v1/services", None).await;
    list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn bundled_services_are_installed_once_and_upgraded_when_their_plugin_changes() {
    let files = service_plugin("files");
    let handoff = service_plugin("handoff");
    let (f, h) = (files.clone(), handoff.clone());
    let gw = TestGateway::start_with(move |c| {
        c.bundled_services = vec![bundle("files", f), bundle("handoff", h)];
    })
    .await;
    assert_eq!(
        versions(&gw).await,
        [("files".into(), 1), ("handoff".into(), 1)]
    );
    // They serve users at once, with the grants of their manifests.
    let token = gw.user_token("alice").await;
    let r = gw.get("/v1/services/files/files", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["files"],
        serde_json::json!([])
    );

    // The same plugins again: nothing new.
    let stopped = gw.stop_keeping_data().await;
    let (f, h) = (files.clone(), handoff.clone());
    let gw = TestGateway::start_again_with(stopped, move |c| {
        c.bundled_services = vec![bundle("files", f), bundle("handoff", h)];
    })
    .await;
    assert_eq!(
        versions(&gw).await,
        [("files".into(), 1), ("handoff".into(), 1)]
    );

    // A changed plugin (the same code with one more custom section, as a
    // new build would differ): a new version of that service only.
    let stopped = gw.stop_keeping_data().await;
    let mut changed = files.clone();
    wasm_custom_section(&mut changed);
    let gw = TestGateway::start_again_with(stopped, move |c| {
        c.bundled_services = vec![bundle("files", changed)];
    })
    .await;
    assert_eq!(
        versions(&gw).await,
        [("files".into(), 2), ("handoff".into(), 1)]
    );
    gw.stop().await.unwrap();
}

/// Appends a custom section (ignored by every runtime) to a component.
fn wasm_custom_section(wasm: &mut Vec<u8>) {
    let name = b"bundled-test";
    let payload = [name.len() as u8]
        .into_iter()
        .chain(name.iter().copied())
        .collect::<Vec<u8>>();
    wasm.push(0); // custom section id
    wasm.push(payload.len() as u8);
    wasm.extend(payload);
}

#[tokio::test]
async fn a_bundled_service_its_manifest_does_not_grant_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused_start(
        &dir,
        |c| &mut c.bundled_services,
        Bundled {
            source: "files-without-grants".into(),
            manifest: r#"{"id": "files", "name": "Files", "grants": ["kv"]}"#.into(),
            plugin: service_plugin("files"),
        },
    )
    .await;
    let message = error.to_string();
    assert!(
        message.contains("bundled service files-without-grants"),
        "{message}"
    );
    assert!(message.contains("gateway:service/"), "{message}");

    // A manifest that is not one: the same, with the manifest's rule.
    let error = refused_start(
        &dir,
        |c| &mut c.bundled_services,
        Bundled {
            source: "broken".into(),
            manifest: r#"{"id": "files""#.into(),
            plugin: service_plugin("files"),
        },
    )
    .await;
    assert!(
        error.to_string().contains("bundled service broken"),
        "{error}"
    );
}

fn webhook_bundle(name: &str, plugin: Vec<u8>) -> Bundled {
    Bundled {
        source: "webhook-demo".into(),
        manifest: serde_json::json!({
            "id": "webhook", "name": name,
            "allowed_hosts": ["http://127.0.0.1:18090"],
            "config": {"url": "http://127.0.0.1:18090/hook", "secret": "demo-webhook-secret"},
        })
        .to_string(),
        plugin,
    }
}

async fn module(gw: &TestGateway) -> (String, i64) {
    let list = gw.get_json("/v1/modules", None).await;
    let modules = list["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 1, "{list}");
    (
        modules[0]["name"].as_str().unwrap().to_owned(),
        modules[0]["version"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_bundled_connector_is_installed_once_and_an_operators_manifest_survives_restarts() {
    let webhook = plugin("webhook_connector");
    let w = webhook.clone();
    let gw = TestGateway::start_with(move |c| {
        c.bundled_modules = vec![webhook_bundle("Webhook", w)];
    })
    .await;
    assert_eq!(module(&gw).await, ("Webhook".into(), 1));
    // Users see it with what its connector said of itself when installed.
    let list = gw.get_json("/v1/modules", None).await;
    assert_eq!(
        list["modules"][0]["fields"],
        serde_json::json!(["avatar", "signature", "mood"]),
        "{list}"
    );

    // The operator sets the module up for their own network.
    let mine = serde_json::json!({
        "id": "webhook", "name": "Our webhook",
        "allowed_hosts": ["http://127.0.0.1:9"],
        "config": {"url": "http://127.0.0.1:9/hook", "secret": "ours"},
    });
    let r = gw.upload_module(&mine, &webhook).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(module(&gw).await, ("Our webhook".into(), 2));

    // A restart with the same bundled plugin keeps the operator's module.
    let stopped = gw.stop_keeping_data().await;
    let w = webhook.clone();
    let gw = TestGateway::start_again_with(stopped, move |c| {
        c.bundled_modules = vec![webhook_bundle("Webhook", w)];
    })
    .await;
    assert_eq!(module(&gw).await, ("Our webhook".into(), 2));

    // A new build of the plugin: a new version, with the bundled manifest.
    let stopped = gw.stop_keeping_data().await;
    let mut changed = webhook.clone();
    wasm_custom_section(&mut changed);
    let gw = TestGateway::start_again_with(stopped, move |c| {
        c.bundled_modules = vec![webhook_bundle("Webhook", changed)];
    })
    .await;
    assert_eq!(module(&gw).await, ("Webhook".into(), 3));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_bundled_connector_whose_manifest_does_not_fit_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The webhook connector declares a `url` it needs in its config.
    let error = refused_start(
        &dir,
        |c| &mut c.bundled_modules,
        Bundled {
            source: "webhook-without-url".into(),
            manifest: r#"{"id": "webhook", "name": "Webhook", "config": {"secret": "s"}}"#.into(),
            plugin: plugin("webhook_connector"),
        },
    )
    .await;
    let message = error.to_string();
    assert!(
        message.contains("bundled module webhook-without-url"),
        "{message}"
    );
    assert!(message.contains("config.url"), "{message}");

    // A manifest that is not one, and a file that is not a plugin.
    for (manifest, wasm, says) in [
        (
            r#"{"id": "webhook""#,
            plugin("webhook_connector"),
            "invalid manifest",
        ),
        (
            r#"{"id": "webhook", "name": "Webhook"}"#,
            b"not wasm".to_vec(),
            "bundled module",
        ),
    ] {
        let error = refused_start(
            &dir,
            |c| &mut c.bundled_modules,
            Bundled {
                source: "broken".into(),
                manifest: manifest.into(),
                plugin: wasm,
            },
        )
        .await;
        let message = error.to_string();
        assert!(message.contains("bundled module broken"), "{message}");
        assert!(message.contains(says), "{message}");
    }
}

/// Why `run()` refuses to start with `bundle` to install, in the list
/// `bundles` picks (the services or the modules).
async fn refused_start(
    dir: &tempfile::TempDir,
    bundles: fn(&mut gateway::Config) -> &mut Vec<Bundled>,
    bundle: Bundled,
) -> gateway::RunError {
    let mut config = gateway::Config::new(dir.path()).unwrap();
    bundles(&mut config).push(bundle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    gateway::run(config, listener, std::future::pending())
        .await
        .expect_err("the start is refused")
}
