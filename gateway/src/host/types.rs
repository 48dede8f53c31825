//! The host's domain types: what callers of the host see. WIT types stay in
//! `bindings`; conversions are explicit.

use serde::{Deserialize, Serialize};

/// A settings field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Profile picture.
    Avatar,
    /// Status text.
    Signature,
    /// Mood.
    Mood,
}

/// Avatar limits of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarLimits {
    /// Largest width and height in pixels.
    pub max_pixels: u32,
    /// Largest encoded size.
    pub max_bytes: u32,
    /// Accepted MIME types, preferred first.
    pub formats: Vec<String>,
}

/// Limits of a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest signature in characters.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_signature_chars: Option<u32>,
    /// Longest mood in characters.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_mood_chars: Option<u32>,
    /// Avatar limits, when avatars are supported.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub avatar: Option<AvatarLimits>,
}

/// What a connector says about itself (stored as the module's description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// Fields it can set.
    pub fields: Vec<Field>,
    /// The network's limits.
    pub limits: Limits,
    /// Mood vocabulary; empty means free text.
    pub moods: Vec<String>,
    /// The fields of a user's credentials; `None`: any JSON object (ABI 1
    /// connectors, and connectors that check credentials themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<SettingField>>,
    /// The fields of the operator's module config; `None` as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<SettingField>>,
}

/// The kind of JSON value a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingKind {
    /// A non-empty string.
    Text,
    /// A non-empty string kept hidden (password, token).
    Secret,
    /// An absolute http:// or https:// URL.
    Url,
    /// An integer.
    Integer,
    /// True or false.
    Boolean,
}

/// One named field of a credentials or config object, as a connector
/// declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingField {
    /// Key in the JSON object.
    pub name: String,
    /// What a person is asked for.
    pub label: String,
    /// The value's kind.
    pub kind: SettingKind,
    /// Whether the object must hold it.
    pub required: bool,
    /// One line of help; may be empty.
    #[serde(default)]
    pub help: String,
}

/// An encoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Settings to push or read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Avatar.
    pub avatar: Option<Image>,
    /// Signature.
    pub signature: Option<String>,
    /// Mood.
    pub mood: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// Fields the network now holds.
    pub applied: Vec<Field>,
    /// Fields the connector shortened or converted.
    pub truncated: Vec<Field>,
}

/// Why a connector call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The network refused the credentials (permanent).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The network asked to wait.
    #[error("rate limited; retry after {0} s")]
    RateLimited(u32),
    /// Temporary failure, worth retrying.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The network refused the value or request (permanent).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The plugin ran past its deadline and was stopped.
    #[error("the plugin exceeded its {0} ms deadline and was stopped")]
    Timeout(u64),
    /// The plugin tried to use more memory than allowed.
    #[error("the plugin exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The module is not set up for what its connector did (a host it needs
    /// is not granted): the operator's to fix, not the user's nor the
    /// network's.
    #[error("the module is not set up correctly: {0}")]
    Misconfigured(String),
    /// The plugin trapped (panic, unreachable, bad memory access).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The module or its plugin is not loaded.
    #[error("plugin unavailable: {0}")]
    Unavailable(String),
}

/// Per-module permissions and configuration of a call.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Module id (for logs and rate limits).
    pub module_id: String,
    /// Origins (`scheme://host:port`, lowercase) the plugin may call.
    pub allowed_origins: Vec<String>,
    /// The module's operator config as JSON text.
    pub config_json: String,
}

/// Why a plugin's outbound HTTP request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFailure {
    /// The origin is not granted to the module.
    Denied(String),
    /// No answer within the call's deadline.
    Timeout,
    /// The answer exceeded the response size cap.
    TooLarge,
    /// The module's outbound rate limit is exhausted; seconds to wait.
    RateLimited(u32),
    /// Connection or protocol failure.
    Failed(String),
}

/// Level of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// An outbound HTTP request of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}
