//! The CUDA build's check and benchmark, run on the lent GPU machine by
//! `deploy/scripts/gpu-run.sh` (built here by `deploy/scripts/build-cuda.sh`):
//!
//! 1. Every CUDA kernel against its CPU reference: fresh seeded random inputs, every output
//!    poisoned with NaN first, ‖gpu − cpu‖ / ‖cpu‖ under a bound stated per op.
//! 2. Per op at a size that fills the chip: median time by CUDA events, achieved GB/s (each input
//!    read once and each output written once, the fewest bytes the op must move) against the
//!    measured device-to-device copy, and the speed-up over the CPU path.
//! 3. The models on the GPU against the CPU: CLIP ViT-B/32 (random weights, openai's shapes)
//!    images/s and embeddings, MCVD (smmnist size) sampling step time and predictions, and a
//!    DDIM block sampled end to end on both devices.
//!
//! Prints a table per part; exits non-zero when a check fails.
//! `gpu_check [--quick]` (`--quick`: small sizes, for a first look).

mod timing;

use std::time::Instant;

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::{DType, Device, Tensor};
use kernels::DeviceChoice;
use protocol::SamplerKind;
use timing::median;
use worker::models::clip::{self, Clip, ClipConfig};
use worker::models::diffusion::{Diffusion, SeededNoise};
use worker::models::mcvd::{McvdConfig, varmap_tensors};
use worker::models::upfirdn::{self, FIR_KERNEL, Resample};
use worker::watermark::dct::{self, BAND};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// ‖got − want‖ / ‖want‖; NaN (an unwritten element) makes it infinite.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (f64::from(g) - f64::from(w)).powi(2);
        den += f64::from(w).powi(2);
    }
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, got: &[f32], want: &[f32], bound: f64) {
        let e = rel_err(got, want);
        let ok = e <= bound;
        self.failed += usize::from(!ok);
        println!("| {what} | {e:.2e} | {bound:.0e} | {} |", if ok { "ok" } else { "FAIL" });
    }
}

fn normals(rng: &mut SeededNoise, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

fn flat(t: &Tensor) -> Res<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// Median milliseconds of `f` on the device's stream, by CUDA events, after a warm-up call.
fn gpu_ms<T, E>(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<T, E>) -> Res<f64>
where
    Box<dyn std::error::Error>: From<E>,
{
    let stream = dev.as_cuda_device()?.cuda_stream();
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let a = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        f()?;
        let b = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        v.push(f64::from(a.elapsed_ms(&b)?));
    }
    Ok(median(v))
}

