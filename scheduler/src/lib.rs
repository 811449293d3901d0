//! `scheduler` owns what happens to a job between submission and a worker: [`admission`]
//! (parse, validate, de-duplicate, expire, route to the work queue of its kind and profile) and
//! [`state`] (every job's state, kept by one task fed from events). [`Scheduler::run`] drives
//! both over any [`bus::Bus`].

pub mod admission;
pub mod state;

use std::sync::Arc;

use bus::{Bus, topology};
use protocol::Event;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use admission::Admission;
pub use state::{JobRecord, JobTable};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Its id in events.
    pub id: String,
    /// Accept `file:///` media (the embedded mode only).
    pub allow_local_media: bool,
    /// Submissions admitted concurrently (the submit queue's prefetch).
    pub prefetch: u16,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            id: "scheduler".into(),
            allow_local_media: false,
            prefetch: 64,
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The broker failed.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
}

/// The scheduler.
pub struct Scheduler {
    bus: Arc<dyn Bus>,
    cfg: SchedulerConfig,
    table: JobTable,
}

impl Scheduler {
    /// A scheduler over `bus`, with an empty job table.
    pub fn new(bus: Arc<dyn Bus>, cfg: SchedulerConfig) -> Self {
        Scheduler {
            bus,
            cfg,
            table: JobTable::spawn(),
        }
    }

    /// A handle on the job table (status queries).
    pub fn table(&self) -> JobTable {
        self.table.clone()
    }

    /// Declares the topology, then admits submissions and tracks events until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        topology::declare_core(self.bus.as_ref()).await?;
        let admission = Admission::new(self.bus.clone(), self.table.clone(), self.cfg.clone());
        let mut submissions = self
            .bus
            .consume(topology::SUBMIT_QUEUE, self.cfg.prefetch)
            .await?;
        let mut events = self
            .bus
            .consume(topology::SCHEDULER_EVENTS_QUEUE, 256)
            .await?;
        info!(id = %self.cfg.id, "scheduler admitting jobs");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                d = submissions.next() => match d {
                    Some(Ok(d)) => admission.admit(d).await,
                    Some(Err(e)) => warn!(error = %e, "submission consume failed"),
                    None => break,
                },
                d = events.next() => match d {
                    Some(Ok(d)) => {
                        match serde_json::from_slice::<Event>(&d.message.body) {
                            Ok(ev) => self.table.apply(ev).await,
                            Err(e) => warn!(error = %e, "unreadable event dropped"),
                        }
                        if let Err(e) = d.ack().await {
                            warn!(error = %e, "event ack failed");
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "event consume failed"),
                    None => break,
                },
            }
        }
        info!("scheduler stopped");
        Ok(())
    }
}
