//! The GPU backend: WGSL compute kernels driven by wgpu (Vulkan, Metal or DX12; lavapipe
//! on a machine without a GPU).
//!
//! Preparing parses the ONNX file with tract, declutters it with a symbolic batch, and maps
//! each node of tract's typed graph to a kernel step ([`import`], into a [`graph::Graph`]);
//! a node no kernel covers refuses the model, naming the node and op. Steps that can run as
//! one are then folded together ([`fuse`]). Weights go to the device once. Each batch
//! size gets a plan ([`plan`]): activation buffers and bind groups built the first time the
//! size is used and kept. A run writes the input, records every step into one compute pass
//! of one encoder, copies the outputs to one readback buffer, submits once and maps once.
//!
//! Int8 models (per-tensor QLinearConv / QLinearMatMul, as tract's typed graph holds them)
//! run as integers: 8-bit values, i32 accumulation, ties-to-even requantisation.

mod fuse;
mod graph;
mod import;
mod loader;
mod plan;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tract_onnx::prelude::{InferenceFact, InferenceModelExt, TDim, TypedModel, tvec};

use super::tract::onnx::{
    count_macs, datum_of, input_specs, onnx_op_type, output_names, parse_onnx, precision_of, refusal,
};
use super::{
    Backend, BackendError, BackendKind, ModelInfo, Precision, PrepareOptions, PreparedModel, TensorSpec,
    check_inputs,
};
use crate::tensor::{DType, Tensor};
use graph::{Data, Graph};
use plan::{Kernel, Kernels, Plan};

const NAME: &str = "wgpu";

/// An adapter's description, for logs and benchmark labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Graphics API in use (`Vulkan`, `Metal`, `Dx12`).
    pub api: String,
    /// True for a software rasteriser on the CPU (lavapipe): its timings are CPU timings.
    pub is_cpu: bool,
}

/// The device, its queue, the compiled kernels, and what went wrong with it.
pub(crate) struct Gpu {
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    kernels: Kernels,
    adapter: AdapterSummary,
    /// Set by the device-lost callback; every later call fails with it.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors outside any error scope; wgpu's default handler would panic instead.
    uncaptured: Arc<Mutex<Option<String>>>,
    max_binding: u64,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.adapter).finish_non_exhaustive()
    }
}

/// wgpu compute shaders on the first adapter the system offers.
#[derive(Debug, Clone)]
pub struct WgpuBackend {
    gpu: Arc<Gpu>,
}

fn device_err(why: impl Into<String>) -> BackendError {
    BackendError::Device { backend: NAME, why: why.into() }
}

