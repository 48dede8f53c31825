//! # gateway-api
//!
//! The public wire contract of the gateway: every request and response body
//! of the HTTP API, the status enums with their rules (`is_final`), the
//! server-sent events of a change, the error body and the monitor's `detect`
//! hints. The server answers with these types and the `monitor` app (or any
//! Rust client) sends and reads them, so both sides agree by construction.
//!
//! Plain serde types, nothing else: no HTTP client or server, no storage.
//! The `openapi` feature adds `utoipa` schemas for the server's OpenAPI
//! document; clients leave it off.

pub mod accounts;
pub mod bindings;
pub mod changes;
pub mod deliveries;
pub mod devices;
pub mod error;
pub mod events;
pub mod modules;
pub mod services;

pub use accounts::{Credentials, SessionView, UserView};
pub use bindings::{AvatarView, BindingList, BindingView, CurrentSettings, NewBindingRequest};
pub use changes::{
    ChangeList, ChangeRequest, ChangeStatus, ChangeView, MediaView, ProfileView, Receipt,
    ReceiptTarget, Settings, TargetStatus, TargetView,
};
pub use deliveries::{DeadLetters, DeliveryView};
pub use devices::{
    DeviceHistory, DeviceHistoryView, DeviceList, DeviceRegistered, DeviceView, NewDeviceRequest,
};
pub use error::{ErrorBody, ErrorDetail};
pub use events::{ChangeEvent, DoneEvent, EventError, StreamError};
pub use modules::{
    ClientHints, ClientReader, CredentialField, DetectHints, Manifest, ModuleList, ModuleView,
    RateLimit, ReadValue,
};
pub use services::{ServiceList, ServiceManifest, ServiceView};

use std::fmt;

/// A value that must never be printed: `Debug` shows `<redacted>`. It
/// serializes as the value itself (it is sent, just never logged).
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Redacted(value)
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
    /// The value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Redacted(value)
    }
}
