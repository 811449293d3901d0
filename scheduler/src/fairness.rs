//! [`Holding`]: per-tenant fairness. A tenant may have at most `tenant_max_in_flight` jobs on
//! work queues or running; admission puts the rest on the durable held queue. The active
//! scheduler consumes that queue (bounded prefetch), keeps what it receives per tenant, and
//! dispatches a tenant's held jobs oldest first as its jobs finish. Held deliveries stay
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
            while let Some((job, _)) = queue.front() {
                let outcome = admission.dispatch(job, true).await;
                if matches!(outcome, Ok(Outcome::Held)) {
                    break;
                }
                let (_, delivery) = queue.pop_front().expect("front exists");
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

/// A held job's dispatch outcome as an admission outcome: put on its work queue is `released`.
fn released(outcome: &Result<Outcome, bus::BusError>) -> Option<Outcome> {
    match outcome {
        Ok(Outcome::Dispatched) => Some(Outcome::Released),
        Ok(o) => Some(*o),
        Err(_) => None,
    }
}
