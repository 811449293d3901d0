//! What a worker hears and says besides tasks: the [`Registry`] of running tasks and of
//! cancellations asked for (fed by the control feed), and the heartbeat it publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus::{Bus, Message, topology};
use chrono::{DateTime, Utc};
use protocol::{Heartbeat, JobId};
use tracing::debug;

/// How long a cancellation for a job not seen yet is remembered.
pub const CANCEL_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Most remembered cancellations; the oldest go first.
pub const MAX_REMEMBERED_CANCELS: usize = 100_000;

/// The flags of one running task.
#[derive(Debug, Clone, Default)]
pub struct TaskFlags {
    /// Set to cancel the job (it ends `cancelled`).
    pub cancel: Arc<AtomicBool>,
    /// Set to stop it for shutdown (its message is requeued).
    pub interrupt: Arc<AtomicBool>,
}

/// Running tasks and remembered cancellations.
#[derive(Debug, Default)]
pub struct Registry {
    running: Mutex<HashMap<JobId, TaskFlags>>,
    cancelled: Mutex<HashMap<JobId, Instant>>,
}

impl Registry {
    /// Registers a task about to run; `None` when its job was cancelled already.
    pub fn start(&self, job_id: &JobId) -> Option<TaskFlags> {
        if self.is_cancelled(job_id) {
            return None;
        }
        let flags = TaskFlags::default();
        self.running.lock().expect("registry lock").insert(job_id.clone(), flags.clone());
        Some(flags)
    }

    /// Forgets a task that ended.
    pub fn finish(&self, job_id: &JobId) {
        self.running.lock().expect("registry lock").remove(job_id);
    }

    /// Cancels a job: flags it if running, remembers it otherwise.
    pub fn cancel(&self, job_id: &JobId) {
        if let Some(flags) = self.running.lock().expect("registry lock").get(job_id) {
            flags.cancel.store(true, Ordering::Relaxed);
        }
        let mut c = self.cancelled.lock().expect("registry lock");
        let now = Instant::now();
        c.retain(|_, at| now.duration_since(*at) < CANCEL_MEMORY);
        if c.len() >= MAX_REMEMBERED_CANCELS
            && let Some(oldest) = c.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
        {
            c.remove(&oldest);
        }
        c.insert(job_id.clone(), now);
    }

    /// True when a cancellation for the job was heard.
    pub fn is_cancelled(&self, job_id: &JobId) -> bool {
        self.cancelled.lock().expect("registry lock").contains_key(job_id)
    }

    /// Asks every running task to stop for shutdown.
    pub fn interrupt_all(&self) {
        for flags in self.running.lock().expect("registry lock").values() {
            flags.interrupt.store(true, Ordering::Relaxed);
        }
    }

    /// Tasks running now.
    pub fn in_flight(&self) -> usize {
        self.running.lock().expect("registry lock").len()
    }
}

/// What a heartbeat says about this worker.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Worker id.
    pub id: String,
    /// Job kinds served.
    pub kinds: Vec<protocol::JobKind>,
    /// Profiles served.
    pub profiles: Vec<String>,
    /// Models loaded.
    pub models: Vec<String>,
    /// Tasks at once.
    pub capacity: u32,
    /// Compute device.
    pub device: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// Publishes a heartbeat every `interval` until the bus is dropped or the task is aborted.
pub async fn heartbeats(bus: Arc<dyn Bus>, who: Identity, registry: Arc<Registry>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let hb = Heartbeat {
            v: protocol::WIRE_VERSION,
            worker_id: who.id.clone(),
            kinds: who.kinds.clone(),
            profiles: who.profiles.clone(),
            models: who.models.clone(),
            capacity: who.capacity,
            in_flight: u32::try_from(registry.in_flight()).unwrap_or(u32::MAX),
            device: who.device.clone(),
            started_at: who.started_at,
            at: Utc::now(),
            interval_s: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX).max(1),
        };
        let body = serde_json::to_vec(&hb).expect("heartbeats serialise");
        // Unroutable while no scheduler listens: that is fine.
        if let Err(e) = bus.publish(topology::HEARTBEATS_EXCHANGE, &who.id, Message::new(who.id.clone(), body)).await {
            debug!(error = %e, "heartbeat not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_flags_running_and_remembers_future_tasks() {
        let r = Registry::default();
        let a = r.start(&"a".into()).unwrap();
        assert_eq!(r.in_flight(), 1);
        r.cancel(&"a".into());
        assert!(a.cancel.load(Ordering::Relaxed));
        r.cancel(&"later".into());
        assert!(r.start(&"later".into()).is_none());
        r.interrupt_all();
        assert!(a.interrupt.load(Ordering::Relaxed));
        r.finish(&"a".into());
        assert_eq!(r.in_flight(), 0);
    }
}
