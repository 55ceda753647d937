//! Per-batch plans: activation buffers, parameter buffers and bind groups, built once per
//! batch size, and the run that records them all into one compute pass.

use ::wgpu::util::DeviceExt;
use std::collections::HashMap;

use ::wgpu::{
    BindGroup, BindGroupLayout, Buffer, BufferUsages, ComputePipeline, Device, PipelineLayout, PollType,
    Queue, ShaderModule,
};
use parking_lot::Mutex;

use super::graph::{Elem, EltOp, Graph, Int8Op, Quantize, Step, Window};

/// Invocations per workgroup in every kernel (`@workgroup_size(64)`).
const WORKGROUP: u32 = 64;
/// How long to wait for a readback's map callback once its submission is done.
const MAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Workgroups per dispatch dimension allowed by WebGPU's default limits.
const MAX_GROUPS: u32 = 65_535;

/// A compiled kernel and the bind group layout it was built with.
#[derive(Clone)]
pub(crate) struct Kernel {
    pipeline: ComputePipeline,
    layout: BindGroupLayout,
}

/// A shader whose geometry is fixed per layer by override constants: one pipeline per
/// distinct set of constants, compiled at prepare and shared by every model on the device.
struct Specialised {
    name: &'static str,
    module: ShaderModule,
    layout: BindGroupLayout,
    pipeline_layout: PipelineLayout,
}

/// Specialised pipelines by shader name and constants (as f64 bits).
type PipelineCache = HashMap<(&'static str, Vec<(&'static str, u64)>), ComputePipeline>;

/// Every kernel, compiled once per device.
pub(crate) struct Kernels {
    conv_f32: Specialised,
    conv_q8: Specialised,
    matmul_f32: Specialised,
    matmul_q8: Specialised,
    maxpool: Kernel,
    elementwise: Kernel,
    softmax: Kernel,
    cache: Mutex<PipelineCache>,
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

fn specialised(device: &Device, name: &'static str, source: &str, reads: u32) -> Specialised {
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
    Specialised { name, module, layout, pipeline_layout }
}

impl Specialised {
    fn pipeline(&self, device: &Device, constants: &[(&str, f64)]) -> ComputePipeline {
        device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
            label: Some(self.name),
            layout: Some(&self.pipeline_layout),
            module: &self.module,
            entry_point: Some("main"),
            compilation_options: ::wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        })
    }
}

fn kernel(device: &Device, name: &'static str, source: &str, reads: u32) -> Kernel {
    let s = specialised(device, name, source, reads);
    Kernel { pipeline: s.pipeline(device, &[]), layout: s.layout }
}

