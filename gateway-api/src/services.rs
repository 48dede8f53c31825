//! Plugin-hosted services: the catalogue and the operator's manifest.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One installed service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceView {
    /// Id: the `{service}` of `/v1/services/{service}/...`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Increases with every upload (1 for the first).
    pub version: i64,
}

/// The installed services, by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    /// Services, by id.
    pub services: Vec<ServiceView>,
}

/// A service's manifest, as uploaded by the operator (form part `manifest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceManifest {
    /// Id: 1-32 characters of `[a-z0-9_-]`, starting with a letter.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$", min_length = 1, max_length = 32)
    )]
    pub id: String,
    /// Human name: 1-100 characters, not only white space.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
            min_length = 1,
            max_length = 100
        )
    )]
    pub name: String,
    /// The service's own settings (the handoff service reads
    /// `offer_ttl_secs`), given to it on every call.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Map<String, Value>,
    /// Host capabilities granted (a repeat counts once): `kv`, `devices`,
    /// `events`, `timers`, `http`, `log`, `clock`. A plugin importing one
    /// it was not granted is refused (`invalid_plugin`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// `scheme://host:port` origins it may call with the `http` grant.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline, value_type = Vec<crate::modules::Origin>))]
    pub allowed_hosts: Vec<String>,
}
