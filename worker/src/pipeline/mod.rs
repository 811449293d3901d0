//! `pipeline` owns what a worker does with one job: the shared [`JobContext`] (scratch space,
//! progress, cancellation, limits), the [`Artifact`]s a pipeline leaves in scratch for the
//! runtime to upload, the job's watermark and provenance tags ([`JobContext::encode_options`],
//! [`JobContext::mark_still`]), and [`PipelineError`] with its [`ErrorCode`]. The two pipelines
//! are [`edit::EditPipeline`] (GeneRec's AI editor) and [`create::CreatePipeline`] (the AI
//! creator); [`thumbnail::ThumbnailGenerate`] is the editor's Stable Diffusion stage.

pub mod create;
pub mod edit;
pub mod thumbnail;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use image::RgbImage;

use protocol::{ErrorCode, ModelUse, OutputKind, Stage, StageTiming};

use crate::media::{EncodeOptions, MediaError, MediaLimits, SharedFilter};
use crate::storage::StorageError;
use crate::watermark::Watermarker;

/// Receives stage progress; the runtime turns it into events.
pub trait ProgressSink: Send + Sync {
    /// `done` of `total` units of `stage` are finished (`total` 0 when unknown).
    fn progress(&self, stage: Stage, done: u64, total: u64);
}

/// A sink that drops progress (tests, tools).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn progress(&self, _: Stage, _: u64, _: u64) {}
}

/// Everything a pipeline may use while running one job.
pub struct JobContext {
    /// A private directory for this attempt, deleted afterwards.
    pub scratch: PathBuf,
    /// Media guards (duration, pixels, bytes).
    pub limits: MediaLimits,
    /// Progress reporting.
    pub progress: Arc<dyn ProgressSink>,
    /// Set when the job is cancelled; checked between stages and inside long loops.
    pub cancel: Arc<AtomicBool>,
    /// Set when the worker must stop before the job ends (the task is requeued, not failed).
    pub interrupt: Arc<AtomicBool>,
    /// When the job must be finished by.
    pub deadline: Option<DateTime<Utc>>,
    /// The job's watermark, applied to every output frame and still (none in tools and tests
    /// that do not ask for it).
    pub watermark: Option<Arc<Watermarker>>,
    /// Container metadata for video outputs (AI-generated, generator).
    pub provenance: Vec<(String, String)>,
    timings: Vec<StageTiming>,
}

impl JobContext {
    /// A context over `scratch`.
    pub fn new(
        scratch: PathBuf,
        limits: MediaLimits,
        progress: Arc<dyn ProgressSink>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        JobContext {
            scratch,
            limits,
            progress,
            cancel,
            interrupt: Arc::new(AtomicBool::new(false)),
            deadline: None,
            watermark: None,
            provenance: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// Fails fast when the worker is stopping, the job was cancelled or its deadline passed.
    pub fn check(&self) -> Result<(), PipelineError> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(PipelineError::Interrupted);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        if self.deadline.is_some_and(|d| d < Utc::now()) {
            return Err(PipelineError::DeadlineExceeded);
        }
        Ok(())
    }

    /// Runs one stage: checks cancellation first, times it, reports its start.
    pub fn stage<T>(
        &mut self,
        stage: Stage,
        f: impl FnOnce(&mut Self) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        self.check()?;
        self.progress.progress(stage, 0, 0);
        // A span per stage inside the task's span: a slow job reads from its logs stage by stage.
        let span = tracing::info_span!("stage", stage = stage.as_str());
        let _entered = span.enter();
        let t = Instant::now();
        let out = f(self);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.timings.push(StageTiming { stage, ms });
        tracing::debug!(ms, ok = out.is_ok(), "stage done");
        out
    }

    /// Encoder settings for this job's videos: `base` plus the provenance tags and the watermark
    /// as the frame filter (applied after the final scaling, before encoding).
    pub fn encode_options(&self, base: &EncodeOptions) -> EncodeOptions {
        let mut opts = base.clone();
        opts.metadata.extend(self.provenance.iter().cloned());
        if let Some(wm) = &self.watermark {
            opts.filter = Some(SharedFilter(wm.clone()));
        }
        opts
    }

    /// Marks a still (a thumbnail) with the job's watermark, after its final scaling and
    /// before it is encoded.
    pub fn mark_still(&self, img: &mut RgbImage) {
        if let Some(wm) = &self.watermark {
            wm.mark(img);
        }
    }

    /// Records the time the watermark took inside the other stages as a `watermark` stage.
    pub fn record_watermark(&mut self) {
        if let Some(wm) = &self.watermark {
            let ms = wm.elapsed().as_secs_f64() * 1e3;
            self.timings.push(StageTiming { stage: Stage::Watermark, ms });
        }
    }

    /// The timings recorded so far, in order.
    pub fn timings(&self) -> &[StageTiming] {
        &self.timings
    }

    /// A path in scratch.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }
}

/// One file a pipeline produced, waiting in scratch to be uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// Clip, thumbnail or video.
    pub kind: OutputKind,
    /// The file in scratch.
    pub path: PathBuf,
    /// The object name under `{tenant}/{job_id}/`.
    pub name: String,
    /// MIME type.
    pub content_type: &'static str,
    /// Start in the source, seconds.
    pub start_s: Option<f64>,
    /// End in the source, seconds.
    pub end_s: Option<f64>,
    /// Duration of a video, seconds.
    pub duration_s: Option<f64>,
    /// Selection score.
    pub score: Option<f32>,
}

