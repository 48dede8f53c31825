//! Users and sessions (S1): `POST /v1/users`, `POST /v1/sessions`.

use crate::Redacted;
use serde::{Deserialize, Serialize};

/// Registration or login request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 3-64 characters of `[a-z0-9._-]`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9._-]{3,64}$", min_length = 3, max_length = 64)
    )]
    pub username: String,
    /// 8-1024 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, min_length = 8, max_length = 1024)
    )]
    pub password: Redacted<String>,
}

/// A registered user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// Opaque id.
    pub id: String,
    /// Login name.
    pub username: String,
}

/// A new session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// Bearer token for `Authorization: Bearer ...`. Shown once.
    pub token: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
}
