//! A mock IM network for fault injection (the real servers are Synapse and
//! ejabberd): it receives the webhook connector's signed POSTs, answers from
//! a script (500s, 429 with Retry-After, slow answers) and records each
//! request with its arrival time.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200`.
    Ok,
    /// Any status.
    Status(u16),
    /// `429` with `Retry-After: secs`.
    RetryAfter(u32),
    /// `200` after a pause (a slow network; deliveries stay in flight).
    Slow(Duration),
}

/// One received request.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// The JSON body (`{"account", "settings"}` from the webhook connector).
    pub body: Value,
    /// What the mock answered.
    pub status: u16,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    /// Answer when the script is empty.
    otherwise: Option<Reply>,
    hits: Vec<Hit>,
}

/// A running mock network.
#[derive(Clone)]
pub struct MockNetwork {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    script: Arc<Mutex<Script>>,
}

impl MockNetwork {
    /// Starts on a free loopback port; answers 200 until scripted otherwise.
    pub async fn start() -> MockNetwork {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new().fallback(answer).with_state(script.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockNetwork { origin, script }
    }

    /// Answers these first, in order.
    pub fn then(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("script").replies.extend(replies);
    }

    /// Answer this whenever the script is empty (default `Ok`).
    pub fn otherwise(&self, reply: Reply) {
        self.script.lock().expect("script").otherwise = Some(reply);
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.script.lock().expect("script").hits.clone()
    }

    /// Requests answered 2xx so far.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    /// A gateway module manifest whose webhook connector posts here.
    pub fn manifest(&self, id: &str, per_second: u32, burst: u32) -> Value {
        json!({
            "id": id,
            "name": format!("{id} network"),
            "allowed_hosts": [self.origin],
            "rate_limit": {"per_second": per_second, "burst": burst},
            "config": {"url": format!("{}/hook", self.origin), "secret": format!("{id}-secret")},
        })
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, status) = {
        let mut script = script.lock().expect("script");
        let reply = script
            .replies
            .pop_front()
            .or_else(|| script.otherwise.clone())
            .unwrap_or(Reply::Ok);
        let status = match reply {
            Reply::Ok | Reply::Slow(_) => 200,
            Reply::Status(s) => s,
            Reply::RetryAfter(_) => 429,
        };
        script.hits.push(Hit {
            at: Instant::now(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status,
        });
        (reply, status)
    };
    if let Reply::Slow(pause) = reply {
        tokio::time::sleep(pause).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        Reply::RetryAfter(secs) => {
            (code, [("retry-after", secs.to_string())], "slow down").into_response()
        }
        _ => (code, "ok").into_response(),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`
/// with `what` (the value a test waits for, e.g. a change's final status).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > limit {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
