//! `gateway:service/timers`: durable timers of the current user.

use super::gateway::service::timers::Host;
use crate::host::CallState;

impl Host for CallState {
    fn schedule(&mut self, name: String, at_ms: u64) {
        if let Some(scope) = self.scope().cloned() {
            if let Some(user) = &scope.user_id {
                self.block_on(
                    scope
                        .backend
                        .schedule(&scope.service_id, user, &name, at_ms),
                );
            }
        }
    }

    fn cancel(&mut self, name: String) {
        if let Some(scope) = self.scope().cloned() {
            if let Some(user) = &scope.user_id {
                self.block_on(scope.backend.cancel(&scope.service_id, user, &name));
            }
        }
    }
}
