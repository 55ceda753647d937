//! The CPU backend: tract.
//!
//! Preparing parses the ONNX file once, refuses ops tract does not implement, and plans
//! batch 1 (so a model that cannot run fails at load, not on the first request). Each other
//! batch size gets its own optimised plan the first time it is used, kept for the model's
//! life; tract is far faster on concrete shapes than on a symbolic batch. Run state
//! (tract's `SimpleState`, which owns the scratch buffers) is pooled per batch size and
//! reused across calls.
//!
//! Before optimising, the backend applies exact graph rewrites where tract 0.23 is slow (see
//! [`rewrite_convs`]: our own im2col-free convolution, fp32 and int8, with its Relu fused;
//! and [`rewrite_pools`]); [`TractBackend::without_rewrites`] skips them and is the reference the
//! conformance suite checks the rewritten graphs against; it also runs every batch through
//! one plan, where the rewritten backend runs batches above 8 in chunks of 8. Kernel selection inside tract is
//! set once per process by [`crate::configure_cpu_kernels`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, TValue,
    TypedModel, TypedRunnableModel, TypedSimpleState,
};
use tract_onnx::tract_core::internal::{DimLike, TypedModelPatch};
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::tract_conv::{ConvGeometry, DirectConv, Requant};
use super::tract_pool::MaxPool2x2;
use tract_onnx::tract_core::internal::{OutletId, Tensor as TTensor};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
use tract_onnx::tract_hir::infer::Factoid;

use super::{
    Backend, BackendError, BackendKind, ModelInfo, Precision, PreparedModel, TensorSpec, check_inputs,
};
use crate::tensor::{DType, Tensor};

/// tract on the CPU.
#[derive(Debug, Clone, Copy)]
pub struct TractBackend {
    rewrites: bool,
}

impl Default for TractBackend {
    fn default() -> TractBackend {
        TractBackend::new()
    }
}

impl TractBackend {
    /// A tract backend that applies its exact graph rewrites at load.
    pub fn new() -> TractBackend {
        TractBackend { rewrites: true }
    }

    /// Plain tract, graph as decluttered by tract itself: the reference the rewrites are
    /// checked against, and the baseline their speed-up is measured from.
    pub fn without_rewrites() -> TractBackend {
        TractBackend { rewrites: false }
    }
}

/// Rewrites every unpadded 2-D MaxPool whose window spans both axes; returns how many.
///
/// Why: tract 0.23 vectorises pooling only when the innermost axis has stride 1, so a 2x2/s2
/// pool runs a scalar per-pixel loop (the largest single cost of a small CNN: see
/// `docs/performance.md`, "Pooling"). An NCHW 2x2/s2 pool on a
/// fixed shape becomes our own op ([`MaxPool2x2`]); any other such pool is split into a pool
/// over rows followed by a pool over columns (windows [k, 1] then [1, k]). Max is separable
/// and, with no padding, both forms visit exactly the same input window for every output,
/// so the result is bit-identical. Pools with padding, dilation or index outputs are left
/// alone.
pub(crate) fn rewrite_pools(model: &mut TypedModel) -> tract_onnx::prelude::TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else { continue };
        let spec = &pool.pool_spec;
        let unpadded = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
            PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
                !ceil && before.iter().chain(after).all(|&p| p == 0)
            }
            PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
        };
        let undilated = spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1));
        if pool.with_index_outputs.is_some()
            || spec.kernel_shape.len() != 2
            || spec.kernel_shape.iter().any(|&k| k < 2)
            || !unpadded
            || !undilated
        {
            continue;
        }
        let strides = spec.strides.clone().unwrap_or_else(|| spec.kernel_shape.clone());
        let axis_pool = |axis: usize| {
            let mut kernel = spec.kernel_shape.clone();
            let mut stride = strides.clone();
            kernel[1 - axis] = 1;
            stride[1 - axis] = 1;
            MaxPool {
                pool_spec: PoolSpec {
                    kernel_shape: kernel,
                    strides: Some(stride),
                    padding: PaddingSpec::Valid,
                    dilations: None,
                    ..spec.clone()
                },
                with_index_outputs: None,
            }
        };
        let input_fact = model.outlet_fact(node.inputs[0])?;
        let fast = spec.kernel_shape[..] == [2, 2]
            && strides[..] == [2, 2]
            && spec.data_format == DataFormat::NCHW
            && input_fact.shape.as_concrete().is_some()
            && MaxPool2x2::supports(input_fact.datum_type);
        if fast {
            let op = MaxPool2x2 { datum_type: input_fact.datum_type };
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
            patch.apply(model)?;
            rewritten += 1;
            continue;
        }
        let (rows, cols) = (axis_pool(0), axis_pool(1));
        let mut patch = TypedModelPatch::new(format!("split pool {}", node.name));
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(format!("{}.rows", node.name), rows, &[input])?[0];
        let wire = patch.wire_node(format!("{}.cols", node.name), cols, &[wire])?[0];
        patch.shunt_outside(model, node.id.into(), wire)?;
        patch.apply(model)?;
        rewritten += 1;
    }
    if rewritten > 0 {
        // Drops the replaced pools, which the patches left unconnected.
        *model = model.clone().into_decluttered()?;
    }
    Ok(rewritten)
}

