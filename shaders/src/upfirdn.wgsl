// upfirdn2d (StyleGAN2, NCSN++/MCVD's FIR resampling): each output sample is
// Σ_{i,j} k[taps-1-i][taps-1-j] · u[y·down + i][x·down + j], u the plane upsampled by zero
// insertion and zero-padded by pad0 before and pad1 after, summed in the worker's reference
// order (i outer, j inner), skipping the taps that fall on inserted or padded zeros.

struct Params {
    total: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    taps: u32,
    up: u32,
    down: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kernel: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The first tap i ≥ 0 of an axis whose padded, upsampled position o·down + i − pad0 is a real
// sample (a multiple of `up`), as a signed position; later real taps follow every `up`.
fn first_real(o: u32) -> i32 {
    let pos = i32(o * p.down) - i32(p.pad0);
    let up = i32(p.up);
    return ((up - pos % up) % up);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.y * nwg.x * 256u + gid.x;
    if o >= p.total {
        return;
    }
    let ox = o % p.wo;
    let oy = (o / p.wo) % p.ho;
    let plane = o / (p.wo * p.ho);
    let t = i32(p.taps);
    let up = i32(p.up);
    let y0 = i32(oy * p.down) - i32(p.pad0);
    let x0 = i32(ox * p.down) - i32(p.pad0);
    // Only taps on real samples: the zeros of the upsampled, padded plane add nothing (the
    // reference adds them; x + 0 is x), and the order of the rest is the reference's.
    let ib = first_real(oy);
    let jb = first_real(ox);
    // Consecutive real taps are consecutive input samples: one division per axis, not per tap.
    let sy0 = (y0 + ib) / up;
    let sx0 = (x0 + jb) / up;
    var acc = 0.0;
    var sy = sy0;
    for (var i = ib; i < t; i += up) {
        if sy >= 0 && sy < i32(p.h) {
            let row = (plane * p.h + u32(sy)) * p.w;
            var sx = sx0;
            for (var j = jb; j < t; j += up) {
                if sx >= 0 && sx < i32(p.w) {
                    acc += kernel[u32((t - 1 - i) * t + (t - 1 - j))] * x[row + u32(sx)];
                }
                sx += 1;
            }
        }
        sy += 1;
    }
    out[o] = acc;
}
