//! Devices (H5): a user's terminals, their device tokens, the control list,
//! their history and their event inboxes (`/v1/devices`).

use serde::{Deserialize, Serialize};

/// `POST /v1/devices`: register a device, or update one registered before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewDeviceRequest {
    /// Stable id of the device (IMEI, MAC, or any id it keeps): 1-128
    /// characters without control characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub id: String,
    /// Name shown to the user: 1-100 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// Platform, e.g. `linux`, `android`: at most 64 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub platform: Option<String>,
    /// Application ids or activity types it can continue: at most 64, each
    /// 1-200 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub capabilities: Vec<String>,
    /// Port it listens on for direct transfers: 1-65535.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
}

/// A registered device with its new device token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceRegistered {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Platform, when given.
    pub platform: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// RFC 3339 time of the first registration.
    pub created_at: String,
    /// A session of the user bound to this device: calls made with it act
    /// as this device. Shown once; registering again replaces it.
    pub token: String,
}

/// One device of the control list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Platform, when given.
    pub platform: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// `active` (holds its event stream or was seen in the last 60 s) or
    /// `silent`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(active|silent)$"))]
    pub state: String,
    /// RFC 3339 time it was last seen.
    pub last_seen: String,
    /// Last network address seen.
    pub ip: Option<String>,
    /// Port it listens on, when given.
    pub port: Option<u16>,
}

/// `GET /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    /// The user's devices, oldest first.
    pub devices: Vec<DeviceView>,
}

/// One entry of the device history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceHistoryView {
    /// The device.
    pub device: String,
    /// `joined`, `updated` (registered again), `active`, `silent` or `left`
    /// (removed).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^(joined|updated|active|silent|left)$")
    )]
    pub event: String,
    /// RFC 3339 time.
    pub at: String,
}

/// `GET /v1/devices/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceHistory {
    /// Newest first, at most 200.
    pub entries: Vec<DeviceHistoryView>,
}
