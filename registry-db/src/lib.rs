//! # registry-db
//!
//! The gateway's registry: users, sessions, the supported-module library,
//! bindings (each user's application list) and the audit log. This is the only
//! crate of the workspace that speaks SQL. It runs on SQLite (the embedded
//! default) and on PostgreSQL (several gateway processes sharing one database),
//! with one migration set per backend and domain types in its public API.

mod audit;
mod bindings;
mod changes;
mod deliveries;
mod error;
mod federation_types;
mod media;
mod modules;
#[cfg(feature = "test-util")]
pub mod scratch;
mod sql;
mod types;
mod users;

pub use error::{RegistryError, Result};
pub use federation_types::{
    AttemptOutcome, AttemptRecorded, Change, ChangeRecorded, Delivery, DeliveryStatus, Media,
    NewChange, NewDelivery, SettingsMap,
};
pub use types::{
    AuditEvent, Binding, Module, NewBinding, NewModule, SealedCredentials, User, UserCredentials,
};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

/// Which database engine a registry runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (single process).
    Sqlite,
    /// PostgreSQL server (one or more processes).
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Handle to the registry database. Cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Registry {
    pool: AnyPool,
    /// Connections for write transactions only, so a writer never queues
    /// behind a burst of reads for a connection (on SQLite: the one writer
    /// connection, whose page cache no other writer invalidates).
    writes: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time; writers of this process queue here
    /// instead of in SQLite's busy handler, which sleeps and backs off.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Registry {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`),
    /// creating a missing SQLite file, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let (url, max, max_writes) = match backend {
            Backend::Sqlite => (sqlite_url(url), 8, 1),
            Backend::Postgres => (url.to_owned(), 16, 6),
        };
        let options = || {
            AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers run while one writer commits;
                            // the busy timeout queues writers instead of failing.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            // Pages are read through a shared mapping instead of
                            // a copy per connection after every other writer's
                            // commit.
                            conn.execute("PRAGMA mmap_size = 268435456").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options().max_connections(max).connect(&url).await?;
        let writes = options().max_connections(max_writes).connect(&url).await?;
        let registry = Registry {
            pool,
            writes,
            backend,
            writer: Default::default(),
        };
        registry.migrate().await?;
        Ok(registry)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// A transaction that will write. SQLite takes the write lock up front,
    /// so a transaction that reads first cannot fail to upgrade later.
    /// Keep the returned guard until the transaction ends.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(
        sqlx::Transaction<'static, sqlx::Any>,
        Option<tokio::sync::OwnedMutexGuard<()>>,
    )> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let guard = self.writer.clone().lock_owned().await;
                (
                    self.writes.begin_with("BEGIN IMMEDIATE").await?,
                    Some(guard),
                )
            }
            Backend::Postgres => (self.writes.begin().await?, None),
        })
    }

    /// A write transaction whose commit need not wait for the WAL flush: for
    /// delivery bookkeeping, where a commit lost with a database crash only
    /// means a delivery is claimed and pushed again (at-least-once). Change
    /// reports never use it: their `202` promises durability.
    pub(crate) async fn begin_bookkeeping(
        &self,
    ) -> Result<(
        sqlx::Transaction<'static, sqlx::Any>,
        Option<tokio::sync::OwnedMutexGuard<()>>,
    )> {
        let (mut tx, guard) = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok((tx, guard))
    }

    /// Row locking for a read-then-write inside a transaction (SQLite's
    /// write transaction already excludes other writers).
    pub(crate) fn lock_rows(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE",
        }
    }

    /// The engine behind this registry.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers and every known migration is applied.
    pub async fn ready(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = $1")
                .bind(true)
                .fetch_one(&self.pool)
                .await?;
        let known = migrator.iter().count() as i64;
        if applied < known {
            return Err(RegistryError::Migration(format!(
                "{applied} of {known} migrations applied"
            )));
        }
        Ok(())
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.writes.close().await;
        self.pool.close().await;
    }
}

fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(RegistryError::UnsupportedUrl(redact_url(url)))
    }
}

/// Adds `mode=rwc` so a missing SQLite file is created.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Drops a password from a URL before it goes into an error message.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| RegistryError::Corrupt(format!("timestamp {ms}")))
}

pub(crate) fn json_column(row: &AnyRow, column: &str) -> Result<Option<serde_json::Value>> {
    use sqlx::Row;
    let text: Option<String> = row.try_get(column)?;
    Ok(match text {
        Some(t) => Some(serde_json::from_str(&t)?),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified_and_redacted() {
        assert_eq!(backend_of("sqlite://x.db").ok(), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://h/db").ok(), Some(Backend::Postgres));
        match backend_of("mysql://u:secret@h/db") {
            Err(RegistryError::UnsupportedUrl(u)) => assert!(!u.contains("secret")),
            other => panic!("expected UnsupportedUrl, got {other:?}"),
        }
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
    }
}
