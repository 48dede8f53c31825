//! Change reports and their delivery (S4-S6): `POST/GET /v1/changes`,
//! `GET /v1/changes/{id}`, `GET /v1/profile`, and the avatar uploads of
//! `POST /v1/media` they refer to.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Settings of a change: at least one field in a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Media id from `POST /v1/media`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Status text, at most 4096 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub signature: Option<String>,
    /// Mood, at most 4096 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub mood: Option<String>,
}

impl Settings {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.avatar.is_none() && self.signature.is_none() && self.mood.is_none()
    }

    /// The fields that are set, by name (`avatar`, `signature`, `mood`).
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("avatar", &self.avatar),
            ("signature", &self.signature),
            ("mood", &self.mood),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
    }
}

/// A change report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// The module whose settings changed (must be bound).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$", min_length = 1, max_length = 32)
    )]
    pub module: String,
    /// The account on that module, for a user with several accounts of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The new values.
    pub settings: Settings,
    /// Set in a local client of the module (read from its files), which may
    /// not have reached that network yet: the reporting account is pushed
    /// too, not only the others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_local_client: bool,
}

/// Where one target (delivery) of a change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    /// Waiting for a worker.
    Pending,
    /// Being pushed now.
    Delivering,
    /// Applied by the network (final).
    Delivered,
    /// Failed for now; another attempt is scheduled.
    Retrying,
    /// Given up (final).
    Failed,
    /// A newer change carried its values (final).
    Superseded,
}

impl TargetStatus {
    /// True once nothing more will happen to the target.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TargetStatus::Delivered | TargetStatus::Failed | TargetStatus::Superseded
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Pending => "pending",
            TargetStatus::Delivering => "delivering",
            TargetStatus::Delivered => "delivered",
            TargetStatus::Retrying => "retrying",
            TargetStatus::Failed => "failed",
            TargetStatus::Superseded => "superseded",
        }
    }
}

impl fmt::Display for TargetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a change as a whole stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Some target is not final yet.
    Pending,
    /// Every target delivered (or superseded by a newer change), or there
    /// was no other binding.
    Delivered,
    /// Some targets delivered, some failed.
    Partial,
    /// Every target failed.
    Failed,
    /// An echo of what the gateway itself applied: nothing to deliver.
    Suppressed,
}

impl ChangeStatus {
    /// True once nothing more will happen to the change.
    pub fn is_final(self) -> bool {
        self != ChangeStatus::Pending
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Pending => "pending",
            ChangeStatus::Delivered => "delivered",
            ChangeStatus::Partial => "partial",
            ChangeStatus::Failed => "failed",
            ChangeStatus::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One target of a change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetView {
    /// Target binding.
    pub binding_id: String,
    /// Its module.
    pub module: String,
    /// Its account.
    pub account: String,
    /// Where it stands.
    pub status: TargetStatus,
    /// Attempts started.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Fields the network now holds.
    pub applied_fields: Vec<String>,
    /// Fields shortened or converted to fit the network.
    pub truncated_fields: Vec<String>,
    /// RFC 3339, once delivered.
    pub delivered_at: Option<String>,
    /// The newer change that carried this target's values, when superseded.
    pub superseded_by: Option<String>,
    /// RFC 3339 of the next attempt, when retrying.
    pub next_attempt_at: Option<String>,
    /// Gave up after the attempt or age cap (an operator may redrive it).
    pub dead_letter: bool,
}

/// A change with its targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeView {
    /// Opaque id.
    pub id: String,
    /// The reporting module.
    pub module: String,
    /// The reported settings.
    pub settings: Settings,
    /// RFC 3339.
    pub created_at: String,
    /// `pending` until every target is final, then `delivered`, `partial` or
    /// `failed`; `suppressed` for an echo.
    pub status: ChangeStatus,
    /// One per other binding.
    pub targets: Vec<TargetView>,
}

/// A page of changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeList {
    /// Newest first.
    pub changes: Vec<ChangeView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<String>,
}

/// One target of a change in the first answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptTarget {
    /// Target binding.
    pub binding_id: String,
    /// Its module.
    pub module: String,
    /// Its account.
    pub account: String,
    /// `pending` at first.
    pub status: TargetStatus,
}

/// The first answer to a change report (the same again for a repeated
/// `Idempotency-Key`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    /// Change id.
    pub id: String,
    /// `pending`; `suppressed` for an echo; `delivered` when there is no
    /// other binding.
    pub status: ChangeStatus,
    /// One per other binding.
    pub targets: Vec<ReceiptTarget>,
}

/// The user's current federated settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileView {
    /// Latest reported value per field (`avatar` is a media id).
    pub settings: Settings,
    /// RFC 3339 of the latest change, absent before the first.
    pub updated_at: Option<String>,
}

/// A stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaView {
    /// Opaque id, used as `settings.avatar` in a change report.
    pub id: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// MIME type.
    pub content_type: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
}
