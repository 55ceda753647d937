//! Checks of `[routes.<name>]`: the plugin it names, its thresholds per mode, its limits,
//! its declared tensors, and its shadow traffic and automatic threshold. In a file of their
//! own because a route is checked against the rest of the config (plugins, modes, upstream).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Checker, MAX_CACHE_TTL, MAX_WAIT};
use crate::DType;
use crate::config::schema::{FromUpstreamConfig, NodeConfig, RouteConfig, TensorDeclConfig};
use crate::config::{
    AutoThreshold, FromUpstream, Mode, OutputMap, RateSettings, RouteSettings, TensorDecl, Transform,
};

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

/// `[routes.<name>.from_upstream]`: it maps onto the route's declared outputs, all of them
/// when it maps any, with known transforms, and names declared outputs for the confidence
/// and the label.
fn from_upstream(
    c: &mut Checker,
    raw: &NodeConfig,
    route: &str,
    m: &FromUpstreamConfig,
    declared: &[TensorDecl],
) -> FromUpstream {
    let f = format!("{route}.from_upstream");
    if raw.upstream.is_none() {
        c.fail(&f, "set, but there is no upstream to map", "an `[upstream]` section, or no `from_upstream`");
    }
    if declared.is_empty() {
        c.fail(
            &f,
            "maps onto declared outputs, and the route declares none",
            format!("`{route}.outputs`, the tensors every answer carries"),
        );
    }
    let find = |name: &str| declared.iter().find(|d| d.name == name);
    let mut mapped = BTreeSet::new();
    let mut outputs = Vec::with_capacity(m.outputs.len());
    for (i, o) in m.outputs.iter().enumerate() {
        let g = format!("{f}.outputs[{i}]");
        let decl = find(&o.name);
        if decl.is_none() && !declared.is_empty() {
            c.fail(format!("{g}.name"), format!("`{}` is not a declared output", o.name), "one of `outputs`");
        } else if !mapped.insert(o.name.as_str()) {
            c.fail(format!("{g}.name"), format!("`{}` mapped twice", o.name), "each output mapped once");
        }
        if o.from.trim().is_empty() {
            c.fail(format!("{g}.from"), "empty", "the upstream's output name, such as `logits`");
        }
        let transform = match o.transform.as_str() {
            "none" => Transform::None,
            "softmax" => Transform::Softmax,
            other => {
                c.fail(
                    format!("{g}.transform"),
                    format!("unknown transform `{other}`"),
                    "`none` or `softmax`",
                );
                Transform::None
            }
        };
        if transform == Transform::Softmax
            && let Some(d) = decl
            && d.dtype != DType::F32
        {
            c.fail(
                format!("{g}.transform"),
                format!("softmax gives FP32, and `{}` is declared {}", d.name, d.dtype.kserve_name()),
                "`none`, or declare the output FP32",
            );
        }
        outputs.push(OutputMap { name: o.name.clone(), from: o.from.clone(), transform });
    }
    if !m.outputs.is_empty() {
        for d in declared.iter().filter(|d| !mapped.contains(d.name.as_str())) {
            c.fail(
                format!("{f}.outputs"),
                format!("declared output `{}` is not mapped", d.name),
                "an entry for every declared output",
            );
        }
    }
    let mut pick = |key: &str, value: &Option<String>, fp32: bool| {
        let name = value.as_ref()?;
        match find(name) {
            None if !declared.is_empty() => {
                c.fail(format!("{f}.{key}"), format!("`{name}` is not a declared output"), "one of `outputs`")
            }
            Some(d) if fp32 && d.dtype != DType::F32 => c.fail(
                format!("{f}.{key}"),
                format!("`{name}` is declared {}, not probabilities", d.dtype.kserve_name()),
                "an FP32 output holding probabilities",
            ),
            _ => {}
        }
        Some(name.clone())
    };
    let confidence = pick("confidence", &m.confidence, true);
    let label = pick("label", &m.label, false);
    FromUpstream { outputs, confidence, label }
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
    let from_upstream = match &r.from_upstream {
        Some(m) => from_upstream(c, raw, &f, m, &outputs),
        None => FromUpstream::default(),
    };
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
    let kserve = raw.upstream.as_ref().is_some_and(|u| u.kind == "kserve");
    if shadows && kserve && from_upstream.label.is_none() {
        c.fail(
            format!("{f}.shadow"),
            "shadow traffic compares labels, and a KServe server's answers carry none",
            format!("`label = \"<output>\"` in `[{f}.from_upstream]`"),
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
        from_upstream,
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