/// Median milliseconds of `f` by the host clock.
fn cpu_ms<T, E>(reps: usize, mut f: impl FnMut() -> Result<T, E>) -> Res<f64>
where
    Box<dyn std::error::Error>: From<E>,
{
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

fn main() -> Res<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let sel = kernels::select(DeviceChoice::Cuda(0))?;
    println!("device: {}", sel.describe());
    let gpu = sel.device.clone();
    let cuda = gpu.as_cuda_device()?.clone();
    let mut checks = Checks { failed: 0 };
    let mut rng = SeededNoise::new(9);

    // 1. Kernels against the CPU reference.
    kernels::cuda::set_poison(true);
    println!("\n| check | ‖gpu−cpu‖/‖cpu‖ | bound | |\n|---|---:|---:|---|");
    for (n, c, h, w, g) in [(2, 8, 5, 7, 2), (3, 64, 16, 16, 32), (1, 12, 1, 33, 3), (4, 128, 32, 32, 32)] {
        let x = Tensor::from_vec(normals(&mut rng, n * c * h * w, 3.0), (n, c, h, w), &Device::Cpu)?;
        let a = Tensor::from_vec(normals(&mut rng, n * c, 0.3), (n, c), &Device::Cpu)?.affine(1.0, 1.0)?;
        let b = Tensor::from_vec(normals(&mut rng, n * c, 0.3), (n, c), &Device::Cpu)?;
        let want = flat(&kernels::group_norm_silu(&x, &a, &b, g, 1e-6)?)?;
        let got = kernels::group_norm_silu(&x.to_device(&gpu)?, &a.to_device(&gpu)?, &b.to_device(&gpu)?, g, 1e-6)?;
        checks.check(&format!("group_norm_silu {n}×{c}×{h}×{w} /{g}"), &flat(&got)?, &want, 2e-6);
    }
    for (len, a, a_prev) in [(1000usize, 0.3, Some(0.6)), (4099, 0.02, Some(0.9)), (4096, 0.7, None)] {
        let x = Tensor::from_vec(normals(&mut rng, len, 1.5), len, &Device::Cpu)?;
        let e = Tensor::from_vec(normals(&mut rng, len, 1.0), len, &Device::Cpu)?;
        let z = Tensor::from_vec(normals(&mut rng, len, 1.0), len, &Device::Cpu)?;
        let (xg, eg, zg) = (x.to_device(&gpu)?, e.to_device(&gpu)?, z.to_device(&gpu)?);
        let want = flat(&kernels::ddim_step(&x, &e, a, a_prev)?)?;
        checks.check(&format!("ddim_step {len}"), &flat(&kernels::ddim_step(&xg, &eg, a, a_prev)?)?, &want, 1e-6);
        let want = flat(&kernels::ddpm_step(&x, &e, Some(&z), a, a_prev)?)?;
        let got = kernels::ddpm_step(&xg, &eg, Some(&zg), a, a_prev)?;
        checks.check(&format!("ddpm_step {len}"), &flat(&got)?, &want, 1e-6);
    }
    let odd: Vec<f32> = (0..9).map(|i| i as f32 - 3.0).collect();
    for (k, taps, r) in [
        (upfirdn::kernel_2d(&FIR_KERNEL, 4.0), 4, Resample::up2(4)),
        (upfirdn::kernel_2d(&FIR_KERNEL, 1.0), 4, Resample::down2(4)),
        (odd, 3, Resample { up: 2, down: 3, pad0: 2, pad1: 1 }),
    ] {
        let (b, c, h, w) = (2, 3, 33, 17);
        let data = normals(&mut rng, b * c * h * w, 1.0);
        let want = upfirdn::upfirdn2d_reference(&data, b * c, h, w, &k, taps, r);
        let x = Tensor::from_vec(data, (b, c, h, w), &gpu)?;
        checks.check(&format!("upfirdn2d {r:?}"), &flat(&kernels::upfirdn2d(&x, &k, taps, r)?)?, &want, 1e-6);
    }
    let basis = shaders::watermark::dct_basis();
    let basis_g = cuda.cuda_stream().clone_htod(&basis)?;
    for (w, h) in [(8, 8), (100, 77), (256, 256), (333, 41)] {
        let luma: Vec<f32> = (0..w * h).map(|_| rng.uniform() as f32 * 255.0).collect();
        let (bx, by) = (w / 8, h / 8);
        let chips: Vec<f32> =
            (0..bx * by * BAND.len()).map(|_| if rng.next_u64() & 1 == 1 { 1.0 } else { -1.0 }).collect();
        let plane = worker::watermark::plane::Plane { width: w, height: h, data: luma.clone() };
        let want = dct::plane_correlation(&plane, &chips);
        let delta_want = dct::plane_embed(&plane, &chips).data;
        let s = cuda.cuda_stream();
        let (pg, cg) = (s.clone_htod(&luma)?, s.clone_htod(&chips)?);
        let got = kernels::cuda::dct_correlate(&cuda, &pg.slice(..), w, h, &cg.slice(..), &basis_g.slice(..))?;
        checks.check(&format!("dct_correlate {w}×{h}"), &s.clone_dtoh(&got)?[..chips.len()], &want, 1e-6);
        let got = kernels::cuda::dct_embed(&cuda, &pg.slice(..), w, h, &cg.slice(..), &basis_g.slice(..))?;
        checks.check(&format!("dct_embed {w}×{h}"), &s.clone_dtoh(&got)?, &delta_want, 1e-6);
    }
    for (cfg, w, h, frames) in [
        (worker::models::preprocess::ImageProcessorConfig::default(), 320u32, 240u32, 2usize),
        (worker::models::preprocess::ImageProcessorConfig::default(), 1280, 720, 1),
        (worker::models::preprocess::ImageProcessorConfig::square(64), 37, 53, 3),
        (worker::models::preprocess::ImageProcessorConfig::square(224), 224, 224, 1),
    ] {
        let images = sample_frames(&mut rng, w, h, frames);
        let want: Vec<f32> = images.iter().flat_map(|img| cfg.pixels(img).unwrap()).collect();
        // Through the CLIP processor's batch on the device (what the editor runs), which launches
        // `kernels::cuda::preprocess_frames`.
        let got = flat(&cfg.batch(&images, &gpu)?)?;
        checks.check(&format!("preprocess_frames (batch on cuda) {frames}× {w}×{h}"), &got, &want, 0.0);
        // The same frames as planar I420, converted in the kernel (`batch_i420`).
        let yuv: Vec<_> = images.iter().map(worker::media::I420Image::from_rgb).collect::<Result<_, _>>()?;
        let want: Vec<f32> = yuv.iter().flat_map(|img| cfg.pixels_i420(img).unwrap()).collect();
        let got = flat(&cfg.batch_i420(&yuv, &gpu)?)?;
        checks.check(&format!("preprocess_frames I420 (batch_i420 on cuda) {frames}× {w}×{h}"), &got, &want, 0.0);
        // f16 written by the kernel against the CPU's f32 → f16 cast (both round to nearest even).
        let frames_i420 = worker::models::preprocess::Frames::I420(&yuv);
        let want = flat(&cfg.tensor(frames_i420, &Device::Cpu, DType::F16)?)?;
        let got = flat(&cfg.tensor(frames_i420, &gpu, DType::F16)?)?;
        checks.check(&format!("preprocess_frames_f16 I420 (tensor on cuda) {frames}× {w}×{h}"), &got, &want, 0.0);
    }
    kernels::cuda::set_poison(false);

    // 2. Per op: GB/s against the copy roofline, and against the CPU.
    let reps = if quick { 5 } else { 20 };
    let copy_n = if quick { 1 << 24 } else { 1 << 28 };
    let src = cuda.cuda_stream().alloc_zeros::<f32>(copy_n)?;
    let mut dst = cuda.cuda_stream().alloc_zeros::<f32>(copy_n)?;
    let copy_ms = gpu_ms(&gpu, reps, || cuda.memcpy_dtod(&src, &mut dst))?;
    let roof = 2.0 * (copy_n * 4) as f64 / (copy_ms * 1e-3) / 1e9;
    drop((src, dst));
    println!(
        "\ndevice-to-device copy of {} MiB: {copy_ms:.3} ms, {roof:.0} GB/s (bytes read + written)",
        (copy_n * 4) >> 20
    );
    println!("\n| op | size | GPU ms | GB/s | % of copy | CPU ms | speed-up |\n|---|---|---:|---:|---:|---:|---:|");
    let row = |op: &str, size: &str, bytes: usize, g: f64, c: f64| {
        let gbs = bytes as f64 / (g * 1e-3) / 1e9;
        println!("| {op} | {size} | {g:.3} | {gbs:.0} | {:.0}% | {c:.1} | {:.0}× |", 100.0 * gbs / roof, c / g);
    };
    let (n, c, hw) = if quick { (4, 128, 32) } else { (16, 256, 64) };
    let x = Tensor::from_vec(normals(&mut rng, n * c * hw * hw, 1.0), (n, c, hw, hw), &Device::Cpu)?;
    let a = Tensor::ones((n, c), DType::F32, &Device::Cpu)?;
    let (xg, ag) = (x.to_device(&gpu)?, a.to_device(&gpu)?);
    let g = gpu_ms(&gpu, reps, || kernels::group_norm_silu(&xg, &ag, &ag, 32, 1e-6))?;
    let cpu = cpu_ms(3, || kernels::group_norm_silu(&x, &a, &a, 32, 1e-6))?;
    row("group_norm_silu", &format!("{n}×{c}×{hw}×{hw}"), 2 * x.elem_count() * 4, g, cpu);
    let len = if quick { 1 << 22 } else { 1 << 26 };
    let x = Tensor::from_vec(normals(&mut rng, len, 1.0), len, &Device::Cpu)?;
    let xg = x.to_device(&gpu)?;
    let g = gpu_ms(&gpu, reps, || kernels::ddim_step(&xg, &xg, 0.3, Some(0.5)))?;
    let cpu = cpu_ms(3, || kernels::ddim_step(&x, &x, 0.3, Some(0.5)))?;
    row("ddim_step", &format!("{len}"), 3 * len * 4, g, cpu);
    let g = gpu_ms(&gpu, reps, || kernels::ddpm_step(&xg, &xg, Some(&xg), 0.3, Some(0.5)))?;
    let cpu = cpu_ms(3, || kernels::ddpm_step(&x, &x, Some(&x), 0.3, Some(0.5)))?;
    row("ddpm_step", &format!("{len}"), 4 * len * 4, g, cpu);
    let (n, c, hw) = if quick { (2, 64, 32) } else { (16, 128, 64) };
    let x = Tensor::from_vec(normals(&mut rng, n * c * hw * hw, 1.0), (n, c, hw, hw), &Device::Cpu)?;
    let xg = x.to_device(&gpu)?;
    let k = upfirdn::kernel_2d(&FIR_KERNEL, 4.0);
    let up = Resample::up2(4);
    let g = gpu_ms(&gpu, reps, || kernels::upfirdn2d(&xg, &k, 4, up))?;
    let cpu = cpu_ms(3, || upfirdn::upsample_2d(&x))?;
    row("upfirdn2d up×2", &format!("{n}×{c}×{hw}×{hw}"), 5 * x.elem_count() * 4, g, cpu);
    let side = if quick { 1024 } else { 4096 };
    let luma: Vec<f32> = (0..side * side).map(|_| rng.uniform() as f32 * 255.0).collect();
    let slots = (side / 8) * (side / 8) * BAND.len();
    let amps = normals(&mut rng, slots, 2.0);
    let s = cuda.cuda_stream();
    let (pg, ag) = (s.clone_htod(&luma)?, s.clone_htod(&amps)?);
    let g = gpu_ms(&gpu, reps, || {
        kernels::cuda::dct_embed(&cuda, &pg.slice(..), side, side, &ag.slice(..), &basis_g.slice(..))
    })?;
    let plane = worker::watermark::plane::Plane { width: side, height: side, data: luma.clone() };
    let cpu = cpu_ms(3, || Res::Ok(dct::plane_embed(&plane, &amps)))?;
    row("dct_embed", &format!("{side}×{side}"), (2 * side * side + slots) * 4, g, cpu);
    let g = gpu_ms(&gpu, reps, || {
        kernels::cuda::dct_correlate(&cuda, &pg.slice(..), side, side, &ag.slice(..), &basis_g.slice(..))
    })?;
    row("dct_correlate", &format!("{side}×{side}"), (side * side + 2 * slots) * 4, g, f64::NAN);
    let frames = if quick { 4 } else { 32 };
    let cfg = worker::models::preprocess::ImageProcessorConfig::default();
    let images = sample_frames(&mut rng, 1280, 720, frames);
    let yuv: Vec<_> = images.iter().map(worker::media::I420Image::from_rgb).collect::<Result<_, _>>()?;
    for format in [shaders::PixelFormat::Rgb24, shaders::PixelFormat::I420] {
        let (plan, lut) = worker::models::preprocess::gpu_plan(&cfg, format, 1280, 720, frames)?;
        let bytes: Vec<u8> = match format {
            shaders::PixelFormat::Rgb24 => images.iter().flat_map(|i| i.as_raw().iter().copied()).collect(),
            shaders::PixelFormat::I420 => yuv.iter().flat_map(|i| i.as_raw().iter().copied()).collect(),
        };
        let (bg, tg, lg) = (s.clone_htod(&bytes)?, s.clone_htod(&plan.table)?, s.clone_htod(&lut)?);
        let p = kernels::cuda::PreprocessPlan(plan.params.map(|v| v as i32));
        let g = gpu_ms(&gpu, reps, || {
            kernels::cuda::preprocess_frames::<f32>(&cuda, &bg.slice(..), &tg.slice(..), &lg.slice(..), p)
        })?;
        let cpu = match format {
            shaders::PixelFormat::Rgb24 => {
                cpu_ms(3, || images.iter().map(|i| cfg.pixels(i)).collect::<Result<Vec<_>, _>>())?
            }
            shaders::PixelFormat::I420 => {
                cpu_ms(3, || yuv.iter().map(|i| cfg.pixels_i420(i)).collect::<Result<Vec<_>, _>>())?
            }
        };
        let size = format!("{frames}× 1280×720 → 224²");
        row(&format!("preprocess_frames {format:?}"), &size, bytes.len() + plan.total() * 12, g, cpu);
        let g = gpu_ms(&gpu, reps, || {
            kernels::cuda::preprocess_frames::<kernels::cuda::f16>(
                &cuda,
                &bg.slice(..),
                &tg.slice(..),
                &lg.slice(..),
                p,
            )
        })?;
        row(&format!("preprocess_frames_f16 {format:?}"), &size, bytes.len() + plan.total() * 6, g, f64::NAN);
    }

    // 3. Models, GPU against CPU.
    println!("\n| model | GPU | CPU | speed-up | ‖gpu−cpu‖/‖cpu‖ |\n|---|---:|---:|---:|---:|");
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("clip");
    clip::init_random(&dir, &ClipConfig::vit_b32(), 6)?;
    let (on_cpu, on_gpu) = (Clip::load(&dir, &Device::Cpu)?, Clip::load(&dir, &gpu)?);
    let batch = if quick { 8 } else { 32 };
    let pixels = Tensor::from_vec(normals(&mut rng, batch * 3 * 224 * 224, 1.0), (batch, 3, 224, 224), &Device::Cpu)?;
    let pixels_g = pixels.to_device(&gpu)?;
    let want: Vec<f32> = on_cpu.embed_pixels(&pixels)?.concat();
    let got: Vec<f32> = on_gpu.embed_pixels(&pixels_g)?.concat();
    let e = rel_err(&got, &want);
    let g = gpu_ms(&gpu, reps, || on_gpu.embed_pixels(&pixels_g))?;
    let cpu = cpu_ms(3, || on_cpu.embed_pixels(&pixels))?;
    println!(
        "| CLIP ViT-B/32 image tower, batch {batch} (images/s) | {:.0} | {:.1} | {:.0}× | {e:.1e} |",
        batch as f64 / (g * 1e-3),
        batch as f64 / (cpu * 1e-3),
        cpu / g
    );
    checks.failed += usize::from(e > 1e-3);
    // Whole frames through the processor and the tower on each device (the editor's path).
    let frames = sample_frames(&mut rng, 640, 360, batch);
    let want_rows = on_cpu.embed_images(&frames)?;
    let want: Vec<f32> = want_rows.concat();
    let got: Vec<f32> = on_gpu.embed_images(&frames)?.concat();
    let e = rel_err(&got, &want);
    checks.failed += usize::from(e > 1e-3);
    let g = cpu_ms(reps.min(10), || on_gpu.embed_images(&frames))?;
    let cpu = cpu_ms(3, || on_cpu.embed_images(&frames))?;
    println!(
        "| CLIP ViT-B/32 embed_images (640×360 frames: preprocess + tower), batch {batch} (images/s, host clock) | {:.0} | {:.1} | {:.0}× | {e:.1e} |",
        batch as f64 / (g * 1e-3),
        batch as f64 / (cpu * 1e-3),
        cpu / g
    );
    // `--clip-f16`: the tower in f16 on the GPU against f32 on the CPU (images/s, and the
    // worst cosine between the two embeddings of a frame).
    let on_gpu_f16 = Clip::load_as(&dir, &gpu, DType::F16)?;
    let got = on_gpu_f16.embed_images(&frames)?;
    let worst = got.iter().zip(&want_rows).map(|(g, w)| clip::cosine(g, w)).fold(1f32, f32::min);
    let ok = worst > 0.995;
    checks.failed += usize::from(!ok);
    let g = cpu_ms(reps.min(10), || on_gpu_f16.embed_images(&frames))?;
    println!(
        "| CLIP ViT-B/32 embed_images in f16 (`--clip-f16`), batch {batch} (images/s, host clock) | {:.0} | {:.1} | {:.0}× | worst cosine to f32 {worst:.4} ({}) |",
        batch as f64 / (g * 1e-3),
        batch as f64 / (cpu * 1e-3),
        cpu / g,
        if ok { "ok" } else { "FAIL" }
    );
    let mcfg = if quick { McvdConfig::tiny() } else { McvdConfig::smmnist() };
    let (varmap, model_cpu) = worker::models::mcvd::init_model(&mcfg, 0)?;
    let tensors = varmap_tensors(&varmap)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&gpu)?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
    let model_gpu = worker::models::mcvd::Mcvd::from_tensors(tensors, &mcfg)?;
    let s = mcfg.image_size;
    for b in [1usize, 8] {
        let x = Tensor::from_vec(
            normals(&mut rng, b * mcfg.x_channels() * s * s, 1.0),
            (b, mcfg.x_channels(), s, s),
            &Device::Cpu,
        )?;
        let cond = Tensor::zeros((b, mcfg.cond_channels(), s, s), DType::F32, &Device::Cpu)?;
        let t = Tensor::from_vec(vec![500f32; b], b, &Device::Cpu)?;
        let (xg, cg, tg) = (x.to_device(&gpu)?, cond.to_device(&gpu)?, t.to_device(&gpu)?);
        let want = flat(&model_cpu.forward(&x, &t, &cond, None)?)?;
        let e = rel_err(&flat(&model_gpu.forward(&xg, &tg, &cg, None)?)?, &want);
        checks.failed += usize::from(e > 1e-3);
        let step = |m: &worker::models::mcvd::Mcvd, x: &Tensor, t: &Tensor, c: &Tensor| -> Res<()> {
            let eps = m.forward(x, t, c, None)?;
            drop(kernels::ddpm_step(x, &eps, Some(x), 0.3, Some(0.4))?);
            Ok(())
        };
        let g = gpu_ms(&gpu, reps, || step(&model_gpu, &xg, &tg, &cg))?;
        let cpu = cpu_ms(3, || step(&model_cpu, &x, &t, &cond))?;
        println!(
            "| MCVD {} ({s}², ngf {}) sampling step, batch {b} (ms) | {g:.2} | {cpu:.1} | {:.0}× | {e:.1e} |",
            if quick { "tiny" } else { "smmnist" },
            mcfg.ngf,
            cpu / g
        );
    }
    // A whole DDIM block on each device from the same seed (conditioning, noise and the fused
    // steps all on the model's device).
    let steps = if quick { 5 } else { 25 };
    let block = |m: &worker::models::mcvd::Mcvd| -> Res<Vec<f32>> {
        let d = Diffusion::new(m, SamplerKind::Ddim, steps);
        let cond = d.conditioning(None, None)?;
        flat(&d.sample_block(&cond, None, &mut SeededNoise::new(3))?)
    };
    let t0 = Instant::now();
    let want = block(&model_cpu)?;
    let cpu = t0.elapsed().as_secs_f64() * 1e3;
    let got = block(&model_gpu)?;
    let t0 = Instant::now();
    let got2 = block(&model_gpu)?;
    let g = t0.elapsed().as_secs_f64() * 1e3;
    let e = rel_err(&got, &want).max(rel_err(&got2, &want));
    checks.failed += usize::from(e > 1e-2);
    println!("| MCVD DDIM block, {steps} steps (ms, host clock) | {g:.0} | {cpu:.0} | {:.0}× | {e:.1e} |", cpu / g);

    // Stable Diffusion (the tiny test model: the device threading, not the speed) from one seed.
    let dir = tmp.path().join("sd");
    worker::models::sd::write_tiny(&dir, 5)?;
    let req = worker::models::sd::SdRequest {
        prompt: "a red square".into(),
        steps: 4,
        guidance_scale: 3.0,
        seed: 11,
        ..Default::default()
    };
    let image = |device: &Device| -> Res<Vec<f32>> {
        let sd = worker::models::sd::StableDiffusion::load_on(&dir, device)?;
        Ok(sd.generate(&req, None, &mut |_, _| true)?.as_raw().iter().map(|&v| f32::from(v)).collect())
    };
    let (want, got) = (image(&Device::Cpu)?, image(&gpu)?);
    checks.check("Stable Diffusion (tiny) image, GPU vs CPU", &got, &want, 2e-2);

    println!("\n{} check(s) failed", checks.failed);
    if checks.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Smooth content plus noise, so the filters see both flat areas and edges.
fn sample_frames(rng: &mut SeededNoise, w: u32, h: u32, frames: usize) -> Vec<image::RgbImage> {
    (0..frames)
        .map(|f| {
            image::RgbImage::from_fn(w, h, |x, y| {
                let base = ((x as usize * 7 + y as usize * 3 + f * 50) % 256) as f64;
                image::Rgb(std::array::from_fn(|c| {
                    (base + 60.0 * rng.normal() + 40.0 * c as f64).clamp(0.0, 255.0) as u8
                }))
            })
        })
        .collect()
}
