//! `metrics` owns a worker's Prometheus metrics: their names, help texts, labels and buckets,
//! the [`Registry`] they live in (one per worker, never the process-global default), and the
//! text exposition served at `/metrics`. GPU gauges exist only where `nvidia-smi` reports a GPU;
//! on a CPU-only machine they are not registered at all rather than reported as zero.

use std::process::Command;
use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use protocol::{JobStatus, StageTiming};

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric was malformed or registered twice.
    #[error(transparent)]
    Prometheus(#[from] prometheus::Error),
}

/// Buckets of whole-job durations, seconds: sub-second no-ops to half-hour diffusion runs.
const JOB_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0];
/// Buckets of one stage's duration, seconds.
const STAGE_BUCKETS: &[f64] = &[0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
/// Buckets of tasks per model batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
/// Buckets of model load times, seconds.
const LOAD_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0];

/// A worker's metrics. Cheap to share behind an `Arc`; every handle updates the same registry.
pub struct WorkerMetrics {
    registry: Registry,
    /// `reelforge_jobs_total{kind,outcome}`: results this worker committed (outcome = the
    /// result's status: succeeded, failed, cancelled, expired).
    pub jobs: IntCounterVec,
    /// `reelforge_job_duration_seconds{kind,outcome}`: from taking a task to committing its result.
    pub job_duration: HistogramVec,
    /// `reelforge_job_queue_wait_seconds{kind}`: from dispatch (or the last retry) to start.
    pub queue_wait: HistogramVec,
    /// `reelforge_stage_duration_seconds{stage}`: each pipeline stage of a succeeded job.
    pub stage_duration: HistogramVec,
    /// `reelforge_retries_total{kind}`: tasks sent up the retry ladder.
    pub retries: IntCounterVec,
    /// `reelforge_dead_lettered_total{kind}`: tasks sent to the dead-letter queue.
    pub dead_lettered: IntCounterVec,
    /// `reelforge_tasks_put_back_total{kind}`: tasks interrupted by shutdown and put back.
    pub put_back: IntCounterVec,
    /// `reelforge_tasks_in_flight`: tasks running now.
    pub in_flight: IntGauge,
    /// `reelforge_worker_capacity`: tasks this worker runs at once.
    pub capacity: IntGauge,
    /// `reelforge_batch_size{model}`: tasks whose model calls shared one forward pass
    /// ([`crate::batching`]).
    pub batch_size: HistogramVec,
    /// `reelforge_model_load_seconds{model}`: time to load a model.
    pub model_load: HistogramVec,
    gpu: Option<GpuGauges>,
}

/// The GPU gauges, registered only when a GPU is present.
struct GpuGauges {
    used: GaugeVec,
    total: GaugeVec,
    utilisation: GaugeVec,
}

/// One GPU's reading from `nvidia-smi`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// The GPU's index.
    pub index: String,
    /// Memory in use, bytes.
    pub used_bytes: f64,
    /// Memory in all, bytes.
    pub total_bytes: f64,
    /// Utilisation over the last sample period, 0 to 1.
    pub utilisation: f64,
}

