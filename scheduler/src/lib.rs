//! `scheduler` owns what happens to a job between submission and a worker: [`admission`]
//! (validate, de-duplicate, expire, route), [`auth`] (who may call the API), [`fairness`]
//! (per-tenant in-flight limits over the held queue), [`state`] (every job's state, fed by
//! events; live workers, fed by heartbeats), [`barrier`] (a replica catching up with its event
//! feed), the HTTP [`api`] and the Prometheus
//! [`metrics`]. [`Scheduler::run`] drives them over any [`bus::Bus`]. Replicas can run side by
//! side: the submit queue has a single active consumer, every replica follows all events on a
//! private feed, so any replica answers status queries, and a standby takes over admission when
//! the active one goes, catching up with what it committed before handling its redeliveries.

pub mod admission;
pub mod api;
pub mod auth;
pub mod barrier;
pub mod fairness;
pub mod metrics;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, Message, topology};
use chrono::Utc;
use protocol::{Control, Event, Heartbeat, JobId};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use admission::Admission;
pub use metrics::SchedulerMetrics;
pub use state::{JobRecord, JobTable, Retention};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Its replica id (feeds are named after it; unique per replica).
    pub id: String,
    /// Accept `file:///` media (the embedded mode only).
    pub allow_local_media: bool,
    /// Submissions admitted concurrently (the submit queue's prefetch).
    pub prefetch: u16,
    /// Model profiles accepted even when no live worker serves them yet (workers may scale
    /// from zero); profiles announced by live workers are accepted too.
    pub profiles: Vec<String>,
    /// Most jobs of one tenant dispatched or running at once.
    pub tenant_max_in_flight: usize,
    /// Held jobs kept in memory per replica (the held queue's prefetch).
    pub held_prefetch: u16,
    /// How often queue depths and in-flight counts are sampled for the metrics.
    pub metrics_interval: Duration,
    /// How long finished jobs and early cancellations are remembered.
    pub retention: state::Retention,
    /// The memory a worker gives one job: admission refuses jobs estimated over it
    /// (`job_too_large`, [`protocol::Job::check_memory`]).
    pub job_memory_bytes: u64,
    /// Binds AMQP submissions to their tenants; `None`: any publisher may submit for any tenant.
    pub tenant_binding: Option<TenantBinding>,
    /// Classic or quorum queues (every role of the fleet must agree).
    pub layout: topology::Layout,
}

/// Who may submit for which tenant over AMQP: a submission must carry the AMQP `user_id`
/// property (RabbitMQ checks it is the publishing connection's user), and that user must be its
/// tenant (one RabbitMQ user per tenant) or one of the trusted users (the scheduler's own, which
/// publishes what its authenticated API accepted, and services such as the instructor). Anything
/// else is not admitted: it is dead-lettered with the reason and gets no result, so a tenant
/// cannot occupy another tenant's job ids.
#[derive(Debug, Clone, Default)]
pub struct TenantBinding {
    /// Users that may submit for any tenant.
    pub trusted_users: std::collections::BTreeSet<String>,
}

impl TenantBinding {
    /// Why `user` may not submit for `tenant`, if it may not.
    pub fn refuses(&self, user: Option<&str>, tenant: &protocol::TenantId) -> Option<String> {
        match user {
            None => Some(format!("no AMQP user_id on a submission for tenant {tenant}")),
            Some(u) if u == tenant.as_str() || self.trusted_users.contains(u) => None,
            Some(u) => Some(format!("AMQP user {u:?} may not submit for tenant {tenant}")),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            id: format!("scheduler-{}", std::process::id()),
            allow_local_media: false,
            prefetch: 256,
            profiles: vec!["default".into()],
            tenant_max_in_flight: 64,
            held_prefetch: 1024,
            metrics_interval: Duration::from_secs(5),
            retention: state::Retention::default(),
            job_memory_bytes: protocol::job::DEFAULT_JOB_MEMORY_BYTES,
            tenant_binding: None,
            layout: topology::Layout::default(),
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
    ready: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<SchedulerMetrics>,
}

impl Scheduler {
    /// A scheduler over `bus`, with an empty job table and metrics of its own.
    pub fn new(bus: Arc<dyn Bus>, cfg: SchedulerConfig) -> Self {
        let metrics = SchedulerMetrics::new(env!("CARGO_PKG_VERSION")).expect("scheduler metrics are well-formed");
        let table = JobTable::spawn_with(cfg.retention);
        Scheduler { bus, cfg, table, ready: Arc::default(), metrics: Arc::new(metrics) }
    }

    /// True once the topology is declared and every feed is consumed (readiness).
    pub fn ready_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.ready.clone()
    }

    /// The replica's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<SchedulerMetrics> {
        self.metrics.clone()
    }

    /// A handle on the job table (status queries).
    pub fn table(&self) -> JobTable {
        self.table.clone()
    }

