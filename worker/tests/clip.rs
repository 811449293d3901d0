//! CLIP: preprocessing against values computed independently by transformers'
//! CLIPImageProcessor, the published configurations mapped onto candle's network (parameter
//! counts as published), and the tiny checkpoint through the real loading code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use worker::models::clip::{self, Clip, ClipConfig, ClipError};
use worker::models::preprocess::{ImageProcessorConfig, resize_bicubic};

/// The synthetic image of `fixtures/clip_preprocess.py`.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as u64, y as u64);
        image::Rgb([((x * 7 + y * 3) % 256) as u8, ((x * x + y * 13) % 256) as u8, (((x ^ y) * 5) % 256) as u8])
    })
}

#[test]
fn preprocessing_matches_transformers_clip_image_processor() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/clip_preprocess.json")).expect("fixture parses");
    let proc = ImageProcessorConfig::default();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let (w, h) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let px = proc.pixels(&pattern(w, h)).unwrap();
        assert_eq!(px.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        for (c, want) in case["channel_sums"].as_array().unwrap().iter().enumerate() {
            let got: f64 = px[c * plane..(c + 1) * plane].iter().map(|v| *v as f64).sum();
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() < 1e-6 * plane as f64, "{w}x{h} channel {c}: sum {got} vs {want}");
        }
        let mut worst = 0f64;
        for s in case["samples"].as_array().unwrap() {
            let s = s.as_array().unwrap();
            let (c, y, x) = (s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize, s[2].as_u64().unwrap());
            let got = px[c * plane + y * 224 + x as usize] as f64;
            worst = worst.max((got - s[3].as_f64().unwrap()).abs());
        }
        // Exact up to f32 rounding: one 8-bit level would be 0.0146 after normalisation.
        assert!(worst < 1e-5, "{w}x{h}: worst sample differs by {worst}");
    }
}

