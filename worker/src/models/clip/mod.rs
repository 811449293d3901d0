//! `clip` owns CLIP, the editor's eyes: images and texts into one embedding space, through
//! candle-transformers' `clip` model. [`ClipConfig`] mirrors a Hugging Face `config.json`
//! (`CLIPModel`: openai/clip-vit-base-patch32, -patch16, clip-vit-large-patch14); [`Clip::load`]
//! reads a checkpoint directory in that layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`, optional `preprocessor_config.json`), refusing missing or non-finite
//! weights; [`Clip::embed_images`] and [`Clip::embed_text`] return L2-normalised vectors and
//! refuse non-finite ones. [`init_tiny`] writes a tiny CLIP in the same layout with a fixed
//! seed, for tests and the demo.

use crate::batching::{Batcher, ForwardFn};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip as ct;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::diffusion::SeededNoise;
use super::init::Init;
use super::preprocess::{Frames, ImageProcessorConfig, PreprocessError};

mod tiny;
pub use tiny::*;

/// Weights file of a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Tokenizer file of a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Images per forward pass.
pub const DEFAULT_BATCH: usize = 16;
/// CLIP's end-of-text token: the text embedding is read at its position.
pub const EOT_TOKEN: &str = "<|endoftext|>";
/// CLIP's start-of-text token.
pub const SOT_TOKEN: &str = "<|startoftext|>";

/// A CLIP checkpoint's `config.json` (the fields that shape the network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Size of the shared embedding space.
    #[serde(default = "d512")]
    pub projection_dim: usize,
    /// Initial `logit_scale` when the checkpoint has none.
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f32,
    /// The text tower.
    pub text_config: ClipTextConfig,
    /// The vision tower.
    pub vision_config: ClipVisionConfig,
}

/// `config.json`'s `text_config` (defaults: transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Tokens in the vocabulary.
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Width of the transformer.
    #[serde(default = "d512")]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[serde(default = "d2048")]
    pub intermediate_size: usize,
    /// Transformer layers.
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d8")]
    pub num_attention_heads: usize,
    /// Longest token sequence.
    #[serde(default = "d77")]
    pub max_position_embeddings: usize,
    /// Activation; only `quick_gelu` (every OpenAI CLIP) is supported.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
}

/// `config.json`'s `vision_config` (defaults: transformers' `CLIPVisionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Width of the transformer.
    #[serde(default = "d768")]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    /// Transformer layers.
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    /// Input side in pixels.
    #[serde(default = "d224")]
    pub image_size: usize,
    /// Patch side in pixels.
    #[serde(default = "d32")]
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "d3")]
    pub num_channels: usize,
    /// Activation; only `quick_gelu`.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
}

fn d3() -> usize {
    3
}
fn d8() -> usize {
    8
}
fn d12() -> usize {
    12
}
fn d32() -> usize {
    32
}
fn d77() -> usize {
    77
}
fn d224() -> usize {
    224
}
fn d512() -> usize {
    512
}
fn d768() -> usize {
    768
}
fn d2048() -> usize {
    2048
}
fn d3072() -> usize {
    3072
}
fn default_vocab() -> usize {
    49408
}
fn default_logit_scale() -> f32 {
    2.6592
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}

