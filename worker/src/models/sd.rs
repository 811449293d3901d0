//! `sd` owns Stable Diffusion for generated thumbnails, through candle-transformers'
//! `stable_diffusion` modules: SD 1.5, SD 2.1 and sd-turbo (the 2.1 architecture at 512 px,
//! 1–4 steps, no guidance), loaded from a diffusers directory.
//!
//! - **Layout.** `model_index.json`, `unet/config.json` + `unet/diffusion_pytorch_model.safetensors`,
//!   `vae/config.json` + `vae/diffusion_pytorch_model.safetensors`, `text_encoder/config.json` +
//!   `text_encoder/model.safetensors`, `scheduler/scheduler_config.json`, and the tokenizer:
//!   `tokenizer/tokenizer.json` when present, else `tokenizer/vocab.json` + `merges.txt` (CLIP's
//!   BPE with the `</w>` suffix). The config structs mirror diffusers' files, keep the keys they
//!   do not use (so a file round-trips) and map onto candle's configs.
//! - **Checks.** Every weight is read and checked before a model is built: a non-finite value
//!   is [`SdError::NonFinite`], a tensor the network needs and the file lacks is
//!   [`SdError::MissingTensor`]. Prompt embeddings, latents and decoded images are checked at
//!   every step: NaN is an error, never a picture.
//! - **Sampling.** DDIM (η = 0) on our own schedule (diffusers' `leading`, `trailing` and
//!   `linspace` spacings; ε, v and sample prediction), classifier-free guidance with a negative
//!   prompt, text-to-image and image-to-image (`strength`). Every random draw is from
//!   [`SeededNoise`] (candle's CPU RNG cannot be seeded), so the same seed gives the same image,
//!   bit for bit. img2img encodes the frame to the *mean* of the VAE's latent distribution (the
//!   VAE is built with a zero variance so candle's unseeded `sample()` returns the mean).
//! - **Strength.** As in diffusers: of `steps` steps, the last `⌊steps·strength⌋` run, starting
//!   from the frame's latents noised to the first of them. Strength 0 runs none: the output is
//!   the input frame itself (resized), not a VAE round trip.
//! - **sd-turbo** (scheduler with `trailing` spacing and the 2.1 UNet): steps are clamped to
//!   1–4 and guidance is off; the last step goes to ᾱ = 1 (Euler's final σ = 0).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::clip::text_model as clip_text;
use candle_transformers::models::stable_diffusion::{clip as sd_clip, unet_2d, vae};
use image::RgbImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::diffusion::SeededNoise;

/// `model_index.json`.
pub const MODEL_INDEX_FILE: &str = "model_index.json";
/// The UNet's config, relative to the model directory.
pub const UNET_CONFIG: &str = "unet/config.json";
/// The UNet's weights.
pub const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
/// The VAE's config.
pub const VAE_CONFIG: &str = "vae/config.json";
/// The VAE's weights.
pub const VAE_WEIGHTS: &str = "vae/diffusion_pytorch_model.safetensors";
/// The text encoder's config.
pub const TEXT_CONFIG: &str = "text_encoder/config.json";
/// The text encoder's weights.
pub const TEXT_WEIGHTS: &str = "text_encoder/model.safetensors";
/// The scheduler's config.
pub const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";
/// The tokenizer, one file.
pub const TOKENIZER_JSON: &str = "tokenizer/tokenizer.json";
/// The tokenizer's BPE vocabulary (when there is no `tokenizer.json`).
pub const TOKENIZER_VOCAB: &str = "tokenizer/vocab.json";
/// The tokenizer's BPE merges (when there is no `tokenizer.json`).
pub const TOKENIZER_MERGES: &str = "tokenizer/merges.txt";
/// The tokenizer's special tokens (`pad_token`: SD 2.x pads with `!`).
pub const TOKENIZER_SPECIAL: &str = "tokenizer/special_tokens_map.json";
/// Most steps sd-turbo runs.
pub const TURBO_MAX_STEPS: usize = 4;

