//! `reelforge models`: checkpoint management. `init-tiny` writes tiny, randomly initialised
//! checkpoints with a fixed seed, one sub-directory per model (`DIR/mcvd/`, `DIR/clip/` in the
//! Hugging Face layout, `DIR/sd/` in the diffusers layout), for tests, benchmarks and the demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use worker::models::clip;
use worker::models::mcvd::{self, McvdConfig};
use worker::models::sd;

/// Subcommands of `reelforge models`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Write tiny checkpoints (fixed seed) under DIR: DIR/mcvd/ (config.json, model.safetensors)
    /// DIR/clip/ (Hugging Face layout: config.json, model.safetensors, tokenizer.json,
    /// preprocessor_config.json) and DIR/sd/ (a tiny Stable Diffusion in the diffusers layout).
    InitTiny {
        /// The directory to fill.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The seed of tiny checkpoints.
pub const TINY_SEED: u64 = 6;

pub fn run(cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::InitTiny { out } => {
            let dir = out.join("mcvd");
            init_tiny_mcvd(&dir)?;
            println!("tiny MCVD: {}", dir.display());
            let dir = out.join("clip");
            init_tiny_clip(&dir)?;
            println!("tiny CLIP: {}", dir.display());
            let dir = out.join("sd");
            init_tiny_sd(&dir)?;
            println!("tiny SD: {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the tiny MCVD (untrained, seed [`TINY_SEED`]) into `dir`.
pub fn init_tiny_mcvd(dir: &Path) -> anyhow::Result<()> {
    let cfg = McvdConfig::tiny();
    let (varmap, _) = mcvd::init_model(&cfg, TINY_SEED)?;
    mcvd::save_checkpoint(dir, &cfg, &mcvd::varmap_tensors(&varmap)?)
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// Writes the tiny CLIP (untrained, seed [`TINY_SEED`]) into `dir`.
pub fn init_tiny_clip(dir: &Path) -> anyhow::Result<()> {
    clip::init_tiny(dir, TINY_SEED).with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// Writes the tiny Stable Diffusion (untrained, seed [`TINY_SEED`]) into `dir`.
pub fn init_tiny_sd(dir: &Path) -> anyhow::Result<()> {
    sd::write_tiny(dir, TINY_SEED).with_context(|| format!("writing {}", dir.display()))
}