impl Artifact {
    /// An artifact with no timing or score.
    pub fn new(kind: OutputKind, path: &Path, name: impl Into<String>, content_type: &'static str) -> Self {
        Artifact {
            kind,
            path: path.to_owned(),
            name: name.into(),
            content_type,
            start_s: None,
            end_s: None,
            duration_s: None,
            score: None,
        }
    }
}

/// What a pipeline hands back: files to upload and the models it used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineOutput {
    /// Files in scratch, in output order.
    pub artifacts: Vec<Artifact>,
    /// Models used.
    pub models: Vec<ModelUse>,
}

/// Why a model failed, with the model's own error as the source.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The editor's CLIP.
    #[error("CLIP: {0}")]
    Clip(#[from] crate::models::clip::ClipError),
    /// Stable Diffusion (generated thumbnails).
    #[error("Stable Diffusion: {0}")]
    Sd(#[from] crate::models::sd::SdError),
    /// The creator's MCVD.
    #[error("MCVD: {0}")]
    Mcvd(#[from] crate::models::mcvd::McvdError),
    /// A model ran but what it returned cannot be used (a non-finite score, a zero embedding).
    #[error("{0}")]
    Unusable(String),
}

impl From<ModelError> for PipelineError {
    fn from(e: ModelError) -> Self {
        PipelineError::Model(Box::new(e))
    }
}

/// Why a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input media is unusable.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Reading inputs failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The job asks for something this worker's models cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The job's guidance cannot steer anything.
    #[error("{0}")]
    BadGuidance(String),
    /// A model produced non-finite values or failed (boxed: the models' errors are large).
    #[error("model failure: {0}")]
    Model(Box<ModelError>),
    /// A fidelity check refused the job's outputs.
    #[error("{0}")]
    Unsafe(String),
    /// Attaching content credentials (C2PA) failed.
    #[error("content credentials: {0}")]
    Provenance(#[from] crate::credentials::CredentialsError),
    /// Cancelled between stages.
    #[error("cancelled")]
    Cancelled,
    /// The deadline passed while running.
    #[error("deadline passed while running")]
    DeadlineExceeded,
    /// The worker is shutting down; the task goes back to its queue.
    #[error("interrupted by worker shutdown")]
    Interrupted,
    /// Scratch I/O failed.
    #[error("scratch I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The pipeline's thread panicked: a bug, reported as this job's internal error.
    #[error("the pipeline panicked: {0}")]
    Panicked(String),
}

impl PipelineError {
    /// The code a failed result carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            PipelineError::Media(
                MediaError::TooLong { .. } | MediaError::TooManyPixels { .. } | MediaError::FileTooLarge { .. },
            ) => ErrorCode::InputTooLarge,
            PipelineError::Media(MediaError::Io(_)) => ErrorCode::Internal,
            PipelineError::Media(_) => ErrorCode::InvalidMedia,
            PipelineError::Storage(StorageError::NotFound(_)) => ErrorCode::InputNotFound,
            PipelineError::Storage(StorageError::TooLarge { .. }) => ErrorCode::InputTooLarge,
            PipelineError::Storage(StorageError::InvalidKey { .. } | StorageError::Forbidden { .. }) => {
                ErrorCode::InvalidJob
            }
            PipelineError::Storage(_) => ErrorCode::StorageError,
            PipelineError::Unsupported(_) => ErrorCode::UnknownProfile,
            PipelineError::BadGuidance(_) => ErrorCode::InvalidJob,
            PipelineError::Model(_) => ErrorCode::ModelError,
            PipelineError::Unsafe(_) => ErrorCode::UnsafeContent,
            PipelineError::Provenance(_) => ErrorCode::Internal,
            PipelineError::Cancelled => ErrorCode::Cancelled,
            PipelineError::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            PipelineError::Interrupted => ErrorCode::Internal,
            PipelineError::Io(_) | PipelineError::Panicked(_) => ErrorCode::Internal,
        }
    }

    /// True when another attempt may succeed (storage hiccups): the task goes up the retry ladder.
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::Storage(e) if e.is_transient())
    }
}

/// Rounds a size down to even numbers (H.264 with yuv420p needs even sides), at least 16.
pub fn even_size(width: u32, height: u32) -> (u32, u32) {
    ((width & !1).max(16), (height & !1).max(16))
}
