//! `reelforge eval mcvd`: PSNR and SSIM of MCVD's predictions on held-out synthetic sequences
//! against the copy-last-frame and linear-extrapolation baselines, as a table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use protocol::SamplerKind;
use worker::models::mcvd::Mcvd;
use worker::training::eval::{self, EvalOptions};

/// Subcommands of `reelforge eval`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Evaluate an MCVD checkpoint on frame prediction.
    Mcvd(EvalMcvdArgs),
}

/// Arguments of `reelforge eval mcvd`.
#[derive(Debug, clap::Args)]
pub struct EvalMcvdArgs {
    /// Checkpoint directory (config.json, model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Held-out sequences.
    #[arg(long, default_value_t = 16)]
    pub sequences: usize,
    /// Frames to predict per sequence (default: one block).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Sampler: ddpm or ddim.
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// Denoising steps per block.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Seed of the sampler noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    let EvalCommand::Mcvd(args) = cmd;
    let model = Mcvd::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let sampler = match args.sampler.as_str() {
        "ddpm" => SamplerKind::Ddpm,
        "ddim" => SamplerKind::Ddim,
        other => anyhow::bail!("unknown sampler `{other}` (ddpm or ddim)"),
    };
    let opts = EvalOptions {
        sequences: args.sequences,
        frames: args.frames.unwrap_or(model.config().num_frames),
        sampler,
        steps: args.steps,
        seed: args.seed,
    };
    let start = Instant::now();
    let rows = eval::evaluate(&model, &opts)?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["method", "PSNR (dB)", "SSIM"]);
    for r in &rows {
        table.add_row([r.method.clone(), format!("{:.2}", r.psnr), format!("{:.4}", r.ssim)]);
    }
    let cfg = model.config();
    println!(
        "{} held-out sequences, {} past → {} predicted frames at {}×{} ({:.1} s)",
        opts.sequences,
        cfg.num_frames_cond,
        opts.frames,
        cfg.image_size,
        cfg.image_size,
        start.elapsed().as_secs_f64()
    );
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
