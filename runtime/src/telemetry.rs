//! The node's Prometheus metrics, in one registry per node, and their text exposition
//! (`/metrics` is [`Telemetry::render`] behind a route).
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `cascade_requests_total` | `route`, `outcome`, `tier` | finished requests |
//! | `cascade_escalations_total` | `route`, `result` | escalations sent (`ok`, `failed`) |
//! | `cascade_degraded_total` | `route`, `reason` | local answers marked degraded |
//! | `cascade_cache_total` | `route`, `status` | cache lookups (`hit`, `miss`, `coalesced`) |
//! | `cascade_rejections_total` | `route`, `reason` | admission rejections |
//! | `cascade_stage_seconds` | `stage` | per-stage latency histogram |
//! | `cascade_sandbox_failures_total` | `plugin`, `kind` | guest traps, timeouts, limits |
//! | `cascade_mode` | `mode` | 1 for the current mode, 0 for the others |
//! | `cascade_mode_switches_total` | `from`, `to`, `cause` | mode changes |
//! | `cascade_batch_rows` | `model` | rows per backend run, when dynamic batching is on |
//! | `cascade_confidence` | `route` | this node's plugin's confidence, per computed answer |
//! | `cascade_threshold` | `route`, `mode` | the threshold in force |
//! | `cascade_threshold_moves_total` | `route`, `direction` | moves by the auto-threshold (`up`, `down`) |
//! | `cascade_upstream_breaker` | `upstream` | 0 closed, 1 half-open, 2 open |
//! | `cascade_upstream_latency_seconds` | | escalations' recent latency (moving average) |
//! | `cascade_upstream_requests_avoided_total` | `route` | answers given here, not by the upstream |
//! | `cascade_upstream_compute_seconds_avoided_total` | `route` | their upstream compute, at the upstream's reported average |
//! | `cascade_shadow_total` | `route`, `bucket`, `result` | shadow checks by confidence bucket (`agree`, `disagree`) |
//! | `cascade_shadow_dropped_total` | `route`, `reason` | shadow checks not sent (`budget`, `busy`) or not answered (`failed`) |
//! | `cascade_receipts_dropped_total` | | receipts not logged because the writer fell behind |
//!
//! Ratios are left to the query, where they belong: the escalation ratio is
//! `sum(rate(cascade_escalations_total[1m])) / sum(rate(cascade_requests_total[1m]))`, the
//! cache hit ratio `rate(cascade_cache_total{status="hit"}[1m]) / rate(cascade_cache_total[1m])`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::admission::Rejection;
use crate::cache::CacheStatus;
use crate::config::Mode;
use crate::modes::{ModeChange, SwitchCause};
use crate::policy::DegradedReason;

/// Why metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A metric could not be created or registered (a programming error: a bad name or a
    /// duplicate).
    #[error("cannot register metric {metric}: {message}")]
    Register {
        /// Metric name.
        metric: &'static str,
        /// The Prometheus library's message (its error type is kept out of the API).
        message: String,
    },
    /// The registry could not be rendered as text.
    #[error("cannot render metrics: {message}")]
    Render {
        /// The Prometheus library's message.
        message: String,
    },
}

/// A handoff in a request's path, timed into `cascade_stage_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Waiting for and passing admission.
    Admission,
    /// Cache lookup (a coalesced wait counts here).
    Cache,
    /// The plugin's `handle`, inference included.
    Sandbox,
    /// The model call alone, inside the sandbox stage.
    Inference,
    /// The escalation decision.
    Policy,
    /// The round trip to the upstream.
    Escalation,
    /// Building and writing the response.
    Response,
    /// The whole request.
    Total,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 8] = [
        Stage::Admission,
        Stage::Cache,
        Stage::Sandbox,
        Stage::Inference,
        Stage::Policy,
        Stage::Escalation,
        Stage::Response,
        Stage::Total,
    ];

    /// Position in [`Stage::ALL`], for per-stage tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Admission => "admission",
            Stage::Cache => "cache",
            Stage::Sandbox => "sandbox",
            Stage::Inference => "inference",
            Stage::Policy => "policy",
            Stage::Escalation => "escalation",
            Stage::Response => "response",
            Stage::Total => "total",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Answered, not degraded.
    Answered,
    /// Answered locally, marked degraded.
    Degraded,
    /// Refused by admission.
    Rejected,
    /// Ended with an explicit error (bad input, plugin failure, nothing to fall back on).
    Failed,
}

