//! `kernels` owns reelforge's fused compute ops as candle custom ops and the choice of compute
//! device. Each op has a CPU forward in Rust (the reference the other implementations are tested
//! against) and, in the `cuda` build, a CUDA forward (`cuda/*.cu`, compiled at run time by NVRTC
//! through candle's cudarc; see [`cuda`]). The default build is CPU-only and never touches CUDA.
//! Ops: [`group_norm_silu`] (fused GroupNorm, affine and SiLU: MCVD's norm-activation),
//! [`sampler`] (fused DDIM and DDPM steps), [`upfirdn2d`] (FIR resampling); in the `cuda` build
//! also the watermark's block DCT and the frame preprocess on device slices.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod group_norm;
pub mod sampler;
pub mod upfirdn;

pub use device::{DeviceChoice, DeviceError, Selected, select};
pub use group_norm::group_norm_silu;
pub use sampler::{ddim_step, ddpm_step};
pub use upfirdn::{FirResample, upfirdn2d};

/// The f32 values of a contiguous CPU input under `layout` (every op's CPU forward takes
/// contiguous f32 inputs; `op` names the op in the error).
fn cpu_f32<'s>(
    op: &str,
    s: &'s candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'s [f32]> {
    let (candle_core::CpuStorage::F32(v), Some((from, to))) = (s, layout.contiguous_offsets()) else {
        candle_core::bail!("{op} takes contiguous f32 inputs");
    };
    Ok(&v[from..to])
}
