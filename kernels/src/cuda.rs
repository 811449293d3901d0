//! `cuda` owns the CUDA side of the kernels (the `cuda` build only): the `.cu` sources under
//! `kernels/cuda/`, compiled at run time by NVRTC (through the cudarc candle links) for the
//! device's own architecture, once per process and source; the loaded modules live in candle's
//! per-device cache. Launch helpers for the ops' `cuda_fwd`, and device-side launchers for the
//! ops that are not tensor ops (the watermark's block DCT and the frame preprocess), which take
//! and return device slices so they can be chained and timed without host copies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::CudaFunction;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, sys::CUdevice_attribute,
};
use candle_core::cuda_backend::cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};
use candle_core::{Result, bail};
/// The half-precision float the preprocess can write.
pub use half::f16;

/// One `.cu` source: a module of kernels.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The module's name in candle's per-device module cache.
    pub module: &'static str,
    /// CUDA C++.
    pub code: &'static str,
}

/// Fused GroupNorm + affine + SiLU.
pub const GROUP_NORM: Source =
    Source { module: "reelforge_group_norm_silu", code: include_str!("../cuda/group_norm_silu.cu") };
/// DDIM and DDPM sampler steps.
pub const SAMPLER: Source = Source { module: "reelforge_sampler", code: include_str!("../cuda/sampler.cu") };
/// FIR resampling.
pub const UPFIRDN: Source = Source { module: "reelforge_upfirdn2d", code: include_str!("../cuda/upfirdn2d.cu") };
/// The watermark's block DCT.
pub const WATERMARK: Source = Source { module: "reelforge_watermark", code: include_str!("../cuda/watermark.cu") };
/// The fused frame preprocess.
pub const PREPROCESS: Source = Source { module: "reelforge_preprocess", code: include_str!("../cuda/preprocess.cu") };

/// Every source.
pub const ALL: [Source; 5] = [GROUP_NORM, SAMPLER, UPFIRDN, WATERMARK, PREPROCESS];

/// Threads per block of the one-dimensional launches.
pub const BLOCK: u32 = 256;

/// The device's architecture as NVRTC names it (`compute_90` on Hopper), read from the driver
/// once per device and leaked once per value (cudarc's options take a `&'static str`): every
/// launch asks for it, so it must not cost driver calls.
fn arch(dev: &CudaDevice) -> Result<&'static str> {
    static ARCHES: OnceLock<Mutex<HashMap<DeviceId, &'static str>>> = OnceLock::new();
    let mut arches = ARCHES.get_or_init(Default::default).lock().expect("arch table poisoned");
    if let Some(a) = arches.get(&dev.id()) {
        return Ok(a);
    }
    let ctx = dev.cuda_stream().context().clone();
    let major = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).w()?;
    let minor = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).w()?;
    let name = format!("compute_{major}{minor}");
    let a = match arches.values().find(|a| **a == name) {
        Some(a) => *a,
        None => Box::leak(name.into_boxed_str()),
    };
    arches.insert(dev.id(), a);
    Ok(a)
}

/// PTX for `src` on `arch` (`compute_90`…), compiled by NVRTC on first use and kept for the
/// process (shared, not copied, on later calls). Needs NVRTC only, no driver or device
/// (`nvrtc_check` runs it on a CPU machine).
pub fn ptx(src: &Source, arch: &'static str) -> Result<Arc<str>> {
    /// PTX per (module, architecture).
    type Cache = Mutex<HashMap<(&'static str, &'static str), Arc<str>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().expect("ptx cache poisoned");
    if let Some(p) = cache.get(&(src.module, arch)) {
        return Ok(p.clone());
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{}.cu", src.module)),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let ptx: Arc<str> = compile_ptx_with_opts(src.code, opts)
        .map_err(|e| candle_core::Error::Cuda(format!("NVRTC could not compile {}: {e}", src.module).into()))?
        .to_src()
        .into();
    cache.insert((src.module, arch), ptx.clone());
    Ok(ptx)
}

/// Kernel `name` of `src` on `dev`, compiled and loaded on first use.
pub fn function(dev: &CudaDevice, src: &Source, name: &str) -> Result<CudaFunction> {
    let ptx = ptx(src, arch(dev)?)?;
    Ok(dev.get_or_load_custom_func(name, src.module, &ptx)?.into_cuda_function())
}

/// Compiles and loads every source on `dev` (so that run-time compilation stays out of timings
/// and a bad source fails at start, not in the middle of a job).
pub fn warm_up(dev: &CudaDevice) -> Result<()> {
    for (src, kernel) in [
        (GROUP_NORM, "group_norm_silu"),
        (SAMPLER, "ddim_step"),
        (UPFIRDN, "upfirdn2d"),
        (WATERMARK, "dct_embed"),
        (PREPROCESS, "preprocess_frames"),
        (PREPROCESS, "preprocess_frames_f16"),
    ] {
        function(dev, &src, kernel)?;
    }
    Ok(())
}

/// A grid of `BLOCK`-thread blocks covering `threads`, capped for grid-stride kernels.
pub fn grid(threads: usize, cap: Option<u32>) -> LaunchConfig {
    let blocks = threads.div_ceil(BLOCK as usize).max(1);
    let blocks = u32::try_from(blocks).unwrap_or(u32::MAX).min(cap.unwrap_or(u32::MAX));
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Blocks for grid-stride elementwise kernels: enough to fill the chip several times over.
pub const STRIDE_GRID_CAP: u32 = 132 * 16;

fn int(what: &str, v: usize) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} = {v} does not fit the kernels' 32-bit indices"),
    }
}