impl WgpuBackend {
    /// Opens the default adapter (any of Vulkan, Metal, DX12; `VK_ICD_FILENAMES` and wgpu's
    /// own environment variables are honoured) with the adapter's own limits, and compiles
    /// the kernels. Fails with [`BackendError::Device`] saying why when there is no adapter.
    pub fn new() -> Result<WgpuBackend, BackendError> {
        let instance =
            ::wgpu::Instance::new(::wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        // Creating the instance loaded the Vulkan loader's layers; listing adapters next is
        // where one of them prints loader noise (see `loader`).
        loader::route_wayland_log_to_debug();
        let adapter = pollster::block_on(instance.request_adapter(&::wgpu::RequestAdapterOptions {
            power_preference: ::wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| device_err(format!("no adapter: {e}")))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&::wgpu::DeviceDescriptor {
            label: Some("cascade"),
            // The adapter's own limits: the defaults cap workgroup sizes and buffer bindings
            // below what even lavapipe offers.
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| device_err(format!("adapter {}: {e}", info.name)))?;
        let lost = Arc::new(Mutex::new(None));
        let lost_cb = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lost_cb.lock() = Some(format!("device lost ({reason:?}): {msg}"));
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: ::wgpu::Error| {
            sink.lock().get_or_insert_with(|| e.to_string());
        }));
        let scope = Scope::push(&device);
        let kernels = Kernels::new(&device);
        scope.pop().map_err(|e| device_err(format!("compiling the kernels: {e}")))?;
        let adapter = AdapterSummary {
            name: info.name.clone(),
            api: format!("{:?}", info.backend),
            is_cpu: info.device_type == ::wgpu::DeviceType::Cpu,
        };
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        Ok(WgpuBackend {
            gpu: Arc::new(Gpu { device, queue, kernels, adapter, lost, uncaptured, max_binding }),
        })
    }

    /// The process's shared backend: opened by the first call, then the same device for
    /// every caller (each device holds its own compiled kernels and driver threads). A
    /// failure is remembered too, so a machine without an adapter is probed once.
    pub fn shared() -> Result<WgpuBackend, BackendError> {
        static SHARED: std::sync::OnceLock<Result<WgpuBackend, String>> = std::sync::OnceLock::new();
        let opened = SHARED.get_or_init(|| {
            let opened = WgpuBackend::new().map_err(|e| match e {
                BackendError::Device { why, .. } => why,
                other => other.to_string(),
            });
            if let Ok(gpu) = &opened {
                let a = gpu.adapter();
                if a.is_cpu {
                    // lavapipe and the like run the kernels correctly but far slower than
                    // tract: worth knowing before reading a node's latencies.
                    tracing::warn!(adapter = %a.name, "wgpu runs on a CPU adapter; models on wgpu will be slower than on tract");
                } else {
                    tracing::info!(adapter = %a.name, api = %a.api, "wgpu device opened");
                }
            }
            opened
        });
        opened.clone().map_err(device_err)
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.gpu.adapter
    }
}

/// Error scopes for validation, out-of-memory and internal errors, popped together.
///
/// Why all three: pipeline failures can come back as `Internal`, not only `Validation`.
/// Scopes are per thread in wgpu, so a scope is pushed and popped within one call.
struct Scope {
    guards: Vec<::wgpu::ErrorScopeGuard>,
}

impl Scope {
    fn push(device: &::wgpu::Device) -> Scope {
        let guards = [
            ::wgpu::ErrorFilter::Validation,
            ::wgpu::ErrorFilter::OutOfMemory,
            ::wgpu::ErrorFilter::Internal,
        ]
        .into_iter()
        .map(|f| device.push_error_scope(f))
        .collect();
        Scope { guards }
    }

