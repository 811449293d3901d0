//! The fleet roles and their client: `reelforge scheduler`, `reelforge worker`,
//! `reelforge submit` and `reelforge status`. Each parses its flags (every flag has an
//! environment variable), connects to RabbitMQ and delegates to the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::amqp::AmqpBus;
use bus::{Bus, Message, topology};
use protocol::{Event, EventBody, Job, JobKind, JobStatus, ValidationContext};
use scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use worker::storage::Store;
use worker::storage::local::LocalStore;
use worker::storage::s3::{S3Config, S3Store};
use worker::{Worker, WorkerConfig};

/// Where the broker is.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// AMQP URL of RabbitMQ (the vhost is the path, `%2f` for `/`); for a cluster, every node's
    /// URL, comma-separated (a lost connection moves to the next node).
    #[arg(long, env = "REELFORGE_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// `classic` queues (one broker) or replicated `quorum` queues (a cluster; work queues split
    /// into priority bands). Every scheduler, worker and submitter of a fleet must agree.
    #[arg(long, env = "REELFORGE_QUEUE_TYPE", default_value = "classic")]
    queue_type: topology::QueueType,
}

impl BrokerArgs {
    fn layout(&self) -> topology::Layout {
        topology::Layout::new(self.queue_type)
    }

    /// Connects as `name`; a quorum fleet publishes its atomic steps with confirms
    /// ([`bus::amqp::Atomicity::Confirms`]).
    async fn connect(&self, name: Option<&str>) -> anyhow::Result<AmqpBus> {
        let atomicity = match self.queue_type {
            topology::QueueType::Classic => bus::amqp::Atomicity::Transactions,
            topology::QueueType::Quorum => bus::amqp::Atomicity::Confirms,
        };
        AmqpBus::connect_with(&self.amqp_url, name, atomicity).await.context("connecting to RabbitMQ")
    }
}

/// `reelforge scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Replica id, unique per replica (its private feeds are named after it).
    #[arg(long, env = "REELFORGE_SCHEDULER_ID")]
    id: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "REELFORGE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Profiles accepted even while no worker announces them (comma-separated).
    #[arg(long, env = "REELFORGE_PROFILES", value_delimiter = ',', default_value = "default")]
    profiles: Vec<String>,
    /// Most jobs of one tenant dispatched or running at once.
    #[arg(long, env = "REELFORGE_TENANT_MAX_IN_FLIGHT", default_value_t = 64)]
    tenant_max_in_flight: usize,
    /// Submissions admitted concurrently.
    #[arg(long, env = "REELFORGE_ADMISSION_PREFETCH", default_value_t = 256)]
    prefetch: u16,
    /// Accept `file:///` media (single-machine setups and tests; never for shared fleets).
    #[arg(long, env = "REELFORGE_ALLOW_LOCAL_MEDIA")]
    allow_local_media: bool,
    /// Seconds a finished job stays in the job table (status queries); its `result.json` stays
    /// in the store.
    #[arg(long, env = "REELFORGE_JOB_RETENTION_S", default_value_t = 86_400)]
    job_retention_s: u64,
    /// Most finished jobs kept in the job table; the oldest are forgotten first.
    #[arg(long, env = "REELFORGE_MAX_FINISHED_JOBS", default_value_t = 100_000)]
    max_finished_jobs: usize,
    /// Memory a worker gives one job, in MiB: jobs estimated over it are refused at admission
    /// (`job_too_large`).
    #[arg(long, env = "REELFORGE_JOB_MEMORY_MIB", default_value_t = 16_384)]
    job_memory_mib: u64,
    /// The API's bearer tokens (a JSON file of SHA-256 digests and scopes; `reelforge token
    /// new` makes entries). Without it the API is open to anyone who reaches it.
    #[arg(long, env = "REELFORGE_API_TOKENS")]
    api_tokens: Option<PathBuf>,
    /// Submissions a second each tenant may make through this replica's API, on average (0: no
    /// limit); over it the API answers 429.
    #[arg(long, env = "REELFORGE_TENANT_SUBMIT_RATE", default_value_t = 50.0)]
    tenant_submit_rate: f64,
    /// The burst a tenant may submit at once above its rate.
    #[arg(long, env = "REELFORGE_TENANT_SUBMIT_BURST", default_value_t = 200)]
    tenant_submit_burst: u32,
    /// Bind AMQP submissions to tenants: a submission must carry the AMQP `user_id` of its
    /// tenant's RabbitMQ user (or of a trusted user); others are dead-lettered unrun.
    #[arg(long, env = "REELFORGE_AMQP_TENANT_BINDING")]
    amqp_tenant_binding: bool,
    /// RabbitMQ users that may submit for any tenant (services such as the instructor; the
    /// scheduler's own user always may). Comma-separated.
    #[arg(long, env = "REELFORGE_TRUSTED_AMQP_USERS", value_delimiter = ',')]
    trusted_amqp_users: Vec<String>,
}

