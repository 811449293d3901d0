//! `reelforge demo`: the embedded mode. The scheduler and a worker run in this process over the
//! in-process bus and a local-directory store; one edit and two create jobs go through the same
//! admission, routing, pipelines, storage and events as in the fleet. Progress bars follow the
//! events; a table of the outputs ends the run.
//!
//! The creator runs MCVD: unless `--mcvd DIR` names a checkpoint, the demo first trains the
//! tiny configuration on the sample video itself for `--mcvd-steps` steps (batch 4; tens of
//! seconds on two cores, so the output is still mostly noise), then continues the video (`predict`) and makes a
//! new one from nothing (`generate`). The editor selects clips and the thumbnail with CLIP and
//! generates a second thumbnail with Stable Diffusion (image-to-image from the selected frame):
//! the tiny models of `models init-tiny` unless `--models DIR` holds real checkpoints
//! (`DIR/clip/`, `DIR/sd/`, `DIR/mcvd/`, in the layouts `models init-tiny` writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::memory::MemoryBus;
use bus::{Bus, Message, QueueSpec, topology};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use protocol::{Event, EventBody, JobResult, JobStatus};
use scheduler::{Scheduler, SchedulerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use worker::models::mcvd::McvdConfig;
use worker::storage::local::LocalStore;
use worker::training::data::{TrainData, VideoClips};
use worker::training::{self, McvdTrainer};
use worker::{Worker, WorkerConfig};

/// Arguments of `reelforge demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A video to edit and continue; a synthetic sample is made when absent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where outputs, the sample and scratch files go.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// A models directory (`clip/`, `sd/`, `mcvd/`), as `models init-tiny` writes; tiny CLIP
    /// and SD and a freshly trained tiny MCVD stand in for what it lacks.
    #[arg(long)]
    models: Option<PathBuf>,
    /// An MCVD checkpoint for the creator (overrides `--models`); without either the demo trains
    /// a tiny one.
    #[arg(long)]
    mcvd: Option<PathBuf>,
    /// Compute device for the models: `auto` (CUDA in the CUDA build when usable, else the CPU),
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    device: worker::DeviceChoice,
    /// Training steps of the demo's tiny MCVD (0: untrained, as `models init-tiny` writes).
    #[arg(long, default_value_t = DEMO_MCVD_STEPS)]
    mcvd_steps: usize,
}

/// Default training steps of the demo's tiny MCVD.
const DEMO_MCVD_STEPS: usize = 20;
/// Batch size of the demo's training (small, to keep the demo fast on two cores).
const DEMO_MCVD_BATCH: usize = 4;

