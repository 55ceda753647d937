// y[m, n] = sum_k x[m, k] * w[k, n] + bias[n], optionally Relu; fp32. One invocation
// computes four adjacent columns of one row, so each x value is loaded once per four MACs.
// Weights are packed [K][N/4] x vec4 (zero-padded), bias as vec4 per block. x is the
// batch's activations (any per-item tensor, flattened).

override K: u32;
override N: u32;
override RELU: bool;

struct Params { total: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let blocks = (N + 3u) / 4u;
    let nb = i % blocks;
    let m = i / blocks;
    var acc = bias[nb];
    for (var k = 0u; k < K; k++) {
        acc += x[m * K + k] * wt[k * blocks + nb];
    }
    if (RELU) { acc = max(acc, vec4<f32>(0.0)); }
    for (var j = 0u; j < 4u; j++) {
        if (nb * 4u + j < N) { y[m * N + nb * 4u + j] = acc[j]; }
    }
}