/// Why a Stable Diffusion model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// A file could not be read or written.
    #[error("sd {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is not what diffusers writes.
    #[error("sd config {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The configs describe something this loader does not build.
    #[error("sd config: {0}")]
    Config(String),
    /// A weight file lacks a tensor the network needs.
    #[error("sd {component}: missing tensor `{name}`")]
    MissingTensor {
        /// unet, vae or text_encoder.
        component: &'static str,
        /// The tensor's name.
        name: String,
    },
    /// A weight, embedding, latent or image holds NaN or ±inf.
    #[error("sd {component}: non-finite values in `{what}`")]
    NonFinite {
        /// Where: unet, vae, text_encoder (weights) or sampling.
        component: &'static str,
        /// Which tensor or step.
        what: String,
    },
    /// The tokenizer failed to load or encode.
    #[error("sd tokenizer: {0}")]
    Tokenizer(String),
    /// A request is out of range.
    #[error("sd request: {0}")]
    Request(String),
    /// The caller asked to stop between steps.
    #[error("sd: stopped by the caller")]
    Stopped,
    /// A tensor operation failed.
    #[error("sd: {0}")]
    Candle(#[from] candle_core::Error),
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SdError> {
    let bytes = std::fs::read(path).map_err(|source| SdError::Io { path: path.to_owned(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| SdError::Json { path: path.to_owned(), source })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SdError> {
    let io = |source| SdError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("configs serialise")).map_err(io)
}

/// A diffusers value that is one number or one per block (`attention_head_dim`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// The same for every block.
    One(usize),
    /// One per block.
    Many(Vec<usize>),
}

impl OneOrMany {
    fn at(&self, i: usize) -> Option<usize> {
        match self {
            OneOrMany::One(v) => Some(*v),
            OneOrMany::Many(v) => v.get(i).copied(),
        }
    }
}

/// `model_index.json`: the pipeline class and its components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIndex {
    /// `StableDiffusionPipeline`, …
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// The diffusers version that wrote it.
    #[serde(rename = "_diffusers_version", default, skip_serializing_if = "Option::is_none")]
    pub diffusers_version: Option<String>,
    /// The components (`"unet": ["diffusers", "UNet2DConditionModel"]`, …) and any other key.
    #[serde(flatten)]
    pub components: BTreeMap<String, Value>,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn silu() -> String {
    "silu".into()
}

/// `unet/config.json` (diffusers' `UNet2DConditionModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Always `UNet2DConditionModel`.
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// Latent side the model was trained at.
    pub sample_size: usize,
    /// Latent channels in (4; 9 for inpainting models).
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// The mirror of `down_block_types`.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per level on the way down.
    pub layers_per_block: usize,
    /// Text embedding width.
    pub cross_attention_dim: usize,
    /// Heads per level (diffusers' historical name).
    pub attention_head_dim: OneOrMany,
    /// Heads per level, when set (overrides `attention_head_dim`).
    #[serde(default)]
    pub num_attention_heads: Option<OneOrMany>,
    /// Linear (2.x) or 1×1-conv (1.x) projections around the transformer blocks.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Transformer blocks per attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer_layers_per_block: Option<OneOrMany>,
    /// Map the input from [0, 1] to [-1, 1] first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Sinusoidal embedding order.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// Sinusoidal embedding shift.
    #[serde(default)]
    pub freq_shift: f64,
    /// Padding of the down-sampling convolutions.
    #[serde(default = "one")]
    pub downsample_padding: usize,
    /// Output scale of the middle block.
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Group-norm epsilon.
    pub norm_eps: f64,
    /// Activation; only `silu`.
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Every other key (kept for the round trip).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl UNetConfig {
    /// candle's config; `sliced_attention_size` as candle's.
    pub fn to_candle(
        &self,
        sliced_attention_size: Option<usize>,
    ) -> Result<unet_2d::UNet2DConditionModelConfig, SdError> {
        let bad = |m: String| Err(SdError::Config(format!("unet: {m}")));
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "{} block_out_channels, {} down blocks, {} up blocks: need the same non-zero count",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.act_fn != "silu" {
            return bad(format!("act_fn `{}`: only silu", self.act_fn));
        }
        let heads = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim);
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let up = &self.up_block_types[n - 1 - i];
            let cross = match (kind.as_str(), up.as_str()) {
                ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") => true,
                ("DownBlock2D", "UpBlock2D") => false,
                _ => return bad(format!("down block {i} `{kind}` with up block `{up}`: not a supported mirror pair")),
            };
            let ch = self.block_out_channels[i];
            let h = heads.at(i).ok_or_else(|| SdError::Config(format!("unet: no head count for block {i}")))?;
            if h == 0 || !ch.is_multiple_of(h) || !ch.is_multiple_of(self.norm_num_groups.max(1)) {
                return bad(format!("block {i}: {ch} channels, {h} heads, {} groups", self.norm_num_groups));
            }
            let layers = match &self.transformer_layers_per_block {
                Some(t) => t.at(i).ok_or_else(|| SdError::Config(format!("unet: no transformer layers for {i}")))?,
                None => 1,
            };
            blocks.push(unet_2d::BlockConfig {
                out_channels: ch,
                use_cross_attn: cross.then_some(layers),
                attention_head_dim: h,
            });
        }
        Ok(unet_2d::UNet2DConditionModelConfig {
            center_input_sample: self.center_input_sample,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            blocks,
            layers_per_block: self.layers_per_block,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: self.cross_attention_dim,
            sliced_attention_size,
            use_linear_projection: self.use_linear_projection,
        })
    }
}

fn scaling() -> f64 {
    0.18215
}

/// `vae/config.json` (diffusers' `AutoencoderKL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Always `AutoencoderKL`.
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per level.
    pub layers_per_block: usize,
    /// Activation; only `silu`.
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Latent channels.
    pub latent_channels: usize,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Image side the VAE was trained at.
    #[serde(default)]
    pub sample_size: usize,
    /// Latents are multiplied by this after encoding (0.18215 for SD 1.x/2.x).
    #[serde(default = "scaling")]
    pub scaling_factor: f64,
    /// A 1×1 convolution after the encoder.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// A 1×1 convolution before the decoder.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Every other key.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl VaeConfig {
    /// candle's config.
    pub fn to_candle(&self) -> Result<vae::AutoEncoderKLConfig, SdError> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(SdError::Config("vae: block counts differ".into()));
        }
        if self.down_block_types.iter().any(|t| t != "DownEncoderBlock2D")
            || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
            || self.act_fn != "silu"
            || (self.in_channels, self.out_channels) != (3, 3)
        {
            return Err(SdError::Config("vae: only RGB DownEncoderBlock2D/UpDecoderBlock2D with silu".into()));
        }
        if !self.use_quant_conv {
            return Err(SdError::Config("vae: img2img needs quant_conv (use_quant_conv = false)".into()));
        }
        if self.block_out_channels.iter().any(|c| !c.is_multiple_of(self.norm_num_groups.max(1))) {
            return Err(SdError::Config("vae: norm_num_groups must divide every level".into()));
        }
        Ok(vae::AutoEncoderKLConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            use_quant_conv: self.use_quant_conv,
            use_post_quant_conv: self.use_post_quant_conv,
        })
    }

    /// Pixels per latent, per side (8 for SD).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len().max(1) - 1)
    }
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn proj_dim() -> usize {
    512
}

/// `text_encoder/config.json` (transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEncoderConfig {
    /// Token ids.
    pub vocab_size: usize,
    /// Embedding width (the UNet's `cross_attention_dim`).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Tokens per prompt (77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    /// Projection width (unused by SD).
    #[serde(default = "proj_dim")]
    pub projection_dim: usize,
    /// Every other key.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Which candle text transformer a config maps onto.
#[derive(Debug, Clone)]
pub enum TextEncoderSpec {
    /// `quick_gelu`, any size: `clip::text_model` with these dimensions.
    QuickGelu(clip_text::ClipTextConfig),
    /// `gelu` at SD 2.x's size: `stable_diffusion::clip::Config::v2_1()` (its fields are private,
    /// so only that size can be built).
    SdV2(sd_clip::Config),
}

