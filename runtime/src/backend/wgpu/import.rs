//! From tract's typed graph to a list of GPU steps.
//!
//! The ONNX file is parsed by tract (no second parser) and decluttered with a symbolic batch
//! `N`, so every activation is `[N, item dims...]` and each op can be read per item. Each
//! node is mapped to a kernel step; a node no kernel covers is refused, naming it. Bias and
//! Relu that follow a convolution or matmul are fused into it (one dispatch instead of two).

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

/// Index of an activation (one device buffer per plan) in [`Graph::values`].
pub(crate) type ValueId = usize;

/// How an activation's elements are held on the device: 32 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    /// fp32.
    F32,
    /// An 8-bit quantised value (u8 or i8), held as an i32.
    Int,
}

/// One activation: its element kind and element count per batch item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value {
    pub(crate) elem: Elem,
    pub(crate) per_item: usize,
}

/// Geometry of a 2-D window op (convolution or pooling) on one item, NCHW.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Window {
    pub(crate) ci: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) co: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
}

/// Per-tensor requantisation of an int8 conv or matmul.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requant {
    pub(crate) x_zp: i32,
    pub(crate) w_zp: i32,
    pub(crate) y_zp: i32,
    /// x_scale * w_scale / y_scale.
    pub(crate) mult: f32,
    /// Output range: 0..=255 for u8, -128..=127 for i8.
    pub(crate) lo: i32,
    pub(crate) hi: i32,
    /// Fused prologue: the input arrives as fp32 and is quantised on load.
    pub(crate) quantize_input: Option<Quantize>,
    /// Fused epilogue: the requantised output is dequantised to fp32 (scale, zero point).
    pub(crate) dequantize: Option<(f32, i32)>,
    /// Fused epilogue after dequantising: an fp32 bias, stored after the int bias.
    pub(crate) fp32_bias: bool,
}

/// Parameters of a QuantizeLinear: `clamp(round(x * scale) + zp, lo, hi)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantize {
    pub(crate) scale: f32,
    pub(crate) zp: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

/// Constant data uploaded once at prepare.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// One kernel dispatch (per batch).
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// 2-D convolution with bias (fp32 or int8), optionally fused Relu (fp32) and a fused
    /// unpadded max pool over its output (`pool`: the pool's window on the conv output).
    Conv {
        x: ValueId,
        y: ValueId,
        weights: usize,
        bias: usize,
        win: Window,
        relu: bool,
        quant: Option<Requant>,
        pool: Option<Window>,
    },
    /// `[M, K] x [K, N] + bias` (fp32 or int8), optionally fused Relu (fp32).
    MatMul {
        x: ValueId,
        y: ValueId,
        weights: usize,
        bias: usize,
        k: usize,
        n: usize,
        relu: bool,
        quant: Option<Requant>,
    },
    /// 2-D max pool (any element kind), optionally followed by a fused 256-entry lookup
    /// table (int8 values; `lut` indexes the constant).
    MaxPool { x: ValueId, y: ValueId, win: Window, lut: Option<usize> },
    /// Element-wise op (see kernels/elementwise.wgsl); `aux` indexes a constant or is None.
    Elementwise { x: ValueId, y: ValueId, op: EltOp, aux: Option<usize> },
    /// Softmax over the last axis of `len` elements.
    Softmax { x: ValueId, y: ValueId, len: usize },
}

/// Element-wise operations and their parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EltOp {
    Quantize { scale: f32, zp: i32, lo: i32, hi: i32 },
    Dequantize { scale: f32, zp: i32 },
    Lookup,
    AddBroadcast { len: usize },
    Relu,
}

/// A model as GPU steps over per-item activations.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub(crate) values: Vec<Value>,
    pub(crate) consts: Vec<Data>,
    pub(crate) steps: Vec<Step>,
    /// Input activations, in model input order (all fp32).
    pub(crate) inputs: Vec<ValueId>,
    /// Output activations and their per-item shapes, in model output order (all fp32).
    pub(crate) outputs: Vec<(ValueId, Vec<usize>)>,
    /// True when some convolution or matmul runs on int8 values.
    pub(crate) int8: bool,
}

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

fn ints(t: &Tensor) -> Option<Vec<i32>> {
    // Quantised element types (QU8/QI8) cast through their integer storage.
    let plain = if t.datum_type().is_quantized() {
        let mut copy = t.clone();
        // SAFETY: a quantised type has the same storage as its unquantised element type.
        unsafe { copy.set_datum_type(t.datum_type().unquantized()) };
        copy
    } else {
        t.clone()
    };
    Some(plain.cast_to::<i32>().ok()?.to_plain_array_view::<i32>().ok()?.iter().copied().collect())
}