    /// Declares the topology, then admits submissions, releases held jobs and follows events,
    /// control messages and heartbeats until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        let bus = self.bus.as_ref();
        self.cfg.layout.declare_core(bus).await?;
        let id = &self.cfg.id;
        let events_q = topology::declare_feed(bus, id, "events", topology::EVENTS_EXCHANGE, "job.#").await?;
        let control_q = topology::declare_feed(bus, id, "control", topology::CONTROL_EXCHANGE, "").await?;
        let beats_q = topology::declare_feed(bus, id, "heartbeats", topology::HEARTBEATS_EXCHANGE, "").await?;
        let mut events = bus.consume(&events_q, 1024).await?;
        let mut control = bus.consume(&control_q, 64).await?;
        let mut beats = bus.consume(&beats_q, 64).await?;
        let mut submissions = bus.consume(topology::SUBMIT_QUEUE, self.cfg.prefetch).await?;
        let mut held_feed = bus.consume(topology::HELD_QUEUE, self.cfg.held_prefetch).await?;
        let barrier = Arc::new(barrier::FeedBarrier::new(self.bus.clone(), events_q.clone()));
        let admission =
            Arc::new(Admission::new(self.bus.clone(), self.table.clone(), self.cfg.clone(), barrier.clone()));
        let mut holding = fairness::Holding::default();
        // Redelivered held jobs, once this replica has caught up with its event feed.
        let (caught_up, mut caught_up_rx) = tokio::sync::mpsc::unbounded_channel::<bus::Delivery>();
        let slots = Arc::new(Semaphore::new(usize::from(self.cfg.prefetch.max(1))));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        let polling = tokio::spawn(metrics::poll(
            self.bus.clone(),
            self.table.clone(),
            self.metrics.clone(),
            self.cfg.profiles.clone(),
            self.cfg.layout,
            self.cfg.metrics_interval,
            shutdown.child_token(),
        ));
        info!(%id, "scheduler running");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                d = submissions.next() => match d {
                    Some(Ok(d)) => {
                        let permit = slots.clone().acquire_owned().await.expect("never closed");
                        let (admission, metrics) = (admission.clone(), self.metrics.clone());
                        tokio::spawn(async move {
                            metrics.admitted(admission.admit(d).await);
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => warn!(error = %e, "submission consume failed"),
                    None => break,
                },
                d = held_feed.next() => match d {
                    Some(Ok(d)) if d.redelivered => {
                        // Catch up off the loop (the loop itself applies the events).
                        let (admission, tx) = (admission.clone(), caught_up.clone());
                        tokio::spawn(async move {
                            match admission.catch_up().await {
                                Ok(()) => drop(tx.send(d)),
                                Err(e) => admission::settle(d, Err(e)).await,
                            }
                        });
                    }
                    Some(Ok(d)) => {
                        holding.hold(d, &self.table).await;
                        holding.release(&admission, &self.metrics).await;
                    }
                    Some(Err(e)) => warn!(error = %e, "held consume failed"),
                    None => break,
                },
                Some(d) = caught_up_rx.recv() => {
                    holding.hold(d, &self.table).await;
                    holding.release(&admission, &self.metrics).await;
                }
                d = events.next() => match d {
                    Some(Ok(d)) if barrier::FeedBarrier::is_marker(&d.message) => {
                        // Every event queued before the marker has been applied.
                        barrier.reached(&d.message);
                        let _ = d.ack().await;
                    }
                    Some(Ok(d)) => {
                        let terminal = match take::<Event>(d, "event").await {
                            Some(ev) => {
                                let t = matches!(ev.event, protocol::EventBody::Finished { .. });
                                self.table.apply(ev).await;
                                t
                            }
                            None => false,
                        };
                        if terminal && !holding.is_empty() {
                            holding.release(&admission, &self.metrics).await;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "event consume failed"),
                    None => break,
                },
                d = control.next() => match d {
                    Some(Ok(d)) => {
                        if let Some(Control::Cancel { job_id, .. }) = take::<Control>(d, "control message").await {
                            self.table.cancel(job_id.clone()).await;
                            // A held job ends now, not when its tenant has room again.
                            holding.cancel(&job_id, &admission, &self.metrics).await;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "control consume failed"),
                    None => break,
                },
                d = beats.next() => match d {
                    Some(Ok(d)) => {
                        if let Some(hb) = take::<Heartbeat>(d, "heartbeat").await {
                            self.table.beat(hb).await;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "heartbeat consume failed"),
                    None => break,
                },
                _ = tick.tick() => {
                    if !holding.is_empty() {
                        holding.release(&admission, &self.metrics).await;
                    }
                }
            }
        }
        self.ready.store(false, std::sync::atomic::Ordering::Relaxed);
        // Held deliveries not yet dispatched go back to the held queue when dropped.
        drop(holding);
        polling.abort();
        info!("scheduler stopped");
        Ok(())
    }
}

/// A broadcast feed's message, parsed and acked (the feeds are this replica's own copies: a
/// message that does not parse is logged and dropped, never redelivered).
async fn take<T: serde::de::DeserializeOwned>(d: bus::Delivery, what: &str) -> Option<T> {
    let parsed = serde_json::from_slice::<T>(&d.message.body);
    let _ = d.ack().await;
    parsed.map_err(|e| warn!(error = %e, "unreadable {what} dropped")).ok()
}

/// Asks every worker and replica to cancel `job_id`.
pub async fn request_cancel(bus: &dyn Bus, job_id: &JobId) -> Result<(), bus::BusError> {
    let msg = Control::Cancel { v: protocol::WIRE_VERSION, job_id: job_id.clone(), at: Utc::now() };
    let body = serde_json::to_vec(&msg).expect("control messages serialise");
    bus.publish(topology::CONTROL_EXCHANGE, "cancel", Message::new(job_id.to_string(), body)).await
}
