//! Operating modes: `normal`, `surge`, `emergency`, and the controller that switches
//! between them.
//!
//! Each mode is a set of switches from the config (thresholds, escalation budget, disabled
//! routes, batching delay: see [`crate::config::ModeSwitches`]). The [`ModeController`] is
//! sans-IO: fed the node's own signals and `now`, it steps up as soon as any signal reaches
//! a mode's enter level, and steps down one level at a time, only once every signal is at or
//! below the current mode's exit level and the mode has lasted its minimum dwell time, so a
//! signal hovering near a threshold does not make the node flap. An admin call pins a mode
//! until unpinned. Every change is returned as a [`ModeChange`] for the caller to apply,
//! log and count.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{Mode, ModesSettings, SignalThresholds};

/// The node's own signals, sampled by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ModeSignals {
    /// Fullest route queue as a fraction of its length (see `Admission::queue_fraction`).
    pub queue_fraction: f64,
    /// Upstream latency moving average; `None` if unknown or no upstream.
    pub upstream_latency: Option<Duration>,
    /// Upstream error-rate moving average, in `[0, 1]`.
    pub upstream_error_rate: f64,
}

impl ModeSignals {
    fn latency_ms(&self) -> f64 {
        self.upstream_latency.map_or(0.0, |l| l.as_secs_f64() * 1000.0)
    }

    /// Whether any signal reaches `t`'s enter level.
    fn enters(&self, t: &SignalThresholds) -> bool {
        self.queue_fraction >= t.queue.enter
            || self.latency_ms() >= t.latency_ms.enter
            || self.upstream_error_rate >= t.error_rate.enter
    }

    /// Whether every signal is at or below `t`'s exit level.
    fn clears(&self, t: &SignalThresholds) -> bool {
        self.queue_fraction <= t.queue.exit
            && self.latency_ms() <= t.latency_ms.exit
            && self.upstream_error_rate <= t.error_rate.exit
    }
}

/// Why the mode changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwitchCause {
    /// The node's signals crossed a level; these are the values that did it.
    ModeSignals(ModeSignals),
    /// An admin call pinned the mode.
    Pinned,
}

/// One mode change, to apply (budget, thresholds, disabled routes), log and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeChange {
    /// Mode before.
    pub from: Mode,
    /// Mode after.
    pub to: Mode,
    /// Why.
    pub cause: SwitchCause,
}

impl fmt::Display for ModeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mode {} -> {}", self.from, self.to)?;
        match self.cause {
            SwitchCause::Pinned => write!(f, " (pinned by admin)"),
            SwitchCause::ModeSignals(s) => write!(
                f,
                " (queue {:.2}, upstream latency {:.1} ms, upstream errors {:.2})",
                s.queue_fraction,
                s.latency_ms(),
                s.upstream_error_rate
            ),
        }
    }
}

/// Decides the node's mode. See the module doc.
#[derive(Debug, Clone)]
pub struct ModeController {
    automatic: bool,
    min_dwell: Duration,
    surge: SignalThresholds,
    emergency: SignalThresholds,
    current: Mode,
    since: Instant,
    pinned: bool,
}

