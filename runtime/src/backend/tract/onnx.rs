//! tract's ONNX front end, as both backends use it: parsing a file once, refusing ops
//! tract does not implement, and reading from the parsed graph what a [`ModelInfo`] reports
//! (input specs with the shapes a config fixes, the graph's own input and output names,
//! precision, multiply-accumulates), converting element types between tract and [`DType`],
//! and turning tract's errors into one line (the details go to the debug log). The wgpu backend imports tract's typed graph too, so there is one
//! parser and one reading of a model's inputs.
//!
//! [`ModelInfo`]: crate::backend::ModelInfo

use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::tensor_shape_proto::dimension::Value;
use tract_onnx::pb::{ModelProto, ValueInfoProto, type_proto};
use tract_onnx::prelude::{DatumType, Framework, InferenceModel, TractError, TypedModel};
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
use tract_onnx::tract_hir::infer::Factoid;

use crate::backend::{BackendError, Precision, PrepareOptions, TensorSpec};
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

/// How a backend computes a quantised graph, judged by its convolutions and matmuls: int8
/// when quantised ones (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger) are there
/// and no convolution is left in fp32 (fed by a DequantizeLinear, as QDQ files are, or
/// QLinearConv with per-channel weight scales unless `per_channel_convs` says the backend
/// runs those as int8; tract's direct convolution does). A QLinearMatMul with per-column
/// scales, or a QDQ matmul, is lowered to fp32 but does not change the verdict: it is the
/// small last layer of a CNN. A file with DequantizeLinear and nothing else quantised is
/// int8 in the file, fp32 in the arithmetic.
pub(crate) fn precision_of(proto: &ModelProto, per_channel_convs: bool) -> Precision {
    let Some(graph) = proto.graph.as_ref() else { return Precision::Fp32 };
    let per_channel = |scale: &str| {
        graph.initializer.iter().find(|t| t.name == scale).is_some_and(|t| t.dims.iter().product::<i64>() > 1)
    };
    let dequantized: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut qlinear = false;
    let mut fp32_convs = false;
    let mut dequantizing = false;
    for node in &graph.node {
        match node.op_type.as_str() {
            // inputs: x, x_scale, x_zp, w, w_scale, ...
            "QLinearConv" => {
                qlinear = true;
                fp32_convs |= !per_channel_convs && node.input.get(4).is_some_and(|s| per_channel(s));
            }
            "QLinearMatMul" | "ConvInteger" | "MatMulInteger" => qlinear = true,
            "DequantizeLinear" => dequantizing = true,
            "Conv" => fp32_convs |= node.input.iter().any(|i| dequantized.contains(&i.as_str())),
            _ => {}
        }
    }
    match (qlinear, fp32_convs || (!qlinear && dequantizing)) {
        (true, false) => Precision::Int8,
        (_, true) => Precision::Int8AsFp32,
        (false, false) => Precision::Fp32,
    }
}

/// A tract error as one line: the node it names, if any, and its root cause. The whole
/// chain (and a backtrace, if one was captured) goes to the debug log.
pub(crate) fn tract_err(e: TractError) -> String {
    one_line(e, None)
}

/// [`tract_err`] for an error about `proto`'s graph: the node's op is named as the file
/// names it (`MatMul`, not tract's `MatMulInference`).
pub(crate) fn refusal(proto: &ModelProto, e: TractError) -> String {
    one_line(e, Some(proto))
}

fn one_line(e: TractError, proto: Option<&ModelProto>) -> String {
    tracing::debug!(target: "cascade_runtime::backend", error = ?e, "tract's error in full");
    let root = e.root_cause().to_string();
    let root = root.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown error").to_owned();
    // tract's contexts name nodes as `#12 "name" Op...`; the innermost one is where it failed.
    match e.chain().filter_map(|c| node_in(&c.to_string())).last() {
        Some((node, op)) => {
            let op = proto.and_then(|p| onnx_op_type(p, &node)).unwrap_or(op);
            format!("node {node} (op {op}): {root}")
        }
        None => root,
    }
}

