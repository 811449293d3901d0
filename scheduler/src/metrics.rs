//! `metrics` owns a scheduler replica's Prometheus metrics: their names, help texts and labels,
//! the [`Registry`] they live in (one per scheduler, never the process-global default), the
//! [`poll`] loop that samples queue depths from the broker and the job table's in-flight counts,
//! and the text exposition served at `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, topology};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use protocol::{JobKind, JobState};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admission::Outcome;
use crate::state::JobTable;

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric was malformed or registered twice.
    #[error(transparent)]
    Prometheus(#[from] prometheus::Error),
}

/// The states a job counts as in flight in.
const IN_FLIGHT_STATES: [JobState; 4] = [JobState::Queued, JobState::Dispatched, JobState::Running, JobState::Retrying];

/// A scheduler replica's metrics.
pub struct SchedulerMetrics {
    registry: Registry,
    /// `reelforge_admissions_total{outcome}`: submissions admitted by this replica, by what
    /// admission did (dispatched, held, ended, duplicate, unconfirmed).
    pub admissions: IntCounterVec,
    /// `reelforge_queue_depth{queue}`: messages ready on the submit, held, dead-letter and work
    /// queues (unacknowledged ones not counted), sampled every poll.
    pub queue_depth: IntGaugeVec,
    /// `reelforge_jobs_in_flight{state}`: jobs this replica knows in a non-terminal state.
    pub jobs_in_flight: IntGaugeVec,
    /// `reelforge_workers_live`: workers heard from recently.
    pub workers_live: IntGauge,
    /// `reelforge_fleet_capacity`: tasks the live workers run at once, summed.
    pub fleet_capacity: IntGauge,
    /// `reelforge_fleet_tasks_in_flight`: tasks the live workers report running, summed.
    pub fleet_in_flight: IntGauge,
}

impl SchedulerMetrics {
    /// Registers every metric in a fresh registry; the build info says `version`.
    pub fn new(version: &str) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("reelforge_build_info", "Build of this reelforge process; always 1."),
            &["version", "role"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[version, "scheduler"]).set(1);
        let admissions = IntCounterVec::new(
            Opts::new("reelforge_admissions_total", "Submissions admitted by this replica, by outcome."),
            &["outcome"],
        )?;
        registry.register(Box::new(admissions.clone()))?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("reelforge_queue_depth", "Messages ready on a queue (unacknowledged ones not counted)."),
            &["queue"],
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        let jobs_in_flight = IntGaugeVec::new(
            Opts::new("reelforge_jobs_in_flight", "Jobs this replica knows in a non-terminal state."),
            &["state"],
        )?;
        registry.register(Box::new(jobs_in_flight.clone()))?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let workers_live = gauge("reelforge_workers_live", "Workers heard from within three heartbeat intervals.")?;
        let fleet_capacity = gauge("reelforge_fleet_capacity", "Tasks the live workers run at once, summed.")?;
        let fleet_in_flight = gauge("reelforge_fleet_tasks_in_flight", "Tasks the live workers report running.")?;
        Ok(SchedulerMetrics {
            registry,
            admissions,
            queue_depth,
            jobs_in_flight,
            workers_live,
            fleet_capacity,
            fleet_in_flight,
        })
    }

    /// Counts one admission's outcome (`None`: the broker did not confirm; requeued).
    pub fn admitted(&self, outcome: Option<Outcome>) {
        let label = match outcome {
            Some(Outcome::Dispatched) => "dispatched",
            Some(Outcome::Held) => "held",
            Some(Outcome::Released) => "released",
            Some(Outcome::Ended) => "ended",
            Some(Outcome::Duplicate) => "duplicate",
            Some(Outcome::Forbidden) => "forbidden",
            None => "unconfirmed",
        };
        self.admissions.with_label_values(&[label]).inc();
    }

    /// The text exposition format (what `/metrics` serves).
    pub fn render(&self) -> Result<String, MetricsError> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

/// The held queue's depth as operators mean it: the jobs waiting there. The active replica
/// keeps held jobs in hand (unacknowledged), so the broker's ready count alone reads 0 while
/// jobs wait; the job table counts them from their `queued` (held) events.
pub async fn held_depth(ready: u64, table: &JobTable) -> u64 {
    ready.max(table.held_total().await as u64)
}

