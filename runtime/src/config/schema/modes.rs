//! `[modes]`: what changes in each mode (`normal`, `surge`, `emergency`) and, in
//! `[modes.switching]`, when the node changes mode by itself. In a file of its own because
//! every table in it is kept per mode.

use serde::{Deserialize, Serialize};

use super::default_true;
use crate::config::Mode;

/// `[modes]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    /// `[modes.normal]`. Defaults: escalation budget 100/s (burst 200).
    #[serde(default)]
    pub normal: ModeSwitchesConfig,
    /// `[modes.surge]`. Defaults: escalation budget 20/s (burst 40).
    #[serde(default)]
    pub surge: ModeSwitchesConfig,
    /// `[modes.emergency]`. Defaults: escalation budget 0 (no escalation).
    #[serde(default)]
    pub emergency: ModeSwitchesConfig,
    /// `[modes.switching]`: automatic mode changes.
    #[serde(default)]
    pub switching: SwitchingConfig,
}

/// `[modes.<mode>]`: what changes in a mode. Unset fields take the mode's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSwitchesConfig {
    /// `threshold = 0.0`: the confidence threshold for every route that does not set its own
    /// for this mode, in `[0, 1]`. Default: each route's `normal`.
    pub threshold: Option<f64>,
    /// `escalation_budget_rps = 100.0`: escalations per second allowed (a token bucket that
    /// protects the upstream); `0` escalates nothing. Default: see [`ModesConfig`].
    pub escalation_budget_rps: Option<f64>,
    /// `escalation_burst = 200`: escalations allowed at once. Default: twice the rate, at
    /// least 1 unless the rate is 0.
    pub escalation_burst: Option<u32>,
    /// `disabled_routes = ["bulk"]`: routes refused with `503` in this mode. Default `[]`.
    #[serde(default)]
    pub disabled_routes: Vec<String>,
    /// `batching_delay_us = 500`: the batcher's wait for more requests in this mode.
    /// Default: `[batching].max_delay_us`.
    pub batching_delay_us: Option<u64>,
}

/// `[modes.switching]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchingConfig {
    /// `automatic = true`: change mode on the node's own signals. Default `true`.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// `min_dwell_ms = 10000`: the least time spent in a mode before stepping down again
    /// (stepping up is immediate). Default `10000`.
    #[serde(default = "default_min_dwell_ms")]
    pub min_dwell_ms: u64,
    /// `[modes.switching.surge]`: when to enter and leave `surge`. Defaults: queue 0.5/0.25,
    /// upstream latency 200/100 ms, upstream error rate 0.2/0.05.
    #[serde(default = "default_surge_signals")]
    pub surge: SignalThresholdsConfig,
    /// `[modes.switching.emergency]`: when to enter and leave `emergency`. Defaults: queue
    /// 0.9/0.5, upstream latency 1000/400 ms, upstream error rate 0.5/0.2.
    #[serde(default = "default_emergency_signals")]
    pub emergency: SignalThresholdsConfig,
}

impl Default for SwitchingConfig {
    fn default() -> Self {
        SwitchingConfig {
            automatic: true,
            min_dwell_ms: default_min_dwell_ms(),
            surge: default_surge_signals(),
            emergency: default_emergency_signals(),
        }
    }
}

fn default_min_dwell_ms() -> u64 {
    10_000
}

fn default_surge_signals() -> SignalThresholdsConfig {
    SignalThresholdsConfig {
        queue_enter: 0.5,
        queue_exit: 0.25,
        latency_enter_ms: 200.0,
        latency_exit_ms: 100.0,
        error_rate_enter: 0.2,
        error_rate_exit: 0.05,
    }
}

fn default_emergency_signals() -> SignalThresholdsConfig {
    SignalThresholdsConfig {
        queue_enter: 0.9,
        queue_exit: 0.5,
        latency_enter_ms: 1000.0,
        latency_exit_ms: 400.0,
        error_rate_enter: 0.5,
        error_rate_exit: 0.2,
    }
}

/// `[modes.switching.<mode>]`: a mode is entered when any signal reaches its `*_enter` value
/// and left when every signal is at or below its `*_exit` value (hysteresis: exit < enter).
/// All fields are required when the table is written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalThresholdsConfig {
    /// `queue_enter = 0.5`: fullest route queue, as a fraction of its `queue_len`, in `[0, 1]`.
    pub queue_enter: f64,
    /// `queue_exit = 0.25`
    pub queue_exit: f64,
    /// `latency_enter_ms = 200.0`: upstream latency (moving average), in milliseconds.
    pub latency_enter_ms: f64,
    /// `latency_exit_ms = 100.0`
    pub latency_exit_ms: f64,
    /// `error_rate_enter = 0.2`: failed escalations (moving average), in `[0, 1]`.
    pub error_rate_enter: f64,
    /// `error_rate_exit = 0.05`
    pub error_rate_exit: f64,
}

impl ModesConfig {
    /// The switches written for `mode`.
    pub fn get(&self, mode: Mode) -> &ModeSwitchesConfig {
        match mode {
            Mode::Normal => &self.normal,
            Mode::Surge => &self.surge,
            Mode::Emergency => &self.emergency,
        }
    }
}

impl SwitchingConfig {
    /// The signal thresholds of an elevated mode; `None` for `normal`, which has none.
    pub fn signals(&self, mode: Mode) -> Option<&SignalThresholdsConfig> {
        match mode {
            Mode::Normal => None,
            Mode::Surge => Some(&self.surge),
            Mode::Emergency => Some(&self.emergency),
        }
    }
}