/// The ONNX op type of the node tract calls `node`: tract names a node after the file's
/// node name, or its first output when the file gives none, and suffixes the names of the
/// nodes it derives from one (`relu1.low` for the Max that implements Relu `relu1`).
pub(crate) fn onnx_op_type(proto: &ModelProto, node: &str) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    let mut name = node;
    loop {
        let found = graph.node.iter().find(|p| p.name == name).or_else(|| {
            graph.node.iter().find(|p| p.name.is_empty() && p.output.first().is_some_and(|o| o == name))
        });
        if let Some(p) = found {
            return Some(p.op_type.clone());
        }
        name = &name[..name.rfind('.')?];
    }
}

/// Why tract could not build its model of `proto`, as one line naming what it could not
/// read: a node's op when the error names one, else an input, output or weight whose
/// element type tract has no type for (float8, 4-bit), else tract's own words.
fn parse_refusal(proto: &ModelProto, e: TractError) -> String {
    use tract_onnx::pb::tensor_proto::DataType;
    let line = one_line(e, Some(proto));
    let Some(graph) = proto.graph.as_ref() else { return line };
    if let Some(node) = graph.node.iter().find(|n| line.starts_with(&format!("{}:", n.op_type))) {
        let name = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        return format!("node {name} (op {}): {line}", node.op_type);
    }
    let unreadable = |elem: i32| match DataType::try_from(elem) {
        Ok(dt) => DatumType::try_from(dt).is_err().then(|| format!("{dt:?}")),
        Err(_) => Some(format!("ONNX type {elem}")),
    };
    let elem_of = |info: &ValueInfoProto| {
        info.r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .map(|type_proto::Value::TensorType(t)| t.elem_type)
    };
    let tensors = graph.input.iter().map(|i| ("input", i)).chain(graph.output.iter().map(|o| ("output", o)));
    for (kind, info) in tensors {
        if let Some(ty) = elem_of(info).and_then(unreadable) {
            return format!("{kind} {} has element type {ty}, which tract cannot read", info.name);
        }
    }
    if let Some((t, ty)) = graph.initializer.iter().find_map(|t| unreadable(t.data_type).map(|ty| (t, ty))) {
        return format!("weight {} has element type {ty}, which tract cannot read", t.name);
    }
    line
}

/// The node name and op of tract's `#12 "name" Op...` in `text`, if there is one.
fn node_in(text: &str) -> Option<(String, String)> {
    let mut rest = text;
    while let Some(at) = rest.find('#') {
        let after = &rest[at + 1..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0
            && let Some(quoted) = after[digits..].strip_prefix(" \"")
            && let Some(end) = quoted.find('"')
        {
            let op = quoted[end + 1..].split_whitespace().next().unwrap_or("?");
            let op = op.split(['(', ',', '{']).next().unwrap_or(op);
            return Some((quoted[..end].to_owned(), op.to_owned()));
        }
        rest = after;
    }
    None
}

/// Reads an ONNX file into its protobuf.
pub(crate) fn read_proto(name: &str, onnx: &[u8]) -> Result<ModelProto, BackendError> {
    let proto = tract_onnx::onnx().proto_model_for_read(&mut &*onnx);
    proto.map_err(|e| BackendError::Parse { model: name.to_owned(), why: tract_err(e) })
}

/// Builds tract's model of `proto` and refuses ops tract does not implement, naming the node
/// and its ONNX op type (`backend` is who reports it).
///
/// Shapes the file declares for intermediate values and outputs are hints for tract's
/// inference; a named dimension there (`N`, `batch_size`) would have to unify with the
/// concrete batch of each plan, and does not, so those names are dropped first. The
/// inputs' shapes are set from [`input_specs`] before anything is planned.
pub(crate) fn tract_model(
    name: &str,
    proto: &ModelProto,
    backend: &'static str,
) -> Result<InferenceModel, BackendError> {
    let mut proto = proto.clone();
    if let Some(graph) = proto.graph.as_mut() {
        for info in graph.value_info.iter_mut().chain(graph.output.iter_mut()) {
            for dim in declared_dims_mut(info) {
                if matches!(dim.value, Some(Value::DimParam(_))) {
                    dim.value = None;
                }
            }
        }
    }
    let model = tract_onnx::onnx().model_for_proto_model(&proto);
    let model =
        model.map_err(|e| BackendError::Parse { model: name.to_owned(), why: parse_refusal(&proto, e) })?;

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
    Ok(model)
}

/// [`read_proto`] then [`tract_model`], for the wgpu backend's import.
#[cfg(feature = "gpu")]
pub(crate) fn parse_onnx(
    name: &str,
    onnx: &[u8],
    backend: &'static str,
) -> Result<(ModelProto, InferenceModel), BackendError> {
    let proto = read_proto(name, onnx)?;
    let model = tract_model(name, &proto, backend)?;
    Ok((proto, model))
}

fn declared_dims_mut(info: &mut ValueInfoProto) -> impl Iterator<Item = &mut Dimension> {
    let shape = match info.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_mut(),
        None => None,
    };
    shape.into_iter().flat_map(|s| s.dim.iter_mut())
}