/// Samples the queue depths, the job table and the live workers every `every` until `shutdown`.
/// Work queues are those of every kind for the configured profiles and those live workers
/// announce; the poller declares them first (see below).
pub async fn poll(
    bus: Arc<dyn Bus>,
    table: JobTable,
    metrics: Arc<SchedulerMetrics>,
    profiles: Vec<String>,
    layout: topology::Layout,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Work queues this replica declared: a passive declare of a queue no one declared yet is
    // refused by the broker (and logged by the client as an error every tick), so the poller
    // declares the queues of the profiles it samples (idempotent, the same spec as workers').
    let mut declared = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let workers = table.workers().await;
        metrics.workers_live.set(workers.len() as i64);
        metrics.fleet_capacity.set(workers.iter().map(|w| i64::from(w.capacity)).sum());
        metrics.fleet_in_flight.set(workers.iter().map(|w| i64::from(w.in_flight)).sum());
        let counts = table.counts().await;
        for state in IN_FLIGHT_STATES {
            let n = counts.get(&state).copied().unwrap_or(0);
            metrics.jobs_in_flight.with_label_values(&[state.as_str()]).set(n as i64);
        }
        let mut all: BTreeSet<String> = profiles.iter().cloned().collect();
        all.extend(workers.iter().flat_map(|w| w.profiles.iter().cloned()));
        let mut queues = vec![
            topology::SUBMIT_QUEUE.to_owned(),
            topology::HELD_QUEUE.to_owned(),
            topology::DEAD_LETTER_QUEUE.to_owned(),
        ];
        for profile in &all {
            for kind in [JobKind::Edit, JobKind::Create] {
                let names = layout.task_queues(kind, profile);
                if names.iter().any(|n| !declared.contains(n)) {
                    match layout.declare_task_queues(bus.as_ref(), kind, profile).await {
                        Ok(names) => declared.extend(names),
                        Err(e) => debug!(kind = kind.as_str(), %profile, error = %e, "work queues not declared"),
                    }
                }
                queues.extend(names);
            }
        }
        for q in queues {
            match bus.depth(&q).await {
                Ok(n) => {
                    let n = if q == topology::HELD_QUEUE { held_depth(n, &table).await } else { n };
                    metrics.queue_depth.with_label_values(&[&q]).set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Err(e) => debug!(queue = %q, error = %e, "queue depth not sampled"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::memory::MemoryBus;
    use bus::{Bus, Message};

    #[tokio::test]
    async fn poll_samples_queue_depths_and_in_flight_jobs() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        topology::Layout::default().declare_core(bus.as_ref()).await.unwrap();
        bus.publish("", topology::DEAD_LETTER_QUEUE, Message::new("x", b"{}".to_vec())).await.unwrap();
        bus.publish("", topology::DEAD_LETTER_QUEUE, Message::new("y", b"{}".to_vec())).await.unwrap();
        let table = JobTable::spawn();
        table.admit("j1".into(), protocol::TenantId("t".into()), Some(JobKind::Edit)).await;
        let metrics = Arc::new(SchedulerMetrics::new("9.9.9").unwrap());
        metrics.admitted(Some(Outcome::Dispatched));
        let stop = CancellationToken::new();
        let polling = tokio::spawn(poll(
            bus.clone(),
            table,
            metrics.clone(),
            vec!["default".into()],
            topology::Layout::default(),
            Duration::from_millis(10),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        polling.await.unwrap();
        let text = metrics.render().unwrap();
        assert!(text.contains(r#"reelforge_queue_depth{queue="reelforge.dlq"} 2"#), "{text}");
        assert!(text.contains(r#"reelforge_queue_depth{queue="reelforge.submit"} 0"#), "{text}");
        // The work queues of the profiles it samples are declared (so no sample is refused)
        // and reported, empty.
        assert!(text.contains(r#"reelforge_queue_depth{queue="reelforge.tasks.edit.default"} 0"#), "{text}");
        assert_eq!(bus.depth("reelforge.tasks.create.default").await.unwrap(), 0);
        assert!(text.contains(r#"reelforge_jobs_in_flight{state="queued"} 1"#), "{text}");
        assert!(text.contains(r#"reelforge_admissions_total{outcome="dispatched"} 1"#), "{text}");
        assert!(text.contains(r#"reelforge_build_info{role="scheduler",version="9.9.9"} 1"#), "{text}");
    }
}
