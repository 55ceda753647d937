//! Per-batch plans: activation buffers, parameter buffers and bind groups, built once per
//! batch size, and the run that records them all into one compute pass.

use ::wgpu::util::DeviceExt;
use ::wgpu::{BindGroup, BindGroupLayout, Buffer, BufferUsages, ComputePipeline, Device, PollType, Queue};

use super::import::{Elem, EltOp, Graph, Requant, Step, Window};

/// Invocations per workgroup in every kernel (`@workgroup_size(64)`).
const WORKGROUP: u32 = 64;
/// Workgroups per dispatch dimension allowed by WebGPU's default limits.
const MAX_GROUPS: u32 = 65_535;

/// A compiled kernel and the bind group layout it was built with.
struct Kernel {
    pipeline: ComputePipeline,
    layout: BindGroupLayout,
}

/// Every kernel, compiled once per device.
pub(crate) struct Kernels {
    conv_f32: Kernel,
    conv_q8: Kernel,
    matmul_f32: Kernel,
    matmul_q8: Kernel,
    maxpool: Kernel,
    elementwise: Kernel,
    softmax: Kernel,
}

/// Explicit layouts: binding 0 the parameters, then `reads` read-only buffers, then the
/// output. (Automatic layouts would drop bindings a kernel happens not to use.)
fn layout(device: &Device, reads: u32) -> BindGroupLayout {
    let storage = |binding, read_only| ::wgpu::BindGroupLayoutEntry {
        binding,
        visibility: ::wgpu::ShaderStages::COMPUTE,
        ty: ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![::wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: ::wgpu::ShaderStages::COMPUTE,
        ty: ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }];
    entries.extend((1..=reads).map(|b| storage(b, true)));
    entries.push(storage(reads + 1, false));
    device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
}

fn kernel(device: &Device, name: &str, source: &str, reads: u32) -> Kernel {
    let module = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: ::wgpu::ShaderSource::Wgsl(source.into()),
    });
    let layout = layout(device, reads);
    let pipeline_layout = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
        label: Some(name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    Kernel { pipeline, layout }
}

impl Kernels {
    /// Compiles every kernel (call inside an error scope: failures are reported there).
    pub(crate) fn new(device: &Device) -> Kernels {
        Kernels {
            conv_f32: kernel(device, "conv_f32", include_str!("kernels/conv_f32.wgsl"), 3),
            conv_q8: kernel(device, "conv_q8", include_str!("kernels/conv_q8.wgsl"), 3),
            matmul_f32: kernel(device, "matmul_f32", include_str!("kernels/matmul_f32.wgsl"), 3),
            matmul_q8: kernel(device, "matmul_q8", include_str!("kernels/matmul_q8.wgsl"), 3),
            maxpool: kernel(device, "maxpool", include_str!("kernels/maxpool.wgsl"), 1),
            elementwise: kernel(device, "elementwise", include_str!("kernels/elementwise.wgsl"), 2),
            softmax: kernel(device, "softmax", include_str!("kernels/softmax.wgsl"), 1),
        }
    }
}

/// One recorded dispatch.
struct Dispatch {
    pipeline: ComputePipeline,
    bind_group: BindGroup,
    groups: (u32, u32),
}

/// Everything one batch size needs on the device.
pub(crate) struct Plan {
    batch: usize,
    dispatches: Vec<Dispatch>,
    values: Vec<Buffer>,
    inputs: Vec<(usize, u64)>,
    /// Output value, its offset in `readback` and its byte length.
    outputs: Vec<(usize, u64, u64)>,
    readback: Buffer,
}

/// Workgroups for `total` invocations, spread over two dimensions past 65,535 groups.
fn groups(total: usize) -> (u32, u32) {
    let needed = u32::try_from(total.div_ceil(WORKGROUP as usize)).unwrap_or(u32::MAX).max(1);
    let x = needed.min(MAX_GROUPS);
    (x, needed.div_ceil(x))
}

