//! `protocol` owns reelforge's wire format: the jobs people submit ([`Job`]: edit and create), the
//! [`Task`]s the scheduler hands to workers, the [`JobResult`]s and [`Event`]s workers publish,
//! the validation every inbound document passes ([`Job::from_json`]), the named limits it
//! enforces ([`limits`]), the instructor's [`Reading`] of an instruction ([`recommend`]) and the
//! JSON Schema generated from these types ([`schema`]).
//!
//! Every document carries `"v": 1` ([`WIRE_VERSION`]). Field names are snake_case; unknown
//! fields are rejected so that a typo never silently falls back to a default.

pub mod control;
pub mod error;
pub mod event;
pub mod ids;
pub mod job;
pub mod limits;
pub mod media;
pub mod recommend;
pub mod result;
pub mod schema;
pub mod task;

pub use control::{Control, Heartbeat};
pub use error::{ErrorCode, ProtocolError, ValidationError};
pub use event::{Event, EventBody, JobState, Stage};
pub use ids::{JobId, TenantId};
pub use job::{
    Conditioning, CreateJob, CreateMode, EditJob, EditOptions, FrameSize, GenerateOptions, Guidance, HistoryItem, Job,
    JobKind, Sampler, SamplerKind, ThumbnailMode, ValidationContext,
};
pub use media::{MediaLocation, MediaUri};
pub use recommend::{CreateWish, InstructionOptions, Intent, Length, Reading, Style, ThumbnailWish};
pub use result::{JobError, JobResult, JobStatus, ModelUse, Output, OutputKind, StageTiming, Withheld};
pub use task::Task;

/// The wire version every document of this crate carries in its `v` field.
pub const WIRE_VERSION: u32 = 1;
