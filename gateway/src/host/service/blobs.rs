//! `gateway:service/blobs`: the blobs of the current user in this service
//! (grant `blobs`). The bytes stay in the gateway; the plugin sees a
//! blob's size, progress and checksum, and may delete it.

use super::gateway::service::blobs::{Blob, Host};
use crate::host::CallState;

impl Host for CallState {
    fn get(&mut self, id: String) -> Option<Blob> {
        let scope = self.scope().cloned()?;
        let user = scope.user_id.clone()?;
        self.block_on(scope.backend.blob(&scope.service_id, &user, &id))
            .flatten()
            .map(|b| Blob {
                id: b.id,
                length: b.length,
                offset: b.offset,
                sha256: b.sha256,
            })
    }

    fn delete(&mut self, id: String) -> bool {
        let Some(scope) = self.scope().cloned() else {
            return false;
        };
        let Some(user) = scope.user_id.clone() else {
            return false;
        };
        self.block_on(scope.backend.delete_blob(&scope.service_id, &user, &id))
            .unwrap_or(false)
    }
}
