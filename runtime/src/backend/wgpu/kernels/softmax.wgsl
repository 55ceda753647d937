// Softmax over the last axis, fp32; one invocation per row (rows are short: class scores).

struct Params { rows: u32, len: u32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let r = g.x + g.y * nw.x * 64u;
    if (r >= p.rows) { return; }
    let base = r * p.len;
    var m = -3.402823e38;
    for (var j = 0u; j < p.len; j++) { m = max(m, x[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) { s += exp(x[base + j] - m); }
    for (var j = 0u; j < p.len; j++) { y[base + j] = exp(x[base + j] - m) / s; }
}
