//! Isolation: a hostile plugin (endless loop, memory bomb, panic, sleep in
//! the host, call to a host it was not granted, a 100 MiB answer from a
//! granted host) ends in a typed error within its limits, and the gateway
//! keeps serving meanwhile. Errors a plugin sees carry no secret of the URL.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, hostile, TestGateway};
use gateway::host::{CallError, Grants, HostLimits, PluginHost};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limits() -> HostLimits {
    HostLimits {
        call_timeout: Duration::from_secs(1),
        memory_bytes: 32 << 20,
        max_response_bytes: 1 << 20,
        max_instances: 16,
        allow_private_dns: false,
    }
}

/// Runs `verify` of the hostile plugin with `login` on a blocking thread.
async fn verify(host: &PluginHost, origins: Vec<String>, login: &str) -> Result<(), CallError> {
    let host = host.clone();
    let login = login.to_owned();
    tokio::task::spawn_blocking(move || {
        let grants = Grants {
            module_id: "hostile".into(),
            allowed_origins: origins.clone(),
            config_json: "{}".into(),
        };
        let plugin = host
            .load(&hostile(), grants.clone())
            .expect("hostile plugin loads");
        host.verify(&plugin, Arc::new(grants), None, &login, "{}")
    })
    .await
    .unwrap()
}

/// A loopback server answering every request with `body_len` bytes; the
/// counter says how many body bytes it managed to send.
async fn serve_counted(body_len: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    counter.fetch_add(n, Ordering::SeqCst);
                    left -= n;
                }
            });
        }
    });
    (format!("http://{addr}"), sent)
}

