//! `pipeline` owns what a worker does with one job: the shared [`JobContext`] (scratch space,
//! progress, cancellation, limits), the [`Artifact`]s a pipeline leaves in scratch for the
//! runtime to upload, and [`PipelineError`] with its [`ErrorCode`]. The two pipelines are
//! [`edit::EditPipeline`] (GeneRec's AI editor) and [`create::CreatePipeline`] (the AI creator).

pub mod create;
pub mod edit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use protocol::{ErrorCode, ModelUse, OutputKind, Stage, StageTiming};

use crate::media::{MediaError, MediaLimits};
use crate::storage::StorageError;

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
    /// Set when the job is cancelled or the worker must stop; checked between stages.
    pub cancel: Arc<AtomicBool>,
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
            timings: Vec::new(),
        }
    }

    /// Runs one stage: checks cancellation first, times it, reports its start.
    pub fn stage<T>(
        &mut self,
        stage: Stage,
        f: impl FnOnce(&mut Self) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        self.progress.progress(stage, 0, 0);
        let t = Instant::now();
        let out = f(self);
        self.timings.push(StageTiming {
            stage,
            ms: t.elapsed().as_secs_f64() * 1e3,
        });
        out
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
    pub fn new(
        kind: OutputKind,
        path: &Path,
        name: impl Into<String>,
        content_type: &'static str,
    ) -> Self {
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
    /// A model produced non-finite values or failed.
    #[error("model failure: {0}")]
    Model(String),
    /// Cancelled between stages.
    #[error("cancelled")]
    Cancelled,
    /// Scratch I/O failed.
    #[error("scratch I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl PipelineError {
    /// The code a failed result carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            PipelineError::Media(
                MediaError::TooLong { .. }
                | MediaError::TooManyPixels { .. }
                | MediaError::FileTooLarge { .. },
            ) => ErrorCode::InputTooLarge,
            PipelineError::Media(MediaError::Io(_)) => ErrorCode::Internal,
            PipelineError::Media(_) => ErrorCode::InvalidMedia,
            PipelineError::Storage(StorageError::NotFound(_)) => ErrorCode::InputNotFound,
            PipelineError::Storage(StorageError::TooLarge { .. }) => ErrorCode::InputTooLarge,
            PipelineError::Storage(StorageError::InvalidKey { .. }) => ErrorCode::InvalidJob,
            PipelineError::Storage(StorageError::Forbidden { .. }) => ErrorCode::InvalidJob,
            PipelineError::Storage(_) => ErrorCode::StorageError,
            PipelineError::Unsupported(_) => ErrorCode::UnknownProfile,
            PipelineError::BadGuidance(_) => ErrorCode::InvalidJob,
            PipelineError::Model(_) => ErrorCode::ModelError,
            PipelineError::Cancelled => ErrorCode::Cancelled,
            PipelineError::Io(_) => ErrorCode::Internal,
        }
    }

    /// True when another attempt may succeed (storage hiccups), so the message is requeued.
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::Storage(e) if e.is_transient())
    }
}

/// Rounds a size down to even numbers (H.264 with yuv420p needs even sides), at least 16.
pub fn even_size(width: u32, height: u32) -> (u32, u32) {
    ((width & !1).max(16), (height & !1).max(16))
}
