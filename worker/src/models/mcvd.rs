//! `mcvd` owns MCVD's score network (Voleti et al., NeurIPS 2022; `UNetMore_DDPM` in
//! mcvd-pytorch): an NCSN++-style UNet with BigGAN residual blocks, FIR up/down-sampling, group
//! norm modulated by the time embedding, swish, dropout and multi-head attention at the
//! configured resolutions. The noisy frames to predict and the conditioning frames (past, then
//! future) are stacked on the channel axis; a masked block is all zeros, which is how one
//! network predicts, interpolates and generates. The network predicts the noise ε.
//!
//! Also here: [`McvdConfig`] (mirrors mcvd-pytorch's YAML, saved as `config.json`), the seeded
//! weight initialisation and the checkpoint layout (`config.json` + `model.safetensors`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::diffusion::SeededNoise;
use super::init::Init;
use super::upfirdn;

/// File name of the configuration in a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the (EMA) weights in a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Why an MCVD model could not be built, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum McvdError {
    /// A tensor operation failed (shapes, missing weights).
    #[error("mcvd: {0}")]
    Candle(#[from] candle_core::Error),
    /// The configuration is inconsistent.
    #[error("mcvd config: {0}")]
    Config(String),
    /// Reading or writing a checkpoint failed.
    #[error("mcvd checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not a valid configuration.
    #[error("mcvd config {path}: {source}")]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The batched forward failed ([`crate::batching`]).
    #[error("mcvd batch: {0}")]
    Batch(#[from] crate::batching::BatchError),
}

/// MCVD's configuration; field names follow mcvd-pytorch's YAML (`data.*`, `model.*`,
/// `optim.*`), flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McvdConfig {
    /// Network family; only `unetmore` (the 2-D UNet of the paper's main results).
    pub arch: String,
    /// Parameterisation; only `DDPM` (the network predicts ε).
    pub version: String,
    /// Side of the square frames the network sees.
    pub image_size: usize,
    /// Channels per frame (1 grey, 3 RGB).
    pub channels: usize,
    /// Frames predicted per block.
    pub num_frames: usize,
    /// Past frames conditioning a block.
    pub num_frames_cond: usize,
    /// Future frames conditioning a block (interpolation); 0 for prediction-only models.
    #[serde(default)]
    pub num_frames_future: usize,
    /// Training: probability that the past block is zeroed.
    pub prob_mask_cond: f64,
    /// Training: probability that the future block is zeroed.
    #[serde(default)]
    pub prob_mask_future: f64,
    /// Base channel count.
    pub ngf: usize,
    /// Channel multiplier per resolution level.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Resolutions (feature-map sides) with self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Channels per attention head; -1 for a single head.
    pub n_head_channels: i64,
    /// Dropout inside residual blocks.
    pub dropout: f64,
    /// Diffusion steps T (`model.num_classes`).
    pub num_classes: usize,
    /// Largest β (`model.sigma_begin`).
    pub sigma_begin: f64,
    /// Smallest β (`model.sigma_end`).
    pub sigma_end: f64,
    /// EMA decay of the weights used for sampling.
    pub ema_rate: f64,
    /// AdamW learning rate (`optim.lr`).
    pub lr: f64,
    /// AdamW decoupled weight decay (`optim.weight_decay`).
    pub weight_decay: f64,
    /// Linear learning-rate warm-up, steps (`optim.warmup`).
    pub warmup: usize,
    /// Global gradient-norm clip (`optim.grad_clip`).
    pub grad_clip: f64,
    /// Training batch size (`training.batch_size`).
    pub batch_size: usize,
}

impl McvdConfig {
    /// A small model that trains in minutes on a CPU: 32×32 RGB, 4 past → 4 frames, 2 future
    /// frames, masks 0.5/0.5 (one model for prediction, interpolation and generation).
    pub fn tiny() -> Self {
        McvdConfig {
            arch: "unetmore".into(),
            version: "DDPM".into(),
            image_size: 32,
            channels: 3,
            num_frames: 4,
            num_frames_cond: 4,
            num_frames_future: 2,
            prob_mask_cond: 0.5,
            prob_mask_future: 0.5,
            ngf: 16,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![16],
            n_head_channels: -1,
            dropout: 0.1,
            num_classes: 1000,
            sigma_begin: 0.02,
            sigma_end: 1e-4,
            ema_rate: 0.999,
            lr: 1e-3,
            weight_decay: 0.0,
            warmup: 20,
            grad_clip: 1.0,
            batch_size: 8,
        }
    }

