//! The embedded mode for tests: a scheduler and a worker over a fresh in-process bus and a
//! local store, with a feed of every event for the test to read.

use std::path::Path;
use std::sync::Arc;

use bus::memory::MemoryBus;
use bus::{Bus, Consumer, QueueSpec, topology};
use scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;
use worker::storage::local::LocalStore;
use worker::{Worker, WorkerConfig};

/// A running embedded fleet: its bus, a consumer of every job event, and what stops it.
pub struct Embedded {
    pub bus: Arc<MemoryBus>,
    pub events: Box<dyn Consumer>,
    pub stop: CancellationToken,
}

/// Starts a scheduler (local media allowed) and a worker with `cfg`, storing under
/// `dir/store`.
pub async fn start(dir: &Path, cfg: WorkerConfig) -> Embedded {
    let bus = Arc::new(MemoryBus::new());
    topology::Layout::default().declare_core(bus.as_ref()).await.unwrap();
    bus.declare_queue(&QueueSpec::durable("test.events")).await.unwrap();
    bus.bind("test.events", topology::EVENTS_EXCHANGE, "job.#").await.unwrap();
    let events = bus.consume("test.events", 1000).await.unwrap();
    let stop = CancellationToken::new();
    let store = Arc::new(LocalStore::new(dir.join("store")).unwrap());
    let sched = Scheduler::new(bus.clone(), SchedulerConfig { allow_local_media: true, ..Default::default() });
    tokio::spawn(sched.run(stop.clone()));
    tokio::spawn(Worker::new(bus.clone(), store, cfg).run(stop.clone()));
    Embedded { bus, events, stop }
}
