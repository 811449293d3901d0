//! One task from delivery to acknowledgement. The order is what makes jobs impossible to lose
//! or to run twice: a committed `result.json` means done (publish it again, ack); a redelivered
//! message means the previous attempt died (count it, retry later); cancelled or expired jobs
//! end without running; otherwise run, upload every output, write `result.json` last, publish
//! `finished`, and only then ack. Transient failures go up the retry ladder (a delayed copy of
//! the task with the next attempt number, then ack); after `max_attempts` the task goes to the
//! dead-letter queue with its reason and the job ends `retries_exhausted`.

use std::sync::Arc;
use std::time::Instant;

use bus::{Acker, Bus, Delivery, Message, topology};
use chrono::Utc;
use protocol::{
    ErrorCode, Event, EventBody, Job, JobId, JobResult, JobState, JobStatus, MediaLocation, Output, Stage, StageTiming,
    Task, TenantId, ValidationContext,
};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use super::Worker;
use crate::pipeline::edit::HistoryMedia;
use crate::pipeline::{JobContext, PipelineError, PipelineOutput, ProgressSink};
use crate::provenance::Provenance;
use crate::safety::SafetyCheck;
use crate::storage::{ObjectMeta, RESULT_FILE, StorageError, check_input_access, check_local_input_access, output_key};
use crate::watermark::{Generator, Payload, Watermarker};

/// How one attempt ended, before its result is committed.
enum Attempt {
    /// Succeeded, failed for good, was cancelled or expired: commit this result.
    Done(JobResult),
    /// Failed in a way another attempt may not: retry with this reason.
    Retry(String),
    /// Interrupted by shutdown: requeue as is.
    Requeue(String),
}

impl Worker {
    /// Handles one delivery end to end, settling it exactly once.
    pub(crate) async fn handle(&self, delivery: Delivery) {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let (message, redelivered, acker) = delivery.into_parts();
        let task = match parse_task(&message, self.cfg.allow_local_media) {
            Ok(task) => task,
            Err((job_id, tenant, code, msg)) => {
                // The reason goes to the result, not the log: it can quote the document.
                warn!(message_id = %message.id, %code, "refusing task");
                let result = JobResult::failure(job_id, tenant, None, JobStatus::Failed, code, msg);
                self.metrics.observe_result("unknown", result.status, started.elapsed(), &[]);
                return self.finish(result, acker).await;
            }
        };
        let waited = (Utc::now() - task.dispatched_at).to_std().unwrap_or_default();
        self.metrics.queue_wait.with_label_values(&[task.job.kind().as_str()]).observe(waited.as_secs_f64());
        let job = task.job.clone();
        let span = info_span!("task", job_id = %job.job_id(), tenant = %job.tenant(), kind = job.kind().as_str(), attempt = task.attempt);
        self.attempt(task, acker, redelivered, started).instrument(span).await
    }

    /// [`Worker::handle`] once the task is parsed.
    async fn attempt(&self, task: Task, acker: Box<dyn Acker>, redelivered: bool, started: Instant) {
        let job = task.job.clone();
        match self.existing_result(&job).await {
            Ok(Some(result)) => {
                info!(redelivered, "result.json exists; not running again");
                return self.finish(result, acker).await;
            }
            Ok(None) => {}
            Err(e) => return requeue(acker, &e.to_string()).await,
        }
        if redelivered {
            let why = format!("attempt {} was interrupted (the worker running it was lost)", task.attempt);
            return self.retry(task, acker, why, started).await;
        }
        let attempt = if job.deadline().is_some_and(|d| d < Utc::now()) {
            let r = self.failure(
                &job,
                JobStatus::Expired,
                ErrorCode::DeadlineExceeded,
                "deadline passed before the job started",
            );
            Attempt::Done(r)
        } else {
            match self.registry.start(job.job_id()) {
                None => Attempt::Done(self.failure(
                    &job,
                    JobStatus::Cancelled,
                    ErrorCode::Cancelled,
                    "cancelled before it started",
                )),
                Some(flags) => {
                    self.publish_state(&job, JobState::Running, None).await;
                    let out = self.execute(&task, flags).await;
                    self.registry.finish(job.job_id());
                    match out {
                        Ok(result) => Attempt::Done(result),
                        Err(PipelineError::Interrupted) => Attempt::Requeue("interrupted by shutdown".into()),
                        Err(e) if e.is_transient() => Attempt::Retry(e.to_string()),
                        Err(e) => {
                            let status = match e {
                                PipelineError::Cancelled => JobStatus::Cancelled,
                                PipelineError::DeadlineExceeded => JobStatus::Expired,
                                _ => JobStatus::Failed,
                            };
                            warn!(code = %e.code(), "job failed: {e}");
                            Attempt::Done(self.failure(&job, status, e.code(), e.to_string()))
                        }
                    }
                }
            }
        };
        match attempt {
            Attempt::Done(mut r) => {
                r.attempt = task.attempt;
                self.commit(r, acker, started).await
            }
            Attempt::Retry(why) => self.retry(task, acker, why, started).await,
            Attempt::Requeue(why) => self.put_back(task, acker, &why).await,
        }
    }

