//! [`Holding`]: per-tenant fairness. A tenant may have at most `tenant_max_in_flight` jobs on
//! work queues or running; admission puts the rest on the durable held queue. The active
//! scheduler consumes that queue (bounded prefetch), keeps what it receives per tenant, and
//! dispatches a tenant's held jobs as its jobs finish: highest priority first, oldest first
//! among equals (a quorum held queue has no priorities, so the order is kept here). Held deliveries stay
//! unacknowledged until dispatched, so a scheduler crash loses none of them, and one tenant's
//! burst waits in the held queue instead of in front of everyone else's submissions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bus::Delivery;
use protocol::{Job, JobId, JobState, TenantId};
use tracing::{info, warn};

use crate::SchedulerMetrics;
use crate::admission::{Admission, Outcome, settle};
use crate::state::{Admit, JobTable};

/// Held jobs by tenant, in arrival order.
#[derive(Default)]
pub struct Holding {
    by_tenant: BTreeMap<TenantId, VecDeque<(Job, Delivery)>>,
}

impl Holding {
    /// Takes a delivery from the held queue; drops it if its job was dispatched or ended
    /// already (a copy redelivered from a replica that died after dispatching it: the caller
    /// has this replica catch up with the event feed first, [`Admission::catch_up`]).
    pub async fn hold(&mut self, delivery: Delivery, table: &JobTable) {
        match Job::from_value(match serde_json::from_slice(&delivery.message.body) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "unreadable held job dropped");
                return settle(delivery, Ok(Outcome::Ended)).await;
            }
        }) {
            Ok(job) => {
                // After a restart this replica may not know the job yet.
                match table.admit(job.job_id().clone(), job.tenant().clone(), Some(job.kind())).await {
                    Admit::Duplicate(state) if state != JobState::Queued => {
                        info!(job_id = %job.job_id(), state = state.as_str(), "held copy of a job already dispatched");
                        settle(delivery, Ok(Outcome::Duplicate)).await;
                    }
                    _ => self.by_tenant.entry(job.tenant().clone()).or_default().push_back((job, delivery)),
                }
            }
            Err(e) => {
                warn!(error = %e, "invalid held job dropped");
                settle(delivery, Ok(Outcome::Ended)).await;
            }
        }
    }

    /// Dispatches every held job whose tenant has room now; counts what it released (or ended)
    /// in `metrics`.
    pub async fn release(&mut self, admission: &Arc<Admission>, metrics: &SchedulerMetrics) {
        for queue in self.by_tenant.values_mut() {
            while let Some(i) = next_of(queue) {
                let outcome = admission.dispatch(&queue[i].0, true).await;
                if matches!(outcome, Ok(Outcome::Held)) {
                    break;
                }
                let (_, delivery) = queue.remove(i).expect("index is in range");
                metrics.admitted(released(&outcome));
                settle(delivery, outcome).await;
            }
        }
        self.by_tenant.retain(|_, q| !q.is_empty());
    }

    /// Ends a held job that was cancelled at once (its tenant need not have room): the caller
    /// has recorded the cancellation in the job table.
    pub async fn cancel(&mut self, job_id: &JobId, admission: &Arc<Admission>, metrics: &SchedulerMetrics) {
        for queue in self.by_tenant.values_mut() {
            if let Some(i) = queue.iter().position(|(job, _)| job.job_id() == job_id) {
                let (job, delivery) = queue.remove(i).expect("position is in range");
                let outcome = admission.dispatch(&job, true).await;
                if matches!(outcome, Ok(Outcome::Held)) {
                    // Not cancelled after all (the table had not heard): keep it in line.
                    queue.insert(i, (job, delivery));
                    return;
                }
                info!(%job_id, "held job cancelled");
                metrics.admitted(released(&outcome));
                settle(delivery, outcome).await;
            }
        }
        self.by_tenant.retain(|_, q| !q.is_empty());
    }

    /// Jobs held in memory now.
    pub fn len(&self) -> usize {
        self.by_tenant.values().map(VecDeque::len).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }
}

/// The index of a tenant's next held job: the highest priority, the oldest among equals.
fn next_of(queue: &VecDeque<(Job, Delivery)>) -> Option<usize> {
    // `max_by_key` keeps the last maximum; the reversed index makes ties go to the oldest.
    queue.iter().enumerate().max_by_key(|(i, (job, _))| (job.priority(), std::cmp::Reverse(*i))).map(|(i, _)| i)
}

/// A held job's dispatch outcome as an admission outcome: put on its work queue is `released`.
fn released(outcome: &Result<Outcome, bus::BusError>) -> Option<Outcome> {
    match outcome {
        Ok(Outcome::Dispatched) => Some(Outcome::Released),
        Ok(o) => Some(*o),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::memory::MemoryBus;
    use bus::{Bus, Message, QueueSpec};

    #[tokio::test]
    async fn a_tenants_held_jobs_go_highest_priority_first_then_oldest() {
        let bus = MemoryBus::new();
        bus.declare_queue(&QueueSpec::durable("q")).await.unwrap();
        let mut queue = VecDeque::new();
        for (id, priority) in [("a", 2), ("b", 8), ("c", 8), ("d", 5)] {
            let job = serde_json::json!({
                "v": 1, "kind": "edit", "job_id": id, "tenant": "t", "priority": priority,
                "source": "s3://b/v.mp4", "guidance": { "instruction": "x" }
            });
            let job = Job::from_value(job).unwrap();
            bus.publish("", "q", Message::new(id, b"{}".to_vec())).await.unwrap();
            queue.push_back((job, bus.get("q").await.unwrap().unwrap()));
        }
        let mut order = Vec::new();
        while let Some(i) = next_of(&queue) {
            order.push(queue.remove(i).unwrap().0.job_id().to_string());
        }
        assert_eq!(order, ["b", "c", "d", "a"]);
    }
}
