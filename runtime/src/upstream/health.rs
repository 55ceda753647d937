//! The upstream's health as the requester sees it: moving averages over every escalation's
//! result, for the policy's deadline gate and the mode controller's signals.
//!
//! The error rate also fades while nothing is sent. Without that, an edge whose failures
//! pushed it into a mode that forbids escalating would never see the success that brings
//! the rate down, and would stay there after the upstream came back; fading, the mode steps
//! down, escalations resume, and their results say whether the upstream is really back.

use std::time::{Duration, Instant};

/// Moving averages of the upstream's latency and error rate, fed by every escalation's
/// result: the policy's deadline gate and the mode controller's signals.
#[derive(Debug, Clone, Default)]
pub struct UpstreamHealth {
    latency_s: Option<f64>,
    error_rate: f64,
    /// When the last result arrived: the error rate fades from there.
    last: Option<Instant>,
}

/// How long without results halves the error rate.
pub(crate) const ERROR_RATE_HALF_LIFE: Duration = Duration::from_secs(5);

/// Weight of the newest sample: about the last ten escalations dominate, so a recovering
/// upstream is trusted again within a few requests and one slow reply does not swing it.
const EWMA_ALPHA: f64 = 0.2;

impl UpstreamHealth {
    /// No samples yet.
    pub fn new() -> UpstreamHealth {
        UpstreamHealth::default()
    }

    /// Records a successful escalation and how long it took, at `now`.
    pub fn record_success(&mut self, latency: Duration, now: Instant) {
        self.fade(now);
        let s = latency.as_secs_f64();
        self.latency_s = Some(match self.latency_s {
            Some(avg) => avg + EWMA_ALPHA * (s - avg),
            None => s,
        });
        self.error_rate -= EWMA_ALPHA * self.error_rate;
    }

    /// Records a failed escalation (timeout, refused, transport error). Its latency is not
    /// averaged: a fast failure would make the upstream look quick.
    pub fn record_failure(&mut self, now: Instant) {
        self.fade(now);
        self.error_rate += EWMA_ALPHA * (1.0 - self.error_rate);
    }

    /// Applies the fading since the last result, as of `now`.
    fn fade(&mut self, now: Instant) {
        self.error_rate = self.error_rate(now);
        self.last = Some(now);
    }

    /// Recent latency of successful escalations; `None` before the first.
    pub fn latency(&self) -> Option<Duration> {
        self.latency_s.map(Duration::from_secs_f64)
    }

    /// Recent fraction of failed escalations as of `now`, in `[0, 1]`: halved for every
    /// [`ERROR_RATE_HALF_LIFE`] without a result.
    pub fn error_rate(&self, now: Instant) -> f64 {
        let quiet = self.last.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.error_rate * 0.5f64.powf(quiet.as_secs_f64() / ERROR_RATE_HALF_LIFE.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn upstream_health_averages_latency_and_errors() {
        let now = Instant::now();
        let mut h = UpstreamHealth::new();
        assert_eq!(h.latency(), None);
        h.record_success(10 * MS, now);
        assert_eq!(h.latency(), Some(10 * MS));
        h.record_success(20 * MS, now);
        let l = h.latency().unwrap().as_secs_f64() * 1000.0;
        assert!((l - 12.0).abs() < 1e-6, "{l}");
        for _ in 0..20 {
            h.record_failure(now);
        }
        assert!(h.error_rate(now) > 0.95, "{}", h.error_rate(now));
        assert!((h.latency().unwrap().as_secs_f64() * 1000.0 - 12.0).abs() < 1e-6);
        for _ in 0..20 {
            h.record_success(12 * MS, now);
        }
        assert!(h.error_rate(now) < 0.02, "{}", h.error_rate(now));
    }

    /// An edge that stopped escalating because they all failed must see the rate fall, or a
    /// mode that forbids escalating would never end.
    #[test]
    fn the_error_rate_fades_while_nothing_is_sent() {
        let now = Instant::now();
        let mut h = UpstreamHealth::new();
        for _ in 0..30 {
            h.record_failure(now);
        }
        let full = h.error_rate(now);
        assert!(full > 0.99);
        let later = now + ERROR_RATE_HALF_LIFE;
        assert!((h.error_rate(later) - full / 2.0).abs() < 1e-9);
        assert!(h.error_rate(now + 5 * ERROR_RATE_HALF_LIFE) < 0.04);
        // A failure after the quiet spell starts from the faded rate.
        h.record_failure(later);
        assert!((h.error_rate(later) - (full / 2.0 + EWMA_ALPHA * (1.0 - full / 2.0))).abs() < 1e-9);
    }
}
