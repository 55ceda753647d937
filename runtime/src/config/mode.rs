//! A node's operating modes and the signal levels that switch between them: the
//! vocabulary of `[modes]`. The controller that acts on them is [`crate::ModeController`].

use std::fmt;

use serde::Deserialize;

/// A node's operating mode. Each mode is a set of switches from the config
/// (`[modes.normal]`, `[modes.surge]`, `[modes.emergency]`), ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything healthy: escalate by the normal thresholds.
    Normal,
    /// Under load or a slow upstream: escalate less.
    Surge,
    /// Overloaded or upstream failing: shed what can be shed, answer locally.
    Emergency,
}

impl Mode {
    /// Every mode, least severe first; `Mode::ALL[m.index()] == m`.
    pub const ALL: [Mode; 3] = [Mode::Normal, Mode::Surge, Mode::Emergency];

    /// Lowercase name as in configs, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Surge => "surge",
            Mode::Emergency => "emergency",
        }
    }

    /// Position in [`Mode::ALL`], for per-mode tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Enter and exit levels of one signal: a mode is entered at `enter` and left at or below
/// `exit` (`exit < enter`), so a signal hovering near one level does not flap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Level at which the mode is entered.
    pub enter: f64,
    /// Level at or below which the mode may be left.
    pub exit: f64,
}

/// When an elevated mode is entered and left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalThresholds {
    /// Fullest route queue, as a fraction of its length.
    pub queue: Hysteresis,
    /// Upstream latency moving average, in milliseconds.
    pub latency_ms: Hysteresis,
    /// Upstream error-rate moving average, in `[0, 1]`.
    pub error_rate: Hysteresis,
}