    fn pop(mut self) -> Result<(), String> {
        let mut first = None;
        // Innermost first, as scopes must be popped.
        while let Some(guard) = self.guards.pop() {
            if let Some(e) = pollster::block_on(guard.pop()) {
                first.get_or_insert_with(|| e.to_string());
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Gpu {
    /// Fails if the device was lost or reported an error outside a scope.
    fn healthy(&self) -> Result<(), BackendError> {
        if let Some(why) = self.lost.lock().clone() {
            return Err(device_err(why));
        }
        if let Some(why) = self.uncaptured.lock().take() {
            return Err(device_err(why));
        }
        Ok(())
    }
}

impl Backend for WgpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn prepare_with(
        &self,
        name: &str,
        onnx: &[u8],
        options: &PrepareOptions,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        let (proto, model) = parse_onnx(name, onnx, NAME)?;
        let inputs = input_specs(name, &model, &proto, options)?;
        let unsupported = |why: String| BackendError::Unsupported { model: name.to_owned(), why };
        if let Some(spec) = inputs.iter().find(|s| s.dtype != DType::F32) {
            return Err(unsupported(format!(
                "input {} is {}; the wgpu backend takes f32 inputs",
                spec.name, spec.dtype
            )));
        }
        // A symbolic batch keeps the batch axis in every fact, so ops read per item.
        let batch = TDim::from(model.symbols.sym("N"));
        let with_batch = |batch: TDim| -> Result<TypedModel, BackendError> {
            let mut m = model.clone();
            for (ix, spec) in inputs.iter().enumerate() {
                let mut shape = tvec![batch.clone()];
                shape.extend(spec.item_shape.iter().map(|&d| TDim::from(d)));
                m = m
                    .with_input_fact(ix, InferenceFact::dt_shape(datum_of(spec.dtype), shape))
                    .map_err(|e| unsupported(refusal(&proto, e)))?;
            }
            m.into_typed().and_then(|m| m.into_decluttered()).map_err(|e| unsupported(refusal(&proto, e)))
        };
        let typed = with_batch(batch.clone())?;
        let graph = import::import(&typed, &batch).map_err(|r| {
            tracing::debug!(model = name, node = %r.node, op = %r.op, why = %r.why, "wgpu refuses the model");
            BackendError::UnsupportedOp {
                model: name.to_owned(),
                node: r.node.clone(),
                // Name the op as the file does when the node maps back to an ONNX node.
                op: onnx_op_type(&proto, &r.node).unwrap_or(r.op),
                backend: NAME,
            }
        })?;
        let macs_per_item = with_batch(TDim::from(1)).map(|m| count_macs(&m)).unwrap_or(0);
        let precision = match (graph.int8, precision_of(&proto, false)) {
            (true, _) => Precision::Int8,
            (false, Precision::Int8AsFp32 | Precision::Int8) => Precision::Int8AsFp32,
            (false, Precision::Fp32) => Precision::Fp32,
        };
        let outputs = output_names(name, &proto, graph.outputs.len())?;
        Ok(Arc::new(self.load(name, inputs, outputs, graph, macs_per_item, precision)?))
    }
}

impl WgpuBackend {
    /// Uploads an imported graph, compiles its kernels, and runs batch 1 once, so a model
    /// the device cannot run fails here rather than on its first request.
    fn load(
        &self,
        name: &str,
        inputs: Vec<TensorSpec>,
        output_names: Vec<String>,
        graph: Graph,
        macs_per_item: u64,
        precision: Precision,
    ) -> Result<WgpuModel, BackendError> {
        let unsupported = |why: String| BackendError::Unsupported { model: name.to_owned(), why };
        // Named as the graph names them, not as tract's typed graph does.
        let outputs = graph
            .outputs
            .iter()
            .zip(output_names)
            .map(|((_, dims), name)| TensorSpec { name, dtype: DType::F32, item_shape: dims.clone() })
            .collect();
        let info = ModelInfo { name: name.to_owned(), inputs, outputs, macs_per_item, precision };

        self.gpu.healthy()?;
        let device = &self.gpu.device;
        let scope = Scope::push(device);
        let consts = graph.consts.iter().map(|c| upload(device, c)).collect();
        let kernels = graph.steps.iter().map(|s| self.gpu.kernels.for_step(device, s)).collect();
        scope.pop().map_err(|e| BackendError::Run {
            model: name.to_owned(),
            why: format!("uploading weights and compiling kernels: {e}"),
        })?;
        let largest = graph.values.iter().map(|v| v.per_item * 4).max().unwrap_or(4).max(4) as u64;
        // Batches bigger than this run in chunks, so no buffer exceeds a binding's limit.
        let max_batch = usize::try_from(self.gpu.max_binding / largest).unwrap_or(usize::MAX).clamp(1, 4096);
        let prepared = WgpuModel {
            gpu: self.gpu.clone(),
            info,
            graph,
            consts,
            kernels,
            max_batch,
            plans: Mutex::new(HashMap::new()),
        };
        // Plan and run batch 1 now, so a model the device cannot run fails at load.
        let zeros: Vec<Tensor> = prepared
            .info
            .inputs
            .iter()
            .map(|s| {
                let mut shape = vec![1];
                shape.extend(&s.item_shape);
                Tensor::from_f32(shape, &vec![0.0; s.item_shape.iter().product()])
            })
            .collect::<Result<_, _>>()
            .map_err(|e| unsupported(e.to_string()))?;
        prepared.run(&zeros)?;
        Ok(prepared)
    }
}

fn upload(device: &::wgpu::Device, data: &Data) -> ::wgpu::Buffer {
    use ::wgpu::util::DeviceExt;
    let bytes: &[u8] = match data {
        Data::F32(v) => bytemuck::cast_slice(v),
        Data::I32(v) => bytemuck::cast_slice(v),
    };
    // Empty bindings are invalid; a one-word buffer stands in.
    let padded;
    let contents = if bytes.is_empty() {
        padded = [0u8; 4];
        &padded[..]
    } else {
        bytes
    };
    device.create_buffer_init(&::wgpu::util::BufferInitDescriptor {
        label: Some("weights"),
        contents,
        usage: ::wgpu::BufferUsages::STORAGE,
    })
}

/// A model on the device: its steps, its weights, and a plan per batch size used so far.
struct WgpuModel {
    gpu: Arc<Gpu>,
    info: ModelInfo,
    graph: Graph,
    consts: Vec<::wgpu::Buffer>,
    /// The kernel of each step, specialised to its geometry.
    kernels: Vec<Kernel>,
    max_batch: usize,
    /// Each plan owns its activation buffers, so runs of one batch size take turns on it.
    plans: Mutex<HashMap<usize, Arc<Mutex<Plan>>>>,
}

impl fmt::Debug for WgpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgpuModel")
            .field("info", &self.info)
            .field("steps", &self.graph.steps.len())
            .field("adapter", &self.gpu.adapter.name)
            .finish_non_exhaustive()
    }
}

/// Plans kept per model: sizes 1 to 8 and the powers of two up to 4,096 make 17, so a
/// model never drops a plan unless the cap on chunk size changes that count.
const PLAN_CACHE: usize = 24;

impl WgpuModel {
    /// The plan serving `batch` items: batches up to 8 get a plan of their own size,
    /// larger ones share the plan of the next power of two. A node batching requests sees
    /// every size up to its maximum; this keeps the plans (and their buffers) few.
    fn plan(&self, batch: usize) -> Result<Arc<Mutex<Plan>>, BackendError> {
        let batch = if batch <= 8 { batch } else { batch.next_power_of_two().min(self.max_batch) };
        let mut plans = self.plans.lock();
        if let Some(p) = plans.get(&batch) {
            return Ok(p.clone());
        }
        if plans.len() >= PLAN_CACHE {
            plans.clear();
        }
        let device = &self.gpu.device;
        let scope = Scope::push(device);
        let plan = Plan::new(device, &self.kernels, &self.graph, &self.consts, batch);
        scope.pop().map_err(|e| BackendError::Run {
            model: self.info.name.clone(),
            why: format!("planning batch {batch}: {e}"),
        })?;
        let plan = Arc::new(Mutex::new(plan));
        plans.insert(batch, plan.clone());
        Ok(plan)
    }

