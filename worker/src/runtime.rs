//! `runtime` owns a worker's life: consume the work queues of the profiles it serves, run each
//! task's pipeline on a blocking thread, upload its artifacts, write `result.json` last, publish
//! events, and only then acknowledge the message. A redelivered task whose `result.json`
//! exists is not run again. Every failure of a job ends in a result with an error code; the
//! worker itself stays up.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bus::{Acker, Bus, Message, topology};
use chrono::Utc;
use protocol::{
    ErrorCode, Event, EventBody, Job, JobId, JobKind, JobResult, JobState, JobStatus, Output,
    Stage, StageTiming, Task, TenantId, ValidationContext,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::media::MediaLimits;
use crate::pipeline::create::CreatePipeline;
use crate::pipeline::edit::EditPipeline;
use crate::pipeline::{JobContext, PipelineError, PipelineOutput, ProgressSink};
use crate::storage::{ObjectMeta, RESULT_FILE, StorageError, Store, output_key};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id in events and results.
    pub id: String,
    /// Model profiles served; one work queue per (kind, profile).
    pub profiles: Vec<String>,
    /// Job kinds served.
    pub kinds: Vec<JobKind>,
    /// Tasks run at once (and the prefetch of each work queue).
    pub capacity: usize,
    /// Where per-attempt scratch directories go.
    pub scratch_dir: PathBuf,
    /// Accept `file:///` inputs (the embedded mode only).
    pub allow_local_media: bool,
    /// Media guards.
    pub limits: MediaLimits,
    /// An MCVD checkpoint directory for the creator; without one, `predict` and `interpolate`
    /// use the classical baselines and `generate` and `edit` are refused.
    pub mcvd: Option<PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", std::process::id()),
            profiles: vec!["default".into()],
            kinds: vec![JobKind::Edit, JobKind::Create],
            capacity: 1,
            scratch_dir: std::env::temp_dir(),
            allow_local_media: false,
            limits: MediaLimits::default(),
            mcvd: None,
        }
    }
}

/// Why the worker as a whole stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker failed.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// A configured model could not be loaded.
    #[error(transparent)]
    Model(#[from] crate::models::mcvd::McvdError),
}

/// A worker: consumes tasks, runs pipelines, stores outputs.
pub struct Worker {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    cfg: WorkerConfig,
    edit: EditPipeline,
    create: CreatePipeline,
}

impl Worker {
    /// A worker over a bus and a store.
    pub fn new(bus: Arc<dyn Bus>, store: Arc<dyn Store>, cfg: WorkerConfig) -> Self {
        Worker {
            bus,
            store,
            cfg,
            edit: EditPipeline::default(),
            create: CreatePipeline::default(),
        }
    }

