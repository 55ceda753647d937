//! The node's mode: sampled from its own signals every tick by a background task, pinned by
//! an admin, and applied to the policy's budget, admission's disabled routes and the
//! batchers' delay. The decisions are the sans-IO [`crate::ModeController`]'s.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::Node;
use crate::config::Mode;
use crate::modes::{ModeChange, ModeSignals};

/// How often the mode controller samples the node's signals.
const MODE_TICK: Duration = Duration::from_millis(100);

impl Node {
    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.modes.lock().mode()
    }

    /// The mode an admin pinned, if any.
    pub fn pinned_mode(&self) -> Option<Mode> {
        self.modes.lock().pinned()
    }

    /// Pins the mode (an admin call), or returns to automatic switching with `None`.
    pub fn pin_mode(&self, mode: Option<Mode>) {
        let now = Instant::now();
        let change = {
            let mut modes = self.modes.lock();
            match mode {
                Some(m) => modes.pin(m, now),
                None => modes.unpin(now),
            }
        };
        if let Some(change) = change {
            self.apply(&change);
        }
    }

    /// The node's own signals: its fullest queue, and its upstream's health.
    fn signals(&self) -> ModeSignals {
        let health = self.upstream.as_ref().map(|u| u.client.health());
        ModeSignals {
            queue_fraction: self.admission.queue_fraction(),
            upstream_latency: health.as_ref().and_then(|h| h.latency()),
            upstream_error_rate: health.map_or(0.0, |h| h.error_rate(Instant::now())),
        }
    }

    fn observe_mode(&self) {
        let signals = self.signals();
        let change = self.modes.lock().observe(&signals, Instant::now());
        if let Some(change) = change {
            self.apply(&change);
        }
    }

    fn apply(&self, change: &ModeChange) {
        self.enter(change.to);
        self.telemetry.mode_change(change);
        tracing::info!(%change, "mode switch");
    }

    /// Sets the switches of `mode` (without counting a switch).
    pub(super) fn enter(&self, mode: Mode) {
        let switches = self.config.settings.modes.switches(mode);
        self.policy.lock().set_budget(switches.escalation_budget, Instant::now());
        self.admission.set_disabled(&switches.disabled_routes);
        if let (Some(batching), Some(delay)) = (&self.batching, switches.batching_delay) {
            batching.settings.set_max_delay(delay);
        }
        self.telemetry.set_mode(mode);
    }
}

/// Samples the node's signals every tick while the node lives.
pub(super) async fn mode_loop(node: Weak<Node>) {
    let mut tick = tokio::time::interval(MODE_TICK);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        node.observe_mode();
    }
}