    fn run_chunk(&self, inputs: &[&[u8]], batch: usize) -> Result<Vec<Vec<u8>>, BackendError> {
        let run_err = |why: String| BackendError::Run { model: self.info.name.clone(), why };
        let plan = self.plan(batch)?;
        let plan = plan.lock();
        let scope = Scope::push(&self.gpu.device);
        let result = plan.run(&self.gpu.device, &self.gpu.queue, inputs, batch);
        let scoped = scope.pop();
        self.gpu.healthy()?;
        scoped.map_err(run_err)?;
        result.map_err(run_err)
    }
}

impl PreparedModel for WgpuModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn computes_on_caller(&self) -> bool {
        // The caller submits work and waits for the device to finish it.
        false
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let batch = check_inputs(&self.info, inputs)?;
        self.gpu.healthy()?;
        let run_err = |why: String| BackendError::Run { model: self.info.name.clone(), why };
        let mut joined: Vec<Vec<u8>> = vec![Vec::new(); self.info.outputs.len()];
        for start in (0..batch).step_by(self.max_batch) {
            let n = self.max_batch.min(batch - start);
            let chunk: Vec<&[u8]> = inputs
                .iter()
                .map(|t| {
                    let item = t.data().len() / batch;
                    &t.data()[start * item..(start + n) * item]
                })
                .collect();
            for (all, part) in joined.iter_mut().zip(self.run_chunk(&chunk, n)?) {
                all.extend(part);
            }
        }
        self.info
            .outputs
            .iter()
            .zip(joined)
            .map(|(spec, bytes)| {
                let mut shape = vec![batch];
                shape.extend(&spec.item_shape);
                Tensor::new(DType::F32, shape, bytes).map_err(|e| run_err(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reference::{ReferenceModel, default_models_dir};
    use tract_onnx::prelude::DatumType;

    #[test]
    fn reference_models_import_with_fused_bias_and_relu() {
        for key in ReferenceModel::ALL {
            let bytes = std::fs::read(key.path(&default_models_dir())).unwrap();
            let (_, model) = parse_onnx(key.key(), &bytes, NAME).unwrap();
            let batch = TDim::from(model.symbols.sym("N"));
            let typed = model
                .with_input_fact(
                    0,
                    InferenceFact::dt_shape(
                        DatumType::F32,
                        tvec![batch.clone(), 1.into(), 28.into(), 28.into()],
                    ),
                )
                .unwrap()
                .into_typed()
                .unwrap()
                .into_decluttered()
                .unwrap();
            let g = import::import(&typed, &batch).unwrap();
            let count = |f: fn(&graph::Step) -> bool| g.steps.iter().filter(|s| f(s)).count();
            let relu_fused = count(|s| {
                matches!(s, graph::Step::Conv { relu: true, .. } | graph::Step::MatMul { relu: true, .. })
            });
            let elementwise = count(|s| matches!(s, graph::Step::Elementwise { .. }));
            match key {
                ReferenceModel::EdgeInt8 => {
                    assert!(g.int8);
                    // Quantize, lookup, dequantize and bias add are folded into the int8
                    // steps, the first pool into its conv (the second carries the lookup).
                    assert_eq!((relu_fused, elementwise, g.steps.len()), (0, 0, 4), "{:#?}", g.steps);
                }
                // QDQ runs through the generic path: fp32 convolutions between quantise and
                // dequantise steps, exactly as the file reads literally.
                ReferenceModel::EdgeInt8Qdq => assert!(!g.int8, "{:#?}", g.steps),
                // Conv+Relu+Pool in one step each, then the matmul.
                ReferenceModel::EdgeFp32 => {
                    assert_eq!(
                        (relu_fused, elementwise, g.int8, g.steps.len()),
                        (2, 0, false, 3),
                        "{:#?}",
                        g.steps
                    )
                }
                ReferenceModel::CentralFp32 => {
                    assert_eq!(
                        (relu_fused, elementwise, g.int8, g.steps.len()),
                        (4, 0, false, 5),
                        "{:#?}",
                        g.steps
                    )
                }
            }
        }
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0).collect()
    }

    /// Ops and geometries the reference models do not use — strided, dilated, unevenly
    /// padded convolution, padded 3x3/s2 pooling, a reshape, softmax — run on wgpu and on
    /// tract from the same typed graph, at batch 3.
    #[test]
    fn general_ops_match_tract() {
        use tract_onnx::prelude::{IntoRunnable, IntoTValue, Tensor as TTensor, TypedFact};
        use tract_onnx::tract_core::internal::{DimLike, SpecialOps};
        use tract_onnx::tract_core::ops::change_axes::AxisOp;
        use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
        use tract_onnx::tract_core::ops::einsum::EinSum;
        use tract_onnx::tract_core::ops::math::{add, max};
        use tract_onnx::tract_core::ops::nn::{DataFormat, Softmax, SoftmaxKind};

        let Ok(gpu) = WgpuBackend::shared() else {
            assert!(std::env::var_os("CI").is_none(), "CI is set but there is no wgpu adapter");
            eprintln!("skipping: no wgpu adapter (CI is unset)");
            return;
        };
        let mut m = TypedModel::default();
        let n = TDim::from(m.symbols.sym("N"));
        let x = m
            .add_source(
                "x",
                TypedFact::dt_shape(DatumType::F32, tvec![n.clone(), 3.into(), 9.into(), 11.into()]),
            )
            .unwrap();
        let konst = |m: &mut TypedModel, name: &str, shape: &[usize], seed| {
            let v = values(shape.iter().product(), seed);
            m.add_const(name, TTensor::from_shape(shape, &v).unwrap()).unwrap()
        };
        let w = konst(&mut m, "w", &[5, 3, 3, 2], 1);
        let b = konst(&mut m, "b", &[5], 2);
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 2],
                padding: PaddingSpec::Explicit(tvec![1, 0], tvec![2, 1]),
                dilations: Some(tvec![2, 1]),
                strides: Some(tvec![2, 3]),
                input_channels: 3,
                output_channels: 5,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = m.wire_node("conv", conv, &[x, w, b]).unwrap()[0];
        let zero = m.add_const("zero", TTensor::from_shape(&[1, 1, 1, 1], &[0f32]).unwrap()).unwrap();
        let y = m.wire_node("relu", max(), &[y, zero]).unwrap()[0];
        let pool = MaxPool {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: 5,
                output_channels: 5,
            },
            with_index_outputs: None,
        };
        let y = m.wire_node("pool", pool, &[y]).unwrap()[0];
        let shape = m.outlet_fact(y).unwrap().shape.to_tvec();
        // conv: 9 rows padded 1+2, dilated window 5, stride 2 -> 4; 11 columns padded 0+1,
        // window 2, stride 3 -> 4; pool 3x3/s2 padded 1+1 -> 2 x 2.
        assert_eq!(shape[1..], [TDim::from(5), 2.into(), 2.into()]);
        let k: usize = shape[1..].iter().map(|d| d.to_usize().unwrap()).product();
        let flat = AxisOp::Reshape(1, shape[1..].into(), tvec![TDim::from(k)]);
        let y = m.wire_node("flatten", flat, &[y]).unwrap()[0];
        let wm = konst(&mut m, "wm", &[k, 7], 3);
        let einsum = EinSum::new("mk,kn->mn".parse().unwrap(), DatumType::F32);
        let y = m.wire_node("matmul", einsum, &[y, wm]).unwrap()[0];
        let bm = konst(&mut m, "bm", &[1, 7], 4);
        let y = m.wire_node("bias", add(), &[y, bm]).unwrap()[0];
        let softmax = Softmax { axes: tvec![1], quant_output_dt: None, kind: SoftmaxKind::Softmax };
        let y = m.wire_node("softmax", softmax, &[y]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();

        let graph = import::import(&m, &n).unwrap();
        assert!(matches!(graph.steps[0], graph::Step::Conv { relu: true, .. }), "{:#?}", graph.steps);
        let inputs = vec![TensorSpec { name: "x".into(), dtype: DType::F32, item_shape: vec![3, 9, 11] }];
        let model = gpu.load("ops", inputs, vec!["y".into()], graph, 0, Precision::Fp32).unwrap();
        let input = values(3 * 3 * 9 * 11, 5);
        let got =
            model.run(&[Tensor::from_f32(vec![3, 3, 9, 11], &input).unwrap()]).unwrap()[0].to_f32().unwrap();

        let plan = m.into_optimized().unwrap().into_runnable().unwrap();
        let want =
            plan.run(tvec![TTensor::from_shape(&[3, 3, 9, 11], &input).unwrap().into_tvalue()]).unwrap();
        let want = want[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<_>>();
        assert_eq!(got.len(), 3 * 7);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5, "output {i}: wgpu {a}, tract {b}");
        }
    }
}