/// A loopback server answering every request with `body_len` bytes.
async fn serve_bytes(body_len: usize) -> String {
    serve_counted(body_len).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    let host = PluginHost::new(limits()).unwrap();
    // Stopped by the deadline (the typed error says which), not by the
    // loop's own end: it has none. How fast: `cargo bench --bench host_call`.
    assert_eq!(
        verify(&host, vec![], "loop").await,
        Err(CallError::Timeout(1000))
    );
    // The same plugin still works for the next call: nothing leaked.
    assert_eq!(verify(&host, vec![], "fine").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_sleep_in_the_host_is_stopped_at_the_deadline() {
    let host = PluginHost::new(limits()).unwrap();
    // The plugin sleeps 30 s through WASI, inside host code where the epoch
    // deadline does not reach. Left alone, it would come back only after
    // its sleep (and trap then, the deadline long gone). The yardstick is a
    // spinning call with a 10 s deadline, run alongside: the sleeping call
    // must be stopped (at its 1 s deadline) before the spinning one is.
    let slow_host = PluginHost::new(HostLimits {
        call_timeout: Duration::from_secs(10),
        ..limits()
    })
    .unwrap();
    let spin = tokio::spawn(async move { verify(&slow_host, vec![], "loop").await });
    assert_eq!(
        verify(&host, vec![], "sleep").await,
        Err(CallError::Timeout(1000))
    );
    assert!(
        !spin.is_finished(),
        "the sleeping call outlived a call with a ten times longer deadline"
    );
    assert_eq!(spin.await.unwrap(), Err(CallError::Timeout(10_000)));
    // The slot and the thread are free again: the next call works.
    assert_eq!(verify(&host, vec![], "fine").await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_do_not_carry_the_url_path() {
    let host = PluginHost::new(limits()).unwrap();
    // A granted origin where nothing listens: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let with_user = origin.replace("http://", "http://hook:SECRET-PASS-789@");
    let login = format!("fetch:{with_user}/hook/SECRET-TOKEN-123?key=SECRET-QUERY-456");
    match verify(&host, vec![origin.clone()], &login).await {
        Err(CallError::Rejected(m)) => {
            // What failed and where stays readable: the origin and the cause.
            assert!(m.contains("Failed") && m.contains(&origin), "{m}");
            for secret in ["SECRET-TOKEN-123", "SECRET-QUERY-456", "SECRET-PASS-789"] {
                assert!(!m.contains(secret), "{m}");
            }
        }
        other => panic!("expected a failed request, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_cap() {
    let host = PluginHost::new(limits()).unwrap();
    let result = verify(&host, vec![], "bomb").await;
    assert_eq!(result, Err(CallError::MemoryLimit(32 << 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_typed_trap() {
    let host = PluginHost::new(limits()).unwrap();
    match verify(&host, vec![], "panic").await {
        // The panic message first, with where it happened.
        Err(CallError::Trap(message)) => assert!(
            message.starts_with("panicked at hostile/src/lib.rs:")
                && message.contains("hostile plugin panics on purpose (at verify"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_hosts_not_granted_are_denied_and_granted_ones_work() {
    let host = PluginHost::new(limits()).unwrap();
    let small = serve_bytes(5).await;
    let granted = vec![small.clone()];
    let denied = verify(&host, granted.clone(), "fetch:http://127.0.0.1:9/secret").await;
    // Whatever the connector made of the denial, the call failed on the
    // operator's grant: said as such, naming the origin only.
    match denied {
        Err(CallError::Misconfigured(m)) => assert_eq!(
            m, "http://127.0.0.1:9 is not granted to module hostile",
            "{m}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    let ok = verify(&host, granted, &format!("fetch:{small}/x")).await;
    assert_eq!(
        ok,
        Err(CallError::Rejected("status 200 with 5 bytes".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_answer_from_a_granted_host_is_cut_off() {
    let host = PluginHost::new(limits()).unwrap();
    let (big, sent) = serve_counted(100 << 20).await;
    let result = verify(&host, vec![big.clone()], &format!("fetch:{big}/huge")).await;
    match result {
        Err(CallError::Rejected(m)) => assert!(m.contains("TooLarge"), "{m}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Cut off at the cap: the server could not send more than the cap plus
    // what the sockets' buffers hold before the host stopped reading.
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 32 << 20, "the host read on: {sent} bytes sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_serving_while_a_plugin_spins() {
    // A deadline long enough that the other requests below are answered
    // well inside it, however slow the machine.
    let gw = TestGateway::start_with(|c| {
        c.host_limits = HostLimits {
            call_timeout: Duration::from_secs(10),
            ..limits()
        };
        // A lease must outlast the call deadline.
        c.delivery.lease = Duration::from_secs(30);
    })
    .await;
    let manifest = json!({"id": "hostile", "name": "Hostile"});
    assert_eq!(
        gw.upload_module(&manifest, &hostile()).await.status(),
        StatusCode::CREATED
    );
    let token = gw.user_token("victim").await;
    let spin = {
        let client = gw.client.clone();
        let url = gw.url("/v1/bindings");
        let token = token.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"module": "hostile", "account": "loop", "credentials": {}}))
                .send()
                .await
                .unwrap()
        })
    };
    // While the plugin spins, other requests are answered: all of them
    // before the spinning call comes back at its deadline. (The short pause
    // lets the bind reach the plugin first.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(gw.get("/v1/modules", None).await.status(), StatusCode::OK);
    }
    assert!(
        !spin.is_finished(),
        "the spinning call ended before the other requests were answered"
    );
    let msg = expect_error(
        spin.await.unwrap(),
        StatusCode::BAD_GATEWAY,
        "module_unavailable",
    )
    .await;
    assert!(msg.contains("deadline"), "{msg}");
    let msg = expect_error(
        gw.post_json(
            "/v1/bindings",
            Some(&token),
            &json!({"module": "hostile", "account": "bomb", "credentials": {}}),
        )
        .await,
        StatusCode::BAD_GATEWAY,
        "module_unavailable",
    )
    .await;
    assert!(msg.contains("memory"), "{msg}");
    // A well-behaved account of the same module binds fine afterwards.
    assert_eq!(
        gw.post_json(
            "/v1/bindings",
            Some(&token),
            &json!({"module": "hostile", "account": "fine", "credentials": {}}),
        )
        .await
        .status(),
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_beyond_the_module_rate_limit_are_refused() {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    let host = PluginHost::new(limits()).unwrap();
    let server = serve_bytes(2).await;
    let limiter = Arc::new(gateway::rate_limit::OutboundLimiter::Local(
        RateLimiter::direct(
            // A wait longer than the call's deadline: refused, not waited out.
            Quota::per_minute(NonZeroU32::new(1).unwrap()).allow_burst(NonZeroU32::new(2).unwrap()),
        ),
    ));
    let login = format!("fetch:{server}/x");
    let answers = tokio::task::spawn_blocking(move || {
        let grants = Grants {
            module_id: "hostile".into(),
            allowed_origins: vec![server],
            config_json: "{}".into(),
        };
        let plugin = host.load(&hostile(), grants.clone()).unwrap();
        let grants = Arc::new(grants);
        (0..3)
            .map(|_| host.verify(&plugin, grants.clone(), Some(limiter.clone()), &login, "{}"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let served = Err(CallError::Rejected("status 200 with 2 bytes".into()));
    assert_eq!(answers[0], served);
    assert_eq!(answers[1], served);
    match &answers[2] {
        Err(CallError::Rejected(m)) => assert!(
            m.contains("RateLimited(60)") || m.contains("RateLimited(59)"),
            "{m}"
        ),
        other => panic!("expected the third call to be rate limited, got {other:?}"),
    }
}

/// A connector that panics in `push`: the delivery says why (the panic
/// message first, where it happened), becomes a dead letter at once instead
/// of being retried, and an admin sees it among the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_push_is_a_dead_letter_with_its_message() {
    let (gw, token) = source_and_hostile().await;
    let id = gw
        .report(&token, "source", json!({"signature": "panic"}))
        .await;
    let change = gw.settled(&token, &id).await;
    let target = e2e_tests::target(&change, "hostile");
    assert_eq!(target["status"], "failed", "{change}");
    assert_eq!(target["dead_letter"], true, "{change}");
    assert_eq!(target["attempts"], 1, "not retried: {change}");
    let error = target["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("the connector crashed: panicked at hostile/src/lib.rs:")
            && error.contains("hostile plugin panics in push (at push"),
        "{error}"
    );
    let dead: Value = gw
        .get_json("/v1/admin/deliveries/dead", Some(&gw.admin_token))
        .await;
    assert!(
        dead.to_string().contains("hostile plugin panics in push"),
        "{dead}"
    );
}

/// A network with a closed vocabulary of moods gets only its own words,
/// in its own spelling; another mood is not sent, and the target says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moods_outside_the_networks_vocabulary_are_not_sent_and_say_why() {
    let (gw, token) = source_and_hostile().await;
    let modules: Value = gw.get_json("/v1/modules", None).await;
    assert!(
        modules
            .to_string()
            .contains("\"moods\":[\"Happy\",\"Away\"]"),
        "{modules}"
    );
    let id = gw
        .report(
            &token,
            "source",
            json!({"signature": "hi", "mood": "grumpy"}),
        )
        .await;
    let change = gw.settled(&token, &id).await;
    let target = e2e_tests::target(&change, "hostile");
    assert_eq!(target["status"], "delivered", "{change}");
    assert_eq!(target["applied_fields"], json!(["signature"]), "{change}");
    assert_eq!(
        target["last_error"],
        "mood \"grumpy\" not applied: this network knows only Happy, Away"
    );
    // A word of the vocabulary, in another case: sent in the network's spelling.
    let id = gw.report(&token, "source", json!({"mood": "happy"})).await;
    let change = gw.settled(&token, &id).await;
    let target = e2e_tests::target(&change, "hostile");
    assert_eq!(target["applied_fields"], json!(["mood"]), "{change}");
    assert_eq!(target["last_error"], Value::Null);
    let bindings: Value = gw.get_json("/v1/bindings", Some(&token)).await;
    let hostile = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["module"] == "hostile")
        .unwrap();
    assert_eq!(hostile["last_applied"]["mood"], "Happy");
}

/// A gateway with modules `source` (webhook) and `hostile`, and user alice
/// bound to both: her token.
async fn source_and_hostile() -> (TestGateway, String) {
    let gw = TestGateway::start().await;
    for (manifest, plugin) in [
        (e2e_tests::manifest("source"), e2e_tests::webhook()),
        (json!({"id": "hostile", "name": "Hostile"}), hostile()),
    ] {
        assert_eq!(
            gw.upload_module(&manifest, &plugin).await.status(),
            StatusCode::CREATED
        );
    }
    let token = gw.user_token("alice").await;
    for module in ["source", "hostile"] {
        let bind = json!({"module": module, "account": "fine", "credentials": {}});
        let r = gw.post_json("/v1/bindings", Some(&token), &bind).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    (gw, token)
}

/// With every plugin instance in use, a further call is told the gateway is
/// busy (a transient error a delivery retries), not that its plugin
/// crashed (which would dead-letter the delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_finding_every_instance_in_use_is_busy_not_crashed() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let host = PluginHost::new(HostLimits {
        max_instances: 1,
        ..limits()
    })
    .unwrap()
    .with_in_process_http(Arc::new(move |_: &gateway::host::HttpRequest| {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv();
        gateway::host::HttpResponse {
            status: 200,
            headers: vec![],
            body: b"ok".to_vec(),
        }
    }));
    let origin = "http://127.0.0.1:9".to_owned();
    let grants = Grants {
        module_id: "hostile".into(),
        allowed_origins: vec![origin.clone()],
        config_json: "{}".into(),
    };
    let plugin = {
        let (host, grants) = (host.clone(), grants.clone());
        tokio::task::spawn_blocking(move || host.load(&hostile(), grants).unwrap())
            .await
            .unwrap()
    };
    let grants = Arc::new(grants);
    // The one instance parks inside its HTTP import.
    let holder = {
        let (host, plugin, grants) = (host.clone(), plugin.clone(), grants.clone());
        let login = format!("fetch:{origin}/x");
        tokio::task::spawn_blocking(move || host.verify(&plugin, grants, None, &login, "{}"))
    };
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    let second = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || host.verify(&plugin, grants, None, "alice", "{}"))
            .await
            .unwrap()
    };
    match second {
        Err(CallError::Transient(why)) => assert!(why.contains("busy"), "{why}"),
        other => panic!("expected busy, got {other:?}"),
    }
    release_tx.send(()).unwrap();
    holder.await.unwrap().ok();
}
