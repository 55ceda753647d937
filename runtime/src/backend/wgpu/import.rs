//! From tract's typed graph to a list of GPU steps ([`Graph`]).
//!
//! The ONNX file is parsed by tract (no second parser) and decluttered with a symbolic batch
//! `N`, so every activation is `[N, item dims...]` and each op can be read per item. Each
//! node is mapped to a kernel step; a node no kernel covers is refused, naming it. Bias and
//! Relu that follow a convolution or matmul are fused into it as it is mapped (one dispatch
//! instead of two); the passes in [`super::fuse`] then fold the rest.

use std::collections::HashMap;

use tract_onnx::prelude::{DatumType, OutletId, TDim, Tensor, TypedFact, TypedModel};
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::math::{Add, Max};
use tract_onnx::tract_core::ops::nn::{DataFormat, Softmax, SoftmaxKind};
use tract_onnx::tract_core::ops::quant::{
    DequantizeLinearF32, LookupTable, QuantizeLinearI8, QuantizeLinearU8,
};
use tract_onnx::tract_core::ops::source::TypedSource;

use super::fuse;
use super::graph::{Data, Elem, EltOp, Graph, Int8Op, Step, Value, ValueId, Window};
use crate::backend::quant::{Requant, int_range, ints};
/// Why a node could not be imported: the node, its op, and (for logs) why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) node: String,
    pub(crate) op: String,
    pub(crate) why: String,
}

fn refuse(node: &str, op: &str, why: impl Into<String>) -> Refusal {
    Refusal { node: node.to_owned(), op: op.to_owned(), why: why.into() }
}

/// Dimensions after the batch; None unless the first is the batch symbol and the rest are
/// concrete.
fn item_dims(fact: &TypedFact, batch: &TDim) -> Option<Vec<usize>> {
    let dims: Vec<&TDim> = fact.shape.iter().collect();
    if dims.first() != Some(&batch) {
        return None;
    }
    dims[1..].iter().map(|d| d.to_usize().ok()).collect()
}

fn konst(model: &TypedModel, outlet: OutletId) -> Option<std::sync::Arc<Tensor>> {
    model.outlet_fact(outlet).ok().and_then(|f| f.konst.clone())
}

fn floats(t: &Tensor) -> Option<Vec<f32>> {
    Some(t.cast_to::<f32>().ok()?.to_plain_array_view::<f32>().ok()?.iter().copied().collect())
}

/// Explicit pads before each spatial axis, and the window geometry of a 2-D pool spec.
fn window(spec: &PoolSpec, input: &[usize], output: &[usize]) -> Option<Window> {
    if spec.data_format != DataFormat::NCHW || spec.kernel_shape.len() != 2 || input.len() != 3 {
        return None;
    }
    // Ceil mode (`PaddingSpec::ExplicitOnnxPool(.., true)`) needs nothing more: the output fact already has
    // the extra row or column, and the kernels skip taps outside the image.
    let strides = spec.strides.clone().unwrap_or_else(|| vec![1, 1].into());
    let dilations = spec.dilations.clone().unwrap_or_else(|| vec![1, 1].into());
    if strides.len() != 2 || dilations.len() != 2 {
        return None;
    }
    let pads = spec.padding.compute(&input[1..], &spec.kernel_shape, &dilations, &strides);
    if output.len() != 3 || pads.len() != 2 {
        return None;
    }
    Some(Window {
        ci: input[0],
        h: input[1],
        w: input[2],
        co: output[0],
        oh: output[1],
        ow: output[2],
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        sh: strides[0],
        sw: strides[1],
        ph: pads[0].pad_before,
        pw: pads[1].pad_before,
        dh: dilations[0],
        dw: dilations[1],
    })
}

