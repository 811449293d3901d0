//! The create pipeline, GeneRec's AI creator: a new micro-video from conditioning frames (or
//! none). Stages, one type each: [`ConditioningFrames`] (decode the conditioning range at the
//! job's fps and size), [`Synthesis`] (the frames to produce) and [`VideoWriter`] (H.264 MP4
//! plus a JPEG thumbnail, both carrying the job's watermark and the video its provenance
//! tags). With an MCVD checkpoint loaded, synthesis is MCVD's diffusion
//! (conditioning frames resized to the model's size, output upscaled to the job's): predict,
//! interpolate, generate and edit (SDEdit). Without one, `predict` and `interpolate` fall back
//! to the classical baselines (linear extrapolation and blending), and `generate` and `edit`
//! fail with a clear error; `interpolate` also falls back when the model has no future
//! conditioning.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use image::imageops::FilterType;
use protocol::{CreateJob, CreateMode, ModelUse, OutputKind, Stage};

use super::{Artifact, JobContext, ModelError, PipelineError, PipelineOutput};
use crate::batching::Batcher;
use crate::media::{self, DecodeOptions, EncodeOptions, VideoEncoder};
use crate::models::baseline;
use crate::models::diffusion::{Diffusion, EDIT_STRENGTH, SeededNoise, frame_to_tensor, tensor_to_frame};
use crate::models::mcvd::{Mcvd, McvdError};

/// Most conditioning frames read from the source.
pub const MAX_CONDITIONING_FRAMES: usize = 64;

/// The create pipeline.
#[derive(Clone, Default)]
pub struct CreatePipeline {
    /// Encoder settings for the video.
    pub encode: EncodeOptions,
    /// The MCVD model, when the worker loaded one.
    pub mcvd: Option<Arc<Mcvd>>,
    /// Batches the model's forward calls across the jobs running at once (the worker sets it;
    /// none: each job calls the model alone).
    pub batcher: Option<Batcher>,
}

impl fmt::Debug for CreatePipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatePipeline")
            .field("encode", &self.encode)
            .field("mcvd", &self.mcvd.as_ref().map(|m| m.config()))
            .finish()
    }
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

/// Frames made by [`Synthesis`] and the id of what made them.
pub struct Synthesised {
    /// The frames, at the job's size.
    pub frames: Vec<RgbImage>,
    /// The model or baseline, for the result.
    pub model_id: String,
}

impl Synthesis {
    /// `job.frames` new frames from the conditioning, with MCVD when `mcvd` is set.
    pub fn run(
        job: &CreateJob,
        cond: &[RgbImage],
        mcvd: Option<&Mcvd>,
        batcher: Option<&Batcher>,
        ctx: &JobContext,
    ) -> Result<Synthesised, PipelineError> {
        let n = job.frames as usize;
        let can_interpolate = mcvd.is_some_and(|m| m.config().num_frames_future > 0);
        match (job.mode, mcvd) {
            (CreateMode::Interpolate, Some(_)) if !can_interpolate => Ok(Self::baseline(job, cond, n)),
            (_, Some(model)) => Self::diffuse(job, cond, model, batcher, ctx).map_err(|e| ModelError::from(e).into()),
            (CreateMode::Predict | CreateMode::Interpolate, None) => Ok(Self::baseline(job, cond, n)),
            (CreateMode::Generate | CreateMode::Edit, None) => Err(PipelineError::Unsupported(format!(
                "mode `{}` needs the MCVD diffusion model, which this worker does not load",
                job.mode.as_str()
            ))),
        }
    }

    fn baseline(job: &CreateJob, cond: &[RgbImage], n: usize) -> Synthesised {
        let last = cond.last().expect("conditioning is non-empty");
        let first = cond.first().expect("conditioning is non-empty");
        match job.mode {
            CreateMode::Interpolate => Synthesised {
                frames: baseline::linear_interpolate(first, last, n),
                model_id: "baseline-linear-interpolation".into(),
            },
            _ => {
                let prev = cond.len().checked_sub(2).map_or(last, |i| &cond[i]);
                Synthesised {
                    frames: baseline::linear_extrapolate(prev, last, n),
                    model_id: "baseline-linear-extrapolation".into(),
                }
            }
        }
    }