impl RequestOutcome {
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            RequestOutcome::Answered => "answered",
            RequestOutcome::Degraded => "degraded",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Failed => "failed",
        }
    }
}

/// Which tier produced the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerTier {
    /// This node (including answers from its cache).
    Local,
    /// The upstream node.
    Upstream,
    /// Nobody: the request was rejected or failed.
    None,
}

impl AnswerTier {
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            AnswerTier::Local => "local",
            AnswerTier::Upstream => "upstream",
            AnswerTier::None => "none",
        }
    }
}

/// The label of a confidence's tenth: `0.0-0.1`, ..., `0.9-1.0` (1.0 itself in the last).
fn shadow_bucket(confidence: f32) -> &'static str {
    const BUCKETS: [&str; 10] = [
        "0.0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-0.5", "0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9",
        "0.9-1.0",
    ];
    let i = (confidence.clamp(0.0, 1.0) * 10.0) as usize;
    BUCKETS[i.min(9)]
}

/// Route label for requests naming no known route, so clients cannot grow the label set.
pub const UNKNOWN_ROUTE: &str = "_unknown";

/// A node's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    escalations: IntCounterVec,
    degraded: IntCounterVec,
    cache: IntCounterVec,
    rejections: IntCounterVec,
    stages: HistogramVec,
    sandbox_failures: IntCounterVec,
    mode: IntGaugeVec,
    mode_switches: IntCounterVec,
    batch_rows: HistogramVec,
    confidence: HistogramVec,
    threshold: GaugeVec,
    threshold_moves: IntCounterVec,
    breaker: IntGaugeVec,
    upstream_latency: GaugeVec,
    avoided_requests: IntCounterVec,
    avoided_compute: CounterVec,
    shadow: IntCounterVec,
    shadow_dropped: IntCounterVec,
    receipts_dropped: IntCounterVec,
    guest_log_dropped: IntCounterVec,
    /// The sandbox's own count of dropped guest log lines when last read, so the counter
    /// grows by what is new (a reload starts a new sandbox, counting from 0 again).
    guest_log_dropped_seen: AtomicU64,
}

/// Registers a metric made by `make`, naming it in any error.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    make: impl FnOnce() -> prometheus::Result<M>,
) -> Result<M, TelemetryError> {
    let reg_err = |e: prometheus::Error| TelemetryError::Register { metric: name, message: e.to_string() };
    let metric = make().map_err(reg_err)?;
    registry.register(Box::new(metric.clone())).map_err(reg_err)?;
    Ok(metric)
}

