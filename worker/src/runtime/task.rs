//! One task from delivery to acknowledgement, run at most once in effect. The rules, and the
//! code below that enforces them:
//! - **One live copy.** Every way a task leaves a worker (committed, sent up the retry ladder,
//!   dead-lettered, put back at shutdown) publishes its successor and acks the delivery in one
//!   broker transaction on the delivery's own channel ([`bus::Acker::ack_with`]), so the broker
//!   holds exactly one copy of a task at any time, queued or in one worker's hands.
//! - **Fenced.** A worker whose delivery is taken from it (its channel or connection closed, so
//!   the broker requeued the task for someone else) can no longer ack it, so nothing it
//!   publishes in that transaction lands: it cannot commit. It notices within
//!   [`LIVENESS_CHECK`], interrupts the pipeline, deletes what it uploaded and lets go.
//! - **Committed once.** An attempt commits by publishing its result to
//!   [`topology::COMMITS_QUEUE`] in that same transaction; the committer
//!   ([`super::commit`]) then writes `result.json` and publishes `finished`. Outputs go under
//!   a folder of their own per execution (`{tenant}/{job_id}/a{attempt}-{nonce}/`), so a
//!   stale execution can never overwrite the files a committed result points to.
//! - **Only started attempts count.** A worker writes `attempt-{n}.json` before it runs
//!   attempt `n`. A redelivered task whose marker is absent was only prefetched by a worker
//!   that died: it runs as the same attempt. One whose marker exists was interrupted: it goes up
//!   the retry ladder as the next attempt.
//! - **Nothing loops.** A committed `result.json` means done (publish it again, ack). Every
//!   failure ends in the ladder (a delayed copy with the next attempt number), the dead-letter
//!   queue (after `max_attempts`, with the reason, and a `retries_exhausted` result), or a
//!   result; the worker never requeues a task itself.
//!
//! Cancelled and expired jobs end without running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus::{Acker, Bus, Delivery, Message, Outgoing, topology};
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

/// How often a running task checks that its delivery is still its own.
pub const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// What a job's outputs are marked with: who made them, the watermark payload, provenance.
struct Marks {
    generator: Generator,
    payload: Payload,
    provenance: Provenance,
}

/// A job's fetched inputs, in scratch.
#[derive(Default)]
struct Inputs {
    /// The source (edit) or conditioning (create) media, in the job's order.
    media: Vec<std::path::PathBuf>,
    /// The guidance's history media (edit).
    history: Vec<HistoryMedia>,
}

/// How one attempt ended, before its result is committed.
enum Attempt {
    /// Succeeded, failed for good, was cancelled or expired: commit this result.
    Done(JobResult),
    /// Failed in a way another attempt may not: retry with this reason.
    Retry(String),
    /// Interrupted by shutdown: put back as is.
    Requeue(String),
    /// The delivery was taken from this worker mid-run: let go, commit nothing.
    Lost,
}