/// Replaces each 2-D convolution [`DirectConv`] handles by it, fusing a following Relu into
/// fp32 ones; returns how many.
///
/// Why: tract 0.23 builds an im2col matrix for every convolution (a third of a small CNN's
/// time, more in int8, where it is built eagerly in u8); see [`super::tract_conv`]. The match
/// is conservative: NCHW with a batch axis, OIHW constant weights, one group, stride 1, no
/// dilation, a concrete input shape; int8 only with scalar constant scales and zero points
/// and a u8/i8 output. Anything else keeps tract's own op.
pub(crate) fn rewrite_convs(model: &mut TypedModel) -> tract_onnx::prelude::TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(op) = direct_conv_for(model, node.id, conv)? else { continue };
        let mut op = op;
        let mut last = OutletId::new(node.id, 0);
        if op.requant.is_none()
            && let Some(relu) = relu_after(model, last)?
        {
            op.relu = true;
            last = OutletId::new(relu, 0);
        }
        if let Some(pool) = pool_2x2_after(model, last)? {
            op.pool = true;
            last = OutletId::new(pool, 0);
        }
        if op.requant.as_ref().is_some_and(|rq| rq.output.unquantized() == DatumType::U8)
            && let Some((lut, table)) = lookup_after(model, last)?
        {
            op.lookup = Some((table, model.outlet_fact(OutletId::new(lut, 0))?.datum_type));
            last = OutletId::new(lut, 0);
        }
        let mut source = model.node(id).inputs[0];
        if let Some((quantize, scale, zero)) = quantize_before(model, source, &op)? {
            op.quantize_input = Some((scale, zero));
            source = model.node(quantize).inputs[0];
        }
        let name = model.node(id).name.clone();
        let mut patch = TypedModelPatch::new(format!("direct conv {name}"));
        let input = patch.tap_model(model, source)?;
        let wire = patch.wire_node(format!("{name}.direct"), op, &[input])?[0];
        patch.shunt_outside(model, last, wire)?;
        patch.apply(model)?;
        rewritten += 1;
    }
    if rewritten > 0 {
        // Drops the replaced convolutions and Relus, which the patches left unconnected.
        *model = model.clone().into_decluttered()?;
    }
    Ok(rewritten)
}

/// The direct convolution computing exactly what `conv` (node `id`) computes, if it is a
/// form [`DirectConv`] handles.
fn direct_conv_for(
    model: &TypedModel,
    id: usize,
    conv: &Conv,
) -> tract_onnx::prelude::TractResult<Option<DirectConv>> {
    let node = model.node(id);
    let spec = &conv.pool_spec;
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = input.shape.as_concrete() else { return Ok(None) };
    if spec.data_format != DataFormat::NCHW
        || conv.kernel_fmt != KernelFormat::OIHW
        || conv.group != 1
        || shape.len() != 4
        || spec.kernel_shape.len() != 2
        || spec.strides().iter().any(|&s| s != 1)
        || spec.dilations().iter().any(|&d| d != 1)
    {
        return Ok(None);
    }
    let konst = |ix: usize| -> Option<Arc<TTensor>> {
        node.inputs.get(ix).and_then(|&o| model.outlet_fact(o).ok()).and_then(|f| f.konst.clone())
    };
    let (Some(weights), Some(bias)) = (konst(1), konst(2)) else { return Ok(None) };
    let (cin, h, w) = (shape[1], shape[2], shape[3]);
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let cout = spec.output_channels;
    if weights.shape() != [cout, cin, kh, kw] || spec.input_channels != cin || kh == 0 || kw == 0 {
        return Ok(None);
    }
    let pads = spec.computed_padding(&[h, w]);
    let (oh, ow) = (pads[0].convoluted, pads[1].convoluted);
    if oh == 0 || ow == 0 || oh + kh - 1 != h + pads[0].pad_before + pads[0].pad_after {
        return Ok(None);
    }
    let geo = ConvGeometry {
        cin,
        cout,
        h,
        w,
        kh,
        kw,
        pad_top: pads[0].pad_before,
        pad_left: pads[1].pad_before,
        oh,
        ow,
    };
    let out_dt = model.outlet_fact(OutletId::new(id, 0))?.datum_type;
    let per_channel = |t: &TTensor| -> Option<Vec<f32>> {
        let t = t.cast_to::<f32>().ok()?;
        let v = t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        match v.len() {
            1 => Some(vec![v[0]; cout]),
            n if n == cout => Some(v),
            _ => None,
        }
    };
    let Some(q_dt) = conv.q_params else {
        if input.datum_type != DatumType::F32
            || weights.datum_type() != DatumType::F32
            || node.inputs.len() != 3
        {
            return Ok(None);
        }
        let (Some(bias), Ok(wv)) = (per_channel(&bias), weights.try_as_plain_ram()) else { return Ok(None) };
        return Ok(DirectConv::fp32(geo, wv.as_slice::<f32>()?, &bias, false));
    };
    // QLinearConv: x, kernel, bias, x0, x_scale, k0, k_scale, y0, y_scale.
    let scalar = |ix: usize| konst(ix).filter(|t| t.len() == 1);
    let (Some(x0), Some(x_scale), Some(k0), Some(k_scale), Some(y0), Some(y_scale)) =
        (scalar(3), scalar(4), scalar(5), scalar(6), scalar(7), scalar(8))
    else {
        return Ok(None);
    };
    let out_raw = out_dt.unquantized();
    let x_range = match input.datum_type {
        DatumType::U8 => (0, 255),
        DatumType::I8 => (-128, 127),
        _ => return Ok(None),
    };
    if node.inputs.len() != 9
        || !matches!(out_raw, DatumType::U8 | DatumType::I8)
        || q_dt.unquantized() != out_raw
        || bias.datum_type() != DatumType::I32
    {
        return Ok(None);
    }
    let weights_i32: Vec<i32> = match weights.datum_type() {
        DatumType::I8 => {
            weights.try_as_plain_ram()?.as_slice::<i8>()?.iter().map(|&v| i32::from(v)).collect()
        }
        DatumType::U8 => {
            weights.try_as_plain_ram()?.as_slice::<u8>()?.iter().map(|&v| i32::from(v)).collect()
        }
        _ => return Ok(None),
    };
    let bias_i32: Vec<i32> = match bias.try_as_plain_ram()?.as_slice::<i32>()? {
        [b] => vec![*b; cout],
        all if all.len() == cout => all.to_vec(),
        _ => return Ok(None),
    };
    let requant = Requant {
        x_zero: x0.cast_to_scalar::<i32>()?,
        // As tract combines them: (k_scale * x_scale) / y_scale, in f32.
        scale: k_scale.cast_to_scalar::<f32>()? * x_scale.cast_to_scalar::<f32>()?
            / y_scale.cast_to_scalar::<f32>()?,
        y_zero: y0.cast_to_scalar::<i32>()?,
        output: out_dt,
    };
    Ok(DirectConv::int8(geo, &weights_i32, k0.cast_to_scalar::<i32>()?, &bias_i32, x_range, requant))
}

