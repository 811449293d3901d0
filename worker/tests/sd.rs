//! Stable Diffusion: the tiny model written by `models init-tiny` (diffusers layout) loaded by
//! the same code as real ones; seeds, strength, guidance, shapes, typed errors; and the configs
//! diffusers publishes for SD 1.5, 2.1 and sd-turbo (fixtures under `tests/fixtures/sd/`,
//! transcribed from the models' Hugging Face repositories — no network here, so not byte copies)
//! mapped onto candle's own `StableDiffusionConfig` presets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use candle_transformers::models::stable_diffusion::{StableDiffusionConfig, clip as sd_clip};
use image::RgbImage;
use protocol::Stage;
use worker::media::MediaLimits;
use worker::models::sd::{
    self, Effective, Prediction, SdConfigs, SdError, SdRequest, SdVariant, StableDiffusion, TextEncoderSpec,
    candidate_seed,
};
use worker::pipeline::thumbnail::ThumbnailGenerate;
use worker::pipeline::{JobContext, PipelineError, ProgressSink};

fn tiny() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sd");
    sd::write_tiny(&dir, 6).unwrap();
    (tmp, dir)
}

fn req(seed: u64) -> SdRequest {
    SdRequest {
        prompt: "a surfer on a wave at sunset".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        guidance_scale: 7.5,
        strength: 0.5,
        seed,
        width: None,
        height: None,
    }
}

fn go(m: &StableDiffusion, r: &SdRequest, init: Option<&RgbImage>) -> Result<RgbImage, SdError> {
    m.generate(r, init, &mut |_, _| true)
}

fn frame(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) % 7 * 30) as u8]))
}

