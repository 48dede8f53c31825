//! A mock IM network for fault injection (the real servers are Synapse and
//! ejabberd): it receives the webhook connector's signed POSTs, answers from
//! a script (500s, 429 with Retry-After, slow answers) and records each
//! push with its arrival time. It answers the connector's `verify` events
//! like a receiver that knows its accounts: by echoing the challenge, for
//! every account, or only for the accounts and credentials set with
//! [`MockNetwork::accounts`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
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
    /// Accounts a `verify` confirms, with their credentials; `None`: any.
    accounts: Option<HashMap<String, Value>>,
    /// `verify` events received: (account, confirmed).
    verifications: Vec<(String, bool)>,
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

    /// Confirm only these accounts, each with exactly these credentials.
    pub fn accounts(&self, accounts: impl IntoIterator<Item = (String, Value)>) {
        self.script.lock().expect("script").accounts = Some(accounts.into_iter().collect());
    }

    /// `verify` events so far: the account and whether it was confirmed.
    pub fn verifications(&self) -> Vec<(String, bool)> {
        self.script.lock().expect("script").verifications.clone()
    }

    /// Every push so far.
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
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if json["event"] == "verify" {
        return verify(&script, &json);
    }
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
            body: json,
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

/// The origin of one receiver shared by a whole test process, on a thread
/// of its own (so it outlives each test's runtime): it confirms every
/// account a `verify` names and answers every push `503`, like a network
/// that is down. For tests about bindings and the API rather than delivery.
pub fn shared_receiver() -> &'static str {
    static ORIGIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async {
                let mock = MockNetwork::start().await;
                mock.otherwise(Reply::Status(503));
                tx.send(mock.origin.clone()).expect("origin");
                std::future::pending::<()>().await
            });
        });
        rx.recv().expect("shared receiver started")
    })
}

/// Confirms an account by echoing the challenge, or refuses it with 403.
fn verify(script: &Mutex<Script>, event: &Value) -> Response {
    let account = event["account"].as_str().unwrap_or_default().to_owned();
    let mut script = script.lock().expect("script");
    let confirmed = match &script.accounts {
        None => true,
        Some(known) => known.get(&account) == Some(&event["credentials"]),
    };
    script.verifications.push((account, confirmed));
    if confirmed {
        axum::Json(json!({"challenge": event["challenge"]})).into_response()
    } else {
        (StatusCode::FORBIDDEN, "unknown account").into_response()
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