/// Builds the step list of a decluttered typed model whose inputs are `[batch, ...]`.
pub(crate) fn import(model: &TypedModel, batch: &TDim) -> Result<Graph, Refusal> {
    let mut g = Graph {
        values: Vec::new(),
        consts: Vec::new(),
        steps: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        int8: false,
    };
    let mut of: HashMap<OutletId, ValueId> = HashMap::new();
    // Which step wrote a value, so a following bias or Relu can be folded into it.
    let mut writer: HashMap<ValueId, usize> = HashMap::new();
    let outputs = model.output_outlets().map_err(|e| refuse("?", "?", format!("{e}")))?.to_vec();
    let order = model.eval_order().map_err(|e| refuse("?", "?", format!("{e}")))?;

    for id in order {
        let node = model.node(id);
        let name = node.name.as_str();
        let op_name = node.op.name().to_string();
        let out = OutletId::new(id, 0);
        if node.op_is::<Const>() {
            continue;
        }
        let fact = model.outlet_fact(out).map_err(|e| refuse(name, &op_name, format!("{e}")))?;
        let Some(out_dims) = item_dims(fact, batch) else {
            return Err(refuse(name, &op_name, "output is not [batch, fixed dims...]"));
        };
        let per_item: usize = out_dims.iter().product();
        let elem_of = |dt: DatumType| match dt {
            DatumType::F32 => Some(Elem::F32),
            dt if int_range(dt).is_some() => Some(Elem::Int),
            _ => None,
        };
        let Some(out_elem) = elem_of(fact.datum_type) else {
            return Err(refuse(name, &op_name, format!("element type {:?}", fact.datum_type)));
        };
        let input = |ix: usize| -> Result<ValueId, Refusal> {
            node.inputs
                .get(ix)
                .and_then(|o| of.get(o))
                .copied()
                .ok_or_else(|| refuse(name, &op_name, format!("input {ix} is not an activation")))
        };
        let in_dims = |ix: usize| -> Option<Vec<usize>> {
            node.inputs.get(ix).and_then(|o| model.outlet_fact(*o).ok()).and_then(|f| item_dims(f, batch))
        };
        // Only one reader and not a model output: then a following op may be fused in.
        let fusable = |x: ValueId, x_outlet: OutletId| {
            model.outlet_successors(x_outlet).len() == 1
                && !outputs.contains(&x_outlet)
                && writer.contains_key(&x)
        };
        let new_value = |g: &mut Graph| {
            g.values.push(Value { elem: out_elem, per_item });
            g.values.len() - 1
        };

        if node.op_is::<TypedSource>() {
            if out_elem != Elem::F32 {
                return Err(refuse(name, &op_name, "the wgpu backend takes fp32 inputs only"));
            }
            let v = new_value(&mut g);
            g.inputs.push(v);
            of.insert(out, v);
        } else if let Some(conv) = node.op_as::<Conv>() {
            let (Some(xd), Some(win)) =
                (in_dims(0), in_dims(0).and_then(|d| window(&conv.pool_spec, &d, &out_dims)))
            else {
                return Err(refuse(name, "Conv", "only NCHW 2-D convolutions"));
            };
            if conv.group != 1 || conv.kernel_fmt != KernelFormat::OIHW || xd[0] != win.ci {
                return Err(refuse(name, "Conv", "only group 1 convolutions with OIHW weights"));
            }
            let x = input(0)?;
            let Some(w) = node.inputs.get(1).and_then(|o| konst(model, *o)) else {
                return Err(refuse(name, "Conv", "weights must be constant"));
            };
            let bias_t = node.inputs.get(2).and_then(|o| konst(model, *o));
            if node.inputs.len() > 2 && bias_t.is_none() {
                return Err(refuse(name, "Conv", "bias must be constant"));
            }
            let quant = if conv.q_params.is_some() {
                let Some(requant) = Requant::of_node(model, id) else {
                    return Err(refuse(
                        name,
                        "QLinearConv",
                        "only per-tensor constant scales and zero points",
                    ));
                };
                g.int8 = true;
                Some(Int8Op::new(requant))
            } else {
                None
            };
            let expect = win.co * win.ci * win.kh * win.kw;
            let weights = match quant {
                Some(_) => ints(&w).filter(|v| v.len() == expect).map(Data::I32),
                None => floats(&w).filter(|v| v.len() == expect).map(Data::F32),
            };
            let bias = match (&quant, &bias_t) {
                (Some(_), Some(b)) => ints(b).map(|v| Data::I32(broadcast(v, win.co))),
                (None, Some(b)) => floats(b).map(|v| Data::F32(broadcast(v, win.co))),
                (Some(_), None) => Some(Data::I32(vec![0; win.co])),
                (None, None) => Some(Data::F32(vec![0.0; win.co])),
            };
            let (Some(weights), Some(bias)) = (weights, bias.filter(|b| data_len(b) == win.co)) else {
                return Err(refuse(name, "Conv", "weights or bias of an unexpected shape"));
            };
            let taps = win.ci * win.kh * win.kw;
            let (weights, bias) =
                pack(weights, bias, quant.map_or(0, |q| q.requant.w_zero), win.co, taps, true);
            let y = new_value(&mut g);
            g.consts.push(weights);
            g.consts.push(bias);
            let step = Step::Conv {
                x,
                y,
                weights: g.consts.len() - 2,
                bias: g.consts.len() - 1,
                win,
                relu: false,
                quant,
                pool: None,
            };
            writer.insert(y, g.steps.len());
            g.steps.push(step);
            of.insert(out, y);
        } else if let Some(einsum) = node.op_as::<EinSum>() {
            let op = if einsum.q_params.is_some() { "QLinearMatMul" } else { "MatMul" };
            let expr = einsum.axes.to_string();
            let Some((ins, out_axes)) = expr.split_once("->") else {
                return Err(refuse(name, op, format!("einsum {expr}")));
            };
            let mut operands = ins.split(',');
            let (a, b): (Vec<char>, Vec<char>) = match (operands.next(), operands.next()) {
                (Some(a), Some(b)) => (a.chars().collect(), b.chars().collect()),
                _ => return Err(refuse(name, op, format!("einsum {expr}"))),
            };
            let o: Vec<char> = out_axes.chars().collect();
            // [M, K...] x [K..., N] -> [M, N], or with B transposed ([N, K...]).
            let plain = o.len() == 2
                && a.len() >= 2
                && a[0] == o[0]
                && b.last() == Some(&o[1])
                && a[1..] == b[..b.len() - 1];
            let transposed =
                o.len() == 2 && a.len() >= 2 && a[0] == o[0] && b.first() == Some(&o[1]) && a[1..] == b[1..];
            let x = input(0)?;
            let Some(w) = node.inputs.get(1).and_then(|o| konst(model, *o)) else {
                return Err(refuse(name, op, "the second operand must be constant"));
            };
            if !(plain || transposed) {
                return Err(refuse(name, op, format!("einsum {expr} is not a batched matrix product")));
            }
            let n = out_dims.first().copied().unwrap_or(0);
            let k: usize = in_dims(0).map(|d| d.iter().product()).unwrap_or(0);
            let quant = if einsum.q_params.is_some() {
                let Some(requant) = Requant::of_node(model, id) else {
                    return Err(refuse(name, op, "only per-tensor constant scales and zero points"));
                };
                g.int8 = true;
                Some(Int8Op::new(requant))
            } else {
                None
            };
            // The kernel reads weights as [K, N].
            let weights = match quant {
                Some(_) => ints(&w)
                    .filter(|v| v.len() == k * n)
                    .map(|v| Data::I32(if transposed { transpose(&v, n, k) } else { v })),
                None => floats(&w)
                    .filter(|v| v.len() == k * n)
                    .map(|v| Data::F32(if transposed { transpose(&v, n, k) } else { v })),
            };
            let bias_t = node.inputs.get(2).and_then(|o| konst(model, *o));
            // A float einsum has two operands; a quantised one has a constant bias third.
            if (quant.is_none() && node.inputs.len() > 2) || (node.inputs.len() > 2 && bias_t.is_none()) {
                return Err(refuse(name, op, "only constant weights and bias"));
            }
            let bias = match (&quant, bias_t) {
                (Some(_), Some(b)) => ints(&b).map(|v| Data::I32(broadcast(v, n))),
                (Some(_), None) => Some(Data::I32(vec![0; n])),
                (None, _) => Some(Data::F32(vec![0.0; n])),
            };
            let (Some(weights), Some(bias)) = (weights, bias.filter(|b| data_len(b) == n)) else {
                return Err(refuse(name, op, "operands of an unexpected shape"));
            };
            if out_dims.len() != 1 || k == 0 || n == 0 {
                return Err(refuse(name, op, "output must be [batch, n]"));
            }
            let (weights, bias) = pack(weights, bias, quant.map_or(0, |q| q.requant.w_zero), n, k, false);
            let y = new_value(&mut g);
            g.consts.push(weights);
            g.consts.push(bias);
            let step = Step::MatMul {
                x,
                y,
                weights: g.consts.len() - 2,
                bias: g.consts.len() - 1,
                k,
                n,
                relu: false,
                quant,
            };
            writer.insert(y, g.steps.len());
            g.steps.push(step);
            of.insert(out, y);
        } else if let Some(pool) = node.op_as::<MaxPool>() {
            let Some(win) = in_dims(0).and_then(|d| window(&pool.pool_spec, &d, &out_dims)) else {
                return Err(refuse(name, "MaxPool", "only NCHW 2-D pools"));
            };
            if pool.with_index_outputs.is_some() {
                return Err(refuse(name, "MaxPool", "index outputs"));
            }
            let x = input(0)?;
            let y = new_value(&mut g);
            g.steps.push(Step::MaxPool { x, y, win, lut: None });
            of.insert(out, y);
        } else if let Some(bin) = node.op_as::<TypedBinOp>() {
            let is_max = bin.0.downcast_ref::<Max>().is_some();
            let is_add = bin.0.downcast_ref::<Add>().is_some();
            let onnx_op = if is_max {
                "Relu"
            } else if is_add {
                "Add"
            } else {
                bin.0.name()
            };
            // One activation and one constant, in either order.
            let (act_ix, c) = match (
                node.inputs.first().and_then(|o| konst(model, *o)),
                node.inputs.get(1).and_then(|o| konst(model, *o)),
            ) {
                (None, Some(c)) => (0, c),
                (Some(c), None) => (1, c),
                _ => return Err(refuse(name, onnx_op, "only an activation with a constant")),
            };
            let x = input(act_ix)?;
            let x_outlet = node.inputs[act_ix];
            if out_elem != Elem::F32 || g.values[x].elem != Elem::F32 || !(is_max || is_add) {
                return Err(refuse(name, onnx_op, "only fp32 Relu and bias add"));
            }
            let Some(cv) = floats(&c) else { return Err(refuse(name, onnx_op, "constant")) };
            if is_max {
                if cv.iter().any(|&v| v != 0.0) {
                    return Err(refuse(name, "Max", "only Max with 0 (Relu)"));
                }
                if fusable(x, x_outlet)
                    && let Some(Step::Conv { relu, quant: None, .. } | Step::MatMul { relu, quant: None, .. }) =
                        writer.get(&x).and_then(|&s| g.steps.get_mut(s))
                {
                    *relu = true;
                    of.insert(out, x);
                    continue;
                }
                let y = new_value(&mut g);
                g.steps.push(Step::Elementwise { x, y, op: EltOp::Relu, aux: None });
                of.insert(out, y);
            } else {
                // The constant must broadcast along the item's trailing axes only.
                let c_dims: Vec<usize> = c.shape().iter().copied().skip_while(|&d| d == 1).collect();
                let len: usize = c_dims.iter().product();
                if c_dims.len() > out_dims.len()
                    || out_dims[out_dims.len() - c_dims.len()..] != c_dims[..]
                    || len == 0
                {
                    return Err(refuse(name, "Add", "only a constant broadcast along the trailing axes"));
                }
                if fusable(x, x_outlet)
                    && let Some(&s) = writer.get(&x)
                    && let Some(&Step::MatMul { relu: false, quant: None, bias, n, .. }) = g.steps.get(s)
                    && n == len
                    && let Data::F32(b) = &mut g.consts[bias]
                {
                    b.iter_mut().zip(&cv).for_each(|(b, c)| *b += c);
                    of.insert(out, x);
                    continue;
                }
                g.consts.push(Data::F32(cv));
                let y = new_value(&mut g);
                g.steps.push(Step::Elementwise {
                    x,
                    y,
                    op: EltOp::AddBroadcast { len },
                    aux: Some(g.consts.len() - 1),
                });
                writer.insert(y, g.steps.len() - 1);
                of.insert(out, y);
            }
        } else if let Some(ew) = node.op_as::<ElementWiseOp>() {
            let x = input(0)?;
            let (op, aux) = if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
                (EltOp::Quantize { scale: q.scale, zp: i32::from(q.zero_point), lo: 0, hi: 255 }, None)
            } else if let Some(q) = ew.0.downcast_ref::<QuantizeLinearI8>() {
                (EltOp::Quantize { scale: q.scale, zp: i32::from(q.zero_point), lo: -128, hi: 127 }, None)
            } else if let Some(lut) = ew.0.downcast_ref::<LookupTable>() {
                let table = lut.table.table();
                let signed = fact.datum_type.unquantized() == DatumType::I8;
                if table.len() != 256 {
                    return Err(refuse(name, "LookupTable", "table must have 256 entries"));
                }
                // Entries are indexed by the input byte and hold the output byte.
                let entries =
                    table.iter().map(|&b| if signed { i32::from(b as i8) } else { i32::from(b) }).collect();
                g.consts.push(Data::I32(entries));
                (EltOp::Lookup, Some(g.consts.len() - 1))
            } else {
                return Err(refuse(name, ew.0.name().as_ref(), "element-wise op without a kernel"));
            };
            let y = new_value(&mut g);
            g.steps.push(Step::Elementwise { x, y, op, aux });
            of.insert(out, y);
        } else if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
            let x = input(0)?;
            let y = new_value(&mut g);
            g.steps.push(Step::Elementwise {
                x,
                y,
                op: EltOp::Dequantize { scale: dq.scale, zp: dq.zero_point },
                aux: None,
            });
            of.insert(out, y);
        } else if let Some(sm) = node.op_as::<Softmax>() {
            let last = out_dims.len();
            if sm.axes.as_slice() != [last]
                || sm.quant_output_dt.is_some()
                || !matches!(sm.kind, SoftmaxKind::Softmax)
                || out_elem != Elem::F32
            {
                return Err(refuse(name, "Softmax", "only fp32 softmax over the last axis"));
            }
            let x = input(0)?;
            let y = new_value(&mut g);
            g.steps.push(Step::Softmax { x, y, len: out_dims.last().copied().unwrap_or(1) });
            of.insert(out, y);
        } else if let Some(axis) = node.op_as::<AxisOp>() {
            // Row-major layout is unchanged by reshapes and unit axes that keep the batch first.
            let keeps_layout = match axis {
                AxisOp::Add(a) | AxisOp::Rm(a) => *a > 0,
                AxisOp::Reshape(a, _, _) => *a > 0,
                AxisOp::Move(..) => false,
            };
            if !keeps_layout {
                return Err(refuse(name, "Transpose", "axis moves are not implemented"));
            }
            let x = input(0)?;
            of.insert(out, x);
        } else {
            return Err(refuse(name, &op_name, "no kernel for this op"));
        }
    }

    for outlet in &outputs {
        let fact = model.outlet_fact(*outlet).map_err(|e| refuse("output", "?", format!("{e}")))?;
        let (Some(&v), Some(dims)) = (of.get(outlet), item_dims(fact, batch)) else {
            return Err(refuse(
                &model.node(outlet.node).name,
                "Output",
                "output is not a batched activation",
            ));
        };
        if g.values[v].elem != Elem::F32 {
            return Err(refuse(&model.node(outlet.node).name, "Output", "outputs must be fp32"));
        }
        g.outputs.push((v, dims));
    }
    fuse::int8_edges(&mut g);
    fuse::pools(&mut g);
    Ok(g)
}

