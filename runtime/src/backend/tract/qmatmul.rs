//! A quantised matmul with constant weights run as a convolution, on the ONNX graph, before
//! tract sees it.
//!
//! tract 0.23 runs `QLinearMatMul` on its integer matrix multiply. On the int8 edge model's
//! classifier, a `[1, 784] x [784, 10]` product after a Flatten that tract folds into the
//! product as three reduction axes, that took about 90% of the model's time at batch 1 on an
//! AVX2 machine: far more than its 7,840 multiply-adds (`docs/performance.md`, "Quantised
//! matmul"). The same product is a convolution of one input channel whose kernel covers the
//! whole input plane (one output pixel, `N` output channels), which the rewrites run as our
//! direct int8 convolution ([`super::conv`]). `K` is laid out as a plane of `rows x K / rows`
//! (`rows` the divisor of `K` closest to its square root; tract treats a plane of one row as
//! a 1-D convolution, which the direct convolution does not take):
//!
//! ```text
//! Y = QLinearMatMul(A, sa, za, B, sb, zb, sy, zy)          A: [..., K], B: [K, N] constant
//!   becomes
//! plane = Reshape(A, [-1, 1, rows, K / rows])
//! conv  = QLinearConv(plane, sa, za, W, sb, zb, sy, zy, 0)  W = Bᵀ as [N, 1, rows, K / rows]
//! Y     = Reshape(conv, Concat(Shape(A)[:-1], [N]))
//! ```
//!
//! Exact: both ops compute `saturate(round(Σ (a - za)(b - zb) · sa·sb/sy) + zy)` for each
//! output, and a column of `B` is an output channel of `W`, so a weight scale per column is
//! a scale per channel. Matched conservatively: `B` an int8 or uint8 initializer of rank 2,
//! the weight scale one value or one per column, and every other scale and zero point a
//! single constant (a convolution has no per-row scale). Anything else stays a matmul.

use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::DatumType;
use tract_onnx::tensor::load_tensor;

/// Rewrites every matching `QLinearMatMul` in `proto` as the convolution of the module doc;
/// returns how many.
pub(crate) fn matmuls_as_convs(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else { return 0 };
    let mut rewritten = 0;
    let mut ix = 0;
    while ix < graph.node.len() {
        match AsConv::find(graph, &graph.node[ix]) {
            Some(found) => {
                let (nodes, initializers) = found.replacement(&graph.node[ix]);
                let added = nodes.len();
                graph.node.splice(ix..=ix, nodes);
                graph.initializer.extend(initializers);
                rewritten += 1;
                ix += added;
            }
            None => ix += 1,
        }
    }
    rewritten
}

/// The height of a kernel spanning `k` values, as close to square as divides `k`: more than
/// one row, or tract would make it a 1-D convolution, which the direct convolution does not
/// run. `None` for a prime `k`.
fn kernel_rows(k: i64) -> Option<i64> {
    (2..).take_while(|r| r * r <= k).filter(|r| k % r == 0).last()
}

/// A matching matmul: its weights transposed into convolution weights.
struct AsConv {
    /// `Bᵀ` as `[N, 1, rows, K / rows]`.
    weights: TensorProto,
    k: i64,
    n: i64,
    /// The kernel's height: `K` is laid out as `rows x K / rows`.
    rows: i64,
}

impl AsConv {
    fn find(graph: &GraphProto, node: &NodeProto) -> Option<AsConv> {
        let official = node.domain.is_empty() || node.domain == "ai.onnx";
        if node.op_type != "QLinearMatMul" || !official || node.input.len() != 8 || node.output.len() != 1 {
            return None;
        }
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let len = |name: &str| init(name).map(|t| t.dims.iter().product::<i64>());
        let b = init(&node.input[3])?;
        let [k, n] = b.dims[..] else { return None };
        let scalars = [1, 2, 5, 6, 7].iter().all(|&i| len(&node.input[i]) == Some(1));
        let b_scale_ok = len(&node.input[4]).is_some_and(|l| l == 1 || l == n);
        if !scalars || !b_scale_ok || k <= 0 || n <= 0 {
            return None;
        }
        let values = load_tensor(&FopenDataResolver, b, None).ok()?;
        let (data_type, bytes) = match values.datum_type() {
            DatumType::I8 => (DataType::Int8, values.try_as_plain_ram().ok()?.as_bytes().to_vec()),
            DatumType::U8 => (DataType::Uint8, values.try_as_plain_ram().ok()?.as_bytes().to_vec()),
            _ => return None,
        };
        let rows = kernel_rows(k)?;
        let (ku, nu) = (usize::try_from(k).ok()?, usize::try_from(n).ok()?);
        if bytes.len() != ku * nu {
            return None;
        }
        // Row-major [K, N] to [N, K]: output channel c reads column c.
        let transposed: Vec<u8> =
            (0..nu).flat_map(|c| (0..ku).map(move |r| (r, c))).map(|(r, c)| bytes[r * nu + c]).collect();
        let weights = TensorProto {
            name: format!("{}.as_conv.weights", node.output[0]),
            data_type: data_type as i32,
            dims: vec![n, 1, rows, k / rows],
            raw_data: transposed,
            ..TensorProto::default()
        };
        Some(AsConv { weights, k, n, rows })
    }

