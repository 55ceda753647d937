// y[m, n] = sum_k x[m, k] * w[k, n] + bias[n], optionally Relu; fp32, one invocation per
// output element. x is the batch's activations (any NCHW tensor flattened per item).

struct Params { total: u32, k: u32, n: u32, relu: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let n = i % p.n;
    let m = i / p.n;
    var acc = bias[n];
    for (var k = 0u; k < p.k; k++) {
        acc += x[m * p.k + k] * wt[k * p.n + n];
    }
    if (p.relu != 0u) { acc = max(acc, 0.0); }
    y[i] = acc;
}
