//! `reelforge watermark detect FILE`: looks for the invisible watermark in an MP4, JPEG or PNG,
//! prints the payload (tenant and job hashes, generator) and a confidence, and exits 1 when
//! there is none. Also the key argument every watermarking command shares.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use worker::watermark::detect::{HYPOTHESES, false_positive_bound};
use worker::watermark::payload::CRC_BITS;
use worker::watermark::{self, WatermarkKey};

/// The watermark key, as workers and the detector take it.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The watermark secret (any string; use 32+ random bytes in hex in production). Without
    /// it the documented development key is used, which protects nothing.
    #[arg(long = "watermark-key", env = "REELFORGE_WATERMARK_KEY", hide_env_values = true)]
    pub watermark_key: Option<String>,
}

impl KeyArgs {
    /// The configured key, or the development key (with a warning).
    pub fn key(&self) -> WatermarkKey {
        match &self.watermark_key {
            Some(k) if !k.is_empty() => WatermarkKey::new(k.as_bytes()),
            _ => {
                tracing::warn!("no --watermark-key / REELFORGE_WATERMARK_KEY: using the development key");
                WatermarkKey::dev()
            }
        }
    }
}

/// Subcommands of `reelforge watermark`.
#[derive(Debug, clap::Subcommand)]
pub enum WatermarkCommand {
    /// Look for the watermark in a file (MP4, JPEG or PNG); exit 1 when none is found.
    Detect(DetectArgs),
}

/// Arguments of `reelforge watermark detect`.
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// The file to examine.
    pub file: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Check whether the payload names this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// With --tenant: check whether the payload names this job of the tenant.
    #[arg(long, requires = "tenant")]
    pub job: Option<String>,
}

pub fn run(cmd: WatermarkCommand) -> anyhow::Result<ExitCode> {
    let WatermarkCommand::Detect(args) = cmd;
    let key = args.key.key();
    let d = watermark::detect_file(&args.file, &key, &Default::default())
        .with_context(|| format!("examining {}", args.file.display()))?;
    let Some(p) = d.found else {
        println!("no watermark found in {} ({} frame(s); best z-score {:.2})", args.file.display(), d.frames, d.z);
        return Ok(ExitCode::FAILURE);
    };
    println!("watermark found in {}", args.file.display());
    println!("payload     {}", p.hex());
    println!("tenant hash {:05x}", p.tenant());
    println!("job hash    {:07x}", p.job());
    println!("generator   {} ({:#06x})", p.generator().name(), p.generator().0);
    println!(
        "confidence  {:.9} (false-positive bound {:.1e}: CRC-{CRC_BITS} over {HYPOTHESES} hypotheses)",
        d.confidence(),
        false_positive_bound()
    );
    println!("evidence    coded-bit agreement {:.1} %, z-score {:.1}", d.agreement * 100.0, d.z);
    println!("frames      {} (grid {}, crop {:.0} %)", d.frames, d.canonical, (1.0 - d.crop) * 100.0);
    if let Some(tenant) = &args.tenant {
        let ok = p.matches(&key, tenant, args.job.as_deref());
        let what = match &args.job {
            Some(j) => format!("tenant {tenant}, job {j}"),
            None => format!("tenant {tenant}"),
        };
        println!("matches {what}: {}", if ok { "yes" } else { "no" });
        if !ok {
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}