#[test]
fn tiny_model_loads_from_its_diffusers_layout() {
    let (_t, dir) = tiny();
    for f in [
        sd::MODEL_INDEX_FILE,
        sd::UNET_CONFIG,
        sd::UNET_WEIGHTS,
        sd::VAE_CONFIG,
        sd::VAE_WEIGHTS,
        sd::TEXT_CONFIG,
        sd::TEXT_WEIGHTS,
        sd::SCHEDULER_CONFIG,
        sd::TOKENIZER_JSON,
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let m = StableDiffusion::load(&dir).unwrap();
    assert_eq!(m.variant(), SdVariant::Custom);
    let tok = sd::tiny_tokenizer().unwrap();
    assert_eq!(m.configs(), &sd::tiny_configs(tok.get_vocab_size(true)));
    assert_eq!(m.configs().default_size(), 32);
    // The tokenizer covers exactly the text encoder's vocabulary.
    assert_eq!(tok.get_vocab_size(true), m.configs().text_encoder.vocab_size);
    let e = m.embed("A Surfer!").unwrap();
    assert_eq!(e.dims(), &[1, 16, 32]);
}

#[test]
fn same_seed_same_image_other_seed_other_image() {
    let (_t, dir) = tiny();
    let m = StableDiffusion::load(&dir).unwrap();
    let a = go(&m, &req(11), None).unwrap();
    let b = go(&m, &req(11), None).unwrap();
    let c = go(&m, &req(12), None).unwrap();
    assert_eq!(a.dimensions(), (32, 32));
    assert_eq!(a.as_raw(), b.as_raw(), "same seed, same bytes");
    assert_ne!(a.as_raw(), c.as_raw(), "another seed, another image");
    // A second load of the same directory gives the same image too.
    let m2 = StableDiffusion::load(&dir).unwrap();
    assert_eq!(go(&m2, &req(11), None).unwrap().as_raw(), a.as_raw());
    // The prompt, the negative prompt and the guidance scale all reach the output.
    let other = |f: &dyn Fn(&mut SdRequest)| {
        let mut r = req(11);
        f(&mut r);
        go(&m, &r, None).unwrap()
    };
    assert_ne!(other(&|r| r.prompt = "a cat".into()).as_raw(), a.as_raw());
    assert_ne!(other(&|r| r.negative_prompt = "noise".into()).as_raw(), a.as_raw());
    assert_ne!(other(&|r| r.guidance_scale = 0.0).as_raw(), a.as_raw());
}

#[test]
fn img2img_strength_semantics_and_shapes() {
    let (_t, dir) = tiny();
    let m = StableDiffusion::load(&dir).unwrap();
    let f = frame(100, 60);
    // Strength 0 runs no step: the frame itself, resized to the output size.
    let mut r = req(3);
    r.strength = 0.0;
    let out = go(&m, &r, Some(&f)).unwrap();
    let expect = image::imageops::resize(&f, 32, 32, image::imageops::FilterType::CatmullRom);
    assert_eq!(out.as_raw(), expect.as_raw());
    // Below one step's worth of strength it is still the frame.
    r.strength = 0.2;
    assert_eq!(go(&m, &r, Some(&f)).unwrap().as_raw(), expect.as_raw());
    // Otherwise the frame steers the result: another frame, another image; same frame, same image.
    r.strength = 0.5;
    let a = go(&m, &r, Some(&f)).unwrap();
    let a2 = go(&m, &r, Some(&f)).unwrap();
    let b = go(&m, &r, Some(&frame(60, 100))).unwrap();
    assert_eq!(a.as_raw(), a2.as_raw());
    assert_ne!(a.as_raw(), b.as_raw());
    assert_ne!(a.as_raw(), expect.as_raw());
    // Other sizes (multiples of 4 for the tiny model), txt2img and img2img.
    r.width = Some(48);
    r.height = Some(40);
    assert_eq!(go(&m, &r, Some(&f)).unwrap().dimensions(), (48, 40));
    assert_eq!(go(&m, &r, None).unwrap().dimensions(), (48, 40));
    r.width = Some(30);
    assert!(matches!(go(&m, &r, None), Err(SdError::Request(_))));
    r.width = None;
    r.strength = 1.5;
    assert!(matches!(go(&m, &r, Some(&f)), Err(SdError::Request(_))));
}

#[test]
fn runaway_guidance_is_an_error_not_an_image() {
    let (_t, dir) = tiny();
    let m = StableDiffusion::load(&dir).unwrap();
    let mut r = req(1);
    r.guidance_scale = 1e300; // finite as f64, infinite once it meets the f32 latents
    match go(&m, &r, None) {
        Err(SdError::NonFinite { component: "sampling", what }) => assert!(what.contains("latents"), "{what}"),
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

fn rewrite(path: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, path).unwrap();
}

#[test]
fn nan_weight_and_missing_tensor_are_typed_errors() {
    let (_t, dir) = tiny();
    let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    rewrite(&dir.join(sd::UNET_WEIGHTS), |t| {
        let w = t[name].clone();
        let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[3] = f32::NAN;
        t.insert(name.into(), Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap());
    });
    match StableDiffusion::load(&dir) {
        Err(SdError::NonFinite { component: "unet", what }) => assert_eq!(what, name),
        other => panic!("expected NonFinite, got {other:?}"),
    }

    let (_t, dir) = tiny();
    rewrite(&dir.join(sd::TEXT_WEIGHTS), |t| {
        let k = "text_model.embeddings.token_embedding.weight";
        let w = t[k].clone();
        t.insert(k.into(), w.ones_like().unwrap().affine(0.0, f64::INFINITY).unwrap());
    });
    assert!(matches!(StableDiffusion::load(&dir), Err(SdError::NonFinite { component: "text_encoder", .. })));

    let (_t, dir) = tiny();
    rewrite(&dir.join(sd::VAE_WEIGHTS), |t| {
        t.remove("decoder.conv_out.weight");
    });
    match StableDiffusion::load(&dir) {
        Err(SdError::MissingTensor { component: "vae", name }) => assert_eq!(name, "decoder.conv_out.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    let (_t, dir) = tiny();
    std::fs::remove_file(dir.join(sd::UNET_WEIGHTS)).unwrap();
    assert!(matches!(StableDiffusion::load(&dir), Err(SdError::Io { .. })));
}

#[test]
fn tokenizer_from_vocab_and_merges_matches_tokenizer_json() {
    let (_t, dir) = tiny();
    let m = StableDiffusion::load(&dir).unwrap();
    let want = go(&m, &req(5), None).unwrap();
    let tj: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(sd::TOKENIZER_JSON)).unwrap()).unwrap();
    let mut vocab = tj["model"]["vocab"].as_object().unwrap().clone();
    for added in tj["added_tokens"].as_array().unwrap() {
        vocab.insert(added["content"].as_str().unwrap().into(), added["id"].clone());
    }
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => panic!("{other}"),
        })
        .collect();
    std::fs::write(dir.join(sd::TOKENIZER_VOCAB), serde_json::to_vec(&vocab).unwrap()).unwrap();
    std::fs::write(dir.join(sd::TOKENIZER_MERGES), format!("#version: 0.2\n{}\n", merges.join("\n"))).unwrap();
    std::fs::remove_file(dir.join(sd::TOKENIZER_JSON)).unwrap();
    let m = StableDiffusion::load(&dir).unwrap();
    assert_eq!(go(&m, &req(5), None).unwrap().as_raw(), want.as_raw());
    std::fs::remove_file(dir.join(sd::TOKENIZER_VOCAB)).unwrap();
    assert!(matches!(StableDiffusion::load(&dir), Err(SdError::Tokenizer(_))));
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd").join(name)
}

