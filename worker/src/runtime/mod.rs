//! `runtime` owns a worker's life: declare and consume the work queues of the profiles it
//! serves (prefetch = capacity), follow the control feed (cancellations), publish heartbeats,
//! run each task ([`task`]), write the results tasks commit ([`commit`]), and stop cleanly: on
//! shutdown it stops consuming, lets running tasks finish within a grace period, then
//! interrupts them so their messages are requeued, and writes the results they committed.
//! With `exit_when_idle` it stops by itself once nothing has arrived for that long (Kubernetes
//! batch Jobs). It keeps its [`WorkerMetrics`] up to date (and polls the GPUs where there are
//! any) and flags when its consumers are up, for `/readyz`.

pub mod commit;
pub mod control;
pub mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus::{Bus, Delivery, topology};
use chrono::Utc;
use protocol::{Control, JobKind};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::batching::{BatchOptions, Batcher};
use crate::media::MediaLimits;
use crate::metrics::{WorkerMetrics, read_gpus};
use crate::models::sd::StableDiffusion;
use crate::pipeline::create::CreatePipeline;
use crate::pipeline::edit::EditPipeline;
use crate::storage::Store;
use crate::watermark::WatermarkKey;
use control::{Identity, Registry};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id in events, results and heartbeats (unique per worker).
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
    /// Input buckets any tenant may read besides its own prefix.
    pub shared_input_buckets: Vec<String>,
    /// Media guards.
    pub limits: MediaLimits,
    /// Attempts before a task goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delays of the retry ladder's rungs, in milliseconds, shortest first.
    pub retry_delays_ms: Vec<u32>,
    /// Classic or quorum queues (every role of the fleet must agree).
    pub layout: topology::Layout,
    /// Seconds between heartbeats.
    pub heartbeat_interval: Duration,
    /// How long running tasks may take to finish after a shutdown request.
    pub grace: Duration,
    /// Stop once nothing has arrived and nothing has run for this long.
    pub exit_when_idle: Option<Duration>,
    /// The compute device asked for (`auto`: CUDA when built with it and usable, else the CPU);
    /// the one chosen is logged at start and reported in heartbeats.
    pub device: kernels::DeviceChoice,
    /// Skip fetching and pipelines and commit an empty success: measures the fleet itself
    /// (dispatch benchmarks), never for real work.
    pub noop_pipeline: bool,
    /// An MCVD checkpoint directory for the creator; without one, `predict` and `interpolate`
    /// use the classical baselines and `generate` and `edit` are refused.
    pub mcvd: Option<PathBuf>,
    /// How the model calls of tasks running at once are batched ([`crate::batching`]).
    pub batch: BatchOptions,
    /// A CLIP checkpoint directory (Hugging Face layout) for the editor's selection; without
    /// one, clips are spread evenly and the thumbnail is the sharpest frame.
    pub clip: Option<PathBuf>,
    /// Run CLIP in f16 (weights, activations and the preprocessed frames): for GPUs, where it
    /// halves memory traffic; on the CPU candle's f16 is slower than f32.
    pub clip_f16: bool,
    /// A concepts file for the safety filter (needs `clip`); none: no content check.
    pub safety_concepts: Option<PathBuf>,
    /// C2PA signing: PEM certificate chain, PEM private key, algorithm (`es256`…); none: no
    /// content credentials.
    pub c2pa: Option<(PathBuf, PathBuf, String)>,
    /// A Stable Diffusion directory (diffusers layout: SD 1.5, 2.1, sd-turbo) for generated
    /// thumbnails, loaded when the worker starts ([`Worker::sd`]); none: generation is refused.
    pub sd: Option<PathBuf>,
    /// The secret every output's invisible watermark is keyed with (shared with the detector).
    pub watermark_key: WatermarkKey,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}-{}", hostname(), std::process::id()),
            profiles: vec!["default".into()],
            kinds: vec![JobKind::Edit, JobKind::Create],
            capacity: 1,
            scratch_dir: std::env::temp_dir(),
            allow_local_media: false,
            shared_input_buckets: Vec::new(),
            limits: MediaLimits::default(),
            max_attempts: 3,
            retry_delays_ms: vec![1_000, 5_000, 30_000],
            layout: topology::Layout::default(),
            heartbeat_interval: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            exit_when_idle: None,
            device: kernels::DeviceChoice::Auto,
            noop_pipeline: false,
            mcvd: None,
            batch: BatchOptions::default(),
            clip: None,
            clip_f16: false,
            safety_concepts: None,
            c2pa: None,
            sd: None,
            watermark_key: WatermarkKey::dev(),
        }
    }
}

