//! Demo IM networks for trying the gateway by hand (README, "Try it: one
//! change, three networks"): a real Synapse (Matrix) and a real ejabberd
//! (XMPP) on loopback, each with the account `alice`, and a tiny webhook
//! receiver that prints every push it gets. It prints the module manifests
//! and bind bodies that fit them, then runs until Ctrl-C (or SIGTERM) and
//! stops the servers cleanly.
//!
//! ```sh
//! ./scripts/test-servers.sh                        # installs Synapse and ejabberd
//! cargo run -p e2e-tests --example demo_servers     # or ./scripts/demo-servers.sh
//! ```
//!
//! Ports: `DEMO_MATRIX_PORT` (18008), `DEMO_XMPP_PORT` (15280) and
//! `DEMO_HOOK_PORT` (18090), all on 127.0.0.1. The servers keep their data in
//! temp dirs that go away when this program stops.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use e2e_tests::ejabberd::Ejabberd;
use e2e_tests::synapse::Synapse;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The one account on each server.
const USER: &str = "alice";
const MATRIX_PASSWORD: &str = "alice-matrix-pw";
const XMPP_PASSWORD: &str = "alice-xmpp-pw";
/// ejabberd's API admin (`admin@localhost`), for the connector's module config.
const XMPP_ADMIN_PASSWORD: &str = "demo-admin-pw";
/// The webhook module's HMAC secret, shared with the receiver.
const HOOK_SECRET: &str = "demo-webhook-secret";
/// The account the webhook module's binding names.
const HOOK_ACCOUNT: &str = "alice";
/// The token the webhook receiver gave `alice`: binding the account proves it.
const HOOK_TOKEN: &str = "alice-demo-token";

type Error = Box<dyn std::error::Error>;

/// A port from `var`, or `default`.
fn port(var: &str, default: u16) -> Result<u16, Error> {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| format!("{var}={text:?} is not a port: {e}").into()),
        Err(_) => Ok(default),
    }
}