/// The name of the marker written before attempt `n` runs.
pub fn attempt_marker(n: u32) -> String {
    format!("attempt-{n}.json")
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
                return self.commit(result, acker, started).await;
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
                return self.republish(result, acker).await;
            }
            Ok(None) => {}
            Err(e) if e.is_transient() => {
                return self.retry(task, acker, format!("reading result.json: {e}"), started).await;
            }
            Err(e) => {
                let r = self.failure(&job, JobStatus::Failed, ErrorCode::InvalidJob, e.to_string());
                return self.commit(r, acker, started).await;
            }
        }
        if redelivered {
            match self.store.get(&marker_key(&job, task.attempt)).await {
                Ok(Some(_)) => {
                    let why = format!("attempt {} was interrupted (the worker running it was lost)", task.attempt);
                    return self.retry(task, acker, why, started).await;
                }
                Ok(None) => {
                    info!("redelivered before it started (prefetched by a worker that went away); same attempt")
                }
                Err(e) => return self.retry(task, acker, format!("reading the attempt marker: {e}"), started).await,
            }
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
                    let out = self.run_fenced(&task, flags, acker.as_ref()).await;
                    self.registry.finish(job.job_id());
                    out
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
            Attempt::Lost => {
                warn!("delivery lost mid-run (connection or channel closed); letting go, another attempt runs it");
            }
        }
    }

    /// Marks the attempt started, runs it while watching that the delivery is still this
    /// worker's, and says how it ended. Outputs of an attempt that lost its delivery are deleted.
    async fn run_fenced(&self, task: &Task, flags: super::control::TaskFlags, acker: &dyn Acker) -> Attempt {
        let job = &task.job;
        let exec = format!("a{}-{}", task.attempt, nonce(&self.cfg.id));
        let marker = serde_json::json!({ "worker": self.cfg.id, "exec": exec, "started_at": Utc::now() });
        let meta = ObjectMeta { content_type: "application/json".into(), ..Default::default() };
        if let Err(e) = self.store.put_bytes(&marker_key(job, task.attempt), marker.to_string().as_bytes(), &meta).await
        {
            return if e.is_transient() {
                Attempt::Retry(format!("writing the attempt marker: {e}"))
            } else {
                Attempt::Done(self.failure(job, JobStatus::Failed, ErrorCode::InvalidJob, e.to_string()))
            };
        }
        if !acker.is_held() {
            return Attempt::Lost;
        }
        self.publish_state(job, JobState::Running, None).await;
        let lost = AtomicBool::new(false);
        let interrupt = flags.interrupt.clone();
        let mut inputs_seen = Vec::new();
        let out = {
            let run = self.execute(task, flags, &exec, &mut inputs_seen);
            tokio::pin!(run);
            let mut tick = tokio::time::interval(LIVENESS_CHECK);
            loop {
                tokio::select! {
                    out = &mut run => break out,
                    _ = tick.tick() => if !acker.is_held() && !lost.swap(true, Ordering::Relaxed) {
                        warn!("delivery lost mid-run; interrupting the attempt");
                        interrupt.store(true, Ordering::Relaxed);
                    },
                }
            }
        };
        if lost.load(Ordering::Relaxed) || !acker.is_held() {
            if let Ok(r) = &out {
                self.discard_outputs(r).await;
            }
            return Attempt::Lost;
        }
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
                let message = redact_paths(&e.to_string(), &inputs_seen, &self.cfg.scratch_dir);
                Attempt::Done(self.failure(job, status, e.code(), message))
            }
        }
    }

    async fn existing_result(&self, job: &Job) -> Result<Option<JobResult>, StorageError> {
        let key = output_key(job.tenant(), job.job_id(), RESULT_FILE)?;
        Ok(self.store.get(&key).await?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Deletes the outputs an uncommitted result points to (best effort: a stale attempt's).
    async fn discard_outputs(&self, result: &JobResult) {
        for out in &result.outputs {
            let Some(key) = self.store.key_of(&out.uri) else { continue };
            if let Err(e) = self.store.delete(&key).await {
                warn!(uri = %out.uri, "could not delete an uncommitted output: {e}");
            }
        }
    }

    /// Sends the task up the retry ladder, or to the dead-letter queue once attempts run out.
    async fn retry(&self, mut task: Task, acker: Box<dyn Acker>, why: String, started: Instant) {
        let job = task.job.clone();
        if task.attempt >= self.cfg.max_attempts || self.rungs.is_empty() {
            warn!(attempts = task.attempt, "attempts exhausted; dead-lettering: {why}");
            let mut msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"));
            msg.headers.insert(topology::REASON_HEADER.into(), why.clone());
            msg.headers.insert(topology::ATTEMPTS_HEADER.into(), task.attempt.to_string());
            let message = format!("failed {} attempts; last: {why}", task.attempt);
            let mut r = self.failure(&job, JobStatus::Failed, ErrorCode::RetriesExhausted, message);
            r.attempt = task.attempt;
            let dead = (String::new(), topology::DEAD_LETTER_QUEUE.to_owned(), msg);
            if self.commit_with(r, acker, started, vec![dead]).await {
                self.metrics.dead_lettered.with_label_values(&[job.kind().as_str()]).inc();
            }
            return;
        }
        let rung = &self.rungs[(task.attempt as usize).saturating_sub(1).min(self.rungs.len() - 1)];
        task.attempt += 1;
        task.dispatched_at = Utc::now();
        let queue = self.cfg.layout.task_queue(job.kind(), job.profile(), job.priority());
        let msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"))
            .with_priority(job.priority());
        let event = self.state_event(&job, JobState::Retrying, Some(why.clone()));
        match acker.ack_with(vec![(rung.clone(), queue, msg), event_message(&event)]).await {
            Ok(()) => {
                self.metrics.retries.with_label_values(&[job.kind().as_str()]).inc();
                warn!(next_attempt = task.attempt, %rung, "retrying: {why}");
            }
            Err(e) => warn!("retry not published ({e}); the task stays with the broker"),
        }
    }

    /// Puts an interrupted task back on its work queue as it was (same attempt: an interruption
    /// by shutdown is not the job's failure), acking the delivery in the same transaction.
    async fn put_back(&self, task: Task, acker: Box<dyn Acker>, why: &str) {
        let job = &task.job;
        let queue = self.cfg.layout.task_queue(job.kind(), job.profile(), job.priority());
        let msg = Message::new(job.job_id().to_string(), serde_json::to_vec(&task).expect("tasks serialise"))
            .with_priority(job.priority());
        match acker.ack_with(vec![(String::new(), queue.clone(), msg)]).await {
            Ok(()) => {
                info!("put back on {queue}: {why}");
                self.metrics.put_back.with_label_values(&[job.kind().as_str()]).inc();
            }
            Err(e) => warn!("{why}; put-back failed ({e}); the broker requeues the task"),
        }
    }

    /// Runs the pipeline and uploads its artifacts; the result is not yet committed.
    /// Outputs go under `exec/` in the job's folder. The steps: set up the job's context, fetch
    /// its inputs, run the pipeline (off the async threads), upload.
    async fn execute(
        &self,
        task: &Task,
        flags: super::control::TaskFlags,
        exec: &str,
        inputs_seen: &mut Vec<(std::path::PathBuf, String)>,
    ) -> Result<JobResult, PipelineError> {
        let job = &task.job;
        if self.cfg.noop_pipeline {
            let mut r =
                JobResult::new(job.job_id().clone(), job.tenant().clone(), Some(job.kind()), JobStatus::Succeeded);
            r.worker = Some(self.cfg.id.clone());
            return Ok(r);
        }
        std::fs::create_dir_all(&self.cfg.scratch_dir)?;
        let scratch = tempfile::Builder::new().prefix("reelforge-").tempdir_in(&self.cfg.scratch_dir)?;
        let (ctx, marks) = self.context(job, flags, scratch.path());
        let t0 = std::time::Instant::now();
        let inputs = self.fetch_inputs(job, scratch.path(), inputs_seen).await?;
        let download = StageTiming { stage: Stage::Download, ms: t0.elapsed().as_secs_f64() * 1e3 };
        let (output, ctx) = self.run_pipeline(job.clone(), inputs, ctx, (marks.generator, marks.payload)).await?;
        if let Some(why) = ctx.check().err() {
            // Stopped while the pipeline ran (shutdown, a lost delivery): upload nothing.
            return Err(why);
        }
        let (PipelineOutput { artifacts, models }, withheld) = output?;
        let t1 = std::time::Instant::now();
        let outputs = self.upload(job, exec, &artifacts, &models, &marks, &ctx).await?;
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

    /// The job's context in `scratch` (limits, progress, cancellation, deadline, watermark and
    /// provenance) and the marks its outputs carry.
    fn context(&self, job: &Job, flags: super::control::TaskFlags, scratch: &std::path::Path) -> (JobContext, Marks) {
        let progress = Arc::new(EventProgress::new(self.bus.clone(), job, &self.cfg.id));
        let mut ctx = JobContext::new(scratch.to_owned(), self.cfg.limits.clone(), progress, flags.cancel);
        ctx.interrupt = flags.interrupt;
        ctx.deadline = job.deadline();
        let generator = match job {
            Job::Edit(_) => Generator::EDITOR,
            Job::Create(_) if self.create.mcvd.is_some() => Generator::CREATOR_MCVD,
            Job::Create(_) => Generator::CREATOR_BASELINE,
        };
        let payload = Payload::for_job(&self.cfg.watermark_key, &job.tenant().0, &job.job_id().0, generator);
        let provenance = Provenance::new(generator, payload);
        ctx.watermark = Some(Arc::new(Watermarker::new(&self.cfg.watermark_key, payload)));
        ctx.provenance = provenance.mp4_tags();
        (ctx, Marks { generator, payload, provenance })
    }

    /// Checks access to and fetches the job's inputs into `scratch`; each fetched file is also
    /// noted in `seen` (so failure messages can name inputs instead of scratch paths).
    async fn fetch_inputs(
        &self,
        job: &Job,
        scratch: &std::path::Path,
        seen: &mut Vec<(std::path::PathBuf, String)>,
    ) -> Result<Inputs, PipelineError> {
        let mut fetched = Inputs::default();
        for (path, uri, history_index) in inputs(job) {
            let loc =
                uri.parse(&path, self.cfg.allow_local_media).map_err(|e| PipelineError::BadGuidance(e.to_string()))?;
            match (&loc, self.store.local_root()) {
                (MediaLocation::Local(p), Some(root)) => check_local_input_access(job.tenant(), p, root)?,
                (MediaLocation::Local(_), None) => {}
                _ => check_input_access(job.tenant(), &loc, &self.cfg.shared_input_buckets)?,
            }
            let file = self.store.fetch(&loc, scratch, self.cfg.limits.max_file_bytes).await?;
            seen.push((file.clone(), uri.0.clone()));
            match history_index {
                Some(index) => fetched.history.push(HistoryMedia { index, path: file }),
                None => fetched.media.push(file),
            }
        }
        Ok(fetched)
    }

    /// Runs the job's pipeline, then the safety filter and content credentials, on a blocking
    /// thread inside the task's span; hands back the outcome and the context. A pipeline that
    /// panics is an internal error of this job, not of the worker.
    async fn run_pipeline(
        &self,
        job: Job,
        inputs: Inputs,
        mut ctx: JobContext,
        (generator, payload): (Generator, Payload),
    ) -> Result<(Result<(PipelineOutput, Vec<protocol::Withheld>), PipelineError>, JobContext), PipelineError> {
        let (edit, create, safety) = (self.edit.clone(), self.create.clone(), self.safety.clone());
        let credentials = self.credentials.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let out = match &job {
                Job::Edit(e) => edit.run(e, &inputs.media[0], &inputs.history, &mut ctx),
                Job::Create(c) => create.run(c, inputs.media.first().map(|p| p.as_path()), &mut ctx),
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
                                .map_err(PipelineError::Provenance)?;
                        }
                        Ok(())
                    })?;
                }
                Ok((o, withheld))
            });
            (out, ctx)
        })
        .await
        .map_err(|e| PipelineError::Panicked(e.to_string()))
    }

    /// Uploads the artifacts under `exec/` in the job's folder, each with the job's provenance
    /// metadata; returns them as the result's outputs.
    async fn upload(
        &self,
        job: &Job,
        exec: &str,
        artifacts: &[crate::pipeline::Artifact],
        models: &[protocol::ModelUse],
        marks: &Marks,
        ctx: &JobContext,
    ) -> Result<Vec<Output>, PipelineError> {
        let mut outputs = Vec::with_capacity(artifacts.len());
        for (i, a) in artifacts.iter().enumerate() {
            ctx.check()?;
            let key = output_key(job.tenant(), job.job_id(), &format!("{exec}/{}", a.name))?;
            let mut meta = ObjectMeta { content_type: a.content_type.into(), ..Default::default() };
            meta.entries.extend(marks.provenance.object_metadata());
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
                watermark: Some(marks.payload.hex()),
            });
        }
        Ok(outputs)
    }

    fn failure(&self, job: &Job, status: JobStatus, code: ErrorCode, msg: impl Into<String>) -> JobResult {
        let mut r = JobResult::failure(job.job_id().clone(), job.tenant().clone(), Some(job.kind()), status, code, msg);
        r.worker = Some(self.cfg.id.clone());
        r
    }

    /// Commits an attempt's result: publishes it to the commits queue and acks the task in one
    /// transaction ([`super::commit`] writes `result.json` and publishes `finished`). A stored
    /// result is counted in the metrics, with the time since `started`.
    async fn commit(&self, result: JobResult, acker: Box<dyn Acker>, started: Instant) {
        self.commit_with(result, acker, started, Vec::new()).await;
    }

    /// [`Worker::commit`], publishing `also` in the same transaction; true when it committed.
    async fn commit_with(
        &self,
        mut result: JobResult,
        acker: Box<dyn Acker>,
        started: Instant,
        mut also: Vec<Outgoing>,
    ) -> bool {
        result.worker.get_or_insert_with(|| self.cfg.id.clone());
        let record = Message::new(result.job_id.to_string(), serde_json::to_vec(&result).expect("results serialise"));
        also.push((String::new(), topology::COMMITS_QUEUE.to_owned(), record));
        match acker.ack_with(also).await {
            Ok(()) => {
                let kind = result.kind.map_or("unknown", |k| k.as_str());
                self.metrics.observe_result(kind, result.status, started.elapsed(), &result.timings);
                info!(status = ?result.status, "committed");
                true
            }
            Err(e) => {
                warn!("not committed ({e}); the task went back to the broker and another attempt runs it");
                self.discard_outputs(&result).await;
                false
            }
        }
    }

    /// Publishes an already committed result again (a duplicate task) and acks.
    async fn republish(&self, result: JobResult, acker: Box<dyn Acker>) {
        let event = finished_event(result, &self.cfg.id);
        if let Err(e) = acker.ack_with(vec![event_message(&event)]).await {
            warn!("finished event not published ({e}); the broker redelivers the duplicate");
        }
    }

    fn state_event(&self, job: &Job, state: JobState, detail: Option<String>) -> Event {
        Event::now(job.job_id().clone(), job.tenant().clone(), &self.cfg.id, EventBody::State { state, detail })
    }

    async fn publish_state(&self, job: &Job, state: JobState, detail: Option<String>) {
        let event = self.state_event(job, state, detail);
        if let Err(e) = publish_event(self.bus.as_ref(), &event).await {
            warn!("state event not published: {e}");
        }
    }
}

