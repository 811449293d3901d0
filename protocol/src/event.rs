//! Events workers and the scheduler publish while a job moves: state changes ([`JobState`]) and
//! per-stage progress. On RabbitMQ they go to the events exchange as `job.<id>.<state>`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TenantId};
use crate::result::JobResult;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted by the scheduler, not yet dispatched.
    Queued,
    /// On a work queue, waiting for a worker.
    Dispatched,
    /// A worker is running it.
    Running,
    /// An attempt failed; it waits on the retry ladder.
    Retrying,
    /// Finished with all outputs durable.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Its deadline passed.
    Expired,
}

impl JobState {
    /// True for the four states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Expired)
    }

    /// The state as written on the wire and in routing keys.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Dispatched => "dispatched",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }
}

impl From<crate::result::JobStatus> for JobState {
    fn from(s: crate::result::JobStatus) -> Self {
        use crate::result::JobStatus;
        match s {
            JobStatus::Succeeded => JobState::Succeeded,
            JobStatus::Failed => JobState::Failed,
            JobStatus::Cancelled => JobState::Cancelled,
            JobStatus::Expired => JobState::Expired,
        }
    }
}

/// A pipeline stage, for progress events, timings and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Fetching inputs.
    Download,
    /// Reading the container and stream headers.
    Probe,
    /// Decoding frames.
    Decode,
    /// Computing embeddings.
    Embed,
    /// Scoring and choosing clips and thumbnails.
    Select,
    /// Diffusion (thumbnails).
    Diffuse,
    /// Video synthesis (the creator).
    Synthesize,
    /// Encoding outputs.
    Encode,
    /// Watermarking outputs.
    Watermark,
    /// Fidelity checks (safety, privacy).
    Check,
    /// Writing outputs to storage.
    Upload,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 11] = [
        Stage::Download,
        Stage::Probe,
        Stage::Decode,
        Stage::Embed,
        Stage::Select,
        Stage::Diffuse,
        Stage::Synthesize,
        Stage::Encode,
        Stage::Watermark,
        Stage::Check,
        Stage::Upload,
    ];

    /// The stage as written on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Probe => "probe",
            Stage::Decode => "decode",
            Stage::Embed => "embed",
            Stage::Select => "select",
            Stage::Diffuse => "diffuse",
            Stage::Synthesize => "synthesize",
            Stage::Encode => "encode",
            Stage::Watermark => "watermark",
            Stage::Check => "check",
            Stage::Upload => "upload",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The job entered a state.
    State {
        /// The new state.
        state: JobState,
        /// Why, for failures, retries and cancellations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A stage advanced.
    Progress {
        /// The stage.
        stage: Stage,
        /// Units done so far.
        done: u64,
        /// Units in all (0 when unknown).
        total: u64,
    },
    /// The job finished; the result is durable.
    Finished {
        /// The result, as written to `result.json`.
        result: Box<JobResult>,
    },
}

/// An event about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// The job.
    pub job_id: JobId,
    /// The job's tenant.
    pub tenant: TenantId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who published it (a worker id or `scheduler`).
    pub source: String,
    /// What happened.
    pub event: EventBody,
}

impl Event {
    /// An event stamped now.
    pub fn now(job_id: JobId, tenant: TenantId, source: impl Into<String>, event: EventBody) -> Self {
        Event { v: crate::WIRE_VERSION, job_id, tenant, at: Utc::now(), source: source.into(), event }
    }

    /// The routing key on the events exchange: `job.<id>.<state>` (`progress`, `finished`).
    pub fn routing_key(&self) -> String {
        let what = match &self.event {
            EventBody::State { state, .. } => state.as_str(),
            EventBody::Progress { .. } => "progress",
            EventBody::Finished { .. } => "finished",
        };
        format!("job.{}.{what}", self.job_id)
    }
}