/// Fails early with a clear message when `port` is taken (the servers would
/// otherwise only time out).
fn check_free(port: u16, what: &str, var: &str) -> Result<(), Error> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            format!(
                "127.0.0.1:{port} for {what} is not free ({e}); is another demo running? \
                 Pick another port with {var}=PORT"
            )
            .into()
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_servers: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let matrix_port = port("DEMO_MATRIX_PORT", 18008)?;
    let xmpp_port = port("DEMO_XMPP_PORT", 15280)?;
    let hook_port = port("DEMO_HOOK_PORT", 18090)?;
    check_free(matrix_port, "Synapse", "DEMO_MATRIX_PORT")?;
    check_free(xmpp_port, "ejabberd", "DEMO_XMPP_PORT")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
        .await
        .map_err(|e| {
            format!(
                "127.0.0.1:{hook_port} for the webhook receiver is not free ({e}); \
                 pick another port with DEMO_HOOK_PORT=PORT"
            )
        })?;

    eprintln!(
        "starting Synapse on 127.0.0.1:{matrix_port} and ejabberd on 127.0.0.1:{xmpp_port} \
         (about 20 s)..."
    );
    let (synapse, ej) = tokio::join!(
        Synapse::start_on(matrix_port),
        Ejabberd::start_on(xmpp_port, XMPP_ADMIN_PASSWORD)
    );
    let not_installed = "run ./scripts/test-servers.sh first (or ./scripts/demo-servers.sh)";
    let (Some(mut synapse), Some(ej)) = (synapse, ej) else {
        return Err(format!("Synapse or ejabberd is not installed: {not_installed}").into());
    };
    let matrix_user = tokio::task::block_in_place(|| synapse.register(USER, MATRIX_PASSWORD));
    ej.register(USER, XMPP_PASSWORD).await;
    let xmpp_user = format!("{USER}@{}", ej.domain);

    let hook_origin = format!("http://127.0.0.1:{hook_port}");
    let receiver = Arc::new(Receiver {
        secret: HOOK_SECRET.to_owned(),
        pushes: AtomicU64::new(0),
    });
    let app = Router::new().fallback(receive).with_state(receiver);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("demo_servers: webhook receiver stopped: {e}");
        }
    });

    let manifests = [
        format!(
            r#"{{"id":"matrix","name":"Matrix","allowed_hosts":[{origin}],"rate_limit":{{"per_second":5,"burst":10}},"config":{{"homeserver":{base}}},"detect":{detect}}}"#,
            origin = json!(synapse.origin),
            base = json!(synapse.base),
            detect = e2e_tests::detect_hints("matrix"),
        ),
        format!(
            r#"{{"id":"xmpp","name":"XMPP","allowed_hosts":[{origin}],"rate_limit":{{"per_second":5,"burst":10}},"config":{{"api":{api},"admin_user":{admin},"admin_password":{password}}},"detect":{detect}}}"#,
            origin = json!(ej.origin),
            api = json!(ej.api),
            admin = json!(ej.admin_user),
            password = json!(ej.admin_password),
            detect = e2e_tests::detect_hints("xmpp"),
        ),
        format!(
            r#"{{"id":"webhook","name":"Webhook","allowed_hosts":[{origin}],"rate_limit":{{"per_second":5,"burst":10}},"config":{{"url":{url},"secret":{secret}}}}}"#,
            origin = json!(hook_origin),
            url = json!(format!("{hook_origin}/hook")),
            secret = json!(HOOK_SECRET),
        ),
    ];
    let binds = [
        format!(
            r#"{{"module":"matrix","account":{account},"credentials":{{"password":{password}}}}}"#,
            account = json!(matrix_user),
            password = json!(MATRIX_PASSWORD),
        ),
        format!(
            r#"{{"module":"xmpp","account":{account},"credentials":{{"password":{password}}}}}"#,
            account = json!(xmpp_user),
            password = json!(XMPP_PASSWORD),
        ),
        format!(
            r#"{{"module":"webhook","account":{account},"credentials":{{"token":{token}}}}}"#,
            account = json!(HOOK_ACCOUNT),
            token = json!(HOOK_TOKEN),
        ),
    ];
    for text in manifests.iter().chain(&binds) {
        serde_json::from_str::<Value>(text).map_err(|e| format!("bad JSON {text}: {e}"))?;
    }

    println!("Demo networks on loopback (Ctrl-C stops them):");
    let rows = [
        (
            "Matrix",
            "Synapse",
            synapse.base.clone(),
            format!("account {matrix_user}, password {MATRIX_PASSWORD}"),
        ),
        (
            "XMPP",
            "ejabberd",
            ej.api.clone(),
            format!("account {xmpp_user}, password {XMPP_PASSWORD}"),
        ),
        (
            "webhook",
            "receiver",
            format!("{hook_origin}/hook"),
            format!("account {HOOK_ACCOUNT}, token {HOOK_TOKEN}; prints every push below"),
        ),
    ];
    for (network, server, url, what) in rows {
        println!("  {network:<8} {server:<9} {url:<29} {what}");
    }
    println!();
    println!("# Origins, for the shell you run curl in:");
    println!(
        "export MATRIX={} XMPP={} HOOK={hook_origin}",
        synapse.base, ej.origin
    );
    println!();
    println!("# Manifests for POST /v1/admin/modules (form part `manifest`), one a line:");
    for manifest in &manifests {
        println!("{manifest}");
    }
    println!();
    println!("# Bodies for POST /v1/bindings, one a line:");
    for bind in &binds {
        println!("{bind}");
    }
    println!();
    println!("# Webhook pushes received:");

    wait_for_stop().await?;
    println!("stopping Synapse and ejabberd...");
    tokio::task::block_in_place(|| {
        ej.stop();
        synapse.stop();
    });
    println!("stopped");
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// The webhook network: counts pushes and checks their signature.
struct Receiver {
    secret: String,
    pushes: AtomicU64,
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
fn signed(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(Ok(tag)) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .map(hex::decode)
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// One request of the webhook connector. A `verify` event is confirmed by
/// echoing its challenge when it names `HOOK_ACCOUNT` with `HOOK_TOKEN`
/// (403 otherwise). A push, `{"account", "settings"}`, prints one line (an
/// avatar's base64 data shortened to its length) and answers `200`. Either
/// answers `401` when `X-Signature-256` does not match the module's secret.
async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = headers.get("x-signature-256").and_then(|v| v.to_str().ok());
    if let Ok(event) = serde_json::from_slice::<Value>(&body) {
        if event["event"] == "verify" && signed(&receiver.secret, &body, header) {
            let known =
                event["account"] == HOOK_ACCOUNT && event["credentials"]["token"] == HOOK_TOKEN;
            println!(
                "webhook verify: account {} {}",
                event["account"].as_str().unwrap_or("?"),
                if known { "confirmed" } else { "refused (403)" }
            );
            return if known {
                axum::Json(json!({"challenge": event["challenge"]})).into_response()
            } else {
                StatusCode::FORBIDDEN.into_response()
            };
        }
    }
    push(&receiver, &body, header).into_response()
}

fn push(receiver: &Receiver, body: &[u8], header: Option<&str>) -> StatusCode {
    let n = receiver.pushes.fetch_add(1, Ordering::Relaxed) + 1;
    if !signed(&receiver.secret, body, header) {
        println!("webhook push {n}: rejected (401), X-Signature-256 does not match the secret");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(mut push) = serde_json::from_slice::<Value>(body) else {
        println!("webhook push {n}: rejected (400), the body is not JSON");
        return StatusCode::BAD_REQUEST;
    };
    if let Some(data) = push.pointer_mut("/settings/avatar/data") {
        let len = data.as_str().map_or(0, str::len);
        *data = json!(format!("<{len} chars of base64>"));
    }
    println!(
        "webhook push {n}: account {} settings {}",
        push["account"].as_str().unwrap_or("?"),
        push["settings"]
    );
    StatusCode::OK
}
