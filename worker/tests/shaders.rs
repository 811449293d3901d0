//! The WGSL shaders of `shaders` against the worker's CPU references, on whatever adapter wgpu
//! finds (lavapipe, Vulkan on the CPU, in CI). Each test runs several shapes, some not a
//! multiple of the workgroup size, on seeded random inputs, with every output buffer poisoned
//! (0xFFFFFFFF: NaN as f32) so a shader that skips an element fails, and checks the relative
//! error ‖gpu − cpu‖ / ‖cpu‖ against a bound stated per op.
//!
//! No adapter is a failure, with the reason (CI installs lavapipe: mesa-vulkan-drivers and
//! libvulkan1), unless `REELFORGE_SKIP_GPU_TESTS=1`, which turns every test here into a pass
//! that prints why it skipped.

use std::sync::OnceLock;

use candle_core::{Device, Module, Tensor};
use shaders::Gpu;
use worker::models::diffusion::SeededNoise;

/// The shared device with output poisoning on, or `None` when skipping.
fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        Gpu::new()
            .inspect(|g| {
                g.set_poison(true);
                eprintln!("adapter: {}", g.describe());
            })
            .map_err(|e| e.to_string())
    });
    match g {
        Ok(g) => Some(g),
        Err(e) if std::env::var("REELFORGE_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipped (REELFORGE_SKIP_GPU_TESTS=1): {e}");
            None
        }
        Err(e) => panic!("{e}\n(set REELFORGE_SKIP_GPU_TESTS=1 to skip the WGSL tests on a machine without one)"),
    }
}

fn normals(rng: &mut SeededNoise, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

/// ‖got − want‖ / ‖want‖, after checking lengths and that every value is finite.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "output length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("element {i} is {} (not written?), want {}", got[i], want[i]);
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

fn check(op: &str, shape: &str, got: &[f32], want: &[f32], bound: f64) {
    let e = rel_err(got, want);
    eprintln!("{op} {shape}: relative error {e:.3e} (bound {bound:.0e})");
    assert!(e <= bound, "{op} {shape}: relative error {e:.3e} over {bound:.0e}");
}

/// GroupNorm sums in a different order from candle's CPU loop (a tree in the workgroup), so
/// the mean and variance differ by a few ulps of the sums.
const GROUP_NORM_BOUND: f64 = 2e-6;

#[test]
fn group_norm_silu_matches_candle() {
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(9);
    // (n, c, h, w, groups): group sizes below, at and above the workgroup, odd planes, an
    // MCVD-sized 32 768-value group, and more groups (67 200) than one dispatch dimension holds.
    for (n, c, h, w, groups) in [
        (1, 4, 1, 1, 2),
        (2, 8, 5, 7, 4),
        (1, 32, 16, 16, 8),
        (3, 12, 9, 11, 3),
        (2, 64, 32, 32, 32),
        (1, 6, 33, 17, 1),
        (1, 256, 64, 64, 32),
        (2100, 32, 1, 1, 32),
    ] {
        let x = normals(&mut rng, n * c * h * w, 2.0);
        let x: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + (i / (h * w) % 3) as f32).collect();
        let weight = normals(&mut rng, c, 1.0);
        let bias = normals(&mut rng, c, 0.5);
        let dev = Device::Cpu;
        let xt = Tensor::from_vec(x.clone(), (n, c, h, w), &dev).unwrap();
        let gn = candle_nn::GroupNorm::new(
            Tensor::from_vec(weight.clone(), c, &dev).unwrap(),
            Tensor::from_vec(bias.clone(), c, &dev).unwrap(),
            c,
            groups,
            1e-6,
        )
        .unwrap();
        let want = gn.forward(&xt).unwrap().silu().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dims = shaders::NchwGroups { n, c, h, w, groups };
        let got = shaders::group_norm_silu(gpu, &x, dims, &weight, &bias, 1e-6).unwrap();
        check("group_norm_silu", &format!("{n}x{c}x{h}x{w}/{groups}"), &got, &want, GROUP_NORM_BOUND);
    }
}

