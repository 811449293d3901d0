//! MCVD: the network's shapes and masks, seeded determinism, the checkpoint round trip, a short
//! training run whose loss falls (and resumes exactly), the sampler's arithmetic against
//! closed forms, the create pipeline with a checkpoint, and the evaluation table.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use protocol::{CreateJob, Job, OutputKind, SamplerKind, ValidationContext};
use serde_json::json;
use worker::models::diffusion::{Diffusion, Schedule, SeededNoise};
use worker::models::mcvd::{self, Mcvd, McvdConfig};
use worker::pipeline::create::CreatePipeline;
use worker::pipeline::{JobContext, NoProgress};
use worker::training::data::{SyntheticShapes, TrainData};
use worker::training::eval::{EvalOptions, evaluate};
use worker::training::{self, McvdTrainer};

/// A smaller tiny model for tests: 16×16.
fn test_config() -> McvdConfig {
    McvdConfig { image_size: 16, ngf: 8, attn_resolutions: vec![8], ..McvdConfig::tiny() }
}

/// An initialised model with every weight perturbed, so that outputs are not all zero (the
/// initialisation zeroes the last layers, as NCSN++ does).
fn perturbed(cfg: &McvdConfig, seed: u64) -> (VarMap, Mcvd) {
    let (varmap, model) = mcvd::init_model(cfg, seed).unwrap();
    let mut rng = SeededNoise::new(seed + 100);
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    for name in names {
        let var = &data[&name];
        let noise = (rng.normal_tensor(var.dims()).unwrap() * 0.05).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    drop(data);
    (varmap, model)
}

fn frames(cfg: &McvdConfig, n: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = SeededNoise::new(seed);
    (0..n)
        .map(|_| {
            rng.normal_tensor(&[cfg.channels, cfg.image_size, cfg.image_size]).unwrap().clamp(-1f32, 1f32).unwrap()
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn network_shapes_and_conditioning_masks() {
    let cfg = test_config();
    let (_, model) = perturbed(&cfg, 1);
    let s = cfg.image_size;
    let mut rng = SeededNoise::new(3);
    let x = rng.normal_tensor(&[2, cfg.x_channels(), s, s]).unwrap();
    let cond = rng.normal_tensor(&[2, cfg.cond_channels(), s, s]).unwrap();
    let t = Tensor::new(&[10f32, 900.0], &Device::Cpu).unwrap();
    let eps = model.forward(&x, &t, &cond, None).unwrap();
    assert_eq!(eps.dims(), &[2, cfg.x_channels(), s, s]);
    // Wrong sizes are refused, not broadcast.
    let bad = rng.normal_tensor(&[2, cfg.x_channels(), s * 2, s * 2]).unwrap();
    assert!(model.forward(&bad, &t, &cond, None).is_err());

    // Masks: an absent block is zeros; present blocks carry the frames (last past frames,
    // first future frames).
    let d = Diffusion::new(&model, SamplerKind::Ddim, 2);
    let c = cfg.channels;
    let none = d.conditioning(None, None).unwrap();
    assert_eq!(none.dims(), &[1, cfg.cond_channels(), s, s]);
    assert_eq!(none.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let past = frames(&cfg, 6, 4);
    let future = frames(&cfg, 3, 5);
    let both = d.conditioning(Some(&past), Some(&future)).unwrap();
    let last_past = both.narrow(1, (cfg.num_frames_cond - 1) * c, c).unwrap().squeeze(0).unwrap();
    assert_eq!(max_abs_diff(&last_past, &past[5]), 0.0);
    let first_future = both.narrow(1, cfg.num_frames_cond * c, c).unwrap().squeeze(0).unwrap();
    assert_eq!(max_abs_diff(&first_future, &future[0]), 0.0);
    let past_only = d.conditioning(Some(&past), None).unwrap();
    let fut_block = past_only.narrow(1, cfg.num_frames_cond * c, cfg.num_frames_future * c).unwrap();
    assert_eq!(fut_block.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    // One past frame is repeated to fill the block.
    let one = d.conditioning(Some(&past[..1]), None).unwrap();
    let first = one.narrow(1, 0, c).unwrap().squeeze(0).unwrap();
    assert_eq!(max_abs_diff(&first, &past[0]), 0.0);
    // The conditioning reaches the output.
    let t1 = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let x1 = x.narrow(0, 0, 1).unwrap();
    let a = model.forward(&x1, &t1, &both, None).unwrap();
    let b = model.forward(&x1, &t1, &none, None).unwrap();
    assert!(max_abs_diff(&a, &b) > 1e-4);
}

#[test]
fn sampling_is_deterministic_per_seed_in_every_mode() {
    let cfg = test_config();
    let (_, model) = perturbed(&cfg, 2);
    let past = frames(&cfg, 4, 7);
    let future = frames(&cfg, 2, 8);
    for kind in [SamplerKind::Ddpm, SamplerKind::Ddim] {
        let d = Diffusion::new(&model, kind, 3);
        let run = |seed: u64, mode: &str| -> Vec<Tensor> {
            let mut rng = SeededNoise::new(seed);
            match mode {
                "predict" => d.predict(&past, 6, &mut rng),
                "interpolate" => d.interpolate(&past, &future, 3, &mut rng),
                "generate" => d.generate(5, &mut rng),
                _ => d.edit(&past, 6, 0.5, &mut rng),
            }
            .unwrap()
        };
        for (mode, n) in [("predict", 6), ("interpolate", 3), ("generate", 5), ("edit", 6)] {
            let a = run(11, mode);
            let b = run(11, mode);
            let c = run(12, mode);
            assert_eq!(a.len(), n, "{mode}");
            assert_eq!(a[0].dims(), &[cfg.channels, cfg.image_size, cfg.image_size]);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(max_abs_diff(x, y), 0.0, "{kind:?} {mode} same seed");
            }
            assert!(a.iter().zip(&c).any(|(x, y)| max_abs_diff(x, y) > 1e-4), "{kind:?} {mode} seeds differ");
        }
    }
}

#[test]
fn a_batched_forward_equals_forwards_one_by_one() {
    // Regression: the attention block once fed candle's Linear a transposed (B, HW, C) view,
    // whose batch rows after the first came out wrong (training batches and batched sampling).
    let cfg = McvdConfig { dropout: 0.0, ..test_config() };
    let (_, model) = perturbed(&cfg, 4);
    let mut rng = SeededNoise::new(9);
    let s = cfg.image_size;
    let xs: Vec<Tensor> = (0..3).map(|_| rng.normal_tensor(&[1, cfg.x_channels(), s, s]).unwrap()).collect();
    let cs: Vec<Tensor> = (0..3).map(|_| rng.normal_tensor(&[1, cfg.cond_channels(), s, s]).unwrap()).collect();
    let ts: Vec<Tensor> = [3f32, 500.0, 999.0].iter().map(|&t| Tensor::new(&[t], &Device::Cpu).unwrap()).collect();
    let cat = |v: &[Tensor]| Tensor::cat(v, 0).unwrap();
    let batched = model.forward(&cat(&xs), &cat(&ts), &cat(&cs), None).unwrap();
    for i in 0..3 {
        let alone = model.forward(&xs[i], &ts[i], &cs[i], None).unwrap();
        assert!(alone.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-3);
        assert!(max_abs_diff(&alone, &batched.narrow(0, i, 1).unwrap()) < 1e-5, "row {i}");
    }
}

#[test]
fn concurrent_jobs_share_batched_forwards_and_sample_what_they_would_alone() {
    use std::sync::{Arc, Mutex};
    use worker::batching::{BatchOptions, Batcher, ObserveFn};
    use worker::models::diffusion::batched_forward;
    let cfg = test_config();
    let model = Arc::new(perturbed(&cfg, 3).1);
    let past = frames(&cfg, 4, 7);
    let alone: Vec<Vec<Tensor>> = (0..3)
        .map(|seed| {
            Diffusion::new(&model, SamplerKind::Ddpm, 3).predict(&past, 8, &mut SeededNoise::new(seed)).unwrap()
        })
        .collect();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let observe: ObserveFn = Box::new({
        let sizes = sizes.clone();
        move |n| sizes.lock().unwrap().push(n)
    });
    let opts = BatchOptions { max_rows: 8, window: std::time::Duration::from_secs(10) };
    let batcher = Batcher::spawn("mcvd-test", opts, batched_forward(model.clone()), observe);
    // Each "job" registers, then samples on its own thread, as the worker's tasks do.
    let sessions: Vec<_> = (0..3).map(|_| batcher.session()).collect();
    let together: Vec<Vec<Tensor>> = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(seed, session)| {
                let (model, batcher, past) = (&model, &batcher, &past);
                s.spawn(move || {
                    let d = Diffusion::new(model, SamplerKind::Ddpm, 3).with_batcher(batcher);
                    let out = d.predict(past, 8, &mut SeededNoise::new(seed as u64)).unwrap();
                    drop(session);
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in alone.iter().zip(&together) {
        for (x, y) in a.iter().zip(b) {
            assert!(max_abs_diff(x, y) < 1e-5, "batched sampling differs: {}", max_abs_diff(x, y));
        }
    }
    let sizes = sizes.lock().unwrap();
    // 8 frames = 2 blocks of 4 frames × 3 steps per job: 6 calls each, 18 in all.
    assert_eq!(sizes.iter().sum::<usize>(), 18);
    assert!(sizes.contains(&3), "three jobs sampling at once share forwards: {sizes:?}");
}

#[test]
fn checkpoint_round_trip_gives_identical_outputs() {
    let cfg = test_config();
    let (varmap, model) = perturbed(&cfg, 3);
    let dir = tempfile::tempdir().unwrap();
    mcvd::save_checkpoint(dir.path(), &cfg, &mcvd::varmap_tensors(&varmap).unwrap()).unwrap();
    assert!(dir.path().join("config.json").is_file());
    let loaded = Mcvd::load(dir.path()).unwrap();
    assert_eq!(loaded.config(), &cfg);
    let s = cfg.image_size;
    let mut rng = SeededNoise::new(5);
    let x = rng.normal_tensor(&[1, cfg.x_channels(), s, s]).unwrap();
    let cond = rng.normal_tensor(&[1, cfg.cond_channels(), s, s]).unwrap();
    let t = Tensor::new(&[321f32], &Device::Cpu).unwrap();
    let a = model.forward(&x, &t, &cond, None).unwrap();
    let b = loaded.forward(&x, &t, &cond, None).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // Same seed, same init.
    let (v2, _) = mcvd::init_model(&cfg, 9).unwrap();
    let (v3, _) = mcvd::init_model(&cfg, 9).unwrap();
    let (t2, t3) = (mcvd::varmap_tensors(&v2).unwrap(), mcvd::varmap_tensors(&v3).unwrap());
    for (k, v) in &t2 {
        assert_eq!(max_abs_diff(v, &t3[k]), 0.0, "{k}");
    }
}

#[test]
fn short_training_lowers_the_loss_and_resumes_exactly() {
    let cfg = McvdConfig { dropout: 0.0, ..test_config() };
    let data = TrainData::Synthetic(SyntheticShapes::new(cfg.image_size as u32, 1));
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = McvdTrainer::new(&cfg, 0).unwrap();
    let losses = training::train(&mut trainer, &data, 60, 8, dir.path(), 0, |_, _| {}).unwrap();
    let k = 12;
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&losses[..k]), mean(&losses[losses.len() - k..]));
    assert!(last < 0.9 * first, "loss {first} → {last}: {losses:?}");
    assert_eq!(trainer.step(), 60);

    // Resume: the same next steps as the run that kept going.
    let more = training::train(&mut trainer, &data, 2, 4, dir.path().join("a").as_path(), 0, |_, _| {});
    let more = more.unwrap();
    let mut resumed = McvdTrainer::resume(dir.path()).unwrap();
    assert_eq!(resumed.step(), 60);
    let again = training::train(&mut resumed, &data, 2, 4, dir.path().join("b").as_path(), 0, |_, _| {}).unwrap();
    assert_eq!(more, again);
    // The saved EMA model loads and samples.
    let model = Mcvd::load(dir.path().join("b").as_path()).unwrap();
    let d = Diffusion::new(&model, SamplerKind::Ddim, 2);
    let out = d.generate(4, &mut SeededNoise::new(1)).unwrap();
    assert_eq!(out.len(), 4);
}

#[test]
fn sampler_arithmetic_matches_closed_forms() {
    let s = Schedule::linear(1000, 1e-4, 0.02);
    assert_eq!(s.len(), 1000);
    assert!((s.betas[0] - 1e-4).abs() < 1e-15 && (s.betas[999] - 0.02).abs() < 1e-15);
    assert!((s.alphas_cumprod[0] - 0.9999).abs() < 1e-12);
    assert!((s.alphas_cumprod[499] - 0.078_587_242_881_778_21).abs() < 1e-12);
    assert!((s.alphas_cumprod[999] - 4.035_829_765_375_675_4e-5).abs() < 1e-15);
    assert_eq!(Schedule::timesteps(999, 10), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    assert_eq!(Schedule::timesteps(999, 1000).len(), 1000);
    assert_eq!(Schedule::timesteps(499, 5), [499, 399, 299, 199, 99]);
    assert_eq!(Schedule::timesteps(9, 50), (0..10).rev().collect::<Vec<_>>());

    let dev = &Device::Cpu;
    let x0 = Tensor::new(&[[[[0.5f32, -0.25], [0.0, 0.9]]]], dev).unwrap();
    let eps = Tensor::new(&[[[[1.0f32, -0.5], [0.3, -2.0]]]], dev).unwrap();
    let t = 600;
    let a = s.alphas_cumprod[t];
    let xt = s.q_sample(&x0, &eps, &[t]).unwrap();
    let want = ((&x0 * a.sqrt()).unwrap() + (&eps * (1.0 - a).sqrt()).unwrap()).unwrap();
    assert!(max_abs_diff(&xt, &want) < 1e-6);
    // DDIM with the true ε: lands on x₀, or on q_sample(x₀, ε) at the earlier step.
    let to_x0 = s.ddim_step(&xt, &eps, t, None).unwrap();
    assert!(max_abs_diff(&to_x0, &x0) < 1e-5);
    let to_300 = s.ddim_step(&xt, &eps, t, Some(300)).unwrap();
    assert!(max_abs_diff(&to_300, &s.q_sample(&x0, &eps, &[300]).unwrap()) < 1e-5);
    // DDPM's posterior mean with zero extra noise, and its last step.
    let zero = x0.zeros_like().unwrap();
    let mean = s.ddpm_step(&xt, &eps, t, Some(300), &zero).unwrap();
    let (ap, beta) = (s.alphas_cumprod[300], 1.0 - a / s.alphas_cumprod[300]);
    let want = ((&x0 * (ap.sqrt() * beta / (1.0 - a))).unwrap()
        + (&xt * ((1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - a))).unwrap())
    .unwrap();
    assert!(max_abs_diff(&mean, &want) < 1e-5);
    let last = s.ddpm_step(&xt, &eps, t, None, &eps).unwrap();
    assert!(max_abs_diff(&last, &x0) < 1e-5);
    // The noise source is a fixed stream with the right moments.
    let mut r = SeededNoise::new(42);
    let v: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
    assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    assert_eq!(SeededNoise::new(42).next_u64(), SeededNoise::new(42).next_u64());
}

fn create_job(mode: &str, src: Option<&std::path::Path>) -> CreateJob {
    let mut v = json!({
        "v": 1, "kind": "create", "job_id": "c1", "tenant": "t", "mode": mode,
        "frames": 6, "fps": 8, "size": { "width": 96, "height": 64 }, "seed": 3,
        "sampler": { "kind": "ddim", "steps": 2 }
    });
    if let Some(src) = src {
        v["conditioning"] = json!({ "source": format!("file://{}", src.display()), "start_s": 0.0, "end_s": 1.0 });
    }
    let ctx = ValidationContext { allow_local_media: true };
    let Job::Create(j) = Job::from_json(v.to_string().as_bytes(), &ctx).unwrap() else { unreachable!() };
    j
}

#[test]
fn the_create_pipeline_runs_mcvd_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config();
    let (varmap, _) = perturbed(&cfg, 4);
    let ckpt = dir.path().join("mcvd");
    mcvd::save_checkpoint(&ckpt, &cfg, &mcvd::varmap_tensors(&varmap).unwrap()).unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_sample_video(&src, 1.5, 10, 96, 64, 1).unwrap();
    let pipeline = CreatePipeline::with_mcvd(&ckpt).unwrap();
    for mode in ["predict", "interpolate", "generate", "edit"] {
        let job = create_job(mode, (mode != "generate").then_some(src.as_path()));
        let scratch = dir.path().join(mode);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut ctx = JobContext::new(scratch, Default::default(), std::sync::Arc::new(NoProgress), Default::default());
        let out = pipeline.run(&job, job.conditioning.as_ref().map(|_| src.as_path()), &mut ctx);
        let out = out.unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(out.models[0].id.starts_with("mcvd-"), "{mode}: {:?}", out.models);
        let video = out.artifacts.iter().find(|a| a.kind == OutputKind::Video).unwrap();
        let info = worker::media::probe(&video.path, &Default::default()).unwrap();
        assert_eq!(info.display_size(), (96, 64), "{mode}");
    }
}

#[test]
fn evaluation_scores_mcvd_and_the_baselines() {
    let cfg = test_config();
    let (_, model) = perturbed(&cfg, 5);
    let rows =
        evaluate(&model, &EvalOptions { sequences: 2, frames: 2, sampler: SamplerKind::Ddim, steps: 2, seed: 0 })
            .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert!(r.psnr.is_finite() && r.psnr > 0.0, "{r:?}");
        assert!(r.ssim.is_finite() && r.ssim <= 1.0, "{r:?}");
    }
    // The synthetic set is deterministic per seed and index.
    let set = SyntheticShapes::new(16, 3);
    assert_eq!(set.sequence(4, 3), set.sequence(4, 3));
    assert_ne!(set.sequence(4, 3), set.sequence(5, 3));
}
