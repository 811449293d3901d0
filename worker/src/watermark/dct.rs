//! Per-block math of the watermark, the reference for a future CUDA/WGSL kernel: the
//! orthonormal 8×8 DCT-II and its inverse over f32 luma, the band of mid-frequency
//! coefficients that carries the mark, and the two per-block steps of embedding and
//! detection ([`block_correlation`], [`block_delta`]). Nothing here allocates or branches on
//! data: one block in, one block out.

use std::sync::OnceLock;

/// Block side.
pub const N: usize = 8;

/// The coefficients that carry the mark, as (u, v) = (horizontal, vertical) frequency indices:
/// the anti-diagonals u + v = 2, 3 and 4 of the block (low-mid frequencies, which survive
/// down-scaling, codecs and JPEG best at a given distortion).
pub const BAND: [(usize, usize); 12] =
    [(2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4)];

/// `basis[k][n]` = orthonormal DCT-II basis function k at sample n.
fn basis() -> &'static [[f32; N]; N] {
    static B: OnceLock<[[f32; N]; N]> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = [[0f32; N]; N];
        for (k, row) in b.iter_mut().enumerate() {
            let scale = if k == 0 { (1.0 / N as f64).sqrt() } else { (2.0 / N as f64).sqrt() };
            for (n, x) in row.iter_mut().enumerate() {
                *x = (scale * (std::f64::consts::PI * (2 * n + 1) as f64 * k as f64 / (2 * N) as f64).cos()) as f32;
            }
        }
        b
    })
}

/// The DCT coefficient (u, v) of a row-major 8×8 block.
pub fn coefficient(block: &[f32; N * N], u: usize, v: usize) -> f32 {
    let b = basis();
    let mut acc = 0.0;
    for y in 0..N {
        let mut row = 0.0;
        for x in 0..N {
            row += block[y * N + x] * b[u][x];
        }
        acc += row * b[v][y];
    }
    acc
}

/// Detection's per-block step: `Σ_i chips[i] · X(BAND[i])`, each band coefficient's
/// contribution kept apart in `out` (the caller sums them per coded bit).
pub fn block_correlation(block: &[f32; N * N], chips: &[f32; BAND.len()], out: &mut [f32; BAND.len()]) {
    for (i, &(u, v)) in BAND.iter().enumerate() {
        out[i] = chips[i] * coefficient(block, u, v);
    }
}

/// Embedding's per-block step: the pixel-domain block whose DCT is `amplitudes[i]` at
/// `BAND[i]` and zero elsewhere (the inverse DCT of a sparse coefficient block).
pub fn block_delta(amplitudes: &[f32; BAND.len()], out: &mut [f32; N * N]) {
    let b = basis();
    out.fill(0.0);
    for (i, &(u, v)) in BAND.iter().enumerate() {
        let a = amplitudes[i];
        if a == 0.0 {
            continue;
        }
        for y in 0..N {
            let ay = a * b[v][y];
            for x in 0..N {
                out[y * N + x] += ay * b[u][x];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_the_inverse_of_the_band_coefficients() {
        let mut amps = [0f32; BAND.len()];
        for (i, a) in amps.iter_mut().enumerate() {
            *a = i as f32 - 5.0;
        }
        let mut block = [0f32; N * N];
        block_delta(&amps, &mut block);
        for (i, &(u, v)) in BAND.iter().enumerate() {
            assert!((coefficient(&block, u, v) - amps[i]).abs() < 1e-4);
        }
        // Orthonormal: energy is preserved.
        let e: f32 = block.iter().map(|x| x * x).sum();
        let ea: f32 = amps.iter().map(|x| x * x).sum();
        assert!((e - ea).abs() < 1e-2 * ea);
        // A flat block has no band energy.
        let mut out = [0f32; BAND.len()];
        block_correlation(&[77.0; N * N], &[1.0; BAND.len()], &mut out);
        assert!(out.iter().all(|x| x.abs() < 1e-3));
    }
}