// SAFETY: plain `repr(C)` f32s, the layout of the kernel's struct `Ddim`.
unsafe impl DeviceRepr for crate::sampler::DdimStep {}
// SAFETY: plain `repr(C)` scalars, the layout of the kernel's struct `Ddpm`.
unsafe impl DeviceRepr for crate::sampler::DdpmStep {}

/// The frame preprocess's plan (by value, as the kernel's `Plan`): the 18 words of
/// `shaders::preprocess::Plan::params`, in the same order (the last is the pixel format: 0
/// packed RGB24, 1 planar I420).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PreprocessPlan(pub [i32; 18]);
// SAFETY: 18 `i32`s, the layout of the kernel's struct of 18 ints.
unsafe impl DeviceRepr for PreprocessPlan {}

/// Detection's per-block step on the device: see `shaders::watermark::dct_correlate` (same
/// arguments, same slot layout).
pub fn dct_correlate(
    dev: &CudaDevice,
    plane: &CudaView<'_, f32>,
    width: usize,
    height: usize,
    chips: &CudaView<'_, f32>,
    basis: &CudaView<'_, f32>,
) -> Result<CudaSlice<f32>> {
    let (bx, by) = (width / 8, height / 8);
    if plane.len() != width * height || chips.len() != bx * by * 12 || basis.len() != 64 {
        bail!(
            "dct_correlate: {} samples for {width}×{height}, {} chips, {} basis values",
            plane.len(),
            chips.len(),
            basis.len()
        );
    }
    let mut out = output::<f32>(dev, chips.len())?;
    if chips.is_empty() {
        return Ok(out);
    }
    let f = function(dev, &WATERMARK, "dct_correlate")?;
    let (w, bx, by) = (int("width", width)?, int("blocks", bx)?, int("blocks", by)?);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(plane).arg(chips).arg(basis).arg(&mut out).arg(&w).arg(&bx).arg(&by);
    unsafe { b.launch(grid(chips.len(), None)) }.w()?;
    Ok(out)
}

/// Embedding's per-block step on the device: see `shaders::watermark::dct_embed`.
pub fn dct_embed(
    dev: &CudaDevice,
    plane: &CudaView<'_, f32>,
    width: usize,
    height: usize,
    amplitudes: &CudaView<'_, f32>,
    basis: &CudaView<'_, f32>,
) -> Result<CudaSlice<f32>> {
    let (bx, by) = (width / 8, height / 8);
    if plane.len() != width * height || amplitudes.len() != bx * by * 12 || basis.len() != 64 {
        bail!(
            "dct_embed: {} samples for {width}×{height}, {} amplitudes, {} basis values",
            plane.len(),
            amplitudes.len(),
            basis.len()
        );
    }
    let mut out = output::<f32>(dev, plane.len())?;
    if plane.is_empty() {
        return Ok(out);
    }
    let f = function(dev, &WATERMARK, "dct_embed")?;
    let (w, h, bx, by) = (int("width", width)?, int("height", height)?, int("blocks", bx)?, int("blocks", by)?);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(plane).arg(amplitudes).arg(basis).arg(&mut out).arg(&w).arg(&h).arg(&bx).arg(&by);
    unsafe { b.launch(grid(plane.len(), None)) }.w()?;
    Ok(out)
}