impl TextEncoderConfig {
    /// candle's config.
    pub fn to_candle(&self) -> Result<TextEncoderSpec, SdError> {
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(SdError::Config("text_encoder: heads must divide hidden_size".into()));
        }
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(TextEncoderSpec::QuickGelu(clip_text::ClipTextConfig {
                vocab_size: self.vocab_size,
                embed_dim: self.hidden_size,
                activation: clip_text::Activation::QuickGelu,
                intermediate_size: self.intermediate_size,
                max_position_embeddings: self.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: self.num_hidden_layers,
                num_attention_heads: self.num_attention_heads,
                projection_dim: self.projection_dim,
            })),
            "gelu" => {
                let v2 = (49408, 1024, 4096, 23, 16, 77);
                let this = (
                    self.vocab_size,
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_hidden_layers,
                    self.num_attention_heads,
                    self.max_position_embeddings,
                );
                if this != v2 {
                    return Err(SdError::Config(format!(
                        "text_encoder: a gelu CLIP text model is built only at SD 2.x's size \
                         (vocab, hidden, mlp, layers, heads, positions) = {v2:?}, got {this:?}"
                    )));
                }
                Ok(TextEncoderSpec::SdV2(sd_clip::Config::v2_1()))
            }
            other => Err(SdError::Config(format!("text_encoder: hidden_act `{other}` (quick_gelu or gelu)"))),
        }
    }
}

fn spacing() -> String {
    "leading".into()
}
fn epsilon() -> String {
    "epsilon".into()
}
fn thousand() -> usize {
    1000
}

