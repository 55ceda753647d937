//! The upstream's health as the requester sees it: moving averages over every escalation's
//! result, for the policy's deadline gate and the mode controller's signals.

use std::time::Duration;

/// Moving averages of the upstream's latency and error rate, fed by every escalation's
/// result: the policy's deadline gate and the mode controller's signals.
#[derive(Debug, Clone, Default)]
pub struct UpstreamHealth {
    latency_s: Option<f64>,
    error_rate: f64,
}

/// Weight of the newest sample: about the last ten escalations dominate, so a recovering
/// upstream is trusted again within a few requests and one slow reply does not swing it.
const EWMA_ALPHA: f64 = 0.2;

impl UpstreamHealth {
    /// No samples yet.
    pub fn new() -> UpstreamHealth {
        UpstreamHealth::default()
    }

    /// Records a successful escalation and how long it took.
    pub fn record_success(&mut self, latency: Duration) {
        let s = latency.as_secs_f64();
        self.latency_s = Some(match self.latency_s {
            Some(avg) => avg + EWMA_ALPHA * (s - avg),
            None => s,
        });
        self.error_rate -= EWMA_ALPHA * self.error_rate;
    }

    /// Records a failed escalation (timeout, refused, transport error). Its latency is not
    /// averaged: a fast failure would make the upstream look quick.
    pub fn record_failure(&mut self) {
        self.error_rate += EWMA_ALPHA * (1.0 - self.error_rate);
    }

    /// Recent latency of successful escalations; `None` before the first.
    pub fn latency(&self) -> Option<Duration> {
        self.latency_s.map(Duration::from_secs_f64)
    }

    /// Recent fraction of failed escalations, in `[0, 1]`.
    pub fn error_rate(&self) -> f64 {
        self.error_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn upstream_health_averages_latency_and_errors() {
        let mut h = UpstreamHealth::new();
        assert_eq!(h.latency(), None);
        h.record_success(10 * MS);
        assert_eq!(h.latency(), Some(10 * MS));
        h.record_success(20 * MS);
        let l = h.latency().unwrap().as_secs_f64() * 1000.0;
        assert!((l - 12.0).abs() < 1e-6, "{l}");
        for _ in 0..20 {
            h.record_failure();
        }
        assert!(h.error_rate() > 0.95, "{}", h.error_rate());
        assert!((h.latency().unwrap().as_secs_f64() * 1000.0 - 12.0).abs() < 1e-6);
        for _ in 0..20 {
            h.record_success(12 * MS);
        }
        assert!(h.error_rate() < 0.02, "{}", h.error_rate());
    }
}
