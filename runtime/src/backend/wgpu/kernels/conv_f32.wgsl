// 2-D convolution, NCHW activations, OIHW weights, fp32; one invocation per output element.
// Bias and Relu are fused here so that a Conv+Relu pair costs one dispatch.

struct Params {
    total: u32, ci: u32, h: u32, w: u32,
    co: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, ph: u32,
    pw: u32, dh: u32, dw: u32, relu: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
            // Padding is implicit: taps that fall outside the image are skipped (zero).
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                acc += x[(xbase + u32(iy)) * p.w + u32(ix)] * wt[(wbase + ky) * p.kw + kx];
            }
        }
    }
    if (p.relu != 0u) { acc = max(acc, 0.0); }
    y[i] = acc;
}
