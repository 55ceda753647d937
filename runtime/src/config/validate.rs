//! The one validation pass: user config in, typed settings or every problem out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{
    ListenersConfig, ModelConfig, NodeConfig, RouteConfig, SignalThresholdsConfig, TensorDeclConfig,
    UpstreamConfig,
};
use super::{
    AdminSettings, AutoThreshold, BatchingSettings, ConfigError, Digest, FRAME_OVERHEAD_BYTES, FieldProblem,
    HttpLimits, KserveUpstreamSettings, MAX_REQUEST_BYTES, ModeSwitches, ModelSpec, ModesSettings,
    NodeSettings, PluginSpec, QuicLimits, QuicTlsSettings, QuicUpstreamSettings, RateSettings,
    ReceiptSettings, RouteSettings, ShadowSettings, TelemetrySettings, TensorDecl, UpstreamKind,
    UpstreamSettings, ValidatedConfig,
};
use super::{Hysteresis, Mode, SignalThresholds};
use crate::DType;
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

/// What downstream nodes may make the QUIC listener hold; the frame limit comes from the
/// routes (see [`QuicLimits::max_frame_bytes`]).
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

fn quic_limits(c: &mut Checker, l: &ListenersConfig, routes: &BTreeMap<String, RouteSettings>) -> QuicLimits {
    if let Some(allow) = &l.quic_allow {
        if allow.is_empty() {
            c.fail(
                "listeners.quic_allow",
                "empty: no node could escalate here",
                "at least one node name, or no `quic_allow` to admit every node the CA signed",
            );
        }
        for name in allow {
            if crate::transport::certs::check_name(name.strip_suffix('*').unwrap_or(name)).is_err() {
                c.fail(
                    "listeners.quic_allow",
                    format!("{name:?} is not a node name"),
                    "node names as given to `edge-node certs issue --name`, optionally ending in `*`",
                );
            }
        }
    }
    let request_bytes = |r: &RouteSettings| -> usize {
        let fixed: Option<usize> = r
            .inputs
            .iter()
            .map(|t| t.shape.iter().try_fold(t.dtype.size(), |n, d| d.and_then(|d| n.checked_mul(d))))
            .try_fold(0usize, |sum, n| n.and_then(|n| sum.checked_add(n)));
        match fixed {
            Some(bytes) if !r.inputs.is_empty() => bytes.min(MAX_REQUEST_BYTES),
            _ => MAX_REQUEST_BYTES,
        }
    };
    let buffered_mib = c.at_least_one("listeners.quic_max_buffered_mib", l.quic_max_buffered_mib);
    let max_frame_bytes = routes.values().map(request_bytes).max().unwrap_or(0) + FRAME_OVERHEAD_BYTES;
    if (u64::from(buffered_mib) << 20) < max_frame_bytes as u64 {
        c.fail(
            "listeners.quic_max_buffered_mib",
            format!("{buffered_mib} MiB cannot hold one whole request ({max_frame_bytes} bytes, from the routes' inputs)"),
            format!("at least {}", (max_frame_bytes >> 20) + 1),
        );
    }
    QuicLimits {
        allow: l.quic_allow.clone(),
        max_connections_per_peer: c
            .at_least_one("listeners.quic_max_connections_per_peer", l.quic_max_connections_per_peer),
        max_streams_per_connection: c
            .at_least_one("listeners.quic_max_streams_per_connection", l.quic_max_streams_per_connection),
        max_buffered_bytes: usize::try_from(u64::from(buffered_mib) << 20).unwrap_or(usize::MAX),
        max_frame_bytes,
    }
}

/// The admin listener and its token file: both or neither.
fn admin(c: &mut Checker, raw: &NodeConfig) -> Option<AdminSettings> {
    let l = &raw.listeners;
    match (&l.admin, &l.admin_token_file) {
        (None, None) => None,
        (Some(_), None) => {
            c.fail(
                "listeners.admin_token_file",
                "missing",
                "a file holding the admin bearer token, since `listeners.admin` is set",
            );
            None
        }
        (None, Some(_)) => {
            c.fail(
                "listeners.admin_token_file",
                "set without `listeners.admin`",
                "no value, or an `admin` address",
            );
            None
        }
        (Some(addr), Some(file)) => {
            let addr = c.addr("listeners.admin", addr)?;
            Some(AdminSettings { addr, token_file: c.path(file) })
        }
    }
}