impl Kernels {
    /// Compiles every kernel (call inside an error scope: failures are reported there).
    pub(crate) fn new(device: &Device) -> Kernels {
        Kernels {
            conv_f32: specialised(device, "conv_f32", include_str!("kernels/conv_f32.wgsl"), 3),
            conv_q8: specialised(device, "conv_q8", include_str!("kernels/conv_q8.wgsl"), 3),
            matmul_f32: specialised(device, "matmul_f32", include_str!("kernels/matmul_f32.wgsl"), 3),
            matmul_q8: specialised(device, "matmul_q8", include_str!("kernels/matmul_q8.wgsl"), 3),
            maxpool: kernel(device, "maxpool", include_str!("kernels/maxpool.wgsl"), 2),
            elementwise: kernel(device, "elementwise", include_str!("kernels/elementwise.wgsl"), 2),
            softmax: kernel(device, "softmax", include_str!("kernels/softmax.wgsl"), 1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The kernel of a step: its shader specialised to the step's geometry (compiled on
    /// first use; call inside an error scope), or the generic one.
    pub(crate) fn for_step(&self, device: &Device, step: &Step) -> Kernel {
        let (shader, constants) = match step {
            Step::Conv { win, relu, quant, pool, .. } => {
                // Without a fused pool, a 1x1/s1 "pool" over the conv output.
                let pw =
                    pool.unwrap_or(Window { kh: 1, kw: 1, sh: 1, sw: 1, oh: win.oh, ow: win.ow, ..*win });
                let mut c: Vec<(&'static str, f64)> = [
                    ("CI", win.ci),
                    ("H", win.h),
                    ("W", win.w),
                    ("CO", win.co),
                    ("OH", win.oh),
                    ("OW", win.ow),
                    ("KH", win.kh),
                    ("KW", win.kw),
                    ("SH", win.sh),
                    ("SW", win.sw),
                    ("PH", win.ph),
                    ("PW", win.pw),
                    ("DH", win.dh),
                    ("DW", win.dw),
                    ("PKH", pw.kh),
                    ("PKW", pw.kw),
                    ("PSH", pw.sh),
                    ("PSW", pw.sw),
                    ("POH", pw.oh),
                    ("POW", pw.ow),
                ]
                .into_iter()
                .map(|(k, v)| (k, v as f64))
                .collect();
                match quant {
                    Some(q) => {
                        c.extend(requant_constants(q));
                        (&self.conv_q8, c)
                    }
                    None => {
                        c.push(("RELU", f64::from(u8::from(*relu))));
                        (&self.conv_f32, c)
                    }
                }
            }
            Step::MatMul { k, n, relu, quant, .. } => {
                let mut c = vec![("K", *k as f64), ("N", *n as f64)];
                match quant {
                    Some(q) => {
                        c.extend(requant_constants(q));
                        c.push(("FP32_BIAS", f64::from(u8::from(q.fp32_bias))));
                        (&self.matmul_q8, c)
                    }
                    None => {
                        c.push(("RELU", f64::from(u8::from(*relu))));
                        (&self.matmul_f32, c)
                    }
                }
            }
            Step::MaxPool { .. } => return self.maxpool.clone(),
            Step::Elementwise { .. } => return self.elementwise.clone(),
            Step::Softmax { .. } => return self.softmax.clone(),
        };
        let key = (shader.name, constants.iter().map(|&(k, v)| (k, v.to_bits())).collect());
        let pipeline =
            self.cache.lock().entry(key).or_insert_with(|| shader.pipeline(device, &constants)).clone();
        Kernel { pipeline, layout: shader.layout.clone() }
    }
}

/// Requantisation constants, and those of the fused prologue and epilogues (neutral values
/// when not fused: every override must have a value).
fn requant_constants(q: &Int8Op) -> Vec<(&'static str, f64)> {
    let qin = q.quantize_input.unwrap_or(Quantize { scale: 1.0, zp: 0, lo: 0, hi: 0 });
    let (dq_scale, dq_zp) = q.dequantize.unwrap_or((1.0, 0));
    vec![
        ("XZP", f64::from(q.requant.x_zero)),
        ("YZP", f64::from(q.requant.y_zero)),
        ("MULT", f64::from(q.requant.mult)),
        ("LO", f64::from(q.requant.lo)),
        ("HI", f64::from(q.requant.hi)),
        ("QIN", f64::from(u8::from(q.quantize_input.is_some()))),
        ("QIN_SCALE", f64::from(qin.scale)),
        ("QIN_ZP", f64::from(qin.zp)),
        ("QIN_LO", f64::from(qin.lo)),
        ("QIN_HI", f64::from(qin.hi)),
        ("DEQ", f64::from(u8::from(q.dequantize.is_some()))),
        ("DQ_SCALE", f64::from(dq_scale)),
        ("DQ_ZP", f64::from(dq_zp)),
    ]
}

/// One recorded dispatch.
struct Dispatch {
    pipeline: ComputePipeline,
    bind_group: BindGroup,
    /// Invocations per batch item: a run of n items dispatches n times this many.
    per_item: usize,
}

/// Everything a run of up to `capacity` items needs on the device.
///
/// Every kernel works item by item (the batch is the outermost axis and no op mixes
/// items), so a plan serves any batch up to its capacity: it writes, computes and reads
/// back only the first n items; the rest of each buffer is left alone.
pub(crate) struct Plan {
    capacity: usize,
    dispatches: Vec<Dispatch>,
    values: Vec<Buffer>,
    /// Input values and their bytes per item.
    inputs: Vec<(usize, u64)>,
    /// Output values and their bytes per item.
    outputs: Vec<(usize, u64)>,
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

/// Parameter words of the pooling kernel: total, the geometry, then `is_float`.
fn window_words(total: usize, w: &Window, is_float: u32) -> Vec<u32> {
    let mut words = vec![u(total)];
    words.extend([w.ci, w.h, w.w, w.oh, w.ow, w.kh, w.kw, w.sh, w.sw, w.ph, w.pw, w.dh, w.dw].map(u));
    words.push(is_float);
    words
}

impl Plan {
    /// Allocates activations for `batch` items (the capacity) and records the bind groups
    /// of every step.
    pub(crate) fn new(
        device: &Device,
        kernels: &[Kernel],
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
                // Every step's invocation count is a whole multiple of the batch.
                dispatches.push(Dispatch {
                    pipeline: kernel.pipeline.clone(),
                    bind_group,
                    per_item: total / batch.max(1),
                });
            };
        for (step, kernel) in graph.steps.iter().zip(kernels) {
            match step {
                Step::Conv { x, y, weights, bias, win, pool, .. } => {
                    let (oh, ow) = pool.map_or((win.oh, win.ow), |p| (p.oh, p.ow));
                    let total = batch * win.co.div_ceil(4) * oh * ow;
                    add(
                        kernel,
                        vec![u(total)],
                        &[&values[*x], &consts[*weights], &consts[*bias], &values[*y]],
                        total,
                    );
                }
                Step::MatMul { x, y, weights, bias, n, .. } => {
                    let total = batch * n.div_ceil(4);
                    add(
                        kernel,
                        vec![u(total)],
                        &[&values[*x], &consts[*weights], &consts[*bias], &values[*y]],
                        total,
                    );
                }
                Step::MaxPool { x, y, win, lut } => {
                    let total = batch * graph.values[*y].per_item;
                    let is_float = u32::from(graph.values[*x].elem == Elem::F32);
                    let mut words = window_words(total, win, is_float);
                    words.push(u32::from(lut.is_some()));
                    let table = lut.map_or(&dummy, |t| &consts[t]);
                    add(kernel, words, &[&values[*x], table, &values[*y]], total);
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
                    add(kernel, words, &[&values[*x], aux, &values[*y]], total);
                }
                Step::Softmax { x, y, len } => {
                    let rows = batch * graph.values[*y].per_item / (*len).max(1);
                    add(kernel, vec![u(rows), u(*len)], &[&values[*x], &values[*y]], rows);
                }
            }
        }
        let bytes = |v: usize| (graph.values[v].per_item * 4) as u64;
        let inputs = graph.inputs.iter().map(|&v| (v, bytes(v))).collect();
        let outputs: Vec<(usize, u64)> = graph.outputs.iter().map(|&(v, _)| (v, bytes(v))).collect();
        let readback = device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (outputs.iter().map(|o| o.1).sum::<u64>() * batch as u64).max(4),
            usage: BufferUsages::MAP_READ | BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Plan { capacity: batch, dispatches, values, inputs, outputs, readback }
    }

    /// Writes `inputs` for `n` items (little-endian f32 bytes, one slice per model input),
    /// runs every step in one pass and one submission, and reads every output back with
    /// one map.
    pub(crate) fn run(
        &self,
        device: &Device,
        queue: &Queue,
        inputs: &[&[u8]],
        n: usize,
    ) -> Result<Vec<Vec<u8>>, String> {
        if n == 0 || n > self.capacity {
            return Err(format!("batch {n} does not fit a plan for {} items", self.capacity));
        }
        for (&(value, per_item), bytes) in self.inputs.iter().zip(inputs) {
            if bytes.len() as u64 != per_item * n as u64 {
                return Err(format!(
                    "batch {n}: input of {} bytes, expected {}",
                    bytes.len(),
                    per_item * n as u64
                ));
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
                let (x, y) = groups(n * d.per_item);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        let mut spans = Vec::with_capacity(self.outputs.len());
        let mut offset = 0;
        for &(value, per_item) in &self.outputs {
            let len = per_item * n as u64;
            encoder.copy_buffer_to_buffer(&self.values[value], 0, &self.readback, offset, len);
            spans.push((offset, len));
            offset += len;
        }
        let submission = queue.submit([encoder.finish()]);
        let slice = self.readback.slice(..offset);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(::wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(PollType::Wait { submission_index: Some(submission), timeout: None })
            .map_err(|e| format!("waiting for the device: {e}"))?;
        // The submission is done, but when several threads poll, another thread's poll may
        // be the one firing our map callback: wait for it rather than assume it ran.
        let mut mapped = rx.recv_timeout(MAP_WAIT);
        for _ in 0..3 {
            if mapped.is_ok() {
                break;
            }
            device.poll(PollType::Poll).map_err(|e| format!("waiting for the device: {e}"))?;
            mapped = rx.recv_timeout(MAP_WAIT);
        }
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("reading results back: {e}")),
            Err(_) => return Err("reading results back: the map did not complete".into()),
        }
        let result = {
            let view = slice.get_mapped_range().map_err(|e| format!("reading results back: {e}"))?;
            spans
                .iter()
                .map(|&(offset, len)| view[offset as usize..(offset + len) as usize].to_vec())
                .collect()
        };
        self.readback.unmap();
        Ok(result)
    }
}