#[test]
fn group_norm_silu_takes_per_item_scale_and_shift() {
    // MCVD's ada-norm: a scale and shift per (batch item, channel).
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(10);
    let (n, c, h, w, groups) = (3, 8, 6, 5, 4);
    let x = normals(&mut rng, n * c * h * w, 1.5);
    let weight = normals(&mut rng, n * c, 1.0);
    let bias = normals(&mut rng, n * c, 0.5);
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(x.clone(), (n, c, h, w), &dev).unwrap();
    let ones = Tensor::ones(c, candle_core::DType::F32, &dev).unwrap();
    let zeros = Tensor::zeros(c, candle_core::DType::F32, &dev).unwrap();
    let normed = candle_nn::GroupNorm::new(ones, zeros, c, groups, 1e-6).unwrap().forward(&xt).unwrap();
    let wt = Tensor::from_vec(weight.clone(), (n, c, 1, 1), &dev).unwrap();
    let bt = Tensor::from_vec(bias.clone(), (n, c, 1, 1), &dev).unwrap();
    let want = normed.broadcast_mul(&wt).unwrap().broadcast_add(&bt).unwrap().silu().unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got =
        shaders::group_norm_silu(gpu, &x, shaders::NchwGroups { n, c, h, w, groups }, &weight, &bias, 1e-6).unwrap();
    check("group_norm_silu (per item)", &format!("{n}x{c}x{h}x{w}/{groups}"), &got, &want, GROUP_NORM_BOUND);
}

/// The sampler steps repeat candle's f32 arithmetic with the same f32 scalars; only a fused
/// multiply-add the shader compiler may form differs, by an ulp.
const STEP_BOUND: f64 = 1e-6;

#[test]
fn ddim_and_ddpm_steps_match_the_schedule() {
    use worker::models::diffusion::Schedule;
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(11);
    let schedule = Schedule::linear(1000, 1e-4, 0.02);
    // (len, t, t_prev): noisy and late steps, the last step to x₀, lengths around the workgroup.
    for (len, t, t_prev) in [(1, 999, Some(949)), (255, 500, Some(450)), (257, 20, Some(0)), (4 * 3 * 17 * 19, 0, None)]
    {
        // x_t scaled as at step t, ε standard normal: x₀ lands both inside and beyond [−1, 1].
        let x = normals(&mut rng, len, 1.3);
        let eps = normals(&mut rng, len, 1.0);
        let noise = normals(&mut rng, len, 1.0);
        let dev = Device::Cpu;
        let (xt, et, nt) = (
            Tensor::from_vec(x.clone(), len, &dev).unwrap(),
            Tensor::from_vec(eps.clone(), len, &dev).unwrap(),
            Tensor::from_vec(noise.clone(), len, &dev).unwrap(),
        );
        let (a, a_prev) = (schedule.alphas_cumprod[t], t_prev.map(|p| schedule.alphas_cumprod[p]));
        let shape = format!("len {len}, t {t} → {t_prev:?}");

        let want = schedule.ddim_step(&xt, &et, t, t_prev).unwrap().to_vec1::<f32>().unwrap();
        let got = shaders::ddim_step(gpu, &x, &eps, a, a_prev).unwrap();
        check("ddim_step", &shape, &got, &want, STEP_BOUND);

        let want = schedule.ddpm_step(&xt, &et, t, t_prev, &nt).unwrap().to_vec1::<f32>().unwrap();
        let got = shaders::ddpm_step(gpu, &x, &eps, &noise, a, a_prev).unwrap();
        check("ddpm_step", &shape, &got, &want, STEP_BOUND);
    }
}

/// upfirdn2d sums the same products in the same order as the reference loop.
const UPFIRDN_BOUND: f64 = 1e-6;

