//! QDQ files folded into the integer form at load, on the ONNX graph, before tract sees it.
//!
//! Quantisers write int8 models by default as QDQ: float ops between DequantizeLinear and
//! QuantizeLinear nodes, with the weights stored as integers behind a DequantizeLinear
//! (onnxruntime's `quantize_static` does, with per-channel weight scales where asked).
//! tract 0.23 folds those weights back to fp32 and runs every convolution in fp32 with
//! quantise/dequantise steps around it, slower than the fp32 model. onnxruntime itself
//! rewrites the same patterns into its integer kernels; [`fold_qdq`] does that here:
//!
//! - `DequantizeLinear(x) → Conv(DequantizeLinear(w), DequantizeLinear(b)) → QuantizeLinear`
//!   becomes `QLinearConv` (per-tensor or per-output-channel weight scales), which the
//!   rewrites then run as our direct int8 convolution ([`super::conv`]);
//! - the same around `MatMul` with per-tensor scales becomes `QLinearMatMul`;
//! - `DequantizeLinear → MaxPool | Flatten | Reshape → QuantizeLinear` with the same scale
//!   and zero point on both sides runs the op on the integers directly.
//!
//! Exact where the integer form can be: the folded convolution computes
//! `round(acc * x_scale * w_scale / y_scale)` from the integer accumulator, as onnxruntime's
//! QLinearConv does, where the QDQ graph read literally rounds a float sum; the two differ
//! only where that float sum lands within its rounding error of a half-way point. A bias is
//! folded only when its scale is exactly `x_scale * w_scale` (as quantisers write it), so
//! it adds the same integers. Max, Flatten and Reshape commute with the (increasing)
//! dequantisation, and quantising a dequantised value with the same parameters gives the
//! value back, so the last fold is exact. Anything that does not match stays as the file
//! has it.

use std::collections::HashMap;

use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::{DatumType, Tensor};
use tract_onnx::tensor::load_tensor;

/// Folds the QDQ patterns of the module doc in `proto`; returns how many ops it folded.
pub(crate) fn fold_qdq(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else { return 0 };
    let mut folded = 0;
    // Each fold can expose another (a pool between two convolutions): repeat until none.
    loop {
        let before = folded;
        let mut ix = 0;
        while ix < graph.node.len() {
            if let Some(fold) = Fold::find(graph, ix) {
                fold.apply(graph);
                folded += 1;
            }
            ix += 1;
        }
        drop_dead_dequantizers(graph);
        if folded == before {
            return folded;
        }
    }
}

/// A DequantizeLinear's inputs: the integers, their scale and zero point, and its axis.
struct Dequantize {
    values: String,
    scale: String,
    zero: String,
    axis: i64,
}

/// One match: the node to replace, the QuantizeLinear it absorbs, and the replacement.
struct Fold {
    at: usize,
    quantize: usize,
    node: NodeProto,
}

