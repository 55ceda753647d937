// 2-D max pooling over NCHW; works on the raw 32-bit words of either fp32 or integer
// activations (`is_float` picks the comparison). Taps outside the image are skipped, which
// is ONNX's -inf padding. With `lut` set, an integer result goes through a 256-entry table
// (tract's folded requantisation that followed the pool).

struct Params {
    total: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, ph: u32, pw: u32,
    dh: u32, dw: u32, is_float: u32, lut: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = i / (p.ow * p.oh);
    var best_f = -3.402823e38;
    var best_i = -2147483647 - 1;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let v = x[(plane * p.h + u32(iy)) * p.w + u32(ix)];
            best_f = max(best_f, bitcast<f32>(v));
            best_i = max(best_i, bitcast<i32>(v));
        }
    }
    if (p.is_float != 0u) {
        y[i] = bitcast<u32>(best_f);
    } else if (p.lut != 0u) {
        y[i] = table[bitcast<u32>(best_i) & 255u];
    } else {
        y[i] = bitcast<u32>(best_i);
    }
}
