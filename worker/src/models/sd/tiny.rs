//! The tiny SD the tests and the demo run: configs, tokenizer, seeded weights, written in the
//! diffusers layout.

use super::*;

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

pub(super) fn fill(vm: &VarMap, rng: &mut SeededNoise) -> Result<HashMap<String, Tensor>, SdError> {
    use crate::models::init::{Init, seeded};
    Ok(seeded(vm, rng, |name, shape| match () {
        _ if name.ends_with("bias") => Init::Zeros,
        _ if shape.len() == 1 => Init::Ones,
        _ => Init::fan_avg_uniform(shape),
    })?)
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