impl Fold {
    /// The fold of node `ix`, if it is the middle of a pattern.
    fn find(graph: &GraphProto, ix: usize) -> Option<Fold> {
        let node = &graph.node[ix];
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return None;
        }
        let g = Graph::new(graph);
        let out = node.output.first()?;
        let quantize = g.only_quantizer_of(out)?;
        let q = &graph.node[quantize];
        let (y_scale, y_zero) = (q.input.get(1)?.clone(), q.input.get(2)?.clone());
        if !g.scalar(&y_scale) || !g.scalar(&y_zero) {
            return None;
        }
        let x = g.dequantized(node.input.first()?)?;
        if !g.scalar(&x.scale) || !g.scalar(&x.zero) {
            return None;
        }
        let inputs = match node.op_type.as_str() {
            "Conv" => {
                let w = g.dequantized(node.input.get(1)?)?;
                let channels = *g.init(&w.values)?.dims.first()?;
                let per_channel = |name: &str| g.len(name).is_some_and(|n| n == 1 || n == channels);
                let axis_ok = w.axis == 0 || g.scalar(&w.scale);
                if !g.is_init(&w.values) || !per_channel(&w.scale) || !per_channel(&w.zero) || !axis_ok {
                    return None;
                }
                let mut inputs = vec![x.values, x.scale.clone(), x.zero, w.values, w.scale.clone(), w.zero];
                inputs.extend([y_scale, y_zero]);
                if let Some(b) = node.input.get(2).filter(|b| !b.is_empty()) {
                    let b = g.dequantized(b)?;
                    let bias_ok = g.is_init(&b.values)
                        && g.tensor(&b.zero)
                            .is_some_and(|z| ints(&z).is_some_and(|z| z.iter().all(|&v| v == 0)))
                        && bias_scale_is_product(&g, &b.scale, &x.scale, &w.scale, channels as usize);
                    if !bias_ok || g.tensor(&b.values)?.datum_type() != DatumType::I32 {
                        return None;
                    }
                    inputs.push(b.values);
                }
                inputs
            }
            "MatMul" => {
                let w = g.dequantized(node.input.get(1)?)?;
                let two_d = g.init(&w.values).is_some_and(|t| t.dims.len() == 2);
                if !g.is_init(&w.values) || !two_d || !g.scalar(&w.scale) || !g.scalar(&w.zero) {
                    return None;
                }
                vec![x.values, x.scale, x.zero, w.values, w.scale, w.zero, y_scale, y_zero]
            }
            "MaxPool" | "Flatten" | "Reshape" => {
                let same = g.same_value(&x.scale, &y_scale) && g.same_value(&x.zero, &y_zero);
                if !same || (node.op_type == "MaxPool" && node.output.len() != 1) {
                    return None;
                }
                std::iter::once(x.values).chain(node.input.iter().skip(1).cloned()).collect()
            }
            _ => return None,
        };
        let op_type = match node.op_type.as_str() {
            "Conv" => "QLinearConv",
            "MatMul" => "QLinearMatMul",
            other => other,
        };
        let name = if node.name.is_empty() { out.clone() } else { node.name.clone() };
        let folded = NodeProto {
            input: inputs,
            output: vec![q.output.first()?.clone()],
            name,
            op_type: op_type.to_owned(),
            attribute: node.attribute.clone(),
            ..NodeProto::default()
        };
        Some(Fold { at: ix, quantize, node: folded })
    }

    /// Puts the folded node in place of the float op and removes the QuantizeLinear, which
    /// comes later in the node list (its input is the float op's output).
    fn apply(self, graph: &mut GraphProto) {
        graph.node[self.at] = self.node;
        graph.node.remove(self.quantize);
    }
}

/// Removes DequantizeLinear nodes nothing reads any more (the folds bypassed them).
fn drop_dead_dequantizers(graph: &mut GraphProto) {
    loop {
        let read = |name: &String| {
            graph.node.iter().any(|n| n.input.contains(name)) || graph.output.iter().any(|o| &o.name == name)
        };
        let dead =
            graph.node.iter().position(|n| n.op_type == "DequantizeLinear" && !n.output.iter().any(read));
        match dead {
            Some(ix) => {
                graph.node.remove(ix);
            }
            None => return,
        }
    }
}

/// Whether every channel's bias scale is exactly `x_scale * w_scale` in f32.
fn bias_scale_is_product(g: &Graph, bias: &str, x: &str, w: &str, channels: usize) -> bool {
    let (Some(b), Some(x), Some(w)) = (g.floats(bias), g.floats(x), g.floats(w)) else { return false };
    let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    (b.len() == 1 || b.len() == channels)
        && (w.len() == 1 || w.len() == channels)
        && (0..channels).all(|c| at(&b, c).to_bits() == (at(&x, 0) * at(&w, c)).to_bits())
}

fn ints(t: &Tensor) -> Option<Vec<i64>> {
    Some(t.cast_to::<i64>().ok()?.try_as_plain_ram().ok()?.as_slice::<i64>().ok()?.to_vec())
}

/// Read-only lookups over a graph: initializers, producers and readers of each value.
struct Graph<'a> {
    graph: &'a GraphProto,
    inits: HashMap<&'a str, &'a TensorProto>,
    producer: HashMap<&'a str, usize>,
}

