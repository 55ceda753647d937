// Quantised matmul (QLinearMatMul, per-tensor): 8-bit values held one per i32, i32
// accumulation, requantised with ties-to-even rounding. Layout and blocking as
// matmul_f32.wgsl; the weights arrive with their zero point already removed. Fused when
// the graph allows: QIN quantises an fp32 input on load, DEQ dequantises the output to fp32,
// and FP32_BIAS then adds an fp32 bias stored after the int bias (as f32 bits).
// Activations are bound as raw 32-bit words: i32 values, or f32 where fused.

override K: u32;
override N: u32;
override XZP: i32;
override YZP: i32;
override MULT: f32;
override LO: i32;
override HI: i32;
override QIN: bool;
override QIN_SCALE: f32;
override QIN_ZP: i32;
override QIN_LO: i32;
override QIN_HI: i32;
override DEQ: bool;
override DQ_SCALE: f32;
override DQ_ZP: i32;
override FP32_BIAS: bool;

struct Params { total: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<i32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<i32>>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

fn load(at: u32) -> i32 {
    if (QIN) {
        let q = clamp(round(bitcast<f32>(x[at]) * QIN_SCALE) + f32(QIN_ZP), f32(QIN_LO), f32(QIN_HI));
        return i32(q);
    }
    return bitcast<i32>(x[at]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let blocks = (N + 3u) / 4u;
    let nb = i % blocks;
    let m = i / blocks;
    var acc = bias[nb];
    for (var k = 0u; k < K; k++) {
        acc += (load(m * K + k) - XZP) * wt[k * blocks + nb];
    }
    let q = clamp(round(vec4<f32>(acc) * MULT) + f32(YZP), vec4<f32>(f32(LO)), vec4<f32>(f32(HI)));
    var f = vec4<f32>(vec4<i32>(q) - DQ_ZP) * DQ_SCALE;
    if (FP32_BIAS) { f += bitcast<vec4<f32>>(bias[blocks + nb]); }
    for (var j = 0u; j < 4u; j++) {
        if (nb * 4u + j < N) {
            if (DEQ) { y[m * N + nb * 4u + j] = bitcast<u32>(f[j]); } else { y[m * N + nb * 4u + j] = bitcast<u32>(i32(q[j])); }
        }
    }
}
