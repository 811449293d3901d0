//! The loaded model and its sampling: text encoder, UNet, VAE; text-to-image and
//! image-to-image with classifier-free guidance.

use super::*;

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
    pub fn effective(&self, req: &SdRequest) -> Result<Effective, SdError> {
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
        let Effective { steps, guidance, width: w, height: h } = self.effective(req)?;
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
}

pub(super) fn resize(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    if img.dimensions() == (w as u32, h as u32) {
        img.clone()
    } else {
        image::imageops::resize(img, w as u32, h as u32, FilterType::CatmullRom)
    }
}

/// Sets the log-variance half of `quant_conv` to a constant −1000, so the encoder's σ is exactly 0
/// and candle's (unseedable) `DiagonalGaussianDistribution::sample` returns the mean.
pub(super) fn zero_encoder_variance(tensors: &mut HashMap<String, Tensor>, latent: usize) -> Result<(), SdError> {
    let missing = |name: &str| SdError::MissingTensor { component: "vae", name: name.into() };
    let w = tensors.get("quant_conv.weight").ok_or_else(|| missing("quant_conv.weight"))?;
    let b = tensors.get("quant_conv.bias").ok_or_else(|| missing("quant_conv.bias"))?;
    let w = Tensor::cat(&[w.narrow(0, 0, latent)?, w.narrow(0, latent, latent)?.zeros_like()?], 0)?;
    let b = Tensor::cat(&[b.narrow(0, 0, latent)?, (b.narrow(0, latent, latent)?.zeros_like()? - 1000.0)?], 0)?;
    tensors.insert("quant_conv.weight".into(), w);
    tensors.insert("quant_conv.bias".into(), b);
    Ok(())
}
