//! `gateway:service/clock`: the gateway's clock (injected in tests).

use super::gateway::service::clock::Host;
use crate::host::CallState;

impl Host for CallState {
    fn now_ms(&mut self) -> u64 {
        match self.scope() {
            Some(scope) => scope.backend.now_ms(),
            None => CallState::now_ms(self),
        }
    }
}