const DEMO_EVENTS_QUEUE: &str = "reelforge.demo.events";

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let input = match &args.input {
        Some(p) => p.canonicalize().with_context(|| format!("input {}", p.display()))?,
        None => {
            let p = out.join("sample.mp4");
            eprintln!("making a 12 s sample video: {}", p.display());
            let path = p.clone();
            tokio::task::spawn_blocking(move || worker::samples::write_sample_video(&path, 12.0, 25, 640, 360, 3))
                .await??;
            p
        }
    };

    let given =
        |name: &str, marker: &str| args.models.as_ref().map(|m| m.join(name)).filter(|d| d.join(marker).is_file());
    let sd = match given("sd", "model_index.json") {
        Some(dir) => dir,
        None => {
            let dir = out.join("models").join("sd");
            super::models::init_tiny_sd(&dir)?;
            dir
        }
    };
    let clip = match given("clip", "config.json") {
        Some(dir) => dir,
        None => {
            let dir = out.join("models").join("clip");
            super::models::init_tiny_clip(&dir)?;
            dir
        }
    };
    let mcvd = match args.mcvd.clone().or_else(|| given("mcvd", "config.json")) {
        Some(dir) => dir,
        None => {
            let dir = out.join("models").join("mcvd");
            let (video, steps) = (input.clone(), args.mcvd_steps);
            let ckpt = dir.clone();
            tokio::task::spawn_blocking(move || train_demo_mcvd(&video, &ckpt, steps)).await??;
            dir
        }
    };

    let bus = Arc::new(MemoryBus::new());
    let store = Arc::new(LocalStore::new(out.join("store"))?);
    topology::Layout::default().declare_core(bus.as_ref()).await?;
    bus.declare_queue(&QueueSpec::transient(DEMO_EVENTS_QUEUE)).await?;
    bus.bind(DEMO_EVENTS_QUEUE, topology::EVENTS_EXCHANGE, "job.#").await?;
    let mut events = bus.consume(DEMO_EVENTS_QUEUE, 256).await?;

    let stop = CancellationToken::new();
    let sched = Scheduler::new(bus.clone(), SchedulerConfig { allow_local_media: true, ..Default::default() });
    let wcfg = WorkerConfig {
        id: "demo-worker".into(),
        capacity: 2,
        scratch_dir: out.join("scratch"),
        allow_local_media: true,
        mcvd: Some(mcvd),
        clip: Some(clip),
        sd: Some(sd),
        device: args.device,
        ..Default::default()
    };
    let worker = Worker::new(bus.clone(), store, wcfg);
    let sched_task = tokio::spawn(sched.run(stop.clone()));
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let source = format!("file://{}", input.display());
    let jobs = [
        json!({
            "v": 1, "kind": "edit", "job_id": format!("demo-edit-{stamp}"), "tenant": "demo", "priority": 5,
            "source": source,
            "guidance": { "instruction": "the most striking moments" },
            "options": { "clips": 3, "clip_seconds_min": 2.0, "clip_seconds_max": 3.0, "thumbnail": "both",
                "generate": { "steps": 8, "strength": 0.6, "candidates": 2, "seed": 7 } }
        }),
        json!({
            "v": 1, "kind": "create", "job_id": format!("demo-create-{stamp}"), "tenant": "demo", "priority": 5,
            "mode": "predict",
            "conditioning": { "source": source, "start_s": 1.0, "end_s": 2.0 },
            "frames": 16, "fps": 8, "size": { "width": 256, "height": 144 }, "seed": 7,
            "sampler": { "kind": "ddim", "steps": 20 }
        }),
        json!({
            "v": 1, "kind": "create", "job_id": format!("demo-generate-{stamp}"), "tenant": "demo", "priority": 5,
            "mode": "generate",
            "frames": 8, "fps": 8, "size": { "width": 256, "height": 144 }, "seed": 8,
            "sampler": { "kind": "ddim", "steps": 20 }
        }),
    ];

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>28} {bar:30.cyan/blue} {pos:>4}/{len:4} {msg}")?;
    let mut pending: BTreeMap<String, ProgressBar> = BTreeMap::new();
    for job in &jobs {
        let id = job["job_id"].as_str().expect("set above").to_owned();
        let bar = bars.add(ProgressBar::new(1).with_style(style.clone()).with_prefix(id.clone()));
        bar.set_message("submitted");
        pending.insert(id.clone(), bar);
        // Exactly what `reelforge submit` sends to a fleet.
        bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, Message::new(id, serde_json::to_vec(job)?)).await?;
    }

    let mut results: Vec<JobResult> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    while !pending.is_empty() {
        let delivery = tokio::select! {
            d = events.next() => d.context("event feed closed")??,
            _ = tokio::time::sleep_until(deadline) => bail!("jobs did not finish within {} s", args.timeout_s),
        };
        let event: Event = serde_json::from_slice(&delivery.message.body)?;
        delivery.ack().await?;
        let Some(bar) = pending.get(event.job_id.as_str()) else {
            continue;
        };
        match event.event {
            EventBody::State { state, .. } => bar.set_message(state.as_str()),
            EventBody::Progress { stage, done, total } => {
                bar.set_length(total.max(done).max(1));
                bar.set_position(done);
                bar.set_message(stage.as_str());
            }
            EventBody::Finished { result } => {
                bar.finish_with_message(format!("{:?}", result.status).to_lowercase());
                pending.remove(event.job_id.as_str());
                results.push(*result);
            }
        }
    }
    stop.cancel();
    sched_task.await??;
    worker_task.await??;
    drop(bars);

    print_table(&results)?;
    let failed: Vec<_> = results.iter().filter(|r| r.status != JobStatus::Succeeded).collect();
    for r in &failed {
        let e = r.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
        eprintln!("job {} {:?}: {e}", r.job_id, r.status);
    }
    println!("outputs and result.json files are under {}", out.join("store").display());
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Trains the tiny MCVD on `video` for `steps` steps into `dir`, with a progress bar.
fn train_demo_mcvd(video: &Path, dir: &Path, steps: usize) -> anyhow::Result<()> {
    let cfg = McvdConfig::tiny();
    if steps == 0 {
        return super::models::init_tiny_mcvd(dir);
    }
    let data = TrainData::Videos(VideoClips::load_files(&[video.to_owned()], &cfg)?);
    let mut trainer = McvdTrainer::new(&cfg, super::models::TINY_SEED)?;
    let bar = ProgressBar::new(steps as u64)
        .with_style(ProgressStyle::with_template("{prefix:>28} {bar:30.cyan/blue} {pos:>4}/{len:4} {msg}")?);
    bar.set_prefix("training a tiny MCVD");
    training::train(&mut trainer, &data, steps, DEMO_MCVD_BATCH, dir, 0, |_, loss| {
        bar.set_message(format!("loss {loss:.3}"));
        bar.inc(1);
    })?;
    bar.finish_with_message(format!("saved to {}", dir.display()));
    Ok(())
}

fn print_table(results: &[JobResult]) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["job", "kind", "output", "duration", "size", "bytes", "score"]);
    for r in results {
        for o in &r.outputs {
            let path = o.uri.strip_prefix("file://").unwrap_or(&o.uri);
            let size = worker::media::probe(Path::new(path), &Default::default())
                .map(|i| {
                    let (w, h) = i.display_size();
                    format!("{w}×{h}")
                })
                .unwrap_or_else(|_| "?".into());
            let duration = match (o.duration_s, o.start_s, o.end_s) {
                (Some(d), Some(s), Some(e)) => format!("{d:.2} s ({s:.2}–{e:.2})"),
                (Some(d), _, _) => format!("{d:.2} s"),
                (None, Some(s), _) => format!("frame @ {s:.2} s"),
                _ => "-".into(),
            };
            table.add_row([
                r.job_id.to_string(),
                format!("{:?}", o.kind).to_lowercase(),
                path.to_owned(),
                duration,
                size,
                o.bytes.to_string(),
                o.score.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    println!("{table}");
    Ok(())
}
