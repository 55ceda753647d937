//! The CPU backend: tract.
//!
//! Preparing parses the ONNX file once ([`onnx`]), refuses ops tract does not implement, and
//! plans batch 1 (so a model that cannot run fails at load, not on the first request). Each
//! other batch size gets its own optimised plan the first time it is used, kept for the
//! model's life; tract is far faster on concrete shapes than on a symbolic batch. Run state
//! (tract's `SimpleState`, which owns the scratch buffers) is pooled per batch size and
//! reused across calls.
//!
//! Before optimising, the backend applies exact graph rewrites where tract 0.23 is slow
//! ([`rewrite`]: our own im2col-free convolution, fp32 and int8, with its Relu, pool and int8
//! edges fused ([`conv`]); and a 2x2 max pool ([`pool`])), after two on the ONNX graph: QDQ
//! patterns folded into integer ops ([`qdq`]) and quantised matmuls with constant weights
//! turned into convolutions ([`qmatmul`]). [`TractBackend::without_rewrites`]
//! skips them and is the reference the conformance suite checks the rewritten graphs
//! against; it also runs every batch through one plan, where the rewritten backend runs
//! batches above [`CHUNK`] in chunks of that size. Kernel selection inside tract is set once
//! per process by [`crate::configure_cpu_kernels`].

mod conv;
pub(crate) mod onnx;
mod pool;
mod qdq;
mod qmatmul;
mod rewrite;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TypedModel,
    TypedRunnableModel, TypedSimpleState,
};
use tract_onnx::tract_core::ops::cnn::Conv;

use super::{
    Backend, BackendError, BackendKind, ModelInfo, PrepareOptions, PreparedModel, TensorSpec, check_inputs,
};
use crate::tensor::{DType, Tensor};
use onnx::{
    count_macs, datum_of, dtype_of, input_specs, output_names, precision_of, read_proto, refusal, tract_err,
    tract_model,
};
use rewrite::{rewrite_convs, rewrite_pools};

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

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn prepare_with(
        &self,
        name: &str,
        onnx: &[u8],
        options: &PrepareOptions,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        self.prepare_proto(name, read_proto(name, onnx)?, options)
    }
}

impl TractBackend {
    /// [`Backend::prepare_with`] from the parsed file.
    fn prepare_proto(
        &self,
        name: &str,
        mut proto: ModelProto,
        options: &PrepareOptions,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        if self.rewrites {
            let folded = qdq::fold_qdq(&mut proto);
            if folded > 0 {
                tracing::debug!(model = name, folded, "QDQ patterns folded into integer ops");
            }
            let convs = qmatmul::matmuls_as_convs(&mut proto);
            if convs > 0 {
                tracing::debug!(model = name, convs, "quantised matmuls run as convolutions");
            }
        }
        let model = tract_model(name, &proto, "tract")?;
        let inputs = input_specs(name, &model, &proto, options)?;
        let unsupported = |why: String| BackendError::Unsupported { model: name.to_owned(), why };

        let prepared = TractModel {
            template: model,
            proto: proto.clone(),
            rewrites: self.rewrites,
            info: ModelInfo {
                name: name.to_owned(),
                inputs,
                outputs: Vec::new(),
                macs_per_item: 0,
                precision: precision_of(&proto, false),
            },
            plans: RwLock::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
        };
        let (plan, decluttered) = prepared.plan_for(1, true)?;
        let mut info = prepared.info.clone();
        info.macs_per_item = decluttered.as_ref().map(|(m, _)| count_macs(m)).unwrap_or(0);
        // Per-channel convolutions run as int8 when the rewrites took every one of them.
        if decluttered.as_ref().is_some_and(|(_, all_int8)| *all_int8) {
            info.precision = precision_of(&proto, true);
        }
        let names = output_names(name, &proto, plan.model().output_outlets().map_or(0, |o| o.len()))?;
        // Named as the graph names them: tract's own node names change with every rewrite.
        for (ix, out_name) in names.into_iter().enumerate() {
            let fact = plan.model().output_fact(ix).map_err(|e| unsupported(tract_err(e)))?;
            let shape = fact
                .shape
                .as_concrete()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| unsupported(format!("output {out_name} is not [batch, fixed dims...]")))?;
            let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
                unsupported(format!("output {out_name} has element type {:?}", fact.datum_type))
            })?;
            info.outputs.push(TensorSpec { name: out_name, dtype, item_shape: shape[1..].to_vec() });
        }
        let prepared = TractModel { info, ..prepared };
        prepared.plans.write().insert(1, plan);
        Ok(Arc::new(prepared))
    }
}

#[derive(Debug)]
struct TractModel {
    template: InferenceModel,
    /// The file as tract was given it (QDQ folded): refusals name its nodes' ops.
    proto: ModelProto,
    rewrites: bool,
    info: ModelInfo,
    plans: RwLock<HashMap<usize, Arc<TypedRunnableModel>>>,
    states: Mutex<HashMap<usize, Vec<TypedSimpleState>>>,
}

/// A model's decluttered graph, and whether the rewrites left it no quantised convolution
/// for tract to lower to fp32.
type Decluttered = (TypedModel, bool);

impl TractModel {
    /// Plans the model for a concrete batch size. With `keep_decluttered`, also returns the
    /// decluttered (pre-optimisation) graph, whose ops report standard costs, and whether
    /// the rewrites left no quantised convolution to tract (which lowers per-channel ones
    /// to fp32).
    fn plan_for(
        &self,
        batch: usize,
        keep_decluttered: bool,
    ) -> Result<(Arc<TypedRunnableModel>, Option<Decluttered>), BackendError> {
        let fail =
            |e| BackendError::Unsupported { model: self.info.name.clone(), why: refusal(&self.proto, e) };
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
        let all_int8 = !typed.nodes().iter().any(|n| n.op_as::<Conv>().is_some_and(|c| c.q_params.is_some()));
        let plan = typed.into_optimized().map_err(fail)?.into_runnable().map_err(fail)?;
        Ok((plan, decluttered.map(|d| (d, all_int8))))
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