    /// Declares its queues and consumes until `shutdown` is cancelled; in-flight tasks finish.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        if let Some(dir) = &self.cfg.mcvd {
            let encode = self.create.encode.clone();
            self.create = CreatePipeline::with_mcvd(dir)?;
            self.create.encode = encode;
            info!(model = %dir.display(), "creator: MCVD loaded");
        }
        topology::declare_core(self.bus.as_ref()).await?;
        let prefetch = u16::try_from(self.cfg.capacity).unwrap_or(u16::MAX);
        let (tx, mut rx) = mpsc::channel(self.cfg.capacity.max(1));
        for kind in &self.cfg.kinds {
            for profile in &self.cfg.profiles {
                let queue = topology::declare_task_queue(self.bus.as_ref(), *kind, profile).await?;
                let mut consumer = self.bus.consume(&queue, prefetch).await?;
                let tx = tx.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => break,
                            next = consumer.next() => next,
                        };
                        match next {
                            Some(Ok(d)) => {
                                if tx.send(d).await.is_err() {
                                    break;
                                }
                            }
                            Some(Err(e)) => warn!(%queue, error = %e, "consume failed"),
                            None => break,
                        }
                    }
                });
            }
        }
        drop(tx);
        info!(worker = %self.cfg.id, profiles = ?self.cfg.profiles, capacity = self.cfg.capacity, "worker consuming");
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.cfg.capacity.max(1)));
        let mut running = tokio::task::JoinSet::new();
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break,
                d = rx.recv() => match d { Some(d) => d, None => break },
            };
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let this = this.clone();
            running.spawn(async move {
                let (message, redelivered, acker) = delivery.into_parts();
                this.handle(message, redelivered, acker).await;
                drop(permit);
            });
            while running.try_join_next().is_some() {}
        }
        // Graceful stop: deliveries not yet started go back to the queue when dropped; running
        // tasks finish.
        drop(rx);
        while running.join_next().await.is_some() {}
        info!(worker = %this.cfg.id, "worker stopped");
        Ok(())
    }

    /// Handles one delivery end to end, settling it exactly once.
    async fn handle(&self, message: Message, redelivered: bool, acker: Box<dyn Acker>) {
        let task = match parse_task(&message, &self.cfg) {
            Ok(task) => task,
            Err((job_id, tenant, code, msg)) => {
                warn!(message_id = %message.id, %code, "refusing task: {msg}");
                let result = JobResult::failure(job_id, tenant, None, JobStatus::Failed, code, msg);
                return self.finish(result, acker).await;
            }
        };
        let job = &task.job;
        let span = info_span!("task", job_id = %job.job_id(), tenant = %job.tenant(), kind = job.kind().as_str(), attempt = task.attempt);
        async {
            // Idempotency: a result already committed means the job ran; publish it again and ack.
            match self.existing_result(job).await {
                Ok(Some(result)) => {
                    info!(redelivered, "result.json exists; not running again");
                    return self.finish(result, acker).await;
                }
                Ok(None) => {}
                Err(e) => return self.requeue(acker, &e.to_string()).await,
            }
            if job.deadline().is_some_and(|d| d < Utc::now()) {
                let r = self.failure(
                    job,
                    JobStatus::Expired,
                    ErrorCode::DeadlineExceeded,
                    "deadline passed before the job started",
                );
                return self.commit(r, acker).await;
            }
            self.publish_state(job, JobState::Running, None).await;
            match self.execute(&task).await {
                Ok(result) => self.commit(result, acker).await,
                Err(e) if e.is_transient() => self.requeue(acker, &e.to_string()).await,
                Err(e) => {
                    let status = if matches!(e, PipelineError::Cancelled) {
                        JobStatus::Cancelled
                    } else {
                        JobStatus::Failed
                    };
                    warn!(code = %e.code(), "job failed: {e}");
                    let r = self.failure(job, status, e.code(), e.to_string());
                    self.commit(r, acker).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn existing_result(&self, job: &Job) -> Result<Option<JobResult>, StorageError> {
        let key = output_key(job.tenant(), job.job_id(), RESULT_FILE)?;
        Ok(self
            .store
            .get(&key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Runs the pipeline and uploads its artifacts; the result is not yet committed.
    async fn execute(&self, task: &Task) -> Result<JobResult, PipelineError> {
        let job = task.job.clone();
        std::fs::create_dir_all(&self.cfg.scratch_dir)?;
        let scratch = tempfile::Builder::new()
            .prefix("reelforge-")
            .tempdir_in(&self.cfg.scratch_dir)?;
        let progress = Arc::new(EventProgress::new(self.bus.clone(), &job, &self.cfg.id));
        let mut ctx = JobContext::new(
            scratch.path().to_owned(),
            self.cfg.limits.clone(),
            progress,
            Arc::new(AtomicBool::new(false)),
        );
        let max_bytes = self.cfg.limits.max_file_bytes;
        let allow_local = self.cfg.allow_local_media;
        let t0 = std::time::Instant::now();
        let inputs = match &job {
            Job::Edit(e) => vec![
                e.source
                    .parse("source", allow_local)
                    .map_err(|e| PipelineError::Unsupported(e.to_string()))?,
            ],
            Job::Create(c) => match &c.conditioning {
                Some(cond) => vec![
                    cond.source
                        .parse("conditioning.source", allow_local)
                        .map_err(|e| PipelineError::Unsupported(e.to_string()))?,
                ],
                None => vec![],
            },
        };
        let mut fetched = Vec::new();
        for loc in &inputs {
            fetched.push(self.store.fetch(loc, scratch.path(), max_bytes).await?);
        }
        let download = StageTiming {
            stage: Stage::Download,
            ms: t0.elapsed().as_secs_f64() * 1e3,
        };
        let (edit, create) = (self.edit.clone(), self.create.clone());
        let (output, ctx) = tokio::task::spawn_blocking(move || {
            let out = match &job {
                Job::Edit(e) => edit.run(e, &fetched[0], &mut ctx),
                Job::Create(c) => create.run(c, fetched.first().map(|p| p.as_path()), &mut ctx),
            };
            (out, ctx)
        })
        .await
        .map_err(|e| {
            PipelineError::Io(std::io::Error::other(format!(
                "pipeline thread panicked: {e}"
            )))
        })?;
        let PipelineOutput { artifacts, models } = output?;
        let t1 = std::time::Instant::now();
        let mut outputs = Vec::with_capacity(artifacts.len());
        let job = &task.job;
        for (i, a) in artifacts.iter().enumerate() {
            let key = output_key(job.tenant(), job.job_id(), &a.name)?;
            let mut meta = ObjectMeta {
                content_type: a.content_type.into(),
                ..Default::default()
            };
            meta.entries.insert("ai-generated".into(), "true".into());
            meta.entries.insert(
                "generator".into(),
                format!("reelforge/{}", env!("CARGO_PKG_VERSION")),
            );
            meta.entries
                .insert("job-id".into(), job.job_id().to_string());
            meta.entries.insert(
                "models".into(),
                models
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            let stored = self.store.put_file(&key, &a.path, &meta).await?;
            ctx.progress
                .progress(Stage::Upload, i as u64 + 1, artifacts.len() as u64);
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
                watermark: None,
            });
        }
        let mut timings = vec![download];
        timings.extend_from_slice(ctx.timings());
        timings.push(StageTiming {
            stage: Stage::Upload,
            ms: t1.elapsed().as_secs_f64() * 1e3,
        });
        Ok(JobResult {
            v: protocol::WIRE_VERSION,
            job_id: job.job_id().clone(),
            tenant: job.tenant().clone(),
            kind: Some(job.kind()),
            status: JobStatus::Succeeded,
            outputs,
            timings,
            models,
            error: None,
            attempt: task.attempt,
            worker: Some(self.cfg.id.clone()),
            finished_at: Utc::now(),
        })
    }

    fn failure(
        &self,
        job: &Job,
        status: JobStatus,
        code: ErrorCode,
        msg: impl Into<String>,
    ) -> JobResult {
        let mut r = JobResult::failure(
            job.job_id().clone(),
            job.tenant().clone(),
            Some(job.kind()),
            status,
            code,
            msg,
        );
        r.worker = Some(self.cfg.id.clone());
        r
    }

    /// Writes `result.json` (the commit marker), publishes `finished`, then acks. A storage
    /// failure requeues the message instead: nothing is acked before it is durable.
    async fn commit(&self, mut result: JobResult, acker: Box<dyn Acker>) {
        result.worker.get_or_insert_with(|| self.cfg.id.clone());
        let bytes = serde_json::to_vec_pretty(&result).expect("results serialise");
        let meta = ObjectMeta {
            content_type: "application/json".into(),
            ..Default::default()
        };
        let stored = match output_key(&result.tenant, &result.job_id, RESULT_FILE) {
            Ok(key) => self.store.put_bytes(&key, &bytes, &meta).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => self.finish(result, acker).await,
            Err(e) if e.is_transient() => self.requeue(acker, &e.to_string()).await,
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
            EventBody::Finished {
                result: Box::new(result),
            },
        );
        if let Err(e) = publish_event(self.bus.as_ref(), &event).await {
            return self
                .requeue(acker, &format!("finished event not confirmed: {e}"))
                .await;
        }
        info!(status = ?status, "job finished");
        if let Err(e) = acker.ack().await {
            warn!(
                "ack failed ({e}); the broker will redeliver and the manifest stops a second run"
            );
        }
    }

    async fn requeue(&self, acker: Box<dyn Acker>, why: &str) {
        warn!("requeueing: {why}");
        if let Err(e) = acker.nack(true).await {
            warn!("nack failed: {e}");
        }
    }

    async fn publish_state(&self, job: &Job, state: JobState, detail: Option<String>) {
        let event = Event::now(
            job.job_id().clone(),
            job.tenant().clone(),
            &self.cfg.id,
            EventBody::State { state, detail },
        );
        if let Err(e) = publish_event(self.bus.as_ref(), &event).await {
            warn!("state event not published: {e}");
        }
    }
}

type TaskRefusal = (JobId, TenantId, ErrorCode, String);

fn parse_task(message: &Message, cfg: &WorkerConfig) -> Result<Task, TaskRefusal> {
    let fallback_id = JobId(sanitise_id(&message.id));
    let unknown = TenantId("unknown".into());
    if message.body.len() > protocol::limits::MAX_JOB_BYTES + 4096 {
        let msg = format!("task is {} bytes, over the limit", message.body.len());
        return Err((fallback_id, unknown, ErrorCode::JobTooLarge, msg));
    }
    let task: Task = serde_json::from_slice(&message.body).map_err(|e| {
        (
            fallback_id.clone(),
            unknown.clone(),
            ErrorCode::InvalidJob,
            format!("malformed task: {e}"),
        )
    })?;
    let ctx = ValidationContext {
        allow_local_media: cfg.allow_local_media,
    };
    task.job.validate(&ctx).map_err(|e| {
        (
            fallback_id.clone(),
            unknown.clone(),
            ErrorCode::InvalidJob,
            format!("invalid job at {e}"),
        )
    })?;
    if task.v != protocol::WIRE_VERSION {
        return Err((
            fallback_id,
            unknown,
            ErrorCode::UnsupportedVersion,
            format!("task version {}", task.v),
        ));
    }
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
    bus.publish(
        topology::EVENTS_EXCHANGE,
        &event.routing_key(),
        Message::new(event.job_id.to_string(), body),
    )
    .await
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
            Some((s, t)) if s == stage => {
                now.duration_since(t).as_millis() >= 100 || (total > 0 && done >= total)
            }
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
