//! Each WGSL op of `shaders` on whatever adapter wgpu picks, side by side with the worker's CPU
//! reference it is tested against: medians of N runs, and the bytes each call moves (inputs
//! read plus outputs written) per second. The WGSL time is a whole launcher call: upload,
//! dispatch, wait, read-back (pipelines compiled in a warm-up call first).
//!
//! `cargo run --profile dev -p reelforge-worker --example shaders_bench -- [RUNS]` (default 10).

mod timing;

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use shaders::Gpu;
use worker::models::diffusion::{Schedule, SeededNoise};
use worker::models::preprocess::{ImageProcessorConfig, gpu_tables};
use worker::models::upfirdn::{self, FIR_KERNEL, Resample, kernel_2d, upfirdn2d_reference};
use worker::watermark::dct::{self, BAND};
use worker::watermark::plane::Plane;

/// One warm-up call (pipelines compile, buffers allocate), then the median of `runs`.
fn time<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    f();
    timing::time(runs, f)
}

fn row(op: &str, size: &str, bytes: usize, wgsl: f64, cpu: f64, cpu_name: &str) {
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    println!(
        "{op:<16} {size:<22} {:>8.2} MB  WGSL {:>9.3} ms {:>6.2} GB/s   CPU {:>9.3} ms {:>6.2} GB/s  ({cpu_name})",
        bytes as f64 / 1e6,
        wgsl * 1e3,
        gbs(wgsl),
        cpu * 1e3,
        gbs(cpu),
    );
}

