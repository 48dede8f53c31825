//! Relaying other processes' PostgreSQL notices (registry-db's `Notices`)
//! into this process, for every kind of event stream: change ids for the
//! changes' streams, device ids for the devices' inboxes.

use registry_db::{Notices, RegistryError};
use std::future::Future;
use std::time::Duration;

/// Listens with `listen` and hands every announced id to `forward` until
/// `stop` turns true; returns at once when `listen` answers `None` (SQLite:
/// no other process). A broken connection is reopened after a second;
/// streams re-read on their own meanwhile. `what` names the notices in logs.
pub async fn relay<L, F>(
    listen: L,
    mut forward: impl FnMut(String),
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &str,
) where
    L: Fn() -> F,
    F: Future<Output = Result<Option<Notices>, RegistryError>>,
{
    let mut notices = loop {
        match listen().await {
            Ok(Some(notices)) => break notices,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other processes' {what}; retrying");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = notices.next() => next,
        };
        match next {
            Ok(ids) => ids.into_iter().for_each(&mut forward),
            Err(e) => {
                tracing::warn!(error = %e, "listening for other processes' {what} failed");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
