//! Fleet control traffic: [`Heartbeat`]s workers publish so the scheduler knows who serves
//! which profile, and [`Control`] messages (cancellation) broadcast to every worker and
//! scheduler replica.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::JobId;
use crate::job::JobKind;

/// A worker saying it is alive, what it serves and how busy it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// The worker's id.
    pub worker_id: String,
    /// Job kinds it runs.
    pub kinds: Vec<JobKind>,
    /// Model profiles it holds.
    pub profiles: Vec<String>,
    /// Models loaded, by id.
    pub models: Vec<String>,
    /// Tasks it runs at once.
    pub capacity: u32,
    /// Tasks running now.
    pub in_flight: u32,
    /// The compute device (`cpu`, `cuda:0`, …).
    pub device: String,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// When this heartbeat was sent.
    pub at: DateTime<Utc>,
    /// Seconds until the next heartbeat; a worker silent for three intervals is gone.
    pub interval_s: u32,
}

/// A control message, broadcast on the control exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Cancel a job: not started → it ends `cancelled` without running; running → it stops at
    /// its next stage boundary.
    Cancel {
        /// Wire version, always 1.
        v: u32,
        /// The job to cancel.
        job_id: JobId,
        /// When the cancellation was asked for.
        at: DateTime<Utc>,
    },
}