/// The QUIC listener's identity files: all three with `quic`, none without.
fn quic_tls(c: &mut Checker, raw: &NodeConfig) -> Option<QuicTlsSettings> {
    let l = &raw.listeners;
    let fields = [("cert", &l.quic_cert), ("key", &l.quic_key), ("ca", &l.quic_ca)];
    if l.quic.is_none() {
        for (name, value) in fields {
            if value.is_some() {
                c.fail(
                    format!("listeners.quic_{name}"),
                    "set without `listeners.quic`",
                    "no value, or a `quic` address",
                );
            }
        }
        return None;
    }
    for (name, value) in fields {
        if value.is_none() {
            c.fail(
                format!("listeners.quic_{name}"),
                "missing",
                "a PEM file path (from `edge-node certs issue`), since `listeners.quic` is set",
            );
        }
    }
    match (&l.quic_cert, &l.quic_key, &l.quic_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(QuicTlsSettings { cert: c.path(cert), key: c.path(key), ca: c.path(ca) })
        }
        _ => None,
    }
}

/// `[upstream]`: the fields common to both kinds, then those of the kind chosen; the other
/// kind's fields are refused rather than ignored, so a half-edited section is caught.
fn upstream(c: &mut Checker, u: &UpstreamConfig) -> UpstreamSettings {
    let quic_fields = [
        ("addresses", u.addresses.is_some()),
        ("server_name", u.server_name.is_some()),
        ("ca", u.ca.is_some()),
        ("cert", u.cert.is_some()),
        ("key", u.key.is_some()),
    ];
    let kserve_fields = [("url", u.url.is_some()), ("model", u.model.is_some())];
    let refuse = |c: &mut Checker, fields: &[(&str, bool)], kind: &str, other: &str| {
        for (name, set) in fields {
            if *set {
                c.fail(
                    format!("upstream.{name}"),
                    format!("set, but `kind = \"{kind}\"` does not use it"),
                    format!("no `{name}`, or `kind = \"{other}\"`"),
                );
            }
        }
    };
    let (kind, server_name) = match u.kind.as_str() {
        "quic" => {
            refuse(c, &kserve_fields, "quic", "kserve");
            quic_upstream(c, u)
        }
        "kserve" => {
            refuse(c, &quic_fields, "kserve", "quic");
            kserve_upstream(c, u)
        }
        other => {
            c.fail("upstream.kind", format!("unknown kind `{other}`"), "`quic` or `kserve`");
            (UpstreamKind::Quic(QuicUpstreamSettings::default()), String::new())
        }
    };
    UpstreamSettings {
        kind,
        server_name,
        connect_timeout: c.positive_ms("upstream.connect_timeout_ms", u.connect_timeout_ms),
        request_timeout: c.positive_ms("upstream.request_timeout_ms", u.request_timeout_ms),
        retry_budget: c.unit("upstream.retry_budget", u.retry_budget),
        breaker_failure_threshold: c
            .at_least_one("upstream.breaker.failure_threshold", u.breaker.failure_threshold),
        breaker_open: c.positive_ms("upstream.breaker.open_ms", u.breaker.open_ms),
        breaker_half_open_probes: c
            .at_least_one("upstream.breaker.half_open_probes", u.breaker.half_open_probes),
    }
}

fn quic_upstream(c: &mut Checker, u: &UpstreamConfig) -> (UpstreamKind, String) {
    let required = |c: &mut Checker, name: &str, value: &Option<String>, expected: &str| match value {
        Some(v) if !v.trim().is_empty() => v.clone(),
        Some(_) => {
            c.fail(format!("upstream.{name}"), "empty", expected);
            String::new()
        }
        None => {
            c.fail(format!("upstream.{name}"), "missing (required with `kind = \"quic\"`)", expected);
            String::new()
        }
    };
    let addresses = match &u.addresses {
        None => {
            c.fail(
                "upstream.addresses",
                "missing (required with `kind = \"quic\"`)",
                "at least one `ip:port` of the upstream's QUIC listener",
            );
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            c.fail("upstream.addresses", "empty", "at least one `ip:port` of the upstream's QUIC listener");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.addr(&format!("upstream.addresses[{i}]"), a))
            .collect(),
    };
    let server_name =
        required(c, "server_name", &u.server_name, "the DNS name on the upstream's certificate");
    let pem = "a PEM file path (from `edge-node certs`)";
    let ca = required(c, "ca", &u.ca, pem);
    let cert = required(c, "cert", &u.cert, pem);
    let key = required(c, "key", &u.key, pem);
    let quic = QuicUpstreamSettings { addresses, ca: c.path(&ca), cert: c.path(&cert), key: c.path(&key) };
    (UpstreamKind::Quic(quic), server_name)
}

