//! Notices between gateway processes sharing one PostgreSQL database: the
//! ids of changes whose targets moved, and of devices whose inbox got an
//! event, so that every process's event streams hear of what another
//! process did, without polling.
//! PostgreSQL's LISTEN/NOTIFY carries them; on SQLite (one process) there
//! is nothing to tell and nothing to hear.

use crate::{Backend, Registry, Result};
use sqlx::postgres::PgListener;

/// The channel of change ids.
const CHANGES: &str = "gateway_changes";
/// The channel of device ids.
const DEVICES: &str = "gateway_devices";
/// Largest payload sent at once (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7900;

impl Registry {
    /// Tells every listening process that these changes' targets moved.
    /// A no-op on SQLite.
    pub async fn announce_changes(&self, change_ids: &[&str]) -> Result<()> {
        self.announce(CHANGES, change_ids).await
    }

    /// Tells every listening process that these devices' inboxes grew.
    /// A no-op on SQLite.
    pub async fn announce_devices(&self, device_ids: &[&str]) -> Result<()> {
        self.announce(DEVICES, device_ids).await
    }

    /// Starts hearing [`Registry::announce_devices`] of every process;
    /// `None` on SQLite.
    pub async fn listen_devices(&self) -> Result<Option<Notices>> {
        self.listen(DEVICES).await
    }

    async fn announce(&self, channel: &str, ids: &[&str]) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut payload = String::new();
        for id in ids {
            if !payload.is_empty() && payload.len() + 1 + id.len() > MAX_PAYLOAD {
                self.notify(channel, &payload).await?;
                payload.clear();
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(id);
        }
        if !payload.is_empty() {
            self.notify(channel, &payload).await?;
        }
        Ok(())
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts hearing [`Registry::announce_changes`] of every process (this
    /// one's included); `None` on SQLite.
    pub async fn listen_changes(&self) -> Result<Option<ChangeNotices>> {
        self.listen(CHANGES).await
    }

    async fn listen(&self, channel: &str) -> Result<Option<Notices>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url.0).await?;
        listener.listen(channel).await?;
        Ok(Some(Notices { listener }))
    }
}

/// Announced ids of one channel as they come.
pub struct Notices {
    listener: PgListener,
}

/// Announced change ids.
pub type ChangeNotices = Notices;

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    /// The next announced batch of ids. An error means the
    /// connection broke; the next call reconnects (what was announced in
    /// between is not heard: listeners keep a slow poll as a safety net).
    pub async fn next(&mut self) -> Result<Vec<String>> {
        let notice = self.listener.recv().await?;
        Ok(notice
            .payload()
            .split(',')
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect())
    }
}