/// Why CLIP could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The batched forward failed ([`crate::batching`]).
    #[error("clip batch: {0}")]
    Batch(#[from] crate::batching::BatchError),
    /// A file of the checkpoint is missing or unreadable.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The configuration asks for something this build cannot run.
    #[error("unsupported CLIP configuration: {0}")]
    Unsupported(String),
    /// A weight the network needs is absent from the checkpoint.
    #[error("weight {0:?} is missing from the checkpoint")]
    MissingWeight(String),
    /// A weight holds NaN or infinity.
    #[error("weight {0:?} holds non-finite values")]
    NonFiniteWeight(String),
    /// An embedding came out NaN or infinite (or all zero).
    #[error("the model produced a non-finite or zero embedding")]
    NonFiniteEmbedding,
    /// Tokenizing failed, or the tokenizer does not match the model.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Preprocessing failed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// candle failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ClipConfig {
    /// openai/clip-vit-base-patch32.
    pub fn vit_b32() -> Self {
        serde_json::from_value(serde_json::json!({"text_config": {}, "vision_config": {}})).expect("defaults")
    }

    /// openai/clip-vit-base-patch16.
    pub fn vit_b16() -> Self {
        let mut c = Self::vit_b32();
        c.vision_config.patch_size = 16;
        c
    }

    /// openai/clip-vit-large-patch14.
    pub fn vit_l14() -> Self {
        let mut c = Self::vit_b32();
        c.projection_dim = 768;
        c.text_config.hidden_size = 768;
        c.text_config.intermediate_size = 3072;
        c.text_config.num_attention_heads = 12;
        c.vision_config = ClipVisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            patch_size: 14,
            ..c.vision_config
        };
        c
    }

    /// The tiny CLIP of [`init_tiny`]: the real 224 px input and 32 px patches, narrow towers.
    pub fn tiny(vocab_size: usize) -> Self {
        ClipConfig {
            projection_dim: 32,
            logit_scale_init_value: default_logit_scale(),
            text_config: ClipTextConfig {
                vocab_size,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                max_position_embeddings: 32,
                hidden_act: quick_gelu(),
            },
            vision_config: ClipVisionConfig {
                hidden_size: 48,
                intermediate_size: 96,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
                hidden_act: quick_gelu(),
            },
        }
    }

    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, ClipError> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).map_err(|e| ClipError::File { path: path.clone(), msg: e.to_string() })?;
        serde_json::from_slice(&bytes).map_err(|e| ClipError::File { path, msg: e.to_string() })
    }

    /// candle's configuration, after checking what candle cannot run.
    pub fn to_candle(&self) -> Result<ct::ClipConfig, ClipError> {
        let (t, v) = (&self.text_config, &self.vision_config);
        for (tower, act) in [("text", &t.hidden_act), ("vision", &v.hidden_act)] {
            if act != "quick_gelu" {
                return Err(ClipError::Unsupported(format!("{tower} hidden_act {act:?} (only quick_gelu)")));
            }
        }
        if t.hidden_size % t.num_attention_heads != 0 || v.hidden_size % v.num_attention_heads != 0 {
            return Err(ClipError::Unsupported("hidden_size not divisible by num_attention_heads".into()));
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(ClipError::Unsupported(format!(
                "image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            )));
        }
        Ok(ct::ClipConfig {
            text_config: ct::text_model::ClipTextConfig {
                vocab_size: t.vocab_size,
                embed_dim: t.hidden_size,
                activation: ct::text_model::Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: self.projection_dim,
            },
            vision_config: ct::vision_model::ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: ct::text_model::Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: self.projection_dim,
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
            },
            logit_scale_init_value: self.logit_scale_init_value,
            image_size: v.image_size,
        })
    }
}

/// A loaded CLIP: network, tokenizer and image preprocessing.
pub struct Clip {
    model: ct::ClipModel,
    tokenizer: tokenizers::Tokenizer,
    eot_id: u32,
    config: ClipConfig,
    processor: ImageProcessorConfig,
    device: Device,
    /// The weights' and activations' float type.
    dtype: DType,
    /// Images per forward pass.
    pub batch: usize,
    /// How results and logs name it: `<name>@<weights digest>` ([`super::checkpoint_id`]).
    pub id: String,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip").field("id", &self.id).field("config", &self.config).finish()
    }
}

/// Weights the network needs that candle would otherwise fill with random values.
const REQUIRED_WEIGHTS: &[&str] = &["vision_model.embeddings.class_embedding"];

