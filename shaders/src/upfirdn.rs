//! `upfirdn` owns the FIR resampling shader (`upfirdn.wgsl`): StyleGAN2's `upfirdn2d` as NCSN++
//! and MCVD use it (upsample by zero insertion, pad, convolve with a square kernel, downsample
//! by striding), one invocation per output sample; the worker's `upfirdn2d_reference` is its
//! specification.

use crate::gpu::{Dispatch, Gpu, GpuError, Input, Kernel, grid_1d, to_f32};

/// The shader.
pub const KERNEL: Kernel = Kernel { name: "upfirdn2d", source: include_str!("upfirdn.wgsl"), entry: "main" };

/// One resampling: factors and padding, on both axes (the worker's `models::upfirdn::Resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirResample {
    /// Zero-insertion factor (≥ 1).
    pub up: usize,
    /// Output stride (≥ 1).
    pub down: usize,
    /// Zeros before the first sample, after upsampling.
    pub pad0: usize,
    /// Zeros after the last sample, after upsampling.
    pub pad1: usize,
}

impl FirResample {
    /// Output length of an axis of `len` samples with a kernel of `taps` taps (`None` when the
    /// padded axis is shorter than the kernel).
    pub fn out_len(&self, len: usize, taps: usize) -> Option<usize> {
        let padded = len * self.up + self.pad0 + self.pad1;
        (padded >= taps).then(|| (padded - taps) / self.down + 1)
    }
}

/// `upfirdn2d` of `planes` row-major `h`×`w` planes (`dims` = `[planes, h, w]`, e.g. an NCHW
/// tensor as `[n·c, h, w]`) with a `taps`×`taps` row-major `kernel`; returns `planes` planes of
/// `out_len(h)`×`out_len(w)`.
pub fn upfirdn2d(
    gpu: &Gpu,
    x: &[f32],
    dims: [usize; 3],
    kernel: &[f32],
    taps: usize,
    r: FirResample,
) -> Result<Vec<f32>, GpuError> {
    let shape = |message: String| GpuError::Shape { op: "upfirdn2d", message };
    let [planes, h, w] = dims;
    if x.len() != planes * h * w {
        return Err(shape(format!("x has {} values, not {planes}×{h}×{w}", x.len())));
    }
    if taps == 0 || kernel.len() != taps * taps {
        return Err(shape(format!("kernel has {} values, not {taps}×{taps}", kernel.len())));
    }
    if r.up == 0 || r.down == 0 {
        return Err(shape(format!("factors up {} and down {} must be at least 1", r.up, r.down)));
    }
    let (Some(ho), Some(wo)) = (r.out_len(h, taps), r.out_len(w, taps)) else {
        return Err(shape(format!("a {h}×{w} plane padded by {r:?} is smaller than the {taps}-tap kernel")));
    };
    let total = planes * ho * wo;
    if total == 0 {
        return Ok(Vec::new());
    }
    let params = [total, h, w, ho, wo, taps, r.up, r.down, r.pad0].map(|v| v as u32);
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(x), Input::F32(kernel)],
        outputs: &[total],
        workgroups: grid_1d(total),
    };
    Ok(to_f32(gpu.run(&KERNEL, &d)?.remove(0)))
}