impl<'a> Graph<'a> {
    fn new(graph: &'a GraphProto) -> Graph<'a> {
        let inits = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut producer = HashMap::new();
        for (ix, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), ix);
            }
        }
        Graph { graph, inits, producer }
    }

    fn init(&self, name: &str) -> Option<&'a TensorProto> {
        self.inits.get(name).copied()
    }

    fn is_init(&self, name: &str) -> bool {
        self.inits.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Option<Tensor> {
        load_tensor(&FopenDataResolver, self.init(name)?, None).ok()
    }

    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.tensor(name)?;
        if t.datum_type() != DatumType::F32 {
            return None;
        }
        Some(t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
    }

    fn len(&self, name: &str) -> Option<i64> {
        Some(self.init(name)?.dims.iter().product())
    }

    fn scalar(&self, name: &str) -> bool {
        self.len(name) == Some(1)
    }

    /// Two initializers holding the same value (the same name, or equal contents).
    fn same_value(&self, a: &str, b: &str) -> bool {
        a == b
            || matches!((self.tensor(a), self.tensor(b)), (Some(x), Some(y))
                if x.datum_type() == y.datum_type() && x.shape() == y.shape() && x.as_bytes() == y.as_bytes())
    }

    /// The DequantizeLinear producing `name`, with an explicit zero point.
    fn dequantized(&self, name: &str) -> Option<Dequantize> {
        let node = &self.graph.node[*self.producer.get(name)?];
        if node.op_type != "DequantizeLinear" || node.input.len() != 3 {
            return None;
        }
        let axis = node.attribute.iter().find(|a| a.name == "axis").map_or(1, |a| a.i);
        Some(Dequantize {
            values: node.input[0].clone(),
            scale: node.input[1].clone(),
            zero: node.input[2].clone(),
            axis,
        })
    }

    /// The QuantizeLinear that alone reads `name`, when `name` is not a graph output.
    fn only_quantizer_of(&self, name: &str) -> Option<usize> {
        if self.graph.output.iter().any(|o| o.name == name) {
            return None;
        }
        let mut readers =
            self.graph.node.iter().enumerate().filter(|(_, n)| n.input.iter().any(|i| i == name));
        let (ix, reader) = readers.next()?;
        let alone = readers.next().is_none() && reader.input.iter().filter(|i| *i == name).count() == 1;
        (alone
            && reader.op_type == "QuantizeLinear"
            && reader.input.first().is_some_and(|i| i == name)
            && reader.input.len() == 3)
            .then_some(ix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::tract::TractBackend;
    use crate::backend::tract::onnx::read_proto;
    use crate::backend::{Precision, PrepareOptions};
    use crate::dataset::{Digits, Split};
    use crate::reference::{ReferenceModel, default_models_dir, images_to_input};
    use tract_onnx::pb::AttributeProto;
    use tract_onnx::pb::tensor_proto::DataType;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            op_type: op.to_owned(),
            ..NodeProto::default()
        }
    }

    fn scalar_f32(name: &str, v: f32) -> TensorProto {
        TensorProto {
            name: name.to_owned(),
            data_type: DataType::Float as i32,
            float_data: vec![v],
            ..TensorProto::default()
        }
    }

    /// The QOperator edge model rewritten as the QDQ graph a quantiser would write for the
    /// same quantisation: each QLinearConv / QLinearMatMul becomes DequantizeLinear on its
    /// input, weights and bias, the float op, and QuantizeLinear; each MaxPool on integers
    /// becomes DequantizeLinear, MaxPool, QuantizeLinear with the same parameters.
    fn unfold(proto: &ModelProto) -> ModelProto {
        let mut proto = proto.clone();
        let graph = proto.graph.as_mut().unwrap();
        // Quantisation parameters of each integer value: (scale, zero point) names.
        let mut params: HashMap<String, (String, String)> = HashMap::new();
        let mut nodes = Vec::new();
        let mut extra = Vec::new();
        for n in std::mem::take(&mut graph.node) {
            let out = n.output[0].clone();
            let f = |s: &str| format!("{out}.{s}");
            match n.op_type.as_str() {
                "QuantizeLinear" => {
                    params.insert(out.clone(), (n.input[1].clone(), n.input[2].clone()));
                    nodes.push(n);
                }
                "QLinearConv" | "QLinearMatMul" => {
                    let i = &n.input;
                    nodes.push(node("DequantizeLinear", &[&i[0], &i[1], &i[2]], &f("x")));
                    let mut w = node("DequantizeLinear", &[&i[3], &i[4], &i[5]], &f("w"));
                    w.attribute.push(AttributeProto {
                        name: "axis".into(),
                        i: 0,
                        r#type: 2,
                        ..AttributeProto::default()
                    });
                    nodes.push(w);
                    let mut float = vec![f("x"), f("w")];
                    if let Some(b) = i.get(8) {
                        // The bias scale a quantiser writes: x_scale * w_scale.
                        let scale = |name: &str| {
                            let t = graph.initializer.iter().find(|t| t.name == name).unwrap();
                            let t = load_tensor(&FopenDataResolver, t, None).unwrap();
                            t.cast_to::<f32>().unwrap().try_as_plain_ram().unwrap().as_slice::<f32>().unwrap()
                                [0]
                        };
                        extra.push(scalar_f32(&f("bias_scale"), scale(&i[1]) * scale(&i[4])));
                        extra.push(TensorProto {
                            name: f("bias_zero"),
                            data_type: DataType::Int32 as i32,
                            int32_data: vec![0],
                            ..TensorProto::default()
                        });
                        nodes.push(node(
                            "DequantizeLinear",
                            &[b, &f("bias_scale"), &f("bias_zero")],
                            &f("b"),
                        ));
                        float.push(f("b"));
                    }
                    let op = if n.op_type == "QLinearConv" { "Conv" } else { "MatMul" };
                    let mut float_node =
                        node(op, &float.iter().map(String::as_str).collect::<Vec<_>>(), &f("y"));
                    float_node.attribute = n.attribute.clone();
                    nodes.push(float_node);
                    nodes.push(node("QuantizeLinear", &[&f("y"), &i[6], &i[7]], &out));
                    params.insert(out, (i[6].clone(), i[7].clone()));
                }
                "MaxPool" if params.contains_key(&n.input[0]) => {
                    let (s, z) = params[&n.input[0]].clone();
                    nodes.push(node("DequantizeLinear", &[&n.input[0], &s, &z], &f("x")));
                    let mut pool = node("MaxPool", &[&f("x")], &f("y"));
                    pool.attribute = n.attribute.clone();
                    nodes.push(pool);
                    nodes.push(node("QuantizeLinear", &[&f("y"), &s, &z], &out));
                    params.insert(out, (s, z));
                }
                _ => nodes.push(n),
            }
        }
        graph.node = nodes;
        graph.initializer.extend(extra);
        proto
    }

    #[test]
    fn qdq_with_the_qoperator_quantisation_runs_bit_identical_to_it() {
        let dir = default_models_dir();
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&dir)).unwrap();
        let qoperator = read_proto("edge_int8", &bytes).unwrap();
        let qdq = unfold(&qoperator);
        let float_ops =
            |p: &ModelProto| p.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "Conv").count();
        assert_eq!(float_ops(&qdq), 2);
        // Folding gives back the integer ops: two convolutions, the matmul, two pools, and
        // the flatten the QOperator file itself has between a dequantise and a quantise.
        let mut folded = qdq.clone();
        assert_eq!(fold_qdq(&mut folded), 6);
        assert_eq!(float_ops(&folded), 0);

        let options = PrepareOptions::default();
        let reference = TractBackend::new().prepare_proto("qoperator", qoperator, &options).unwrap();
        let model = TractBackend::new().prepare_proto("qdq", qdq.clone(), &options).unwrap();
        let plain = TractBackend::without_rewrites().prepare_proto("qdq", qdq, &options).unwrap();
        assert_eq!(model.info().precision, Precision::Int8);
        assert_eq!(plain.info().precision, Precision::Int8AsFp32);
        let digits = Digits::load_split(&dir, Split::Test).unwrap();
        for start in (0..200).step_by(20) {
            let input = images_to_input(digits.images(start..start + 20)).unwrap();
            let want = reference.run(std::slice::from_ref(&input)).unwrap();
            let got = model.run(&[input]).unwrap();
            assert_eq!(got[0].data(), want[0].data(), "images {start}..{}", start + 20);
        }
    }

    #[test]
    fn a_bias_whose_scale_is_not_the_product_is_left_in_fp32() {
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&default_models_dir())).unwrap();
        let mut qdq = unfold(&read_proto("edge_int8", &bytes).unwrap());
        let graph = qdq.graph.as_mut().unwrap();
        let bias_scale = graph.initializer.iter_mut().find(|t| t.name.ends_with(".bias_scale")).unwrap();
        bias_scale.float_data[0] *= 1.5;
        // The other convolution, the matmul, the pools and the flatten still fold.
        assert_eq!(fold_qdq(&mut qdq), 5);
        let convs = qdq.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "Conv").count();
        assert_eq!(convs, 1);
    }
}