    /// The nodes replacing `node`, and the initializers they read.
    fn replacement(self, node: &NodeProto) -> (Vec<NodeProto>, Vec<TensorProto>) {
        let (a, out) = (&node.input[0], &node.output[0]);
        let name = |s: &str| format!("{out}.as_conv.{s}");
        let ints = |s: &str, v: Vec<i64>| TensorProto {
            name: name(s),
            data_type: DataType::Int64 as i32,
            dims: vec![v.len() as i64],
            int64_data: v,
            ..TensorProto::default()
        };
        let op = |op: &str, inputs: &[&str], output: &str| NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: format!("{output}.node"),
            op_type: op.to_owned(),
            ..NodeProto::default()
        };
        let i = &node.input;
        let mut conv = op(
            "QLinearConv",
            &[&name("rows"), &i[1], &i[2], &self.weights.name, &i[4], &i[5], &i[6], &i[7], &name("bias")],
            &name("conv"),
        );
        conv.name = if node.name.is_empty() { name("conv") } else { node.name.clone() };
        let mut concat = op("Concat", &[&name("leading"), &name("n")], &name("shape"));
        concat.attribute.push(AttributeProto {
            name: "axis".into(),
            i: 0,
            r#type: 2, // INT
            ..AttributeProto::default()
        });
        let nodes = vec![
            op("Reshape", &[a, &name("rows_shape")], &name("rows")),
            conv,
            op("Shape", &[a], &name("a_shape")),
            op("Slice", &[&name("a_shape"), &name("start"), &name("end")], &name("leading")),
            concat,
            op("Reshape", &[&name("conv"), &name("shape")], out),
        ];
        let initializers = vec![
            self.weights,
            ints("rows_shape", vec![-1, 1, self.rows, self.k / self.rows]),
            ints("start", vec![0]),
            ints("end", vec![-1]),
            ints("n", vec![self.n]),
            TensorProto {
                name: name("bias"),
                data_type: DataType::Int32 as i32,
                dims: vec![self.n],
                int32_data: vec![0; self.n as usize],
                ..TensorProto::default()
            },
        ];
        (nodes, initializers)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::tract::TractBackend;
    use crate::backend::tract::onnx::read_proto;
    use crate::backend::{PrepareOptions, PreparedModel};
    use crate::dataset::{Digits, Split};
    use crate::reference::{ReferenceModel, default_models_dir, images_to_input};

    fn edge_int8() -> ModelProto {
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&default_models_dir())).unwrap();
        read_proto("edge_int8", &bytes).unwrap()
    }

    fn ops(proto: &ModelProto, op: &str) -> usize {
        proto.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == op).count()
    }

    fn logits(model: &dyn PreparedModel, digits: &Digits, start: usize, n: usize) -> Vec<u8> {
        let input = images_to_input(digits.images(start..start + n)).unwrap();
        model.run(&[input]).unwrap()[0].data().to_vec()
    }

    #[test]
    fn the_edge_models_matmul_becomes_a_convolution_that_answers_bit_identically() {
        let original = edge_int8();
        let mut proto = original.clone();
        assert_eq!(matmuls_as_convs(&mut proto), 1);
        assert_eq!((ops(&proto, "QLinearMatMul"), ops(&proto, "QLinearConv")), (0, 3));
        // Compared on plain tract, so that only this rewrite differs; then with every rewrite.
        let options = PrepareOptions::default();
        let before = TractBackend::without_rewrites().prepare_proto("before", original, &options).unwrap();
        let after = TractBackend::without_rewrites().prepare_proto("after", proto, &options).unwrap();
        let digits = Digits::load_split(&default_models_dir(), Split::Test).unwrap();
        for (start, n) in [(0, 1), (1, 7), (8, 64)] {
            assert_eq!(logits(&*after, &digits, start, n), logits(&*before, &digits, start, n), "{n} images");
        }
    }

    #[test]
    fn matmuls_it_cannot_express_as_a_convolution_stay_matmuls() {
        let mut proto = edge_int8();
        let graph = proto.graph.as_mut().unwrap();
        let at = graph.node.iter().position(|n| n.op_type == "QLinearMatMul").unwrap();
        // A per-row input scale has no convolution equivalent.
        let scale = graph.node[at].input[1].clone();
        let t = graph.initializer.iter_mut().find(|t| t.name == scale).unwrap();
        let (v, dims) = (load_tensor(&FopenDataResolver, t, None).unwrap(), t.dims.clone());
        assert_eq!(dims.iter().product::<i64>(), 1);
        let value = v.cast_to::<f32>().unwrap().try_as_plain_ram().unwrap().as_slice::<f32>().unwrap()[0];
        *t = TensorProto {
            name: scale.clone(),
            data_type: DataType::Float as i32,
            dims: vec![2],
            float_data: vec![value, value],
            ..TensorProto::default()
        };
        let mut per_row = proto.clone();
        assert_eq!(matmuls_as_convs(&mut per_row), 0);
        // Weights computed at run time are not constants to transpose.
        let mut proto = edge_int8();
        let graph = proto.graph.as_mut().unwrap();
        let at = graph.node.iter().position(|n| n.op_type == "QLinearMatMul").unwrap();
        graph.node[at].input[3] = "computed".into();
        assert_eq!(matmuls_as_convs(&mut proto), 0);
    }
}