/// The f32-to-u8 QuantizeLinear producing `outlet` for an int8 `op` alone, if there is one:
/// its node, scale and zero point. Fusing it saves a scalar pass over the input.
fn quantize_before(
    model: &TypedModel,
    outlet: OutletId,
    op: &DirectConv,
) -> tract_onnx::prelude::TractResult<Option<(usize, f32, i32)>> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;
    if op.requant.is_none()
        || model.outlet_successors(outlet).len() != 1
        || model.output_outlets()?.contains(&outlet)
    {
        return Ok(None);
    }
    let node = model.node(outlet.node);
    let Some(q) = node.op_as::<ElementWiseOp>().and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>()) else {
        return Ok(None);
    };
    let Some(&source) = node.inputs.first() else { return Ok(None) };
    let fact = model.outlet_fact(source)?;
    let same_shape = fact.shape == model.outlet_fact(outlet)?.shape;
    Ok((fact.datum_type == DatumType::F32 && same_shape).then_some((
        node.id,
        q.scale,
        i32::from(q.zero_point),
    )))
}

/// The u8 LookupTable that alone consumes `outlet`, if there is one: its node and table.
fn lookup_after(
    model: &TypedModel,
    outlet: OutletId,
) -> tract_onnx::prelude::TractResult<Option<(usize, Vec<u8>)>> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::LookupTable;
    let successors = model.outlet_successors(outlet);
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(successors[0].node);
    let Some(lut) = next.op_as::<ElementWiseOp>().and_then(|e| e.0.downcast_ref::<LookupTable>()) else {
        return Ok(None);
    };
    let out = model.outlet_fact(OutletId::new(next.id, 0))?;
    let table = lut.table.table();
    let fits = table.len() == 256
        && out.datum_type.unquantized() == DatumType::U8
        && model.outlet_fact(outlet)?.datum_type.unquantized() == DatumType::U8;
    Ok(fits.then(|| (next.id, table.to_vec())))
}

/// The unpadded NCHW 2x2/s2 MaxPool that alone consumes `outlet`, if there is one.
fn pool_2x2_after(model: &TypedModel, outlet: OutletId) -> tract_onnx::prelude::TractResult<Option<usize>> {
    let successors = model.outlet_successors(outlet);
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(successors[0].node);
    let Some(pool) = next.op_as::<MaxPool>() else { return Ok(None) };
    let spec = &pool.pool_spec;
    let unpadded = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
        PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
            !ceil && before.iter().chain(after).all(|&p| p == 0)
        }
        PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
    };
    let strides = spec.strides.clone().unwrap_or_else(|| spec.kernel_shape.clone());
    let plain = pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape[..] == [2, 2]
        && strides[..] == [2, 2]
        && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1))
        && unpadded;
    Ok(plain.then_some(next.id))
}

/// The Relu (`Max` with a constant zero) that alone consumes `outlet`, if there is one.
fn relu_after(model: &TypedModel, outlet: OutletId) -> tract_onnx::prelude::TractResult<Option<usize>> {
    let successors = model.outlet_successors(outlet);
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(successors[0].node);
    let Some(bin) = next.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.0.name() != "Max" || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = if next.inputs[0] == outlet { next.inputs[1] } else { next.inputs[0] };
    let zero = model.outlet_fact(other)?.konst.as_ref().is_some_and(|t| {
        t.cast_to::<f32>().ok().is_some_and(|t| {
            t.try_as_plain_ram()
                .ok()
                .and_then(|t| t.as_slice::<f32>().ok().map(|s| s.iter().all(|&v| v == 0.0)))
                .unwrap_or(false)
        })
    });
    let same_shape = model.outlet_fact(OutletId::new(next.id, 0))?.shape == model.outlet_fact(outlet)?.shape;
    Ok((zero && same_shape).then_some(next.id))
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        _ => return None,
    })
}

