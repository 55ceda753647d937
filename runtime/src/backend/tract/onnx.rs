//! tract's ONNX front end, as both backends use it: parsing a file once, refusing ops
//! tract does not implement, and reading from the parsed graph what a [`ModelInfo`] reports
//! (input specs, precision, multiply-accumulates), and converting element types between
//! tract and [`DType`]. The wgpu backend imports tract's typed graph too, so there is one
//! parser and one reading of a model's inputs.
//!
//! [`ModelInfo`]: crate::backend::ModelInfo

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{DatumType, Framework, InferenceModel, TypedModel};
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
use tract_onnx::tract_hir::infer::Factoid;

use crate::backend::{BackendError, Precision, TensorSpec};
use crate::tensor::DType;

/// Our element type for one of tract's; `None` for a type a model cannot take or give.
pub(crate) fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        _ => return None,
    })
}

/// tract's element type for one of ours.
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

/// A tract error on one line, with its whole chain of context.
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
