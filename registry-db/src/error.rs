//! The registry's error type: callers match on what happened, never on SQL.

/// What went wrong in a registry call.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The row asked for does not exist (or is not visible to the caller).
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write; `constraint` names it as the
    /// migrations do (e.g. `users_username_key`) on every backend.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The constraint's name from the migrations.
        constraint: String,
    },
    /// The row is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// A stored value could not be read back (corrupt JSON, unknown enum text).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database URL is not one the registry supports.
    #[error("unsupported database URL (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database failure (connection lost, I/O, timeout).
    #[error("database error: {0}")]
    Database(String),
}

/// Column lists SQLite reports in "UNIQUE constraint failed: ..." mapped to the
/// constraint names PostgreSQL reports, so callers see one name everywhere.
const SQLITE_UNIQUE: &[(&str, &str)] = &[
    ("users.username", "users_username_key"),
    ("sessions.token_hash", "sessions_pkey"),
    ("modules.id", "modules_pkey"),
    ("users.id", "users_pkey"),
    ("bindings.id", "bindings_pkey"),
    (
        "bindings.user_id, bindings.module_id, bindings.account",
        "bindings_user_module_account_key",
    ),
    (
        "bindings.module_id, bindings.account",
        "bindings_module_account_key",
    ),
    (
        "idempotency_keys.user_id, idempotency_keys.key",
        "idempotency_keys_pkey",
    ),
    ("changes.id", "changes_id_key"),
    ("deliveries.id", "deliveries_id_key"),
    ("media.id", "media_pkey"),
    ("devices.id", "devices_pkey"),
    ("services.id", "services_pkey"),
];

impl From<sqlx::Error> for RegistryError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => RegistryError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let constraint = match db.constraint() {
                    Some(name) => name.to_owned(),
                    None => {
                        let msg = db.message();
                        let columns = msg
                            .strip_prefix("UNIQUE constraint failed: ")
                            .unwrap_or(msg);
                        SQLITE_UNIQUE
                            .iter()
                            .find(|(cols, _)| *cols == columns)
                            .map(|(_, name)| (*name).to_owned())
                            .unwrap_or_else(|| columns.to_owned())
                    }
                };
                RegistryError::Conflict { constraint }
            }
            _ => RegistryError::Database(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for RegistryError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        RegistryError::Migration(err.to_string())
    }
}

impl From<serde_json::Error> for RegistryError {
    fn from(err: serde_json::Error) -> Self {
        RegistryError::Corrupt(err.to_string())
    }
}

/// Result alias for registry calls.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
