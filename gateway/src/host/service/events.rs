//! `gateway:service/events`: events to the current user's device inboxes,
//! their kind prefixed with the service id.

use super::gateway::service::events::Host;
use crate::host::CallState;

/// Largest event payload, in bytes.
const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

impl Host for CallState {
    fn publish(
        &mut self,
        device_ids: Vec<String>,
        kind: String,
        payload: String,
    ) -> Result<(), String> {
        let scope = self.scope().cloned().ok_or("not a service call")?;
        let user = scope
            .user_id
            .clone()
            .ok_or("a call made for nobody has no devices")?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(format!("payloads are at most {MAX_PAYLOAD_BYTES} bytes"));
        }
        if serde_json::from_str::<serde_json::Value>(&payload).is_err() {
            return Err("the payload is not JSON".into());
        }
        let kind = format!("{}.{kind}", scope.service_id);
        self.block_on(scope.backend.publish(&user, device_ids, kind, payload))
            .unwrap_or_else(|| Err("no runtime".into()))
    }
}
