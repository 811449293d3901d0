//! `kernels` owns reelforge's fused compute ops as candle custom ops: each has a CPU forward in
//! Rust (the reference the other implementations are tested against) and, in the `cuda` build,
//! a CUDA forward (`.cu` sources compiled at run time by NVRTC through cudarc). The default
//! build is CPU-only and never touches CUDA. Ops: [`group_norm_silu`] (fused GroupNorm, affine
//! and SiLU, the MCVD network's norm-activation).

pub mod group_norm;

pub use group_norm::group_norm_silu;
