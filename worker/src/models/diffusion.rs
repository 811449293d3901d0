//! `diffusion` owns MCVD's denoising diffusion around the score network: the linear β schedule
//! (T = 1000, 1e-4 → 0.02), `q_sample`, the DDPM (ancestral, on a subsampled schedule) and DDIM
//! (η = 0) steps, the seeded noise source ([`SeededNoise`], deterministic on every platform) and
//! [`Diffusion`], which turns a model into videos: predict, interpolate, generate and edit
//! (SDEdit), block after block until the requested frame count is reached. Frames are `(C, S,
//! S)` tensors in [-1, 1]; [`frame_to_tensor`] and [`tensor_to_frame`] convert from and to RGB.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use image::imageops::FilterType;
use protocol::SamplerKind;

use super::mcvd::{Mcvd, McvdConfig, McvdError};
use crate::batching::Batcher;

/// A seeded pseudo-random source (SplitMix64; Box–Muller for normals). candle's CPU RNG cannot
/// be seeded, so every random draw of sampling and training goes through this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededNoise {
    state: u64,
}

impl SeededNoise {
    /// A source for `seed`.
    pub fn new(seed: u64) -> Self {
        SeededNoise { state: seed ^ 0x4d43_5644_0000_0001 }
    }

    /// The internal state, to resume the same stream later.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A source continuing from a [`state`](Self::state).
    pub fn from_state(state: u64) -> Self {
        SeededNoise { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A tensor of standard normals on the CPU.
    pub fn normal_tensor(&mut self, shape: &[usize]) -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }
}

/// ᾱ_t = Π_{s ≤ t} (1 − β_s): the one cumulative product both diffusion models' schedules use
/// (MCVD's [`Schedule`] and Stable Diffusion's).
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// The noise schedule: β linear from `beta_start` to `beta_end` over T steps, and ᾱ.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// β_t, t = 0..T.
    pub betas: Vec<f64>,
    /// ᾱ_t = Π_{s ≤ t} (1 − β_s).
    pub alphas_cumprod: Vec<f64>,
}

impl Schedule {
    /// The linear schedule.
    pub fn linear(steps: usize, beta_start: f64, beta_end: f64) -> Self {
        let betas: Vec<f64> =
            (0..steps).map(|i| beta_start + (beta_end - beta_start) * i as f64 / (steps - 1) as f64).collect();
        let alphas_cumprod = alphas_cumprod(&betas);
        Schedule { betas, alphas_cumprod }
    }

    /// The schedule of a model's configuration.
    pub fn for_config(cfg: &McvdConfig) -> Self {
        Self::linear(cfg.num_classes, cfg.sigma_end, cfg.sigma_begin)
    }

    /// T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Never true for a built schedule.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// ᾱ at `t`, or 1 before the first step.
    pub fn alpha_bar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alphas_cumprod[t])
    }

    /// `n` steps from `t_max` down to the first, evenly spaced, descending; the first is
    /// `t_max` itself.
    pub fn timesteps(t_max: usize, n: usize) -> Vec<usize> {
        let n = n.clamp(1, t_max + 1);
        (0..n).rev().map(|i| (i + 1) * (t_max + 1) / n - 1).collect()
    }

    /// x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, with one `t` per batch item.
    pub fn q_sample(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> candle_core::Result<Tensor> {
        let b = x0.dim(0)?;
        assert_eq!(t.len(), b, "one step per batch item");
        let shape = [b, 1, 1, 1];
        let a: Vec<f32> = t.iter().map(|&t| self.alphas_cumprod[t].sqrt() as f32).collect();
        let s: Vec<f32> = t.iter().map(|&t| (1.0 - self.alphas_cumprod[t]).sqrt() as f32).collect();
        let a = Tensor::from_vec(a, &shape[..x0.rank()], x0.device())?;
        let s = Tensor::from_vec(s, &shape[..x0.rank()], x0.device())?;
        x0.broadcast_mul(&a)? + noise.broadcast_mul(&s)?
    }

    /// DDIM (η = 0) from step `t` to `t_prev` (`None`: to x₀), with ε recomputed from the
    /// clipped x₀: one fused pass ([`kernels::ddim_step`], on the CPU or CUDA).
    pub fn ddim_step(&self, x: &Tensor, eps: &Tensor, t: usize, t_prev: Option<usize>) -> candle_core::Result<Tensor> {
        kernels::ddim_step(x, eps, self.alphas_cumprod[t], t_prev.map(|t| self.alphas_cumprod[t]))
    }

    /// Ancestral DDPM from step `t` to `t_prev` on a subsampled schedule (β of the jump
    /// 1 − ᾱ_t/ᾱ_prev); `noise` is used unless this is the last step. One fused pass
    /// ([`kernels::ddpm_step`], on the CPU or CUDA).
    pub fn ddpm_step(
        &self,
        x: &Tensor,
        eps: &Tensor,
        t: usize,
        t_prev: Option<usize>,
        noise: &Tensor,
    ) -> candle_core::Result<Tensor> {
        kernels::ddpm_step(x, eps, Some(noise), self.alphas_cumprod[t], t_prev.map(|t| self.alphas_cumprod[t]))
    }
}

