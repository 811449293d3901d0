//! `reelforge validate FILE`: the scheduler's admission checks, offline.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use protocol::{Job, ValidationContext};

pub fn run(file: &Path, allow_local: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let ctx = ValidationContext { allow_local_media: allow_local };
    match Job::from_json(&bytes, &ctx) {
        Ok(job) => {
            println!("ok: {} job {} for tenant {}", job.kind().as_str(), job.job_id(), job.tenant());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: {e}", e.code());
            Ok(ExitCode::from(1))
        }
    }
}
