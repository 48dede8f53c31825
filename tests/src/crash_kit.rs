//! Shared pieces of the crash tests (`tests/crash.rs`) and the standing
//! reliability suite (`tests/reliability.rs`): gateway processes with
//! crash-friendly flags, two webhook modules (`source` reports, `target`
//! receives), users bound to both, reports, and waiting for deliveries.

use crate::mock::{eventually, MockNetwork};
use crate::process::GatewayProcess;
use crate::webhook;
use reqwest::{multipart, Client, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The admin token of every crash-test gateway.
pub const ADMIN: &str = "crash-test-admin-token-0123456789abcdef";
/// How long a change may take to be delivered (generous: debug builds on a
/// busy machine, leases of killed processes running out first).
pub const WAIT: Duration = Duration::from_secs(90);
/// Deliveries one process pushes at once (`--delivery-concurrency` of
/// [`FLAGS`]): at most this many pushes are in flight when it is killed.
pub const CONCURRENCY: usize = 4;

/// Flags for a fast, crash-friendly gateway: short leases (just over the
/// 5 s plugin call deadline), quick retries, few deliveries at once (so
/// some are still queued when it dies).
pub const FLAGS: &[&str] = &[
    "--delivery-lease-secs",
    "6",
    "--delivery-backoff-ms",
    "200",
    "--delivery-concurrency",
    "4",
    "--anon-rate",
    "1000",
    "--anon-burst",
    "1000",
];

/// The admin token and `master_key` as the gateway's environment.
pub fn envs(master_key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GATEWAY_ADMIN_TOKEN", ADMIN.to_owned()),
        ("GATEWAY_MASTER_KEY", master_key.to_owned()),
    ]
}

/// A fresh master key, hex.
pub fn hex_key() -> String {
    gateway::secrets::MasterKey::generate().to_hex()
}

/// Borrowed views of owned arguments.
pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Starts a gateway process with `args` and `envs` (see [`envs`]).
pub async fn start(args: &[&str], envs: &[(&'static str, String)]) -> GatewayProcess {
    start_listening("127.0.0.1:0", args, envs).await
}

/// [`start`] on `listen` (`IP:PORT`).
pub async fn start_listening(
    listen: &str,
    args: &[&str],
    envs: &[(&'static str, String)],
) -> GatewayProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    GatewayProcess::start_listening(listen, args, &envs).await
}

/// Uploads the webhook connector with `manifest`, as the admin.
pub async fn upload(client: &Client, gw: &GatewayProcess, manifest: &Value) {
    let form = multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            multipart::Part::bytes(webhook()).file_name("p.wasm"),
        );
    let r = client
        .post(gw.url("/v1/admin/modules"))
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Uploads a service plugin with `manifest`, as the admin.
pub async fn upload_service(client: &Client, gw: &GatewayProcess, manifest: &Value, plugin: &[u8]) {
    let form = multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "plugin",
            multipart::Part::bytes(plugin.to_vec()).file_name("service.wasm"),
        );
    let r = client
        .post(gw.url("/v1/admin/services"))
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

/// A new user `name`, logged in: the session token.
pub async fn user(client: &Client, gw: &GatewayProcess, name: &str) -> String {
    let creds = json!({"username": name, "password": "correct horse battery"});
    let r = client
        .post(gw.url("/v1/users"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .post(gw.url("/v1/sessions"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `n` users `user{i}`, each bound to `source` and `target` as
/// `user{i}@source` and `user{i}@target`; returns their tokens.
pub async fn users(client: &Client, gw: &GatewayProcess, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        let token = user(client, gw, &format!("user{i}")).await;
        for module in ["source", "target"] {
            let r = client
                .post(gw.url("/v1/bindings"))
                .bearer_auth(&token)
                .json(
                    &json!({"module": module, "account": format!("user{i}@{module}"),
                              "credentials": {"token": "t"}}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        tokens.push(token);
    }
    tokens
}

/// One change per user with signature `{tag}-{i}`; returns the change ids.
pub async fn report_all(
    client: &Client,
    gw: &GatewayProcess,
    tokens: &[String],
    tag: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let r = client
            .post(gw.url("/v1/changes"))
            .bearer_auth(token)
            .json(&json!({"module": "source", "settings": {"signature": format!("{tag}-{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

/// Waits until change `id` is `delivered` (every target delivered, or
/// superseded by a newer change), asking the gateway at `base`; returns
/// the change as `GET /v1/changes/{id}` shows it. Panics at once on a
/// `failed` or `partial` change.
pub async fn delivered(client: &Client, base: &str, token: &str, id: &str) -> Value {
    eventually(&format!("change {id} delivered"), WAIT, || async {
        let change: Value = client
            .get(format!("{base}/v1/changes/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert!(
            change["status"] != "failed" && change["status"] != "partial",
            "{change}"
        );
        (change["status"] == "delivered").then_some(change)
    })
    .await
}

/// Waits until every change is delivered, asking `gw`.
pub async fn all_delivered(
    client: &Client,
    gw: &GatewayProcess,
    tokens: &[String],
    ids: &[String],
) {
    for (token, id) in tokens.iter().zip(ids) {
        delivered(client, &gw.base, token, id).await;
    }
}

/// How often each signature reached the network (pushes only, whatever
/// the answer).
pub fn pushes(mock: &MockNetwork) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for hit in mock.hits() {
        if let Some(signature) = hit.body["settings"]["signature"].as_str() {
            *count.entry(signature.to_owned()).or_default() += 1;
        }
    }
    count
}
