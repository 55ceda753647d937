//! Exact graph rewrites applied at load, before tract optimises the graph: where tract 0.23
//! is slow on the small CNNs an edge node runs, an op is replaced by one of ours computing
//! the same values ([`rewrite_convs`]: the direct convolution of [`super::conv`], with what
//! follows and precedes it fused; [`rewrite_pools`]: the 2x2 pool of [`super::pool`], or a
//! separable split). Each rewrite matches conservatively and leaves anything else to tract.
//! How much each saves: `docs/performance.md`.

use std::sync::Arc;

use tract_onnx::prelude::{DatumType, TractResult, TypedModel};
use tract_onnx::tract_core::internal::{OutletId, TVec, Tensor as TTensor, TypedModelPatch};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::conv::{DirectConv, Int8Output};
use super::pool::MaxPool2x2;
use crate::backend::quant::{Requant, int_range};
use cascade_kernels::ConvGeometry;

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
pub(crate) fn rewrite_pools(model: &mut TypedModel) -> TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else { continue };
        let spec = &pool.pool_spec;
        if pool.with_index_outputs.is_some()
            || spec.kernel_shape.len() != 2
            || spec.kernel_shape.iter().any(|&k| k < 2)
            || !plain_windows(spec)
        {
            continue;
        }
        // No strides means 1 on every axis (ONNX's default, and tract's).
        let strides: TVec<usize> = spec.strides().iter().copied().collect();
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

/// Replaces each 2-D convolution [`DirectConv`] handles by it, with what it can take along:
/// a following Relu (fp32), a following 2x2/s2 MaxPool, and for int8 the QuantizeLinear
/// before it and the LookupTable after it; returns how many.
///
/// Why: tract 0.23 builds an im2col matrix for every convolution (a large share of a small
/// CNN's time, larger in int8, where it is built eagerly in u8: `docs/performance.md`,
/// "Direct convolution"); see [`super::conv`]. The match
/// is conservative: NCHW with a batch axis, OIHW constant weights, one group, stride 1, no
/// dilation, a concrete input shape; int8 only with scalar constant scales and zero points
/// and a u8/i8 output. Anything else keeps tract's own op.
pub(crate) fn rewrite_convs(model: &mut TypedModel) -> TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(op) = direct_conv_for(model, node.id, conv)? else { continue };
        let mut op = op;
        let mut last = OutletId::new(node.id, 0);
        if op.int8.is_none()
            && let Some(relu) = relu_after(model, last)?
        {
            op.relu = true;
            last = OutletId::new(relu, 0);
        }
        if let Some(pool) = pool_2x2_after(model, last)? {
            op.fuse_pool();
            last = OutletId::new(pool, 0);
        }
        if op.int8.as_ref().is_some_and(|q| q.output.unquantized() == DatumType::U8)
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
fn direct_conv_for(model: &TypedModel, id: usize, conv: &Conv) -> TractResult<Option<DirectConv>> {
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
    // QLinearConv: x, kernel, bias, then the six quantisation parameters; the weight scale
    // per tensor (one multiplier, as tract computes it) or per output channel.
    let (requant, channel_mults) = match Requant::of_node(model, id) {
        Some(rq) => (rq, None),
        None => match Requant::per_channel_of_node(model, id, cout) {
            Some((rq, mults)) => (rq, Some(mults)),
            None => return Ok(None),
        },
    };
    let out_raw = out_dt.unquantized();
    // Plain u8/i8 inputs only: a quantised input type keeps tract's op.
    let Some(x_range) = int_range(input.datum_type).filter(|_| !input.datum_type.is_quantized()) else {
        return Ok(None);
    };
    // `Requant::of_node` has checked that the output is u8 or i8.
    if node.inputs.len() != 9 || q_dt.unquantized() != out_raw || bias.datum_type() != DatumType::I32 {
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
    let int8 = Int8Output { requant, output: out_dt, channel_mults };
    Ok(DirectConv::int8(geo, &weights_i32, &bias_i32, x_range, int8))
}

/// The f32-to-u8 or f32-to-i8 QuantizeLinear producing `outlet` for an int8 `op` alone, if
/// there is one: its node, scale and zero point. Fusing it saves a scalar pass over the input.
fn quantize_before(
    model: &TypedModel,
    outlet: OutletId,
    op: &DirectConv,
) -> TractResult<Option<(usize, f32, i32)>> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::{QuantizeLinearI8, QuantizeLinearU8};
    if op.int8.is_none()
        || model.outlet_successors(outlet).len() != 1
        || model.output_outlets()?.contains(&outlet)
    {
        return Ok(None);
    }
    let node = model.node(outlet.node);
    let Some(ew) = node.op_as::<ElementWiseOp>() else { return Ok(None) };
    let (scale, zero) =
        match (ew.0.downcast_ref::<QuantizeLinearU8>(), ew.0.downcast_ref::<QuantizeLinearI8>()) {
            (Some(q), _) => (q.scale, i32::from(q.zero_point)),
            (_, Some(q)) => (q.scale, i32::from(q.zero_point)),
            _ => return Ok(None),
        };
    let Some(&source) = node.inputs.first() else { return Ok(None) };
    let fact = model.outlet_fact(source)?;
    let same_shape = fact.shape == model.outlet_fact(outlet)?.shape;
    Ok((fact.datum_type == DatumType::F32 && same_shape).then_some((node.id, scale, zero)))
}

/// The u8 LookupTable that alone consumes `outlet`, if there is one: its node and table.
fn lookup_after(model: &TypedModel, outlet: OutletId) -> TractResult<Option<(usize, Vec<u8>)>> {
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
fn pool_2x2_after(model: &TypedModel, outlet: OutletId) -> TractResult<Option<usize>> {
    let successors = model.outlet_successors(outlet);
    if successors.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(successors[0].node);
    let Some(pool) = next.op_as::<MaxPool>() else { return Ok(None) };
    let spec = &pool.pool_spec;
    let strides = spec.strides();
    let plain = pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape[..] == [2, 2]
        && strides[..] == [2, 2]
        && plain_windows(spec);
    Ok(plain.then_some(next.id))
}

/// Whether a pool's windows are neither padded nor dilated: the only windows the pool
/// rewrites handle.
fn plain_windows(spec: &PoolSpec) -> bool {
    let unpadded = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
        PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
            !ceil && before.iter().chain(after).all(|&p| p == 0)
        }
        PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
    };
    unpadded && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1))
}

/// The Relu (`Max` with a constant zero) that alone consumes `outlet`, if there is one.
fn relu_after(model: &TypedModel, outlet: OutletId) -> TractResult<Option<usize>> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
