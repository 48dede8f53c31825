//! Domain types of settings federation: media, changes and their deliveries.
//! Settings travel as JSON objects (`{"avatar": "<media id>", "signature":
//! "...", "mood": "..."}`); the registry merges them by key and never looks
//! inside the values.

use crate::RegistryError;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A settings object: field name to value.
pub type SettingsMap = Map<String, Value>;

/// A stored image (an avatar).
#[derive(Clone, PartialEq, Eq)]
pub struct Media {
    /// Opaque id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Hex SHA-256 of `data`.
    pub sha256: String,
    /// MIME type.
    pub content_type: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Encoded bytes.
    pub data: Vec<u8>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for a worker.
    Pending,
    /// A worker holds its lease and is pushing.
    Delivering,
    /// Applied by the network (final).
    Delivered,
    /// Failed for now; another attempt is scheduled.
    Retrying,
    /// Given up (final): permanent error, or attempts/age exhausted.
    Failed,
    /// A newer change took its place before it was applied (final).
    Superseded,
}

impl DeliveryStatus {
    /// The stored (and public) name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Superseded => "superseded",
        }
    }

    /// True once nothing more will happen to the delivery.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Delivered | DeliveryStatus::Failed | DeliveryStatus::Superseded
        )
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => DeliveryStatus::Pending,
            "delivering" => DeliveryStatus::Delivering,
            "delivered" => DeliveryStatus::Delivered,
            "retrying" => DeliveryStatus::Retrying,
            "failed" => DeliveryStatus::Failed,
            "superseded" => DeliveryStatus::Superseded,
            other => return Err(RegistryError::Corrupt(format!("delivery status {other:?}"))),
        })
    }
}

/// One push of a change to one other binding ("target").
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Opaque id.
    pub id: String,
    /// Insertion order (latest-wins compares these).
    pub seq: i64,
    /// The change it belongs to.
    pub change_id: String,
    /// Owner.
    pub user_id: String,
    /// Target binding.
    pub binding_id: String,
    /// Target module.
    pub module_id: String,
    /// Target account.
    pub account: String,
    /// What to push (may hold fields merged from superseded deliveries).
    pub settings: SettingsMap,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts started so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Fields the network now holds (after delivery).
    pub applied_fields: Vec<String>,
    /// Fields shortened or converted to fit the network.
    pub truncated_fields: Vec<String>,
    /// The change that took its place, when superseded.
    pub superseded_by: Option<String>,
    /// Gave up after the attempt or age cap (a dead letter an admin may redrive).
    pub dead: bool,
    /// Earliest time of the next attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// When the change was committed.
    pub created_at: DateTime<Utc>,
    /// Last state change.
    pub updated_at: DateTime<Utc>,
    /// When the network applied it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A change report with its targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Opaque id.
    pub id: String,
    /// Commit order.
    pub seq: i64,
    /// Owner.
    pub user_id: String,
    /// The reporting module.
    pub module_id: String,
    /// The reporting binding, when the report named its account.
    pub binding_id: Option<String>,
    /// The reported settings.
    pub settings: SettingsMap,
    /// An echo of what the gateway applied: no targets.
    pub suppressed: bool,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// One delivery per other binding.
    pub targets: Vec<Delivery>,
}

/// A target to create with a change.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Opaque id.
    pub id: String,
    /// Target binding.
    pub binding_id: String,
    /// Target module.
    pub module_id: String,
    /// Target account.
    pub account: String,
}

/// A change to record (S4, S5): the change, its targets and the bookkeeping,
/// in one transaction.
#[derive(Debug, Clone)]
pub struct NewChange {
    /// Opaque id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The reporting module.
    pub module_id: String,
    /// The reporting binding, when known.
    pub binding_id: Option<String>,
    /// The reported settings.
    pub settings: SettingsMap,
    /// An echo: store it for the record, create no targets, leave the profile.
    pub suppressed: bool,
    /// One per other binding (empty when suppressed).
    pub targets: Vec<NewDelivery>,
    /// Bindings whose network reported these values: the gateway forgets
    /// what it applied there for these fields, and older pending deliveries of
    /// these fields to them are superseded (the network has newer values).
    pub sources: Vec<String>,
    /// `Idempotency-Key` and the change's receipt to store under it (a JSON
    /// document whose `status` is `pending`, `delivered` or `suppressed`).
    pub idempotency: Option<(String, Value)>,
}

/// What recording a change did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeRecorded {
    /// Stored, with its commit order.
    Created {
        /// The change's `seq`.
        seq: i64,
    },
    /// The `Idempotency-Key` was used before: nothing was written; the
    /// receipt stored with the first report.
    Replayed(Value),
}

/// The result of one attempt, as a worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The network applied the push.
    Delivered {
        /// Fields the network now holds.
        applied: Vec<String>,
        /// Fields shortened or converted.
        truncated: Vec<String>,
        /// The applied values as the network stores them, merged into the
        /// binding's `last_applied` (echo suppression compares with these).
        applied_settings: SettingsMap,
        /// Why a reported field was not sent (kept as the delivery's
        /// `last_error`), e.g. a mood the network does not know.
        note: Option<String>,
    },
    /// Try again at `at`; `pause_module_until` pauses every delivery to the
    /// module (the network asked to wait).
    Retry {
        /// Why.
        error: String,
        /// Next attempt.
        at: DateTime<Utc>,
        /// Pause for the whole module endpoint.
        pause_module_until: Option<DateTime<Utc>>,
    },
    /// Not attempted: this process's outbound rate limit for the module is
    /// used up until `until`, or the module waits for its operator. The
    /// claim does not count as an attempt, the module pauses until then, and
    /// newer values may still replace this one meanwhile (latest-wins
    /// instead of a queue behind the limiter).
    Deferred {
        /// When the module may send again.
        until: DateTime<Utc>,
        /// Why, when users should know (kept as the delivery's `last_error`).
        reason: Option<String>,
    },
    /// Give up.
    Failed {
        /// Why.
        error: String,
        /// True when the attempt or age cap was reached (a dead letter).
        dead: bool,
    },
}

/// What finishing an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptRecorded {
    /// The outcome was stored.
    Stored,
    /// A newer pending delivery to the same binding absorbed this one.
    Superseded,
    /// The lease had expired and another worker owns the delivery now.
    LeaseLost,
}
