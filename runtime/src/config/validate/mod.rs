//! The one validation pass: user config in, typed settings or every problem out.
//!
//! This file holds the pass itself ([`validate`]), the [`Checker`] that collects problems,
//! and the short sections checked inline. The longer sections have a file each:
//! `listeners.rs` (`[listeners]`), `upstream.rs` (`[upstream]`), `routes.rs` (`[routes]`).

mod listeners;
mod routes;
mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::listeners::{admin, quic_limits, quic_tls};
use self::routes::route;
use self::upstream::upstream;
use super::schema::{ModelConfig, NodeConfig, SignalThresholdsConfig};
use super::{
    BatchingSettings, ConfigError, Digest, FieldProblem, HttpLimits, ModeSwitches, ModelSpec, ModesSettings,
    NodeSettings, PluginSpec, RateSettings, ReceiptSettings, ShadowSettings, TelemetrySettings,
    ValidatedConfig,
};
use super::{Hysteresis, Mode, SignalThresholds};
use crate::backend::{BackendKind, InputShape};

/// The longest deadline, timeout or pause a config may set: longer ones are mistakes, and
/// unbounded ones would overflow the clock arithmetic.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The longest time an answer may be cached.
const MAX_CACHE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The slowest rate a token bucket takes: one token every 1,000 seconds.
const MIN_RATE: f64 = 1e-3;

/// Collects problems while the pass goes on, so the user sees all of them at once.
struct Checker {
    problems: Vec<FieldProblem>,
    dir: PathBuf,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, problem: impl Into<String>, expected: impl Into<String>) {
        self.problems.push(FieldProblem {
            field: field.into(),
            problem: problem.into(),
            expected: expected.into(),
        });
    }

    fn addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(
                    field,
                    format!("`{value}` is not an address"),
                    "`ip:port`, such as `127.0.0.1:8080`",
                );
                None
            }
        }
    }

    fn unit(&mut self, field: &str, value: f64) -> f64 {
        if !(0.0..=1.0).contains(&value) {
            self.fail(field, format!("{value} is outside [0, 1]"), "a number from 0.0 to 1.0");
        }
        value
    }

    fn positive_ms(&mut self, field: &str, value: u64) -> Duration {
        if value == 0 {
            self.fail(field, "0 ms leaves no time", "a whole number of milliseconds, at least 1");
        }
        self.at_most(field, Duration::from_millis(value), MAX_WAIT, "ms")
    }

    /// `value` if at most `max`; else a problem naming the field, and `max` to go on with
    /// (so that nothing later overflows an `Instant`).
    fn at_most(&mut self, field: &str, value: Duration, max: Duration, unit: &str) -> Duration {
        if value > max {
            let (shown, limit) = match unit {
                "s" => (value.as_secs(), max.as_secs()),
                "us" => (value.as_micros() as u64, max.as_micros() as u64),
                _ => (value.as_millis() as u64, max.as_millis() as u64),
            };
            self.fail(field, format!("{shown} {unit} is too long"), format!("at most {limit} {unit}"));
            return max;
        }
        value
    }

    fn at_least_one(&mut self, field: &str, value: u32) -> u32 {
        if value == 0 {
            self.fail(field, "0 allows nothing", "a whole number, at least 1");
        }
        value
    }

    fn rate(&mut self, field: &str, value: f64, zero_ok: bool) -> f64 {
        let ok = value.is_finite() && (value >= MIN_RATE || (zero_ok && value == 0.0));
        if !ok {
            let expected = if zero_ok {
                "0, or a finite number ≥ 0.001 per second"
            } else {
                "a finite number ≥ 0.001 per second"
            };
            self.fail(field, format!("{value} is not a usable rate"), expected);
        }
        value
    }

    fn name(&mut self, field: &str, name: &str) {
        let ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            self.fail(
                field,
                format!("`{name}` is not a usable name"),
                "letters, digits, `-`, `_`, `.` (non-empty)",
            );
        }
    }

    fn path(&self, value: &str) -> PathBuf {
        self.dir.join(value)
    }

    fn digest(&mut self, field: &str, value: Option<&str>) -> Option<Digest> {
        let value = value?;
        match value.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(field, e.to_string(), "64 hex digits, as printed by `sha256sum FILE`");
                None
            }
        }
    }

    fn known<'a>(&mut self, field: &str, name: &str, kind: &str, known: impl Iterator<Item = &'a String>) {
        let known: Vec<&String> = known.collect();
        if !known.iter().any(|k| *k == name) {
            let list = if known.is_empty() {
                format!("a {kind} defined in the config (there are none)")
            } else {
                format!("one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
            };
            self.fail(field, format!("no {kind} named `{name}`"), list);
        }
    }

    fn signals(&mut self, field: &str, s: &SignalThresholdsConfig) -> SignalThresholds {
        let queue = Hysteresis {
            enter: self.unit(&format!("{field}.queue_enter"), s.queue_enter),
            exit: self.unit(&format!("{field}.queue_exit"), s.queue_exit),
        };
        for (name, v) in [("latency_enter_ms", s.latency_enter_ms), ("latency_exit_ms", s.latency_exit_ms)] {
            if !(v.is_finite() && v >= 0.0) {
                self.fail(format!("{field}.{name}"), format!("{v} is not a latency"), "milliseconds ≥ 0");
            }
        }
        let latency_ms = Hysteresis { enter: s.latency_enter_ms, exit: s.latency_exit_ms };
        let error_rate = Hysteresis {
            enter: self.unit(&format!("{field}.error_rate_enter"), s.error_rate_enter),
            exit: self.unit(&format!("{field}.error_rate_exit"), s.error_rate_exit),
        };
        for (signal, h) in [("queue", queue), ("latency", latency_ms), ("error_rate", error_rate)] {
            if h.exit >= h.enter {
                let suffix = if signal == "latency" { "_ms" } else { "" };
                self.fail(
                    format!("{field}.{signal}_exit{suffix}"),
                    format!("exit level {} is not below enter level {}", h.exit, h.enter),
                    format!("a value below `{signal}_enter{suffix}` (hysteresis)"),
                );
            }
        }
        SignalThresholds { queue, latency_ms, error_rate }
    }
}

