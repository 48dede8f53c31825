//! Isolation of service plugins through the real gateway: a hostile service
//! (`tests/fixtures/hostile-service`: endless loop, memory bomb, panic, an
//! outbound request to a server that never answers) gets a clear error for
//! each route, the gateway and the service's other routes keep working
//! meanwhile and afterwards, and the `http` capability is granted like the
//! others (refused at upload without the grant) and reaches only the origins
//! of the manifest's `allowed_hosts`.
//!
//! No timing is asserted: the bounds below only guard against a hang.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, hostile_service, mock, TestGateway};
use gateway::host::service::{
    BlobInfo, DeviceInfo, JobError, JobInfo, KvEntry, KvFailure, KvWrite, NewJob, ServiceBackend,
    ServiceRequest, ServiceScope,
};
use gateway::host::{CallError, Grants, HostLimits, PluginHost};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Longer than anything below may take, deadlines included: only a hang
/// reaches it.
const HANG: Duration = Duration::from_secs(120);

fn limits(call_timeout: Duration) -> HostLimits {
    HostLimits {
        call_timeout,
        memory_bytes: 32 << 20,
        max_response_bytes: 1 << 20,
        max_instances: 16,
        allow_private_dns: false,
    }
}

/// A gateway whose plugin calls end at `call_timeout`, with the hostile
/// service installed (granted `http` and `kv`, allowed to call
/// `allowed_hosts`), and a user's token.
async fn gateway(call_timeout: Duration, allowed_hosts: &[&str]) -> (TestGateway, String) {
    let gw = TestGateway::start_with(|c| {
        c.host_limits = limits(call_timeout);
        // A delivery lease must outlast the call deadline.
        c.delivery.lease = c.delivery.lease.max(call_timeout * 2);
    })
    .await;
    let r = gw
        .upload_service(
            &manifest(&["http", "kv"], allowed_hosts),
            &hostile_service(),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let token = gw.user_token("victim").await;
    (gw, token)
}

fn manifest(grants: &[&str], allowed_hosts: &[&str]) -> Value {
    json!({"id": "hostile", "name": "Hostile service",
           "grants": grants, "allowed_hosts": allowed_hosts})
}

/// `method /v1/services/hostile{path}` with `body`, guarded against a hang.
async fn call(
    gw: &TestGateway,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> reqwest::Response {
    let request = gw
        .client
        .request(
            method.parse().unwrap(),
            gw.url(&format!("/v1/services/hostile{path}")),
        )
        .bearer_auth(token)
        .body(body.to_owned())
        .send();
    tokio::time::timeout(HANG, request)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung"))
        .unwrap()
}

/// `GET /ok` answers its JSON.
async fn assert_ok(gw: &TestGateway, token: &str) {
    let r = call(gw, token, "GET", "/ok", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ok": true}));
}

/// What the gateway answers for a service call that failed: `504
/// service_timeout` past the deadline, `502 service_failed` naming the
/// memory cap or a crash (the panic's own words stay in the gateway's log).
async fn assert_service_failed(response: reqwest::Response, why: &str) {
    let (status, code) = if why == "deadline" {
        (StatusCode::GATEWAY_TIMEOUT, "service_timeout")
    } else {
        (StatusCode::BAD_GATEWAY, "service_failed")
    };
    let message = expect_error(response, status, code).await;
    assert!(message.contains(why), "{message}");
    assert!(!message.contains("on purpose"), "no plugin text: {message}");
}

/// A loopback server that accepts connections and never answers: how many
/// it accepted, and how many of those the client closed.
async fn silent_server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                // Read the request and whatever follows, answer nothing,
                // until the client lets go.
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (origin, accepted, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_import_needs_the_http_grant() {
    let gw = TestGateway::start().await;
    // The fixture imports http and kv: without either grant it does not link,
    // and the refusal names the import.
    let message = expect_error(
        gw.upload_service(&manifest(&["kv"], &[]), &hostile_service())
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(
        message.contains("gateway:service/http") && message.contains(r#"add "http" to "grants""#),
        "{message}"
    );
    let message = expect_error(
        gw.upload_service(&manifest(&["http", "log"], &[]), &hostile_service())
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert!(message.contains("gateway:service/kv"), "{message}");
    // Nothing was installed by the refusals.
    let services: Value = gw.get_json("/v1/services", None).await;
    assert_eq!(services["services"], json!([]), "{services}");
    // Granted both, it installs and answers.
    let r = gw
        .upload_service(&manifest(&["http", "kv"], &[]), &hostile_service())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let token = gw.user_token("alice").await;
    assert_ok(&gw, &token).await;
    let r = call(&gw, &token, "POST", "/kv", "v").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"versions": [1]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_serving_while_a_service_spins() {
    // A deadline long enough that the requests below are answered well
    // inside it, however slow the machine.
    let (gw, token) = gateway(Duration::from_secs(10), &[]).await;
    let spin = {
        let client = gw.client.clone();
        let url = gw.url("/v1/services/hostile/loop");
        let token = token.clone();
        tokio::spawn(async move {
            let request = client.post(url).bearer_auth(token).send();
            tokio::time::timeout(HANG, request).await
        })
    };
    // While the service spins, other requests are answered, its own routes
    // included, several at once: all of them before the spinning call comes
    // back at its deadline. (The short pause lets /loop reach the plugin.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_once = (0..4).map(|_| call(&gw, &token, "GET", "/ok", ""));
    for r in futures::future::join_all(at_once).await {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"ok": true}));
    }
    assert_eq!(gw.get("/v1/services", None).await.status(), StatusCode::OK);
    assert!(
        !spin.is_finished(),
        "the spinning call ended before the other requests were answered"
    );
    let looped = spin.await.unwrap().expect("/loop hung");
    assert_service_failed(looped.unwrap(), "deadline").await;
    assert_ok(&gw, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_route_fails_clearly_and_the_service_still_answers() {
    let (silent, accepted, closed) = silent_server().await;
    let (gw, token) = gateway(Duration::from_secs(1), &[&silent]).await;
    assert_ok(&gw, &token).await;
    for (route, why) in [
        ("/loop", "deadline"),
        ("/bomb", "memory"),
        ("/panic", "crashed"),
    ] {
        assert_service_failed(call(&gw, &token, "POST", route, "").await, why).await;
        // Nothing leaked into the next call.
        assert_ok(&gw, &token).await;
    }
    // A granted server that never answers: the call ends at its deadline
    // like the endless loop, not when the server gives up (it never does).
    let url = format!("{silent}/never");
    assert_service_failed(call(&gw, &token, "POST", "/block", &url).await, "deadline").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The gateway let go of the connection: nothing waits on it any more.
    mock::eventually("the blocked connection to close", HANG, || async {
        (closed.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_ok(&gw, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_the_allowed_hosts() {
    let (silent, accepted, _) = silent_server().await;
    let refusing = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", closed.local_addr().unwrap())
    };
    // A long deadline (within the delivery lease, which `run` requires): a
    // refusal that waited for it would end as the deadline's failure
    // instead of the service's own answer.
    let (gw, token) = gateway(Duration::from_secs(30), &[&refusing]).await;
    let r = call(&gw, &token, "POST", "/block", &format!("{silent}/never")).await;
    // The service got the denial (its own answer passes it on), naming the
    // origin only; no connection was made.
    let message = expect_error(r, StatusCode::BAD_GATEWAY, "upstream_denied").await;
    assert!(
        message.contains(&format!("{silent} is not granted")) && !message.contains("/never"),
        "{message}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // A granted origin where nothing listens: a failure naming the origin.
    let r = call(&gw, &token, "POST", "/block", &format!("{refusing}/x")).await;
    let message = expect_error(r, StatusCode::BAD_GATEWAY, "upstream_failed").await;
    assert!(
        message.contains(&refusing) && !message.contains("/x"),
        "{message}"
    );
    assert_ok(&gw, &token).await;
}

/// A boxed future, as `#[async_trait]` methods return them.
type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Capabilities that hold nothing (the fixture's routes below use none).
struct Nothing;

impl ServiceBackend for Nothing {
    fn kv_get<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
    ) -> Fut<'f, Result<Option<KvEntry>, KvFailure>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(None) })
    }

    fn kv_scan<'s, 'a, 'b, 'c, 'd, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
        _: &'d str,
        _: u32,
    ) -> Fut<'f, Result<Vec<KvEntry>, KvFailure>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        'd: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn kv_find<'s, 'a, 'b, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
    ) -> Fut<'f, Result<Option<(String, KvEntry)>, KvFailure>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(None) })
    }

    fn kv_commit<'s, 'a, 'b, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: Vec<KvWrite>,
    ) -> Fut<'f, Result<Vec<u64>, KvFailure>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async { Err(KvFailure::Failed("nothing is stored here".into())) })
    }

    fn devices<'s, 'a, 'f>(&'s self, _: &'a str) -> Fut<'f, Vec<DeviceInfo>>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async { Vec::new() })
    }

    fn publish<'s, 'a, 'f>(
        &'s self,
        _: &'a str,
        _: Vec<String>,
        _: String,
        _: String,
    ) -> Fut<'f, Result<(), String>>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async { Err("no devices here".into()) })
    }

    fn schedule<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
        _: u64,
    ) -> Fut<'f, ()>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async {})
    }

    fn cancel<'s, 'a, 'b, 'c, 'f>(&'s self, _: &'a str, _: &'b str, _: &'c str) -> Fut<'f, ()>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async {})
    }

    fn now_ms(&self) -> u64 {
        0
    }

    fn blob<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
    ) -> Fut<'f, Option<BlobInfo>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async { None })
    }

    fn delete_blob<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
    ) -> Fut<'f, bool>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async { false })
    }

    fn submit_job<'s, 'f>(&'s self, _: NewJob) -> Fut<'f, Result<JobInfo, JobError>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async { Err(JobError::new("worker_failed", "no jobs here", "none")) })
    }

    fn job<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _: &'a str,
        _: &'b str,
        _: &'c str,
    ) -> Fut<'f, Option<JobInfo>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async { None })
    }
}