/// The SDEdit strength of `edit` jobs: the clip is noised to step ⌊0.5·T⌋, then denoised.
pub const EDIT_STRENGTH: f64 = 0.5;

/// A model with its schedule and sampler: makes videos.
pub struct Diffusion<'m> {
    model: &'m Mcvd,
    /// Runs the model's forward calls batched with other tasks' (none: called directly).
    batcher: Option<&'m Batcher>,
    schedule: Schedule,
    /// DDPM or DDIM.
    pub sampler: SamplerKind,
    /// Denoising steps for a full (pure-noise) block.
    pub steps: usize,
}

impl<'m> Diffusion<'m> {
    /// A diffusion over `model` with `steps` denoising steps of `sampler`.
    pub fn new(model: &'m Mcvd, sampler: SamplerKind, steps: usize) -> Self {
        Diffusion { model, batcher: None, schedule: Schedule::for_config(model.config()), sampler, steps: steps.max(1) }
    }

    /// The same diffusion, its forward calls batched across tasks through `batcher` (a batcher
    /// over this model's forward, [`batched_forward`]).
    pub fn with_batcher(mut self, batcher: &'m Batcher) -> Self {
        self.batcher = Some(batcher);
        self
    }

    /// Predicted noise for `x` at step `t`.
    fn eps(&self, x: &Tensor, t: usize, cond: &Tensor) -> Result<Tensor, McvdError> {
        let tt = Tensor::from_vec(vec![t as f32], 1, self.model.device())?;
        match self.batcher {
            None => self.model.forward(x, &tt, cond, None),
            Some(b) => Ok(b.run(vec![x.clone(), tt, cond.clone()])?),
        }
    }

    fn cfg(&self) -> &McvdConfig {
        self.model.config()
    }

    /// The conditioning tensor `(1, (past+future)·C, S, S)`: the last `num_frames_cond` frames
    /// of `past` (the first repeated when there are fewer) and the first `num_frames_future`
    /// frames of `future`; an absent block is zeros (its mask is off).
    pub fn conditioning(&self, past: Option<&[Tensor]>, future: Option<&[Tensor]>) -> candle_core::Result<Tensor> {
        let cfg = self.cfg();
        let s = cfg.image_size;
        let dev = self.model.device();
        let zeros = |n: usize| Tensor::zeros((1, n * cfg.channels, s, s), DType::F32, dev);
        let block =
            |frames: Option<&[Tensor]>, n: usize, from_end: bool| match frames.filter(|f| !f.is_empty() && n > 0) {
                None => zeros(n),
                Some(f) => {
                    let picked: Vec<Tensor> = (0..n)
                        .map(|i| {
                            let idx = if from_end { (f.len() + i).saturating_sub(n) } else { i.min(f.len() - 1) };
                            f[idx].to_device(dev)
                        })
                        .collect::<candle_core::Result<_>>()?;
                    Tensor::cat(&picked, 0)?.unsqueeze(0)
                }
            };
        let p = block(past, cfg.num_frames_cond, true)?;
        let f = block(future, cfg.num_frames_future, false)?;
        Tensor::cat(&[p, f], 1)
    }

    /// One block of `num_frames` frames. From pure noise, or (SDEdit) from `start` noised to
    /// step `⌊strength·T⌋`.
    pub fn sample_block(
        &self,
        cond: &Tensor,
        start: Option<(&Tensor, f64)>,
        rng: &mut SeededNoise,
    ) -> Result<Tensor, McvdError> {
        let cfg = self.cfg();
        let s = cfg.image_size;
        let shape = [1, cfg.x_channels(), s, s];
        let dev = self.model.device();
        // Noise is drawn on the CPU (seeded, the same on every device) and moved.
        let normal = |rng: &mut SeededNoise| rng.normal_tensor(&shape)?.to_device(dev);
        let big_t = self.schedule.len();
        let (mut x, timesteps) = match start {
            None => (normal(rng)?, Schedule::timesteps(big_t - 1, self.steps)),
            Some((x0, strength)) => {
                let t_start = ((strength.clamp(0.0, 1.0) * big_t as f64) as usize).clamp(1, big_t) - 1;
                let n = ((self.steps as f64 * strength).ceil() as usize).max(1);
                let noise = normal(rng)?;
                (self.schedule.q_sample(&x0.to_device(dev)?, &noise, &[t_start])?, Schedule::timesteps(t_start, n))
            }
        };
        for (i, &t) in timesteps.iter().enumerate() {
            let t_prev = timesteps.get(i + 1).copied();
            let eps = self.eps(&x, t, cond)?;
            x = match self.sampler {
                SamplerKind::Ddim => self.schedule.ddim_step(&x, &eps, t, t_prev)?,
                SamplerKind::Ddpm => {
                    let z = normal(rng)?;
                    self.schedule.ddpm_step(&x, &eps, t, t_prev, &z)?
                }
            };
        }
        Ok(x.clamp(-1f32, 1f32)?)
    }

    fn unstack(&self, block: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let c = self.cfg().channels;
        let block = block.squeeze(0)?;
        (0..self.cfg().num_frames).map(|i| block.narrow(0, i * c, c)).collect()
    }

