//! # registry-db
//!
//! The gateway's registry: users, sessions, the supported-module library,
//! bindings (each user's application list) and the audit log. This is the only
//! crate of the workspace that speaks SQL. It runs on SQLite (the embedded
//! default) and on PostgreSQL (several gateway processes sharing one database),
//! with one migration set per backend and domain types in its public API.

mod audit;
mod bindings;
mod blobs;
mod changes;
mod deliveries;
mod devices;
mod error;
mod federation_types;
mod jobs;
mod key_check;
mod media;
mod modules;
mod notices;
mod rate_limits;
#[cfg(feature = "test-util")]
pub mod scratch;
mod service_kv;
mod services;
mod sql;
mod types;
mod users;

pub use blobs::{AppendError, BlobPiece, BlobUpload};
pub use devices::{Device, DeviceEvent, DeviceHistoryEntry, DeviceState, NewDevice, SessionOwner};
pub use error::{RegistryError, Result};
pub use federation_types::{
    AttemptOutcome, AttemptRecorded, Change, ChangeRecorded, Delivery, DeliveryStatus, Media,
    NewChange, NewDelivery, SettingsMap,
};
pub use jobs::{JobOutcome, JobState, MediaJob};
pub use notices::{ChangeNotices, Notices};
pub use rate_limits::RateQuota;
pub use service_kv::{KvEntry, KvError, KvWrite};
pub use services::{DueTimer, ServiceRow};
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

/// SQLite commit durability of the read pool's connections: in WAL mode a
/// commit is synced at the next checkpoint, not at once (faster, and the
/// database stays consistent; only the latest commits can be lost).
const SYNC_NORMAL: &str = "PRAGMA synchronous = NORMAL";
/// SQLite commit durability of the write connections: every commit syncs the
/// WAL before it returns.
const SYNC_FULL: &str = "PRAGMA synchronous = FULL";
/// Starts a durable write transaction on SQLite (see `Registry::begin_write`).
const BEGIN_DURABLE: &str = "PRAGMA synchronous = FULL; BEGIN IMMEDIATE";
/// Starts a bookkeeping transaction on SQLite (see
/// `Registry::begin_bookkeeping`).
const BEGIN_BOOKKEEPING: &str = "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE";
/// Starts a bookkeeping transaction on PostgreSQL: its commit does not wait
/// for the WAL flush, set in the same round trip as `BEGIN` (one statement
/// fewer per claim and per batch of outcomes).
const PG_BEGIN_BOOKKEEPING: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// A transaction on a write connection.
pub(crate) type WriteTx = sqlx::Transaction<'static, sqlx::Any>;
/// This process's turn as SQLite's one writer (`None` on PostgreSQL).
pub(crate) type WriterGuard = tokio::sync::OwnedMutexGuard<()>;

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
    /// Where the database is (for a LISTEN connection of its own).
    url: DatabaseUrl,
}

/// A database URL, left out of `Debug` output (it may hold a password).
#[derive(Clone)]
struct DatabaseUrl(std::sync::Arc<str>);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// Connections one process opens to PostgreSQL by default (plus one per
/// LISTEN relay): five processes fit the server's default `max_connections`
/// of 100.
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 15;

