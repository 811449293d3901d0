// Fused frame preprocess: packed RGB24 or planar I420 frames (BT.601 limited range, converted
// per sample in integers, each chroma sample shared by its 2×2 block) → Pillow's antialiased bicubic resize (22-bit
// fixed point, horizontal pass then vertical, each rounded and clamped to u8) → center crop
// (zeros outside the resized image) → per-channel value table (rescale and normalise, done on
// the CPU for each of the 256 byte values) → NCHW f32. All integer arithmetic is i32, as the
// worker's models::preprocess, so the output is exactly the CPU's. One invocation per output
// pixel; the horizontal pass is recomputed for each vertical tap (nothing staged in memory).

struct Params {
    total: u32,
    width: u32,
    height: u32,
    resized_w: u32,
    resized_h: u32,
    crop_w: u32,
    crop_h: u32,
    left: i32,
    top: i32,
    // Weights per output position in the tables (the longest filter), per axis.
    taps_h: u32,
    taps_v: u32,
    // Where each part of `table` starts.
    start_h: u32,
    count_h: u32,
    weights_h: u32,
    start_v: u32,
    count_v: u32,
    weights_v: u32,
    // 0: packed RGB24; 1: planar I420.
    format: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Frames' bytes, packed little-endian four to a word.
@group(0) @binding(1) var<storage, read> bytes: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<i32>;
// lut[c·256 + v]: the model-input value of byte v in channel c.
@group(0) @binding(3) var<storage, read> lut: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const PRECISION_BITS: u32 = 22u;
const ROUNDING: i32 = 2097152; // 1 << 21

fn byte_at(k: u32) -> i32 {
    return i32((bytes[k >> 2u] >> ((k & 3u) * 8u)) & 255u);
}

// The RGB of pixel (x, y) of `frame`.
fn pixel(frame: u32, x: u32, y: u32) -> vec3<i32> {
    if p.format == 0u {
        let k = ((frame * p.height + y) * p.width + x) * 3u;
        return vec3<i32>(byte_at(k), byte_at(k + 1u), byte_at(k + 2u));
    }
    let luma = p.width * p.height;
    let cw = (p.width + 1u) / 2u;
    let chroma = cw * ((p.height + 1u) / 2u);
    let base = frame * (luma + 2u * chroma);
    let c = 298 * (byte_at(base + y * p.width + x) - 16);
    let at = base + luma + (y / 2u) * cw + x / 2u;
    let d = byte_at(at) - 128;
    let e = byte_at(at + chroma) - 128;
    let rgb = vec3<i32>(c + 409 * e + 128, c - 100 * d - 208 * e + 128, c + 516 * d + 128) >> vec3<u32>(8u);
    return clamp(rgb, vec3<i32>(0), vec3<i32>(255));
}

fn clip8(v: vec3<i32>) -> vec3<i32> {
    return clamp(v >> vec3<u32>(PRECISION_BITS), vec3<i32>(0), vec3<i32>(255));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.y * nwg.x * 256u + gid.x;
    if o >= p.total {
        return;
    }
    let ox = o % p.crop_w;
    let oy = (o / p.crop_w) % p.crop_h;
    let frame = o / (p.crop_w * p.crop_h);
    let rx = i32(ox) + p.left;
    let ry = i32(oy) + p.top;
    var v = vec3<i32>(0);
    if rx >= 0 && ry >= 0 && rx < i32(p.resized_w) && ry < i32(p.resized_h) {
        let xs = u32(table[p.start_h + u32(rx)]);
        let nh = u32(table[p.count_h + u32(rx)]);
        let wh = p.weights_h + u32(rx) * p.taps_h;
        let ys = u32(table[p.start_v + u32(ry)]);
        let nv = u32(table[p.count_v + u32(ry)]);
        let wv = p.weights_v + u32(ry) * p.taps_v;
        var acc_v = vec3<i32>(ROUNDING);
        for (var r = 0u; r < nv; r++) {
            var acc_h = vec3<i32>(ROUNDING);
            for (var q = 0u; q < nh; q++) {
                acc_h += pixel(frame, xs + q, ys + r) * table[wh + q];
            }
            acc_v += clip8(acc_h) * table[wv + r];
        }
        v = clip8(acc_v);
    }
    let plane = p.crop_w * p.crop_h;
    let first = frame * 3u * plane + oy * p.crop_w + ox;
    out[first] = lut[u32(v.x)];
    out[first + plane] = lut[256u + u32(v.y)];
    out[first + 2u * plane] = lut[512u + u32(v.z)];
}
