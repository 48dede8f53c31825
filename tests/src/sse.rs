//! Reading a `text/event-stream` answer event by event, as a browser's
//! EventSource would (id, event, data; comments and keep-alives skipped).

use futures::StreamExt;
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:`, when present.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` as JSON.
    pub data: Value,
}

type Bytes = Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open event stream.
pub struct EventStream {
    body: Bytes,
    buffer: String,
}

impl EventStream {
    /// Wraps a `200 text/event-stream` response.
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), reqwest::StatusCode::OK, "not a stream");
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event within `limit`; `None` when the stream ended or
    /// nothing came in time.
    pub async fn next_within(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.next())
            .await
            .ok()
            .flatten()
    }

    /// The next event of `kind` within `limit`, skipping others.
    pub async fn next_of(&mut self, kind: &str, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, async {
            while let Some(event) = self.next().await {
                if event.event == kind {
                    return Some(event);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn parse(block: &str) -> Option<SseEvent> {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
    };
    let data = field("data:")?;
    Some(SseEvent {
        id: field("id:"),
        event: field("event:").unwrap_or_else(|| "message".into()),
        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
    })
}