pub(super) fn validate(raw: NodeConfig, file: &Path) -> Result<ValidatedConfig, ConfigError> {
    // Against the absolute path, so that resolved paths stay right if the working directory
    // changes later; messages keep the path as the user wrote it.
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let dir = absolute.parent().map(Path::to_owned).unwrap_or_default();
    let mut c = Checker { problems: Vec::new(), dir };

    if raw.node.name.trim().is_empty() {
        c.fail("node.name", "empty", "a name for this tier, such as `edge`");
    }
    let http = c.addr("listeners.http", &raw.listeners.http);
    let quic = raw.listeners.quic.as_deref().and_then(|q| c.addr("listeners.quic", q));
    let quic_tls = quic_tls(&mut c, &raw);
    let admin = admin(&mut c, &raw);

    let mut models = BTreeMap::new();
    for (name, m) in &raw.models {
        let f = format!("models.{name}");
        c.name(&f, name);
        let backend = match m.backend.as_str() {
            "tract" => BackendKind::Tract,
            "wgpu" => BackendKind::Wgpu,
            other => {
                c.fail(format!("{f}.backend"), format!("unknown backend `{other}`"), "`tract` or `wgpu`");
                BackendKind::Tract
            }
        };
        let pinned = c.digest(&format!("{f}.sha256"), m.sha256.as_deref());
        let path = c.path(&m.path);
        let inputs = model_inputs(&mut c, &f, m);
        models.insert(
            name.clone(),
            ModelSpec { path, backend, fallback_to_tract: m.fallback_to_tract, pinned, inputs },
        );
    }

    let mut plugins = BTreeMap::new();
    for (name, p) in &raw.plugins {
        let f = format!("plugins.{name}");
        c.name(&f, name);
        let pinned = c.digest(&format!("{f}.sha256"), p.sha256.as_deref());
        // wasm32 linear memory cannot exceed 4 GiB.
        if !(1..=4096).contains(&p.memory_limit_mib) {
            c.fail(
                format!("{f}.memory_limit_mib"),
                format!("{} MiB is outside what a wasm32 guest can use", p.memory_limit_mib),
                "a whole number of MiB from 1 to 4096",
            );
        }
        let deadline = c.positive_ms(&format!("{f}.deadline_ms"), p.deadline_ms);
        for (i, model) in p.models.iter().enumerate() {
            c.known(&format!("{f}.models[{i}]"), model, "model", raw.models.keys());
        }
        plugins.insert(
            name.clone(),
            PluginSpec {
                path: c.path(&p.path),
                pinned,
                memory_limit_bytes: u64::from(p.memory_limit_mib) << 20,
                deadline,
                models: p.models.iter().cloned().collect(),
                config: p.config.clone(),
            },
        );
    }

    if raw.routes.is_empty() {
        c.fail("routes", "no route is defined", "at least one `[routes.<name>]` table");
    }
    let mut routes = BTreeMap::new();
    for (name, r) in &raw.routes {
        let route = route(&mut c, &raw, name, r);
        routes.insert(name.clone(), route);
    }

    let upstream = raw.upstream.as_ref().map(|u| upstream(&mut c, u));

    let max_in_flight = c.at_least_one("admission.max_in_flight", raw.admission.max_in_flight);
    let max_intake_lag = c.at_most(
        "admission.max_intake_lag_us",
        Duration::from_micros(raw.admission.max_intake_lag_us),
        MAX_WAIT,
        "us",
    );

    let batching = raw.batching.as_ref().map(|b| BatchingSettings {
        max_batch: c.at_least_one("batching.max_batch", b.max_batch),
        max_delay: c.at_most("batching.max_delay_us", Duration::from_micros(b.max_delay_us), MAX_WAIT, "us"),
        calibrate: b.calibrate,
    });

    let switches = Mode::ALL.map(|mode| {
        let f = format!("modes.{mode}");
        let m = raw.modes.get(mode);
        if let Some(t) = m.threshold {
            c.unit(&format!("{f}.threshold"), t);
        }
        let (default_rps, default_burst) = match mode {
            Mode::Normal => (100.0, 200),
            Mode::Surge => (20.0, 40),
            Mode::Emergency => (0.0, 0),
        };
        let per_second = c.rate(
            &format!("{f}.escalation_budget_rps"),
            m.escalation_budget_rps.unwrap_or(default_rps),
            true,
        );
        let burst = match (m.escalation_burst, m.escalation_budget_rps) {
            (Some(b), _) => b,
            (None, None) => default_burst,
            (None, Some(_)) if per_second == 0.0 => 0,
            (None, Some(_)) => ((per_second * 2.0).ceil() as u32).max(1),
        };
        let mut disabled = BTreeSet::new();
        for (i, route) in m.disabled_routes.iter().enumerate() {
            c.known(&format!("{f}.disabled_routes[{i}]"), route, "route", raw.routes.keys());
            disabled.insert(route.clone());
        }
        let batching_delay = match (m.batching_delay_us, &batching) {
            (Some(us), Some(_)) => {
                Some(c.at_most(&format!("{f}.batching_delay_us"), Duration::from_micros(us), MAX_WAIT, "us"))
            }
            (Some(_), None) => {
                c.fail(
                    format!("{f}.batching_delay_us"),
                    "set but batching is off",
                    "a `[batching]` section, or no `batching_delay_us`",
                );
                None
            }
            (None, Some(b)) => Some(b.max_delay),
            (None, None) => None,
        };
        ModeSwitches {
            escalation_budget: RateSettings { per_second, burst },
            disabled_routes: disabled,
            batching_delay,
        }
    });
    let sw = &raw.modes.switching;
    let surge = c.signals("modes.switching.surge", &sw.surge);
    let emergency = c.signals("modes.switching.emergency", &sw.emergency);
    let modes = ModesSettings {
        switches,
        automatic: sw.automatic,
        min_dwell: c.at_most(
            "modes.switching.min_dwell_ms",
            Duration::from_millis(sw.min_dwell_ms),
            MAX_WAIT,
            "ms",
        ),
        surge,
        emergency,
    };

    let receipts = raw.telemetry.receipts.as_ref().map(|r| ReceiptSettings {
        path: c.path(&r.path),
        sample: c.unit("telemetry.receipts.sample", r.sample),
        max_bytes: u64::from(c.at_least_one("telemetry.receipts.max_mib", r.max_mib)) << 20,
        keep: r.keep,
    });
    let shadow = raw.shadow.as_ref().map(|s| ShadowSettings {
        store: c.path(&s.store),
        max_records: c.at_least_one("shadow.max_records", s.max_records),
    });

    if raw.telemetry.log.trim().is_empty() {
        c.fail("telemetry.log", "empty", "a `tracing` filter such as `info` or `cascade_runtime=debug`");
    }
    let quic_limits = quic_limits(&mut c, &raw.listeners, &routes);
    let l = &raw.listeners;
    let http_limits = HttpLimits {
        header_read: c.positive_ms("listeners.http_header_timeout_ms", l.http_header_timeout_ms),
        body_read: c.positive_ms("listeners.http_body_timeout_ms", l.http_body_timeout_ms),
        idle: c.positive_ms("listeners.http_idle_timeout_ms", l.http_idle_timeout_ms),
        max_connections: c.at_least_one("listeners.http_max_connections", l.http_max_connections),
    };
    let drain = c.positive_ms("listeners.drain_timeout_ms", l.drain_timeout_ms);

    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid { path: file.to_owned(), problems: c.problems });
    }
    let (Some(http), quic) = (http, quic) else {
        // Unreachable in practice: a bad address was recorded as a problem above.
        return Err(ConfigError::Invalid { path: file.to_owned(), problems: Vec::new() });
    };
    Ok(ValidatedConfig {
        file: file.to_owned(),
        settings: NodeSettings {
            name: raw.node.name.clone(),
            http,
            quic,
            quic_tls,
            quic_limits,
            http_limits,
            drain,
            admin,
            routes,
            upstream,
            max_in_flight,
            max_intake_lag,
            modes,
            batching,
            telemetry: TelemetrySettings {
                metrics: raw.telemetry.metrics,
                log: raw.telemetry.log.clone(),
                receipts,
            },
            shadow,
        },
        models,
        plugins,
    })
}

/// `[models.<name>.inputs.*]`: each shape's dimensions at least 1, each batch name non-empty.
fn model_inputs(c: &mut Checker, f: &str, m: &ModelConfig) -> BTreeMap<String, InputShape> {
    let mut inputs = BTreeMap::new();
    for (input, raw) in &m.inputs {
        let f = format!("{f}.inputs.{input}");
        let dims = raw.shape.as_ref().map(|shape| {
            shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    usize::try_from(d).ok().filter(|&d| d >= 1).unwrap_or_else(|| {
                        c.fail(format!("{f}.shape[{i}]"), format!("{d}"), "a dimension of at least 1");
                        1
                    })
                })
                .collect()
        });
        if raw.batch.as_deref() == Some("") {
            c.fail(format!("{f}.batch"), "empty", "the file's name for the batch dimension, such as `N`");
        }
        inputs.insert(input.clone(), InputShape { batch: raw.batch.clone(), dims });
    }
    inputs
}
