//! MCVD's evaluation: PSNR and SSIM of predicted frames on held-out synthetic sequences, for
//! the model and for the classical baselines (copy-last-frame, linear extrapolation).

use image::RgbImage;
use protocol::SamplerKind;

use super::TrainError;
use super::data::SyntheticShapes;
use crate::models::baseline;
use crate::models::diffusion::{Diffusion, SeededNoise, frame_to_tensor, tensor_to_frame};
use crate::models::mcvd::Mcvd;

/// The seed of the held-out set; training draws sequence indices from its own stream, so the
/// two never share a generator.
pub const HELD_OUT_SEED: u64 = 0xE7A1_5EED;

/// PSNR in dB between two frames of one size (peak 255); 100 for identical frames.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let n = a.as_raw().len() as f64;
    let mse: f64 =
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / n;
    if mse == 0.0 { 100.0 } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

/// SSIM (Wang et al. 2004: 11×11 Gaussian window, σ 1.5, K1 0.01, K2 0.03), mean over the
/// valid windows and the three channels. The window shrinks to the frame on tiny frames.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (w, h) = (a.width() as usize, a.height() as usize);
    let win = 11.min(w).min(h);
    let sigma = 1.5;
    let centre = (win as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..win).map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let gs: f64 = g.iter().sum();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (ra, rb) = (a.as_raw(), b.as_raw());
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..3 {
        let px = |r: &[u8], x: usize, y: usize| f64::from(r[(y * w + x) * 3 + ch]);
        for y0 in 0..=h - win {
            for x0 in 0..=w - win {
                let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for dy in 0..win {
                    for dx in 0..win {
                        let k = g[dy] * g[dx] / (gs * gs);
                        let (va, vb) = (px(ra, x0 + dx, y0 + dy), px(rb, x0 + dx, y0 + dy));
                        ma += k * va;
                        mb += k * vb;
                        saa += k * va * va;
                        sbb += k * vb * vb;
                        sab += k * va * vb;
                    }
                }
                let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count as f64
}

/// One method's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// The method.
    pub method: String,
    /// Mean PSNR over predicted frames, dB.
    pub psnr: f64,
    /// Mean SSIM over predicted frames.
    pub ssim: f64,
}

/// What to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Held-out sequences.
    pub sequences: usize,
    /// Frames predicted per sequence.
    pub frames: usize,
    /// Sampler.
    pub sampler: SamplerKind,
    /// Sampler steps per block.
    pub steps: usize,
    /// Seed of the sampler noise.
    pub seed: u64,
}

/// Scores MCVD's prediction against the baselines on `opts.sequences` held-out sequences:
/// each gets `num_frames_cond` past frames and must predict `opts.frames` more.
pub fn evaluate(model: &Mcvd, opts: &EvalOptions) -> Result<Vec<EvalRow>, TrainError> {
    let cfg = model.config();
    let s = cfg.image_size as u32;
    let set = SyntheticShapes::new(s, HELD_OUT_SEED);
    let diffusion = Diffusion::new(model, opts.sampler, opts.steps);
    let mut rng = SeededNoise::new(opts.seed);
    let names = [
        format!("MCVD ({:?}, {} steps)", opts.sampler, opts.steps).to_lowercase(),
        "copy last frame".to_owned(),
        "linear extrapolation".to_owned(),
    ];
    let mut sums = [(0.0f64, 0.0f64); 3];
    let mut n = 0usize;
    for i in 0..opts.sequences {
        let seq = set.sequence(i as u64, cfg.num_frames_cond + opts.frames);
        // Everything through the model's colour space (grey models compare grey frames).
        let tensors = seq.iter().map(|f| frame_to_tensor(f, cfg)).collect::<Result<Vec<_>, _>>()?;
        let frames = tensors.iter().map(|t| tensor_to_frame(t, s, s)).collect::<Result<Vec<_>, _>>()?;
        let (past, truth) = frames.split_at(cfg.num_frames_cond);
        let predicted = diffusion
            .predict(&tensors[..cfg.num_frames_cond], opts.frames, &mut rng)?
            .iter()
            .map(|t| tensor_to_frame(t, s, s))
            .collect::<Result<Vec<_>, _>>()?;
        let last = past.last().expect("at least one past frame");
        let prev = past.len().checked_sub(2).map_or(last, |i| &past[i]);
        let outputs =
            [predicted, baseline::copy_last(last, opts.frames), baseline::linear_extrapolate(prev, last, opts.frames)];
        for (sum, out) in sums.iter_mut().zip(&outputs) {
            for (p, t) in out.iter().zip(truth) {
                sum.0 += psnr(p, t);
                sum.1 += ssim(p, t);
            }
        }
        n += opts.frames;
    }
    Ok(names
        .into_iter()
        .zip(sums)
        .map(|(method, (p, q))| EvalRow { method, psnr: p / n.max(1) as f64, ssim: q / n.max(1) as f64 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_frames_score_perfectly_and_noise_scores_less() {
        let a = RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 90]));
        assert_eq!(psnr(&a, &a), 100.0);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
        let mut b = a.clone();
        for (i, p) in b.pixels_mut().enumerate() {
            p.0[0] = p.0[0].saturating_add((i % 7) as u8 * 9);
        }
        assert!(psnr(&a, &b) < 40.0);
        assert!(ssim(&a, &b) < 0.99);
        // A uniform error of 16 levels: 20·log10(255/16).
        let c = RgbImage::from_pixel(8, 8, image::Rgb([100, 100, 100]));
        let d = RgbImage::from_pixel(8, 8, image::Rgb([116, 116, 116]));
        assert!((psnr(&c, &d) - 20.0 * (255.0f64 / 16.0).log10()).abs() < 1e-9);
    }
}
