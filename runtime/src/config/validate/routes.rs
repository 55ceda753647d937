//! Checks of `[routes.<name>]`: the plugin it names, its thresholds per mode, its limits,
//! its declared tensors, and its shadow traffic and automatic threshold. In a file of their
//! own because a route is checked against the rest of the config (plugins, modes, upstream).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Checker, MAX_CACHE_TTL, MAX_WAIT};
use crate::DType;
use crate::config::schema::{NodeConfig, RouteConfig, TensorDeclConfig};
use crate::config::{AutoThreshold, Mode, RateSettings, RouteSettings, TensorDecl};

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

pub(super) fn route(c: &mut Checker, raw: &NodeConfig, name: &str, r: &RouteConfig) -> RouteSettings {
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
