//! A route's answer contract: the outputs every answer carries, whichever tier gives it.
//!
//! A route that declares `outputs` promises them to its clients on every answer: local,
//! escalated (to a Cascade node or a KServe server), cached or degraded. Local answers are
//! held to the declaration as the plugin gives them ([`local_outputs`]); an upstream's answer
//! first becomes the route's through `[routes.<name>.from_upstream]` (renames, a softmax,
//! and which output gives the confidence and the label), then is held to the same
//! declaration ([`upstream_answer`]). At start, [`check_offered`] compares that mapping with
//! what a KServe server says its model answers, so a mapping that cannot hold is refused
//! before the first request instead of degrading every escalation.
//!
//! Sans-IO: tensors and settings in, tensors or a one-line reason out.

use crate::config::{FromUpstream, RouteSettings, TensorDecl, Transform};
use crate::protocol::EscalationAnswer;
use crate::tensor::{DType, Tensor, confidence};

/// An upstream's answer, made the route's.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteAnswer {
    /// The route's outputs: the declared ones in declared order (all of the upstream's when
    /// the route declares none).
    pub outputs: Vec<(String, Tensor)>,
    /// The confidence: from the mapped output, or the upstream's own.
    pub confidence: f32,
    /// The label: from the mapped output, or the upstream's own.
    pub label: Option<String>,
}

/// `decl` as a client reads it: `probabilities (FP32 [1, 10])`.
fn describe(decl: &TensorDecl) -> String {
    format!("`{}` ({} {:?})", decl.name, decl.dtype.kserve_name(), decl.kserve_shape())
}

/// `t` if it fits `decl`; otherwise why not, naming the output.
fn fits(decl: &TensorDecl, t: Tensor) -> Result<Tensor, String> {
    if t.dtype() != decl.dtype || !decl.accepts_shape(t.shape()) {
        return Err(format!(
            "output `{}` is {} {:?}, but the route declares {}",
            decl.name,
            t.dtype().kserve_name(),
            t.shape(),
            describe(decl)
        ));
    }
    Ok(t)
}

