// 2-D convolution on quantised values (QLinearConv, per-tensor): 8-bit activations and
// weights held one per i32, i32 accumulation, then requantisation to the output's scale and
// zero point with ties-to-even rounding (as ONNX and tract round).

struct Params {
    total: u32, ci: u32, h: u32, w: u32,
    co: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, ph: u32,
    pw: u32, dh: u32, dw: u32, relu: u32,
    xzp: i32, wzp: i32, yzp: i32, mult: f32,
    lo: i32, hi: i32, pad0: u32, pad1: u32,
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
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let oc = (i / (p.ow * p.oh)) % p.co;
    let b = i / (p.ow * p.oh * p.co);
    var acc = bias[oc];
    for (var c = 0u; c < p.ci; c++) {
        let xbase = (b * p.ci + c) * p.h;
        let wbase = (oc * p.ci + c) * p.kh;
        for (var ky = 0u; ky < p.kh; ky++) {
            // Padded taps hold the input zero point, so they add nothing: skip them.
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                acc += (x[(xbase + u32(iy)) * p.w + u32(ix)] - p.xzp) * (wt[(wbase + ky) * p.kw + kx] - p.wzp);
            }
        }
    }
    let q = clamp(round(f32(acc) * p.mult) + f32(p.yzp), f32(p.lo), f32(p.hi));
    y[i] = i32(q);
}
