// 2-D convolution on quantised values (QLinearConv, per-tensor): 8-bit activations and
// weights held one per i32, i32 accumulation, then requantisation to the output's scale and
// zero point with ties-to-even rounding (WGSL's round(), as ONNX and tract round). Layout
// and blocking as conv_f32.wgsl; the weights arrive with their zero point already removed.
// Fused at load time when the graph allows: QIN quantises an fp32 input on load (the
// model's QuantizeLinear), DEQ dequantises the output to fp32 (its DequantizeLinear).
// Activations are bound as raw 32-bit words: i32 values, or f32 where fused.

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

fn store(at: u32, q: f32) {
    if (DEQ) {
        y[at] = bitcast<u32>(f32(i32(q) - DQ_ZP) * DQ_SCALE);
    } else {
        y[at] = bitcast<u32>(i32(q));
    }
}

/// The four channels of block `ob` at output pixel (oy, ox) of item `b`, requantised (as
/// floats holding integers).
fn conv_at(b: u32, ob: u32, oy: u32, ox: u32) -> vec4<f32> {
    var acc = bias[ob];
    for (var c = 0u; c < CI; c++) {
        let plane = (b * CI + c) * H;
        let wbase = (ob * CI + c) * KH * KW;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * SH + ky * DH) - i32(PH);
            for (var kx = 0u; kx < KW; kx++) {
                let ix = i32(ox * SW + kx * DW) - i32(PW);
                // Padding holds the input zero point, which contributes nothing.
                let inside = iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W);
                let at = (plane + u32(clamp(iy, 0, i32(H) - 1))) * W + u32(clamp(ix, 0, i32(W) - 1));
                let v = select(0, load(at) - XZP, inside);
                acc += v * wt[wbase + ky * KW + kx];
            }
        }
    }
    return clamp(round(vec4<f32>(acc) * MULT) + f32(YZP), vec4<f32>(f32(LO)), vec4<f32>(f32(HI)));
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
    // Max of requantised values: requantisation is monotonic, so this is the pool of the
    // quantised conv output, exactly.
    var best = vec4<f32>(-3.402823e38);
    for (var wy = 0u; wy < PKH; wy++) {
        for (var wx = 0u; wx < PKW; wx++) {
            best = max(best, conv_at(b, ob, py * PSH + wy, px * PSW + wx));
        }
    }
    let out = ((b * CO + ob * 4u) * POH + py) * POW + px;
    let plane_size = POH * POW;
    for (var j = 0u; j < 4u; j++) {
        if (ob * 4u + j < CO) { store(out + j * plane_size, best[j]); }
    }
}