fn normals(rng: &mut SeededNoise, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let t = Instant::now();
    let gpu = Gpu::new()?;
    println!(
        "adapter: {} (device created in {:.0} ms); medians of {runs} runs",
        gpu.describe(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut rng = SeededNoise::new(1);
    let dev = Device::Cpu;

    // GroupNorm + SiLU, an MCVD feature map.
    let (n, c, h, w, groups) = (2, 128, 64, 64, 32);
    let x = normals(&mut rng, n * c * h * w);
    let (weight, bias) = (normals(&mut rng, c), normals(&mut rng, c));
    let xt = Tensor::from_vec(x.clone(), (n, c, h, w), &dev)?;
    let gn = candle_nn::GroupNorm::new(
        Tensor::from_vec(weight.clone(), c, &dev)?,
        Tensor::from_vec(bias.clone(), c, &dev)?,
        c,
        groups,
        1e-6,
    )?;
    let dims = shaders::NchwGroups { n, c, h, w, groups };
    let wgsl = time(runs, || drop(shaders::group_norm_silu(&gpu, &x, dims, &weight, &bias, 1e-6).unwrap()));
    let cpu = time(runs, || drop(gn.forward(&xt).unwrap().silu().unwrap()));
    row("group_norm_silu", &format!("{n}x{c}x{h}x{w}/{groups}"), 2 * x.len() * 4, wgsl, cpu, "candle GroupNorm+silu");

    // Sampler steps over a 16-frame 64×64 RGB block.
    let len = 16 * 3 * 64 * 64;
    let (x, eps, noise) = (normals(&mut rng, len), normals(&mut rng, len), normals(&mut rng, len));
    let (xt, et, nt) = (
        Tensor::from_vec(x.clone(), len, &dev)?,
        Tensor::from_vec(eps.clone(), len, &dev)?,
        Tensor::from_vec(noise.clone(), len, &dev)?,
    );
    let s = Schedule::linear(1000, 1e-4, 0.02);
    let (a, ap) = (s.alphas_cumprod[500], Some(s.alphas_cumprod[450]));
    let wgsl = time(runs, || drop(shaders::ddim_step(&gpu, &x, &eps, a, ap).unwrap()));
    let cpu = time(runs, || drop(s.ddim_step(&xt, &et, 500, Some(450)).unwrap()));
    row("ddim_step", &format!("{len}"), 3 * len * 4, wgsl, cpu, "Schedule::ddim_step");
    let wgsl = time(runs, || drop(shaders::ddpm_step(&gpu, &x, &eps, &noise, a, ap).unwrap()));
    let cpu = time(runs, || drop(s.ddpm_step(&xt, &et, 500, Some(450), &nt).unwrap()));
    row("ddpm_step", &format!("{len}"), 4 * len * 4, wgsl, cpu, "Schedule::ddpm_step");

    // ×2 FIR upsampling of an MCVD feature map.
    let (planes, h, w) = (2 * 64, 64, 64);
    let x = normals(&mut rng, planes * h * w);
    let k = kernel_2d(&FIR_KERNEL, 4.0);
    let r = Resample::up2(4);
    let fr = shaders::FirResample { up: r.up, down: r.down, pad0: r.pad0, pad1: r.pad1 };
    let bytes = (x.len() + 4 * x.len()) * 4;
    let wgsl = time(runs, || drop(shaders::upfirdn2d(&gpu, &x, [planes, h, w], &k, 4, fr).unwrap()));
    let cpu = time(runs, || drop(upfirdn2d_reference(&x, planes, h, w, &k, 4, r)));
    row("upfirdn2d up2", &format!("{planes}x{h}x{w}"), bytes, wgsl, cpu, "upfirdn2d_reference");
    let xt = Tensor::from_vec(x.clone(), (2, 64, h, w), &dev)?;
    let cpu = time(runs, || drop(upfirdn::upsample_2d(&xt).unwrap()));
    row("upfirdn2d up2", &format!("{planes}x{h}x{w}"), bytes, wgsl, cpu, "candle upsample_2d");

    // Watermark on the 256 canonical grid.
    let size = 256;
    let luma: Vec<f32> = (0..size * size).map(|_| rng.uniform() as f32 * 255.0).collect();
    let plane = Plane { width: size, height: size, data: luma.clone() };
    let blocks = size / 8;
    let slots = blocks * blocks * BAND.len();
    let chips: Vec<f32> = (0..slots).map(|_| if rng.next_u64() & 1 == 1 { 1.0 } else { -1.0 }).collect();
    let wgsl = time(runs, || drop(shaders::dct_correlate(&gpu, &luma, size, size, &chips).unwrap()));
    let cpu = time(runs, || drop(dct::plane_correlation(&plane, &chips)));
    row("dct_correlate", &format!("{size}x{size}"), (luma.len() + 2 * slots) * 4, wgsl, cpu, "dct::plane_correlation");
    let amps = normals(&mut rng, slots);
    let wgsl = time(runs, || drop(shaders::dct_embed(&gpu, &luma, size, size, &amps).unwrap()));
    let cpu = time(runs, || drop(dct::plane_embed(&plane, &amps)));
    row("dct_embed", &format!("{size}x{size}"), (2 * luma.len() + slots) * 4, wgsl, cpu, "dct::plane_embed");

    // CLIP preprocess of one 720p frame, from packed RGB24 and from planar I420.
    let cfg = ImageProcessorConfig::default();
    let (fw, fh) = (1280u32, 720u32);
    let img =
        image::RgbImage::from_fn(fw, fh, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8]));
    let yuv = worker::media::I420Image::from_rgb(&img)?;
    let tables = gpu_tables(&cfg, fw, fh);
    let (ch, cw) = cfg.crop();
    for (format, input) in
        [(shaders::PixelFormat::Rgb24, img.as_raw().as_slice()), (shaders::PixelFormat::I420, yuv.as_raw())]
    {
        let p = tables.frame(format);
        let bytes = input.len() + 3 * (ch * cw) as usize * 4;
        let wgsl = time(runs, || drop(shaders::preprocess_frames(&gpu, input, 1, &p).unwrap()));
        let (name, cpu, reference) = match format {
            shaders::PixelFormat::Rgb24 => {
                ("preprocess", time(runs, || drop(cfg.pixels(&img).unwrap())), "ImageProcessorConfig::pixels")
            }
            shaders::PixelFormat::I420 => (
                "preprocess (I420)",
                time(runs, || drop(cfg.pixels_i420(&yuv).unwrap())),
                "ImageProcessorConfig::pixels_i420",
            ),
        };
        row(name, &format!("{fw}x{fh} → {cw}x{ch}"), bytes, wgsl, cpu, reference);
    }
    Ok(())
}
