//! The create pipeline, GeneRec's AI creator: a new micro-video from conditioning frames (or
//! none). Stages, one type each: [`ConditioningFrames`] (decode the conditioning range at the
//! job's fps and size), [`Synthesis`] (the frames to produce) and [`VideoWriter`] (H.264 MP4
//! plus a JPEG thumbnail). Until MCVD lands, synthesis is the classical baseline: linear
//! extrapolation for `predict`, linear blending for `interpolate`; `generate` and `edit` need
//! the diffusion model and fail with a clear error.

use std::path::Path;

use image::RgbImage;
use image::imageops::FilterType;
use protocol::{CreateJob, CreateMode, ModelUse, OutputKind, Stage};

use super::{Artifact, JobContext, PipelineError, PipelineOutput};
use crate::media::{self, DecodeOptions, EncodeOptions, VideoEncoder};
use crate::models::baseline;

/// Most conditioning frames read from the source.
pub const MAX_CONDITIONING_FRAMES: usize = 64;

/// The create pipeline.
#[derive(Debug, Clone, Default)]
pub struct CreatePipeline {
    /// Encoder settings for the video.
    pub encode: EncodeOptions,
}

/// Stage: the conditioning range of the source, at the job's fps, resized to the job's size.
pub struct ConditioningFrames;

impl ConditioningFrames {
    /// Decodes `[start_s, end_s)` of `src`.
    pub fn run(
        src: &Path,
        start_s: f64,
        end_s: f64,
        job: &CreateJob,
        ctx: &JobContext,
    ) -> Result<Vec<RgbImage>, PipelineError> {
        let opts = DecodeOptions {
            sample_fps: Some(f64::from(job.fps)),
            start_s,
            end_s: Some(end_s),
            max_side: Some(job.size.width.max(job.size.height) * 2),
        };
        let mut frames = Vec::new();
        for frame in media::decode(src, &opts, &ctx.limits)? {
            let frame = frame?;
            frames.push(image::imageops::resize(&frame.image, job.size.width, job.size.height, FilterType::Triangle));
            ctx.progress.progress(Stage::Decode, frames.len() as u64, 0);
            if frames.len() == MAX_CONDITIONING_FRAMES {
                break;
            }
        }
        if frames.is_empty() {
            return Err(media::MediaError::NoFrames { path: src.to_owned() }.into());
        }
        Ok(frames)
    }
}

/// Stage: the frames to produce.
pub struct Synthesis;

impl Synthesis {
    /// `job.frames` new frames from the conditioning.
    pub fn run(job: &CreateJob, cond: &[RgbImage]) -> Result<Vec<RgbImage>, PipelineError> {
        let n = job.frames as usize;
        match job.mode {
            CreateMode::Predict => {
                let last = cond.last().expect("conditioning is non-empty");
                let prev = cond.len().checked_sub(2).map_or(last, |i| &cond[i]);
                Ok(baseline::linear_extrapolate(prev, last, n))
            }
            CreateMode::Interpolate => {
                let (first, last) = (cond.first().expect("non-empty"), cond.last().expect("non-empty"));
                Ok(baseline::linear_interpolate(first, last, n))
            }
            CreateMode::Generate | CreateMode::Edit => Err(PipelineError::Unsupported(format!(
                "mode `{}` needs the MCVD diffusion model, which this worker does not load",
                job.mode.as_str()
            ))),
        }
    }
}

/// Stage: encode the frames as `video.mp4` and the middle frame as `thumbnail.jpg`.
pub struct VideoWriter;

impl VideoWriter {
    /// Writes both files to scratch.
    pub fn run(
        frames: &[RgbImage],
        fps: u32,
        encode: &EncodeOptions,
        ctx: &JobContext,
    ) -> Result<Vec<Artifact>, PipelineError> {
        let first = frames.first().expect("synthesis yields frames");
        let path = ctx.scratch_path("video.mp4");
        let mut enc = VideoEncoder::create(&path, first.width(), first.height(), fps, encode)?;
        for (i, f) in frames.iter().enumerate() {
            ctx.check()?;
            enc.push(f)?;
            ctx.progress.progress(Stage::Encode, i as u64 + 1, frames.len() as u64);
        }
        let report = enc.finish()?;
        let mut video = Artifact::new(OutputKind::Video, &path, "video.mp4", "video/mp4");
        video.duration_s = Some(report.duration_s);
        let thumb_path = ctx.scratch_path("thumbnail.jpg");
        std::fs::write(&thumb_path, media::encode_jpeg(&frames[frames.len() / 2], super::edit::THUMBNAIL_QUALITY)?)?;
        let thumb = Artifact::new(OutputKind::Thumbnail, &thumb_path, "thumbnail.jpg", "image/jpeg");
        Ok(vec![video, thumb])
    }
}

impl CreatePipeline {
    /// Runs the job; `cond_src` is the fetched conditioning video, if the job has one.
    pub fn run(
        &self,
        job: &CreateJob,
        cond_src: Option<&Path>,
        ctx: &mut JobContext,
    ) -> Result<PipelineOutput, PipelineError> {
        let cond = match (cond_src, &job.conditioning) {
            (Some(src), Some(c)) => {
                ctx.stage(Stage::Decode, |ctx| ConditioningFrames::run(src, c.start_s, c.end_s, job, ctx))?
            }
            _ => Vec::new(),
        };
        let frames = ctx.stage(Stage::Synthesize, |_| Synthesis::run(job, &cond))?;
        let artifacts = ctx.stage(Stage::Encode, |ctx| VideoWriter::run(&frames, job.fps, &self.encode, ctx))?;
        let id = match job.mode {
            CreateMode::Interpolate => "baseline-linear-interpolation",
            _ => "baseline-linear-extrapolation",
        };
        Ok(PipelineOutput { artifacts, models: vec![ModelUse { role: "creator".into(), id: id.into() }] })
    }
}