impl WorkerMetrics {
    /// Registers every metric in a fresh registry; the build info says `version`. `gpus` are the
    /// GPUs found at start (see [`read_gpus`]); with none, no GPU metric is registered.
    pub fn new(version: &str, gpus: &[GpuReading]) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("reelforge_build_info", "Build of this reelforge process; always 1."),
            &["version", "role"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[version, "worker"]).set(1);
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, MetricsError>(h)
        };
        let jobs = counter(
            "reelforge_jobs_total",
            "Job results committed by this worker, by kind and status.",
            &["kind", "outcome"],
        )?;
        let job_duration = histogram(
            "reelforge_job_duration_seconds",
            "Time from taking a task to committing its result.",
            &["kind", "outcome"],
            JOB_BUCKETS,
        )?;
        let queue_wait = histogram(
            "reelforge_job_queue_wait_seconds",
            "Time a task waited on its work queue, from dispatch (or retry) to start.",
            &["kind"],
            JOB_BUCKETS,
        )?;
        let stage_duration = histogram(
            "reelforge_stage_duration_seconds",
            "Duration of one pipeline stage of a succeeded job.",
            &["stage"],
            STAGE_BUCKETS,
        )?;
        let retries = counter("reelforge_retries_total", "Tasks sent up the retry ladder.", &["kind"])?;
        let dead_lettered = counter(
            "reelforge_dead_lettered_total",
            "Tasks sent to the dead-letter queue after their last attempt.",
            &["kind"],
        )?;
        let put_back = counter(
            "reelforge_tasks_put_back_total",
            "Tasks interrupted by shutdown and put back on their work queue unchanged.",
            &["kind"],
        )?;
        let in_flight = IntGauge::new("reelforge_tasks_in_flight", "Tasks this worker is running now.")?;
        registry.register(Box::new(in_flight.clone()))?;
        let capacity = IntGauge::new("reelforge_worker_capacity", "Tasks this worker runs at once.")?;
        registry.register(Box::new(capacity.clone()))?;
        let batch_size = histogram(
            "reelforge_batch_size",
            "Tasks whose model calls shared one forward pass, by model.",
            &["model"],
            BATCH_BUCKETS,
        )?;
        let model_load =
            histogram("reelforge_model_load_seconds", "Time to load a model, by model id.", &["model"], LOAD_BUCKETS)?;
        let gpu = if gpus.is_empty() {
            None
        } else {
            let gauge = |name: &str, help: &str| -> Result<GaugeVec, MetricsError> {
                let g = GaugeVec::new(Opts::new(name, help), &["gpu"])?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
            Some(GpuGauges {
                used: gauge("reelforge_gpu_memory_used_bytes", "GPU memory in use.")?,
                total: gauge("reelforge_gpu_memory_total_bytes", "GPU memory in all.")?,
                utilisation: gauge("reelforge_gpu_utilization_ratio", "GPU utilisation, 0 to 1.")?,
            })
        };
        let m = WorkerMetrics {
            registry,
            jobs,
            job_duration,
            queue_wait,
            stage_duration,
            retries,
            dead_lettered,
            put_back,
            in_flight,
            capacity,
            batch_size,
            model_load,
            gpu,
        };
        m.set_gpus(gpus);
        Ok(m)
    }

    /// Counts a committed result and its duration, and, when it succeeded, its stage timings.
    pub fn observe_result(&self, kind: &str, status: JobStatus, elapsed: Duration, timings: &[StageTiming]) {
        let outcome = outcome_label(status);
        self.jobs.with_label_values(&[kind, outcome]).inc();
        self.job_duration.with_label_values(&[kind, outcome]).observe(elapsed.as_secs_f64());
        if status == JobStatus::Succeeded {
            for t in timings {
                self.stage_duration.with_label_values(&[t.stage.as_str()]).observe(t.ms / 1e3);
            }
        }
    }

    /// True when GPU gauges are registered.
    pub fn has_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Updates the GPU gauges (no-op without a GPU).
    pub fn set_gpus(&self, gpus: &[GpuReading]) {
        let Some(g) = &self.gpu else { return };
        for r in gpus {
            g.used.with_label_values(&[&r.index]).set(r.used_bytes);
            g.total.with_label_values(&[&r.index]).set(r.total_bytes);
            g.utilisation.with_label_values(&[&r.index]).set(r.utilisation);
        }
    }

    /// The text exposition format (what `/metrics` serves).
    pub fn render(&self) -> Result<String, MetricsError> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

/// The `outcome` label of a result status.
pub fn outcome_label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Expired => "expired",
    }
}

/// Reads the GPUs through `nvidia-smi`; empty when it is missing or reports none (no driver,
/// no device). A single gauge per GPU keeps this free of any CUDA dependency.
pub fn read_gpus() -> Vec<GpuReading> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=index,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits"])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// Parses `nvidia-smi --query-gpu=index,memory.used,memory.total,utilization.gpu
/// --format=csv,noheader,nounits` (MiB, MiB, percent); lines it cannot read are skipped.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuReading> {
    const MIB: f64 = 1024.0 * 1024.0;
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, used, total, util] = f.as_slice() else { return None };
            Some(GpuReading {
                index: (*index).to_owned(),
                used_bytes: used.parse::<f64>().ok()? * MIB,
                total_bytes: total.parse::<f64>().ok()? * MIB,
                utilisation: util.parse::<f64>().ok()? / 100.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Stage;

    #[test]
    fn exposition_has_the_series_and_no_gpu_without_one() {
        let m = WorkerMetrics::new("1.2.3", &[]).unwrap();
        m.observe_result(
            "edit",
            JobStatus::Succeeded,
            Duration::from_millis(1500),
            &[StageTiming { stage: Stage::Decode, ms: 250.0 }],
        );
        m.batch_size.with_label_values(&["mcvd"]).observe(1.0);
        let text = m.render().unwrap();
        assert!(text.contains(r#"reelforge_build_info{role="worker",version="1.2.3"} 1"#), "{text}");
        assert!(text.contains(r#"reelforge_jobs_total{kind="edit",outcome="succeeded"} 1"#), "{text}");
        assert!(text.contains(r#"reelforge_stage_duration_seconds_bucket{stage="decode",le="0.25"} 1"#), "{text}");
        assert!(text.contains(r#"reelforge_job_duration_seconds_sum{kind="edit",outcome="succeeded"} 1.5"#));
        assert!(text.contains(r#"reelforge_batch_size_count{model="mcvd"} 1"#), "{text}");
        assert!(!text.contains("gpu"), "{text}");
        assert!(!m.has_gpu());
    }

    #[test]
    fn gpu_gauges_follow_nvidia_smi() {
        let gpus = parse_nvidia_smi("0, 1024, 81559, 37\n1, 0, 81559, 0\ngarbage\n");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].used_bytes, 1024.0 * 1024.0 * 1024.0);
        let m = WorkerMetrics::new("x", &gpus).unwrap();
        let text = m.render().unwrap();
        assert!(text.contains(r#"reelforge_gpu_utilization_ratio{gpu="0"} 0.37"#), "{text}");
        assert!(text.contains(r#"reelforge_gpu_memory_used_bytes{gpu="0"} 1073741824"#), "{text}");
    }
}
