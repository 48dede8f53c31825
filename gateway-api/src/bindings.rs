//! The user's application list (S3): `POST/GET /v1/bindings`,
//! `GET /v1/bindings/{id}/settings`.

use crate::Redacted;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A binding request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewBindingRequest {
    /// A supported module id.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$", min_length = 1, max_length = 32)
    )]
    pub module: String,
    /// The account login on that network, e.g. `@alice:example.org`: at
    /// most 320 characters once trimmed, not blank, no control
    /// characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$",
            min_length = 1,
            max_length = 320
        )
    )]
    pub account: String,
    /// Credentials for that account, e.g. `{"password": "..."}`, at most
    /// 16 KiB as JSON. Never returned.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credentials: Redacted<Map<String, Value>>,
}

/// A binding as its owner sees it (never with credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingView {
    /// Opaque id.
    pub id: String,
    /// Module id.
    pub module: String,
    /// Account login.
    pub account: String,
    /// RFC 3339.
    pub created_at: String,
    /// Settings the gateway last applied to this account (absent in the
    /// create answer; `null` before the first delivery).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub last_applied: Option<Option<Value>>,
}

/// The user's application list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingList {
    /// Bindings, oldest first.
    pub bindings: Vec<BindingView>,
}

/// An avatar as the network holds it (the image itself is not returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AvatarView {
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub bytes: usize,
    /// Hex SHA-256 of the image bytes.
    pub sha256: String,
    /// The image kept as one of the user's media (`POST /v1/media`), so a
    /// change can name it as its avatar; absent when it could not be kept
    /// (not an image the gateway accepts, or the user's media quota full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
}

/// What an account holds on its network now, read through the connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurrentSettings {
    /// Binding id.
    pub binding_id: String,
    /// Module id.
    pub module: String,
    /// Account login.
    pub account: String,
    /// Current signature, if the network has one.
    pub signature: Option<String>,
    /// Current mood, if the network has one.
    pub mood: Option<String>,
    /// Current avatar, if any.
    pub avatar: Option<AvatarView>,
    /// Fields whose current value is the one the gateway last applied there:
    /// not a change of the user's (a monitor must not report them).
    pub applied_by_gateway: Vec<String>,
}
