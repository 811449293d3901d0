//! Times MCVD on the CPU: one sampling step (a network evaluation at batch 1 plus a DDPM
//! update) and one training step (loss, backward, AdamW, EMA), for the tiny configuration and
//! the smmnist-sized one (ngf 64, ch_mult 1,2,3,4, 64×64, 5 past → 5 frames). Prints medians.
//!
//! `cargo run [--release] -p reelforge-worker --example mcvd_bench -- [RUNS] [SMMNIST_BATCH]`
//! (benches/RESULTS.md has the numbers and the exact command).

mod timing;

use std::time::Instant;
use timing::median;

use candle_core::{Device, Tensor};
use protocol::SamplerKind;
use worker::models::diffusion::{Diffusion, Schedule, SeededNoise};
use worker::models::mcvd::McvdConfig;
use worker::training::McvdTrainer;
use worker::training::data::{SyntheticShapes, TrainData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let smmnist_batch: usize = args.get(2).map_or(Ok(4), |s| s.parse())?;
    println!("threads: {} (candle CPU), runs per measurement: {runs}", std::thread::available_parallelism()?);
    for (name, cfg, batch) in
        [("tiny", McvdConfig::tiny(), McvdConfig::tiny().batch_size), ("smmnist", McvdConfig::smmnist(), smmnist_batch)]
    {
        let mut trainer = McvdTrainer::new(&cfg, 0)?;
        let params: usize = trainer.ema_tensors().values().map(|t| t.elem_count()).sum();
        let s = cfg.image_size;
        // Sampling step.
        let model = trainer.raw_model()?;
        let schedule = Schedule::for_config(&cfg);
        let diffusion = Diffusion::new(&model, SamplerKind::Ddpm, 100);
        let cond = diffusion.conditioning(None, None)?;
        let mut rng = SeededNoise::new(0);
        let x = rng.normal_tensor(&[1, cfg.x_channels(), s, s])?;
        let z = rng.normal_tensor(&[1, cfg.x_channels(), s, s])?;
        let mut sample_ms = Vec::new();
        for i in 0..=runs {
            let t0 = Instant::now();
            let t = Tensor::new(&[500f32], &Device::Cpu)?;
            let eps = model.forward(&x, &t, &cond, None)?;
            let x2 = schedule.ddpm_step(&x, &eps, 500, Some(490), &z)?;
            x2.flatten_all()?.to_vec1::<f32>()?;
            if i > 0 {
                sample_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        // Training step.
        let data = TrainData::Synthetic(SyntheticShapes::new(s as u32, 0));
        let mut train_ms = Vec::new();
        for i in 0..=runs {
            let b = data.batch(&cfg, batch, trainer.rng())?;
            let t0 = Instant::now();
            trainer.train_step(&b)?;
            if i > 0 {
                train_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let step = median(sample_ms);
        println!(
            "{name:8} {s}×{s} ngf {} ch_mult {:?} {} past → {} frames, {:.2} M params: sampling step (batch 1) {:.1} ms median (100-step block {:.1} s); training step (batch {batch}) {:.0} ms median",
            cfg.ngf,
            cfg.ch_mult,
            cfg.num_frames_cond,
            cfg.num_frames,
            params as f64 / 1e6,
            step,
            step * 100.0 / 1e3,
            median(train_ms),
        );
    }
    Ok(())
}
