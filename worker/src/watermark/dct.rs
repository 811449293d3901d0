//! Per-block math of the watermark: the orthonormal 8×8 DCT-II and its inverse over f32 luma,
//! the band of mid-frequency coefficients that carries the mark, and the two per-block steps
//! of embedding and detection ([`block_correlation`], [`block_delta`]; one block in, one block
//! out, no allocation). [`plane_correlation`] and [`plane_embed`] run them over every whole
//! block of a plane: the CPU reference of the WGSL and CUDA `dct_correlate` / `dct_embed`.

use std::sync::OnceLock;

use super::plane::Plane;

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

/// [`block_correlation`] of every whole 8×8 block of `plane` (block rows first) with its
/// chips: slot `(by·blocks_x + bx)·BAND.len() + i` of the result is `chips[slot] · X(BAND[i])`
/// of block (bx, by). `chips` holds one band's worth per block.
pub fn plane_correlation(plane: &Plane, chips: &[f32]) -> Vec<f32> {
    let bx = plane.width / N;
    let (mut block, mut out) = ([0f32; N * N], [0f32; BAND.len()]);
    let mut all = Vec::with_capacity(chips.len());
    for (i, c) in chips.chunks_exact(BAND.len()).enumerate() {
        plane.block(i % bx, i / bx, &mut block);
        block_correlation(&block, c.try_into().expect("a band per block"), &mut out);
        all.extend_from_slice(&out);
    }
    all
}

/// `plane` plus the [`block_delta`] of each whole block's amplitudes (slots in the order of
/// [`plane_correlation`]).
pub fn plane_embed(plane: &Plane, amplitudes: &[f32]) -> Plane {
    let bx = plane.width / N;
    let mut out = plane.clone();
    let mut delta = [0f32; N * N];
    for (i, a) in amplitudes.chunks_exact(BAND.len()).enumerate() {
        block_delta(a.try_into().expect("a band per block"), &mut delta);
        let (x0, y0) = ((i % bx) * N, (i / bx) * N);
        for (y, row) in delta.chunks_exact(N).enumerate() {
            let start = (y0 + y) * plane.width + x0;
            out.data[start..start + N].iter_mut().zip(row).for_each(|(o, d)| *o += d);
        }
    }
    out
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

    #[test]
    fn plane_embed_then_correlation_returns_each_blocks_amplitudes() {
        // 3×2 whole blocks, plus a partial column and row that neither touches.
        let (w, h) = (3 * N + 5, 2 * N + 3);
        let amps: Vec<f32> = (0..6 * BAND.len()).map(|i| (i % 7) as f32 - 3.0).collect();
        let marked = plane_embed(&Plane::zeros(w, h), &amps);
        let chips = vec![1.0; amps.len()];
        let back = plane_correlation(&marked, &chips);
        assert_eq!(back.len(), amps.len());
        assert!(back.iter().zip(&amps).all(|(b, a)| (b - a).abs() < 1e-4), "{back:?}");
        assert!((0..h).all(|y| (3 * N..w).all(|x| marked.data[y * w + x] == 0.0)), "the partial column");
        assert!((2 * N..h).all(|y| (0..w).all(|x| marked.data[y * w + x] == 0.0)), "the partial row");
        // Chips multiply each slot.
        let flipped: Vec<f32> = (0..amps.len()).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let signed = plane_correlation(&marked, &flipped);
        assert!(signed.iter().zip(&back).zip(&flipped).all(|((s, b), c)| (s - b * c).abs() < 1e-6));
    }
}
