//! `gateway:service/kv`: the key-value store of the service and the user of
//! the current call.

use super::gateway::service::kv::{Entry, Found, Host, KvError, Write};
use super::{KvEntry, KvFailure, KvWrite};
use crate::host::CallState;

/// Longest key, in bytes.
const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
const MAX_VALUE_BYTES: usize = 256 * 1024;

fn entry(e: KvEntry) -> Entry {
    Entry {
        key: e.key,
        value: e.value,
        version: e.version,
    }
}

fn failure(f: KvFailure) -> KvError {
    match f {
        KvFailure::Conflict(key) => KvError::Conflict(key),
        KvFailure::TooLarge(what) => KvError::TooLarge(what),
        KvFailure::Full(max) => KvError::TooLarge(format!(
            "this service keeps at most {max} keys per user; delete some first"
        )),
        KvFailure::Failed(why) => KvError::Failed(why),
    }
}

impl CallState {
    /// (service, user) of the call, or `no-user`.
    fn kv_scope(&self) -> Result<(super::ServiceScope, String), KvError> {
        let scope = self.scope().cloned().ok_or(KvError::NoUser)?;
        let user = scope.user_id.clone().ok_or(KvError::NoUser)?;
        Ok((scope, user))
    }
}

impl Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Entry>, KvError> {
        let (scope, user) = self.kv_scope()?;
        self.block_on(scope.backend.kv_get(&scope.service_id, &user, &key))
            .ok_or_else(|| KvError::Failed("no runtime".into()))?
            .map(|e| e.map(entry))
            .map_err(failure)
    }

    fn scan(&mut self, prefix: String, after: String, limit: u32) -> Result<Vec<Entry>, KvError> {
        let (scope, user) = self.kv_scope()?;
        let limit = limit.min(1000);
        self.block_on(
            scope
                .backend
                .kv_scan(&scope.service_id, &user, &prefix, &after, limit),
        )
        .ok_or_else(|| KvError::Failed("no runtime".into()))?
        .map(|entries| entries.into_iter().map(entry).collect())
        .map_err(failure)
    }

    fn find(&mut self, key: String) -> Result<Option<Found>, KvError> {
        let scope = self.scope().cloned().ok_or(KvError::NoUser)?;
        self.block_on(scope.backend.kv_find(&scope.service_id, &key))
            .ok_or_else(|| KvError::Failed("no runtime".into()))?
            .map(|found| {
                found.map(|(user_id, e)| Found {
                    user_id,
                    entry: entry(e),
                })
            })
            .map_err(failure)
    }

    fn commit(&mut self, writes: Vec<Write>) -> Result<Vec<u64>, KvError> {
        let (scope, user) = self.kv_scope()?;
        for w in &writes {
            if w.key.is_empty() || w.key.len() > MAX_KEY_BYTES {
                return Err(KvError::TooLarge(format!(
                    "keys are 1-{MAX_KEY_BYTES} bytes: {:?}",
                    w.key
                )));
            }
            if w.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
                return Err(KvError::TooLarge(format!(
                    "values are at most {MAX_VALUE_BYTES} bytes: {:?}",
                    w.key
                )));
            }
        }
        let writes = writes
            .into_iter()
            .map(|w| KvWrite {
                key: w.key,
                value: w.value,
                expect: w.expect,
            })
            .collect();
        self.block_on(scope.backend.kv_commit(&scope.service_id, &user, writes))
            .ok_or_else(|| KvError::Failed("no runtime".into()))?
            .map_err(failure)
    }
}
