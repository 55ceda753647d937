//! The logging capability: guest messages go to the node's `tracing`, tagged with the plugin.

use super::HostState;
use super::bindings::cascade::plugin::logging::{Host, Level};

/// Longest message kept; a guest cannot flood the node's logs with one call.
const MAX_MESSAGE: usize = 4096;

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate(message, MAX_MESSAGE);
        let plugin = &*self.plugin.name;
        match level {
            _ if !self.plugin.logging => {}
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        // The SDK logs a panic's message just before the instance aborts: keep the last
        // error so the request's trap error can say why.
        if matches!(level, Level::Error) {
            self.last_error_log = Some(message);
        }
    }
}