/// Every key of every published file survives load → save, with its value.
#[test]
fn diffusers_configs_round_trip() {
    for name in ["v1_5", "v2_1", "turbo"] {
        let src = fixture(name);
        let cfg = SdConfigs::load(&src).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        cfg.save(tmp.path()).unwrap();
        assert_eq!(SdConfigs::load(tmp.path()).unwrap(), cfg, "{name}");
        for f in [sd::MODEL_INDEX_FILE, sd::UNET_CONFIG, sd::VAE_CONFIG, sd::TEXT_CONFIG, sd::SCHEDULER_CONFIG] {
            let read = |p: &Path| -> serde_json::Map<String, serde_json::Value> {
                serde_json::from_slice(&std::fs::read(p.join(f)).unwrap()).unwrap()
            };
            let (orig, saved) = (read(&src), read(tmp.path()));
            for (k, v) in &orig {
                let s = saved.get(k).unwrap_or_else(|| panic!("{name}/{f}: {k} lost"));
                let same = v == s || (v.as_f64().is_some() && v.as_f64() == s.as_f64());
                assert!(same, "{name}/{f}: {k} was {v}, saved {s}");
            }
        }
    }
    // Unknown keys are kept, missing required ones are refused.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SdConfigs::load(&fixture("v1_5")).unwrap();
    cfg.save(tmp.path()).unwrap();
    std::fs::write(tmp.path().join(sd::UNET_CONFIG), r#"{"sample_size": 64}"#).unwrap();
    assert!(matches!(SdConfigs::load(tmp.path()), Err(SdError::Json { .. })));
}

/// The text after the struct name of a `Debug` rendering.
fn body(debug: &str) -> &str {
    &debug[debug.find('{').unwrap()..]
}

#[test]
fn published_configs_map_onto_candles_presets() {
    let cases = [
        ("v1_5", SdVariant::V1_5, StableDiffusionConfig::v1_5(None, None, None), Prediction::Epsilon, 512),
        ("v2_1", SdVariant::V2_1, StableDiffusionConfig::v2_1(None, None, None), Prediction::V, 768),
        ("turbo", SdVariant::Turbo, StableDiffusionConfig::v2_1(None, Some(512), Some(512)), Prediction::Epsilon, 512),
    ];
    for (name, variant, candle, prediction, size) in cases {
        let cfg = SdConfigs::load(&fixture(name)).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.variant(), variant, "{name}");
        assert_eq!(cfg.default_size(), size, "{name}");
        let candle_dbg = format!("{candle:?}");
        let unet = format!("{:?}", cfg.unet.to_candle(None).unwrap());
        assert!(candle_dbg.contains(&unet), "{name}: unet {unet}\nnot in {candle_dbg}");
        let vae = format!("{:?}", cfg.vae.to_candle().unwrap());
        assert!(candle_dbg.contains(&vae), "{name}: vae {vae}");
        let text = match cfg.text_encoder.to_candle().unwrap() {
            TextEncoderSpec::QuickGelu(c) => format!("{c:?}"),
            TextEncoderSpec::SdV2(c) => format!("{c:?}"),
        };
        assert_eq!(body(&text), body(&format!("{:?}", candle.clip)), "{name}: text encoder");
        let schedule = cfg.scheduler.schedule().unwrap();
        assert_eq!(schedule.prediction, prediction, "{name}");
        // candle has no sd-turbo preset: its 2.1 preset is the v-prediction 768 model.
        if variant != SdVariant::Turbo {
            let candle_pred = if prediction == Prediction::V { "VPrediction" } else { "Epsilon" };
            assert!(candle_dbg.contains(&format!("prediction_type: {candle_pred}")), "{name}");
        }
    }
    // SD 2.1's text encoder is candle's v2_1 CLIP; 1.5's is the same size as candle's v1_5.
    let v15 = SdConfigs::load(&fixture("v1_5")).unwrap();
    assert_eq!(body(&format!("{:?}", sd_clip::Config::v1_5())), {
        let TextEncoderSpec::QuickGelu(c) = v15.text_encoder.to_candle().unwrap() else { panic!() };
        body(&format!("{c:?}")).to_owned()
    });
}

