//! The tiny CLIP the tests, the demo and the benchmarks run: a word-level tokenizer over a
//! small vocabulary and seeded random weights ([`super::super::init`]), written as a checkpoint
//! directory in the Hugging Face layout. No substitute for trained weights.

use super::*;

/// Words of the tiny tokenizer's vocabulary (besides the special tokens).
const TINY_WORDS: &str = "a an the of in on at to and or with for from by is are this that it its my your \
    goal goals football soccer ball player team match game score cat cats dog dogs bird car cars road city night \
    day sun sky sea beach water mountain snow tree forest red green blue yellow black white orange purple pink \
    bright dark slow fast motion moment best funny cute action scene shot close up wide view people person face \
    smile dance music food cook kitchen street sport sports run running jump jumping fly flying happy calm \
    colourful colorful sunset sunrise light shadow stripes stripes checkerboard square circle shape shapes moving";

/// The words of the tiny tokenizer, sorted and unique.
fn tiny_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = TINY_WORDS.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// Vocabulary size of the tiny tokenizer: `<|unk|>`, the words, start and end.
pub fn tiny_vocab_size() -> usize {
    tiny_words().len() + 3
}

/// A word-level tokenizer over [`TINY_WORDS`] (lower-cased, whitespace-split, unknown words to
/// `<|unk|>` = 0), wrapped in start/end tokens, which take the last two ids of a
/// `vocab_size`-token vocabulary (CLIP reads the text embedding at the largest id).
pub fn tiny_tokenizer(vocab_size: usize) -> Result<tokenizers::Tokenizer, ClipError> {
    let words = tiny_words();
    if vocab_size < words.len() + 3 {
        return Err(ClipError::Tokenizer(format!("a vocabulary of {vocab_size} cannot hold {} words", words.len())));
    }
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|unk|>".into(), 0.into());
    for w in &words {
        vocab.insert((*w).into(), (vocab.len() as u32).into());
    }
    let eot = vocab_size as u32 - 1;
    let sot = eot - 1;
    vocab.insert(SOT_TOKEN.into(), sot.into());
    vocab.insert(EOT_TOKEN.into(), eot.into());
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})
    };
    let piece = |t: &str| serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| serde_json::json!({"Sequence": {"id": s, "type_id": 0}});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(sot, SOT_TOKEN), special(eot, EOT_TOKEN)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [piece(SOT_TOKEN), seq("A"), piece(EOT_TOKEN)],
            "pair": [piece(SOT_TOKEN), seq("A"), seq("B"), piece(EOT_TOKEN)],
            "special_tokens": {
                SOT_TOKEN: {"id": SOT_TOKEN, "ids": [sot], "tokens": [SOT_TOKEN]},
                EOT_TOKEN: {"id": EOT_TOKEN, "ids": [eot], "tokens": [EOT_TOKEN]},
            },
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|unk|>"},
    });
    json.to_string().parse::<tokenizers::Tokenizer>().map_err(|e| ClipError::Tokenizer(e.to_string()))
}

/// Writes the tiny CLIP ([`ClipConfig::tiny`], fixed `seed`) into `dir`; see [`init_random`].
pub fn init_tiny(dir: &Path, seed: u64) -> Result<ClipConfig, ClipError> {
    let cfg = ClipConfig::tiny(tiny_vocab_size());
    init_random(dir, &cfg, seed)?;
    Ok(cfg)
}

/// Writes a randomly initialised CLIP of any configuration (fixed `seed`) into `dir` in the
/// Hugging Face layout: `config.json`, `model.safetensors`, `tokenizer.json` (the tiny
/// word-level one), `preprocessor_config.json`. Weights: normal(0, 0.02) embeddings (as
/// transformers), LeCun-normal matrices and convolutions, LayerNorm scale 1 and bias 0, zero
/// biases. Tests,
/// the demo and benchmarks of real-sized configurations use it; it is no substitute for
/// trained weights.
pub fn init_random(dir: &Path, cfg: &ClipConfig, seed: u64) -> Result<(), ClipError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| ClipError::File { path: path.to_owned(), msg: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let tokenizer = tiny_tokenizer(cfg.text_config.vocab_size)?;
    let varmap = candle_nn::VarMap::new();
    ct::ClipModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg.to_candle()?)?;
    let mut tensors = crate::models::init::seeded(&varmap, &mut SeededNoise::new(seed), |name, shape| {
        let norm = name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm");
        match () {
            _ if name.ends_with("bias") => Init::Zeros,
            _ if norm => Init::Ones,
            _ if name.contains("embedding") => Init::Normal(0.02),
            // LeCun normal, not transformers' 0.02: at 0.02 a narrow random tower maps every
            // image to nearly the same vector, and the tests need embeddings that differ.
            _ => Init::lecun_normal(shape),
        }
    })?;
    // The class embedding is a plain parameter in the checkpoint, not built by a layer.
    let mut rng = SeededNoise::new(seed ^ 0xC1A5);
    let class: Vec<f32> = (0..cfg.vision_config.hidden_size).map(|_| rng.normal() as f32 * 0.02).collect();
    tensors.insert(
        "vision_model.embeddings.class_embedding".into(),
        Tensor::from_vec(class, cfg.vision_config.hidden_size, &Device::Cpu)?,
    );
    tensors.insert("logit_scale".into(), Tensor::new(cfg.logit_scale_init_value, &Device::Cpu)?);
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)?;
    let mut config = serde_json::to_value(cfg).expect("config serialises");
    config["architectures"] = serde_json::json!(["CLIPModel"]);
    config["model_type"] = "clip".into();
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).map_err(|e| io(&path, &e))?;
    let path = dir.join(TOKENIZER_FILE);
    tokenizer.save(&path, true).map_err(|e| io(&path, &e))?;
    let path = dir.join("preprocessor_config.json");
    let processor = serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true, "size": {"shortest_edge": cfg.vision_config.image_size}, "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": cfg.vision_config.image_size, "width": cfg.vision_config.image_size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&processor).expect("json")).map_err(|e| io(&path, &e))?;
    Ok(())
}
