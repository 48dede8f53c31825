//! The server-sent events of `GET /v1/changes/{id}/events`: the event name
//! on the `event:` line and its JSON on the `data:` line.

use crate::changes::{ChangeStatus, TargetView};
use serde::{Deserialize, Serialize};

/// One event of a change's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    /// `target`: a target's status changed (the target as in
    /// `GET /v1/changes/{id}`).
    Target(Box<TargetView>),
    /// `done`: every target is final; the last event.
    Done(DoneEvent),
    /// `error`: the stream cannot go on; the last event.
    Error(StreamError),
}

/// Payload of `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoneEvent {
    /// The change id.
    pub id: String,
    /// Its final status.
    pub status: ChangeStatus,
}

/// Payload of `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamError {
    /// What went wrong.
    pub message: String,
}

/// Why an event could not be read.
#[derive(Debug)]
pub enum EventError {
    /// The event name is not one of this stream's.
    UnknownEvent(String),
    /// The data is not the JSON this event carries.
    Data(serde_json::Error),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::UnknownEvent(name) => write!(f, "unknown event {name:?}"),
            EventError::Data(e) => write!(f, "event data: {e}"),
        }
    }
}

impl std::error::Error for EventError {}

impl ChangeEvent {
    /// The `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeEvent::Target(_) => "target",
            ChangeEvent::Done(_) => "done",
            ChangeEvent::Error(_) => "error",
        }
    }

    /// The `data:` JSON.
    pub fn data(&self) -> String {
        let data = match self {
            ChangeEvent::Target(t) => serde_json::to_string(t),
            ChangeEvent::Done(d) => serde_json::to_string(d),
            ChangeEvent::Error(e) => serde_json::to_string(e),
        };
        // These types always serialize (strings, numbers, lists only).
        data.unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads an event from its name and data.
    pub fn parse(name: &str, data: &str) -> Result<ChangeEvent, EventError> {
        match name {
            "target" => serde_json::from_str(data).map(|t| ChangeEvent::Target(Box::new(t))),
            "done" => serde_json::from_str(data).map(ChangeEvent::Done),
            "error" => serde_json::from_str(data).map(ChangeEvent::Error),
            other => return Err(EventError::UnknownEvent(other.to_owned())),
        }
        .map_err(EventError::Data)
    }

    /// True for the stream's last event.
    pub fn is_last(&self) -> bool {
        !matches!(self, ChangeEvent::Target(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_by_name_and_data() {
        let done = ChangeEvent::Done(DoneEvent {
            id: "c1".into(),
            status: ChangeStatus::Partial,
        });
        assert_eq!(done.name(), "done");
        assert_eq!(done.data(), r#"{"id":"c1","status":"partial"}"#);
        assert_eq!(ChangeEvent::parse("done", &done.data()).unwrap(), done);
        assert!(matches!(
            ChangeEvent::parse("bogus", "{}"),
            Err(EventError::UnknownEvent(_))
        ));
        assert!(matches!(
            ChangeEvent::parse("done", r#"{"id":"c1","status":"lost"}"#),
            Err(EventError::Data(_))
        ));
    }
}