/// A local answer's outputs held to the route's declared outputs: exactly those, in declared
/// order (others the plugin adds are left out). Unchanged when the route declares none.
pub fn local_outputs(
    route: &RouteSettings,
    mut outputs: Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>, String> {
    if route.outputs.is_empty() {
        return Ok(outputs);
    }
    route
        .outputs
        .iter()
        .map(|decl| {
            let at = outputs
                .iter()
                .position(|(name, _)| *name == decl.name)
                .ok_or_else(|| format!("the answer has no declared output {}", describe(decl)))?;
            let (name, tensor) = outputs.swap_remove(at);
            Ok((name, fits(decl, tensor)?))
        })
        .collect()
}

/// An upstream's answer as the route's: its outputs mapped by `from_upstream` and held to
/// the declared outputs, its confidence and label read from the outputs the mapping names
/// (or the upstream's own). The error says what does not fit; the caller answers locally,
/// marked degraded, as for any failed escalation.
pub fn upstream_answer(route: &RouteSettings, answer: EscalationAnswer) -> Result<RouteAnswer, String> {
    let map = &route.from_upstream;
    let offered: Vec<(String, Tensor)> = answer.outputs.into_iter().map(|t| (t.name, t.tensor)).collect();
    let outputs = if map.outputs.is_empty() {
        local_outputs(route, offered)?
    } else {
        let mut outputs = Vec::with_capacity(route.outputs.len());
        for decl in &route.outputs {
            // Validation maps every declared output when it maps any.
            let Some(m) = map.outputs.iter().find(|m| m.name == decl.name) else {
                return Err(format!("declared output `{}` has no mapping", decl.name));
            };
            let at = offered.iter().position(|(name, _)| *name == m.from).ok_or_else(|| {
                format!("the upstream's answer has no output `{}` (mapped to `{}`)", m.from, decl.name)
            })?;
            let tensor = transform(m.transform, &offered[at].1)
                .map_err(|why| format!("upstream output `{}`: {why}", m.from))?;
            outputs.push((decl.name.clone(), fits(decl, tensor)?));
        }
        outputs
    };
    let row = |name: &str| -> Result<Vec<f32>, String> {
        let (_, t) = outputs.iter().find(|(n, _)| n == name).ok_or_else(|| format!("no output `{name}`"))?;
        one_row(t).map_err(|why| format!("output `{name}`: {why}"))
    };
    let confidence = match &map.confidence {
        None => answer.confidence,
        Some(name) => {
            let max = row(name)?.into_iter().fold(f32::NEG_INFINITY, f32::max);
            // A softmax may round its top value a hair above 1.
            if !(0.0..=1.0 + 1e-6).contains(&max) {
                return Err(format!(
                    "output `{name}` gives a confidence of {max}, not a probability in [0, 1]"
                ));
            }
            max.min(1.0)
        }
    };
    let label = match &map.label {
        None => answer.label.map(|l| l.to_string()),
        Some(name) => confidence::argmax(&row(name)?).map(|i| i.to_string()),
    };
    Ok(RouteAnswer { outputs, confidence, label })
}

/// The values of `t` as f32 if it holds one row (every dimension but the last is 1).
fn one_row(t: &Tensor) -> Result<Vec<f32>, String> {
    let rows: usize = t.shape().iter().rev().skip(1).product();
    if rows != 1 || t.shape().last().is_none_or(|&k| k == 0) {
        return Err(format!("shape {:?} is not one row of scores", t.shape()));
    }
    t.to_f32().map_err(|e| e.to_string())
}

fn transform(how: Transform, t: &Tensor) -> Result<Tensor, String> {
    match how {
        Transform::None => Ok(t.clone()),
        Transform::Softmax => {
            if t.dtype() != DType::F32 {
                return Err(format!("softmax needs FP32, the upstream sent {}", t.dtype().kserve_name()));
            }
            let Some(&k) = t.shape().last().filter(|&&k| k > 0) else {
                return Err(format!(
                    "softmax needs a last dimension of at least 1, not shape {:?}",
                    t.shape()
                ));
            };
            let values = t.to_f32().map_err(|e| e.to_string())?;
            let out: Vec<f32> = values.chunks(k).flat_map(confidence::softmax).collect();
            Tensor::from_f32(t.shape().to_vec(), &out).map_err(|e| e.to_string())
        }
    }
}

/// Whether what a KServe server says its model answers (`offered`, from its metadata) can
/// give every output route `route` declares through its mapping; if not, a line naming the
/// output and the config key to change.
pub fn check_offered(route_name: &str, route: &RouteSettings, offered: &[TensorDecl]) -> Result<(), String> {
    let map: &FromUpstream = &route.from_upstream;
    let names = || offered.iter().map(|o| format!("`{}`", o.name)).collect::<Vec<_>>().join(", ");
    for decl in &route.outputs {
        let (from, how) = match map.outputs.iter().find(|m| m.name == decl.name) {
            Some(m) => (m.from.as_str(), m.transform),
            None => (decl.name.as_str(), Transform::None),
        };
        let Some(o) = offered.iter().find(|o| o.name == from) else {
            let fix = if map.outputs.is_empty() {
                format!("map one in [routes.{route_name}.from_upstream] outputs")
            } else {
                format!("fix [routes.{route_name}.from_upstream] outputs")
            };
            return Err(format!(
                "route `{route_name}` needs upstream output `{from}` for its output `{}`, and the upstream model answers only {}: {fix}",
                decl.name,
                names()
            ));
        };
        let dtype_ok = match how {
            Transform::None => o.dtype == decl.dtype,
            Transform::Softmax => o.dtype == DType::F32,
        };
        let shape_ok = o.shape.len() == decl.shape.len()
            && o.shape.iter().zip(&decl.shape).all(|(a, b)| a.is_none() || b.is_none() || a == b);
        if !dtype_ok || !shape_ok {
            return Err(format!(
                "route `{route_name}` declares output {}, and the upstream model's `{from}` is {} {:?}{}: change the declaration or [routes.{route_name}.from_upstream]",
                describe(decl),
                o.dtype.kserve_name(),
                o.kserve_shape(),
                if how == Transform::Softmax { " (softmax keeps the shape)" } else { "" },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputMap;
    use crate::protocol::NamedTensor;

    fn decl(name: &str, dtype: DType, shape: &[Option<usize>]) -> TensorDecl {
        TensorDecl { name: name.into(), dtype, shape: shape.to_vec() }
    }

    /// A route declaring `probabilities` FP32 [1, 10]-like ([1, K] here, K = 3).
    fn route(from_upstream: FromUpstream) -> RouteSettings {
        RouteSettings {
            plugin: "p".into(),
            thresholds: [0.9; 3],
            deadline: std::time::Duration::from_millis(250),
            cache_ttl: std::time::Duration::ZERO,
            max_in_flight: 1,
            queue_len: 0,
            rate_limit: None,
            inputs: Vec::new(),
            outputs: vec![decl("probabilities", DType::F32, &[Some(1), Some(3)])],
            from_upstream,
            shadow: 0.0,
            auto_threshold: None,
        }
    }

    fn logits_map() -> FromUpstream {
        FromUpstream {
            outputs: vec![OutputMap {
                name: "probabilities".into(),
                from: "logits".into(),
                transform: Transform::Softmax,
            }],
            confidence: Some("probabilities".into()),
            label: Some("probabilities".into()),
        }
    }

    fn answer(outputs: Vec<(&str, Tensor)>) -> EscalationAnswer {
        EscalationAnswer {
            id: 1,
            outputs: outputs.into_iter().map(|(n, t)| NamedTensor { name: n.into(), tensor: t }).collect(),
            confidence: 1.0,
            label: None,
            model_version: "central".into(),
            timings: Vec::new(),
        }
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    #[test]
    fn raw_logits_become_the_declared_probabilities_with_confidence_and_label() {
        let got =
            upstream_answer(&route(logits_map()), answer(vec![("logits", f32s(&[1, 3], &[1.0, 3.0, 2.0]))]))
                .unwrap();
        assert_eq!(got.outputs.len(), 1);
        assert_eq!(got.outputs[0].0, "probabilities");
        let p = got.outputs[0].1.to_f32().unwrap();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{p:?}");
        let expected = 1.0 / (1.0 + (-1.0f32).exp() + (-2.0f32).exp());
        assert!((got.confidence - expected).abs() < 1e-6, "{}", got.confidence);
        assert_eq!(got.label.as_deref(), Some("1"));
    }

    #[test]
    fn an_upstream_answer_that_cannot_be_the_routes_is_refused_naming_the_output() {
        let r = route(logits_map());
        let err = upstream_answer(&r, answer(vec![("scores", f32s(&[1, 3], &[0.0; 3]))])).unwrap_err();
        assert!(err.contains("no output `logits`"), "{err}");
        let err = upstream_answer(&r, answer(vec![("logits", f32s(&[1, 4], &[0.0; 4]))])).unwrap_err();
        assert!(err.contains("output `probabilities` is FP32 [1, 4]"), "{err}");
        let ints = Tensor::from_u8(vec![1, 3], vec![1, 2, 3]).unwrap();
        let err = upstream_answer(&r, answer(vec![("logits", ints)])).unwrap_err();
        assert!(err.contains("softmax needs FP32"), "{err}");

        // No mapping: the upstream's outputs must carry the declared names themselves.
        let plain = route(FromUpstream::default());
        let err = upstream_answer(&plain, answer(vec![("logits", f32s(&[1, 3], &[0.0; 3]))])).unwrap_err();
        assert!(err.contains("no declared output `probabilities`"), "{err}");
        // A confidence read from an output that is not a probability.
        let mut conf_only = FromUpstream { confidence: Some("probabilities".into()), ..Default::default() };
        conf_only.label = None;
        let err = upstream_answer(
            &route(conf_only),
            answer(vec![("probabilities", f32s(&[1, 3], &[2.0, 0.0, 0.0]))]),
        )
        .unwrap_err();
        assert!(err.contains("not a probability"), "{err}");
    }

    #[test]
    fn without_a_mapping_the_upstreams_own_confidence_and_label_stand() {
        let mut a =
            answer(vec![("extra", f32s(&[1], &[5.0])), ("probabilities", f32s(&[1, 3], &[0.2, 0.7, 0.1]))]);
        (a.confidence, a.label) = (0.7, Some(1));
        let got = upstream_answer(&route(FromUpstream::default()), a).unwrap();
        assert_eq!(got.outputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["probabilities"]);
        assert_eq!((got.confidence, got.label.as_deref()), (0.7, Some("1")));
    }

    #[test]
    fn local_answers_keep_exactly_the_declared_outputs() {
        let r = route(FromUpstream::default());
        let outputs = vec![
            ("debug".to_owned(), f32s(&[1], &[0.0])),
            ("probabilities".to_owned(), f32s(&[1, 3], &[0.0; 3])),
        ];
        let kept = local_outputs(&r, outputs).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, "probabilities");
        let err = local_outputs(&r, vec![("logits".to_owned(), f32s(&[1, 3], &[0.0; 3]))]).unwrap_err();
        assert_eq!(err, "the answer has no declared output `probabilities` (FP32 [1, 3])");
        // A route that declares nothing passes answers through.
        let mut open = r.clone();
        open.outputs.clear();
        assert_eq!(local_outputs(&open, vec![("y".to_owned(), f32s(&[1], &[1.0]))]).unwrap().len(), 1);
    }

    #[test]
    fn the_upstreams_metadata_is_checked_against_the_mapping() {
        let logits = decl("logits", DType::F32, &[None, Some(3)]);
        assert_eq!(check_offered("digits", &route(logits_map()), std::slice::from_ref(&logits)), Ok(()));
        // No mapping, and the server answers something else.
        let err = check_offered("digits", &route(FromUpstream::default()), std::slice::from_ref(&logits))
            .unwrap_err();
        assert!(err.contains("needs upstream output `probabilities`"), "{err}");
        assert!(err.contains("answers only `logits`"), "{err}");
        assert!(err.contains("[routes.digits.from_upstream]"), "{err}");
        // The right name with the wrong shape.
        let wide = decl("logits", DType::F32, &[Some(1), Some(1000)]);
        let err = check_offered("digits", &route(logits_map()), &[wide]).unwrap_err();
        assert!(err.contains("`logits` is FP32 [1, 1000]"), "{err}");
        let ints = decl("logits", DType::I64, &[Some(1), Some(3)]);
        assert!(check_offered("digits", &route(logits_map()), &[ints]).is_err());
    }
}