fn scalar_f32(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    konst(model, outlet).and_then(|t| floats(&t)).filter(|v| v.len() == 1).map(|v| v[0])
}

fn scalar_i32(model: &TypedModel, outlet: OutletId) -> Option<i32> {
    konst(model, outlet).and_then(|t| ints(&t)).filter(|v| v.len() == 1).map(|v| v[0])
}

fn range_of(dt: DatumType) -> Option<(i32, i32)> {
    match dt.unquantized() {
        DatumType::U8 => Some((0, 255)),
        DatumType::I8 => Some((-128, 127)),
        _ => None,
    }
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
            dt if range_of(dt).is_some() => Some(Elem::Int),
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
                let q = |ix| node.inputs.get(ix).copied();
                let (Some(xzp), Some(xs), Some(wzp), Some(ws), Some(yzp), Some(ys), Some((lo, hi))) = (
                    q(3).and_then(|o| scalar_i32(model, o)),
                    q(4).and_then(|o| scalar_f32(model, o)),
                    q(5).and_then(|o| scalar_i32(model, o)),
                    q(6).and_then(|o| scalar_f32(model, o)),
                    q(7).and_then(|o| scalar_i32(model, o)),
                    q(8).and_then(|o| scalar_f32(model, o)),
                    range_of(fact.datum_type),
                ) else {
                    return Err(refuse(
                        name,
                        "QLinearConv",
                        "only per-tensor constant scales and zero points",
                    ));
                };
                g.int8 = true;
                Some(Requant {
                    x_zp: xzp,
                    w_zp: wzp,
                    y_zp: yzp,
                    mult: xs * ws / ys,
                    lo,
                    hi,
                    quantize_input: None,
                    dequantize: None,
                    fp32_bias: false,
                })
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
            let (weights, bias) = pack(weights, bias, quant.map_or(0, |q| q.w_zp), win.co, taps, true);
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
                let q = |ix| node.inputs.get(ix).copied();
                let (Some(xzp), Some(xs), Some(wzp), Some(ws), Some(yzp), Some(ys), Some((lo, hi))) = (
                    q(3).and_then(|o| scalar_i32(model, o)),
                    q(4).and_then(|o| scalar_f32(model, o)),
                    q(5).and_then(|o| scalar_i32(model, o)),
                    q(6).and_then(|o| scalar_f32(model, o)),
                    q(7).and_then(|o| scalar_i32(model, o)),
                    q(8).and_then(|o| scalar_f32(model, o)),
                    range_of(fact.datum_type),
                ) else {
                    return Err(refuse(name, op, "only per-tensor constant scales and zero points"));
                };
                g.int8 = true;
                Some(Requant {
                    x_zp: xzp,
                    w_zp: wzp,
                    y_zp: yzp,
                    mult: xs * ws / ys,
                    lo,
                    hi,
                    quantize_input: None,
                    dequantize: None,
                    fp32_bias: false,
                })
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
            let (weights, bias) = pack(weights, bias, quant.map_or(0, |q| q.w_zp), n, k, false);
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
    fuse_int8_edges(&mut g);
    fuse_pools(&mut g);
    Ok(g)
}

/// Folds each unpadded, undilated max pool that is the only reader of a convolution's output
/// into the convolution: it computes the conv outputs of each pool window and keeps their
/// max, so the full-size conv output is never written (one dispatch and one round trip
/// through memory fewer). Exact: max is taken over the same values, after Relu or
/// requantisation (both monotonic, and applied per value as before).
fn fuse_pools(g: &mut Graph) {
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

impl Step {
    /// The activations the step reads.
    fn reads(&self) -> Vec<ValueId> {
        match self {
            Step::Conv { x, .. }
            | Step::MatMul { x, .. }
            | Step::MaxPool { x, .. }
            | Step::Elementwise { x, .. }
            | Step::Softmax { x, .. } => vec![*x],
        }
    }
}

/// Folds the element-wise steps around int8 convolutions and matmuls into them, so the int8
/// path costs no more dispatches than fp32: the input QuantizeLinear into the first conv's
/// loads, a lookup table (tract's folded requantisation) into the pool before it, and
/// DequantizeLinear plus an fp32 bias into the last matmul's epilogue. Each fold computes
/// exactly what the two steps computed (same rounding, same clamping), and only happens
/// when the intermediate has no other reader.
fn fuse_int8_edges(g: &mut Graph) {
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
