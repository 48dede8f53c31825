//! The webhook reference connector against a loopback receiver: the POST
//! carries the settings and a valid HMAC-SHA256 signature; statuses map to
//! typed errors the delivery layer can act on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{plugin, TINY_PNG};
use gateway::host::{CallError, Field, Grants, HostLimits, Image, PluginHost, Settings};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One captured request: head and body.
type Captured = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A receiver answering every request with `status` (and `extra` headers).
async fn receiver(status: u16, extra: &'static str) -> (String, Captured) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let captured: Captured = Arc::default();
    let sink = captured.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if data.len() < end + 4 + len {
                        continue;
                    }
                    sink.lock()
                        .unwrap()
                        .push((head, data[end + 4..end + 4 + len].to_vec()));
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n"
                    );
                    let _ = sock.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    (origin, captured)
}

async fn push(
    origin: &str,
    secret: &str,
    settings: Settings,
) -> Result<gateway::host::PushOutcome, CallError> {
    let host = PluginHost::new(HostLimits::default()).unwrap();
    let grants = Grants {
        module_id: "webhook".into(),
        allowed_origins: vec![origin.to_owned()],
        config_json: json!({"url": format!("{origin}/hook"), "secret": secret}).to_string(),
    };
    tokio::task::spawn_blocking(move || {
        let loaded = host
            .load(&plugin("webhook_connector"), grants.clone())
            .unwrap();
        host.push(
            &loaded,
            Arc::new(grants),
            None,
            "alice@bridge",
            "{}",
            &settings,
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_posts_signed_settings() {
    let (origin, captured) = receiver(204, "").await;
    let settings = Settings {
        avatar: Some(Image {
            content_type: "image/png".into(),
            data: TINY_PNG.to_vec(),
        }),
        signature: Some("Grüße ✓ 🎉".into()),
        mood: Some("happy".into()),
    };
    let outcome = push(&origin, "shared-secret", settings)
        .await
        .expect("push");
    assert_eq!(
        outcome.applied,
        [Field::Avatar, Field::Signature, Field::Mood]
    );

    let requests = captured.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (head, body) = &requests[0];
    assert!(head.starts_with("post /hook "), "{head}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"shared-secret").unwrap();
    mac.update(body);
    let expected = format!(
        "x-signature-256: sha256={}",
        hex::encode(mac.finalize().into_bytes())
    );
    assert!(
        head.contains(&expected),
        "signature header missing or wrong in {head}"
    );
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent["account"], "alice@bridge");
    assert_eq!(sent["settings"]["signature"], "Grüße ✓ 🎉");
    assert_eq!(sent["settings"]["mood"], "happy");
    assert_eq!(sent["settings"]["avatar"]["content_type"], "image/png");
    use base64::Engine as _;
    let avatar = base64::engine::general_purpose::STANDARD
        .decode(sent["settings"]["avatar"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(avatar, TINY_PNG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_statuses_become_typed_errors() {
    let only_signature = || Settings {
        signature: Some("x".into()),
        ..Settings::default()
    };
    let (origin, _) = receiver(429, "retry-after: 7\r\n").await;
    assert_eq!(
        push(&origin, "s", only_signature()).await,
        Err(CallError::RateLimited(7))
    );
    let (origin, _) = receiver(503, "").await;
    assert!(matches!(
        push(&origin, "s", only_signature()).await,
        Err(CallError::Transient(_))
    ));
    let (origin, _) = receiver(401, "").await;
    assert!(matches!(
        push(&origin, "s", only_signature()).await,
        Err(CallError::AuthFailed(_))
    ));
    let (origin, _) = receiver(422, "").await;
    assert!(matches!(
        push(&origin, "s", only_signature()).await,
        Err(CallError::Rejected(_))
    ));
}
