//! [`Admission`]: one submission from the submit queue becomes a task on a work queue, a held
//! job, or a failed/expired/cancelled result. Order: parse and validate (an invalid job ends
//! `failed` with the validation message, never retried) → de-duplicate by job id (a
//! resubmitted id is never run twice) → cancelled? → deadline passed? → known profile? →
//! tenant under its in-flight limit? (else onto the held queue, see [`crate::fairness`]) →
//! route to `reelforge.tasks.<kind>.<profile>` with the job's priority. A job estimated over a
//! worker's memory budget is refused like an invalid one (`job_too_large`, with the numbers). A submission is acked
//! only after its task, held copy or result is confirmed by the broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bus::{Bus, Delivery, Message, topology};
use chrono::Utc;
use protocol::{
    ErrorCode, Event, EventBody, Job, JobId, JobResult, JobState, JobStatus, Task, TenantId, ValidationContext,
};
use tracing::{Instrument, info, info_span, warn};

use crate::SchedulerConfig;
use crate::barrier::FeedBarrier;
use crate::state::{Admit, HELD_DETAIL, JobTable};

/// What admission did with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Put on its work queue.
    Dispatched,
    /// Put on the held queue: its tenant is at its in-flight limit.
    Held,
    /// Taken from the held queue and put on its work queue.
    Released,
    /// Ended without running (refused, expired, cancelled, unknown profile).
    Ended,
    /// Already seen: nothing done.
    Duplicate,
    /// Published by an AMQP user that may not submit for its tenant: dead-lettered, no result.
    Forbidden,
}

/// Admits submissions and dispatches jobs.
pub struct Admission {
    bus: Arc<dyn Bus>,
    table: JobTable,
    cfg: SchedulerConfig,
    declared: Mutex<HashSet<String>>,
    barrier: Arc<FeedBarrier>,
}

impl Admission {
    /// Admission over a bus and a job table; `barrier` waits for this replica's event feed.
    pub fn new(bus: Arc<dyn Bus>, table: JobTable, cfg: SchedulerConfig, barrier: Arc<FeedBarrier>) -> Self {
        Admission { bus, table, cfg, declared: Mutex::new(HashSet::new()), barrier }
    }

    /// The job table admission records into.
    pub fn table(&self) -> &JobTable {
        &self.table
    }

    /// Waits until this replica has applied every event published before now (see
    /// [`FeedBarrier`]); called before handling a redelivered submission or held job.
    pub async fn catch_up(&self) -> Result<(), bus::BusError> {
        self.barrier.sync().await
    }

    /// Admits one delivery from the submit queue and settles it; returns what admission did
    /// (`None`: the broker did not confirm it, so the submission was requeued).
    pub async fn admit(&self, delivery: Delivery) -> Option<Outcome> {
        let span = info_span!("admit", message_id = %delivery.message.id);
        self.admit_in(delivery).instrument(span).await
    }

    async fn admit_in(&self, delivery: Delivery) -> Option<Outcome> {
        // A redelivered submission was in the hands of a replica that died or lost its
        // connection: apply whatever it committed before deciding.
        if delivery.redelivered
            && let Err(e) = self.catch_up().await
        {
            settle(delivery, Err(e)).await;
            return None;
        }
        let ctx = ValidationContext { allow_local_media: self.cfg.allow_local_media };
        let parsed = Job::from_json(&delivery.message.body, &ctx)
            .and_then(|job| job.check_memory(self.cfg.job_memory_bytes).map(|_| job));
        let refusal = match (&parsed, &self.cfg.tenant_binding) {
            (Ok(job), Some(binding)) => binding.refuses(delivery.message.user_id.as_deref(), job.tenant()),
            _ => None,
        };
        if let Some(why) = refusal {
            warn!(job_id = %delivery.message.id, "not admitted: {why}");
            let mut dead = delivery.message.clone();
            // Republished by the scheduler's own user: RabbitMQ refuses another user's user_id.
            dead.user_id = None;
            dead.headers.insert(topology::REASON_HEADER.into(), why);
            let out = delivery.ack_with(vec![(String::new(), topology::DEAD_LETTER_QUEUE.into(), dead)]).await;
            return out.ok().map(|_| Outcome::Forbidden);
        }
        let outcome = match parsed {
            Ok(job) => self.route(job).await,
            Err(e) => {
                let (job_id, tenant) = ids_of_invalid(&delivery.message);
                // Logged without the document's values: a parse error can quote them, and
                // instructions and history must never reach the logs (the result has it all).
                warn!(%job_id, code = %e.code(), "refused: {}", loggable(&e));
                match self.table.admit(job_id.clone(), tenant.clone(), None).await {
                    Admit::New => {
                        let r = JobResult::failure(job_id, tenant, None, JobStatus::Failed, e.code(), e.to_string());
                        self.publish_finished(r).await.map(|_| Outcome::Ended)
                    }
                    Admit::Duplicate(_) => Ok(Outcome::Duplicate),
                }
            }
        };
        let done = outcome.as_ref().ok().copied();
        settle(delivery, outcome).await;
        done
    }

