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

/// The connector's credential check against `origin`.
async fn verify(origin: &str, account: &str, credentials: Value) -> Result<(), CallError> {
    let host = PluginHost::new(HostLimits::default()).unwrap();
    let grants = Grants {
        module_id: "webhook".into(),
        allowed_origins: vec![origin.to_owned()],
        config_json: json!({"url": format!("{origin}/hook"), "secret": "s"}).to_string(),
    };
    let account = account.to_owned();
    tokio::task::spawn_blocking(move || {
        let loaded = host
            .load(&plugin("webhook_connector"), grants.clone())
            .unwrap();
        host.verify(
            &loaded,
            Arc::new(grants),
            None,
            &account,
            &credentials.to_string(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_confirms_nothing_binds_nobody() {
    // A receiver that answers 2xx to anything (it never heard of `verify`):
    // it does not confirm the account, so nobody can bind another's name.
    let (origin, captured) = receiver(204, "").await;
    let refused = verify(&origin, "alice", json!({"token": "guess"})).await;
    assert!(
        matches!(&refused, Err(CallError::AuthFailed(why)) if why.contains("challenge")),
        "{refused:?}"
    );
    // What the receiver got: a signed verify event naming the account,
    // the credentials and a challenge to echo.
    let requests = captured.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (head, body) = &requests[0];
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent["event"], "verify");
    assert_eq!(sent["account"], "alice");
    assert_eq!(sent["credentials"], json!({"token": "guess"}));
    assert_eq!(sent["challenge"].as_str().map(str::len), Some(32));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s").unwrap();
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert!(head.contains(&expected), "unsigned verify: {head}");

    let (origin, _) = receiver(403, "").await;
    assert!(matches!(
        verify(&origin, "alice", json!({})).await,
        Err(CallError::AuthFailed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_confirms_the_accounts_it_knows() {
    let mock = e2e_tests::mock::MockNetwork::start().await;
    mock.accounts([("alice".to_owned(), json!({"token": "alice-token"}))]);
    let origin = mock.origin.clone();
    assert_eq!(
        verify(&origin, "alice", json!({"token": "alice-token"})).await,
        Ok(())
    );
    assert!(matches!(
        verify(&origin, "alice", json!({"token": "mallory-token"})).await,
        Err(CallError::AuthFailed(_))
    ));
    assert_eq!(
        mock.verifications(),
        [("alice".to_owned(), true), ("alice".to_owned(), false)]
    );
    assert!(mock.hits().is_empty(), "a verification is not a push");
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
    assert_eq!(sent["event"], "push");
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

/// A granted host *name* whose DNS answers are private is refused (DNS
/// rebinding into the gateway's network), unless the operator allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_resolving_to_a_private_address_is_refused_unless_allowed() {
    let (origin, captured) = receiver(204, "").await;
    let named = origin.replace("127.0.0.1", "localhost");
    let push_with = |allow_private_dns: bool| {
        let named = named.clone();
        async move {
            let host = PluginHost::new(HostLimits {
                allow_private_dns,
                ..HostLimits::default()
            })
            .unwrap();
            let grants = Grants {
                module_id: "webhook".into(),
                allowed_origins: vec![named.clone()],
                config_json: json!({"url": format!("{named}/hook"), "secret": "s"}).to_string(),
            };
            tokio::task::spawn_blocking(move || {
                let loaded = host
                    .load(&plugin("webhook_connector"), grants.clone())
                    .unwrap();
                let settings = Settings {
                    signature: Some("x".into()),
                    ..Settings::default()
                };
                host.push(&loaded, Arc::new(grants), None, "alice", "{}", &settings)
            })
            .await
            .unwrap()
        }
    };
    let refused = push_with(false).await;
    assert!(
        matches!(&refused, Err(CallError::Transient(why)) if why.contains("no public address")),
        "{refused:?}"
    );
    assert!(captured.lock().unwrap().is_empty(), "nothing was sent");
    assert!(push_with(true).await.is_ok());
    assert_eq!(captured.lock().unwrap().len(), 1);
}
