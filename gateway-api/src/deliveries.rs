//! Operators' view of the delivery queue: `GET /v1/admin/deliveries/dead`.

use crate::changes::TargetView;
use serde::{Deserialize, Serialize};

/// A delivery as an operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Delivery id (for redrive).
    pub id: String,
    /// The change it belongs to.
    pub change_id: String,
    /// Owner.
    pub user_id: String,
    /// Fields it carries.
    pub fields: Vec<String>,
    /// Target and status.
    #[serde(flatten)]
    pub target: TargetView,
}

/// Dead letters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetters {
    /// Newest first (at most 500).
    pub deliveries: Vec<DeliveryView>,
}