fn kserve_upstream(c: &mut Checker, u: &UpstreamConfig) -> (UpstreamKind, String) {
    let expected_url = "an `http://host:port` URL of the KServe server, such as `http://10.0.0.7:8080`";
    let (url, server_name) = match &u.url {
        None => {
            c.fail("upstream.url", "missing (required with `kind = \"kserve\"`)", expected_url);
            (String::new(), String::new())
        }
        Some(url) => kserve_url(c, url, expected_url).unwrap_or_default(),
    };
    let model = match &u.model {
        None => {
            c.fail(
                "upstream.model",
                "missing (required with `kind = \"kserve\"`)",
                "the model's name on the KServe server",
            );
            String::new()
        }
        Some(m) => {
            // The name becomes a URL path segment: the usual name characters keep it one.
            c.name("upstream.model", m);
            m.clone()
        }
    };
    (UpstreamKind::Kserve(KserveUpstreamSettings { url, model }), server_name)
}

/// The normalised base URL (no trailing `/`) and its `host:port`, or `None` with the problem
/// recorded.
fn kserve_url(c: &mut Checker, value: &str, expected: &str) -> Option<(String, String)> {
    let url = match reqwest::Url::parse(value) {
        Ok(url) => url,
        Err(e) => {
            c.fail("upstream.url", format!("`{value}` is not a URL ({e})"), expected);
            return None;
        }
    };
    let problem = match url.scheme() {
        "http" if url.host_str().is_none() => Some("has no host".to_owned()),
        "http" if url.query().is_some() || url.fragment().is_some() => {
            Some("has a query or fragment; the node appends `/v2/models/{model}/infer`".to_owned())
        }
        "http" if !url.username().is_empty() || url.password().is_some() => {
            Some("carries credentials, which would be sent in clear".to_owned())
        }
        "http" => None,
        "https" => Some(
            "uses https, but this build's HTTP client has no TLS (terminate TLS in a proxy beside this node)"
                .to_owned(),
        ),
        other => Some(format!("has scheme `{other}`")),
    };
    if let Some(problem) = problem {
        c.fail("upstream.url", format!("`{value}` {problem}"), expected);
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some((url.as_str().trim_end_matches('/').to_owned(), format!("{host}:{port}")))
}

/// A route's declared tensors: names unique and non-empty, known datatypes, dimensions
/// non-negative or `-1`.
fn tensor_decls(c: &mut Checker, f: &str, decls: &[TensorDeclConfig]) -> Vec<TensorDecl> {
    let mut seen = BTreeSet::new();
    decls
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let f = format!("{f}[{i}]");
            if d.name.trim().is_empty() {
                c.fail(format!("{f}.name"), "empty", "the tensor's name, such as `image`");
            } else if !seen.insert(d.name.as_str()) {
                c.fail(format!("{f}.name"), format!("`{}` declared twice", d.name), "a name used once");
            }
            let dtype = DType::from_kserve_name(&d.datatype);
            if dtype.is_none() {
                c.fail(
                    format!("{f}.datatype"),
                    format!("unknown datatype `{}`", d.datatype),
                    "`FP32`, `UINT8`, `INT8`, `INT32` or `INT64`",
                );
            }
            let mut shape = Vec::with_capacity(d.shape.len());
            for (j, &dim) in d.shape.iter().enumerate() {
                match dim {
                    -1 => shape.push(None),
                    d if d >= 0 => shape.push(usize::try_from(d).ok()),
                    d => c.fail(
                        format!("{f}.shape[{j}]"),
                        format!("{d}"),
                        "a size of at least 0, or -1 for any",
                    ),
                }
            }
            Some(TensorDecl { name: d.name.clone(), dtype: dtype?, shape })
        })
        .collect()
}

