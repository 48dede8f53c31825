//! Settings federation through the public API, with webhook modules posting
//! to mock networks (fault injection: 500s, 429 + Retry-After, 401):
//! fan-out with per-target status, echo suppression, idempotency, retries,
//! module pauses, dead letters and redrive, latest-wins, SSE, media.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::{eventually, MockNetwork, Reply};
use e2e_tests::{expect_error, target, webhook, TestGateway, TINY_PNG};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn gateway() -> TestGateway {
    TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(100);
        c.delivery.backoff_max = Duration::from_millis(400);
        c.delivery.poll_interval = Duration::from_millis(50);
    })
    .await
}

/// Uploads a webhook module posting to `mock`.
async fn module(gw: &TestGateway, mock: &MockNetwork, id: &str) {
    let r = gw
        .upload_module(&mock.manifest(id, 100, 100), &webhook())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "upload {id}");
}

async fn bind(gw: &TestGateway, token: &str, module: &str, account: &str) -> String {
    let r = gw
        .post_json(
            "/v1/bindings",
            Some(token),
            &json!({"module": module, "account": account, "credentials": {"token": "t"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "bind {module}");
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn report(
    gw: &TestGateway,
    token: &str,
    module: &str,
    settings: Value,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = gw
        .client
        .post(gw.url("/v1/changes"))
        .bearer_auth(token)
        .json(&json!({"module": module, "settings": settings}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The change once every target is final.
async fn settled(gw: &TestGateway, token: &str, id: &str) -> Value {
    gw.settled(token, id).await
}

/// A user with bindings of `source` and every module in `targets`, each
/// module posting to its own mock network.
struct World {
    gw: TestGateway,
    token: String,
    mocks: Vec<(String, MockNetwork)>,
}

impl World {
    async fn new(modules: &[&str]) -> World {
        let gw = gateway().await;
        let token = gw.user_token("alice").await;
        let mut mocks = Vec::new();
        for id in modules {
            let mock = MockNetwork::start().await;
            module(&gw, &mock, id).await;
            bind(&gw, &token, id, &format!("alice@{id}")).await;
            mocks.push((id.to_string(), mock));
        }
        World { gw, token, mocks }
    }

    fn mock(&self, id: &str) -> &MockNetwork {
        &self.mocks.iter().find(|(m, _)| m == id).unwrap().1
    }

    async fn report(&self, module: &str, settings: Value) -> (StatusCode, Value) {
        report(&self.gw, &self.token, module, settings, None).await
    }

    async fn settled(&self, id: &Value) -> Value {
        settled(&self.gw, &self.token, id.as_str().unwrap()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_other_binding_with_status_per_target() {
    let w = World::new(&["source", "alpha", "beta"]).await;
    let (status, receipt) = w
        .report(
            "source",
            json!({"signature": "  Out hiking 🏔  ", "mood": "happy"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let targets = receipt["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "one target per other binding: {receipt}");
    assert!(targets.iter().all(|t| t["status"] == "pending"));

    let change = w.settled(&receipt["id"]).await;
    assert_eq!(change["status"], "delivered", "{change}");
    for id in ["alpha", "beta"] {
        let t = target(&change, id);
        assert_eq!(t["status"], "delivered");
        assert_eq!(t["attempts"], 1);
        assert_eq!(t["applied_fields"], json!(["signature", "mood"]));
        assert!(t["delivered_at"].is_string());
        let hits = w.mock(id).accepted();
        assert_eq!(hits.len(), 1, "{id} got exactly one push");
        assert_eq!(hits[0].body["account"], format!("alice@{id}"));
        // Trimmed as the network will store it.
        assert_eq!(hits[0].body["settings"]["signature"], "Out hiking 🏔");
    }
    assert!(
        w.mock("source").hits().is_empty(),
        "no push back to the source"
    );

    let bindings = w.gw.get_json("/v1/bindings", Some(&w.token)).await;
    let alpha = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["module"] == "alpha")
        .unwrap()
        .clone();
    assert_eq!(alpha["last_applied"]["signature"], "Out hiking 🏔");
    let profile = w.gw.get_json("/v1/profile", Some(&w.token)).await;
    assert_eq!(profile["settings"]["mood"], "happy");

    let list = w.gw.get_json("/v1/changes?limit=5", Some(&w.token)).await;
    assert_eq!(list["changes"][0]["id"], receipt["id"]);

    // The operator sees where the worker's time went: two pushes, and the
    // batches that claimed and recorded them (a recorded batch is counted
    // just after its commit, which the status above may already show).
    let record = "gateway_delivery_batch_size_sum{stage=\"record\"} 2";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = w.gw.get("/metrics", None).await.text().await.unwrap();
        if metrics.contains(record) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
    };
    assert_eq!(
        sample("gateway_delivery_stage_seconds_count{stage=\"push\"}"),
        2.0
    );
    for stage in ["claim", "record"] {
        let batch = format!("gateway_delivery_batch_size_sum{{stage=\"{stage}\"}}");
        assert_eq!(sample(&batch), 2.0, "{stage}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_checked_against_the_application_list() {
    let w = World::new(&["source", "alpha"]).await;
    let (status, body) = w.report("nowhere", json!({"signature": "x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "not_bound");
    let (status, body) = w.report("source", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "empty_change");
    let (status, body) = w.report("source", json!({"avatar": "no-such-media"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "unknown_media");
    let r =
        w.gw.post_json(
            "/v1/changes",
            Some(&w.token),
            &json!({"module": "source", "settings": {"signature": 5}}),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r =
        w.gw.post_json("/v1/changes", None, &json!({"module": "source"}))
            .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;
    // Another user cannot read this user's change.
    let (_, receipt) = w.report("source", json!({"signature": "mine"})).await;
    let bob = w.gw.user_token("bob").await;
    let r =
        w.gw.get(
            &format!("/v1/changes/{}", receipt["id"].as_str().unwrap()),
            Some(&bob),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_accounts_settings_needs_a_connector_that_can_and_the_owner() {
    let w = World::new(&["source", "alpha"]).await;
    let bindings = w.gw.get_json("/v1/bindings", Some(&w.token)).await;
    let id = bindings["bindings"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/bindings/{id}/settings");
    // The webhook connector cannot read settings back: a clear answer.
    let r = w.gw.get(&path, Some(&w.token)).await;
    let message = expect_error(r, StatusCode::NOT_IMPLEMENTED, "fetch_unsupported").await;
    assert!(message.contains("cannot read"), "{message}");
    let bob = w.gw.user_token("bob").await;
    let r = w.gw.get(&path, Some(&bob)).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r =
        w.gw.get("/v1/bindings/no-such-binding/settings", Some(&w.token))
            .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = w.gw.get(&path, None).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_returns_the_first_answer_and_sends_once() {
    let w = World::new(&["source", "alpha"]).await;
    let settings = json!({"signature": "once"});
    let (s1, first) = report(&w.gw, &w.token, "source", settings.clone(), Some("k-1")).await;
    let (s2, second) = report(&w.gw, &w.token, "source", settings, Some("k-1")).await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(first, second);
    w.settled(&first["id"]).await;
    let list = w.gw.get_json("/v1/changes", Some(&w.token)).await;
    assert_eq!(list["changes"].as_array().unwrap().len(), 1);
    assert_eq!(w.mock("alpha").accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_of_what_the_gateway_applied_is_suppressed() {
    let w = World::new(&["source", "alpha"]).await;
    let (_, receipt) = w.report("source", json!({"signature": "  echo me "})).await;
    w.settled(&receipt["id"]).await;
    // The monitor sees the new value on alpha and reports it back.
    let (status, echo) = w.report("alpha", json!({"signature": "echo me"})).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["status"], "suppressed");
    assert_eq!(echo["targets"], json!([]));
    // A real change on alpha afterwards goes out.
    let (status, real) = w
        .report("alpha", json!({"signature": "changed on alpha"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let change = w.settled(&real["id"]).await;
    assert_eq!(target(&change, "source")["status"], "delivered");
    // Changing alpha back to the old value is no echo any more: the
    // gateway forgot what it applied there once alpha reported its own.
    let (status, back) = w.report("alpha", json!({"signature": "echo me"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{back}");
    w.settled(&back["id"]).await;
    assert_eq!(w.mock("source").accepted().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered() {
    let w = World::new(&["source", "alpha"]).await;
    w.mock("alpha")
        .then([Reply::Status(500), Reply::Status(503)]);
    let (_, receipt) = w.report("source", json!({"signature": "persistent"})).await;
    let change = w.settled(&receipt["id"]).await;
    let t = target(&change, "alpha");
    assert_eq!(t["status"], "delivered", "{change}");
    assert_eq!(t["attempts"], 3);
    assert_eq!(t["last_error"], Value::Null);
    assert_eq!(w.mock("alpha").hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_the_whole_module() {
    let w = World::new(&["source", "alpha"]).await;
    w.mock("alpha").then([Reply::RetryAfter(2)]);
    let (_, first) = w
        .report("source", json!({"signature": "wait for it"}))
        .await;
    let path = format!("/v1/changes/{}", first["id"].as_str().unwrap());
    let waiting = eventually("the 429 to be recorded", WAIT, || async {
        let change = w.gw.get_json(&path, Some(&w.token)).await;
        (target(&change, "alpha")["status"] == "retrying").then_some(change)
    })
    .await;
    assert!(target(&waiting, "alpha")["last_error"]
        .as_str()
        .unwrap()
        .contains("wait 2 s"));
    // A second account of the paused module waits as well.
    bind(&w.gw, &w.token, "alpha", "alice-second@alpha").await;
    let (_, second) = w.report("source", json!({"mood": "patient"})).await;
    let change = w.settled(&second["id"]).await;
    assert_eq!(change["status"], "delivered", "{change}");
    let hits = w.mock("alpha").hits();
    assert_eq!(
        hits.len(),
        3,
        "one 429, then one push per account: {hits:?}"
    );
    assert_eq!(hits[0].status, 429);
    for later in &hits[1..] {
        let waited = later.at.duration_since(hits[0].at);
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_at_once_and_the_change_is_partial() {
    let w = World::new(&["source", "alpha", "beta"]).await;
    w.mock("alpha").otherwise(Reply::Status(401));
    let (_, receipt) = w.report("source", json!({"mood": "grumpy"})).await;
    let change = w.settled(&receipt["id"]).await;
    assert_eq!(change["status"], "partial");
    let alpha = target(&change, "alpha");
    assert_eq!(alpha["status"], "failed");
    assert_eq!(alpha["attempts"], 1);
    assert!(alpha["last_error"]
        .as_str()
        .unwrap()
        .contains("authentication failed"));
    assert_eq!(alpha["dead_letter"], false);
    assert_eq!(target(&change, "beta")["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_become_dead_letters_an_operator_can_redrive() {
    let gw = TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(50);
        c.delivery.backoff_max = Duration::from_millis(100);
        c.delivery.poll_interval = Duration::from_millis(50);
        c.delivery.max_attempts = 2;
    })
    .await;
    let token = gw.user_token("alice").await;
    let (source, alpha) = (MockNetwork::start().await, MockNetwork::start().await);
    module(&gw, &source, "source").await;
    module(&gw, &alpha, "alpha").await;
    bind(&gw, &token, "source", "a@source").await;
    bind(&gw, &token, "alpha", "a@alpha").await;
    alpha.otherwise(Reply::Status(500));
    let (_, receipt) = report(&gw, &token, "source", json!({"signature": "s"}), None).await;
    let change = settled(&gw, &token, receipt["id"].as_str().unwrap()).await;
    let t = target(&change, "alpha");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["dead_letter"], true);
    assert!(t["last_error"]
        .as_str()
        .unwrap()
        .contains("gave up after 2"));

    let r = gw.get("/v1/admin/deliveries/dead", Some(&token)).await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let dead = gw
        .get_json("/v1/admin/deliveries/dead", Some(&gw.admin_token))
        .await;
    let letters = dead["deliveries"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    let id = letters[0]["id"].as_str().unwrap().to_owned();

    alpha.otherwise(Reply::Ok);
    let path = format!("/v1/admin/deliveries/{id}/redrive");
    let r = gw.post_json(&path, Some(&gw.admin_token), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let change = settled(&gw, &token, receipt["id"].as_str().unwrap()).await;
    assert_eq!(target(&change, "alpha")["status"], "delivered", "{change}");
    let r = gw.post_json(&path, Some(&gw.admin_token), &json!({})).await;
    expect_error(r, StatusCode::CONFLICT, "not_redrivable").await;
    let r = gw
        .post_json(
            "/v1/admin/deliveries/nope/redrive",
            Some(&gw.admin_token),
            &json!({}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_change_supersedes_pending_ones_and_the_last_value_wins() {
    let w = World::new(&["source", "alpha"]).await;
    // alpha asks to wait, so the following changes queue up behind it (long
    // enough that all ten reports land within the pause on a busy machine).
    w.mock("alpha").then([Reply::RetryAfter(5)]);
    let (_, first) = w
        .report("source", json!({"signature": "v0", "mood": "calm"}))
        .await;
    eventually("the first push", WAIT, || async {
        (!w.mock("alpha").hits().is_empty()).then_some(())
    })
    .await;
    let mut last = Value::Null;
    for i in 1..=10 {
        let (status, receipt) = w
            .report("source", json!({"signature": format!("v{i}")}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        last = receipt;
    }
    let change = w.settled(&last["id"]).await;
    assert_eq!(change["status"], "delivered");
    let accepted = w.mock("alpha").accepted();
    assert_eq!(accepted.len(), 1, "one push after the pause: {accepted:?}");
    // The mood of the first change rode along with the newest signature.
    assert_eq!(accepted[0].body["settings"]["signature"], "v10");
    assert_eq!(accepted[0].body["settings"]["mood"], "calm");
    let first = w.settled(&first["id"]).await;
    assert_eq!(target(&first, "alpha")["status"], "superseded");
    assert_eq!(first["status"], "delivered");
    assert!(target(&first, "alpha")["superseded_by"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_each_target_until_done() {
    let w = World::new(&["source", "alpha"]).await;
    w.mock("alpha").then([Reply::Status(500)]);
    let (_, receipt) = w.report("source", json!({"signature": "streamed"})).await;
    let r =
        w.gw.get(
            &format!("/v1/changes/{}/events", receipt["id"].as_str().unwrap()),
            Some(&w.token),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = tokio::time::timeout(WAIT, r.text())
        .await
        .expect("stream ends")
        .unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap()))
        })
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .filter(|(n, _)| *n == "target")
        .map(|(_, t)| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"delivered"), "{text}");
    assert!(
        statuses.contains(&"retrying"),
        "the retry is visible: {text}"
    );
    let (name, done) = events.last().unwrap();
    assert_eq!(*name, "done");
    assert_eq!(done["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_are_checked_on_upload_and_sent_to_each_network() {
    let w = World::new(&["source", "alpha"]).await;
    let upload = |bytes: &'static [u8], content_type: &'static str| {
        w.gw.client
            .post(w.gw.url("/v1/media"))
            .bearer_auth(&w.token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
    };
    let r = upload(b"hello", "text/plain").await.unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = upload(b"\x89PNG\r\n\x1a\nnot really", "image/png")
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_image").await;
    let r = upload(TINY_PNG, "image/png").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let media: Value = r.json().await.unwrap();
    assert_eq!(media["content_type"], "image/png");
    assert_eq!(media["sha256"].as_str().unwrap().len(), 64);

    let (status, receipt) = w.report("source", json!({"avatar": media["id"]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let change = w.settled(&receipt["id"]).await;
    assert_eq!(
        target(&change, "alpha")["applied_fields"],
        json!(["avatar"])
    );
    let pushed = &w.mock("alpha").accepted()[0].body["settings"]["avatar"];
    assert!(!pushed.is_null(), "the avatar went out: {pushed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_media_is_refused() {
    let gw = TestGateway::start_with(|c| c.delivery.max_media_bytes = 1024).await;
    let token = gw.user_token("alice").await;
    let r = gw
        .client
        .post(gw.url("/v1/media"))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(vec![0u8; 4096])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_pushes_never_exceed_the_module_rate() {
    let gw = gateway().await;
    let token = gw.user_token("alice").await;
    let (source, alpha) = (MockNetwork::start().await, MockNetwork::start().await);
    module(&gw, &source, "source").await;
    let (per_second, burst) = (4, 2);
    let r = gw
        .upload_module(&alpha.manifest("alpha", per_second, burst), &webhook())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    bind(&gw, &token, "source", "a@source").await;
    for i in 0..12 {
        bind(&gw, &token, "alpha", &format!("a{i}@alpha")).await;
    }
    alpha.then([Reply::Status(500), Reply::RetryAfter(1), Reply::Status(503)]);
    let (_, receipt) = report(&gw, &token, "source", json!({"signature": "rated"}), None).await;
    let change = settled(&gw, &token, receipt["id"].as_str().unwrap()).await;
    assert_eq!(change["status"], "delivered", "{change}");
    assert_eq!(change["targets"].as_array().unwrap().len(), 12);
    let hits = alpha.hits();
    assert_eq!(hits.len(), 15, "12 pushes plus the 3 faults");
    assert_eq!(alpha.accepted().len(), 12);
    for (i, first) in hits.iter().enumerate() {
        let in_window = hits[i..]
            .iter()
            .filter(|h| h.at.duration_since(first.at) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= (per_second + burst) as usize,
            "{in_window} requests within one second of request {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_direction_override_characters_never_reach_a_network() {
    let w = World::new(&["source", "alpha"]).await;
    let (status, receipt) = w
        .report(
            "source",
            json!({"signature": "invoice\u{202E}fdp.exe\u{0007}", "mood": "two\nlines"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let change = w.settled(&receipt["id"]).await;
    assert_eq!(
        change["settings"],
        json!({"signature": "invoicefdp.exe", "mood": "two lines"})
    );
    let pushed = &w.mock("alpha").accepted()[0].body["settings"];
    assert_eq!(
        pushed,
        &json!({"signature": "invoicefdp.exe", "mood": "two lines"})
    );
}
