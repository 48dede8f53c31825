//! Event streams of pending changes end when they must: at shutdown (so
//! `run()` returns instead of waiting for the watchers forever) and when
//! the session that opened them ends.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::TestGateway;
use futures::StreamExt;
use reqwest::StatusCode;
use std::time::Duration;

/// Long enough for any machine; only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

/// An API-only gateway (nothing delivers, so a change stays pending and its
/// stream would never end by itself), a user's session token, and the
/// live event stream of one of the user's changes.
async fn watched_pending_change() -> (
    TestGateway,
    String,
    impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>>,
) {
    let gw = TestGateway::start_with(|c| c.delivery.concurrency = 0).await;
    let (token, id) = gw.user_with_a_change("watcher").await;
    let stream = gw
        .client
        .get(gw.url(&format!("/v1/changes/{id}/events")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = Box::pin(stream.bytes_stream());
    // The first event (the pending target) arrives: the stream is live.
    let first = body.next().await.expect("an event").unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("event: target"),
        "{first:?}"
    );
    (gw, token, body)
}

/// Reads `body` to its end; what it said.
async fn rest_of(body: impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>>) -> String {
    let mut body = std::pin::pin!(body);
    let mut text = String::new();
    let ended = tokio::time::timeout(HANG, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream did not end: {text}");
    text
}

#[tokio::test]
async fn stopping_ends_the_event_streams_of_pending_changes() {
    let (gw, _token, body) = watched_pending_change().await;
    let stopped = tokio::time::timeout(HANG, gw.stop())
        .await
        .expect("run() returned while a client watched a pending change");
    assert!(stopped.is_ok(), "{stopped:?}");
    // The watcher sees its stream end rather than hang.
    rest_of(body).await;
}

#[tokio::test]
async fn logging_out_ends_the_sessions_event_streams() {
    let (gw, token, body) = watched_pending_change().await;
    let r = gw.delete("/v1/sessions/current", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let rest = rest_of(body).await;
    assert!(
        rest.contains("event: error") && rest.contains("session ended"),
        "{rest}"
    );
}