pub(crate) fn datum_of(dt: DType) -> DatumType {
    match dt {
        DType::F32 => DatumType::F32,
        DType::U8 => DatumType::U8,
        DType::I8 => DatumType::I8,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
    }
}

/// How tract will compute a quantised graph: only per-tensor QOperator convolutions and
/// matmuls run as int8; QDQ graphs and per-channel weights are lowered to fp32.
pub(crate) fn precision_of(proto: &ModelProto) -> Precision {
    let Some(graph) = proto.graph.as_ref() else { return Precision::Fp32 };
    let per_channel = |scale: &str| {
        graph.initializer.iter().find(|t| t.name == scale).is_some_and(|t| t.dims.iter().product::<i64>() > 1)
    };
    let mut qlinear = false;
    let mut lowered = false;
    for node in &graph.node {
        match node.op_type.as_str() {
            // inputs: x, x_scale, x_zp, w, w_scale, ...
            "QLinearConv" | "QLinearMatMul" => {
                qlinear = true;
                lowered |= node.input.get(4).is_some_and(|s| per_channel(s));
            }
            "ConvInteger" | "MatMulInteger" => qlinear = true,
            "DequantizeLinear" => lowered |= !qlinear,
            _ => {}
        }
    }
    match (qlinear, lowered) {
        (true, false) => Precision::Int8,
        (_, true) => Precision::Int8AsFp32,
        (false, false) => Precision::Fp32,
    }
}

pub(crate) fn tract_err(e: impl std::fmt::Debug) -> String {
    // tract's Display shows only the outermost context; Debug shows the whole chain.
    format!("{e:?}").replace('\n', " ")
}

/// Parses `onnx` with tract's ONNX front end and refuses ops tract does not implement,
/// naming the node and its ONNX op type (`backend` is who reports it).
pub(crate) fn parse_onnx(
    name: &str,
    onnx: &[u8],
    backend: &'static str,
) -> Result<(ModelProto, InferenceModel), BackendError> {
    let parse = |why: String| BackendError::Parse { model: name.to_owned(), why };
    let framework = tract_onnx::onnx();
    let proto = framework.proto_model_for_read(&mut &*onnx).map_err(|e| parse(tract_err(e)))?;
    let model = framework.model_for_proto_model(&proto).map_err(|e| parse(tract_err(e)))?;

    if let Some(node) = model.nodes().iter().find(|n| n.op_as::<UnimplementedOp>().is_some()) {
        let op = proto.graph.as_ref().and_then(|g| g.node.iter().find(|p| p.name == node.name)).map_or_else(
            || {
                // tract names the op `Unimplemented(<onnx op type>)`.
                let shown = node.op.name().to_string();
                shown
                    .strip_prefix("Unimplemented(")
                    .and_then(|s| s.strip_suffix(')'))
                    .map_or(shown.clone(), str::to_owned)
            },
            |p| p.op_type.clone(),
        );
        return Err(BackendError::UnsupportedOp {
            model: name.to_owned(),
            node: node.name.clone(),
            op,
            backend,
        });
    }

    Ok((proto, model))
}

/// The inputs of a parsed model: each must have a known element type and a shape
/// `[batch, fixed dims...]`.
pub(crate) fn input_specs(name: &str, model: &InferenceModel) -> Result<Vec<TensorSpec>, BackendError> {
    let unsupported = |why: String| BackendError::Unsupported { model: name.to_owned(), why };
    let mut inputs = Vec::new();
    for (ix, outlet) in model.input_outlets().map_err(|e| unsupported(tract_err(e)))?.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(|e| unsupported(tract_err(e)))?;
        let input_name = model.node(outlet.node).name.clone();
        let dt = fact
            .datum_type
            .concretize()
            .and_then(dtype_of)
            .ok_or_else(|| unsupported(format!("input {input_name} has an unsupported element type")))?;
        let dims: Vec<_> = fact.shape.dims().collect();
        let item_shape = dims
            .iter()
            .skip(1)
            .map(|d| d.concretize().and_then(|d| d.to_usize().ok()))
            .collect::<Option<Vec<usize>>>()
            .filter(|_| !dims.is_empty())
            .ok_or_else(|| {
                unsupported(format!(
                    "input {input_name} must be [batch, fixed dims...], the file says {:?}",
                    fact.shape
                ))
            })?;
        inputs.push(TensorSpec { name: input_name, dtype: dt, item_shape });
    }
    Ok(inputs)
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn prepare(&self, name: &str, onnx: &[u8]) -> Result<Arc<dyn PreparedModel>, BackendError> {
        let (proto, model) = parse_onnx(name, onnx, "tract")?;
        let inputs = input_specs(name, &model)?;
        let unsupported = |why: String| BackendError::Unsupported { model: name.to_owned(), why };

        let prepared = TractModel {
            template: model,
            rewrites: self.rewrites,
            info: ModelInfo {
                name: name.to_owned(),
                inputs,
                outputs: Vec::new(),
                macs_per_item: 0,
                precision: precision_of(&proto),
            },
            plans: RwLock::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
        };
        let (plan, decluttered) = prepared.plan_for(1, true)?;
        let mut info = prepared.info.clone();
        info.macs_per_item = decluttered.map(|m| count_macs(&m)).unwrap_or(0);
        for (ix, outlet) in
            plan.model().output_outlets().map_err(|e| unsupported(tract_err(e)))?.iter().enumerate()
        {
            let fact = plan.model().output_fact(ix).map_err(|e| unsupported(tract_err(e)))?;
            let shape =
                fact.shape.as_concrete().ok_or_else(|| unsupported("output shape is not fixed".into()))?;
            let dtype = dtype_of(fact.datum_type)
                .ok_or_else(|| unsupported(format!("output {ix} has element type {:?}", fact.datum_type)))?;
            let out_name = plan.model().node(outlet.node).name.clone();
            info.outputs.push(TensorSpec { name: out_name, dtype, item_shape: shape[1..].to_vec() });
        }
        let prepared = TractModel { info, ..prepared };
        prepared.plans.write().insert(1, plan);
        Ok(Arc::new(prepared))
    }
}

