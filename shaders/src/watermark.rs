//! `watermark` owns the block-DCT watermark shaders (`dct.wgsl`): the per-8×8-block work of
//! detection (each band coefficient times its chip) and of embedding (the inverse DCT of the
//! per-slot amplitudes added to the plane), with the arithmetic of the worker's
//! `watermark::dct` (`block_correlation`, `block_delta`). Summing slots per coded bit, choosing
//! the pushes and resampling stay on the CPU: they are small or sequential.

use crate::gpu::{Dispatch, Gpu, GpuError, Input, Kernel, grid_1d, to_f32};

/// Block side.
pub const N: usize = 8;

/// The band's length: slots per block (the worker's `watermark::dct::BAND`).
pub const BAND_LEN: usize = 12;

/// The band as (u, v) = (horizontal, vertical) frequency indices, in slot order; the shader
/// holds the same table.
pub const BAND: [(usize, usize); BAND_LEN] =
    [(2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4)];

/// The detection shader.
pub const CORRELATE: Kernel = Kernel { name: "dct_correlate", source: include_str!("dct.wgsl"), entry: "correlate" };

/// The embedding shader.
pub const EMBED: Kernel = Kernel { name: "dct_embed", source: include_str!("dct.wgsl"), entry: "embed" };

/// `basis[k·8 + n]`: the orthonormal DCT-II basis function k at sample n, computed in f64 and
/// rounded to f32 as the worker's reference computes it.
pub fn dct_basis() -> [f32; N * N] {
    let mut b = [0f32; N * N];
    for k in 0..N {
        let scale = if k == 0 { (1.0 / N as f64).sqrt() } else { (2.0 / N as f64).sqrt() };
        for n in 0..N {
            b[k * N + n] =
                (scale * (std::f64::consts::PI * (2 * n + 1) as f64 * k as f64 / (2 * N) as f64).cos()) as f32;
        }
    }
    b
}

/// Whole 8×8 blocks of a `width`×`height` plane, per axis.
pub fn blocks(width: usize, height: usize) -> (usize, usize) {
    (width / N, height / N)
}

fn check(op: &'static str, plane: &[f32], width: usize, height: usize, slots: usize) -> Result<[u32; 4], GpuError> {
    let shape = |message: String| GpuError::Shape { op, message };
    if plane.len() != width * height {
        return Err(shape(format!("plane has {} samples, not {width}×{height}", plane.len())));
    }
    let (bx, by) = blocks(width, height);
    if slots != bx * by * BAND_LEN {
        return Err(shape(format!("{slots} slot values, not {bx}×{by} blocks × {BAND_LEN}")));
    }
    Ok([width as u32, height as u32, bx as u32, by as u32])
}

/// Detection's per-block step over every whole block of a row-major luma `plane`: slot
/// `(by·blocks_x + bx)·12 + k` of the result is `chips[slot] · X(BAND[k])` of block (bx, by).
/// The caller sums slots per coded bit.
pub fn dct_correlate(
    gpu: &Gpu,
    plane: &[f32],
    width: usize,
    height: usize,
    chips: &[f32],
) -> Result<Vec<f32>, GpuError> {
    let params = check("dct_correlate", plane, width, height, chips.len())?;
    if chips.is_empty() {
        return Ok(Vec::new());
    }
    let basis = dct_basis();
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(plane), Input::F32(chips), Input::F32(&basis)],
        outputs: &[chips.len()],
        workgroups: grid_1d(chips.len()),
    };
    Ok(to_f32(gpu.run(&CORRELATE, &d)?.remove(0)))
}

/// Embedding's per-block step: `plane` plus, in every whole block, the pixel-domain block whose
/// DCT is `amplitudes[slot]` at `BAND[k]` and zero elsewhere (samples outside whole blocks are
/// copied). With a zero plane this is the canonical-grid delta itself.
pub fn dct_embed(
    gpu: &Gpu,
    plane: &[f32],
    width: usize,
    height: usize,
    amplitudes: &[f32],
) -> Result<Vec<f32>, GpuError> {
    let params = check("dct_embed", plane, width, height, amplitudes.len())?;
    if plane.is_empty() {
        return Ok(Vec::new());
    }
    let basis = dct_basis();
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(plane), Input::F32(amplitudes), Input::F32(&basis)],
        outputs: &[plane.len()],
        workgroups: grid_1d(plane.len()),
    };
    Ok(to_f32(gpu.run(&EMBED, &d)?.remove(0)))
}
