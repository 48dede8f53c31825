//! Domain types of the registry's public API. No sqlx type appears here.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A registered user (S1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Opaque id.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

/// A user together with the stored password hash, for login checks only.
#[derive(Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// PHC-formatted password hash (argon2id).
    pub password_hash: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// What is needed to store a new module version (S2).
#[derive(Clone)]
pub struct NewModule {
    /// Unique module id, e.g. `matrix`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The WebAssembly component bytes.
    pub plugin: Vec<u8>,
    /// Hex SHA-256 of `plugin`.
    pub plugin_digest: String,
    /// The operator's manifest (grants, rate limit, config).
    pub manifest: Value,
    /// What the connector reported about itself, when known.
    pub description: Option<Value>,
}

impl std::fmt::Debug for NewModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewModule")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("plugin_len", &self.plugin.len())
            .field("plugin_digest", &self.plugin_digest)
            .finish_non_exhaustive()
    }
}

/// A module of the supported-module library, without its plugin bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// Unique module id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Increases by one with every upload under this id.
    pub version: i64,
    /// Hex SHA-256 of the plugin bytes.
    pub plugin_digest: String,
    /// The operator's manifest. May hold module-level secrets: never serve it whole.
    pub manifest: Value,
    /// What the connector reported about itself, when known.
    pub description: Option<Value>,
    /// False once an operator removed the module from the library.
    pub enabled: bool,
    /// First upload.
    pub created_at: DateTime<Utc>,
    /// Latest upload or state change.
    pub updated_at: DateTime<Utc>,
}

/// Encrypted IM credentials as stored. The registry never sees plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentials(pub Vec<u8>);

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedCredentials(<{} bytes>)", self.0.len())
    }
}

/// What is needed to store a new binding (S3).
#[derive(Debug, Clone)]
pub struct NewBinding {
    /// Opaque id, chosen by the caller so it can be bound into the AEAD data.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Module id.
    pub module_id: String,
    /// Account login on that network.
    pub account: String,
    /// Encrypted credentials.
    pub credentials: SealedCredentials,
}

/// One IM account of one user: an entry of the user's application list.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Opaque id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Module id.
    pub module_id: String,
    /// Account login on that network.
    pub account: String,
    /// Encrypted credentials.
    pub credentials: SealedCredentials,
    /// Settings the gateway last applied to this account, as the network stores them.
    pub last_applied: Option<Value>,
    /// When the binding was made.
    pub created_at: DateTime<Utc>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it: `admin`, `user:<id>`, `anonymous`.
    pub actor: String,
    /// What was done, e.g. `module.upload`.
    pub action: String,
    /// What it was done to, e.g. a module id.
    pub subject: String,
    /// Extra facts (never secrets).
    pub detail: Value,
}