/// A failure message as a client may see it: each fetched input's local path becomes the URI
/// the job named, and any other path inside the worker's scratch directory loses its
/// directories (the client learns nothing of the worker's file system).
fn redact_paths(message: &str, inputs: &[(std::path::PathBuf, String)], scratch: &std::path::Path) -> String {
    let mut out = message.to_owned();
    for (path, uri) in inputs {
        out = out.replace(&path.display().to_string(), uri);
    }
    let root = format!("{}/", scratch.display().to_string().trim_end_matches('/'));
    while let Some(at) = out.find(&root) {
        // Drop the scratch root and the attempt's own directory under it.
        let rest = &out[at + root.len()..];
        let skip = rest.find('/').filter(|&i| !rest[..i].contains(char::is_whitespace)).map_or(0, |i| i + 1);
        out.replace_range(at..at + root.len() + skip, "");
    }
    out
}

/// The key of attempt `n`'s marker.
fn marker_key(job: &Job, n: u32) -> String {
    format!("{}/{}/{}", job.tenant(), job.job_id(), attempt_marker(n))
}

/// A short id for one execution, unique across workers and restarts in practice.
fn nonce(worker: &str) -> String {
    use sha2::Digest;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let digest = sha2::Sha256::digest(format!("{worker}/{}/{t}/{n}", std::process::id()));
    hex::encode(&digest[..4])
}

