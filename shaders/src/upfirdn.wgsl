// upfirdn2d (StyleGAN2, NCSN++/MCVD's FIR resampling): each output sample is
// Σ_{i,j} k[taps-1-i][taps-1-j] · u[y·down + i][x·down + j], u the plane upsampled by zero
// insertion and zero-padded by pad0 before and pad1 after, summed in the worker's reference
// order (i outer, j inner; zero samples included).

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

// The upsampled, padded plane `plane` at (yy, xx), read through rather than materialised.
fn sample(plane: u32, yy: u32, xx: u32) -> f32 {
    if yy < p.pad0 || xx < p.pad0 {
        return 0.0;
    }
    let uy = yy - p.pad0;
    let ux = xx - p.pad0;
    if uy % p.up != 0u || ux % p.up != 0u {
        return 0.0;
    }
    let sy = uy / p.up;
    let sx = ux / p.up;
    if sy >= p.h || sx >= p.w {
        return 0.0;
    }
    return x[(plane * p.h + sy) * p.w + sx];
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
    let t = p.taps;
    var acc = 0.0;
    for (var i = 0u; i < t; i++) {
        for (var j = 0u; j < t; j++) {
            acc += kernel[(t - 1u - i) * t + (t - 1u - j)] * sample(plane, oy * p.down + i, ox * p.down + j);
        }
    }
    out[o] = acc;
}