#[test]
fn upfirdn2d_matches_the_reference_loop() {
    use worker::models::upfirdn::{FIR_KERNEL, Resample, kernel_2d, upfirdn2d_reference};
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(12);
    let asymmetric: Vec<f32> = (0..9).map(|i| i as f32 - 3.0).collect();
    let cases: [(usize, usize, usize, Vec<f32>, usize, Resample); 6] = [
        (6, 8, 6, kernel_2d(&FIR_KERNEL, 4.0), 4, Resample::up2(4)),
        (6, 8, 6, kernel_2d(&FIR_KERNEL, 1.0), 4, Resample::down2(4)),
        (5, 9, 13, asymmetric, 3, Resample { up: 1, down: 1, pad0: 1, pad1: 1 }),
        (2 * 64, 32, 32, kernel_2d(&FIR_KERNEL, 4.0), 4, Resample::up2(4)),
        (3, 17, 31, kernel_2d(&FIR_KERNEL, 1.0), 4, Resample { up: 3, down: 2, pad0: 2, pad1: 1 }),
        // Padding wider than the upsampling: whole rows and columns of padded zeros.
        (2, 11, 7, (0..16).map(|i| (i as f32).sin()).collect(), 4, Resample { up: 2, down: 3, pad0: 5, pad1: 4 }),
    ];
    for (planes, h, w, kernel, taps, r) in cases {
        let x = normals(&mut rng, planes * h * w, 1.0);
        let want = upfirdn2d_reference(&x, planes, h, w, &kernel, taps, r);
        let fr = shaders::FirResample { up: r.up, down: r.down, pad0: r.pad0, pad1: r.pad1 };
        let got = shaders::upfirdn2d(gpu, &x, [planes, h, w], &kernel, taps, fr).unwrap();
        check("upfirdn2d", &format!("{planes}x{h}x{w} {taps}-tap {r:?}"), &got, &want, UPFIRDN_BOUND);
    }
}

/// The DCT shaders sum the same products in the same order as `watermark::dct`.
const DCT_BOUND: f64 = 1e-6;

#[test]
fn dct_correlation_matches_block_correlation_and_project() {
    use worker::watermark::dct::{self, BAND};
    use worker::watermark::embed::project;
    use worker::watermark::pattern::Pattern;
    use worker::watermark::plane::Plane;
    let Some(gpu) = gpu() else { return };
    assert_eq!(shaders::watermark::BAND, BAND, "the shader's band is the worker's");
    let mut rng = SeededNoise::new(13);
    // Planes with partial blocks at the right and bottom edges, and the canonical grids.
    for (w, h) in [(8, 8), (100, 77), (64, 64), (256, 256), (333, 41)] {
        let luma: Vec<f32> = (0..w * h).map(|_| rng.uniform() as f32 * 255.0).collect();
        let plane = Plane { width: w, height: h, data: luma.clone() };
        let (bx, by) = (w / 8, h / 8);
        let chips: Vec<f32> =
            (0..bx * by * BAND.len()).map(|_| if rng.next_u64() & 1 == 1 { 1.0 } else { -1.0 }).collect();
        let want = dct::plane_correlation(&plane, &chips);
        let got = shaders::dct_correlate(gpu, &luma, w, h, &chips).unwrap();
        check("dct_correlate", &format!("{w}x{h}"), &got, &want, DCT_BOUND);
    }
    // Detection's projection on a canonical grid: slots summed per coded bit.
    let key = worker::watermark::WatermarkKey::new(b"shader test key".to_vec());
    for size in [64, 128, 256] {
        let pattern = Pattern::new(&key, size, worker::watermark::embed::CODED_BITS);
        let luma: Vec<f32> = (0..size * size).map(|_| rng.uniform() as f32 * 255.0).collect();
        let plane = Plane { width: size, height: size, data: luma.clone() };
        let want = project(&plane, &pattern);
        let slots = shaders::dct_correlate(gpu, &luma, size, size, &pattern.chip).unwrap();
        let mut got = vec![0f32; pattern.count.len()];
        for (s, v) in slots.iter().enumerate() {
            got[pattern.bit[s] as usize] += v;
        }
        check("dct_correlate → project", &format!("{size}x{size}"), &got, &want, DCT_BOUND);
    }
}

#[test]
fn dct_embed_adds_block_delta() {
    use worker::watermark::dct::{self, BAND};
    use worker::watermark::plane::Plane;
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(14);
    for (w, h) in [(8, 8), (100, 77), (64, 64), (256, 256), (19, 250)] {
        let (bx, by) = (w / 8, h / 8);
        let mut amps = normals(&mut rng, bx * by * BAND.len(), 5.0);
        // Some zero amplitudes, as pushes of satisfied bits are.
        amps.iter_mut().step_by(5).for_each(|a| *a = 0.0);
        for base in [0.0f32, 1.0] {
            let luma: Vec<f32> = (0..w * h).map(|_| base * rng.uniform() as f32 * 255.0).collect();
            let want = dct::plane_embed(&Plane { width: w, height: h, data: luma.clone() }, &amps).data;
            let got = shaders::dct_embed(gpu, &luma, w, h, &amps).unwrap();
            let what = if base == 0.0 { "delta" } else { "plane + delta" };
            check("dct_embed", &format!("{w}x{h} {what}"), &got, &want, DCT_BOUND);
        }
    }
}