impl Telemetry {
    /// A fresh registry with every metric, the mode gauge at `normal`.
    pub fn new() -> Result<Telemetry, TelemetryError> {
        let r = Registry::new();
        let counter = |name, help, labels: &[&str]| {
            register(&r, name, || IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name, help, labels: &[&str], buckets: Vec<f64>| {
            register(&r, name, || HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels))
        };
        let gauge =
            |name, help, labels: &[&str]| register(&r, name, || GaugeVec::new(Opts::new(name, help), labels));
        let int_gauge = |name, help, labels: &[&str]| {
            register(&r, name, || IntGaugeVec::new(Opts::new(name, help), labels))
        };
        // 10 µs to about 1.3 s, doubling: local answers sit in the first half, escalations
        // in the second.
        let seconds: Vec<f64> = (0..18).map(|i| 1e-5 * f64::from(1u32 << i)).collect();
        let rows: Vec<f64> = (0..10).map(|i| f64::from(1u32 << i)).collect();
        let twentieths: Vec<f64> = (1..=20).map(|i| f64::from(i) / 20.0).collect();
        let t = Telemetry {
            requests: counter("cascade_requests_total", "Finished requests.", &["route", "outcome", "tier"])?,
            escalations: counter(
                "cascade_escalations_total",
                "Escalations sent upstream.",
                &["route", "result"],
            )?,
            degraded: counter(
                "cascade_degraded_total",
                "Local answers marked degraded.",
                &["route", "reason"],
            )?,
            cache: counter("cascade_cache_total", "Cache lookups.", &["route", "status"])?,
            rejections: counter(
                "cascade_rejections_total",
                "Requests refused by admission.",
                &["route", "reason"],
            )?,
            stages: histogram("cascade_stage_seconds", "Time spent per request stage.", &["stage"], seconds)?,
            sandbox_failures: counter(
                "cascade_sandbox_failures_total",
                "Plugin failures by kind.",
                &["plugin", "kind"],
            )?,
            mode: int_gauge("cascade_mode", "1 for the node's current mode.", &["mode"])?,
            mode_switches: counter("cascade_mode_switches_total", "Mode changes.", &["from", "to", "cause"])?,
            batch_rows: histogram("cascade_batch_rows", "Rows per batched backend run.", &["model"], rows)?,
            confidence: histogram(
                "cascade_confidence",
                "This node's plugin's confidence, per computed answer.",
                &["route"],
                twentieths,
            )?,
            threshold: gauge("cascade_threshold", "The confidence threshold in force.", &["route", "mode"])?,
            threshold_moves: counter(
                "cascade_threshold_moves_total",
                "Threshold moves by the auto-threshold.",
                &["route", "direction"],
            )?,
            breaker: int_gauge(
                "cascade_upstream_breaker",
                "Upstream circuit breaker: 0 closed, 1 half-open, 2 open.",
                &["upstream"],
            )?,
            upstream_latency: gauge(
                "cascade_upstream_latency_seconds",
                "Recent escalation latency (moving average).",
                &[],
            )?,
            avoided_requests: counter(
                "cascade_upstream_requests_avoided_total",
                "Answers given here instead of by the upstream.",
                &["route"],
            )?,
            avoided_compute: register(&r, "cascade_upstream_compute_seconds_avoided_total", || {
                CounterVec::new(
                    Opts::new(
                        "cascade_upstream_compute_seconds_avoided_total",
                        "Upstream compute those answers saved, at the upstream's reported average.",
                    ),
                    &["route"],
                )
            })?,
            shadow: counter(
                "cascade_shadow_total",
                "Shadow checks of local answers against the upstream, by confidence bucket.",
                &["route", "bucket", "result"],
            )?,
            shadow_dropped: counter(
                "cascade_shadow_dropped_total",
                "Shadow checks not sent or not answered.",
                &["route", "reason"],
            )?,
            receipts_dropped: counter(
                "cascade_receipts_dropped_total",
                "Receipts not logged because the writer fell behind.",
                &[],
            )?,
            guest_log_dropped: counter(
                "cascade_guest_log_lines_dropped_total",
                "Plugin log lines dropped by the per-plugin rate limit.",
                &[],
            )?,
            guest_log_dropped_seen: AtomicU64::new(0),
            registry: r,
        };
        t.set_mode(Mode::Normal);
        Ok(t)
    }

    /// Lists `route`'s series at zero, so that dashboards and alerts (which compute rates)
    /// see every outcome, tier, reason and status from the start, not after its first event.
    pub fn prepare_route(&self, route: &str) {
        let answered = [
            (RequestOutcome::Answered, AnswerTier::Local),
            (RequestOutcome::Answered, AnswerTier::Upstream),
            (RequestOutcome::Degraded, AnswerTier::Local),
            (RequestOutcome::Rejected, AnswerTier::None),
            (RequestOutcome::Failed, AnswerTier::None),
        ];
        for (outcome, tier) in answered {
            self.requests.with_label_values(&[route, outcome.name(), tier.name()]);
        }
        for result in ["ok", "failed"] {
            self.escalations.with_label_values(&[route, result]);
        }
        for reason in DegradedReason::ALL {
            self.degraded.with_label_values(&[route, reason.name()]);
        }
        for status in CacheStatus::ALL {
            self.cache.with_label_values(&[route, status.name()]);
        }
    }

    /// Takes the sandbox's running total of dropped guest log lines.
    pub fn guest_log_lines_dropped(&self, total: u64) {
        let seen = self.guest_log_dropped_seen.swap(total, Ordering::Relaxed);
        // Below what was seen: a new sandbox, whose whole count is new.
        let new = if total >= seen { total - seen } else { total };
        self.guest_log_dropped.with_label_values::<&str>(&[]).inc_by(new);
    }

    /// Counts a finished request.
    pub fn request(&self, route: &str, outcome: RequestOutcome, tier: AnswerTier) {
        self.requests.with_label_values(&[route, outcome.name(), tier.name()]).inc();
    }

    /// Counts an escalation and whether it returned an answer.
    pub fn escalation(&self, route: &str, ok: bool) {
        self.escalations.with_label_values(&[route, if ok { "ok" } else { "failed" }]).inc();
    }

    /// Counts a degraded answer.
    pub fn degraded(&self, route: &str, reason: DegradedReason) {
        self.degraded.with_label_values(&[route, reason.name()]).inc();
    }

    /// Counts a cache lookup.
    pub fn cache(&self, route: &str, status: CacheStatus) {
        self.cache.with_label_values(&[route, status.name()]).inc();
    }

    /// Counts an admission rejection (an unknown route is counted under [`UNKNOWN_ROUTE`]).
    pub fn rejection(&self, route: &str, rejection: &Rejection) {
        let route = if *rejection == Rejection::UnknownRoute { UNKNOWN_ROUTE } else { route };
        self.rejections.with_label_values(&[route, rejection.name()]).inc();
    }

    /// Records how long a stage took.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages.with_label_values(&[stage.name()]).observe(took.as_secs_f64());
    }