#[test]
fn schedules_follow_diffusers() {
    let s15 = SdConfigs::load(&fixture("v1_5")).unwrap().scheduler.schedule().unwrap();
    // leading + steps_offset 1, as diffusers' DDIM/PNDM with 10 steps.
    assert_eq!(s15.timesteps(10), vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    assert!((s15.alphas_cumprod[999] - 0.0047).abs() < 1e-3, "{}", s15.alphas_cumprod[999]);
    assert_eq!(s15.final_alpha, s15.alphas_cumprod[0]);
    let turbo = SdConfigs::load(&fixture("turbo")).unwrap().scheduler.schedule().unwrap();
    assert_eq!(turbo.timesteps(1), vec![999]);
    assert_eq!(turbo.timesteps(4), vec![999, 749, 499, 249]);
    assert_eq!(turbo.final_alpha, 1.0);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Stage, u64, u64)>>, Option<Arc<AtomicBool>>);

impl ProgressSink for Recorder {
    fn progress(&self, stage: Stage, done: u64, total: u64) {
        self.0.lock().unwrap().push((stage, done, total));
        if let Some(c) = &self.1
            && done >= 2
        {
            c.store(true, Ordering::Relaxed);
        }
    }
}

fn ctx(progress: Arc<Recorder>, cancel: Arc<AtomicBool>, scratch: &Path) -> JobContext {
    JobContext::new(scratch.to_owned(), MediaLimits::default(), progress, cancel)
}