/// The same routes on the host itself, where the reason of each failure is
/// typed (the gateway's answer above is one for all of them): the deadline
/// for the loop and for the server that never answers, the memory cap for
/// the bomb, the panic's message for the panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_says_why_each_hostile_route_failed() {
    let (silent, _, _) = silent_server().await;
    let host = PluginHost::new(limits(Duration::from_secs(1))).unwrap();
    let grants = Grants {
        module_id: "hostile".into(),
        allowed_origins: vec![silent.clone()],
        config_json: "{}".into(),
    };
    let capabilities =
        ["http", "kv"].map(|n| gateway::host::service::Capability::parse(n).unwrap());
    let outcomes = tokio::task::spawn_blocking(move || {
        let loaded = host
            .load_service(&hostile_service(), grants.clone(), &capabilities)
            .expect("the fixture loads");
        let grants = Arc::new(grants);
        let route = |method: &str, path: &str, body: &str| {
            let scope = ServiceScope {
                service_id: "hostile".into(),
                user_id: Some("u1".into()),
                backend: Arc::new(Nothing),
            };
            let request = ServiceRequest {
                method: method.into(),
                path: path.into(),
                body: body.as_bytes().to_vec(),
                caller: Some(("u1".into(), None)),
                ..ServiceRequest::default()
            };
            host.handle(&loaded, grants.clone(), scope, request)
                .map(|answer| answer.status)
        };
        [
            route("POST", "/loop", ""),
            route("POST", "/bomb", ""),
            route("POST", "/panic", ""),
            route("POST", "/block", &format!("{silent}/never")),
            route("GET", "/ok", ""),
        ]
    })
    .await
    .unwrap();
    let [looped, bomb, panicked, blocked, ok] = outcomes;
    assert_eq!(looped, Err(CallError::Timeout(1000)));
    assert_eq!(bomb, Err(CallError::MemoryLimit(32 << 20)));
    match panicked {
        Err(CallError::Trap(message)) => assert!(
            message.contains("hostile service panics on purpose"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    // Not the service's own answer to an `http-error.timeout`: the call
    // ended at its deadline while `send` waited.
    assert_eq!(blocked, Err(CallError::Timeout(1000)));
    assert_eq!(ok, Ok(200));
}