    /// Counts a plugin failure; `kind` is the sandbox's own short name for it (trap,
    /// deadline, memory, ...).
    pub fn sandbox_failure(&self, plugin: &str, kind: &str) {
        self.sandbox_failures.with_label_values(&[plugin, kind]).inc();
    }

    /// Sets the mode gauge.
    pub fn set_mode(&self, current: Mode) {
        for m in Mode::ALL {
            self.mode.with_label_values(&[m.name()]).set(i64::from(m == current));
        }
    }

    /// Counts a mode change and sets the mode gauge.
    pub fn mode_change(&self, change: &ModeChange) {
        let cause = match change.cause {
            SwitchCause::ModeSignals(_) => "signals",
            SwitchCause::Pinned => "admin",
        };
        self.mode_switches.with_label_values(&[change.from.name(), change.to.name(), cause]).inc();
        self.set_mode(change.to);
    }

    /// Records the size of each batched backend run, for a [`crate::BatchingBackend`].
    pub fn batch_observer(&self) -> crate::BatchObserver {
        let rows = self.batch_rows.clone();
        std::sync::Arc::new(move |model: &str, n: usize| rows.with_label_values(&[model]).observe(n as f64))
    }

    /// Records this node's plugin's confidence in a computed answer.
    pub fn confidence(&self, route: &str, confidence: f32) {
        self.confidence.with_label_values(&[route]).observe(f64::from(confidence));
    }

    /// Sets the threshold gauge of `route` in `mode`.
    pub fn set_threshold(&self, route: &str, mode: Mode, threshold: f64) {
        self.threshold.with_label_values(&[route, mode.name()]).set(threshold);
    }

    /// Counts a move of `route`'s threshold by the auto-threshold.
    pub fn threshold_moved(&self, route: &str, up: bool) {
        self.threshold_moves.with_label_values(&[route, if up { "up" } else { "down" }]).inc();
    }

    /// Sets an upstream's breaker gauge.
    pub fn set_breaker(&self, upstream: &str, state: crate::upstream::BreakerState) {
        let value = match state {
            crate::upstream::BreakerState::Closed => 0,
            crate::upstream::BreakerState::HalfOpen => 1,
            crate::upstream::BreakerState::Open => 2,
        };
        self.breaker.with_label_values(&[upstream]).set(value);
    }

    /// Sets the escalations' recent latency.
    pub fn set_upstream_latency(&self, latency: Duration) {
        self.upstream_latency.with_label_values::<&str>(&[]).set(latency.as_secs_f64());
    }

    /// Counts a local answer and the upstream compute it saved.
    pub fn upstream_avoided(&self, route: &str, compute: Duration) {
        self.avoided_requests.with_label_values(&[route]).inc();
        self.avoided_compute.with_label_values(&[route]).inc_by(compute.as_secs_f64());
    }

    /// Counts a shadow check: whether the upstream agreed with a local answer whose
    /// confidence was `confidence` (bucketed by tenths).
    pub fn shadow(&self, route: &str, confidence: f32, agreed: bool) {
        let bucket = shadow_bucket(confidence);
        self.shadow.with_label_values(&[route, bucket, if agreed { "agree" } else { "disagree" }]).inc();
    }

    /// Counts a shadow check that was not sent or not answered.
    pub fn shadow_dropped(&self, route: &str, reason: &str) {
        self.shadow_dropped.with_label_values(&[route, reason]).inc();
    }