/// The preprocess is integer arithmetic and a table lookup: exactly the CPU's.
const PREPROCESS_BOUND: f64 = 0.0;

#[test]
fn preprocess_frames_matches_the_image_processor_exactly() {
    use worker::media::I420Image;
    use worker::models::preprocess::ImageProcessorConfig;
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededNoise::new(15);
    let clip = ImageProcessorConfig::default();
    // Downscales (antialiased), upscales, a frame already at size (no resize), a crop wider or
    // taller than the resized image (zero padding), odd sizes, several frames at once.
    let cases = [
        (clip.clone(), 320, 240, 2),
        (clip.clone(), 1280, 720, 1),
        (ImageProcessorConfig::square(64), 37, 53, 3),
        (ImageProcessorConfig::square(224), 224, 224, 1),
        (ImageProcessorConfig::square(32), 101, 17, 2),
        (
            ImageProcessorConfig {
                crop_size: worker::models::preprocess::SizeSpec::Exact { height: 40, width: 70 },
                ..ImageProcessorConfig::square(48)
            },
            90,
            61,
            1,
        ),
        (
            ImageProcessorConfig {
                crop_size: worker::models::preprocess::SizeSpec::Exact { height: 40, width: 50 },
                ..ImageProcessorConfig::square(32)
            },
            23,
            150,
            2,
        ),
    ];
    for (cfg, w, h, frames) in cases {
        // Smooth content plus noise, so the filters see both flat areas and edges.
        let images: Vec<image::RgbImage> = (0..frames)
            .map(|f| {
                image::RgbImage::from_fn(w, h, |x, y| {
                    let base = ((x * 7 + y * 3 + f * 50) % 256) as f64;
                    image::Rgb(std::array::from_fn(|c| {
                        (base + 60.0 * rng.normal() + 40.0 * c as f64).clamp(0.0, 255.0) as u8
                    }))
                })
            })
            .collect();
        let tables = worker::models::preprocess::gpu_tables(&cfg, w, h);
        let (crop_h, crop_w) = cfg.crop();
        let run = |format: shaders::PixelFormat, bytes: &[u8]| {
            shaders::preprocess_frames(gpu, bytes, frames as usize, &tables.frame(format)).unwrap()
        };
        // Packed RGB24.
        let want: Vec<f32> = images.iter().flat_map(|img| cfg.pixels(img).unwrap()).collect();
        let rgb: Vec<u8> = images.iter().flat_map(|img| img.as_raw().iter().copied()).collect();
        let got = run(shaders::PixelFormat::Rgb24, &rgb);
        let shape = format!("{frames}x {w}x{h} → {crop_w}x{crop_h}");
        check("preprocess_frames", &shape, &got, &want, PREPROCESS_BOUND);
        assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{shape}: not bit-exact");
        // The same frames as planar I420 (odd sizes share edge chroma), and raw random planes
        // (codes outside BT.601's range, so the conversion clamps), converted in the shader.
        let converted: Vec<I420Image> = images.iter().map(|img| I420Image::from_rgb(img).unwrap()).collect();
        let random: Vec<I420Image> = (0..frames)
            .map(|_| {
                let n = I420Image::frame_bytes(w, h);
                let data = (0..n).map(|_| (128.0 + 90.0 * rng.normal()).clamp(0.0, 255.0) as u8).collect();
                I420Image::new(w, h, data).unwrap()
            })
            .collect();
        for (what, yuv) in [("converted", converted), ("random", random)] {
            let want: Vec<f32> = yuv.iter().flat_map(|img| cfg.pixels_i420(img).unwrap()).collect();
            let bytes: Vec<u8> = yuv.iter().flat_map(|img| img.as_raw().iter().copied()).collect();
            let got = run(shaders::PixelFormat::I420, &bytes);
            let shape = format!("I420 ({what}) {shape}");
            check("preprocess_frames", &shape, &got, &want, PREPROCESS_BOUND);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{shape}: not bit-exact");
        }
    }
}
