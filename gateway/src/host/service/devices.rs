//! `gateway:service/devices`: the devices of the user of the current call.

use super::gateway::service::devices::{Device, Host};
use crate::host::CallState;

impl Host for CallState {
    fn all(&mut self) -> Vec<Device> {
        let Some(scope) = self.scope().cloned() else {
            return Vec::new();
        };
        let Some(user) = scope.user_id.clone() else {
            return Vec::new();
        };
        self.block_on(scope.backend.devices(&user))
            .unwrap_or_default()
            .into_iter()
            .map(|d| Device {
                id: d.id,
                name: d.name,
                capabilities: d.capabilities,
                active: d.active,
                ip: d.ip,
                port: d.port,
                last_seen_ms: d.last_seen_ms,
            })
            .collect()
    }
}