#[test]
fn bicubic_differs_from_naive_sampling_when_downscaling() {
    // The antialiasing matters: a 1-pixel checkerboard averages to grey, not to one colour.
    let img =
        RgbImage::from_fn(64, 64, |x, y| if (x + y) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
    let out = resize_bicubic(&img, 16, 16);
    for p in out.pixels() {
        assert!((120..=135).contains(&p.0[0]), "{:?}", p.0);
    }
}

/// A VarBuilder backend that records names and shapes and builds no data (broadcast zeros).
#[derive(Default, Clone)]
struct ShapeRecorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

impl candle_nn::var_builder::SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap().insert(name.to_owned(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unexpected unchecked get of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn parameters(cfg: &ClipConfig) -> (usize, BTreeMap<String, Vec<usize>>) {
    let rec = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    candle_transformers::models::clip::ClipModel::new(vb, &cfg.to_candle().unwrap()).unwrap();
    let shapes = rec.0.lock().unwrap().clone();
    (shapes.values().map(|s| s.iter().product::<usize>()).sum(), shapes)
}

#[test]
fn published_configs_build_with_the_published_parameter_counts() {
    // config.json as published on the Hugging Face hub (trimmed of fields the network ignores,
    // with some of them kept to show they are tolerated), and transformers' parameter counts.
    let cases = [
        (include_str!("fixtures/clip-vit-base-patch32.json"), 151_277_313usize, 512usize, 32usize),
        (include_str!("fixtures/clip-vit-base-patch16.json"), 149_620_737, 512, 16),
        (include_str!("fixtures/clip-vit-large-patch14.json"), 427_616_513, 768, 14),
    ];
    let presets = [ClipConfig::vit_b32(), ClipConfig::vit_b16(), ClipConfig::vit_l14()];
    for ((json, count, dim, patch), preset) in cases.into_iter().zip(presets) {
        let cfg: ClipConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg, preset, "preset matches the published file");
        assert_eq!((cfg.projection_dim, cfg.vision_config.patch_size), (dim, patch));
        let (n, shapes) = parameters(&cfg);
        assert_eq!(n, count, "parameters of the patch-{patch} model");
        assert_eq!(shapes["visual_projection.weight"], vec![dim, cfg.vision_config.hidden_size]);
        assert!(shapes.contains_key("vision_model.pre_layrnorm.weight"), "HF's tensor names");
    }
}

fn tiny_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clip");
    clip::init_tiny(&dir, 6).unwrap();
    (tmp, dir)
}

#[test]
fn tiny_clip_in_half_precision_agrees_with_f32() {
    let (_tmp, dir) = tiny_dir();
    let full = Clip::load(&dir, &Device::Cpu).unwrap();
    let images = [pattern(96, 64), RgbImage::from_fn(80, 80, |x, y| image::Rgb([(x * 3) as u8, (y * 3) as u8, 90]))];
    let want = full.embed_images(&images).unwrap();
    let text_want = full.embed_text("a surfer on a wave").unwrap();
    let half = Clip::load_as(&dir, &Device::Cpu, DType::F16).unwrap();
    assert_eq!(half.dtype(), DType::F16);
    let got = half.embed_images(&images).unwrap();
    let mut worst = 1f32;
    for (g, w) in got.iter().zip(&want) {
        assert_ne!(g, w, "f16 rounds differently from f32");
        worst = worst.min(clip::cosine(g, w));
    }
    assert!(worst > 0.995, "f16 image embeddings: worst cosine {worst} to f32");
    let c = clip::cosine(&half.embed_text("a surfer on a wave").unwrap(), &text_want);
    assert!(c > 0.995, "f16 text embedding: cosine {c} to f32");
    for dtype in [DType::BF16, DType::U8] {
        assert!(matches!(Clip::load_as(&dir, &Device::Cpu, dtype), Err(ClipError::Unsupported(_))), "{dtype:?}");
    }
}

#[test]
fn tiny_clip_loads_and_embeds_deterministically() {
    let (_tmp, dir) = tiny_dir();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let model = Clip::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(model.dim(), 32);
    let a = pattern(96, 64);
    let b = RgbImage::from_fn(96, 64, |x, _| image::Rgb([(x * 2) as u8, 40, 200]));
    let e = model.embed_images(&[a.clone(), b.clone(), a.clone()]).unwrap();
    assert_eq!(e.len(), 3);
    for v in &e {
        assert_eq!(v.len(), 32);
        assert!((clip::cosine(v, v) - 1.0).abs() < 1e-5, "normalised");
    }
    assert_eq!(e[0], e[2], "same image, same embedding");
    let c = clip::cosine(&e[0], &e[1]);
    assert!(c < 0.99, "different images differ: cosine {c}");
    // A second load, and batching, change nothing.
    let mut again = Clip::load(&dir, &Device::Cpu).unwrap();
    again.batch = 1;
    let e2 = again.embed_images(&[a, b]).unwrap();
    for (x, y) in e2.iter().zip(&e) {
        assert!(x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5));
    }
    // A second tiny checkpoint from the same seed is bit-identical.
    let (_tmp2, dir2) = tiny_dir();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(dir2.join("model.safetensors")).unwrap()
    );

    let t1 = model.embed_text("the best goal").unwrap();
    let t2 = model.embed_text("a cat on the beach").unwrap();
    assert_eq!(t1.len(), 32);
    assert!(clip::cosine(&t1, &t2) < 0.999);
    assert_eq!(t1, model.embed_text("THE BEST GOAL").unwrap(), "the tokenizer lower-cases");
    let long = "goal ".repeat(500);
    let ids = model.tokenize(&long).unwrap();
    assert_eq!(ids.len(), 32, "truncated to the context");
    assert!(model.embed_text(&long).is_ok());
}

#[test]
fn non_finite_and_missing_weights_are_refused() {
    let (_tmp, dir) = tiny_dir();
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let name = "text_model.encoder.layers.0.mlp.fc1.weight".to_string();
    let w = &tensors[&name];
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    tensors.insert(name.clone(), Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    match Clip::load(&dir, &Device::Cpu) {
        Err(ClipError::NonFiniteWeight(n)) => assert_eq!(n, name),
        other => panic!("expected NonFiniteWeight, got {other:?}"),
    }
    tensors.remove(&name);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    assert!(Clip::load(&dir, &Device::Cpu).is_err(), "a missing layer weight");
    let (_tmp, dir) = tiny_dir();
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.remove("vision_model.embeddings.class_embedding");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    assert!(matches!(Clip::load(&dir, &Device::Cpu), Err(ClipError::MissingWeight(_))), "no random fallback");
}