impl Clip {
    /// Loads a checkpoint directory on `device`, in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        Self::load_as(dir, device, DType::F32)
    }

    /// Loads a checkpoint directory on `device`, its weights cast to `dtype` (f32 or f16; on a
    /// CUDA device f16 halves the memory traffic and runs the matmuls on tensor cores; candle's
    /// CPU backend has no bf16 matmul, so bf16 is not offered).
    /// Images are preprocessed straight to `dtype`; candle's attention computes its softmax
    /// in f32 whatever the dtype, and embeddings come back as f32.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ClipError> {
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(ClipError::Unsupported(format!("{dtype:?} weights (f32 or f16)")));
        }
        let config = ClipConfig::load(dir)?;
        let candle_cfg = config.to_candle()?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| ClipError::File { path: weights_path.clone(), msg: e.to_string() })?;
        check_weights(&tensors)?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| ClipError::File { path: tokenizer_path, msg: e.to_string() })?;
        let eot_id =
            tokenizer.token_to_id(EOT_TOKEN).ok_or_else(|| ClipError::Tokenizer(format!("no {EOT_TOKEN} token")))?;
        // candle pools the text at the argmax of the ids: the end-of-text id must be the largest.
        if eot_id as usize + 1 != config.text_config.vocab_size
            || tokenizer.get_vocab_size(true) > config.text_config.vocab_size
        {
            return Err(ClipError::Tokenizer(format!(
                "{EOT_TOKEN} is id {eot_id} of a {}-token vocabulary; the model has {} (it must be the last id)",
                tokenizer.get_vocab_size(true),
                config.text_config.vocab_size
            )));
        }
        let mut processor = ImageProcessorConfig::load(dir)?;
        if processor.crop() != (config.vision_config.image_size as u32, config.vision_config.image_size as u32) {
            // A processor that does not match the network would fail inside the patch embedding.
            processor = ImageProcessorConfig::square(config.vision_config.image_size as u32);
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let model = ct::ClipModel::new(vb, &candle_cfg)?;
        let id = super::checkpoint_id(dir, &weights_path)
            .map_err(|e| ClipError::File { path: weights_path.clone(), msg: e.to_string() })?;
        let device = device.clone();
        Ok(Clip { model, tokenizer, eot_id, config, processor, device, dtype, batch: DEFAULT_BATCH, id })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The weights' float type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The image preprocessing in use.
    pub fn processor(&self) -> &ImageProcessorConfig {
        &self.processor
    }

    /// Dimension of the embeddings.
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// L2-normalised embeddings of `images`, in order, [`batch`](Self::batch) at a time.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch.max(1)) {
            let pixels = self.processor.tensor(Frames::Rgb(chunk), &self.device, self.dtype)?;
            out.extend(self.embed_pixels(&pixels)?);
        }
        Ok(out)
    }

    /// As [`Clip::embed_images`], the forward passes running through `batcher` (a batcher over
    /// [`image_forward`] of this model, shared with other tasks) when one is given.
    pub fn embed_images_batched(
        &self,
        images: &[RgbImage],
        batcher: Option<&Batcher>,
    ) -> Result<Vec<Vec<f32>>, ClipError> {
        let Some(batcher) = batcher else {
            return self.embed_images(images);
        };
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch.max(1)) {
            let pixels = self.processor.tensor(Frames::Rgb(chunk), &self.device, self.dtype)?;
            let features = batcher.run(vec![pixels])?;
            out.extend(normalised_rows(&features)?);
        }
        Ok(out)
    }

    /// L2-normalised embeddings of an already preprocessed `(N, 3, H, W)` batch (cast to the
    /// model's dtype if it is not in it).
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Vec<Vec<f32>>, ClipError> {
        let features = self.model.get_image_features(&pixels.to_dtype(self.dtype)?)?;
        normalised_rows(&features)
    }

    /// The token ids of `text`: start, tokens, end, truncated to the model's context.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ClipError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| ClipError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        let max = self.config.text_config.max_position_embeddings;
        if ids.len() > max {
            ids.truncate(max - 1);
            ids.push(self.eot_id);
        }
        if ids.last() != Some(&self.eot_id) {
            ids.push(self.eot_id);
            if ids.len() > max {
                ids.remove(ids.len() - 2);
            }
        }
        Ok(ids)
    }

    /// The L2-normalised embedding of `text`.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>, ClipError> {
        let ids = self.tokenize(text)?;
        let input = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let features = self.model.get_text_features(&input)?;
        Ok(normalised_rows(&features)?.remove(0))
    }
}

