//! A [`Task`]: one attempt at a job, as the scheduler puts it on a work queue for a worker.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::Job;

/// One attempt at a validated job, addressed to the workers of its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// The job, as validated by the scheduler.
    pub job: Job,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// When the scheduler dispatched this attempt.
    pub dispatched_at: DateTime<Utc>,
}

impl Task {
    /// The first attempt at `job`, stamped now.
    pub fn first(job: Job) -> Self {
        Task { v: crate::WIRE_VERSION, job, attempt: 1, dispatched_at: Utc::now() }
    }
}
