//! `reelforge eval mcvd`: PSNR and SSIM of MCVD's predictions on held-out synthetic sequences
//! against the copy-last-frame and linear-extrapolation baselines, as a table.
//! `reelforge eval watermark`: the watermark's robustness (bit accuracy and detection rate per
//! attack), false positives and PSNR, as a table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use protocol::SamplerKind;
use worker::models::mcvd::Mcvd;
use worker::training::eval::{self, EvalOptions as McvdEvalOptions};
use worker::watermark::robustness::{self, EvalOptions};

/// Subcommands of `reelforge eval`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Evaluate an MCVD checkpoint on frame prediction.
    Mcvd(EvalMcvdArgs),
    /// Measure the watermark: attacks (ffmpeg CLI, cjpeg), false positives, PSNR.
    Watermark(EvalWatermarkArgs),
}

/// Arguments of `reelforge eval watermark`.
#[derive(Debug, clap::Args)]
pub struct EvalWatermarkArgs {
    /// Test videos (each also gives a still).
    #[arg(long, default_value_t = 4)]
    pub videos: usize,
    /// Frame width.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    /// Seconds per video.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Frames per second.
    #[arg(long, default_value_t = 12)]
    pub fps: u32,
    /// Extra unmarked stills for the false-positive count.
    #[arg(long, default_value_t = 200)]
    pub negatives: usize,
    /// Run only the attacks whose name contains one of these (e.g. `--only "CRF 28" --only q75`).
    #[arg(long)]
    pub only: Vec<String>,
    /// Keep the test files here (a temporary directory otherwise).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    #[command(flatten)]
    pub key: super::watermark::KeyArgs,
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
    match cmd {
        EvalCommand::Mcvd(args) => mcvd(args),
        EvalCommand::Watermark(args) => watermark(args),
    }
}

fn watermark(args: EvalWatermarkArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let opts = EvalOptions {
        videos: args.videos,
        width: args.width,
        height: args.height,
        seconds: args.seconds,
        fps: args.fps,
        negatives: args.negatives,
        only: args.only,
        work_dir: args.keep.unwrap_or_else(|| tmp.path().to_owned()),
    };
    let start = Instant::now();
    let report = robustness::evaluate(&opts, &args.key.key()).context("watermark evaluation")?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["attack", "items", "bit accuracy", "detected", "wrong payload"]);
    for r in &report.rows {
        table.add_row([
            r.name.clone(),
            r.items.to_string(),
            format!("{:.2} %", r.bit_accuracy * 100.0),
            format!("{:.0} %", r.detection_rate * 100.0),
            r.wrong_payloads.to_string(),
        ]);
    }
    println!(
        "{} videos of {}x{}, {} s at {} fps, and their middle frames as stills ({:.1} s)",
        opts.videos,
        opts.width,
        opts.height,
        opts.seconds,
        opts.fps,
        start.elapsed().as_secs_f64()
    );
    println!("{table}");
    println!("PSNR marked vs unmarked: mean {:.2} dB, min {:.2} dB", report.psnr_mean, report.psnr_min);
    println!(
        "false positives: {} of {} unmarked items (bound {:.1e} per item)",
        report.false_positives,
        report.negatives,
        worker::watermark::detect::false_positive_bound()
    );
    println!("marking: {:.1} ms per {}x{} frame (CPU, one thread)", report.mark_ms_per_frame, opts.width, opts.height);
    Ok(ExitCode::SUCCESS)
}

fn mcvd(args: EvalMcvdArgs) -> anyhow::Result<ExitCode> {
    let model = Mcvd::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let sampler = match args.sampler.as_str() {
        "ddpm" => SamplerKind::Ddpm,
        "ddim" => SamplerKind::Ddim,
        other => anyhow::bail!("unknown sampler `{other}` (ddpm or ddim)"),
    };
    let opts = McvdEvalOptions {
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