fn u(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Parameter words for a window kernel: total, then the geometry, then `last`.
fn window_words(total: usize, w: &Window, channels_in: bool, last: u32) -> Vec<u32> {
    let mut words = vec![u(total)];
    if channels_in {
        words.extend([w.ci, w.h, w.w, w.co, w.oh, w.ow].map(u));
    } else {
        words.extend([w.ci, w.h, w.w, w.oh, w.ow].map(u));
    }
    words.extend([w.kh, w.kw, w.sh, w.sw, w.ph, w.pw, w.dh, w.dw].map(u));
    words.push(last);
    words
}

fn requant_words(q: &Requant) -> [u32; 6] {
    [q.x_zp as u32, q.w_zp as u32, q.y_zp as u32, q.mult.to_bits(), q.lo as u32, q.hi as u32]
}

impl Plan {
    /// Allocates activations for `batch` items and records the bind groups of every step.
    pub(crate) fn new(
        device: &Device,
        kernels: &Kernels,
        graph: &Graph,
        consts: &[Buffer],
        batch: usize,
    ) -> Plan {
        let values: Vec<Buffer> = graph
            .values
            .iter()
            .map(|v| {
                device.create_buffer(&::wgpu::BufferDescriptor {
                    label: Some("activation"),
                    size: (v.per_item * batch * 4).max(4) as u64,
                    usage: BufferUsages::STORAGE | BufferUsages::COPY_DST | BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            })
            .collect();
        // Bound where a kernel's table or constant is not used.
        let dummy = device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("unused"),
            size: 4,
            usage: BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut dispatches = Vec::with_capacity(graph.steps.len());
        let mut add =
            |kernel: &Kernel, mut words: Vec<u32>, buffers: &[&Buffer], total: usize| {
                // Uniform structs are sized in 16-byte steps.
                words.resize(words.len().div_ceil(4) * 4, 0);
                let params = device.create_buffer_init(&::wgpu::util::BufferInitDescriptor {
                    label: Some("params"),
                    contents: bytemuck::cast_slice(&words),
                    usage: BufferUsages::UNIFORM,
                });
                let mut entries =
                    vec![::wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
                entries.extend(buffers.iter().enumerate().map(|(i, b)| ::wgpu::BindGroupEntry {
                    binding: u(i + 1),
                    resource: b.as_entire_binding(),
                }));
                let bind_group = device.create_bind_group(&::wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &kernel.layout,
                    entries: &entries,
                });
                dispatches.push(Dispatch {
                    pipeline: kernel.pipeline.clone(),
                    bind_group,
                    groups: groups(total),
                });
            };
        for step in &graph.steps {
            match step {
                Step::Conv { x, y, weights, bias, win, relu, quant } => {
                    let total = batch * graph.values[*y].per_item;
                    let mut words = window_words(total, win, true, u32::from(*relu));
                    let kernel = match quant {
                        Some(q) => {
                            words.extend(requant_words(q));
                            &kernels.conv_q8
                        }
                        None => &kernels.conv_f32,
                    };
                    add(kernel, words, &[&values[*x], &consts[*weights], &consts[*bias], &values[*y]], total);
                }
                Step::MatMul { x, y, weights, bias, k, n, relu, quant } => {
                    let total = batch * n;
                    let (kernel, words) = match quant {
                        Some(q) => {
                            let mut words = vec![u(total), u(*k), u(*n), 0];
                            words.extend(requant_words(q));
                            (&kernels.matmul_q8, words)
                        }
                        None => (&kernels.matmul_f32, vec![u(total), u(*k), u(*n), u32::from(*relu)]),
                    };
                    add(kernel, words, &[&values[*x], &consts[*weights], &consts[*bias], &values[*y]], total);
                }
                Step::MaxPool { x, y, win } => {
                    let total = batch * graph.values[*y].per_item;
                    let is_float = u32::from(graph.values[*x].elem == Elem::F32);
                    let words = window_words(total, win, false, is_float);
                    add(&kernels.maxpool, words, &[&values[*x], &values[*y]], total);
                }
                Step::Elementwise { x, y, op, aux } => {
                    let total = batch * graph.values[*y].per_item;
                    let (code, zp, scale, lo, hi, len) = match *op {
                        EltOp::Quantize { scale, zp, lo, hi } => (0, zp, scale, lo, hi, 1),
                        EltOp::Dequantize { scale, zp } => (1, zp, scale, 0, 0, 1),
                        EltOp::Lookup => (2, 0, 1.0, 0, 0, 1),
                        EltOp::AddBroadcast { len } => (3, 0, 1.0, 0, 0, u(len)),
                        EltOp::Relu => (4, 0, 1.0, 0, 0, 1),
                    };
                    let words =
                        vec![u(total), code, zp as u32, f32::to_bits(scale), lo as u32, hi as u32, len];
                    let aux = aux.map_or(&dummy, |a| &consts[a]);
                    add(&kernels.elementwise, words, &[&values[*x], aux, &values[*y]], total);
                }
                Step::Softmax { x, y, len } => {
                    let rows = batch * graph.values[*y].per_item / (*len).max(1);
                    add(&kernels.softmax, vec![u(rows), u(*len)], &[&values[*x], &values[*y]], rows);
                }
            }
        }
        let inputs =
            graph.inputs.iter().map(|&v| (v, (graph.values[v].per_item * batch * 4) as u64)).collect();
        let mut offset = 0;
        let outputs = graph
            .outputs
            .iter()
            .map(|(v, _)| {
                let len = (graph.values[*v].per_item * batch * 4) as u64;
                let out = (*v, offset, len);
                offset += len;
                out
            })
            .collect();
        let readback = device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("readback"),
            size: offset.max(4),
            usage: BufferUsages::MAP_READ | BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Plan { batch, dispatches, values, inputs, outputs, readback }
    }

    /// Writes `inputs` (little-endian f32 bytes, one slice per model input), runs every step
    /// in one pass and one submission, and reads every output back with one map.
    pub(crate) fn run(
        &self,
        device: &Device,
        queue: &Queue,
        inputs: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, String> {
        for (&(value, len), bytes) in self.inputs.iter().zip(inputs) {
            if bytes.len() as u64 != len {
                return Err(format!("batch {}: input of {} bytes, expected {len}", self.batch, bytes.len()));
            }
            queue.write_buffer(&self.values[value], 0, bytes);
        }
        let mut encoder =
            device.create_command_encoder(&::wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
                label: Some("model"),
                timestamp_writes: None,
            });
            for d in &self.dispatches {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
            }
        }
        for &(value, offset, len) in &self.outputs {
            encoder.copy_buffer_to_buffer(&self.values[value], 0, &self.readback, offset, len);
        }
        let submission = queue.submit([encoder.finish()]);
        let slice = self.readback.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(::wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(PollType::Wait { submission_index: Some(submission), timeout: None })
            .map_err(|e| format!("waiting for the device: {e}"))?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("reading results back: {e}")),
            Err(_) => return Err("reading results back: the map did not complete".into()),
        }
        let result = {
            let view = slice.get_mapped_range().map_err(|e| format!("reading results back: {e}"))?;
            self.outputs
                .iter()
                .map(|&(_, offset, len)| view[offset as usize..(offset + len) as usize].to_vec())
                .collect()
        };
        self.readback.unmap();
        Ok(result)
    }
}
