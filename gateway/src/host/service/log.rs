//! `gateway:service/log`: into the gateway's log, escaped, tagged with the
//! service id.

use super::gateway::service::log::{Host, Level};
use crate::host::types::LogLevel;
use crate::host::CallState;

impl Host for CallState {
    fn write(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log(level, &message);
    }
}