impl ModeController {
    /// Starts in `normal`, unpinned.
    pub fn new(settings: &ModesSettings, now: Instant) -> ModeController {
        ModeController {
            automatic: settings.automatic,
            min_dwell: settings.min_dwell,
            surge: settings.surge,
            emergency: settings.emergency,
            current: Mode::Normal,
            since: now,
            pinned: false,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.current
    }

    /// The pinned mode, if an admin pinned one.
    pub fn pinned(&self) -> Option<Mode> {
        self.pinned.then_some(self.current)
    }

    /// Feeds the latest signals; returns the change they cause, if any. Does nothing while
    /// pinned or when automatic switching is off.
    pub fn observe(&mut self, signals: &ModeSignals, now: Instant) -> Option<ModeChange> {
        if self.pinned || !self.automatic {
            return None;
        }
        let wanted = if signals.enters(&self.emergency) {
            Mode::Emergency
        } else if signals.enters(&self.surge) {
            Mode::Surge
        } else {
            Mode::Normal
        };
        let next = if wanted > self.current {
            wanted
        } else {
            let dwelt = now.saturating_duration_since(self.since) >= self.min_dwell;
            match self.current {
                Mode::Emergency if dwelt && signals.clears(&self.emergency) => Mode::Surge,
                Mode::Surge if dwelt && signals.clears(&self.surge) => Mode::Normal,
                _ => return None,
            }
        };
        self.switch(next, SwitchCause::ModeSignals(*signals), now)
    }

    /// Pins `mode` (an admin call) until [`ModeController::unpin`].
    pub fn pin(&mut self, mode: Mode, now: Instant) -> Option<ModeChange> {
        self.pinned = true;
        self.switch(mode, SwitchCause::Pinned, now)
    }

    /// Returns to automatic switching from the pinned mode; the next signals decide. A node
    /// without automatic switching goes back to `normal`, since no signal ever would.
    pub fn unpin(&mut self, now: Instant) -> Option<ModeChange> {
        if !self.pinned {
            return None;
        }
        self.pinned = false;
        // The dwell time counts from here, so unpinning does not drop a level at once.
        self.since = now;
        if self.automatic { None } else { self.switch(Mode::Normal, SwitchCause::Pinned, now) }
    }

    fn switch(&mut self, to: Mode, cause: SwitchCause, now: Instant) -> Option<ModeChange> {
        if to == self.current {
            return None;
        }
        let change = ModeChange { from: self.current, to, cause };
        self.current = to;
        self.since = now;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SEC: Duration = Duration::from_secs(1);

    /// The documented defaults: surge queue 0.5/0.25, latency 200/100 ms, errors 0.2/0.05;
    /// emergency 0.9/0.5, 1000/400 ms, 0.5/0.2; dwell 10 s.
    fn controller(extra: &str, t0: Instant) -> ModeController {
        let text = format!(
            "[plugins.p]\npath = \"p\"\n[routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.9 }}\n{extra}"
        );
        let cfg = crate::config::parse(&text, Path::new("n.toml")).unwrap();
        ModeController::new(&cfg.settings.modes, t0)
    }

    fn queue(f: f64) -> ModeSignals {
        ModeSignals { queue_fraction: f, ..ModeSignals::default() }
    }

    #[test]
    fn steps_up_at_once_and_down_only_after_clearing_and_dwelling() {
        let t0 = Instant::now();
        let mut c = controller("", t0);
        assert_eq!(c.observe(&queue(0.49), t0), None);
        let up = c.observe(&queue(0.5), t0).unwrap();
        assert_eq!((up.from, up.to), (Mode::Normal, Mode::Surge));
        assert!(up.to_string().contains("queue 0.50"), "{up}");
        // Between exit and enter: stays, however long.
        assert_eq!(c.observe(&queue(0.3), t0 + 60 * SEC), None);
        // Cleared, but the dwell time is counted from entering surge.
        let mut c = controller("", t0);
        c.observe(&queue(0.6), t0);
        assert_eq!(c.observe(&queue(0.1), t0 + 9 * SEC), None);
        let down = c.observe(&queue(0.1), t0 + 10 * SEC).unwrap();
        assert_eq!((down.from, down.to), (Mode::Surge, Mode::Normal));
    }

    #[test]
    fn a_hovering_signal_does_not_flap() {
        let t0 = Instant::now();
        let mut c = controller("", t0);
        let mut changes = 0;
        for i in 0..100u32 {
            let f = if i % 2 == 0 { 0.55 } else { 0.3 };
            changes += c.observe(&queue(f), t0 + SEC * i).is_some() as u32;
        }
        assert_eq!(changes, 1);
        assert_eq!(c.mode(), Mode::Surge);
    }

    #[test]
    fn upstream_signals_jump_straight_to_emergency_and_step_down_level_by_level() {
        let t0 = Instant::now();
        let mut c = controller("", t0);
        let failing = ModeSignals { upstream_error_rate: 0.6, ..ModeSignals::default() };
        assert_eq!(c.observe(&failing, t0).map(|m| m.to), Some(Mode::Emergency));
        let slow =
            ModeSignals { upstream_latency: Some(Duration::from_millis(300)), ..ModeSignals::default() };
        // Latency 300 ms clears emergency (exit 400) but not surge (exit 100).
        assert_eq!(c.observe(&slow, t0 + 10 * SEC).map(|m| m.to), Some(Mode::Surge));
        assert_eq!(c.observe(&slow, t0 + 30 * SEC), None);
        let ok = ModeSignals { upstream_latency: Some(Duration::from_millis(20)), ..ModeSignals::default() };
        assert_eq!(c.observe(&ok, t0 + 30 * SEC).map(|m| m.to), Some(Mode::Normal));
    }

    #[test]
    fn pinning_overrides_signals_until_unpinned() {
        let t0 = Instant::now();
        let mut c = controller("", t0);
        let pinned = c.pin(Mode::Emergency, t0).unwrap();
        assert_eq!((pinned.to, pinned.cause), (Mode::Emergency, SwitchCause::Pinned));
        assert_eq!(c.pinned(), Some(Mode::Emergency));
        assert_eq!(c.observe(&queue(0.0), t0 + 100 * SEC), None);
        assert_eq!(c.pin(Mode::Emergency, t0), None, "no change, no event");
        c.unpin(t0 + 100 * SEC);
        assert_eq!(c.observe(&queue(0.0), t0 + 105 * SEC), None, "dwell restarts at unpin");
        assert_eq!(c.observe(&queue(0.0), t0 + 110 * SEC).map(|m| m.to), Some(Mode::Surge));
    }

    #[test]
    fn manual_only_nodes_ignore_signals() {
        let t0 = Instant::now();
        let mut c = controller("[modes.switching]\nautomatic = false\n", t0);
        assert_eq!(c.observe(&queue(1.0), t0), None);
        assert_eq!(c.pin(Mode::Surge, t0).map(|m| m.to), Some(Mode::Surge));
        // Unpinned, nothing would ever step it down: it goes back to normal.
        assert_eq!(c.unpin(t0).map(|m| m.to), Some(Mode::Normal));
        assert_eq!(c.unpin(t0), None);
    }
}
