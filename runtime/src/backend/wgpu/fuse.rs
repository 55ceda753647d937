//! Passes over an imported [`Graph`] that fold steps into their neighbours, so a model
//! costs fewer dispatches and fewer round trips through device memory. Every fold computes
//! exactly what the steps it replaces computed, and only happens when the intermediate
//! value has no other reader and is not a model output.

use super::graph::{Data, EltOp, Graph, Quantize, Step, ValueId};

/// Folds each unpadded, undilated max pool that is the only reader of a convolution's output
/// into the convolution: it computes the conv outputs of each pool window and keeps their
/// max, so the full-size conv output is never written (one dispatch and one round trip
/// through memory fewer). Exact: max is taken over the same values, after Relu or
/// requantisation (both monotonic, and applied per value as before).
pub(crate) fn pools(g: &mut Graph) {
    let outputs: Vec<ValueId> = g.outputs.iter().map(|(v, _)| *v).collect();
    let mut i = 0;
    while i < g.steps.len() {
        let Step::MaxPool { x, y, win, lut: None } = g.steps[i].clone() else {
            i += 1;
            continue;
        };
        let readers = g.steps.iter().filter(|s| s.reads().contains(&x)).count();
        // Every window must lie inside the conv output (no padding, no ceil-mode overhang).
        let inside = win.ph == 0
            && win.pw == 0
            && win.dh == 1
            && win.dw == 1
            && win.oh > 0
            && win.ow > 0
            && (win.oh - 1) * win.sh + win.kh <= win.h
            && (win.ow - 1) * win.sw + win.kw <= win.w;
        let conv = g.steps.iter().position(|s| matches!(s, Step::Conv { y: cy, pool: None, .. } if *cy == x));
        match conv {
            Some(c) if readers == 1 && inside && !outputs.contains(&x) => {
                if let Step::Conv { y: cy, pool, .. } = &mut g.steps[c] {
                    *cy = y;
                    *pool = Some(win);
                }
                g.steps.remove(i);
            }
            _ => i += 1,
        }
    }
}

/// Folds the element-wise steps around int8 convolutions and matmuls into them, so the int8
/// path costs no more dispatches than fp32: the input QuantizeLinear into the first conv's
/// loads, a lookup table (tract's folded requantisation) into the pool before it, and
/// DequantizeLinear plus an fp32 bias into the last matmul's epilogue. Each fold computes
/// exactly what the two steps computed (same rounding, same clamping), and only happens
/// when the intermediate has no other reader.
pub(crate) fn int8_edges(g: &mut Graph) {
    let outputs: Vec<ValueId> = g.outputs.iter().map(|(v, _)| *v).collect();
    let readers = |g: &Graph, v: ValueId| {
        g.steps.iter().filter(|s| s.reads().contains(&v)).count() + usize::from(outputs.contains(&v))
    };
    let writer = |g: &Graph, v: ValueId| {
        g.steps.iter().position(|s| match s {
            Step::Conv { y, .. }
            | Step::MatMul { y, .. }
            | Step::MaxPool { y, .. }
            | Step::Elementwise { y, .. }
            | Step::Softmax { y, .. } => *y == v,
        })
    };
    let mut i = 0;
    while i < g.steps.len() {
        let Step::Elementwise { x, y, op, aux } = g.steps[i].clone() else {
            i += 1;
            continue;
        };
        let single = readers(g, x) == 1;
        let fused = match op {
            // Quantize feeding exactly one int8 conv or matmul: quantise on load.
            EltOp::Quantize { scale, zp, lo, hi } if readers(g, y) == 1 && !outputs.contains(&y) => {
                let consumer = g.steps.iter().position(|s| s.reads().contains(&y));
                match consumer.map(|c| &mut g.steps[c]) {
                    Some(
                        Step::Conv { x: cx, quant: Some(q), .. } | Step::MatMul { x: cx, quant: Some(q), .. },
                    ) if q.quantize_input.is_none() => {
                        *cx = x;
                        q.quantize_input = Some(Quantize { scale, zp, lo, hi });
                        true
                    }
                    _ => false,
                }
            }
            EltOp::Lookup if single => match writer(g, x).map(|w| &mut g.steps[w]) {
                Some(Step::MaxPool { y: py, lut: lut @ None, .. }) => {
                    *py = y;
                    *lut = aux;
                    true
                }
                _ => false,
            },
            EltOp::Dequantize { scale, zp } if single => match writer(g, x).map(|w| &mut g.steps[w]) {
                Some(
                    Step::Conv { y: py, quant: Some(q), .. } | Step::MatMul { y: py, quant: Some(q), .. },
                ) if q.dequantize.is_none() => {
                    *py = y;
                    q.dequantize = Some((scale, zp));
                    true
                }
                _ => false,
            },
            EltOp::AddBroadcast { len } if single => {
                let w = writer(g, x);
                match (w.map(|w| g.steps[w].clone()), aux) {
                    (Some(Step::MatMul { n, bias, quant: Some(q), .. }), Some(c))
                        if n == len && q.dequantize.is_some() && !q.fp32_bias =>
                    {
                        if let (Data::I32(ints), Data::F32(floats)) = (&g.consts[bias], &g.consts[c]) {
                            // Stored after the (block-padded) int bias, as f32 bits.
                            let mut packed = ints.clone();
                            let mut extra: Vec<i32> = floats.iter().map(|f| f.to_bits() as i32).collect();
                            extra.resize(ints.len(), 0);
                            packed.extend(extra);
                            g.consts[bias] = Data::I32(packed);
                            if let Some(Step::MatMul { y: py, quant: Some(q), .. }) =
                                w.map(|w| &mut g.steps[w])
                            {
                                *py = y;
                                q.fp32_bias = true;
                            }
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if fused {
            g.steps.remove(i);
        } else {
            i += 1;
        }
    }
}
