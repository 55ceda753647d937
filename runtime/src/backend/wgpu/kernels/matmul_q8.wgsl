// Quantised matmul (QLinearMatMul, per-tensor): 8-bit values held one per i32, i32
// accumulation, requantised with ties-to-even rounding.

struct Params {
    total: u32, k: u32, n: u32, pad0: u32,
    xzp: i32, wzp: i32, yzp: i32, mult: f32,
    lo: i32, hi: i32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<i32>;
@group(0) @binding(2) var<storage, read> wt: array<i32>;
@group(0) @binding(3) var<storage, read> bias: array<i32>;
@group(0) @binding(4) var<storage, read_write> y: array<i32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let n = i % p.n;
    let m = i / p.n;
    var acc = bias[n];
    for (var k = 0u; k < p.k; k++) {
        acc += (x[m * p.k + k] - p.xzp) * (wt[k * p.n + n] - p.wzp);
    }
    let q = clamp(round(f32(acc) * p.mult) + f32(p.yzp), f32(p.lo), f32(p.hi));
    y[i] = i32(q);
}
