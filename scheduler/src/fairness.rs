//! [`Holding`]: per-tenant fairness. A tenant may have at most `tenant_max_in_flight` jobs on
//! work queues or running; admission puts the rest on the durable held queue. The active
//! scheduler consumes that queue (bounded prefetch), keeps what it receives per tenant, and
//! dispatches a tenant's held jobs oldest first as its jobs finish. Held deliveries stay
//! unacknowledged until dispatched, so a scheduler crash loses none of them, and one tenant's
//! burst waits in the held queue instead of in front of everyone else's submissions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bus::Delivery;
use protocol::{Job, JobState, TenantId};
use tracing::{info, warn};

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

    /// Dispatches every held job whose tenant has room now.
    pub async fn release(&mut self, admission: &Arc<Admission>) {
        for queue in self.by_tenant.values_mut() {
            while let Some((job, _)) = queue.front() {
                let outcome = admission.dispatch(job, true).await;
                if matches!(outcome, Ok(Outcome::Held)) {
                    break;
                }
                let (_, delivery) = queue.pop_front().expect("front exists");
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