/// Lays weights out as the kernels read them: the output channels (or columns) in blocks
/// of four, side by side, zero-padded; int8 weights with their zero point removed.
///
/// `channels_major`: weights are `[outs][taps]` (conv, OIHW) → `[outs/4][taps][4]`;
/// otherwise `[taps][outs]` (matmul `[K, N]`) → `[taps][outs/4][4]`. Bias → `[outs/4][4]`.
fn pack(
    weights: Data,
    bias: Data,
    w_zp: i32,
    outs: usize,
    taps: usize,
    channels_major: bool,
) -> (Data, Data) {
    let blocks = outs.div_ceil(4);
    let at = |o: usize, t: usize| {
        if channels_major { ((o / 4) * taps + t) * 4 + o % 4 } else { (t * blocks + o / 4) * 4 + o % 4 }
    };
    let src = |o: usize, t: usize| if channels_major { o * taps + t } else { t * outs + o };
    fn place<T: Copy + Default>(
        v: &[T],
        n: usize,
        outs: usize,
        taps: usize,
        at: impl Fn(usize, usize) -> usize,
        src: impl Fn(usize, usize) -> usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); n];
        for o in 0..outs {
            for t in 0..taps {
                out[at(o, t)] = v[src(o, t)];
            }
        }
        out
    }
    let n = blocks * 4 * taps;
    let weights = match weights {
        Data::F32(v) => Data::F32(place(&v, n, outs, taps, at, src)),
        Data::I32(v) => {
            Data::I32(place(&v.iter().map(|w| w - w_zp).collect::<Vec<_>>(), n, outs, taps, at, src))
        }
    };
    let bias = match bias {
        Data::F32(mut v) => {
            v.resize(blocks * 4, 0.0);
            Data::F32(v)
        }
        Data::I32(mut v) => {
            v.resize(blocks * 4, 0);
            Data::I32(v)
        }
    };
    (weights, bias)
}

/// `[N, K]` row-major to `[K, N]`.
fn transpose<T: Copy>(v: &[T], n: usize, k: usize) -> Vec<T> {
    (0..k * n).map(|i| v[(i % n) * k + i / n]).collect()
}

/// A scalar repeated `n` times, or the vector unchanged.
fn broadcast<T: Copy>(v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() == 1 { vec![v[0]; n] } else { v }
}

fn data_len(d: &Data) -> usize {
    match d {
        Data::F32(v) => v.len(),
        Data::I32(v) => v.len(),
    }
}