    /// Counts a receipt the writer had no room for.
    pub fn receipt_dropped(&self) {
        self.receipts_dropped.with_label_values::<&str>(&[]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, TelemetryError> {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|e| TelemetryError::Render { message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(metric) && labels.iter().all(|lab| l.contains(lab)))
    }

    #[test]
    fn renders_what_was_recorded() {
        let t = Telemetry::new().unwrap();
        t.request("digits", RequestOutcome::Answered, AnswerTier::Local);
        t.request("digits", RequestOutcome::Answered, AnswerTier::Local);
        t.request("digits", RequestOutcome::Answered, AnswerTier::Upstream);
        t.escalation("digits", true);
        t.degraded("digits", DegradedReason::BreakerOpen);
        t.cache("digits", CacheStatus::Coalesced);
        t.rejection("no-such-route", &Rejection::UnknownRoute);
        t.rejection("digits", &Rejection::RateLimited { retry_after: Duration::from_secs(1) });
        t.stage(Stage::Sandbox, Duration::from_micros(150));
        t.sandbox_failure("mnist", "trap");
        t.mode_change(&ModeChange { from: Mode::Normal, to: Mode::Surge, cause: SwitchCause::Pinned });
        let text = t.render().unwrap();

        let value = |metric: &str, labels: &[&str]| {
            let l = line(&text, metric, labels).unwrap_or_else(|| panic!("{metric} {labels:?} in\n{text}"));
            l.rsplit(' ').next().unwrap().to_string()
        };
        let local = ["route=\"digits\"", "outcome=\"answered\"", "tier=\"local\""];
        assert_eq!(value("cascade_requests_total{", &local), "2");
        assert_eq!(value("cascade_requests_total{", &["tier=\"upstream\""]), "1");
        assert_eq!(value("cascade_escalations_total{", &["result=\"ok\""]), "1");
        assert_eq!(value("cascade_degraded_total{", &["reason=\"breaker_open\""]), "1");
        assert_eq!(value("cascade_cache_total{", &["status=\"coalesced\""]), "1");
        assert_eq!(
            value("cascade_rejections_total{", &["route=\"_unknown\"", "reason=\"unknown_route\""]),
            "1"
        );
        assert!(line(&text, "cascade_rejections_total{", &["no-such-route"]).is_none());
        assert_eq!(value("cascade_rejections_total{", &["reason=\"rate_limited\""]), "1");
        // 150 µs lands in the 160 µs bucket, not the 80 µs one.
        assert_eq!(value("cascade_stage_seconds_bucket{", &["stage=\"sandbox\"", "le=\"0.00016\""]), "1");
        assert_eq!(value("cascade_stage_seconds_bucket{", &["stage=\"sandbox\"", "le=\"0.00008\""]), "0");
        assert_eq!(value("cascade_sandbox_failures_total{", &["kind=\"trap\""]), "1");
        assert_eq!(value("cascade_mode{", &["mode=\"surge\""]), "1");
        assert_eq!(value("cascade_mode{", &["mode=\"normal\""]), "0");
        assert_eq!(value("cascade_mode_switches_total{", &["to=\"surge\"", "cause=\"admin\""]), "1");
        assert!(text.contains("# TYPE cascade_stage_seconds histogram"), "{text}");
    }

    /// Rates over a series that appears only with its first event hide that event from
    /// alerts; a prepared route lists every series at zero.
    #[test]
    fn a_prepared_route_lists_its_series_at_zero_and_dropped_log_lines_count_what_is_new() {
        let t = Telemetry::new().unwrap();
        t.prepare_route("digits");
        let text = t.render().unwrap();
        for reason in DegradedReason::ALL {
            let l = line(&text, "cascade_degraded_total{", &["route=\"digits\"", reason.name()]);
            assert!(l.is_some_and(|l| l.ends_with(" 0")), "{reason} in\n{text}");
        }
        for labels in [&["result=\"failed\""][..], &["status=\"hit\""], &["outcome=\"failed\""]] {
            assert!(line(&text, "", labels).is_some_and(|l| l.ends_with(" 0")), "{labels:?} in\n{text}");
        }

        t.guest_log_lines_dropped(5);
        t.guest_log_lines_dropped(7);
        // A reloaded node's sandbox counts from zero again.
        t.guest_log_lines_dropped(3);
        let text = t.render().unwrap();
        assert!(text.contains("cascade_guest_log_lines_dropped_total 10"), "{text}");
    }
}
