//! The cost view: what answering here saved the upstream. Each upstream answer says how long
//! its plugin and model took (its `sandbox` stage timing); each local answer is counted as
//! one upstream request avoided and as that much upstream compute avoided, at the recent
//! average.

use std::time::Duration;

/// Weight of the newest upstream timing in the average.
const EWMA_ALPHA: f64 = 0.1;

/// The upstream's recent compute time per request.
#[derive(Debug, Default)]
pub(super) struct UpstreamCompute {
    seconds: Option<f64>,
}

impl UpstreamCompute {
    /// Notes one upstream answer's compute time.
    pub(super) fn record_upstream_compute(&mut self, took: Duration) {
        let s = took.as_secs_f64();
        self.seconds = Some(self.seconds.map_or(s, |avg| avg + EWMA_ALPHA * (s - avg)));
    }

    /// The upstream compute a local answer saved: the recent average, zero before any
    /// upstream answer said.
    pub(super) fn per_request(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_what_the_upstream_reports() {
        let mut c = UpstreamCompute::default();
        assert_eq!(c.per_request(), Duration::ZERO);
        c.record_upstream_compute(Duration::from_millis(10));
        assert_eq!(c.per_request(), Duration::from_millis(10));
        c.record_upstream_compute(Duration::from_millis(20));
        assert!((c.per_request().as_secs_f64() - 0.011).abs() < 1e-9);
    }
}
