//! `gateway:service/config`: the manifest's `config`, readable by every
//! service (no grant: it is the service's own).

use super::gateway::service::config::Host;
use crate::host::CallState;

impl Host for CallState {
    fn get(&mut self) -> String {
        self.grants.config_json.clone()
    }
}