/// Frames of packed RGB24 or planar I420 (`bytes`, as the plan's last word says) to the model's
/// NCHW input on the device, with the filter `table` and `plan` that `shaders::preprocess::plan`
/// builds and the 768-entry `lut`; returns `3 · plan.total` values of `T`: `f32`, or `f16`
/// (rounded to nearest even).
pub fn preprocess_frames<T: PreprocessOutput>(
    dev: &CudaDevice,
    bytes: &CudaView<'_, u8>,
    table: &CudaView<'_, i32>,
    lut: &CudaView<'_, f32>,
    plan: PreprocessPlan,
) -> Result<CudaSlice<T>> {
    let [total, width, height, ..] = plan.0;
    let format = plan.0[17];
    if total < 0 || width < 0 || height < 0 || lut.len() != 768 || !(0..=1).contains(&format) {
        bail!(
            "preprocess_frames: a negative size or format {format} in the plan, or a {}-entry value table",
            lut.len()
        );
    }
    let (total, w, h) = (total as usize, width as usize, height as usize);
    let (crop_w, crop_h) = (plan.0[5].max(1) as usize, plan.0[6].max(1) as usize);
    let frames = total / (crop_w * crop_h);
    let frame_bytes = if format == 0 { w * h * 3 } else { w * h + 2 * w.div_ceil(2) * h.div_ceil(2) };
    if bytes.len() < frames * frame_bytes {
        bail!("preprocess_frames: {} bytes for {frames} frames of {width}×{height}", bytes.len());
    }
    let mut out = output::<T>(dev, 3 * total)?;
    if total == 0 {
        return Ok(out);
    }
    let f = function(dev, &PREPROCESS, T::KERNEL)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(bytes).arg(table).arg(lut).arg(&mut out).arg(&plan);
    unsafe { b.launch(grid(total, None)) }.w()?;
    Ok(out)
}

/// An element type the preprocess writes, and its kernel.
pub trait PreprocessOutput: Element + candle_core::cuda_backend::CudaDType {
    /// The kernel of [`PREPROCESS`] that writes it.
    const KERNEL: &'static str;
}
impl PreprocessOutput for f32 {
    const KERNEL: &'static str = "preprocess_frames";
}
impl PreprocessOutput for f16 {
    const KERNEL: &'static str = "preprocess_frames_f16";
}

/// The f32 elements of a contiguous `storage` under `layout`, as a device view.
pub fn view<'s>(storage: &'s candle_core::CudaStorage, layout: &candle_core::Layout) -> Result<CudaView<'s, f32>> {
    let Some((from, to)) = layout.contiguous_offsets() else {
        bail!("the reelforge CUDA ops take contiguous inputs");
    };
    Ok(storage.as_cuda_slice::<f32>()?.slice(from..to))
}

/// Whether every layout starts at a multiple of 4 elements and the element count is one too,
/// so an elementwise kernel may take its 16-byte path.
pub fn vectorisable(layouts: &[&candle_core::Layout]) -> bool {
    layouts.iter().all(|l| l.start_offset() % 4 == 0 && l.shape().elem_count() % 4 == 0)
}

/// Launches the elementwise sampler kernel `name` of [`SAMPLER`] over `inputs` (all of one
/// length) with its by-value parameters `params`; returns the output.
pub fn elementwise<P: DeviceRepr>(
    dev: &CudaDevice,
    name: &str,
    inputs: &[&CudaView<'_, f32>],
    vec: bool,
    params: &P,
) -> Result<CudaSlice<f32>> {
    let n = inputs.first().map_or(0, |v| v.len());
    let mut out = output::<f32>(dev, n)?;
    if n == 0 {
        return Ok(out);
    }
    let f = function(dev, &SAMPLER, name)?;
    let (len, vec) = (n as i64, i32::from(vec));
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    for v in inputs {
        b.arg(*v);
    }
    b.arg(&mut out).arg(&len).arg(&vec).arg(params);
    let threads = if vec == 1 { n / 4 } else { n };
    unsafe { b.launch(grid(threads, Some(STRIDE_GRID_CAP))) }.w()?;
    Ok(out)
}

static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fill every output with NaN before its kernel runs (checks: an element a kernel skips stays
/// NaN and fails the comparison). Off by default; costs one host-to-device copy per output.
pub fn set_poison(on: bool) {
    POISON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A float element a kernel writes, and its NaN (the poison).
pub trait Element: DeviceRepr + Copy + 'static {
    /// Not a number.
    const NAN: Self;
}
impl Element for f32 {
    const NAN: Self = f32::NAN;
}
impl Element for f16 {
    const NAN: Self = f16::NAN;
}

/// An output buffer of `n` elements (at least one), poisoned when [`set_poison`] is on.
pub fn output<T: Element>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller's kernel writes all `n` elements before anything reads them (and
    // poisoning, when on, initialises them first).
    let mut out = unsafe { dev.alloc::<T>(n.max(1)) }?;
    if POISON.load(std::sync::atomic::Ordering::Relaxed) {
        dev.memcpy_htod(&vec![T::NAN; n.max(1)], &mut out)?;
    }
    Ok(out)
}
