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
    let key = ctx.route.cache_key(&input_bytes(&ctx.inputs, &ctx.parameters));
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

/// The bytes the cache key covers: every input's name, type, shape and data, and every
/// parameter (plugins may read them), length-prefixed so that no two requests collide.
fn input_bytes(inputs: &[(String, Tensor)], parameters: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parameters: Vec<&(String, String)> = parameters.iter().collect();
    parameters.sort();
    for (k, v) in parameters {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    for (name, t) in inputs {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(t.dtype().name().as_bytes());
        out.push(0);
        out.extend_from_slice(&(t.shape().len() as u64).to_le_bytes());
        for d in t.shape() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(t.data().len() as u64).to_le_bytes());
        out.extend_from_slice(t.data());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: Vec<u8>) -> Tensor {
        Tensor::from_u8(vec![data.len()], data).unwrap()
    }

    #[test]
    fn cache_key_bytes_cover_inputs_and_parameters() {
        let a = vec![("x".to_owned(), tensor(vec![1, 2]))];
        let base = input_bytes(&a, &[]);
        assert_eq!(base, input_bytes(&a, &[]));
        assert_ne!(base, input_bytes(&[("y".to_owned(), tensor(vec![1, 2]))], &[]));
        assert_ne!(base, input_bytes(&[("x".to_owned(), tensor(vec![1, 3]))], &[]));
        let mode = |m: &str| vec![("mode".to_owned(), m.to_owned())];
        assert_ne!(input_bytes(&a, &mode("loop")), input_bytes(&a, &mode("ok")));
        // Order of parameters does not matter; their boundaries do.
        let p1 = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let p2 = vec![("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())];
        assert_eq!(input_bytes(&a, &p1), input_bytes(&a, &p2));
        assert_ne!(
            input_bytes(&a, &[("ab".into(), "c".into())]),
            input_bytes(&a, &[("a".into(), "bc".into())])
        );
    }
}