fn check_weights(tensors: &HashMap<String, Tensor>) -> Result<(), ClipError> {
    for name in REQUIRED_WEIGHTS {
        if !tensors.contains_key(*name) {
            return Err(ClipError::MissingWeight((*name).into()));
        }
    }
    for (name, t) in tensors {
        if !t.dtype().is_float() {
            continue;
        }
        let finite = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite());
        if !finite {
            return Err(ClipError::NonFiniteWeight(name.clone()));
        }
    }
    Ok(())
}

/// Rows of a `(N, D)` tensor, each divided by its L2 norm; non-finite or zero rows are an error.
/// The forward a [`Batcher`] runs for `clip`'s image tower: preprocessed pixels `(N, 3, H, W)`
/// to image features `(N, D)` (normalised by the caller).
pub fn image_forward(clip: std::sync::Arc<Clip>) -> ForwardFn {
    Box::new(move |xs: &[Tensor]| clip.model.get_image_features(&xs[0]))
}

fn normalised_rows(features: &Tensor) -> Result<Vec<Vec<f32>>, ClipError> {
    let rows = features.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    rows.into_iter()
        .map(|mut r| {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !norm.is_finite() || norm == 0.0 {
                return Err(ClipError::NonFiniteEmbedding);
            }
            r.iter_mut().for_each(|x| *x /= norm);
            Ok(r)
        })
        .collect()
}

/// Cosine of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The L2-normalised mean of L2-normalised vectors (GeneRec's user vector); `None` when empty or
/// when they cancel out.
pub fn mean_direction(vectors: &[Vec<f32>]) -> Option<Vec<f32>> {
    let first = vectors.first()?;
    let mut sum = vec![0f32; first.len()];
    for v in vectors {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !n.is_finite() || n == 0.0 || v.len() != sum.len() {
            return None;
        }
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x / n);
    }
    let n = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    (n.is_finite() && n > 1e-6).then(|| sum.into_iter().map(|x| x / n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_direction_normalises_and_refuses_cancellation() {
        let m = mean_direction(&[vec![2.0, 0.0], vec![0.0, 1.0]]).unwrap();
        assert!((m[0] - m[1]).abs() < 1e-6 && (cosine(&m, &m) - 1.0).abs() < 1e-6);
        assert!(mean_direction(&[vec![1.0, 0.0], vec![-1.0, 0.0]]).is_none());
        assert!(mean_direction(&[]).is_none());
    }

    #[test]
    fn tiny_tokenizer_wraps_and_lowercases() {
        let t = tiny_tokenizer(tiny_vocab_size()).unwrap();
        let ids = t.encode("The GOAL zzz", true).unwrap().get_ids().to_vec();
        let eot = t.token_to_id(EOT_TOKEN).unwrap();
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert_eq!(ids[0], t.token_to_id(SOT_TOKEN).unwrap());
        assert_eq!(ids[2], t.token_to_id("goal").unwrap());
        assert_eq!(ids[3], 0, "unknown word");
        assert_eq!(*ids.last().unwrap(), eot);
        assert_eq!(eot as usize + 1, t.get_vocab_size(true));
    }

    #[test]
    fn unsupported_activation_is_refused() {
        let mut c = ClipConfig::vit_b32();
        c.vision_config.hidden_act = "gelu".into();
        assert!(matches!(c.to_candle(), Err(ClipError::Unsupported(_))));
    }
}