    async fn existing_result(&self, job: &Job) -> Result<Option<JobResult>, StorageError> {
        let key = output_key(job.tenant(), job.job_id(), RESULT_FILE)?;
        Ok(self.store.get(&key).await?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Sends the task up the retry ladder, or to the dead-letter queue once attempts run out.
    async fn retry(&self, mut task: Task, acker: Box<dyn Acker>, why: String, started: Instant) {
        let job = task.job.clone();
        if task.attempt >= self.cfg.max_attempts || self.rungs.is_empty() {
            warn!(attempts = task.attempt, "attempts exhausted; dead-lettering: {why}");
            let mut msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"));
            msg.headers.insert(topology::REASON_HEADER.into(), why.clone());
            msg.headers.insert("x-reelforge-attempts".into(), task.attempt.to_string());
            if let Err(e) = self.bus.publish("", topology::DEAD_LETTER_QUEUE, msg).await {
                return requeue(acker, &format!("dead-letter publish failed: {e}")).await;
            }
            self.metrics.dead_lettered.with_label_values(&[job.kind().as_str()]).inc();
            let message = format!("failed {} attempts; last: {why}", task.attempt);
            let mut r = self.failure(&job, JobStatus::Failed, ErrorCode::RetriesExhausted, message);
            r.attempt = task.attempt;
            return self.commit(r, acker, started).await;
        }
        let rung = &self.rungs[(task.attempt as usize).saturating_sub(1).min(self.rungs.len() - 1)];
        task.attempt += 1;
        task.dispatched_at = Utc::now();
        let queue = topology::task_queue(job.kind(), job.profile());
        let msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"))
            .with_priority(job.priority());
        if let Err(e) = self.bus.publish(rung, &queue, msg).await {
            return requeue(acker, &format!("retry publish failed: {e}")).await;
        }
        self.metrics.retries.with_label_values(&[job.kind().as_str()]).inc();
        warn!(next_attempt = task.attempt, %rung, "retrying: {why}");
        self.publish_state(&job, JobState::Retrying, Some(why)).await;
        if let Err(e) = acker.ack().await {
            warn!("ack after retry publish failed ({e}); a duplicate attempt will find result.json");
        }
    }

    /// Puts an interrupted task back on its work queue as it was (same attempt: an interruption
    /// by shutdown is not the job's failure), then acks.
    async fn put_back(&self, task: Task, acker: Box<dyn Acker>, why: &str) {
        let job = &task.job;
        let queue = topology::task_queue(job.kind(), job.profile());
        let msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"))
            .with_priority(job.priority());
        match self.bus.publish("", &queue, msg).await {
            Ok(()) => {
                info!("put back on {queue}: {why}");
                self.metrics.put_back.with_label_values(&[job.kind().as_str()]).inc();
                if let Err(e) = acker.ack().await {
                    warn!("ack after put-back failed ({e}); a duplicate will find result.json");
                }
            }
            Err(e) => requeue(acker, &format!("{why}; put-back failed: {e}")).await,
        }
    }

    /// Runs the pipeline and uploads its artifacts; the result is not yet committed.
    async fn execute(&self, task: &Task, flags: super::control::TaskFlags) -> Result<JobResult, PipelineError> {
        let job = task.job.clone();
        if self.cfg.noop_pipeline {
            let mut r =
                JobResult::new(job.job_id().clone(), job.tenant().clone(), Some(job.kind()), JobStatus::Succeeded);
            r.worker = Some(self.cfg.id.clone());
            return Ok(r);
        }
        std::fs::create_dir_all(&self.cfg.scratch_dir)?;
        let scratch = tempfile::Builder::new().prefix("reelforge-").tempdir_in(&self.cfg.scratch_dir)?;
        let progress = Arc::new(EventProgress::new(self.bus.clone(), &job, &self.cfg.id));
        let mut ctx = JobContext::new(scratch.path().to_owned(), self.cfg.limits.clone(), progress, flags.cancel);
        ctx.interrupt = flags.interrupt;
        ctx.deadline = job.deadline();
        let generator = match &job {
            Job::Edit(_) => Generator::EDITOR,
            Job::Create(_) if self.create.mcvd.is_some() => Generator::CREATOR_MCVD,
            Job::Create(_) => Generator::CREATOR_BASELINE,
        };
        let payload = Payload::for_job(&self.cfg.watermark_key, &job.tenant().0, &job.job_id().0, generator);
        let provenance = Provenance::new(generator, payload);
        ctx.watermark = Some(Arc::new(Watermarker::new(&self.cfg.watermark_key, payload)));
        ctx.provenance = provenance.mp4_tags();
        let t0 = std::time::Instant::now();
        let mut fetched = Vec::new();
        let mut history = Vec::new();
        for (path, uri, history_index) in inputs(&job) {
            let loc =
                uri.parse(&path, self.cfg.allow_local_media).map_err(|e| PipelineError::BadGuidance(e.to_string()))?;
            match (&loc, self.store.local_root()) {
                (MediaLocation::Local(p), Some(root)) => check_local_input_access(job.tenant(), p, root)?,
                (MediaLocation::Local(_), None) => {}
                _ => check_input_access(job.tenant(), &loc, &self.cfg.shared_input_buckets)?,
            }
            let file = self.store.fetch(&loc, scratch.path(), self.cfg.limits.max_file_bytes).await?;
            match history_index {
                Some(index) => history.push(HistoryMedia { index, path: file }),
                None => fetched.push(file),
            }
        }
        let download = StageTiming { stage: Stage::Download, ms: t0.elapsed().as_secs_f64() * 1e3 };
        let (edit, create, safety) = (self.edit.clone(), self.create.clone(), self.safety.clone());
        let credentials = self.credentials.clone();
        let (output, ctx) = tokio::task::spawn_blocking(move || {
            let out = match &job {
                Job::Edit(e) => edit.run(e, &fetched[0], &history, &mut ctx),
                Job::Create(c) => create.run(c, fetched.first().map(|p| p.as_path()), &mut ctx),
            };
            let out = out.and_then(|o| match &safety {
                Some(filter) => SafetyCheck::run(filter, o, &mut ctx),
                None => Ok((o, Vec::new())),
            });
            let out = out.and_then(|(o, withheld)| {
                if let Some(c) = &credentials {
                    ctx.stage(Stage::Check, |_| {
                        for a in &o.artifacts {
                            // Wholly synthetic: the creator's outputs and generated thumbnails.
                            let generated = matches!(job, Job::Create(_))
                                || a.name == crate::pipeline::thumbnail::GENERATED_THUMBNAIL;
                            c.attach(a, &generator.name(), generated, Some(&payload.hex()))
                                .map_err(|e| PipelineError::Provenance(e.to_string()))?;
                        }
                        Ok(())
                    })?;
                }
                Ok((o, withheld))
            });
            (out, ctx)
        })
        .await
        .map_err(|e| PipelineError::Io(std::io::Error::other(format!("pipeline thread panicked: {e}"))))?;
        let (PipelineOutput { artifacts, models }, withheld) = output?;
        let t1 = std::time::Instant::now();
        let job = &task.job;
        let mut outputs = Vec::with_capacity(artifacts.len());
        for (i, a) in artifacts.iter().enumerate() {
            ctx.check()?;
            let key = output_key(job.tenant(), job.job_id(), &a.name)?;
            let mut meta = ObjectMeta { content_type: a.content_type.into(), ..Default::default() };
            meta.entries.extend(provenance.object_metadata());
            meta.entries.insert("job-id".into(), job.job_id().to_string());
            meta.entries.insert("models".into(), models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(","));
            let stored = self.store.put_file(&key, &a.path, &meta).await?;
            ctx.progress.progress(Stage::Upload, i as u64 + 1, artifacts.len() as u64);
            outputs.push(Output {
                kind: a.kind,
                uri: stored.uri,
                content_type: a.content_type.into(),
                bytes: stored.bytes,
                sha256: stored.sha256,
                start_s: a.start_s,
                end_s: a.end_s,
                duration_s: a.duration_s,
                score: a.score,
                watermark: Some(payload.hex()),
            });
        }
        let mut timings = vec![download];
        timings.extend_from_slice(ctx.timings());
        timings.push(StageTiming { stage: Stage::Upload, ms: t1.elapsed().as_secs_f64() * 1e3 });
        Ok(JobResult {
            v: protocol::WIRE_VERSION,
            job_id: job.job_id().clone(),
            tenant: job.tenant().clone(),
            kind: Some(job.kind()),
            status: JobStatus::Succeeded,
            outputs,
            withheld,
            timings,
            models,
            error: None,
            attempt: task.attempt,
            worker: Some(self.cfg.id.clone()),
            finished_at: Utc::now(),
        })
    }

    fn failure(&self, job: &Job, status: JobStatus, code: ErrorCode, msg: impl Into<String>) -> JobResult {
        let mut r = JobResult::failure(job.job_id().clone(), job.tenant().clone(), Some(job.kind()), status, code, msg);
        r.worker = Some(self.cfg.id.clone());
        r
    }

    /// Writes `result.json` (the commit marker), publishes `finished`, then acks. A transient
    /// storage failure requeues the message instead: nothing is acked before it is durable.
    /// A stored result is counted in the metrics, with the time since `started`.
    async fn commit(&self, mut result: JobResult, acker: Box<dyn Acker>, started: Instant) {
        result.worker.get_or_insert_with(|| self.cfg.id.clone());
        let bytes = serde_json::to_vec_pretty(&result).expect("results serialise");
        let meta = ObjectMeta { content_type: "application/json".into(), ..Default::default() };
        let stored = match output_key(&result.tenant, &result.job_id, RESULT_FILE) {
            Ok(key) => self.store.put_bytes(&key, &bytes, &meta).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if !matches!(&stored, Err(e) if e.is_transient()) {
            let kind = result.kind.map_or("unknown", |k| k.as_str());
            self.metrics.observe_result(kind, result.status, started.elapsed(), &result.timings);
        }
        match stored {
            Ok(()) => self.finish(result, acker).await,
            Err(e) if e.is_transient() => requeue(acker, &e.to_string()).await,
            Err(e) => {
                warn!("result not stored ({e}); publishing it without a manifest");
                self.finish(result, acker).await
            }
        }
    }

    /// Publishes the `finished` event (confirmed) and acks.
    async fn finish(&self, result: JobResult, acker: Box<dyn Acker>) {
        let status = result.status;
        let event = Event::now(
            result.job_id.clone(),
            result.tenant.clone(),
            &self.cfg.id,
            EventBody::Finished { result: Box::new(result) },
        );
        if let Err(e) = publish_event(self.bus.as_ref(), &event).await {
            return requeue(acker, &format!("finished event not confirmed: {e}")).await;
        }
        info!(status = ?status, "job finished");
        if let Err(e) = acker.ack().await {
            warn!("ack failed ({e}); the broker will redeliver and the manifest stops a second run");
        }
    }

    async fn publish_state(&self, job: &Job, state: JobState, detail: Option<String>) {
        let event =
            Event::now(job.job_id().clone(), job.tenant().clone(), &self.cfg.id, EventBody::State { state, detail });
        if let Err(e) = publish_event(self.bus.as_ref(), &event).await {
            warn!("state event not published: {e}");
        }
    }
}

async fn requeue(acker: Box<dyn Acker>, why: &str) {
    warn!("requeueing: {why}");
    if let Err(e) = acker.nack(true).await {
        warn!("nack failed: {e}");
    }
}

/// The media a job reads, with the field each comes from.
/// The media a job reads: (JSON path, URI, index in `guidance.history` for history media).
fn inputs(job: &Job) -> Vec<(String, &protocol::MediaUri, Option<usize>)> {
    let mut out: Vec<(String, &protocol::MediaUri, Option<usize>)> = match job {
        Job::Edit(e) => vec![("source".into(), &e.source, None)],
        Job::Create(c) => c.conditioning.iter().map(|c| ("conditioning.source".into(), &c.source, None)).collect(),
    };
    if let Job::Edit(_) = job {
        for (i, item) in job.guidance().history.iter().enumerate() {
            if let Some(m) = &item.media {
                out.push((format!("guidance.history[{i}].media"), m, Some(i)));
            }
        }
    }
    out
}

type TaskRefusal = (JobId, TenantId, ErrorCode, String);

fn parse_task(message: &Message, allow_local_media: bool) -> Result<Task, TaskRefusal> {
    let fallback_id = JobId(sanitise_id(&message.id));
    let unknown = TenantId("unknown".into());
    if message.body.len() > protocol::limits::MAX_JOB_BYTES + 4096 {
        let msg = format!("task is {} bytes, over the limit", message.body.len());
        return Err((fallback_id, unknown, ErrorCode::JobTooLarge, msg));
    }
    let task: Task = serde_json::from_slice(&message.body)
        .map_err(|e| (fallback_id.clone(), unknown.clone(), ErrorCode::InvalidJob, format!("malformed task: {e}")))?;
    if task.v != protocol::WIRE_VERSION {
        return Err((fallback_id, unknown, ErrorCode::UnsupportedVersion, format!("task version {}", task.v)));
    }
    let ctx = ValidationContext { allow_local_media };
    task.job.validate(&ctx).map_err(|e| {
        (task.job.job_id().clone(), task.job.tenant().clone(), ErrorCode::InvalidJob, format!("invalid job at {e}"))
    })?;
    Ok(task)
}

/// A job id usable in events for a message whose body could not be read.
pub fn sanitise_id(raw: &str) -> String {
    let s: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._:-".contains(*c))
        .take(protocol::limits::MAX_JOB_ID_LEN)
        .collect::<String>()
        .replace("..", "_");
    if s.is_empty() { "unknown".into() } else { s }
}

/// Publishes an event on the events exchange, confirmed.
pub async fn publish_event(bus: &dyn Bus, event: &Event) -> Result<(), bus::BusError> {
    let body = serde_json::to_vec(event).expect("events serialise");
    bus.publish(topology::EVENTS_EXCHANGE, &event.routing_key(), Message::new(event.job_id.to_string(), body)).await
}

/// Turns stage progress into events, published in order by a background task, at most one
/// progress event per stage and 100 ms (the final one of a stage always goes out).
struct EventProgress {
    tx: mpsc::UnboundedSender<Event>,
    job_id: JobId,
    tenant: TenantId,
    source: String,
    last: std::sync::Mutex<Option<(Stage, std::time::Instant)>>,
}

impl EventProgress {
    fn new(bus: Arc<dyn Bus>, job: &Job, source: &str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let _ = publish_event(bus.as_ref(), &ev).await;
            }
        });
        EventProgress {
            tx,
            job_id: job.job_id().clone(),
            tenant: job.tenant().clone(),
            source: source.into(),
            last: Default::default(),
        }
    }
}

impl ProgressSink for EventProgress {
    fn progress(&self, stage: Stage, done: u64, total: u64) {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().expect("progress lock");
        let due = match *last {
            Some((s, t)) if s == stage => now.duration_since(t).as_millis() >= 100 || (total > 0 && done >= total),
            _ => true,
        };
        if due {
            *last = Some((stage, now));
            let ev = Event::now(
                self.job_id.clone(),
                self.tenant.clone(),
                &self.source,
                EventBody::Progress { stage, done, total },
            );
            let _ = self.tx.send(ev);
        }
    }
}

/// Counts a task in `reelforge_tasks_in_flight` while it lives.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
