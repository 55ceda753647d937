//! The logging capability: guest messages go to the node's `tracing`, tagged with the plugin.
//!
//! A guest's log lines are untrusted text at a rate the guest chooses, so the host:
//! - **rate-limits them per plugin**, with one token bucket shared by all the instances of a
//!   loaded plugin ([`SandboxConfig::guest_log_rate`](super::SandboxConfig)). A line over the
//!   rate is dropped without being read. Drops are counted, never silent: when a request that
//!   dropped lines ends, the host logs one warning, "plugin P: N log lines of this request
//!   dropped ...", and adds N to [`SandboxStats::log_lines_dropped`](super::SandboxStats).
//! - **escapes them**: control characters (newline, carriage return, tab, the escape that
//!   starts terminal sequences...), Unicode line separators and bidirectional overrides are
//!   written as `\n`, `\u{1b}` and so on, and a backslash as `\\`. One call logs one line, and
//!   a plugin cannot forge lines that look like the node's own.
//! - **cuts them** to [`MAX_LINE_BYTES`] of escaped text, on a character boundary, saying how
//!   much was cut.
//!
//! `log` is linked by hand, taking the message as a view of guest memory: a dropped line is
//! never read, a kept one is copied only up to the longest line (see `budget.rs`).
//! Error-level messages are read even over the rate, and kept (escaped and cut) so that a
//! trap's error can say what the guest said last: the SDK logs a panic's message just before
//! the instance aborts.

use std::fmt::Write;
use std::time::Instant;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmStr};

use super::HostState;
use super::bindings::cascade::plugin::logging::Level;
use crate::config::RateSettings;

/// The WIT interface `log` belongs to, as the component names its import.
const INTERFACE: &str = "cascade:plugin/logging@0.1.0";

/// Longest line kept from one message, in bytes of escaped text: a guest cannot flood the
/// node's logs with one call. A cut line ends with a short note, ` [cut: N more bytes]`.
pub(super) const MAX_LINE_BYTES: usize = 4096;

/// Links `log` into `linker`, taking the message as a view (see the module doc).
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance(INTERFACE)?.func_wrap(
        "log",
        |store: StoreContextMut<'_, HostState>, (level, message): (Level, WasmStr)| {
            log(store, level, &message)
        },
    )
}

/// The `log` import.
fn log(mut store: StoreContextMut<'_, HostState>, level: Level, message: &WasmStr) -> wasmtime::Result<()> {
    let plugin = store.data().plugin.clone();
    let emit = plugin.logging && plugin.log_bucket.lock().try_take(Instant::now());
    if plugin.logging && !emit {
        store.data_mut().log_dropped += 1;
    }
    let is_error = matches!(level, Level::Error);
    if !emit && !is_error {
        return Ok(());
    }
    let line = escape(&message.to_str(&store)?, MAX_LINE_BYTES);
    let name = &*plugin.name;
    if emit {
        match level {
            Level::Trace => tracing::trace!(plugin = name, "{line}"),
            Level::Debug => tracing::debug!(plugin = name, "{line}"),
            Level::Info => tracing::info!(plugin = name, "{line}"),
            Level::Warn => tracing::warn!(plugin = name, "{line}"),
            Level::Error => tracing::error!(plugin = name, "{line}"),
        }
    }
    if is_error {
        store.data_mut().last_error_log = Some(line);
    }
    Ok(())
}

/// Logs how many lines one request of `plugin` had dropped by the rate limit `rate`.
pub(super) fn report_dropped(plugin: &str, dropped: u64, rate: RateSettings) {
    tracing::warn!(
        plugin,
        dropped,
        "plugin {plugin}: {dropped} log lines of this request dropped: the plugin may log {} lines \
         a second, in bursts of {}",
        rate.per_second,
        rate.burst
    );
}

/// `message` as one log line: escaped (see the module doc) and cut to at most `max` bytes
/// on a character boundary, plus a note saying how much of the message was cut.
pub(super) fn escape(message: &str, max: usize) -> String {
    let mut line = String::with_capacity(message.len().min(max));
    for (at, c) in message.char_indices() {
        let before = line.len();
        match c {
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() || is_line_or_direction_control(c) => {
                // Writing to a String cannot fail.
                let _ = write!(line, "\\u{{{:x}}}", u32::from(c));
            }
            c => line.push(c),
        }
        if line.len() > max {
            line.truncate(before);
            let _ = write!(line, " [cut: {} more bytes]", message.len() - at);
            return line;
        }
    }
    line
}

/// Characters that are not control characters but still break or reorder a line on a
/// terminal: the Unicode line and paragraph separators and the bidirectional overrides.
fn is_line_or_direction_control(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longest note that ends a cut line: ` [cut: N more bytes]` with N up to 20 digits.
    const CUT_NOTE_MAX: usize = 40;

    #[test]
    fn lines_are_escaped_so_a_guest_cannot_forge_or_recolour_lines() {
        let forged = "ok\n2030-01-01T00:00:00Z ERROR cascade_runtime: forged\r\x1b[2J\u{2028}\u{202e}\\n";
        let line = escape(forged, MAX_LINE_BYTES);
        assert_eq!(
            line,
            "ok\\n2030-01-01T00:00:00Z ERROR cascade_runtime: forged\\r\\u{1b}[2J\\u{2028}\\u{202e}\\\\n"
        );
        assert!(!line.chars().any(|c| c.is_control() || is_line_or_direction_control(c)), "{line}");
        assert_eq!(escape("plain text, ünïcode", MAX_LINE_BYTES), "plain text, ünïcode");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary_saying_how_much_was_cut() {
        assert_eq!(escape("héllo", 2), "h [cut: 5 more bytes]");
        assert_eq!(escape("héllo", 3), "hé [cut: 3 more bytes]");
        assert_eq!(escape("hi", 10), "hi");
        // An escape is never split: `\n` takes two bytes of the line.
        assert_eq!(escape("a\nb", 2), "a [cut: 2 more bytes]");
        // A bell escapes to `\u{7}`: 819 of them fit in 4096 bytes, the rest is cut.
        let huge = escape(&"\x07".repeat(1 << 20), MAX_LINE_BYTES);
        assert!(huge.len() <= MAX_LINE_BYTES + CUT_NOTE_MAX, "{}", huge.len());
        let kept = MAX_LINE_BYTES / "\\u{7}".len();
        assert!(huge.ends_with(&format!("\\u{{7}} [cut: {} more bytes]", (1 << 20) - kept)), "{huge:.40}");
    }
}
