//! What a finished job produced: [`JobResult`] with its [`Output`]s, per-stage timings, the
//! models used and, when it failed, a [`JobError`]. Workers write it as `result.json`, the
//! commit marker of a job's outputs.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::event::Stage;
use crate::ids::{JobId, TenantId};
use crate::job::JobKind;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// All outputs are durable.
    Succeeded,
    /// It failed; `error` says why.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Its deadline passed first.
    Expired,
}

/// What an output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A clip cut from the source video (H.264 MP4).
    Clip,
    /// A still thumbnail (JPEG).
    Thumbnail,
    /// A synthesised video (H.264 MP4).
    Video,
}

/// One durable output object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Clip, thumbnail or video.
    pub kind: OutputKind,
    /// Where it is stored (`s3://bucket/tenant/job/...` or `file:///...` in embedded mode).
    pub uri: String,
    /// MIME type (`video/mp4`, `image/jpeg`).
    pub content_type: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Start in the source video, in seconds (clips and selected thumbnails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// End in the source video, in seconds (clips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// Duration of a video output, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The selection score (higher fits the guidance better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// The embedded watermark payload, 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
}

/// An output a fidelity check kept back: it was not uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Withheld {
    /// The output's object name (`thumbnail.jpg`, `clip-01.mp4`).
    pub name: String,
    /// Clip, thumbnail or video.
    pub kind: OutputKind,
    /// The check that refused it (`safety`).
    pub check: String,
    /// The concept it matched.
    pub concept: String,
    /// The highest cosine of its frames with the concept.
    pub score: f32,
    /// The concept's threshold.
    pub threshold: f32,
}

/// Time spent in one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageTiming {
    /// The stage.
    pub stage: Stage,
    /// Wall time in milliseconds.
    pub ms: f64,
}

/// A model a job used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelUse {
    /// What it did (`clip`, `sd`, `mcvd`, `selector`, `creator`).
    pub role: String,
    /// Its id (checkpoint name or built-in name).
    pub id: String,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
}

/// The outcome of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// The job's id.
    pub job_id: JobId,
    /// The job's tenant.
    pub tenant: TenantId,
    /// Edit or create; absent when the job could not be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
    /// How it ended.
    pub status: JobStatus,
    /// Durable outputs (empty unless succeeded).
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Outputs a fidelity check kept back (not uploaded), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<Withheld>,
    /// Time per stage, in order.
    #[serde(default)]
    pub timings: Vec<StageTiming>,
    /// Models used.
    #[serde(default)]
    pub models: Vec<ModelUse>,
    /// Why it failed (failed, cancelled, expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Which attempt produced this result (1 = first).
    #[serde(default = "one")]
    pub attempt: u32,
    /// The worker that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

fn one() -> u32 {
    1
}

impl JobResult {
    /// A result with no outputs, timings, models or error, finished now.
    pub fn new(job_id: JobId, tenant: TenantId, kind: Option<JobKind>, status: JobStatus) -> Self {
        JobResult {
            v: crate::WIRE_VERSION,
            job_id,
            tenant,
            kind,
            status,
            outputs: Vec::new(),
            withheld: Vec::new(),
            timings: Vec::new(),
            models: Vec::new(),
            error: None,
            attempt: 1,
            worker: None,
            finished_at: Utc::now(),
        }
    }

    /// A failed (or cancelled/expired) result with no outputs.
    pub fn failure(
        job_id: JobId,
        tenant: TenantId,
        kind: Option<JobKind>,
        status: JobStatus,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        JobResult {
            error: Some(JobError { code, message: message.into() }),
            ..JobResult::new(job_id, tenant, kind, status)
        }
    }
}
