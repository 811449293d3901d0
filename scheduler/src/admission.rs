//! [`Admission`]: one submission from the submit queue becomes a task on a work queue, or a
//! failed/expired result. Order: parse and validate (an invalid job ends `failed` with the
//! validation message, never retried) → de-duplicate by job id (a resubmitted id is never run
//! twice) → expire a passed deadline → route to `reelforge.tasks.<kind>.<profile>` with the
//! job's priority. The submission is acked only after the task or the result is confirmed.

use std::sync::Arc;

use bus::{Bus, Delivery, Message, topology};
use chrono::Utc;
use protocol::{
    ErrorCode, Event, EventBody, Job, JobId, JobResult, JobState, JobStatus, Task, TenantId,
    ValidationContext,
};
use tracing::{info, info_span, warn};

use crate::SchedulerConfig;
use crate::state::{Admit, JobTable};

/// Admits submissions.
pub struct Admission {
    bus: Arc<dyn Bus>,
    table: JobTable,
    cfg: SchedulerConfig,
}

impl Admission {
    /// Admission over a bus and a job table.
    pub fn new(bus: Arc<dyn Bus>, table: JobTable, cfg: SchedulerConfig) -> Self {
        Admission { bus, table, cfg }
    }

    /// Admits one delivery from the submit queue and settles it.
    pub async fn admit(&self, delivery: Delivery) {
        let span = info_span!("admit", message_id = %delivery.message.id);
        let _g = span.enter();
        let ctx = ValidationContext {
            allow_local_media: self.cfg.allow_local_media,
        };
        let outcome = match Job::from_json(&delivery.message.body, &ctx) {
            Ok(job) => self.route(job).await,
            Err(e) => {
                let (job_id, tenant) = ids_of_invalid(&delivery.message);
                warn!(%job_id, code = %e.code(), "refused: {e}");
                match self.table.admit(job_id.clone(), tenant.clone(), None).await {
                    Admit::New => {
                        let result = JobResult::failure(
                            job_id,
                            tenant,
                            None,
                            JobStatus::Failed,
                            e.code(),
                            e.to_string(),
                        );
                        self.publish_finished(result).await
                    }
                    Admit::Duplicate(_) => Ok(()),
                }
            }
        };
        let settled = match outcome {
            Ok(()) => delivery.ack().await,
            // Not confirmed: leave it on the submit queue for another try.
            Err(e) => {
                warn!(error = %e, "admission not confirmed; requeueing");
                delivery.nack(true).await
            }
        };
        if let Err(e) = settled {
            warn!(error = %e, "settling the submission failed");
        }
    }

    async fn route(&self, job: Job) -> Result<(), bus::BusError> {
        let job_id = job.job_id().clone();
        match self
            .table
            .admit(job_id.clone(), job.tenant().clone(), Some(job.kind()))
            .await
        {
            Admit::Duplicate(state) => {
                info!(%job_id, state = state.as_str(), "duplicate submission ignored");
                return Ok(());
            }
            Admit::New => {}
        }
        if job.deadline().is_some_and(|d| d < Utc::now()) {
            let result = JobResult::failure(
                job_id,
                job.tenant().clone(),
                Some(job.kind()),
                JobStatus::Expired,
                ErrorCode::DeadlineExceeded,
                "deadline passed before dispatch",
            );
            return self.publish_finished(result).await;
        }
        let queue =
            topology::declare_task_queue(self.bus.as_ref(), job.kind(), job.profile()).await?;
        let (tenant, priority) = (job.tenant().clone(), job.priority());
        let body = serde_json::to_vec(&Task::first(job)).expect("tasks serialise");
        self.bus
            .publish(
                "",
                &queue,
                Message::new(job_id.to_string(), body).with_priority(priority),
            )
            .await?;
        info!(%job_id, %queue, priority, "dispatched");
        let ev = Event::now(
            job_id,
            tenant,
            &self.cfg.id,
            EventBody::State {
                state: JobState::Dispatched,
                detail: Some(queue),
            },
        );
        self.publish_event(&ev).await
    }

    async fn publish_finished(&self, result: JobResult) -> Result<(), bus::BusError> {
        let ev = Event::now(
            result.job_id.clone(),
            result.tenant.clone(),
            &self.cfg.id,
            EventBody::Finished {
                result: Box::new(result),
            },
        );
        self.publish_event(&ev).await
    }

    async fn publish_event(&self, ev: &Event) -> Result<(), bus::BusError> {
        let body = serde_json::to_vec(ev).expect("events serialise");
        self.bus
            .publish(
                topology::EVENTS_EXCHANGE,
                &ev.routing_key(),
                Message::new(ev.job_id.to_string(), body),
            )
            .await
    }
}

/// The best ids to report a refused document under: its own `job_id`/`tenant` when they are
/// valid, else the message id, else `unknown`.
fn ids_of_invalid(message: &Message) -> (JobId, TenantId) {
    let doc: Option<serde_json::Value> = if message.body.len() <= protocol::limits::MAX_JOB_BYTES {
        serde_json::from_slice(&message.body).ok()
    } else {
        None
    };
    let field = |name: &str| {
        doc.as_ref()
            .and_then(|d| d.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let job_id = field("job_id")
        .map(JobId)
        .filter(|id| id.check("job_id").is_ok())
        .or_else(|| Some(JobId(message.id.clone())).filter(|id| id.check("job_id").is_ok()))
        .unwrap_or_else(|| JobId(format!("invalid-{}", &hex_digest(&message.body)[..16])));
    let tenant = field("tenant")
        .map(TenantId)
        .filter(|t| t.check("tenant").is_ok())
        .unwrap_or_else(|| TenantId("unknown".into()));
    (job_id, tenant)
}

fn hex_digest(bytes: &[u8]) -> String {
    // FNV-1a, enough to tell refused anonymous documents apart in logs and events.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:016x}", bytes.len())
}