    async fn route(&self, job: Job) -> Result<Outcome, bus::BusError> {
        match self.table.admit(job.job_id().clone(), job.tenant().clone(), Some(job.kind())).await {
            Admit::Duplicate(state) => {
                info!(job_id = %job.job_id(), state = state.as_str(), "duplicate submission ignored");
                Ok(Outcome::Duplicate)
            }
            Admit::New => self.dispatch(&job, false).await,
        }
    }

    /// Dispatches an admitted job (from the submit queue, or from the held queue when `held`):
    /// ends it if it was cancelled, expired or names an unknown profile, holds it if its tenant
    /// is at its limit, else publishes its task.
    pub async fn dispatch(&self, job: &Job, held: bool) -> Result<Outcome, bus::BusError> {
        let (job_id, tenant) = (job.job_id().clone(), job.tenant().clone());
        let end = |status, code, msg: &str| {
            JobResult::failure(job_id.clone(), tenant.clone(), Some(job.kind()), status, code, msg)
        };
        if self.table.get(&job_id).await.is_some_and(|r| r.cancel_requested) {
            let r = end(JobStatus::Cancelled, ErrorCode::Cancelled, "cancelled before dispatch");
            return self.publish_finished(r).await.map(|_| Outcome::Ended);
        }
        if job.deadline().is_some_and(|d| d < Utc::now()) {
            let r = end(JobStatus::Expired, ErrorCode::DeadlineExceeded, "deadline passed before dispatch");
            return self.publish_finished(r).await.map(|_| Outcome::Ended);
        }
        if !self.profile_known(job.profile()).await {
            let msg = format!("no worker serves profile `{}` (known: {})", job.profile(), self.cfg.profiles.join(", "));
            let r = end(JobStatus::Failed, ErrorCode::UnknownProfile, &msg);
            return self.publish_finished(r).await.map(|_| Outcome::Ended);
        }
        // A tenant with jobs waiting on the held queue gets new ones held behind them, so its
        // jobs start in order, and only the replica consuming the held queue (a single active
        // consumer) dispatches for a tenant at its limit: two replicas cannot both fill the
        // room one finished job left.
        let behind_held = !held && self.table.held_count(&tenant).await > 0;
        if behind_held || !self.table.reserve(&job_id, self.cfg.tenant_max_in_flight).await {
            if held {
                return Ok(Outcome::Held);
            }
            // The held copy and its `queued` event go together, so a replica taking over sees it.
            let msg = Message::new(job_id.to_string(), job.to_json()).with_priority(job.priority());
            let ev = Event::now(
                job_id.clone(),
                tenant.clone(),
                &self.cfg.id,
                EventBody::State {
                    state: JobState::Queued,
                    detail: Some(format!("{HELD_DETAIL} tenant at its in-flight limit")),
                },
            );
            self.bus
                .publish_atomic(vec![(String::new(), topology::HELD_QUEUE.into(), msg), event_message(&ev)])
                .await?;
            self.table.held(&job_id).await;
            info!(%job_id, %tenant, "tenant at its in-flight limit; job held");
            return Ok(Outcome::Held);
        }
        let queue = self.task_queue(job).await?;
        let body = serde_json::to_vec(&Task::first(job.clone())).expect("tasks serialise");
        let task = Message::new(job_id.to_string(), body).with_priority(job.priority());
        let ev = Event::now(
            job_id.clone(),
            tenant,
            &self.cfg.id,
            EventBody::State { state: JobState::Dispatched, detail: Some(queue.clone()) },
        );
        // The task and its `dispatched` event commit together: a replica that dies in between
        // leaves both or neither, and its successor's catch-up sees the event.
        self.bus.publish_atomic(vec![(String::new(), queue.clone(), task), event_message(&ev)]).await?;
        info!(%job_id, %queue, priority = job.priority(), "dispatched");
        Ok(Outcome::Dispatched)
    }

