// 2-D convolution, NCHW activations, fp32. One invocation computes one output pixel for a
// block of four output channels, so each input value is loaded once per four MACs. The
// geometry is fixed per layer (override constants), so the compiler unrolls the window
// loops and folds the index arithmetic. Weights are packed [CO/4][CI][KH][KW] x vec4 (the
// four channels of a block side by side, zero-padded), bias as vec4 per block. Bias, Relu
// and an unpadded max pool that follows are fused here: Conv+Relu+Pool is one dispatch, and
// the full-size conv output is never written.

override CI: u32;
override H: u32;
override W: u32;
override CO: u32;
override OH: u32;
override OW: u32;
override KH: u32;
override KW: u32;
override SH: u32;
override SW: u32;
override PH: u32;
override PW: u32;
override DH: u32;
override DW: u32;
// A fused max pool over the conv output: window, stride, pooled size (1, 1, 1, 1, OH, OW
// when there is none).
override PKH: u32;
override PKW: u32;
override PSH: u32;
override PSW: u32;
override POH: u32;
override POW: u32;
override RELU: bool;

struct Params { total: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

/// The four channels of block `ob` at output pixel (oy, ox) of item `b`, after bias and Relu.
fn conv_at(b: u32, ob: u32, oy: u32, ox: u32) -> vec4<f32> {
    var acc = bias[ob];
    for (var c = 0u; c < CI; c++) {
        let plane = (b * CI + c) * H;
        let wbase = (ob * CI + c) * KH * KW;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * SH + ky * DH) - i32(PH);
            for (var kx = 0u; kx < KW; kx++) {
                let ix = i32(ox * SW + kx * DW) - i32(PW);
                // Padding taps read a clamped in-bounds address and count as zero.
                let inside = iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W);
                let at = (plane + u32(clamp(iy, 0, i32(H) - 1))) * W + u32(clamp(ix, 0, i32(W) - 1));
                let v = select(0.0, x[at], inside);
                acc += v * wt[wbase + ky * KW + kx];
            }
        }
    }
    if (RELU) { acc = max(acc, vec4<f32>(0.0)); }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let blocks = (CO + 3u) / 4u;
    let px = i % POW;
    let py = (i / POW) % POH;
    let ob = (i / (POW * POH)) % blocks;
    let b = i / (POW * POH * blocks);
    var best = vec4<f32>(-3.402823e38);
    for (var wy = 0u; wy < PKH; wy++) {
        for (var wx = 0u; wx < PKW; wx++) {
            best = max(best, conv_at(b, ob, py * PSH + wy, px * PSW + wx));
        }
    }
    let out = ((b * CO + ob * 4u) * POH + py) * POW + px;
    let plane_size = POH * POW;
    for (var j = 0u; j < 4u; j++) {
        if (ob * 4u + j < CO) { y[out + j * plane_size] = best[j]; }
    }
}