    /// Appends blocks predicted from the last frames of `history` (none: the first block is
    /// unconditional) and the fixed `future`, until `n` new frames exist; returns them.
    fn extend(
        &self,
        mut history: Vec<Tensor>,
        future: Option<&[Tensor]>,
        n: usize,
        rng: &mut SeededNoise,
    ) -> Result<Vec<Tensor>, McvdError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let past = (!history.is_empty()).then_some(history.as_slice());
            let cond = self.conditioning(past, future)?;
            let block = self.sample_block(&cond, None, rng)?;
            for f in self.unstack(&block)? {
                history.push(f.clone());
                out.push(f);
            }
        }
        out.truncate(n);
        Ok(out)
    }

    /// `n` frames continuing `past` (prediction).
    pub fn predict(&self, past: &[Tensor], n: usize, rng: &mut SeededNoise) -> Result<Vec<Tensor>, McvdError> {
        self.extend(past.to_vec(), None, n, rng)
    }

    /// `n` frames between `past` and `future` (interpolation): every block sees the latest
    /// past frames and the same future frames. Needs a model with future conditioning.
    pub fn interpolate(
        &self,
        past: &[Tensor],
        future: &[Tensor],
        n: usize,
        rng: &mut SeededNoise,
    ) -> Result<Vec<Tensor>, McvdError> {
        if self.cfg().num_frames_future == 0 {
            return Err(McvdError::Config(
                "this model has no future conditioning (num_frames_future = 0): it cannot interpolate".into(),
            ));
        }
        self.extend(past.to_vec(), Some(future), n, rng)
    }

    /// `n` new frames from nothing: an unconditional first block, then prediction.
    pub fn generate(&self, n: usize, rng: &mut SeededNoise) -> Result<Vec<Tensor>, McvdError> {
        self.extend(Vec::new(), None, n, rng)
    }

    /// SDEdit of `frames`, block by block (each conditioned on the edited frames before it),
    /// to `n` frames: past the end of the clip, prediction continues.
    pub fn edit(
        &self,
        frames: &[Tensor],
        n: usize,
        strength: f64,
        rng: &mut SeededNoise,
    ) -> Result<Vec<Tensor>, McvdError> {
        let k = self.cfg().num_frames;
        let mut out: Vec<Tensor> = Vec::with_capacity(n);
        for chunk in frames[..frames.len().min(n)].chunks(k) {
            let padded: Vec<Tensor> = (0..k).map(|i| chunk[i.min(chunk.len() - 1)].clone()).collect();
            let x0 = Tensor::cat(&padded, 0)?.unsqueeze(0)?;
            let past = (!out.is_empty()).then_some(out.as_slice());
            let cond = self.conditioning(past, None)?;
            let block = self.sample_block(&cond, Some((&x0, strength)), rng)?;
            out.extend(self.unstack(&block)?.into_iter().take(chunk.len()));
        }
        if out.len() < n {
            let more = self.extend(out.clone(), None, n - out.len(), rng)?;
            out.extend(more);
        }
        Ok(out)
    }
}

/// An RGB frame as a `(C, S, S)` tensor in [-1, 1] (resized to S×S; grey when C is 1).
pub fn frame_to_tensor(img: &RgbImage, cfg: &McvdConfig) -> candle_core::Result<Tensor> {
    let s = cfg.image_size as u32;
    let small =
        if img.dimensions() == (s, s) { img.clone() } else { image::imageops::resize(img, s, s, FilterType::Triangle) };
    let n = (s * s) as usize;
    let mut data = vec![0f32; cfg.channels * n];
    for (i, p) in small.pixels().enumerate() {
        let [r, g, b] = p.0.map(|v| v as f32 / 127.5 - 1.0);
        if cfg.channels == 1 {
            data[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        } else {
            for (c, v) in [r, g, b].into_iter().enumerate().take(cfg.channels) {
                data[c * n + i] = v;
            }
        }
    }
    Tensor::from_vec(data, (cfg.channels, s as usize, s as usize), &Device::Cpu)
}

/// A `(C, S, S)` tensor in [-1, 1] as an RGB frame of `width`×`height`.
pub fn tensor_to_frame(t: &Tensor, width: u32, height: u32) -> candle_core::Result<RgbImage> {
    let (c, h, w) = t.dims3()?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    let n = h * w;
    let px = |c: usize, i: usize| ((v[c * n + i] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
    let small = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        if c >= 3 { image::Rgb([px(0, i), px(1, i), px(2, i)]) } else { image::Rgb([px(0, i); 3]) }
    });
    Ok(if (width, height) == (w as u32, h as u32) {
        small
    } else {
        image::imageops::resize(&small, width, height, FilterType::CatmullRom)
    })
}

/// The forward a [`Batcher`] runs for `model`: inputs `[x, t, cond]` stacked along the batch.
pub fn batched_forward(model: std::sync::Arc<Mcvd>) -> crate::batching::ForwardFn {
    Box::new(move |xs: &[Tensor]| {
        model.forward(&xs[0], &xs[1], &xs[2], None).map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
}