fn route(c: &mut Checker, raw: &NodeConfig, name: &str, r: &RouteConfig) -> RouteSettings {
    let f = format!("routes.{name}");
    c.name(&f, name);
    c.known(&format!("{f}.plugin"), &r.plugin, "plugin", raw.plugins.keys());
    // The plugin runs inside the route's budget: a longer plugin deadline could never be
    // used, and would let one request's plugin outlive its answer.
    if let Some(p) = raw.plugins.get(&r.plugin)
        && p.deadline_ms > r.deadline_ms
    {
        c.fail(
            format!("plugins.{}.deadline_ms", r.plugin),
            format!(
                "{} ms is longer than route `{name}`'s whole deadline_ms of {}",
                p.deadline_ms, r.deadline_ms
            ),
            format!("at most {} (or a longer `{f}.deadline_ms`)", r.deadline_ms),
        );
    }
    let normal = c.unit(&format!("{f}.thresholds.normal"), r.thresholds.normal);
    let thresholds = Mode::ALL.map(|mode| match r.thresholds.get(mode) {
        Some(_) if mode == Mode::Normal => normal,
        Some(t) => c.unit(&format!("{f}.thresholds.{mode}"), t),
        None => raw.modes.get(mode).threshold.unwrap_or(normal),
    });
    let rate_limit = r.rate_limit_rps.map(|rps| {
        let per_second = c.rate(&format!("{f}.rate_limit_rps"), rps, false);
        let burst = match r.rate_burst {
            Some(b) => c.at_least_one(&format!("{f}.rate_burst"), b),
            None => (per_second.ceil() as u32).max(1),
        };
        RateSettings { per_second, burst }
    });
    if r.rate_burst.is_some() && r.rate_limit_rps.is_none() {
        c.fail(
            format!("{f}.rate_burst"),
            "set without a rate limit",
            "`rate_limit_rps` as well, or no `rate_burst`",
        );
    }
    let inputs = tensor_decls(c, &format!("{f}.inputs"), &r.inputs);
    let outputs = tensor_decls(c, &format!("{f}.outputs"), &r.outputs);
    let shadow = c.unit(&format!("{f}.shadow"), r.shadow);
    let shadows = shadow > 0.0 || r.auto_threshold.is_some();
    if shadows && raw.upstream.is_none() {
        c.fail(
            format!("{f}.shadow"),
            "shadow traffic needs an upstream to compare with",
            "an `[upstream]` section, or `shadow = 0` and no `auto_threshold`",
        );
    }
    if shadows && raw.shadow.is_none() {
        c.fail(
            "shadow",
            format!("missing, but route `{name}` records shadow traffic"),
            "a `[shadow]` section with `store = \"shadow.sqlite\"`",
        );
    }
    if r.auto_threshold.is_some() && shadow == 0.0 {
        c.fail(
            format!("{f}.auto_threshold"),
            "set, but the route sends no shadow traffic to estimate from",
            "`shadow` above 0 (for example 0.05)",
        );
    }
    let auto_threshold = r.auto_threshold.as_ref().map(|a| {
        let g = format!("{f}.auto_threshold");
        let min = c.unit(&format!("{g}.min"), a.min);
        let max = c.unit(&format!("{g}.max"), a.max);
        if max < min {
            c.fail(format!("{g}.max"), format!("{max} is below min {min}"), "a value at or above `min`");
        }
        let step = a.step;
        if !(step > 0.0 && step <= 1.0) {
            c.fail(format!("{g}.step"), format!("{step} is not a usable step"), "a number in (0, 1]");
        }
        AutoThreshold {
            target_agreement: c.unit(&format!("{g}.target_agreement"), a.target_agreement),
            min,
            max,
            min_samples: c.at_least_one(&format!("{g}.min_samples"), a.min_samples) as usize,
            window: c.at_least_one(&format!("{g}.window"), a.window) as usize,
            step,
            interval: c.at_most(
                &format!("{g}.interval_s"),
                Duration::from_secs(a.interval_s.max(1)),
                MAX_WAIT,
                "s",
            ),
        }
    });
    RouteSettings {
        shadow,
        auto_threshold,
        inputs,
        outputs,
        plugin: r.plugin.clone(),
        thresholds,
        deadline: c.positive_ms(&format!("{f}.deadline_ms"), r.deadline_ms),
        cache_ttl: c.at_most(
            &format!("{f}.cache_ttl_s"),
            Duration::from_secs(r.cache_ttl_s),
            MAX_CACHE_TTL,
            "s",
        ),
        max_in_flight: c.at_least_one(&format!("{f}.max_in_flight"), r.max_in_flight),
        queue_len: r.queue_len,
        rate_limit,
    }
}
