//! Notices between gateway processes sharing one PostgreSQL database: the
//! ids of changes whose targets moved, so that every process's event
//! streams hear of a delivery another process made, without polling.
//! PostgreSQL's LISTEN/NOTIFY carries them; on SQLite (one process) there
//! is nothing to tell and nothing to hear.

use crate::{Backend, Registry, Result};
use sqlx::postgres::PgListener;

/// The notification channel.
const CHANNEL: &str = "gateway_changes";
/// Largest payload sent at once (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7900;

impl Registry {
    /// Tells every listening process that these changes' targets moved.
    /// A no-op on SQLite.
    pub async fn announce_changes(&self, change_ids: &[&str]) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut payload = String::new();
        for id in change_ids {
            if !payload.is_empty() && payload.len() + 1 + id.len() > MAX_PAYLOAD {
                self.notify(&payload).await?;
                payload.clear();
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(id);
        }
        if !payload.is_empty() {
            self.notify(&payload).await?;
        }
        Ok(())
    }

    async fn notify(&self, payload: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts hearing [`Registry::announce_changes`] of every process (this
    /// one's included); `None` on SQLite.
    pub async fn listen_changes(&self) -> Result<Option<ChangeNotices>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url.0).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(ChangeNotices { listener }))
    }
}

/// Announced change ids as they come.
pub struct ChangeNotices {
    listener: PgListener,
}

impl std::fmt::Debug for ChangeNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotices").finish_non_exhaustive()
    }
}

impl ChangeNotices {
    /// The next announced batch of change ids. An error means the
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
