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
//!
//! Ratios are left to the query, where they belong: the escalation ratio is
//! `sum(rate(cascade_escalations_total[1m])) / sum(rate(cascade_requests_total[1m]))`, the
//! cache hit ratio `rate(cascade_cache_total{status="hit"}[1m]) / rate(cascade_cache_total[1m])`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

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
}

fn counter(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, TelemetryError> {
    let reg_err = |e: prometheus::Error| TelemetryError::Register { metric: name, message: e.to_string() };
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(reg_err)?;
    registry.register(Box::new(c.clone())).map_err(reg_err)?;
    Ok(c)
}

impl Telemetry {
    /// A fresh registry with every metric, the mode gauge at `normal`.
    pub fn new() -> Result<Telemetry, TelemetryError> {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "cascade_requests_total",
            "Finished requests.",
            &["route", "outcome", "tier"],
        )?;
        let escalations = counter(
            &registry,
            "cascade_escalations_total",
            "Escalations sent upstream.",
            &["route", "result"],
        )?;
        let degraded = counter(
            &registry,
            "cascade_degraded_total",
            "Local answers marked degraded.",
            &["route", "reason"],
        )?;
        let cache = counter(&registry, "cascade_cache_total", "Cache lookups.", &["route", "status"])?;
        let rejections = counter(
            &registry,
            "cascade_rejections_total",
            "Requests refused by admission.",
            &["route", "reason"],
        )?;
        let sandbox_failures = counter(
            &registry,
            "cascade_sandbox_failures_total",
            "Plugin failures by kind.",
            &["plugin", "kind"],
        )?;
        let mode_switches =
            counter(&registry, "cascade_mode_switches_total", "Mode changes.", &["from", "to", "cause"])?;

        let reg_err =
            |metric| move |e: prometheus::Error| TelemetryError::Register { metric, message: e.to_string() };
        // 10 µs to about 1.3 s, doubling: local answers sit in the first half, escalations
        // in the second.
        let buckets =
            prometheus::exponential_buckets(1e-5, 2.0, 18).map_err(reg_err("cascade_stage_seconds"))?;
        let stages = HistogramVec::new(
            HistogramOpts::new("cascade_stage_seconds", "Time spent per request stage.").buckets(buckets),
            &["stage"],
        )
        .map_err(reg_err("cascade_stage_seconds"))?;
        registry.register(Box::new(stages.clone())).map_err(reg_err("cascade_stage_seconds"))?;
        let mode = IntGaugeVec::new(Opts::new("cascade_mode", "1 for the node's current mode."), &["mode"])
            .map_err(reg_err("cascade_mode"))?;
        registry.register(Box::new(mode.clone())).map_err(reg_err("cascade_mode"))?;
        let rows = prometheus::exponential_buckets(1.0, 2.0, 10).map_err(reg_err("cascade_batch_rows"))?;
        let batch_rows = HistogramVec::new(
            HistogramOpts::new("cascade_batch_rows", "Rows per batched backend run.").buckets(rows),
            &["model"],
        )
        .map_err(reg_err("cascade_batch_rows"))?;
        registry.register(Box::new(batch_rows.clone())).map_err(reg_err("cascade_batch_rows"))?;

        let t = Telemetry {
            registry,
            requests,
            escalations,
            degraded,
            cache,
            rejections,
            stages,
            sandbox_failures,
            mode,
            mode_switches,
            batch_rows,
        };
        t.set_mode(Mode::Normal);
        Ok(t)
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
}
