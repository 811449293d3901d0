// The watermark's per-8×8-block work on a luma plane (the worker's watermark::dct): the
// orthonormal DCT-II coefficients of BAND, and the inverse DCT of amplitudes on BAND.
// Blocks are numbered row-major over the plane's whole 8×8 blocks; slot s = block·12 + k
// carries BAND[k]. `basis[k·8 + n]` is DCT-II basis function k at sample n (f32, from the CPU).
//
// correlate: one invocation per slot, out[s] = coeffs[s] · X_block(BAND[k]), summed as the
//            reference does (each row against the horizontal basis, then the rows against the
//            vertical one).
// embed:     one invocation per pixel, out = plane + Σ_k (coeffs[s_k] · b[v_k][y]) · b[u_k][x]
//            inside whole blocks, the plane as it is outside them.

struct Params {
    width: u32,
    height: u32,
    blocks_x: u32,
    blocks_y: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> plane: array<f32>;
// Chips (correlate) or amplitudes (embed), one per slot.
@group(0) @binding(2) var<storage, read> coeffs: array<f32>;
@group(0) @binding(3) var<storage, read> basis: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const BAND_LEN: u32 = 12u;
// (u, v) = (horizontal, vertical) frequency: the anti-diagonals u + v = 2, 3, 4.
const BAND_U = array<u32, 12>(2u, 1u, 0u, 3u, 2u, 1u, 0u, 4u, 3u, 2u, 1u, 0u);
const BAND_V = array<u32, 12>(0u, 1u, 2u, 0u, 1u, 2u, 3u, 0u, 1u, 2u, 3u, 4u);

@compute @workgroup_size(256)
fn correlate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = gid.y * nwg.x * 256u + gid.x;
    if s >= p.blocks_x * p.blocks_y * BAND_LEN {
        return;
    }
    let block = s / BAND_LEN;
    let k = s % BAND_LEN;
    let u = BAND_U[k];
    let v = BAND_V[k];
    let x0 = (block % p.blocks_x) * 8u;
    let y0 = (block / p.blocks_x) * 8u;
    var acc = 0.0;
    for (var y = 0u; y < 8u; y++) {
        var row = 0.0;
        let base = (y0 + y) * p.width + x0;
        for (var x = 0u; x < 8u; x++) {
            row += plane[base + x] * basis[u * 8u + x];
        }
        acc += row * basis[v * 8u + y];
    }
    out[s] = coeffs[s] * acc;
}

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= p.width * p.height {
        return;
    }
    let px = i % p.width;
    let py = i / p.width;
    let bx = px / 8u;
    let by = py / 8u;
    if bx >= p.blocks_x || by >= p.blocks_y {
        out[i] = plane[i];
        return;
    }
    let x = px % 8u;
    let y = py % 8u;
    let first = (by * p.blocks_x + bx) * BAND_LEN;
    var d = 0.0;
    for (var k = 0u; k < BAND_LEN; k++) {
        let a = coeffs[first + k];
        if a == 0.0 {
            continue;
        }
        d += a * basis[BAND_V[k] * 8u + y] * basis[BAND_U[k] * 8u + x];
    }
    out[i] = plane[i] + d;
}