/// `reelforge worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Worker id, unique per worker.
    #[arg(long, env = "REELFORGE_WORKER_ID")]
    id: Option<String>,
    /// Address of the worker's HTTP server (`/metrics`, `/healthz`, `/readyz`); port 0 picks one.
    #[arg(long, env = "REELFORGE_WORKER_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Model profiles served (comma-separated).
    #[arg(long, env = "REELFORGE_PROFILES", value_delimiter = ',', default_value = "default")]
    profiles: Vec<String>,
    /// Job kinds served (comma-separated: edit, create).
    #[arg(long, env = "REELFORGE_KINDS", value_delimiter = ',', default_value = "edit,create")]
    kinds: Vec<JobKind>,
    /// Tasks run at once (the work queues' prefetch).
    #[arg(long, env = "REELFORGE_CAPACITY", default_value_t = 1)]
    capacity: usize,
    /// Directory outputs are stored under (the local store; used when no --s3-bucket is set).
    #[arg(long, env = "REELFORGE_STORE_DIR", default_value = "reelforge-store")]
    store_dir: PathBuf,
    /// S3 bucket for outputs; inputs are read from `s3://` URIs. Credentials and region come
    /// from the standard AWS environment and config chain.
    #[arg(long, env = "REELFORGE_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3 endpoint of a self-hosted server (e.g. `http://garage:3900`).
    #[arg(long, env = "REELFORGE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region (else from the AWS chain).
    #[arg(long, env = "REELFORGE_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style S3 addressing (self-hosted servers).
    #[arg(long, env = "REELFORGE_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Directory for per-task scratch files.
    #[arg(long, env = "REELFORGE_SCRATCH_DIR")]
    scratch_dir: Option<PathBuf>,
    /// Attempts before a task is dead-lettered.
    #[arg(long, env = "REELFORGE_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Retry ladder delays in milliseconds (comma-separated, shortest first).
    #[arg(long, env = "REELFORGE_RETRY_DELAYS_MS", value_delimiter = ',', default_value = "1000,5000,30000")]
    retry_delays_ms: Vec<u32>,
    /// Seconds between heartbeats.
    #[arg(long, env = "REELFORGE_HEARTBEAT_S", default_value_t = 5)]
    heartbeat_s: u64,
    /// Seconds running tasks get to finish after SIGTERM before they are requeued.
    #[arg(long, env = "REELFORGE_GRACE_S", default_value_t = 30)]
    grace_s: u64,
    /// Exit after this many idle seconds (Kubernetes batch Jobs).
    #[arg(long, env = "REELFORGE_EXIT_WHEN_IDLE_S")]
    exit_when_idle_s: Option<u64>,
    /// Input buckets every tenant may read (comma-separated).
    #[arg(long, env = "REELFORGE_SHARED_INPUT_BUCKETS", value_delimiter = ',')]
    shared_input_buckets: Vec<String>,
    /// Accept `file:///` media (single-machine setups and tests; never for shared fleets).
    #[arg(long, env = "REELFORGE_ALLOW_LOCAL_MEDIA")]
    allow_local_media: bool,
    /// Compute device: `auto` (the first CUDA GPU in the CUDA build when usable, else the CPU),
    /// `cpu`, `cuda` or `cuda:N`. The choice is logged at start.
    #[arg(long, env = "REELFORGE_DEVICE", default_value = "auto")]
    device: worker::DeviceChoice,
    /// An MCVD checkpoint directory (`config.json` + `model.safetensors`) for the creator.
    #[arg(long, env = "REELFORGE_MCVD")]
    mcvd: Option<PathBuf>,
    /// Most rows (frames blocks, summed over tasks) in one batched model forward pass.
    #[arg(long, env = "REELFORGE_BATCH_MAX_ROWS", default_value_t = 32)]
    batch_max_rows: usize,
    /// Longest a model call waits for other tasks' calls to join its batch, in milliseconds.
    #[arg(long, env = "REELFORGE_BATCH_WINDOW_MS", default_value_t = 5)]
    batch_window_ms: u64,
    /// A CLIP checkpoint directory (Hugging Face layout: `config.json`, `model.safetensors`,
    /// `tokenizer.json`) for the editor's clip and thumbnail selection.
    #[arg(long, env = "REELFORGE_CLIP")]
    clip: Option<PathBuf>,
    /// Run CLIP in f16 (for GPUs: half the memory traffic, tensor-core matmuls; on the CPU f16
    /// is slower than f32).
    #[arg(long, env = "REELFORGE_CLIP_F16")]
    clip_f16: bool,
    /// A JSON file of unsafe concepts for the CLIP safety filter (needs `--clip`); outputs
    /// matching one are withheld.
    #[arg(long, env = "REELFORGE_SAFETY_CONCEPTS")]
    safety_concepts: Option<PathBuf>,
    /// PEM certificate chain (signer first) for C2PA manifests on every output (with
    /// `--c2pa-key`).
    #[arg(long, env = "REELFORGE_C2PA_CERT", requires = "c2pa_key")]
    c2pa_cert: Option<PathBuf>,
    /// PEM (PKCS#8) private key of the C2PA signing certificate.
    #[arg(long, env = "REELFORGE_C2PA_KEY", requires = "c2pa_cert")]
    c2pa_key: Option<PathBuf>,
    /// C2PA signing algorithm: es256, es384, es512, ps256, ps384, ps512, ed25519.
    #[arg(long, env = "REELFORGE_C2PA_ALG", default_value = "es256")]
    c2pa_alg: String,
    /// A Stable Diffusion directory in the diffusers layout (SD 1.5, 2.1, sd-turbo) for generated
    /// thumbnails, loaded at start.
    #[arg(long, env = "REELFORGE_SD")]
    sd: Option<PathBuf>,
    #[command(flatten)]
    watermark: super::watermark::KeyArgs,
    /// Run no pipeline: commit an empty success for every task (dispatch benchmarks only).
    #[arg(long, hide = true)]
    noop_pipeline: bool,
}