/// The `finished` event of a committed result.
pub(crate) fn finished_event(result: JobResult, source: &str) -> Event {
    Event::now(result.job_id.clone(), result.tenant.clone(), source, EventBody::Finished { result: Box::new(result) })
}

/// An event as an (exchange, routing key, message) to publish in a transaction.
pub(crate) fn event_message(event: &Event) -> Outgoing {
    let body = serde_json::to_vec(event).expect("events serialise");
    (topology::EVENTS_EXCHANGE.to_owned(), event.routing_key(), Message::new(event.job_id.to_string(), body))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn failure_messages_name_inputs_not_scratch_paths() {
        let scratch = Path::new("/var/tmp/rf");
        let inputs = vec![(PathBuf::from("/var/tmp/rf/reelforge-Ab12/.tmpXy"), "s3://in/t1/a.mp4".to_owned())];
        let msg = "invalid media /var/tmp/rf/reelforge-Ab12/.tmpXy: moov atom not found";
        assert_eq!(redact_paths(msg, &inputs, scratch), "invalid media s3://in/t1/a.mp4: moov atom not found");
        let msg = "scratch I/O on /var/tmp/rf/reelforge-Ab12/frames/0001.png: disk full";
        assert_eq!(redact_paths(msg, &[], scratch), "scratch I/O on frames/0001.png: disk full");
        assert_eq!(redact_paths("no paths here", &inputs, scratch), "no paths here");
    }
}
