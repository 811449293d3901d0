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

mod config;
mod pipeline;
mod schedule;
mod tiny;
mod tokenizer;
mod weights;

pub use config::*;
pub use pipeline::*;
pub use schedule::*;
pub use tiny::*;
pub use tokenizer::*;
pub use weights::*;

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