/// One dimension of an input as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileDim {
    Fixed(usize),
    Named(String),
    Free,
}

impl std::fmt::Display for FileDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileDim::Fixed(n) => write!(f, "{n}"),
            FileDim::Named(s) => write!(f, "{s}"),
            FileDim::Free => write!(f, "?"),
        }
    }
}

/// The dims the file declares for input `name`; `None` when it declares no shape.
fn file_dims(proto: &ModelProto, name: &str) -> Option<Vec<FileDim>> {
    let info = proto.graph.as_ref()?.input.iter().find(|i| i.name == name)?;
    let Some(type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else { return None };
    let dims = t.shape.as_ref()?.dim.iter().map(|d| match &d.value {
        Some(Value::DimValue(n)) if *n >= 0 => FileDim::Fixed(*n as usize),
        Some(Value::DimParam(p)) if !p.is_empty() => FileDim::Named(p.clone()),
        _ => FileDim::Free,
    });
    Some(dims.collect())
}

fn show(dims: &[FileDim]) -> String {
    format!("[{}]", dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

/// The inputs of a parsed model, named as the graph names them: each has a known element
/// type and a shape `[batch, fixed dims...]`, where `options` fixes what the file leaves
/// free. Refusals name the input and the config key that would fix it.
pub(crate) fn input_specs(
    name: &str,
    model: &InferenceModel,
    proto: &ModelProto,
    options: &PrepareOptions,
) -> Result<Vec<TensorSpec>, BackendError> {
    let unsupported = |why: String| BackendError::Inputs { model: name.to_owned(), why };
    let outlets = model.input_outlets().map_err(|e| unsupported(tract_err(e)))?;
    let names: Vec<&str> = outlets.iter().map(|o| model.node(o.node).name.as_str()).collect();
    if let Some(unknown) = options.inputs.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(unsupported(format!(
            "[models.{name}.inputs.{unknown}] names no input of the model; its inputs are {}",
            names.join(", ")
        )));
    }
    let mut inputs = Vec::new();
    // The first concrete first dimension the file declares, and whose: all must agree.
    let mut first_dim: Option<(String, usize)> = None;
    for (ix, outlet) in outlets.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(|e| unsupported(tract_err(e)))?;
        let input = model.node(outlet.node).name.clone();
        let key = format!("[models.{name}.inputs.{input}]");
        let dt = fact.datum_type.concretize().and_then(dtype_of).ok_or_else(|| {
            let shown = fact.datum_type.concretize().map_or("unknown".to_owned(), |d| format!("{d:?}"));
            unsupported(format!(
                "input {input} has element type {shown}; inputs must be f32, i32, i64, u8 or i8"
            ))
        })?;
        let fixed = options.inputs.get(&input);
        let dims = file_dims(proto, &input);
        if let (Some(batch), Some(FileDim::Named(first))) =
            (fixed.and_then(|f| f.batch.as_ref()), dims.as_ref().and_then(|d| d.first()))
            && batch != first
        {
            return Err(unsupported(format!(
                "input {input}: {key} batch = \"{batch}\", but the file names its first dimension `{first}`; \
                 the batch must be the first dimension"
            )));
        }
        if let Some(FileDim::Fixed(n)) = dims.as_ref().and_then(|d| d.first()) {
            match &first_dim {
                Some((other, m)) if m != n => {
                    return Err(unsupported(format!(
                        "input {other} and input {input} declare different first dimensions ({m} and {n}); \
                         the first dimension of every input is the batch, so this model cannot be served"
                    )));
                }
                Some(_) => {}
                None => first_dim = Some((input.clone(), *n)),
            }
        }
        let item_shape = match (fixed.and_then(|f| f.dims.clone()), dims) {
            (_, Some(dims)) if dims.is_empty() => {
                return Err(unsupported(format!(
                    "input {input} is a scalar; a model input needs a batch dimension first"
                )));
            }
            (Some(want), Some(dims)) => {
                if want.len() + 1 != dims.len() {
                    return Err(unsupported(format!(
                        "input {input} is {} in the file: {} dims after the batch, but {key} shape has {}",
                        show(&dims),
                        dims.len() - 1,
                        want.len()
                    )));
                }
                for (k, (w, d)) in want.iter().zip(&dims[1..]).enumerate() {
                    if let FileDim::Fixed(f) = d
                        && f != w
                    {
                        return Err(unsupported(format!(
                            "input {input}: dimension {} is {f} in the file but {w} in {key} shape",
                            k + 1
                        )));
                    }
                }
                want
            }
            (Some(want), None) => want,
            (None, Some(dims)) => {
                let concrete: Option<Vec<usize>> = dims[1..]
                    .iter()
                    .map(|d| if let FileDim::Fixed(n) = d { Some(*n) } else { None })
                    .collect();
                concrete.ok_or_else(|| {
                    unsupported(format!(
                        "input {input} has free dimensions: the file says {}; set {key} shape = {} \
                         (numbers for the dimensions after the batch)",
                        show(&dims),
                        show(&dims[1..])
                    ))
                })?
            }
            (None, None) => {
                return Err(unsupported(format!(
                    "input {input} has no shape in the file; set {key} shape = [...] (the dimensions after the batch)"
                )));
            }
        };
        inputs.push(TensorSpec { name: input, dtype: dt, item_shape });
    }
    Ok(inputs)
}

/// The graph's output names, in order: what a model's outputs are called whatever tract
/// renames or rewrites inside.
pub(crate) fn output_names(
    name: &str,
    proto: &ModelProto,
    count: usize,
) -> Result<Vec<String>, BackendError> {
    let names: Vec<String> =
        proto.graph.as_ref().map(|g| g.output.iter().map(|o| o.name.clone()).collect()).unwrap_or_default();
    if names.len() != count {
        return Err(BackendError::Unsupported {
            model: name.to_owned(),
            why: format!("the graph lists {} outputs, tract found {count}", names.len()),
        });
    }
    Ok(names)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::tract::TractBackend;
    use crate::backend::{InputShape, PreparedModel};
    use crate::reference::{ReferenceModel, default_models_dir, images_to_input};

    /// The fp32 edge model with its input's height and width left free, as `[N, 1, H, W]`.
    fn free_dims() -> ModelProto {
        let bytes = std::fs::read(ReferenceModel::EdgeFp32.path(&default_models_dir())).unwrap();
        let mut proto = read_proto("edge", &bytes).unwrap();
        let input = &mut proto.graph.as_mut().unwrap().input[0];
        let dims: Vec<&mut Dimension> = declared_dims_mut(input).collect();
        for (dim, name) in dims.into_iter().skip(2).zip(["H", "W"]) {
            dim.value = Some(Value::DimParam(name.to_owned()));
        }
        proto
    }

    fn specs(proto: &ModelProto, options: &PrepareOptions) -> Result<Vec<TensorSpec>, String> {
        let model = tract_model("edge", proto, "tract").unwrap();
        input_specs("edge", &model, proto, options).map_err(|e| e.to_string())
    }

    fn fixing(input: &str, batch: Option<&str>, dims: Option<Vec<usize>>) -> PrepareOptions {
        let shape = InputShape { batch: batch.map(str::to_owned), dims };
        PrepareOptions { inputs: [(input.to_owned(), shape)].into() }
    }

    #[test]
    fn free_dimensions_are_refused_naming_the_input_and_the_config_key() {
        let err = specs(&free_dims(), &PrepareOptions::default()).unwrap_err();
        assert_eq!(
            err,
            "model edge: input input has free dimensions: the file says [N, 1, H, W]; set \
             [models.edge.inputs.input] shape = [1, H, W] (numbers for the dimensions after the batch)"
        );
    }

    #[test]
    fn the_config_fixes_free_dimensions_and_must_agree_with_fixed_ones() {
        let proto = free_dims();
        let got = specs(&proto, &fixing("input", Some("N"), Some(vec![1, 28, 28]))).unwrap();
        assert_eq!((got[0].name.as_str(), &got[0].item_shape[..]), ("input", &[1, 28, 28][..]));

        let err = specs(&proto, &fixing("input", None, Some(vec![3, 28, 28]))).unwrap_err();
        assert!(
            err.contains("dimension 1 is 1 in the file but 3 in [models.edge.inputs.input] shape"),
            "{err}"
        );
        let err = specs(&proto, &fixing("input", None, Some(vec![28, 28]))).unwrap_err();
        assert!(err.contains("[N, 1, H, W] in the file: 3 dims after the batch"), "{err}");
        let err = specs(&proto, &fixing("input", Some("batch"), Some(vec![1, 28, 28]))).unwrap_err();
        assert!(err.contains("batch = \"batch\", but the file names its first dimension `N`"), "{err}");
        let err = specs(&proto, &fixing("image", None, Some(vec![1, 28, 28]))).unwrap_err();
        assert!(
            err.contains("[models.edge.inputs.image] names no input of the model; its inputs are input"),
            "{err}"
        );
    }

    #[test]
    fn a_model_with_fixed_dimensions_runs_and_keeps_the_graphs_names() {
        let options = fixing("input", None, Some(vec![1, 28, 28]));
        let model: Arc<dyn PreparedModel> =
            TractBackend::new().prepare_proto("edge", free_dims(), &options).unwrap();
        let info = model.info();
        assert_eq!(info.inputs[0].describe(), "input f32 [batch, 1, 28, 28]");
        assert_eq!(info.outputs[0].describe(), "logits f32 [batch, 10]");
        let out = model.run(&[images_to_input(&[0; 784 * 2]).unwrap()]).unwrap();
        assert_eq!(out[0].shape(), [2, 10]);
    }

    #[test]
    fn tract_errors_become_one_line_naming_node_and_op() {
        assert_eq!(
            node_in(r#"Failed analyse for node #3 "relu1.low" Max"#),
            Some(("relu1.low".to_owned(), "Max".to_owned()))
        );
        assert_eq!(node_in("no node here #1 but"), None);
        let e = TractError::msg("Inconsistent matmul:\nsecond line")
            .context(r#"Failed analyse for node #2 "c" MatMulInference"#)
            .context("analysing");
        let bytes = std::fs::read(ReferenceModel::EdgeFp32.path(&default_models_dir())).unwrap();
        let mut proto = read_proto("edge", &bytes).unwrap();
        proto.graph.as_mut().unwrap().node[0].output[0] = "c".into();
        proto.graph.as_mut().unwrap().node[0].name.clear();
        assert_eq!(refusal(&proto, e), "node c (op Conv): Inconsistent matmul:");
    }
}