#[test]
fn thumbnail_stage_keeps_the_best_candidate_and_stops_on_cancel() {
    let (t, dir) = tiny();
    let m = StableDiffusion::load(&dir).unwrap();
    let rec = Arc::new(Recorder::default());
    let cx = ctx(rec.clone(), Arc::default(), t.path());
    let stage = ThumbnailGenerate::new(&m);
    let r = req(21);
    let brightness = |img: &RgbImage| -> Result<f32, PipelineError> {
        Ok(img.as_raw().iter().map(|&v| v as f32).sum::<f32>() / img.as_raw().len() as f32)
    };
    let best = stage.run(&r, None, 3, &brightness, &cx).unwrap();
    assert_eq!(best.scores.len(), 3);
    let max = best.scores.iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(best.score, max);
    assert_eq!(best.seed, candidate_seed(21, best.index));
    assert_eq!(brightness(&best.image).unwrap(), best.score);
    // Candidate i is exactly a single generation at candidate_seed(seed, i).
    let single = go(&m, &SdRequest { seed: candidate_seed(21, best.index), ..r.clone() }, None).unwrap();
    assert_eq!(single.as_raw(), best.image.as_raw());
    let events = rec.0.lock().unwrap().clone();
    assert!(events.iter().all(|e| e.0 == Stage::Diffuse && e.2 == 12), "{events:?}");
    assert_eq!(events.last().unwrap().1, 12);
    // img2img candidates.
    let imgs = stage.candidates(&r, Some(&frame(64, 64)), 2, &cx).unwrap();
    assert_eq!(imgs.len(), 2);
    assert_ne!(imgs[0].as_raw(), imgs[1].as_raw());
    // A failing scorer fails the stage.
    let broken = |_: &RgbImage| -> Result<f32, PipelineError> {
        Err(worker::pipeline::ModelError::Unusable("clip".into()).into())
    };
    assert!(matches!(stage.run(&r, None, 1, &broken, &cx), Err(PipelineError::Model(_))));
    // Cancelled before it starts, and in the middle of the steps.
    let cancel = Arc::new(AtomicBool::new(true));
    assert!(matches!(stage.run(&r, None, 2, &brightness, &ctx(rec, cancel, t.path())), Err(PipelineError::Cancelled)));
    let cancel = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Recorder(Mutex::default(), Some(cancel.clone())));
    let cx = ctx(rec.clone(), cancel, t.path());
    assert!(matches!(stage.run(&r, None, 2, &brightness, &cx), Err(PipelineError::Cancelled)));
    assert!(rec.0.lock().unwrap().len() < 8, "stopped early");
}

#[test]
fn turbo_runs_one_to_four_steps_without_guidance() {
    let turbo = SdConfigs::load(&fixture("turbo")).unwrap();
    let r = SdRequest { steps: 30, guidance_scale: 7.5, ..SdRequest::default() };
    assert_eq!(turbo.effective(&r).unwrap(), Effective { steps: 4, guidance: 0.0, width: 512, height: 512 });
    assert_eq!(
        turbo.effective(&SdRequest { steps: 0, ..r.clone() }).unwrap(),
        Effective { steps: 1, guidance: 0.0, width: 512, height: 512 }
    );
    let v21 = SdConfigs::load(&fixture("v2_1")).unwrap();
    assert_eq!(v21.effective(&r).unwrap(), Effective { steps: 30, guidance: 7.5, width: 768, height: 768 });
    let v15 = SdConfigs::load(&fixture("v1_5")).unwrap();
    assert_eq!(v15.effective(&r).unwrap(), Effective { steps: 30, guidance: 7.5, width: 512, height: 512 });
    assert!(matches!(v15.effective(&SdRequest { width: Some(500), ..r }), Err(SdError::Request(_))));
}

#[test]
fn worker_loads_sd_at_start_and_refuses_a_bad_directory() {
    use worker::runtime::WorkerError;
    use worker::storage::local::LocalStore;
    use worker::{Worker, WorkerConfig};
    let (t, dir) = tiny();
    let worker = |sd: PathBuf| {
        let store = Arc::new(LocalStore::new(t.path().join("store")).unwrap());
        let cfg = WorkerConfig { sd: Some(sd), ..WorkerConfig::default() };
        Worker::new(Arc::new(bus::memory::MemoryBus::new()), store, cfg)
    };
    let mut w = worker(dir);
    assert!(w.sd().is_none());
    let m = w.load_sd().unwrap().expect("configured");
    assert_eq!(m.variant(), SdVariant::Custom);
    assert!(Arc::ptr_eq(&m, &w.sd().unwrap()));
    assert!(matches!(worker(t.path().join("missing")).load_sd(), Err(WorkerError::Sd(SdError::Io { .. }))));
}