    /// mcvd-pytorch's `smmnist_DDPM_big5`: 64×64 grey, 5 past → 5 frames, ngf 64, ch_mult
    /// 1,2,3,4, two residual blocks, attention at 8, 16, 32.
    pub fn smmnist() -> Self {
        McvdConfig {
            image_size: 64,
            channels: 1,
            num_frames: 5,
            num_frames_cond: 5,
            num_frames_future: 0,
            prob_mask_cond: 0.0,
            prob_mask_future: 0.0,
            ngf: 64,
            ch_mult: vec![1, 2, 3, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![8, 16, 32],
            n_head_channels: 64,
            lr: 2e-4,
            warmup: 1000,
            batch_size: 64,
            ..McvdConfig::tiny()
        }
    }

    /// A preset by name: `tiny` or `smmnist`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "smmnist" => Some(Self::smmnist()),
            _ => None,
        }
    }

    /// Channels of the noisy block (`num_frames · channels`).
    pub fn x_channels(&self) -> usize {
        self.num_frames * self.channels
    }

    /// Channels of the conditioning (past, then future).
    pub fn cond_channels(&self) -> usize {
        (self.num_frames_cond + self.num_frames_future) * self.channels
    }

    /// Frames in one training sequence (past, predicted, future).
    pub fn sequence_frames(&self) -> usize {
        self.num_frames_cond + self.num_frames + self.num_frames_future
    }

    /// Checks what the network needs.
    pub fn validate(&self) -> Result<(), McvdError> {
        let bad = |m: String| Err(McvdError::Config(m));
        if self.arch != "unetmore" || self.version != "DDPM" {
            return bad(format!(
                "only arch `unetmore` with version `DDPM` is implemented, got `{}`/`{}`",
                self.arch, self.version
            ));
        }
        if self.ch_mult.is_empty() || self.num_frames == 0 || self.channels == 0 {
            return bad("ch_mult, num_frames and channels must be non-empty".into());
        }
        let levels = self.ch_mult.len() as u32;
        if self.image_size == 0 || !self.image_size.is_multiple_of(1 << (levels - 1)) {
            return bad(format!(
                "image_size {} must be divisible by 2^(levels-1) = {}",
                self.image_size,
                1 << (levels - 1)
            ));
        }
        if self.ngf < 8 || !self.ngf.is_multiple_of(4) {
            return bad(format!("ngf {} must be a multiple of 4, ≥ 8", self.ngf));
        }
        if self.n_head_channels > 0 {
            for &m in &self.ch_mult {
                if !(self.ngf * m).is_multiple_of(self.n_head_channels as usize) {
                    return bad(format!(
                        "n_head_channels {} must divide every level's channels ({})",
                        self.n_head_channels,
                        self.ngf * m
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.prob_mask_cond) || !(0.0..=1.0).contains(&self.prob_mask_future) {
            return bad("mask probabilities must be in [0, 1]".into());
        }
        if !(self.sigma_end > 0.0 && self.sigma_end < self.sigma_begin && self.sigma_begin < 1.0)
            || self.num_classes < 2
        {
            return bad("need 0 < sigma_end < sigma_begin < 1 and num_classes ≥ 2".into());
        }
        Ok(())
    }

    /// Reads `config.json` from a checkpoint directory.
    pub fn load(dir: &Path) -> Result<Self, McvdError> {
        let path = dir.join(CONFIG_FILE);
        let bytes = std::fs::read(&path).map_err(|source| McvdError::Io { path: path.clone(), source })?;
        let cfg: McvdConfig = serde_json::from_slice(&bytes).map_err(|source| McvdError::Json { path, source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes `config.json` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<(), McvdError> {
        let path = dir.join(CONFIG_FILE);
        let io = |source| McvdError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).expect("config serialises");
        std::fs::write(&path, json).map_err(io)
    }
}

fn groups(ch: usize) -> usize {
    (ch / 4).clamp(1, 32)
}

/// Group norm without affine parameters (the time embedding supplies scale and shift).
fn group_norm_plain(x: &Tensor, groups: usize, eps: f64) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let g = x.reshape((b, groups, (c / groups) * h * w))?;
    let mean = g.mean_keepdim(D::Minus1)?;
    let centred = g.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)?.reshape((b, c, h, w))
}

fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> candle_core::Result<Conv> {
    let cfg = Conv2dConfig { padding: k / 2, ..Default::default() };
    let c = candle_nn::conv2d(cin, cout, k, cfg, vb)?;
    Ok(Conv { weight: c.weight().clone(), bias: c.bias().expect("conv2d has a bias").clone(), inner: c })
}

/// A same-padded convolution (`weight`, `bias` as candle-nn's). Inference runs candle's conv2d;
/// training runs it as shifted views and one matmul (im2col), whose backward pass is several
/// times faster on candle's CPU than conv2d's. Same function, same weights.
struct Conv {
    inner: Conv2d,
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            return self.inner.forward(x);
        }
        let (b, c, h, w) = x.dims4()?;
        let (co, _, k, _) = self.weight.dims4()?;
        let cols = if k == 1 {
            x.reshape((b, c, h * w))?
        } else {
            let p = k / 2;
            let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
            let mut taps = Vec::with_capacity(k * k);
            for dy in 0..k {
                for dx in 0..k {
                    taps.push(xp.narrow(2, dy, h)?.narrow(3, dx, w)?);
                }
            }
            Tensor::stack(&taps, 2)?.reshape((b, c * k * k, h * w))?
        };
        let wm = self.weight.reshape((1, co, c * k * k))?.broadcast_as((b, co, c * k * k))?;
        wm.matmul(&cols)?.reshape((b, co, h, w))?.broadcast_add(&self.bias.reshape((1, co, 1, 1))?)
    }
}

/// Norm then swish; with an embedding, the norm is scaled and shifted by it (ada-norm).
struct ActNorm {
    dense: Option<Linear>,
    affine: Option<(Tensor, Tensor)>,
    groups: usize,
}

impl ActNorm {
    fn new(vb: VarBuilder, ch: usize, emb_dim: Option<usize>) -> candle_core::Result<Self> {
        Ok(match emb_dim {
            Some(e) => {
                ActNorm { dense: Some(candle_nn::linear(e, 2 * ch, vb.pp("dense"))?), affine: None, groups: groups(ch) }
            }
            None => ActNorm {
                dense: None,
                affine: Some((
                    vb.get_with_hints(ch, "weight", candle_nn::Init::Const(1.0))?,
                    vb.get_with_hints(ch, "bias", candle_nn::Init::Const(0.0))?,
                )),
                groups: groups(ch),
            },
        })
    }

    /// `train`: the unfused candle ops, which have gradients; else the fused kernel.
    fn forward(&self, x: &Tensor, emb: Option<&Tensor>, train: bool) -> candle_core::Result<Tensor> {
        let c = x.dim(1)?;
        if !train {
            let (a, b) = match (&self.dense, emb, &self.affine) {
                (Some(dense), Some(emb), _) => {
                    let ss = dense.forward(&emb.silu()?)?;
                    ((ss.narrow(1, 0, c)? + 1.0)?, ss.narrow(1, c, c)?)
                }
                (_, _, Some((w, b))) => (w.clone(), b.clone()),
                _ => (Tensor::ones(c, x.dtype(), x.device())?, Tensor::zeros(c, x.dtype(), x.device())?),
            };
            return kernels::group_norm_silu(x, &a, &b, self.groups, 1e-6);
        }
        let n = group_norm_plain(x, self.groups, 1e-6)?;
        let n = match (&self.dense, emb, &self.affine) {
            (Some(dense), Some(emb), _) => {
                let ss = dense.forward(&emb.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
                let scale = ss.narrow(1, 0, c)?;
                let shift = ss.narrow(1, c, c)?;
                n.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?
            }
            (_, _, Some((w, b))) => {
                n.broadcast_mul(&w.reshape((1, c, 1, 1))?)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?
            }
            _ => n,
        };
        n.silu()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Resampling {
    None,
    Up,
    Down,
}

/// BigGAN residual block with FIR resampling and skip rescaling by 1/√2.
struct ResBlock {
    norm_0: ActNorm,
    conv_0: Conv,
    norm_1: ActNorm,
    conv_1: Conv,
    skip: Option<Conv>,
    resample: Resampling,
    dropout: f32,
}

impl ResBlock {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: usize,
        resample: Resampling,
        dropout: f64,
    ) -> candle_core::Result<Self> {
        let skip = if cin != cout || resample != Resampling::None {
            Some(conv(vb.pp("conv_skip"), cin, cout, 1)?)
        } else {
            None
        };
        Ok(ResBlock {
            norm_0: ActNorm::new(vb.pp("norm_0"), cin, Some(temb))?,
            conv_0: conv(vb.pp("conv_0"), cin, cout, 3)?,
            norm_1: ActNorm::new(vb.pp("norm_1"), cout, Some(temb))?,
            conv_1: conv(vb.pp("conv_1"), cout, cout, 3)?,
            skip,
            resample,
            dropout: dropout as f32,
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, dropout: Option<&mut SeededNoise>) -> candle_core::Result<Tensor> {
        let train = dropout.is_some();
        let mut h = self.norm_0.forward(x, Some(temb), train)?;
        let mut x = x.clone();
        match self.resample {
            Resampling::Up => {
                h = upfirdn::upsample_2d(&h)?;
                x = upfirdn::upsample_2d(&x)?;
            }
            Resampling::Down => {
                h = upfirdn::downsample_2d(&h)?;
                x = upfirdn::downsample_2d(&x)?;
            }
            Resampling::None => {}
        }
        h = self.conv_0.forward(&h, train)?;
        h = self.norm_1.forward(&h, Some(temb), train)?;
        if let Some(rng) = dropout.filter(|_| self.dropout > 0.0) {
            let p = f64::from(self.dropout);
            let keep: Vec<f32> =
                (0..h.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { (1.0 / (1.0 - p)) as f32 }).collect();
            let mask = Tensor::from_vec(keep, h.shape(), h.device())?;
            h = (h * mask)?;
        }
        h = self.conv_1.forward(&h, train)?;
        if let Some(skip) = &self.skip {
            x = skip.forward(&x, train)?;
        }
        (x + h)? * std::f64::consts::FRAC_1_SQRT_2
    }
}

/// Multi-head self-attention over the pixels, with skip rescaling.
struct Attn {
    norm_w: Tensor,
    norm_b: Tensor,
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl Attn {
    fn new(vb: VarBuilder, ch: usize, head_channels: i64) -> candle_core::Result<Self> {
        let heads = if head_channels > 0 { ch / head_channels as usize } else { 1 };
        Ok(Attn {
            norm_w: vb.get_with_hints(ch, "norm.weight", candle_nn::Init::Const(1.0))?,
            norm_b: vb.get_with_hints(ch, "norm.bias", candle_nn::Init::Const(0.0))?,
            qkv: candle_nn::linear(ch, 3 * ch, vb.pp("qkv"))?,
            out: candle_nn::linear(ch, ch, vb.pp("proj_out"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = group_norm_plain(x, groups(c), 1e-6)?
            .broadcast_mul(&self.norm_w.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.norm_b.reshape((1, c, 1, 1))?)?;
        // Contiguous: candle's CPU matmul mixes up batch rows of a transposed (B, HW, C) view.
        let seq = n.flatten_from(2)?.transpose(1, 2)?.contiguous()?; // B, HW, C
        let qkv = self.qkv.forward(&seq)?; // B, HW, 3C
        let dh = c / self.heads;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * c, c)?.reshape((b, h * w, self.heads, dh))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let att = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, h * w, c))?;
        let o = self.out.forward(&o)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        (x + o)? * std::f64::consts::FRAC_1_SQRT_2
    }
}

enum Layer {
    Res(Box<ResBlock>),
    Attn(Attn),
}

/// MCVD's score network (`UNetMore_DDPM`).
pub struct Mcvd {
    cfg: McvdConfig,
    temb_0: Linear,
    temb_1: Linear,
    conv_in: Conv,
    /// Down path in order; each entry says whether its output is kept for a skip connection.
    down: Vec<(Layer, bool)>,
    mid: [Layer; 3],
    /// Up path in order; each entry says whether it takes a skip connection.
    up: Vec<(Layer, bool)>,
    norm_out: ActNorm,
    conv_out: Conv,
    /// Where the weights live (inputs are moved here).
    device: Device,
}

impl Mcvd {
    /// Builds the network from `vb` (variable names as in `model.safetensors`).
    pub fn new(vb: VarBuilder, cfg: &McvdConfig) -> Result<Self, McvdError> {
        cfg.validate()?;
        let nf = cfg.ngf;
        let temb = 4 * nf;
        let levels = cfg.ch_mult.len();
        let res_at = |level: usize| cfg.image_size >> level;
        let attn_at = |level: usize| cfg.attn_resolutions.contains(&res_at(level));
        let temb_0 = candle_nn::linear(nf, temb, vb.pp("temb.dense_0"))?;
        let temb_1 = candle_nn::linear(temb, temb, vb.pp("temb.dense_1"))?;
        let conv_in = conv(vb.pp("conv_in"), cfg.x_channels() + cfg.cond_channels(), nf, 3)?;
        let mut hs_c = vec![nf];
        let mut down = Vec::new();
        let mut in_ch = nf;
        for level in 0..levels {
            let vbl = vb.pp(format!("down.{level}"));
            for i in 0..cfg.num_res_blocks {
                let out_ch = nf * cfg.ch_mult[level];
                let res =
                    ResBlock::new(vbl.pp(format!("res.{i}")), in_ch, out_ch, temb, Resampling::None, cfg.dropout)?;
                in_ch = out_ch;
                if attn_at(level) {
                    down.push((Layer::Res(Box::new(res)), false));
                    let a = Attn::new(vbl.pp(format!("attn.{i}")), in_ch, cfg.n_head_channels)?;
                    down.push((Layer::Attn(a), true));
                } else {
                    down.push((Layer::Res(Box::new(res)), true));
                }
                hs_c.push(in_ch);
            }
            if level + 1 != levels {
                let res = ResBlock::new(vbl.pp("downsample"), in_ch, in_ch, temb, Resampling::Down, cfg.dropout)?;
                down.push((Layer::Res(Box::new(res)), true));
                hs_c.push(in_ch);
            }
        }
        let vbm = vb.pp("mid");
        let mid = [
            Layer::Res(Box::new(ResBlock::new(vbm.pp("res_0"), in_ch, in_ch, temb, Resampling::None, cfg.dropout)?)),
            Layer::Attn(Attn::new(vbm.pp("attn"), in_ch, cfg.n_head_channels)?),
            Layer::Res(Box::new(ResBlock::new(vbm.pp("res_1"), in_ch, in_ch, temb, Resampling::None, cfg.dropout)?)),
        ];
        let mut up = Vec::new();
        for level in (0..levels).rev() {
            let vbl = vb.pp(format!("up.{level}"));
            for i in 0..=cfg.num_res_blocks {
                let out_ch = nf * cfg.ch_mult[level];
                let skip_ch = hs_c.pop().expect("one skip per down output");
                let res = ResBlock::new(
                    vbl.pp(format!("res.{i}")),
                    in_ch + skip_ch,
                    out_ch,
                    temb,
                    Resampling::None,
                    cfg.dropout,
                )?;
                up.push((Layer::Res(Box::new(res)), true));
                in_ch = out_ch;
            }
            if attn_at(level) {
                let a = Attn::new(vbl.pp("attn"), in_ch, cfg.n_head_channels)?;
                up.push((Layer::Attn(a), false));
            }
            if level != 0 {
                let res = ResBlock::new(vbl.pp("upsample"), in_ch, in_ch, temb, Resampling::Up, cfg.dropout)?;
                up.push((Layer::Res(Box::new(res)), false));
            }
        }
        debug_assert!(hs_c.is_empty());
        let norm_out = ActNorm::new(vb.pp("norm_out"), in_ch, None)?;
        let conv_out = conv(vb.pp("conv_out"), in_ch, cfg.x_channels(), 3)?;
        Ok(Mcvd {
            cfg: cfg.clone(),
            temb_0,
            temb_1,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            device: vb.device().clone(),
        })
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &McvdConfig {
        &self.cfg
    }

    /// Predicted noise for the noisy block `x` `(B, num_frames·C, S, S)` at diffusion steps `t`
    /// `(B,)` (f32, 0-based), given the conditioning `cond` `(B, (past+future)·C, S, S)` with
    /// masked blocks already zeroed. `dropout` (training) draws the dropout masks; `None` is
    /// inference.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        mut dropout: Option<&mut SeededNoise>,
    ) -> Result<Tensor, McvdError> {
        let (b, c, h, w) = x.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.x_channels() || h != s || w != s {
            return Err(McvdError::Config(format!(
                "input is {c}×{h}×{w}, the model takes {}×{s}×{s}",
                self.cfg.x_channels()
            )));
        }
        if cond.dims4()? != (b, self.cfg.cond_channels(), s, s) {
            return Err(McvdError::Config(format!(
                "conditioning is {:?}, the model takes {} channels",
                cond.dims(),
                self.cfg.cond_channels()
            )));
        }
        let temb = timestep_embedding(t, self.cfg.ngf)?;
        let temb = self.temb_1.forward(&self.temb_0.forward(&temb)?.silu()?)?;
        let input = if self.cfg.cond_channels() > 0 { Tensor::cat(&[x, cond], 1)? } else { x.clone() };
        let train = dropout.is_some();
        let mut h = self.conv_in.forward(&input, train)?;
        let mut hs = vec![h.clone()];
        for (layer, keep) in &self.down {
            h = run(layer, &h, &temb, dropout.as_deref_mut())?;
            if *keep {
                hs.push(h.clone());
            }
        }
        for layer in &self.mid {
            h = run(layer, &h, &temb, dropout.as_deref_mut())?;
        }
        for (layer, takes_skip) in &self.up {
            if *takes_skip {
                let skip = hs.pop().expect("one skip per down output");
                h = Tensor::cat(&[&h, &skip], 1)?;
            }
            h = run(layer, &h, &temb, dropout.as_deref_mut())?;
        }
        let h = self.norm_out.forward(&h, None, train)?;
        Ok(self.conv_out.forward(&h, train)?)
    }

    /// Loads `config.json` and `model.safetensors` from a checkpoint directory (CPU, f32).
    pub fn load(dir: &Path) -> Result<Self, McvdError> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// [`Mcvd::load`] onto `device` (f32).
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self, McvdError> {
        let cfg = McvdConfig::load(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            return Err(McvdError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no weights"),
            });
        }
        let tensors = candle_core::safetensors::load(&path, device)?;
        Self::from_tensors(tensors, &cfg)
    }

    /// Builds the network from named tensors, on their device.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, cfg: &McvdConfig) -> Result<Self, McvdError> {
        let device = tensors.values().next().map_or(Device::Cpu, |t| t.device().clone());
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Self::new(vb, cfg)
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn run(layer: &Layer, h: &Tensor, temb: &Tensor, dropout: Option<&mut SeededNoise>) -> candle_core::Result<Tensor> {
    match layer {
        Layer::Res(r) => r.forward(h, temb, dropout),
        Layer::Attn(a) => a.forward(h),
    }
}

/// DDPM's sinusoidal embedding of the steps `t` `(B,)` into `dim` channels `(B, dim)`.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let half = dim / 2;
    let scale = (10_000f64).ln() / (half as f64 - 1.0).max(1.0);
    let freqs: Vec<f32> = (0..half).map(|i| (-(i as f64) * scale).exp() as f32).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.sin()?, args.cos()?], 1)
}

/// Builds an MCVD over a fresh [`VarMap`] and initialises it from `seed` (deterministic, unlike
/// candle's unseedable CPU RNG): NCSN++'s `default_init` (uniform variance scaling, fan-avg) for
/// weights, zeros for biases, ones for norm scales, and zero for the last convolution of every
/// residual block, the attention output and the network output (`init_scale = 0`).
pub fn init_model(cfg: &McvdConfig, seed: u64) -> Result<(VarMap, Mcvd), McvdError> {
    let varmap = VarMap::new();
    let model = Mcvd::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), cfg)?;
    super::init::seeded(&varmap, &mut SeededNoise::new(seed), |name, shape| {
        let zero_init =
            name.ends_with("conv_1.weight") || name.ends_with("proj_out.weight") || name == "conv_out.weight";
        match () {
            _ if name.ends_with("bias") => Init::Zeros,
            _ if shape.len() == 1 => Init::Ones,
            _ if zero_init => Init::Zeros,
            _ => Init::fan_avg_uniform(shape),
        }
    })?;
    Ok((varmap, model))
}

/// Writes a checkpoint directory: `config.json` and `model.safetensors` from `tensors`.
pub fn save_checkpoint(dir: &Path, cfg: &McvdConfig, tensors: &HashMap<String, Tensor>) -> Result<(), McvdError> {
    cfg.save(dir)?;
    candle_core::safetensors::save(tensors, dir.join(WEIGHTS_FILE))?;
    Ok(())
}

/// A copy of the current values of a [`VarMap`]'s variables, by name.
pub fn varmap_tensors(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?.detach()))).collect()
}
