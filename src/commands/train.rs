//! `reelforge train mcvd`: trains MCVD on a folder of videos or on the built-in synthetic
//! moving-shapes set, with the loss on a progress bar and checkpoints in `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use worker::models::mcvd::McvdConfig;
use worker::training::data::{SyntheticShapes, TrainData, VideoClips};
use worker::training::{self, McvdTrainer};

/// Subcommands of `reelforge train`.
#[derive(Debug, clap::Subcommand)]
pub enum TrainCommand {
    /// Train MCVD (masked conditional video diffusion).
    Mcvd(TrainMcvdArgs),
}

/// Arguments of `reelforge train mcvd`.
#[derive(Debug, clap::Args)]
pub struct TrainMcvdArgs {
    /// Checkpoint directory (config.json, model.safetensors, train_state.*).
    #[arg(long)]
    pub out: PathBuf,
    /// A folder of videos to train on.
    #[arg(long, conflicts_with = "synthetic")]
    pub data: Option<PathBuf>,
    /// Train on the built-in stochastic moving-shapes set (the default without --data).
    #[arg(long)]
    pub synthetic: bool,
    /// Optimiser steps to run.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Model preset: tiny or smmnist (ignored with --resume, which keeps the checkpoint's).
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Continue from the checkpoint in --out (weights, AdamW moments, EMA, step, RNG).
    #[arg(long)]
    pub resume: bool,
    /// Batch size (default: the configuration's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the initial weights and of the data and noise streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N steps (and always at the end).
    #[arg(long, default_value_t = 100)]
    pub save_every: usize,
}

pub fn run(cmd: TrainCommand) -> anyhow::Result<ExitCode> {
    let TrainCommand::Mcvd(args) = cmd;
    let mut trainer = if args.resume {
        McvdTrainer::resume(&args.out).with_context(|| format!("resuming from {}", args.out.display()))?
    } else {
        let Some(cfg) = McvdConfig::preset(&args.config) else {
            bail!("unknown config `{}` (tiny or smmnist)", args.config);
        };
        McvdTrainer::new(&cfg, args.seed)?
    };
    let cfg = trainer.config().clone();
    let data = match &args.data {
        Some(dir) => TrainData::Videos(VideoClips::load(dir, &cfg)?),
        None => TrainData::Synthetic(SyntheticShapes::new(cfg.image_size as u32, args.seed)),
    };
    let batch = args.batch_size.unwrap_or(cfg.batch_size);
    eprintln!(
        "training MCVD ({}×{}, {} past → {} frames, {} future, ngf {}, ch_mult {:?}) from step {} for {} steps, batch {}",
        cfg.image_size,
        cfg.image_size,
        cfg.num_frames_cond,
        cfg.num_frames,
        cfg.num_frames_future,
        cfg.ngf,
        cfg.ch_mult,
        trainer.step(),
        args.steps,
        batch
    );
    let bar = ProgressBar::new(args.steps as u64).with_style(ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos:>6}/{len:6} [{elapsed_precise}<{eta_precise}] {msg}",
    )?);
    let start = Instant::now();
    let mut smooth: Option<f32> = None;
    let losses = training::train(&mut trainer, &data, args.steps, batch, &args.out, args.save_every, |step, loss| {
        let s = smooth.map_or(loss, |s| 0.95 * s + 0.05 * loss);
        smooth = Some(s);
        bar.set_message(format!("step {step} loss {loss:.4} (avg {s:.4})"));
        bar.inc(1);
    })?;
    bar.finish();
    let k = (losses.len() / 5).max(1);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    println!(
        "{} steps in {:.1} s; loss {:.4} (first {k}) → {:.4} (last {k}); checkpoint: {}",
        losses.len(),
        start.elapsed().as_secs_f64(),
        mean(&losses[..k.min(losses.len())]),
        mean(&losses[losses.len().saturating_sub(k)..]),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