    async fn profile_known(&self, profile: &str) -> bool {
        self.cfg.profiles.iter().any(|p| p == profile)
            || self.table.workers().await.iter().any(|w| w.profiles.iter().any(|p| p == profile))
    }

    async fn task_queue(&self, job: &Job) -> Result<String, bus::BusError> {
        let layout = self.cfg.layout;
        let name = layout.task_queue(job.kind(), job.profile(), job.priority());
        if self.declared.lock().expect("declared lock").contains(&name) {
            return Ok(name);
        }
        let names = layout.declare_task_queues(self.bus.as_ref(), job.kind(), job.profile()).await?;
        self.declared.lock().expect("declared lock").extend(names);
        Ok(name)
    }

    /// Ends a job at admission: its `finished` event, and its result as a commit record (marked
    /// announced) that a worker's committer writes as `result.json`, in one transaction; so a
    /// refused job has a manifest in the store like every other.
    async fn publish_finished(&self, result: JobResult) -> Result<(), bus::BusError> {
        let body = serde_json::to_vec(&result).expect("results serialise");
        let mut record = Message::new(result.job_id.to_string(), body);
        record.headers.insert(topology::ANNOUNCED_HEADER.into(), "1".into());
        let ev = Event::now(
            result.job_id.clone(),
            result.tenant.clone(),
            &self.cfg.id,
            EventBody::Finished { result: Box::new(result) },
        );
        self.bus.publish_atomic(vec![event_message(&ev), (String::new(), topology::COMMITS_QUEUE.into(), record)]).await
    }
}

/// An event as an (exchange, routing key, message) for [`bus::Bus::publish_atomic`].
fn event_message(ev: &Event) -> (String, String, Message) {
    let body = serde_json::to_vec(ev).expect("events serialise");
    (topology::EVENTS_EXCHANGE.into(), ev.routing_key(), Message::new(ev.job_id.to_string(), body))
}

/// Acks what was handled; requeues what the broker did not confirm, for another try.
pub async fn settle(delivery: Delivery, outcome: Result<Outcome, bus::BusError>) {
    let settled = match outcome {
        Ok(_) => delivery.ack().await,
        Err(e) => {
            warn!(error = %e, "not confirmed by the broker; requeueing");
            delivery.nack(true).await
        }
    };
    if let Err(e) = settled {
        warn!(error = %e, "settling a delivery failed");
    }
}

/// The best ids to report a refused document under: its own `job_id`/`tenant` when they are
/// valid, else the message id, else a digest of the bytes.
fn ids_of_invalid(message: &Message) -> (JobId, TenantId) {
    let doc: Option<serde_json::Value> = if message.body.len() <= protocol::limits::MAX_JOB_BYTES {
        serde_json::from_slice(&message.body).ok()
    } else {
        None
    };
    let field = |name: &str| doc.as_ref().and_then(|d| d.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
    let job_id = field("job_id")
        .map(JobId)
        .filter(|id| id.check("job_id").is_ok())
        .or_else(|| Some(JobId(message.id.clone())).filter(|id| id.check("job_id").is_ok()))
        .unwrap_or_else(|| JobId(format!("invalid-{}", fnv1a(&message.body))));
    let tenant = field("tenant")
        .map(TenantId)
        .filter(|t| t.check("tenant").is_ok())
        .unwrap_or_else(|| TenantId("unknown".into()));
    (job_id, tenant)
}

/// FNV-1a of the bytes and their length: enough to tell refused anonymous documents apart.
fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

/// A refusal's reason as it may be logged: where the document is wrong, never what it says.
fn loggable(e: &protocol::ProtocolError) -> String {
    match e {
        protocol::ProtocolError::Invalid(v) => format!("invalid document at {}", v.path),
        protocol::ProtocolError::Syntax(_) => "not a JSON document".into(),
        other => other.to_string(),
    }
}
