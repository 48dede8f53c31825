//! What every event stream shares: the per-user cap on open streams and
//! the rule that a stream lives no longer than the token that opened it.

use super::error::ApiError;
use super::AppState;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

/// Event streams one user may hold open at once by default (each holds a
/// connection and reads the database while its change is pending);
/// `DeviceLimits::max_streams_per_user` sets it.
pub const MAX_STREAMS_PER_USER: usize = 16;

/// Open event streams per user.
#[derive(Default)]
pub struct OpenStreams(std::sync::Mutex<HashMap<String, usize>>);

impl OpenStreams {
    fn open(self: &Arc<Self>, user_id: &str, max: usize) -> Option<StreamSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user_id.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot(self.clone(), user_id.to_owned()))
    }
}

/// One open stream; closing it (dropping) frees its place.
pub struct StreamSlot(Arc<OpenStreams>, String);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// A place for one more stream of the user; `429 too_many_streams` when
/// they hold as many as the configuration allows.
pub fn open(state: &AppState, user_id: &str) -> Result<StreamSlot, ApiError> {
    let max = state.config.devices.max_streams_per_user;
    state.streams.open(user_id, max).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("at most {max} event streams at once; close one first"),
        )
    })
}

/// True when the token that opened a stream has ended (logged out,
/// expired, device removed); a database hiccup is not an end (the next
/// check asks again).
pub async fn token_ended(state: &AppState, token_hash: &str) -> bool {
    let now = state.config.clock.now();
    matches!(
        state.registry.session_owner(token_hash, now).await,
        Err(registry_db::RegistryError::NotFound)
    )
}
