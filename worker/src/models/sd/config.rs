//! The diffusers config files of a Stable Diffusion directory, as structs that mirror them
//! (keeping the keys they do not use, so a file round-trips) and map onto candle's configs;
//! which published model a directory holds ([`SdVariant`]).

use super::*;

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
    pub(super) fn at(&self, i: usize) -> Option<usize> {
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

pub(super) fn yes() -> bool {
    true
}
pub(super) fn one() -> usize {
    1
}
pub(super) fn one_f() -> f64 {
    1.0
}
pub(super) fn silu() -> String {
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

pub(super) fn scaling() -> f64 {
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

pub(super) fn quick_gelu() -> String {
    "quick_gelu".into()
}
pub(super) fn proj_dim() -> usize {
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

impl SdVariant {
    /// Its name in results and logs: `sd-1.5`, `sd-2.1`, `sd-turbo` or `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            SdVariant::V1_5 => "sd-1.5",
            SdVariant::V2_1 => "sd-2.1",
            SdVariant::Turbo => "sd-turbo",
            SdVariant::Custom => "custom",
        }
    }
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
            (true, 1024) if self.scheduler.spacing().ok() == Some(Spacing::Trailing) => SdVariant::Turbo,
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
    pub fn effective(&self, req: &SdRequest) -> Result<Effective, SdError> {
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
        Ok(Effective { steps, guidance, width: w, height: h })
    }
}

/// What a request runs as, after the model's rules ([`SdConfigs::effective`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (0: off).
    pub guidance: f64,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
}