/// `scheduler/scheduler_config.json` (DDIM, PNDM, Euler, … all share these keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// `DDIMScheduler`, `PNDMScheduler`, `EulerDiscreteScheduler`, …: we sample with DDIM.
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// Training steps T.
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    /// First β.
    pub beta_start: f64,
    /// Last β.
    pub beta_end: f64,
    /// `scaled_linear` or `linear`.
    pub beta_schedule: String,
    /// `epsilon`, `v_prediction` or `sample`.
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`.
    #[serde(default = "spacing")]
    pub timestep_spacing: String,
    /// Added to `leading` timesteps.
    #[serde(default)]
    pub steps_offset: usize,
    /// Whether the last DDIM step goes to ᾱ = 1 (else ᾱ₀).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
    /// Every other key.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (SD 1.x, sd-turbo, 2.1-base).
    Epsilon,
    /// v = √ᾱ ε − √(1−ᾱ) x₀ (SD 2.1 768).
    V,
    /// x₀ itself.
    Sample,
}

/// How inference timesteps are spread (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `i·T/n + offset`.
    Leading,
    /// `T − i·T/n − 1` (sd-turbo).
    Trailing,
    /// Evenly from T−1 to 0.
    Linspace,
}

/// DDIM over a diffusers schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// ᾱ_t for t in 0..T.
    pub alphas_cumprod: Vec<f64>,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Timestep spacing.
    pub spacing: Spacing,
    /// Offset of `leading` spacing.
    pub steps_offset: usize,
    /// ᾱ after the last step.
    pub final_alpha: f64,
}

impl SchedulerConfig {
    /// The schedule it describes.
    pub fn schedule(&self) -> Result<Schedule, SdError> {
        let t = self.num_train_timesteps;
        if t < 2 || !(self.beta_start > 0.0 && self.beta_start < self.beta_end && self.beta_end < 1.0) {
            return Err(SdError::Config("scheduler: need T ≥ 2 and 0 < beta_start < beta_end < 1".into()));
        }
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (t - 1) as f64;
        let betas: Vec<f64> = match self.beta_schedule.as_str() {
            "scaled_linear" => (0..t).map(|i| lin(self.beta_start.sqrt(), self.beta_end.sqrt(), i).powi(2)).collect(),
            "linear" => (0..t).map(|i| lin(self.beta_start, self.beta_end, i)).collect(),
            other => return Err(SdError::Config(format!("scheduler: beta_schedule `{other}`"))),
        };
        let mut acc = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        let prediction = match self.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => return Err(SdError::Config(format!("scheduler: prediction_type `{other}`"))),
        };
        let spacing = match self.timestep_spacing.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => return Err(SdError::Config(format!("scheduler: timestep_spacing `{other}`"))),
        };
        // Euler-family schedulers end at σ = 0, i.e. ᾱ = 1 (their `set_alpha_to_one` is a
        // leftover DDIM key); DDIM and PNDM as configured.
        let to_one = self.class_name.starts_with("Euler") || self.set_alpha_to_one == Some(true);
        let final_alpha = if to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Schedule { alphas_cumprod, prediction, spacing, steps_offset: self.steps_offset, final_alpha })
    }
}

impl Schedule {
    /// T.
    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The `n` inference timesteps, descending.
    pub fn timesteps(&self, n: usize) -> Vec<usize> {
        let t = self.train_steps();
        let n = n.clamp(1, t);
        let ratio = t / n;
        let mut ts: Vec<usize> = match self.spacing {
            Spacing::Leading => (0..n).map(|i| (i * ratio + self.steps_offset).min(t - 1)).rev().collect(),
            Spacing::Trailing => {
                let r = t as f64 / n as f64;
                (0..n).map(|i| ((t as f64 - i as f64 * r).round() as usize).saturating_sub(1)).collect()
            }
            Spacing::Linspace => {
                (0..n).map(|i| ((t - 1) as f64 * i as f64 / (n.max(2) - 1) as f64).round() as usize).rev().collect()
            }
        };
        ts.dedup();
        ts
    }

    /// x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> candle_core::Result<Tensor> {
        let a = self.alphas_cumprod[t];
        (x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?
    }

    /// One DDIM step (η = 0) from `t` to `t_prev` (`None`: the end) given the model output.
    pub fn step(&self, out: &Tensor, t: usize, t_prev: Option<usize>, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.alphas_cumprod[t];
        let a_prev = t_prev.map_or(self.final_alpha, |p| self.alphas_cumprod[p]);
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => (((x - (out * (1.0 - a).sqrt())?)? / a.sqrt())?, out.clone()),
            Prediction::V => {
                (((x * a.sqrt())? - (out * (1.0 - a).sqrt())?)?, ((out * a.sqrt())? + (x * (1.0 - a).sqrt())?)?)
            }
            Prediction::Sample => (out.clone(), ((x - (out * a.sqrt())?)? / (1.0 - a).sqrt())?),
        };
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }
}

/// Which published model a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVariant {
    /// SD 1.x (768-d text, 320/640/1280/1280).
    V1_5,
    /// SD 2.x (1024-d text, linear projections).
    V2_1,
    /// sd-turbo: the 2.1 architecture with trailing spacing, 512 px, 1–4 steps, no guidance.
    Turbo,
    /// Anything else that maps (the tiny test model).
    Custom,
}

/// All the configs of a diffusers directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SdConfigs {
    /// `model_index.json`.
    pub index: ModelIndex,
    /// `unet/config.json`.
    pub unet: UNetConfig,
    /// `vae/config.json`.
    pub vae: VaeConfig,
    /// `text_encoder/config.json`.
    pub text_encoder: TextEncoderConfig,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
}

impl SdConfigs {
    /// Reads the five config files of `dir`.
    pub fn load(dir: &Path) -> Result<Self, SdError> {
        Ok(SdConfigs {
            index: read_json(&dir.join(MODEL_INDEX_FILE))?,
            unet: read_json(&dir.join(UNET_CONFIG))?,
            vae: read_json(&dir.join(VAE_CONFIG))?,
            text_encoder: read_json(&dir.join(TEXT_CONFIG))?,
            scheduler: read_json(&dir.join(SCHEDULER_CONFIG))?,
        })
    }

    /// Writes them into `dir` (sub-directories created).
    pub fn save(&self, dir: &Path) -> Result<(), SdError> {
        write_json(&dir.join(MODEL_INDEX_FILE), &self.index)?;
        write_json(&dir.join(UNET_CONFIG), &self.unet)?;
        write_json(&dir.join(VAE_CONFIG), &self.vae)?;
        write_json(&dir.join(TEXT_CONFIG), &self.text_encoder)?;
        write_json(&dir.join(SCHEDULER_CONFIG), &self.scheduler)
    }

    /// Checks that the parts fit together and maps them onto candle.
    pub fn validate(&self) -> Result<(), SdError> {
        self.unet.to_candle(None)?;
        self.vae.to_candle()?;
        self.text_encoder.to_candle()?;
        self.scheduler.schedule()?;
        if self.unet.cross_attention_dim != self.text_encoder.hidden_size {
            return Err(SdError::Config(format!(
                "unet cross_attention_dim {} ≠ text_encoder hidden_size {}",
                self.unet.cross_attention_dim, self.text_encoder.hidden_size
            )));
        }
        if self.unet.out_channels != self.vae.latent_channels || self.unet.in_channels != self.vae.latent_channels {
            return Err(SdError::Config(format!(
                "unet in/out channels {}/{} ≠ vae latent_channels {} (inpainting models are not supported)",
                self.unet.in_channels, self.unet.out_channels, self.vae.latent_channels
            )));
        }
        Ok(())
    }

    /// The published model these configs describe.
    pub fn variant(&self) -> SdVariant {
        let sd_blocks = self.unet.block_out_channels == [320, 640, 1280, 1280];
        match (sd_blocks, self.unet.cross_attention_dim) {
            (true, 768) => SdVariant::V1_5,
            (true, 1024) if self.scheduler.timestep_spacing == "trailing" => SdVariant::Turbo,
            (true, 1024) => SdVariant::V2_1,
            _ => SdVariant::Custom,
        }
    }

    /// Image side: sd-turbo 512, else the UNet's `sample_size` × the VAE's factor.
    pub fn default_size(&self) -> usize {
        match self.variant() {
            SdVariant::Turbo => 512,
            _ => self.unet.sample_size * self.vae.scale_factor(),
        }
    }

    /// Image sides must be a multiple of this.
    pub fn size_multiple(&self) -> usize {
        self.vae.scale_factor() << (self.unet.block_out_channels.len().max(1) - 1)
    }

    /// Steps, guidance, width and height of a request after the model's rules (sd-turbo: 1–4
    /// steps, no guidance; sizes a multiple of [`Self::size_multiple`]).
    pub fn effective(&self, req: &SdRequest) -> Result<(usize, f64, usize, usize), SdError> {
        let (steps, guidance) = match self.variant() {
            SdVariant::Turbo => (req.steps.clamp(1, TURBO_MAX_STEPS), 0.0),
            _ => (req.steps.clamp(1, self.scheduler.num_train_timesteps), req.guidance_scale),
        };
        if !guidance.is_finite() || !req.strength.is_finite() || !(0.0..=1.0).contains(&req.strength) {
            return Err(SdError::Request("guidance must be finite and strength in [0, 1]".into()));
        }
        let side = self.default_size();
        let (w, h) = (req.width.unwrap_or(side), req.height.unwrap_or(side));
        let m = self.size_multiple();
        if w == 0 || h == 0 || !w.is_multiple_of(m) || !h.is_multiple_of(m) {
            return Err(SdError::Request(format!("{w}×{h}: sides must be non-zero multiples of {m}")));
        }
        Ok((steps, guidance, w, h))
    }
}

/// Serves tensors from a file, remembering the first name the network asked for and the file
/// lacked (so a missing tensor is a typed error, not a string).
struct Checked {
    tensors: HashMap<String, Tensor>,
    missing: Mutex<Option<String>>,
}

impl SimpleBackend for Checked {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => {
                self.missing.lock().expect("lock").get_or_insert_with(|| name.to_owned());
                Err(candle_core::Error::CannotFindTensor { path: name.to_owned() })
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// True when every value of `t` is finite.
pub fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    if t.dtype().is_int() {
        return Ok(true);
    }
    let s = t.to_dtype(DType::F32)?.flatten_all()?;
    // 0·x is 0 for finite x and NaN for NaN or ±inf; the sum of zeros is 0.
    let z = s.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(z == 0.0)
}

fn ensure_finite(t: &Tensor, component: &'static str, what: impl FnOnce() -> String) -> Result<(), SdError> {
    if all_finite(t)? { Ok(()) } else { Err(SdError::NonFinite { component, what: what() }) }
}

/// Reads a safetensors file and refuses any non-finite weight.
pub fn load_checked(path: &Path, component: &'static str) -> Result<HashMap<String, Tensor>, SdError> {
    if !path.is_file() {
        return Err(SdError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no weights"),
        });
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        ensure_finite(&tensors[name], component, || name.clone())?;
    }
    Ok(tensors)
}

/// Builds a network from checked tensors, turning a missing tensor into [`SdError::MissingTensor`].
fn build<T>(
    tensors: HashMap<String, Tensor>,
    component: &'static str,
    device: &Device,
    f: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<T, SdError> {
    let backend = std::sync::Arc::new(Checked { tensors, missing: Mutex::new(None) });
    struct Shared(std::sync::Arc<Checked>);
    impl SimpleBackend for Shared {
        fn get(&self, s: Shape, n: &str, h: candle_nn::Init, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.get(s, n, h, d, dev)
        }
        fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.get_unchecked(n, d, dev)
        }
        fn contains_tensor(&self, n: &str) -> bool {
            self.0.contains_tensor(n)
        }
    }
    let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, device.clone());
    f(vb).map_err(|e| match backend.missing.lock().expect("lock").take() {
        Some(name) => SdError::MissingTensor { component, name },
        None => SdError::Candle(e),
    })
}

/// The text transformer, whichever candle module builds it.
pub enum TextEncoder {
    /// `clip::text_model` (quick_gelu).
    QuickGelu(clip_text::ClipTextTransformer),
    /// `stable_diffusion::clip` (SD 2.x's gelu encoder).
    SdV2(sd_clip::ClipTextTransformer),
}

impl TextEncoder {
    /// Builds the encoder (`text_model.*` names, as transformers writes them).
    pub fn new(vb: VarBuilder, spec: &TextEncoderSpec) -> candle_core::Result<Self> {
        Ok(match spec {
            TextEncoderSpec::QuickGelu(c) => {
                TextEncoder::QuickGelu(clip_text::ClipTextTransformer::new(vb.pp("text_model"), c)?)
            }
            TextEncoderSpec::SdV2(c) => TextEncoder::SdV2(sd_clip::ClipTextTransformer::new(vb, c)?),
        })
    }

    /// The last hidden state `(B, L, D)` (after the final layer norm) of token ids `(B, L)`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TextEncoder::QuickGelu(m) => m.forward_with_mask(ids, usize::MAX),
            TextEncoder::SdV2(m) => m.forward(ids),
        }
    }
}

/// The prompt tokenizer: CLIP's BPE, `<|startoftext|>` … `<|endoftext|>`, padded to the text
/// encoder's length.
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    len: usize,
}

fn tok_err(e: impl std::fmt::Display) -> SdError {
    SdError::Tokenizer(e.to_string())
}

impl PromptTokenizer {
    /// Loads `tokenizer/tokenizer.json`, else `vocab.json` + `merges.txt`, from `dir`.
    pub fn load(dir: &Path, len: usize) -> Result<Self, SdError> {
        let json = dir.join(TOKENIZER_JSON);
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(tok_err)?
        } else {
            let (vocab, merges) = (dir.join(TOKENIZER_VOCAB), dir.join(TOKENIZER_MERGES));
            if !vocab.is_file() || !merges.is_file() {
                return Err(SdError::Tokenizer(format!(
                    "neither {} nor {} + {} exists",
                    json.display(),
                    vocab.display(),
                    merges.display()
                )));
            }
            let bpe = tokenizers::models::bpe::BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .end_of_word_suffix("</w>".into())
                .unk_token("<|endoftext|>".into())
                .build()
                .map_err(tok_err)?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_normalizer(Some(tokenizers::normalizers::Lowercase)).map_err(tok_err)?;
            t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
            t
        };
        let id = |tok: &str| {
            inner.token_to_id(tok).ok_or_else(|| SdError::Tokenizer(format!("the vocabulary has no `{tok}`")))
        };
        let bos = id("<|startoftext|>")?;
        let eos = id("<|endoftext|>")?;
        let pad_tok: Option<String> = std::fs::read(dir.join(TOKENIZER_SPECIAL))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| match &v["pad_token"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
                _ => None,
            });
        let pad = match pad_tok {
            Some(p) => id(&p)?,
            None => eos,
        };
        if len < 2 {
            return Err(SdError::Config("text_encoder: max_position_embeddings < 2".into()));
        }
        Ok(PromptTokenizer { inner, bos, eos, pad, len })
    }

    /// Largest id this tokenizer produces.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `len` ids: BOS, the prompt (truncated), EOS, padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, SdError> {
        let enc = self.inner.encode(text, true).map_err(tok_err)?;
        let body: Vec<u32> =
            enc.get_ids().iter().copied().filter(|&i| i != self.bos && i != self.eos).take(self.len - 2).collect();
        let mut ids = Vec::with_capacity(self.len);
        ids.push(self.bos);
        ids.extend(body);
        ids.push(self.eos);
        ids.resize(self.len, self.pad);
        Ok(ids)
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct SdRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (the unconditional branch of guidance).
    pub negative_prompt: String,
    /// Denoising steps for strength 1 (sd-turbo: clamped to 1–4).
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (sd-turbo: always off).
    pub guidance_scale: f64,
    /// img2img: how much of the schedule runs on the frame (0 = the frame itself, 1 = all).
    pub strength: f64,
    /// Seed of every draw.
    pub seed: u64,
    /// Output width (a multiple of [`SdConfigs::size_multiple`]); `None`: the model's size.
    pub width: Option<usize>,
    /// Output height; `None`: the model's size.
    pub height: Option<usize>,
}

impl Default for SdRequest {
    fn default() -> Self {
        SdRequest {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 30,
            guidance_scale: 7.5,
            strength: 0.6,
            seed: 0,
            width: None,
            height: None,
        }
    }
}

/// A loaded Stable Diffusion: tokenizer, text encoder, UNet, VAE and schedule.
pub struct StableDiffusion {
    configs: SdConfigs,
    variant: SdVariant,
    schedule: Schedule,
    tokenizer: PromptTokenizer,
    text: TextEncoder,
    unet: unet_2d::UNet2DConditionModel,
    vae: vae::AutoEncoderKL,
    /// Where the weights live (prompts, noise and images are moved here).
    device: Device,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion").field("variant", &self.variant).finish_non_exhaustive()
    }
}

/// The seed of candidate `i` of a job seeded `seed` (candidate 0 uses `seed` itself).
pub fn candidate_seed(seed: u64, i: usize) -> u64 {
    if i == 0 { seed } else { SeededNoise::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64() }
}

impl StableDiffusion {
    /// Loads a diffusers directory (CPU, f32); every weight is checked first.
    pub fn load(dir: &Path) -> Result<Self, SdError> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// [`StableDiffusion::load`] onto `device` (weights are checked on the CPU, then moved).
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self, SdError> {
        let configs = SdConfigs::load(dir)?;
        configs.validate()?;
        let tokenizer = PromptTokenizer::load(dir, configs.text_encoder.max_position_embeddings)?;
        if tokenizer.vocab_size() > configs.text_encoder.vocab_size {
            return Err(SdError::Config(format!(
                "the tokenizer has {} tokens, the text encoder {}",
                tokenizer.vocab_size(),
                configs.text_encoder.vocab_size
            )));
        }
        let spec = configs.text_encoder.to_candle()?;
        let text = build(load_checked(&dir.join(TEXT_WEIGHTS), "text_encoder")?, "text_encoder", device, |vb| {
            TextEncoder::new(vb, &spec)
        })?;
        let ucfg = configs.unet.to_candle(None)?;
        let (cin, cout) = (configs.unet.in_channels, configs.unet.out_channels);
        let unet = build(load_checked(&dir.join(UNET_WEIGHTS), "unet")?, "unet", device, |vb| {
            unet_2d::UNet2DConditionModel::new(vb, cin, cout, false, ucfg)
        })?;
        let mut vae_tensors = load_checked(&dir.join(VAE_WEIGHTS), "vae")?;
        zero_encoder_variance(&mut vae_tensors, configs.vae.latent_channels)?;
        let vcfg = configs.vae.to_candle()?;
        let vae = build(vae_tensors, "vae", device, |vb| vae::AutoEncoderKL::new(vb, 3, 3, vcfg))?;
        Ok(StableDiffusion {
            variant: configs.variant(),
            schedule: configs.scheduler.schedule()?,
            configs,
            tokenizer,
            text,
            unet,
            vae,
            device: device.clone(),
        })
    }

    /// The configs it was loaded from.
    pub fn configs(&self) -> &SdConfigs {
        &self.configs
    }

    /// Which published model it is.
    pub fn variant(&self) -> SdVariant {
        self.variant
    }

    /// The text embeddings `(1, L, D)` of a prompt.
    pub fn embed(&self, text: &str) -> Result<Tensor, SdError> {
        let ids = self.tokenizer.encode(text)?;
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &self.device)?;
        let e = self.text.forward(&ids)?;
        ensure_finite(&e, "text_encoder", || "prompt embeddings".into())?;
        Ok(e)
    }

    /// Steps, guidance and size after the model's rules ([`SdConfigs::effective`]).
    pub fn effective(&self, req: &SdRequest) -> Result<(usize, f64, usize, usize), SdError> {
        self.configs.effective(req)
    }

    /// One image: text-to-image, or image-to-image from `init` at `req.strength`.
    /// `on_step(done, total)` runs before every UNet step and may stop the run by returning false.
    pub fn generate(
        &self,
        req: &SdRequest,
        init: Option<&RgbImage>,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<RgbImage, SdError> {
        let (steps, guidance, w, h) = self.effective(req)?;
        let f = self.configs.vae.scale_factor();
        let latent_shape = [1, self.configs.vae.latent_channels, h / f, w / f];
        let mut timesteps = self.schedule.timesteps(steps);
        let mut rng = SeededNoise::new(req.seed);
        // Drawn on the CPU from the seed (the same image on every device), then moved.
        let noise = rng.normal_tensor(&latent_shape)?.to_device(&self.device)?;
        let mut latents = match init {
            None => noise,
            Some(img) => {
                let img = resize(img, w, h);
                let run = ((timesteps.len() as f64 * req.strength).floor() as usize).min(timesteps.len());
                if run == 0 {
                    return Ok(img);
                }
                timesteps.drain(..timesteps.len() - run);
                let x0 = self.encode_image(&img)?;
                self.schedule.add_noise(&x0, &noise, timesteps[0])?
            }
        };
        let cfg = guidance > 1.0;
        let cond = self.embed(&req.prompt)?;
        let context = if cfg { Tensor::cat(&[self.embed(&req.negative_prompt)?, cond], 0)? } else { cond };
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            if !on_step(i, total) {
                return Err(SdError::Stopped);
            }
            let input = if cfg { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let out = self.unet.forward(&input, t as f64, &context)?;
            let out = if cfg {
                let (u, c) = (out.narrow(0, 0, 1)?, out.narrow(0, 1, 1)?);
                (&u + ((c - &u)? * guidance)?)?
            } else {
                out
            };
            latents = self.schedule.step(&out, t, timesteps.get(i + 1).copied(), &latents)?;
            ensure_finite(&latents, "sampling", || format!("latents after step {} of {total} (t = {t})", i + 1))?;
        }
        on_step(total, total);
        self.decode(&latents)
    }

    /// The scaled latent mean `(1, C, H/f, W/f)` of an image.
    pub fn encode_image(&self, img: &RgbImage) -> Result<Tensor, SdError> {
        let (w, h) = img.dimensions();
        let n = (w * h) as usize;
        let mut data = vec![0f32; 3 * n];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + i] = p.0[c] as f32 / 127.5 - 1.0;
            }
        }
        let x = Tensor::from_vec(data, (1, 3, h as usize, w as usize), &self.device)?;
        // The encoder's variance is zeroed at load time: `sample()` is the mean, no RNG draw.
        let z = (self.vae.encode(&x)?.sample()? * self.configs.vae.scaling_factor)?;
        ensure_finite(&z, "vae", || "encoded latents".into())?;
        Ok(z)
    }

    /// Latents to an RGB image.
    pub fn decode(&self, latents: &Tensor) -> Result<RgbImage, SdError> {
        let x = self.vae.decode(&(latents / self.configs.vae.scaling_factor)?)?;
        ensure_finite(&x, "vae", || "decoded image".into())?;
        let x = ((x / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        let (_, _, h, w) = x.dims4()?;
        let v = (x.squeeze(0)? * 255.0)?.round()?.flatten_all()?.to_vec1::<f32>()?;
        let n = h * w;
        Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([v[i] as u8, v[n + i] as u8, v[2 * n + i] as u8])
        }))
    }

    /// `n` candidates, candidate `i` seeded [`candidate_seed`]`(req.seed, i)`.
    pub fn candidates(
        &self,
        req: &SdRequest,
        init: Option<&RgbImage>,
        n: usize,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Vec<RgbImage>, SdError> {
        (0..n)
            .map(|i| {
                let r = SdRequest { seed: candidate_seed(req.seed, i), ..req.clone() };
                self.generate(&r, init, on_step)
            })
            .collect()
    }
}

fn resize(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    if img.dimensions() == (w as u32, h as u32) {
        img.clone()
    } else {
        image::imageops::resize(img, w as u32, h as u32, FilterType::CatmullRom)
    }
}

/// Sets the log-variance half of `quant_conv` to a constant −1000, so the encoder's σ is exactly 0
/// and candle's (unseedable) `DiagonalGaussianDistribution::sample` returns the mean.
fn zero_encoder_variance(tensors: &mut HashMap<String, Tensor>, latent: usize) -> Result<(), SdError> {
    let missing = |name: &str| SdError::MissingTensor { component: "vae", name: name.into() };
    let w = tensors.get("quant_conv.weight").ok_or_else(|| missing("quant_conv.weight"))?;
    let b = tensors.get("quant_conv.bias").ok_or_else(|| missing("quant_conv.bias"))?;
    let w = Tensor::cat(&[w.narrow(0, 0, latent)?, w.narrow(0, latent, latent)?.zeros_like()?], 0)?;
    let b = Tensor::cat(&[b.narrow(0, 0, latent)?, (b.narrow(0, latent, latent)?.zeros_like()? - 1000.0)?], 0)?;
    tensors.insert("quant_conv.weight".into(), w);
    tensors.insert("quant_conv.bias".into(), b);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tiny model (tests, benchmarks, `models init-tiny`).

/// Configs of the tiny SD: 32×32 images, VAE 16/32 channels (latents 16×16×4), UNet 32/64
/// channels with cross-attention (2 heads, linear projections), text encoder 32-d, 2 layers,
/// 16 tokens; DDIM, scaled-linear, ε-prediction. `vocab_size` is the tiny tokenizer's.
pub fn tiny_configs(vocab_size: usize) -> SdConfigs {
    let obj = |v: Value| match v {
        Value::Object(m) => m.into_iter().collect::<BTreeMap<_, _>>(),
        _ => unreachable!(),
    };
    SdConfigs {
        index: ModelIndex {
            class_name: "StableDiffusionPipeline".into(),
            diffusers_version: Some("0.30.0".into()),
            components: obj(serde_json::json!({
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "safety_checker": [null, null],
                "feature_extractor": [null, null],
                "requires_safety_checker": false
            })),
        },
        unet: UNetConfig {
            class_name: "UNet2DConditionModel".into(),
            sample_size: 16,
            in_channels: 4,
            out_channels: 4,
            down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
            block_out_channels: vec![32, 64],
            layers_per_block: 1,
            cross_attention_dim: 32,
            attention_head_dim: OneOrMany::Many(vec![2, 2]),
            num_attention_heads: None,
            use_linear_projection: true,
            transformer_layers_per_block: None,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            norm_num_groups: 8,
            norm_eps: 1e-5,
            act_fn: "silu".into(),
            extra: BTreeMap::new(),
        },
        vae: VaeConfig {
            class_name: "AutoencoderKL".into(),
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 2],
            up_block_types: vec!["UpDecoderBlock2D".into(); 2],
            block_out_channels: vec![16, 32],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 8,
            sample_size: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            extra: BTreeMap::new(),
        },
        text_encoder: TextEncoderConfig {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 16,
            hidden_act: "quick_gelu".into(),
            projection_dim: 32,
            extra: obj(serde_json::json!({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model"})),
        },
        scheduler: SchedulerConfig {
            class_name: "DDIMScheduler".into(),
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            extra: obj(serde_json::json!({"clip_sample": false})),
        },
    }
}

/// The tiny tokenizer: CLIP-style BPE over lower-case printable ASCII with the `</w>` suffix, a
/// few merges, `<|startoftext|>` and `<|endoftext|>` last (the largest id is EOS, as in CLIP).
pub fn tiny_tokenizer() -> Result<tokenizers::Tokenizer, SdError> {
    let mut vocab: Vec<String> = Vec::new();
    for c in (33u8..=126).filter(|c| !c.is_ascii_uppercase()).map(char::from) {
        vocab.push(c.to_string());
        vocab.push(format!("{c}</w>"));
    }
    let merges: Vec<(String, String)> = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (a, b) in &merges {
        vocab.push(format!("{a}{b}"));
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: tokenizers::models::bpe::Vocab = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(map, merges)
        .end_of_word_suffix("</w>".into())
        .unk_token("<|endoftext|>".into())
        .build()
        .map_err(tok_err)?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_normalizer(Some(tokenizers::normalizers::Lowercase)).map_err(tok_err)?;
    t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
    t.add_special_tokens([
        tokenizers::AddedToken::from("<|startoftext|>", true),
        tokenizers::AddedToken::from("<|endoftext|>", true),
    ])
    .map_err(tok_err)?;
    Ok(t)
}

/// Builds the three networks of `cfg` over fresh [`VarMap`]s and fills them from `seed`
/// (sorted names, one stream): uniform fan-avg for weights, zeros for biases, ones for 1-D
/// scales. Returns (unet, vae, text_encoder) tensors by name.
#[allow(clippy::type_complexity)]
pub fn init_weights(
    cfg: &SdConfigs,
    seed: u64,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>, HashMap<String, Tensor>), SdError> {
    let mut rng = SeededNoise::new(seed);
    let unet = init_unet(&cfg.unet, &mut rng)?;
    let vm = VarMap::new();
    vae::AutoEncoderKL::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), 3, 3, cfg.vae.to_candle()?)?;
    let vae = fill(&vm, &mut rng)?;
    let vm = VarMap::new();
    TextEncoder::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg.text_encoder.to_candle()?)?;
    let text = fill(&vm, &mut rng)?;
    Ok((unet, vae, text))
}

/// candle's conditional UNet.
pub type UNet = unet_2d::UNet2DConditionModel;

/// A UNet of `cfg` with seeded weights (as [`init_weights`]), by name.
pub fn init_unet(cfg: &UNetConfig, rng: &mut SeededNoise) -> Result<HashMap<String, Tensor>, SdError> {
    let vm = VarMap::new();
    unet_2d::UNet2DConditionModel::new(
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        cfg.in_channels,
        cfg.out_channels,
        false,
        cfg.to_candle(None)?,
    )?;
    fill(&vm, rng)
}

/// Builds a UNet from named tensors (checked for missing ones).
pub fn build_unet(
    cfg: &UNetConfig,
    tensors: HashMap<String, Tensor>,
) -> Result<unet_2d::UNet2DConditionModel, SdError> {
    let ucfg = cfg.to_candle(None)?;
    let (cin, cout) = (cfg.in_channels, cfg.out_channels);
    build(tensors, "unet", &Device::Cpu, |vb| unet_2d::UNet2DConditionModel::new(vb, cin, cout, false, ucfg))
}

fn fill(vm: &VarMap, rng: &mut SeededNoise) -> Result<HashMap<String, Tensor>, SdError> {
    let data = vm.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let shape = data[name].dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if shape.len() == 1 {
            vec![1.0; n]
        } else {
            let receptive: usize = shape[2..].iter().product();
            let (fan_in, fan_out) = (shape[1] * receptive, shape[0] * receptive);
            let bound = (3.0 / ((fan_in + fan_out) as f64 / 2.0)).sqrt();
            (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect()
        };
        out.insert(name.clone(), Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Writes the tiny SD (configs, weights seeded `seed`, `tokenizer/tokenizer.json`) into `dir`
/// in the diffusers layout.
pub fn write_tiny(dir: &Path, seed: u64) -> Result<(), SdError> {
    let tok = tiny_tokenizer()?;
    let cfg = tiny_configs(tok.get_vocab_size(true));
    cfg.validate()?;
    cfg.save(dir)?;
    let path = dir.join(TOKENIZER_JSON);
    std::fs::create_dir_all(path.parent().expect("has a parent"))
        .map_err(|source| SdError::Io { path: path.clone(), source })?;
    tok.save(&path, true).map_err(tok_err)?;
    write_json(
        &dir.join(TOKENIZER_SPECIAL),
        &serde_json::json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    )?;
    let (unet, vae, text) = init_weights(&cfg, seed)?;
    candle_core::safetensors::save(&unet, dir.join(UNET_WEIGHTS))?;
    candle_core::safetensors::save(&vae, dir.join(VAE_WEIGHTS))?;
    candle_core::safetensors::save(&text, dir.join(TEXT_WEIGHTS))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_many_and_heads() {
        let one: OneOrMany = serde_json::from_str("8").unwrap();
        let many: OneOrMany = serde_json::from_str("[5, 10, 20, 20]").unwrap();
        assert_eq!((one.at(3), many.at(0), many.at(3), many.at(4)), (Some(8), Some(5), Some(20), None));
        let mut cfg = tiny_configs(200).unet;
        cfg.num_attention_heads = Some(OneOrMany::One(4));
        assert_eq!(cfg.to_candle(None).unwrap().blocks[1].attention_head_dim, 4);
        cfg.attention_head_dim = OneOrMany::One(3);
        cfg.num_attention_heads = None;
        assert!(matches!(cfg.to_candle(None), Err(SdError::Config(_))));
        let mut cfg = tiny_configs(200).unet;
        cfg.up_block_types.reverse();
        assert!(matches!(cfg.to_candle(None), Err(SdError::Config(_))));
    }

    #[test]
    fn finite_check_sees_nan_and_inf() {
        let ok = Tensor::new(&[1f32, -2.0, 0.0], &Device::Cpu).unwrap();
        assert!(all_finite(&ok).unwrap());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[1f32, bad, 0.0], &Device::Cpu).unwrap();
            assert!(!all_finite(&t).unwrap(), "{bad}");
        }
        let half = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        assert!(!all_finite(&half).unwrap());
    }

    #[test]
    fn ddim_step_recovers_x0_at_the_end() {
        let mut sch = tiny_configs(200).scheduler;
        sch.set_alpha_to_one = Some(true);
        let s = sch.schedule().unwrap();
        let mut rng = SeededNoise::new(1);
        let x0 = rng.normal_tensor(&[1, 4, 2, 2]).unwrap();
        let eps = rng.normal_tensor(&[1, 4, 2, 2]).unwrap();
        let xt = s.add_noise(&x0, &eps, 500).unwrap();
        // A perfect ε-prediction takes x_t straight back to x₀ when the last ᾱ is 1.
        let back = s.step(&eps, 500, None, &xt).unwrap();
        let err = (back - &x0).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn candidate_seeds_are_distinct_and_stable() {
        let s: Vec<u64> = (0..8).map(|i| candidate_seed(42, i)).collect();
        assert_eq!(s[0], 42);
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 8);
        assert_eq!(s, (0..8).map(|i| candidate_seed(42, i)).collect::<Vec<_>>());
    }

    #[test]
    fn prompt_ids_are_bos_text_eos_padding() {
        let dir = tempfile::tempdir().unwrap();
        let t = tiny_tokenizer().unwrap();
        let path = dir.path().join(TOKENIZER_JSON);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        t.save(&path, false).unwrap();
        let p = PromptTokenizer::load(dir.path(), 8).unwrap();
        let ids = p.encode("The surf").unwrap();
        assert_eq!(ids.len(), 8);
        assert_eq!(ids[0], p.bos);
        let end = ids.iter().position(|&i| i == p.eos).unwrap();
        assert!(end > 1 && ids[end..].iter().all(|&i| i == p.eos), "{ids:?}");
        assert_eq!(p.eos as usize, p.vocab_size() - 1, "EOS is the largest id, as in CLIP");
        let long = p.encode(&"word ".repeat(50)).unwrap();
        assert_eq!((long.len(), long[7]), (8, p.eos));
    }
}