/// Multiply-accumulates of a (decluttered, batch 1) typed model, from tract's cost model.
pub(crate) fn count_macs(model: &TypedModel) -> u64 {
    let mut total = 0u64;
    for node in model.nodes() {
        let Ok(inputs) = model.node_input_facts(node.id) else { continue };
        let Ok(costs) = node.op.cost(&inputs) else { continue };
        for (cost, count) in costs {
            if let (Cost::FMA(_), Ok(n)) = (cost, count.to_usize()) {
                total += n as u64;
            }
        }
    }
    total
}

#[derive(Debug)]
struct TractModel {
    template: InferenceModel,
    rewrites: bool,
    info: ModelInfo,
    plans: RwLock<HashMap<usize, Arc<TypedRunnableModel>>>,
    states: Mutex<HashMap<usize, Vec<TypedSimpleState>>>,
}

impl TractModel {
    /// Plans the model for a concrete batch size. With `keep_decluttered`, also returns the
    /// decluttered (pre-optimisation) graph, whose ops report standard costs.
    fn plan_for(
        &self,
        batch: usize,
        keep_decluttered: bool,
    ) -> Result<(Arc<TypedRunnableModel>, Option<TypedModel>), BackendError> {
        let fail = |e| BackendError::Unsupported { model: self.info.name.clone(), why: tract_err(e) };
        let mut model = self.template.clone();
        for (ix, spec) in self.info.inputs.iter().enumerate() {
            let mut shape = vec![batch];
            shape.extend(&spec.item_shape);
            model = model
                .with_input_fact(ix, InferenceFact::dt_shape(datum_of(spec.dtype), shape))
                .map_err(fail)?;
        }
        let mut typed = model.into_typed().map_err(fail)?.into_decluttered().map_err(fail)?;
        let decluttered = keep_decluttered.then(|| typed.clone());
        if self.rewrites {
            rewrite_convs(&mut typed).map_err(fail)?;
            rewrite_pools(&mut typed).map_err(fail)?;
        }
        let plan = typed.into_optimized().map_err(fail)?.into_runnable().map_err(fail)?;
        Ok((plan, decluttered))
    }

    fn plan(&self, batch: usize) -> Result<Arc<TypedRunnableModel>, BackendError> {
        if let Some(plan) = self.plans.read().get(&batch) {
            return Ok(plan.clone());
        }
        let (plan, _) = self.plan_for(batch, false)?;
        Ok(self.plans.write().entry(batch).or_insert(plan).clone())
    }
}

fn to_tvalue(t: &Tensor) -> Result<TValue, String> {
    use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
    let shape = IxDyn(t.shape());
    let bytes = t.data();
    macro_rules! typed {
        ($ty:ty, $n:literal) => {{
            let v: Vec<$ty> = bytes
                .chunks_exact($n)
                .map(|c| <$ty>::from_le_bytes(bytemuck::pod_read_unaligned(c)))
                .collect();
            ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?.into_tvalue()
        }};
    }
    Ok(match t.dtype() {
        DType::F32 => typed!(f32, 4),
        DType::I32 => typed!(i32, 4),
        DType::I64 => typed!(i64, 8),
        DType::U8 => ArrayD::from_shape_vec(shape, bytes.to_vec()).map_err(|e| e.to_string())?.into_tvalue(),
        DType::I8 => {
            let v: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
            ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?.into_tvalue()
        }
    })
}

impl PreparedModel for TractModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let batch = check_inputs(&self.info, inputs)?;
        if !self.rewrites || batch <= CHUNK {
            return self.run_planned(inputs, batch);
        }
        let run_err = |why: String| BackendError::Run { model: self.info.name.clone(), why };
        let mut joined: Vec<(Vec<usize>, DType, Vec<u8>)> = Vec::new();
        for start in (0..batch).step_by(CHUNK) {
            let n = CHUNK.min(batch - start);
            let chunk = inputs
                .iter()
                .map(|t| {
                    let item = t.data().len() / batch;
                    let mut shape = t.shape().to_vec();
                    shape[0] = n;
                    Tensor::new(t.dtype(), shape, t.data()[start * item..(start + n) * item].to_vec())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| run_err(e.to_string()))?;
            let outputs = self.run_planned(&chunk, n)?;
            if joined.is_empty() {
                joined = outputs.iter().map(|t| (t.shape().to_vec(), t.dtype(), Vec::new())).collect();
            }
            for ((_, _, bytes), t) in joined.iter_mut().zip(outputs) {
                bytes.extend(t.into_data());
            }
        }
        joined
            .into_iter()
            .map(|(mut shape, dtype, bytes)| {
                if let Some(first) = shape.first_mut() {
                    *first = batch;
                }
                Tensor::new(dtype, shape, bytes).map_err(|e| run_err(e.to_string()))
            })
            .collect()
    }
}