    fn diffuse(
        job: &CreateJob,
        cond: &[RgbImage],
        model: &Mcvd,
        batcher: Option<&Batcher>,
        ctx: &JobContext,
    ) -> Result<Synthesised, McvdError> {
        let cfg = model.config();
        let n = job.frames as usize;
        let cond = cond.iter().map(|f| frame_to_tensor(f, cfg)).collect::<Result<Vec<_>, _>>()?;
        let diffusion = Diffusion::new(model, job.sampler.kind, job.sampler.steps as usize);
        let diffusion = match batcher {
            Some(b) => diffusion.with_batcher(b),
            None => diffusion,
        };
        // While this job samples, batches wait for its calls.
        let _session = batcher.map(Batcher::session);
        let mut rng = SeededNoise::new(job.seed);
        ctx.progress.progress(Stage::Synthesize, 0, n as u64);
        let frames = match job.mode {
            CreateMode::Predict => diffusion.predict(&cond, n, &mut rng)?,
            CreateMode::Interpolate => {
                let (past, future) = cond.split_at(cond.len().div_ceil(2));
                let future = if future.is_empty() { past } else { future };
                diffusion.interpolate(past, future, n, &mut rng)?
            }
            CreateMode::Generate => diffusion.generate(n, &mut rng)?,
            CreateMode::Edit => diffusion.edit(&cond, n, EDIT_STRENGTH, &mut rng)?,
        };
        ctx.progress.progress(Stage::Synthesize, n as u64, n as u64);
        let frames = frames
            .iter()
            .map(|t| tensor_to_frame(t, job.size.width, job.size.height))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Synthesised {
            frames,
            model_id: format!(
                "mcvd-ngf{}-{}px-{}",
                cfg.ngf,
                cfg.image_size,
                match job.sampler.kind {
                    protocol::SamplerKind::Ddpm => "ddpm",
                    protocol::SamplerKind::Ddim => "ddim",
                }
            ),
        })
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
        let mut enc = VideoEncoder::create(&path, first.width(), first.height(), fps, &ctx.encode_options(encode))?;
        for (i, f) in frames.iter().enumerate() {
            ctx.check()?;
            enc.push(f)?;
            ctx.progress.progress(Stage::Encode, i as u64 + 1, frames.len() as u64);
        }
        let report = enc.finish()?;
        let mut video = Artifact::new(OutputKind::Video, &path, "video.mp4", "video/mp4");
        video.duration_s = Some(report.duration_s);
        let thumb_path = ctx.scratch_path("thumbnail.jpg");
        let mut still = frames[frames.len() / 2].clone();
        ctx.mark_still(&mut still);
        std::fs::write(&thumb_path, media::encode_jpeg(&still, super::edit::THUMBNAIL_QUALITY)?)?;
        let thumb = Artifact::new(OutputKind::Thumbnail, &thumb_path, "thumbnail.jpg", "image/jpeg");
        Ok(vec![video, thumb])
    }
}

impl CreatePipeline {
    /// The pipeline with the MCVD checkpoint in `dir` (`config.json` + `model.safetensors`).
    pub fn with_mcvd(dir: &Path) -> Result<Self, McvdError> {
        Self::with_mcvd_on(dir, &candle_core::Device::Cpu)
    }

    /// [`CreatePipeline::with_mcvd`] with the model on `device`.
    pub fn with_mcvd_on(dir: &Path, device: &candle_core::Device) -> Result<Self, McvdError> {
        Ok(CreatePipeline { mcvd: Some(Arc::new(Mcvd::load_on(dir, device)?)), ..Default::default() })
    }

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
        let out = ctx.stage(Stage::Synthesize, |ctx| {
            Synthesis::run(job, &cond, self.mcvd.as_deref(), self.batcher.as_ref(), ctx)
        })?;
        let artifacts = ctx.stage(Stage::Encode, |ctx| VideoWriter::run(&out.frames, job.fps, &self.encode, ctx))?;
        ctx.record_watermark();
        Ok(PipelineOutput { artifacts, models: vec![ModelUse { role: "creator".into(), id: out.model_id }] })
    }
}
