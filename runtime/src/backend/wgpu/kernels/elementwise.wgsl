// Element-wise steps on raw 32-bit words, one invocation per element: `op` selects what the
// step does, `aux` holds its table or broadcast constant.
//   0 quantize   f32 -> int: clamp(round(x * scale) + zp, lo, hi)   (ties-to-even)
//   1 dequantize int -> f32: (x - zp) * scale
//   2 lookup     int -> int: aux[x & 255]   (a 256-entry table, tract's folded requantisation)
//   3 add        f32: x + aux[i % len]       (a constant broadcast over the leading axes)
//   4 relu       f32: max(x, 0)

struct Params { total: u32, op: u32, zp: i32, scale: f32, lo: i32, hi: i32, len: u32, pad0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> aux: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 64u;
    if (i >= p.total) { return; }
    let v = x[i];
    switch p.op {
        case 0u: {
            let q = clamp(round(bitcast<f32>(v) * p.scale) + f32(p.zp), f32(p.lo), f32(p.hi));
            y[i] = bitcast<u32>(i32(q));
        }
        case 1u: {
            y[i] = bitcast<u32>(f32(bitcast<i32>(v) - p.zp) * p.scale);
        }
        case 2u: {
            y[i] = aux[v & 255u];
        }
        case 3u: {
            y[i] = bitcast<u32>(bitcast<f32>(v) + bitcast<f32>(aux[i % p.len]));
        }
        default: {
            y[i] = bitcast<u32>(max(bitcast<f32>(v), 0.0));
        }
    }
}