/// Longest a stopping worker waits for the commits queue to empty.
const COMMIT_DRAIN: Duration = Duration::from_secs(5);

/// Consumes the commits queue until `stop`, each record in a task of its own; waits for those
/// running before it returns.
async fn commit_loop(worker: Arc<Worker>, mut records: Box<dyn bus::Consumer>, stop: CancellationToken) {
    let mut writing = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = records.next() => next,
        };
        while writing.try_join_next().is_some() {}
        match next {
            Some(Ok(d)) => {
                let worker = worker.clone();
                writing.spawn(async move { worker.write_manifest(d).await });
            }
            Some(Err(e)) => {
                warn!(error = %e, "commits consume failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => break,
        }
    }
    while writing.join_next().await.is_some() {}
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "local".into())
}

/// Why the worker as a whole stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker failed.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// The compute device asked for cannot be used.
    #[error(transparent)]
    Device(#[from] kernels::DeviceError),
    /// A configured model could not be loaded.
    #[error(transparent)]
    Model(#[from] crate::models::mcvd::McvdError),
    /// The configured CLIP checkpoint could not be loaded.
    #[error("CLIP checkpoint {dir}: {source}")]
    Clip {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: crate::models::clip::ClipError,
    },
    /// The safety filter could not be built.
    #[error(transparent)]
    Safety(#[from] crate::safety::SafetyError),
    /// The C2PA signing key or certificate is unusable.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// The configuration contradicts itself.
    #[error("configuration: {0}")]
    Config(String),
    /// The configured Stable Diffusion could not be loaded.
    #[error(transparent)]
    Sd(#[from] crate::models::sd::SdError),
}

/// A worker: consumes tasks, runs pipelines, stores outputs.
pub struct Worker {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cfg: WorkerConfig,
    pub(crate) edit: EditPipeline,
    pub(crate) create: CreatePipeline,
    pub(crate) safety: Option<Arc<crate::safety::SafetyFilter>>,
    pub(crate) credentials: Option<Arc<crate::credentials::ContentCredentials>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) rungs: Vec<String>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) consuming: Arc<AtomicBool>,
    /// The Stable Diffusion of [`WorkerConfig::sd`], once [`Worker::run`] (or [`Worker::load_sd`])
    /// has loaded it; shared by every task.
    pub(crate) sd: Option<Arc<StableDiffusion>>,
    /// The compute device [`Worker::run`] chose (none before it runs: models load on the CPU).
    pub(crate) compute: Option<kernels::Selected>,
}

impl Worker {
    /// A worker over a bus and a store, with metrics of its own (GPU gauges where `nvidia-smi`
    /// finds a GPU).
    pub fn new(bus: Arc<dyn Bus>, store: Arc<dyn Store>, cfg: WorkerConfig) -> Self {
        let metrics =
            WorkerMetrics::new(env!("CARGO_PKG_VERSION"), &read_gpus()).expect("worker metrics are well-formed");
        metrics.capacity.set(i64::try_from(cfg.capacity).unwrap_or(i64::MAX));
        Worker {
            bus,
            store,
            cfg,
            edit: EditPipeline::default(),
            create: CreatePipeline::default(),
            safety: None,
            credentials: None,
            registry: Arc::default(),
            rungs: Vec::new(),
            metrics: Arc::new(metrics),
            consuming: Arc::default(),
            sd: None,
            compute: None,
        }
    }

    /// Loads [`WorkerConfig::sd`] (once; `run` calls it) and returns it.
    pub fn load_sd(&mut self) -> Result<Option<Arc<StableDiffusion>>, WorkerError> {
        if self.sd.is_none()
            && let Some(dir) = &self.cfg.sd
        {
            let t = Instant::now();
            let device = self.compute.as_ref().map_or(candle_core::Device::Cpu, |c| c.device.clone());
            let model = StableDiffusion::load_on(dir, &device)?;
            let secs = t.elapsed().as_secs_f64();
            self.metrics.model_load.with_label_values(&["sd"]).observe(secs);
            info!(model = %dir.display(), variant = ?model.variant(), secs, "Stable Diffusion loaded");
            self.sd = Some(Arc::new(model));
        }
        Ok(self.sd.clone())
    }

    /// The loaded Stable Diffusion, if any.
    pub fn sd(&self) -> Option<Arc<StableDiffusion>> {
        self.sd.clone()
    }

    /// The worker's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The state `/metrics`, `/healthz` and `/readyz` answer from.
    pub fn http_state(&self) -> crate::http::HttpState {
        crate::http::HttpState {
            bus: self.bus.clone(),
            metrics: self.metrics.clone(),
            consuming: self.consuming.clone(),
        }
    }

    /// Declares the work queues of every kind and profile served and consumes them, until
    /// `stop`: one channel per priority band, highest first (a classic fleet has one band, its
    /// queues ordered by AMQP priority). Each queue's prefetch is the worker's capacity.
    async fn consume_work(&self, stop: &CancellationToken) -> Result<Vec<mpsc::Receiver<Delivery>>, WorkerError> {
        let layout = self.cfg.layout;
        let prefetch = u16::try_from(self.cfg.capacity).unwrap_or(u16::MAX);
        let mut senders: Vec<mpsc::Sender<Delivery>> = Vec::new();
        let mut bands = Vec::new();
        for kind in &self.cfg.kinds {
            for profile in &self.cfg.profiles {
                let queues = layout.declare_task_queues(self.bus.as_ref(), *kind, profile).await?;
                for (band, queue) in queues.into_iter().enumerate() {
                    if band == senders.len() {
                        let (tx, rx) = mpsc::channel::<Delivery>(self.cfg.capacity.max(1));
                        senders.push(tx);
                        bands.push(rx);
                    }
                    let consumer = self.bus.consume(&queue, prefetch).await?;
                    tokio::spawn(forward(queue, consumer, senders[band].clone(), stop.clone()));
                }
            }
        }
        Ok(bands)
    }

    /// Loads the models, declares its queues and consumes until `shutdown` is cancelled (or it
    /// has been idle for `exit_when_idle`); then drains as described in the module docs.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let compute = kernels::select(self.cfg.device)?;
        info!(device = %compute.label, detail = %compute.detail, "compute device");
        self.compute = Some(compute.clone());
        let models = self.load_models(&compute)?;
        self.serve(compute, models, shutdown).await
    }

    /// Loads what the config names (MCVD, CLIP, the safety filter, C2PA credentials, SD) onto
    /// `compute`; returns the models' names for heartbeats.
    fn load_models(&mut self, compute: &kernels::Selected) -> Result<Vec<String>, WorkerError> {
        let mut models = vec!["baseline".to_owned()];
        if let Some(dir) = &self.cfg.mcvd {
            let encode = self.create.encode.clone();
            self.create = CreatePipeline::with_mcvd_on(dir, &compute.device)?;
            self.create.encode = encode;
            if let Some(model) = &self.create.mcvd {
                let metrics = self.metrics.clone();
                let observe: crate::batching::ObserveFn =
                    Box::new(move |n| metrics.batch_size.with_label_values(&["mcvd"]).observe(n as f64));
                let forward = crate::models::diffusion::batched_forward(model.clone());
                self.create.batcher = Some(Batcher::spawn("mcvd", self.cfg.batch, forward, observe));
            }
            info!(model = %dir.display(), "creator: MCVD loaded");
            models.push(format!("mcvd:{}", dir.display()));
        }
        if let Some(dir) = &self.cfg.clip {
            let t = Instant::now();
            let dtype = if self.cfg.clip_f16 { candle_core::DType::F16 } else { candle_core::DType::F32 };
            let clip = crate::models::clip::Clip::load_as(dir, &compute.device, dtype)
                .map_err(|source| WorkerError::Clip { dir: dir.clone(), source })?;
            self.metrics.model_load.with_label_values(&["clip"]).observe(t.elapsed().as_secs_f64());
            info!(model = %dir.display(), id = %clip.id, dim = clip.dim(), dtype = ?clip.dtype(), "editor: CLIP loaded");
            models.push(format!("clip:{}", clip.id));
            let clip = Arc::new(clip);
            let metrics = self.metrics.clone();
            let observe: crate::batching::ObserveFn =
                Box::new(move |n| metrics.batch_size.with_label_values(&["clip"]).observe(n as f64));
            let forward = crate::models::clip::image_forward(clip.clone());
            self.edit.clip_batcher = Some(Batcher::spawn("clip", self.cfg.batch, forward, observe));
            self.edit.clip = Some(clip);
        }
        if let Some(path) = &self.cfg.safety_concepts {
            let clip = self.edit.clip.clone().ok_or_else(|| {
                WorkerError::Config("the safety filter (--safety-concepts) needs a CLIP checkpoint (--clip)".into())
            })?;
            let cfg = crate::safety::SafetyConfig::load(path)?;
            let filter = crate::safety::SafetyFilter::new(clip, &cfg)?;
            info!(concepts = cfg.concepts.len(), "safety filter on");
            self.safety = Some(Arc::new(filter));
        }
        if let Some((cert, key, alg)) = &self.cfg.c2pa {
            let c = crate::credentials::ContentCredentials::from_files(cert, key, alg)?;
            info!(cert = %cert.display(), alg = %alg, "C2PA content credentials on");
            self.credentials = Some(Arc::new(c));
        }
        if let Some(sd) = self.load_sd()? {
            let dir = self.cfg.sd.as_ref().expect("loaded from the config");
            models.push(format!("sd:{}", dir.display()));
            self.edit.sd = Some(sd);
        }
        Ok(models)
    }

    /// Declares the queues, consumes work, heartbeats and commits until `shutdown`; then drains.
    async fn serve(
        mut self,
        compute: kernels::Selected,
        models: Vec<String>,
        shutdown: CancellationToken,
    ) -> Result<(), WorkerError> {
        let bus = self.bus.clone();
        let layout = self.cfg.layout;
        layout.declare_core(bus.as_ref()).await?;
        self.rungs = layout.declare_retry_ladder(bus.as_ref(), &self.cfg.retry_delays_ms).await?;
        let control_q =
            topology::declare_feed(bus.as_ref(), &self.cfg.id, "control", topology::CONTROL_EXCHANGE, "").await?;
        let mut control = bus.consume(&control_q, 64).await?;
        let stop_consuming = CancellationToken::new();
        let mut bands = self.consume_work(&stop_consuming).await?;
        self.consuming.store(true, Ordering::Relaxed);
        let gpu_polling = self.metrics.has_gpu().then(|| {
            let (metrics, every) = (self.metrics.clone(), self.cfg.heartbeat_interval);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Ok(gpus) = tokio::task::spawn_blocking(read_gpus).await {
                        metrics.set_gpus(&gpus);
                    }
                }
            })
        });
        let identity = Identity {
            id: self.cfg.id.clone(),
            kinds: self.cfg.kinds.clone(),
            profiles: self.cfg.profiles.clone(),
            models,
            capacity: u32::try_from(self.cfg.capacity).unwrap_or(u32::MAX),
            device: compute.describe(),
            started_at: Utc::now(),
        };
        let beating = tokio::spawn(control::heartbeats(
            bus.clone(),
            identity,
            self.registry.clone(),
            self.cfg.heartbeat_interval,
        ));
        info!(worker = %self.cfg.id, profiles = ?self.cfg.profiles, capacity = self.cfg.capacity, "worker consuming");

        let this = Arc::new(self);
        let stop_commits = CancellationToken::new();
        let committer = tokio::spawn(commit_loop(
            this.clone(),
            bus.consume(topology::COMMITS_QUEUE, 16).await?,
            stop_commits.clone(),
        ));
        let slots = Arc::new(Semaphore::new(this.cfg.capacity.max(1)));
        let mut running = tokio::task::JoinSet::new();
        let mut last_activity = Instant::now();
        let mut idle_check = tokio::time::interval(Duration::from_millis(250));
        loop {
            // A free slot first, then the delivery of the highest band in hand: priority holds
            // among what this worker has prefetched, whatever the queue type.
            let next = async {
                let permit = slots.clone().acquire_owned().await.expect("semaphore never closed");
                next_by_band(&mut bands).await.map(|d| (permit, d))
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                d = next => {
                    let Some((permit, d)) = d else { break };
                    last_activity = Instant::now();
                    let this = this.clone();
                    running.spawn(async move {
                        this.handle(d).await;
                        drop(permit);
                    });
                }
                c = control.next() => match c {
                    Some(Ok(d)) => {
                        if let Ok(Control::Cancel { job_id, .. }) = serde_json::from_slice(&d.message.body) {
                            info!(%job_id, "cancellation requested");
                            this.registry.cancel(&job_id);
                        }
                        let _ = d.ack().await;
                    }
                    Some(Err(e)) => warn!(error = %e, "control consume failed"),
                    None => {}
                },
                _ = idle_check.tick() => {
                    while running.try_join_next().is_some() {}
                    if !running.is_empty() {
                        last_activity = Instant::now();
                    } else if this.cfg.exit_when_idle.is_some_and(|idle| last_activity.elapsed() >= idle) {
                        info!("idle; exiting");
                        break;
                    }
                }
            }
        }
        // Stop taking work; deliveries not started go back to their queues when dropped.
        stop_consuming.cancel();
        this.consuming.store(false, Ordering::Relaxed);
        drop(bands);
        let grace = tokio::time::sleep(this.cfg.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                j = running.join_next() => if j.is_none() { break },
                _ = &mut grace => {
                    warn!(in_flight = running.len(), "grace period over; interrupting running tasks");
                    this.registry.interrupt_all();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Write what the tasks committed (another worker would, but do not leave it waiting).
        let t0 = Instant::now();
        while t0.elapsed() < COMMIT_DRAIN && this.bus.depth(topology::COMMITS_QUEUE).await.is_ok_and(|n| n > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_commits.cancel();
        let _ = committer.await;
        beating.abort();
        if let Some(p) = gpu_polling {
            p.abort();
        }
        info!(worker = %this.cfg.id, "worker stopped");
        Ok(())
    }
}

/// The next delivery, from the first band (the highest priority) that has one ready; `None`
/// once every band's consumers are gone.
async fn next_by_band(bands: &mut [mpsc::Receiver<Delivery>]) -> Option<Delivery> {
    std::future::poll_fn(|cx| {
        let mut open = false;
        for rx in bands.iter_mut() {
            match rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(d)) => return std::task::Poll::Ready(Some(d)),
                std::task::Poll::Ready(None) => {}
                std::task::Poll::Pending => open = true,
            }
        }
        if open { std::task::Poll::Pending } else { std::task::Poll::Ready(None) }
    })
    .await
}

/// Hands `queue`'s deliveries to the worker loop until `stop` or the loop is gone.
async fn forward(
    queue: String,
    mut consumer: Box<dyn bus::Consumer>,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
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
            Some(Err(e)) => {
                warn!(%queue, error = %e, "consume failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => break,
        }
    }
}