/// Largest batch run through one plan; bigger batches run as chunks of this size.
///
/// Why: tract's per-item time grew with the batch once a convolution's im2col buffer fell
/// out of cache, while a batch of N always equals N single runs, so chunking is exact
/// (`docs/performance.md`, "Batches on tract"). That was measured before the direct
/// convolution ([`rewrite_convs`]) replaced im2col on the reference models.
const CHUNK: usize = 8;

impl TractModel {
    /// Runs one batch through the plan for exactly that batch size.
    fn run_planned(&self, inputs: &[Tensor], batch: usize) -> Result<Vec<Tensor>, BackendError> {
        let run_err = |why: String| BackendError::Run { model: self.info.name.clone(), why };
        let plan = self.plan(batch)?;
        let pooled = self.states.lock().get_mut(&batch).and_then(Vec::pop);
        let mut state = match pooled {
            Some(state) => state,
            None => plan.spawn().map_err(|e| run_err(tract_err(e)))?,
        };
        let values = inputs.iter().map(to_tvalue).collect::<Result<_, _>>().map_err(run_err)?;
        let outputs = state.run(values).map_err(|e| run_err(tract_err(e)));
        // A state that failed mid-run is dropped rather than pooled.
        let outputs = outputs?;
        self.states.lock().entry(batch).or_default().push(state);
        let mut result = Vec::with_capacity(outputs.len());
        for (spec, value) in self.info.outputs.iter().zip(outputs) {
            let dtype = dtype_of(value.datum_type()).filter(|&d| d == spec.dtype).ok_or_else(|| {
                run_err(format!("output {} came back as {:?}", spec.name, value.datum_type()))
            })?;
            let t = Tensor::new(dtype, value.shape().to_vec(), value.as_bytes().to_vec())
                .map_err(|e| run_err(e.to_string()))?;
            result.push(t);
        }
        Ok(result)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reference::{ReferenceModel, default_models_dir};

    fn decluttered(key: ReferenceModel) -> TypedModel {
        let model = tract_onnx::onnx().model_for_path(key.path(&default_models_dir())).unwrap();
        model
            .with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, [1usize, 1, 28, 28]))
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap()
    }

    fn pools(model: &TypedModel) -> (Vec<Vec<usize>>, usize) {
        let tract_pools = model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<MaxPool>())
            .map(|p| p.pool_spec.kernel_shape.to_vec())
            .collect();
        (tract_pools, model.nodes().iter().filter(|n| n.op_is::<MaxPool2x2>()).count())
    }

    #[test]
    fn every_2x2_pool_of_the_reference_models_becomes_the_fast_op() {
        for key in ReferenceModel::ALL {
            let mut model = decluttered(key);
            assert_eq!(pools(&model), (vec![vec![2, 2], vec![2, 2]], 0), "{}", key.key());
            assert_eq!(rewrite_pools(&mut model).unwrap(), 2, "{}", key.key());
            assert_eq!(pools(&model), (vec![], 2), "{}", key.key());
        }
    }

    /// Output before the rewrite, output after it, and the pools left after it.
    type PoolRun = (Vec<f32>, Vec<f32>, (Vec<Vec<usize>>, usize));

    /// A one-pool model on an input of `shape`, its output before and after the rewrite,
    /// and the pools left after it.
    fn pool_before_after(shape: [usize; 4], kernel: [usize; 2], strides: [usize; 2]) -> PoolRun {
        use tract_onnx::prelude::{Tensor as TTensor, tvec};
        use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
        let mut model = TypedModel::default();
        let source = model.add_source("x", TypedFact::dt_shape(DatumType::F32, &shape[..])).unwrap();
        let pool = MaxPool {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: kernel.into_iter().collect(),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(strides.into_iter().collect()),
                input_channels: shape[1],
                output_channels: shape[1],
            },
            with_index_outputs: None,
        };
        let out = model.wire_node("pool", pool, &[source]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let n: usize = shape.iter().product();
        // Distinct values in a scrambled order, so every window has a unique max.
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 - n as f32 / 3.0).collect();
        let input = TTensor::from_shape(&shape, &values).unwrap();
        let run = |m: TypedModel| {
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            plan.run(tvec!(input.clone().into())).unwrap()[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        let before = run(model.clone());
        rewrite_pools(&mut model).unwrap();
        let left = pools(&model);
        (before, run(model), left)
    }

    #[test]
    fn rewritten_pools_compute_exactly_what_tract_computes() {
        // Fast op, odd sizes included (the last row and column are dropped).
        let (before, after, left) = pool_before_after([2, 3, 7, 9], [2, 2], [2, 2]);
        assert_eq!((before, left), (after, (vec![], 1)));
        // Split into rows then columns: a 3x2 window with strides 2 and 1.
        let (before, after, left) = pool_before_after([1, 2, 9, 8], [3, 2], [2, 1]);
        assert_eq!((before, left), (after, (vec![vec![3, 1], vec![1, 2]], 0)));
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn unit(&mut self) -> f32 {
            (self.next() % 20001) as f32 / 10000.0 - 1.0
        }
    }

    /// One convolution case: input shape, kernel, padding (top, left, bottom, right).
    #[derive(Debug, Clone, Copy)]
    struct Case {
        n: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: [usize; 4],
    }

    fn cases() -> Vec<Case> {
        let mut rng = Rng(0x5eed_c0ff_ee00_0001);
        let mut cases = vec![
            // The reference models' shapes, batch 1 and 3.
            Case { n: 1, cin: 1, cout: 8, h: 28, w: 28, kh: 3, kw: 3, pad: [1; 4] },
            Case { n: 3, cin: 8, cout: 16, h: 14, w: 14, kh: 3, kw: 3, pad: [1; 4] },
            Case { n: 2, cin: 16, cout: 32, h: 28, w: 28, kh: 3, kw: 3, pad: [1; 4] },
            // One column, no padding, 1x1.
            Case { n: 2, cin: 3, cout: 5, h: 4, w: 1, kh: 1, kw: 1, pad: [0; 4] },
        ];
        for _ in 0..12 {
            let (kh, kw) = (1 + rng.below(5), 1 + rng.below(5));
            let pad = [rng.below(3), rng.below(3), rng.below(3), rng.below(3)];
            cases.push(Case {
                n: 1 + rng.below(3),
                cin: 1 + rng.below(6),
                cout: 1 + rng.below(19),
                h: kh + rng.below(20),
                w: kw + rng.below(40),
                kh,
                kw,
                pad,
            });
        }
        cases
    }

    fn pool_2x2(channels: usize) -> MaxPool {
        MaxPool {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: [2, 2].into_iter().collect(),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some([2, 2].into_iter().collect()),
                input_channels: channels,
                output_channels: channels,
            },
            with_index_outputs: None,
        }
    }

    fn conv_op(c: &Case, q_params: Option<DatumType>) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: [c.kh, c.kw].into_iter().collect(),
                padding: PaddingSpec::Explicit(
                    [c.pad[0], c.pad[1]].into_iter().collect(),
                    [c.pad[2], c.pad[3]].into_iter().collect(),
                ),
                dilations: None,
                strides: None,
                input_channels: c.cin,
                output_channels: c.cout,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params,
        }
    }

    /// Runs `model` optimised, before and after [`rewrite_convs`]; returns both outputs as
    /// raw bytes' worth of `T`, and how many convolutions were rewritten.
    fn conv_before_after<T: tract_onnx::prelude::Datum + Copy>(
        mut model: TypedModel,
        input: TTensor,
    ) -> (Vec<T>, Vec<T>, usize, TypedModel) {
        use tract_onnx::prelude::tvec;
        let run = |m: TypedModel| {
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            plan.run(tvec!(input.clone().into())).unwrap()[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<T>()
                .unwrap()
                .to_vec()
        };
        let before = run(model.clone());
        let rewritten = rewrite_convs(&mut model).unwrap();
        (before, run(model.clone()), rewritten, model)
    }

    #[test]
    fn direct_fp32_convolutions_match_tract_with_and_without_relu() {
        use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
        use tract_onnx::tract_core::ops::math::max;
        let mut rng = Rng(7);
        for (ix, c) in cases().into_iter().enumerate() {
            let relu = ix % 2 == 0;
            let mut model = TypedModel::default();
            let shape = [c.n, c.cin, c.h, c.w];
            let x = model.add_source("x", TypedFact::dt_shape(DatumType::F32, &shape[..])).unwrap();
            let wv: Vec<f32> = (0..c.cout * c.cin * c.kh * c.kw).map(|_| rng.unit()).collect();
            let bv: Vec<f32> = (0..c.cout).map(|_| rng.unit()).collect();
            let w = model
                .add_const("w", TTensor::from_shape(&[c.cout, c.cin, c.kh, c.kw], &wv).unwrap())
                .unwrap();
            let b = model.add_const("b", TTensor::from_shape(&[c.cout], &bv).unwrap()).unwrap();
            let mut out = model.wire_node("conv", conv_op(&c, None), &[x, w, b]).unwrap();
            if relu {
                let zero =
                    model.add_const("zero", TTensor::from_shape(&[1, 1, 1, 1], &[0f32]).unwrap()).unwrap();
                out = model.wire_node("relu", max(), &[out[0], zero]).unwrap();
            }
            // tract's own pool panics on an empty output, so the reference needs 2x2 at least.
            let pool = ix % 3 != 1 && c.h + c.pad[0] + c.pad[2] > c.kh && c.w + c.pad[1] + c.pad[3] > c.kw;
            if pool {
                out = model.wire_node("pool", pool_2x2(c.cout), &out).unwrap();
            }
            model.select_output_outlets(&out).unwrap();
            let xv: Vec<f32> = (0..shape.iter().product()).map(|_| rng.unit()).collect();
            let input = TTensor::from_shape(&shape, &xv).unwrap();
            let (before, after, rewritten, model) = conv_before_after::<f32>(model, input);
            assert_eq!(rewritten, 1, "{c:?}");
            assert_eq!(before.len(), after.len(), "{c:?}");
            for (a, b) in before.iter().zip(&after) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{c:?}: {a} vs {b}");
            }
            if relu {
                assert!(after.iter().all(|&v| v >= 0.0), "{c:?}");
            }
            let fused =
                model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).next().map(|c| (c.relu, c.pool));
            assert_eq!(fused, Some((relu, pool)), "{c:?}");
        }
    }

    #[test]
    fn direct_int8_convolutions_are_bit_identical_to_tract() {
        use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
        let mut rng = Rng(11);
        for (ix, c) in cases().into_iter().enumerate() {
            let mut model = TypedModel::default();
            let shape = [c.n, c.cin, c.h, c.w];
            let x = model.add_source("x", TypedFact::dt_shape(DatumType::U8, &shape[..])).unwrap();
            let wv: Vec<i8> = (0..c.cout * c.cin * c.kh * c.kw).map(|_| rng.next() as i8).collect();
            let bv: Vec<i32> = (0..c.cout).map(|_| rng.below(40_001) as i32 - 20_000).collect();
            let scalar_i32 = |v: i32| TTensor::from(v);
            let scalar_f32 = |v: f32| TTensor::from(v);
            let x_zero = rng.below(256) as i32;
            // The edge model's scales, then random ones.
            let (x_scale, k_scale, y_scale) = if c.cin == 1 {
                (0.003921569, 0.00523031, 0.01079464)
            } else {
                (0.001 + rng.unit().abs() * 0.02, 0.001 + rng.unit().abs() * 0.01, 0.01 + rng.unit().abs())
            };
            let consts = [
                TTensor::from_shape(&[c.cout, c.cin, c.kh, c.kw], &wv).unwrap(),
                TTensor::from_shape(&[c.cout], &bv).unwrap(),
                scalar_i32(x_zero),
                scalar_f32(x_scale),
                scalar_i32(0),
                scalar_f32(k_scale),
                scalar_i32(rng.below(256) as i32),
                scalar_f32(y_scale),
            ];
            let mut inputs = vec![x];
            for (i, t) in consts.into_iter().enumerate() {
                inputs.push(model.add_const(format!("c{i}"), t).unwrap());
            }
            let mut out = model.wire_node("conv", conv_op(&c, Some(DatumType::U8)), &inputs).unwrap();
            let pool = ix % 2 == 0 && c.h + c.pad[0] + c.pad[2] > c.kh && c.w + c.pad[1] + c.pad[3] > c.kw;
            if pool {
                out = model.wire_node("pool", pool_2x2(c.cout), &out).unwrap();
            }
            model.select_output_outlets(&out).unwrap();
            let xv: Vec<u8> = (0..shape.iter().product()).map(|_| rng.next() as u8).collect();
            let input = TTensor::from_shape(&shape, &xv).unwrap();
            let (before, after, rewritten, model) = conv_before_after::<u8>(model, input);
            assert_eq!(rewritten, 1, "{c:?}");
            let fused = model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).next().map(|c| c.pool);
            assert_eq!(fused, Some(pool), "{c:?}");
            assert_eq!(before, after, "{c:?}");
        }
    }

    #[test]
    fn every_convolution_of_the_reference_models_runs_direct() {
        for key in ReferenceModel::ALL {
            let mut model = decluttered(key);
            let convs = model.nodes().iter().filter(|n| n.op_is::<Conv>()).count();
            assert_eq!(rewrite_convs(&mut model).unwrap(), convs, "{}", key.key());
            let left = model.nodes().iter().filter(|n| n.op_is::<Conv>()).count();
            let direct: Vec<bool> =
                model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).map(|c| c.relu).collect();
            assert_eq!((left, direct.len()), (0, convs), "{}", key.key());
            // fp32 convolutions take their Relu along; int8 ones clamp in requantisation.
            let fp32 = key != ReferenceModel::EdgeInt8;
            assert!(direct.iter().all(|&relu| relu == fp32), "{}", key.key());
            // The int8 model's input QuantizeLinear is fused into its first convolution.
            let quantizing = model
                .nodes()
                .iter()
                .filter_map(|n| n.op_as::<DirectConv>())
                .filter(|c| c.quantize_input.is_some())
                .count();
            assert_eq!(quantizing, usize::from(!fp32), "{}", key.key());
            // So is the table that requantises its last pool's output for the matmul.
            let looking_up = model
                .nodes()
                .iter()
                .filter_map(|n| n.op_as::<DirectConv>())
                .filter(|c| c.lookup.is_some())
                .count();
            assert_eq!(looking_up, usize::from(!fp32), "{}", key.key());
            // Every 2x2 pool follows a convolution, and is fused into it.
            let pooled =
                model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).filter(|c| c.pool).count();
            assert_eq!((pooled, pools(&model)), (2, (vec![], 0)), "{}", key.key());
        }
    }

    #[test]
    fn the_int8_edge_model_gives_bit_identical_logits_with_and_without_rewrites() {
        use crate::dataset::{Digits, Split};
        use crate::reference::images_to_input;
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&default_models_dir())).unwrap();
        let fast = TractBackend::new().prepare("edge_int8", &bytes).unwrap();
        let plain = TractBackend::without_rewrites().prepare("edge_int8", &bytes).unwrap();
        let digits = Digits::load_split(&default_models_dir(), Split::Test).unwrap();
        for start in (0..256).step_by(8) {
            let input = images_to_input(digits.images(start..start + 8)).unwrap();
            let a = fast.run(std::slice::from_ref(&input)).unwrap()[0].to_f32().unwrap();
            let b = plain.run(&[input]).unwrap()[0].to_f32().unwrap();
            assert_eq!(a, b, "images {start}..{}", start + 8);
        }
    }
}