impl Registry {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`),
    /// creating a missing SQLite file, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_POSTGRES_CONNECTIONS).await
    }

    /// [`Registry::connect`] opening at most `postgres_connections` to a
    /// PostgreSQL server (a third of them, at least 2, for write
    /// transactions); SQLite ignores it. The server's `max_connections`
    /// (100 by default) must cover every process's share.
    pub async fn connect_with(url: &str, postgres_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let (url, max, max_writes) = match backend {
            Backend::Sqlite => (sqlite_url(url), 8, 1),
            Backend::Postgres => {
                let total = postgres_connections.max(4);
                let writes = (total / 3).max(2);
                (url.to_owned(), total - writes, writes)
            }
        };
        // `synchronous` is each connection's commit durability on SQLite.
        // Write transactions set their own before they begin (see
        // `begin_write`); the read pool keeps NORMAL, so its single-statement
        // writes (accounts, sessions, modules, bindings) are as durable as
        // before this setting existed.
        let options = |synchronous: &'static str| {
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
                            conn.execute(synchronous).await?;
                            // No memory map: every page of the file a query
                            // touched would stay in the process's resident
                            // memory (127 MiB of 159 MiB with 100,000 users);
                            // each connection's own page cache is bounded
                            // (SQLite's default, 2 MiB) and the kernel's
                            // page cache serves the rest.
                            conn.execute("PRAGMA mmap_size = 0").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(SYNC_NORMAL)
            .max_connections(max)
            .connect(&url)
            .await?;
        let writes = options(SYNC_FULL)
            .max_connections(max_writes)
            .connect(&url)
            .await?;
        let registry = Registry {
            pool,
            writes,
            backend,
            writer: Default::default(),
            url: DatabaseUrl(url.as_str().into()),
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

    /// A transaction that will write and whose commit is durable when it
    /// returns: change reports use it, and their `202` promises exactly that.
    /// SQLite takes the write lock up front, so a transaction that reads
    /// first cannot fail to upgrade later. Keep the returned guard until the
    /// transaction ends.
    pub(crate) async fn begin_write(&self) -> Result<(WriteTx, Option<WriterGuard>)> {
        // In WAL mode NORMAL syncs the WAL only at checkpoints, so a commit
        // can be lost on power loss; FULL syncs it at every commit. The
        // setting cannot change inside a transaction, hence before BEGIN, in
        // the same call.
        self.begin_on_writer(BEGIN_DURABLE, "BEGIN").await
    }

    /// A write transaction whose commit need not wait for the WAL flush: for
    /// delivery bookkeeping, where a commit lost with a database crash only
    /// means a delivery is claimed and pushed again (at-least-once). Change
    /// reports never use it: their `202` promises durability.
    pub(crate) async fn begin_bookkeeping(&self) -> Result<(WriteTx, Option<WriterGuard>)> {
        self.begin_on_writer(BEGIN_BOOKKEEPING, PG_BEGIN_BOOKKEEPING)
            .await
    }

    /// A transaction on a write connection, started by the statement list
    /// of its backend (`sqlite_begin` or `postgres_begin`).
    async fn begin_on_writer(
        &self,
        sqlite_begin: &'static str,
        postgres_begin: &'static str,
    ) -> Result<(WriteTx, Option<WriterGuard>)> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let guard = self.writer.clone().lock_owned().await;
                (self.writes.begin_with(sqlite_begin).await?, Some(guard))
            }
            Backend::Postgres => (self.writes.begin_with(postgres_begin).await?, None),
        })
    }

    /// The commit durability in force inside a change-report transaction
    /// ([`CommitDurability::writes`]) and a delivery-bookkeeping transaction
    /// ([`CommitDurability::bookkeeping`]), as the engine reports it. For
    /// tests: a `202` must mean the report survives a power loss.
    #[cfg(feature = "test-util")]
    pub async fn commit_durability(&self) -> Result<CommitDurability> {
        Ok(CommitDurability {
            writes: self.durability_in(self.begin_write().await?).await?,
            bookkeeping: self.durability_in(self.begin_bookkeeping().await?).await?,
        })
    }

    #[cfg(feature = "test-util")]
    async fn durability_in(
        &self,
        (mut tx, _writer): (WriteTx, Option<WriterGuard>),
    ) -> Result<String> {
        let setting = match self.backend {
            Backend::Sqlite => {
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *tx)
                    .await?;
                match level {
                    0 => "off".to_owned(),
                    1 => "normal".to_owned(),
                    2 => "full".to_owned(),
                    3 => "extra".to_owned(),
                    other => other.to_string(),
                }
            }
            Backend::Postgres => {
                sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        tx.rollback().await?;
        Ok(setting)
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

/// Commit durability settings, from [`Registry::commit_durability`]: SQLite's
/// `synchronous` by name (`off`, `normal`, `full`, `extra`), PostgreSQL's
/// `synchronous_commit` (`on`, `off`, ...).
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDurability {
    /// Inside the transactions that record change reports.
    pub writes: String,
    /// Inside the transactions that claim deliveries and record outcomes.
    pub bookkeeping: String,
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