/// `reelforge submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The job document (JSON).
    file: PathBuf,
    /// Follow the job's events and exit with its outcome (0: succeeded).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_s: u64,
}

/// `reelforge status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job id.
    job_id: String,
    /// The scheduler's HTTP API.
    #[arg(long, env = "REELFORGE_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// A bearer token for the API (when it has a tokens file).
    #[arg(long, env = "REELFORGE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}

fn default_id(role: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "local".into());
    format!("{role}-{host}-{}", std::process::id())
}

pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.unwrap_or_else(|| default_id("scheduler"));
    // The user this replica publishes as: trusted for every tenant when submissions are bound.
    let own_user = bus::amqp::user_of(&args.broker.amqp_url).context("--amqp-url")?;
    let name = format!("reelforge scheduler {id}");
    let bus: Arc<dyn Bus> = Arc::new(args.broker.connect(Some(&name)).await?);
    let cfg = SchedulerConfig {
        id,
        allow_local_media: args.allow_local_media,
        prefetch: args.prefetch,
        profiles: args.profiles,
        tenant_max_in_flight: args.tenant_max_in_flight,
        job_memory_bytes: args.job_memory_mib.saturating_mul(1 << 20),
        tenant_binding: args.amqp_tenant_binding.then(|| scheduler::TenantBinding {
            trusted_users: args.trusted_amqp_users.iter().cloned().chain([own_user.clone()]).collect(),
        }),
        layout: args.broker.layout(),
        retention: scheduler::Retention {
            finished: std::time::Duration::from_secs(args.job_retention_s),
            max_finished: args.max_finished_jobs,
            ..Default::default()
        },
        ..Default::default()
    };
    let tokens = match &args.api_tokens {
        Some(path) => {
            let t = scheduler::auth::Tokens::load(path)?;
            info!(tokens = t.len(), file = %path.display(), "API tokens loaded");
            Some(Arc::new(t))
        }
        None => {
            warn!("no --api-tokens: the HTTP API is open to anyone who can reach it (development only)");
            None
        }
    };
    let sched = Scheduler::new(bus.clone(), cfg.clone());
    let state = scheduler::api::ApiState {
        bus,
        table: sched.table(),
        metrics: sched.metrics(),
        validation: ValidationContext { allow_local_media: cfg.allow_local_media },
        profiles: cfg.profiles.clone(),
        layout: cfg.layout,
        ready: sched.ready_flag(),
        job_memory_bytes: cfg.job_memory_bytes,
        tokens,
        rate: Arc::new(scheduler::api::RateLimit::new(args.tenant_submit_rate, args.tenant_submit_burst)),
        publish_as: cfg.tenant_binding.is_some().then_some(own_user),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    info!(addr = %listener.local_addr()?, "HTTP API listening");
    let stop = shutdown_on_signals();
    let api = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, scheduler::api::router(state)).with_graceful_shutdown(stop.cancelled_owned()).await
        }
    });
    sched.run(stop.clone()).await?;
    stop.cancel();
    api.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let name = format!("reelforge worker {}", args.id.as_deref().unwrap_or("(unnamed)"));
    let bus: Arc<dyn Bus> = Arc::new(args.broker.connect(Some(&name)).await?);
    let store: Arc<dyn Store> = match &args.s3_bucket {
        Some(bucket) => {
            let mut cfg = S3Config::new(bucket.clone());
            cfg.endpoint = args.s3_endpoint.clone();
            cfg.region = args.s3_region.clone();
            cfg.force_path_style = args.s3_path_style;
            cfg.shared_input_buckets = args.shared_input_buckets.clone();
            Arc::new(S3Store::connect(cfg).await.context("connecting to S3")?)
        }
        None => Arc::new(LocalStore::new(&args.store_dir)?),
    };
    let cfg = WorkerConfig {
        id: args.id.unwrap_or_else(|| default_id("worker")),
        profiles: args.profiles,
        kinds: args.kinds,
        capacity: args.capacity.max(1),
        scratch_dir: args.scratch_dir.unwrap_or_else(std::env::temp_dir),
        allow_local_media: args.allow_local_media,
        shared_input_buckets: args.shared_input_buckets,
        max_attempts: args.max_attempts.max(1),
        retry_delays_ms: args.retry_delays_ms,
        layout: args.broker.layout(),
        heartbeat_interval: Duration::from_secs(args.heartbeat_s.max(1)),
        grace: Duration::from_secs(args.grace_s),
        exit_when_idle: args.exit_when_idle_s.map(Duration::from_secs),
        noop_pipeline: args.noop_pipeline,
        mcvd: args.mcvd,
        device: args.device,
        batch: worker::batching::BatchOptions {
            max_rows: args.batch_max_rows.max(1),
            window: Duration::from_millis(args.batch_window_ms),
        },
        clip: args.clip,
        clip_f16: args.clip_f16,
        safety_concepts: args.safety_concepts,
        c2pa: args.c2pa_cert.zip(args.c2pa_key).map(|(c, k)| (c, k, args.c2pa_alg)),
        sd: args.sd,
        watermark_key: args.watermark.key(),
        ..Default::default()
    };
    let worker = Worker::new(bus, store, cfg);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    info!(addr = %listener.local_addr()?, "metrics and probes listening");
    let router = worker::http::router(worker.http_state());
    let stop = shutdown_on_signals();
    let http_stop = CancellationToken::new();
    let http = tokio::spawn({
        let http_stop = http_stop.clone();
        async move { axum::serve(listener, router).with_graceful_shutdown(http_stop.cancelled_owned()).await }
    });
    // The HTTP server outlives the drain, so /metrics and /healthz answer until the worker exits.
    worker.run(stop).await?;
    http_stop.cancel();
    http.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    // The scheduler validates too; refusing here saves a round trip.
    let job = match Job::from_json(&body, &ValidationContext { allow_local_media: true }) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("{}: {e}", e.code());
            return Ok(ExitCode::from(1));
        }
    };
    let bus = args.broker.connect(None).await?;
    args.broker.layout().declare_core(&bus).await?;
    let mut feed = None;
    if args.wait {
        let owner = format!("submit-{}-{}", job.job_id(), std::process::id());
        let pattern = format!("job.{}.#", job.job_id());
        let q = topology::declare_feed(&bus, &owner, "events", topology::EVENTS_EXCHANGE, &pattern).await?;
        feed = Some(bus.consume(&q, 64).await?);
    }
    let msg = Message::new(job.job_id().to_string(), body).with_priority(job.priority());
    bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, msg).await?;
    println!("submitted {}", job.job_id());
    let Some(mut feed) = feed else { return Ok(ExitCode::SUCCESS) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        let d = tokio::select! {
            d = feed.next() => d.context("event feed closed")??,
            _ = tokio::time::sleep_until(deadline) => bail!("no result within {} s", args.timeout_s),
        };
        let ev: Event = serde_json::from_slice(&d.message.body)?;
        d.ack().await?;
        match ev.event {
            EventBody::State { state, detail } => {
                println!("{} {}", state.as_str(), detail.unwrap_or_default());
            }
            EventBody::Progress { stage, done, total } => println!("  {} {done}/{total}", stage.as_str()),
            EventBody::Finished { result } => {
                println!("{}", serde_json::to_string_pretty(&result)?);
                return Ok(if result.status == JobStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
        }
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/jobs/{}", args.api.trim_end_matches('/'), args.job_id);
    let mut req = reqwest::Client::new().get(&url);
    if let Some(token) = &args.token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let code = resp.status();
    let body: serde_json::Value = resp.json().await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if code.is_success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
