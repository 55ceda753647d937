//! Stage 3, look up: the answer cache and the coalescing of identical requests. A hit
//! answers at once; an identical request in flight is awaited; otherwise this request leads
//! and computes the answer (the stages after this one), which its followers then share.

use std::time::Instant;

use super::Node;
use super::context::Ctx;
use super::error::ServeError;
use super::reply::Reply;
use crate::cache::{CacheStatus, Lookup};
use crate::telemetry::Stage;
use crate::tensor::Tensor;

pub(super) async fn lookup(node: &Node, ctx: &Ctx<'_>) -> Result<Reply, ServeError> {
    // An answer holds only for the decision it was made under: the threshold in force and
    // whether the request may escalate at all (a downstream node's may not).
    let decided = Decided { threshold: ctx.route.threshold(node.mode()), may_escalate: ctx.may_escalate() };
    let key = ctx.route.cache_key(&key_bytes(decided, &ctx.inputs, &ctx.parameters));
    let t = Instant::now();
    let Lookup { mut value, status } =
        node.cache.get_or_compute(key, ctx.route.settings.cache_ttl, || node.compute(ctx)).await?;
    // A miss spent its time in the later stages, which time themselves.
    if status != CacheStatus::Miss {
        ctx.timings.add(Stage::Cache, t.elapsed());
    }
    value.request.cache = status;
    Ok(value)
}

/// What decided an answer, beyond its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decided {
    threshold: f64,
    may_escalate: bool,
}

/// The bytes the cache key covers: what decided the answer, every parameter (plugins may
/// read them) and every input's name, type, shape and data. Each section is tagged and
/// counted and every field length-prefixed, so no two different requests give the same
/// bytes.
fn key_bytes(decided: Decided, inputs: &[(String, Tensor)], parameters: &[(String, String)]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(64 + inputs.iter().map(|(_, t)| t.data().len() + 64).sum::<usize>());
    out.extend_from_slice(b"decision");
    out.extend_from_slice(&decided.threshold.to_bits().to_le_bytes());
    out.push(u8::from(decided.may_escalate));
    let mut parameters: Vec<&(String, String)> = parameters.iter().collect();
    parameters.sort();
    out.extend_from_slice(b"parameters");
    out.extend_from_slice(&(parameters.len() as u64).to_le_bytes());
    for (k, v) in parameters {
        field(&mut out, k.as_bytes());
        field(&mut out, v.as_bytes());
    }
    out.extend_from_slice(b"inputs");
    out.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
    for (name, t) in inputs {
        field(&mut out, name.as_bytes());
        field(&mut out, t.dtype().name().as_bytes());
        out.extend_from_slice(&(t.shape().len() as u64).to_le_bytes());
        for d in t.shape() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        field(&mut out, t.data());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Decided = Decided { threshold: 0.9, may_escalate: true };

    fn tensor(data: Vec<u8>) -> Tensor {
        Tensor::from_u8(vec![data.len()], data).unwrap()
    }

    #[test]
    fn cache_key_bytes_cover_inputs_and_parameters() {
        let a = vec![("x".to_owned(), tensor(vec![1, 2]))];
        let base = key_bytes(ANY, &a, &[]);
        assert_eq!(base, key_bytes(ANY, &a, &[]));
        assert_ne!(base, key_bytes(ANY, &[("y".to_owned(), tensor(vec![1, 2]))], &[]));
        assert_ne!(base, key_bytes(ANY, &[("x".to_owned(), tensor(vec![1, 3]))], &[]));
        let mode = |m: &str| vec![("mode".to_owned(), m.to_owned())];
        assert_ne!(key_bytes(ANY, &a, &mode("loop")), key_bytes(ANY, &a, &mode("ok")));
        // Order of parameters does not matter; their boundaries do.
        let p1 = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let p2 = vec![("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())];
        assert_eq!(key_bytes(ANY, &a, &p1), key_bytes(ANY, &a, &p2));
        assert_ne!(
            key_bytes(ANY, &a, &[("ab".into(), "c".into())]),
            key_bytes(ANY, &a, &[("a".into(), "bc".into())])
        );
        // The decision it was made under is part of the key.
        assert_ne!(base, key_bytes(Decided { threshold: 0.75, ..ANY }, &a, &[]));
        assert_ne!(base, key_bytes(Decided { may_escalate: false, ..ANY }, &a, &[]));
        // A parameter cannot pass for an input, nor an empty section for a missing one.
        let p = [("x".to_owned(), "u8".to_owned())];
        assert_ne!(key_bytes(ANY, &[], &p), key_bytes(ANY, &[("x".to_owned(), tensor(vec![]))], &[]));
    }
}
