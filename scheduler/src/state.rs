//! [`JobTable`]: what this scheduler replica knows — every job's state (fed by events), each
//! tenant's in-flight count (for fairness), cancellations asked for, and the live workers (fed
//! by heartbeats). One task owns it all and is reached through a command channel, so there are
//! no locks on the hot path. Transitions out of a terminal state are ignored: late or repeated
//! events cannot resurrect a finished job.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use protocol::{Event, EventBody, Heartbeat, JobId, JobKind, JobResult, JobState, TenantId};
use tokio::sync::{mpsc, oneshot};

/// What the scheduler knows of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Edit or create (unknown when it never parsed).
    pub kind: Option<JobKind>,
    /// Its current state.
    pub state: JobState,
    /// Why, for failures, retries and cancellations.
    pub detail: Option<String>,
    /// Its result, once finished.
    pub result: Option<JobResult>,
    /// True while it counts against its tenant's in-flight limit.
    pub in_flight: bool,
    /// True once a client asked to cancel it.
    pub cancel_requested: bool,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
}

impl JobRecord {
    fn new(job_id: JobId, tenant: TenantId, kind: Option<JobKind>, state: JobState) -> Self {
        JobRecord {
            job_id,
            tenant,
            kind,
            state,
            detail: None,
            result: None,
            in_flight: false,
            cancel_requested: false,
            updated_at: Utc::now(),
        }
    }
}

/// The outcome of asking to admit a job id.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// First time seen: recorded as queued.
    New,
    /// Seen before, in this state: do not run again.
    Duplicate(JobState),
}

enum Command {
    Admit { job_id: JobId, tenant: TenantId, kind: Option<JobKind>, reply: oneshot::Sender<Admit> },
    Reserve { job_id: JobId, limit: usize, reply: oneshot::Sender<bool> },
    Apply(Box<Event>),
    Cancel(JobId),
    Get { job_id: JobId, reply: oneshot::Sender<Option<JobRecord>> },
    Counts { reply: oneshot::Sender<HashMap<JobState, usize>> },
    InFlight { tenant: TenantId, reply: oneshot::Sender<usize> },
    Beat(Box<Heartbeat>),
    Workers { reply: oneshot::Sender<Vec<Heartbeat>> },
}

/// A handle on the job table; clones share it.
#[derive(Debug, Clone)]
pub struct JobTable {
    tx: mpsc::Sender<Command>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, JobRecord>,
    in_flight: HashMap<TenantId, usize>,
    /// Cancellations for jobs not (yet) known here.
    early_cancels: HashSet<JobId>,
    workers: HashMap<String, Heartbeat>,
}

impl JobTable {
    /// Starts the owning task.
    pub fn spawn() -> Self {
        let (tx, mut rx) = mpsc::channel::<Command>(4096);
        tokio::spawn(async move {
            let mut t = Table::default();
            while let Some(cmd) = rx.recv().await {
                t.handle(cmd);
            }
        });
        JobTable { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Records a job id as queued unless it was seen before.
    pub async fn admit(&self, job_id: JobId, tenant: TenantId, kind: Option<JobKind>) -> Admit {
        self.ask(|reply| Command::Admit { job_id, tenant, kind, reply })
            .await
            .unwrap_or(Admit::Duplicate(JobState::Failed))
    }

    /// Counts the job against its tenant's in-flight limit if the tenant is under `limit`;
    /// false when the tenant is at its limit.
    pub async fn reserve(&self, job_id: &JobId, limit: usize) -> bool {
        self.ask(|reply| Command::Reserve { job_id: job_id.clone(), limit, reply }).await.unwrap_or(false)
    }

    /// Applies an event.
    pub async fn apply(&self, event: Event) {
        let _ = self.tx.send(Command::Apply(Box::new(event))).await;
    }

    /// Records that a client asked to cancel `job_id`.
    pub async fn cancel(&self, job_id: JobId) {
        let _ = self.tx.send(Command::Cancel(job_id)).await;
    }

    /// The record of a job.
    pub async fn get(&self, job_id: &JobId) -> Option<JobRecord> {
        self.ask(|reply| Command::Get { job_id: job_id.clone(), reply }).await.flatten()
    }

    /// How many jobs are in each state.
    pub async fn counts(&self) -> HashMap<JobState, usize> {
        self.ask(|reply| Command::Counts { reply }).await.unwrap_or_default()
    }

    /// Jobs of `tenant` counted in flight.
    pub async fn in_flight(&self, tenant: &TenantId) -> usize {
        self.ask(|reply| Command::InFlight { tenant: tenant.clone(), reply }).await.unwrap_or(0)
    }

    /// Records a worker's heartbeat.
    pub async fn beat(&self, hb: Heartbeat) {
        let _ = self.tx.send(Command::Beat(Box::new(hb))).await;
    }

    /// Workers heard from within three of their heartbeat intervals.
    pub async fn workers(&self) -> Vec<Heartbeat> {
        self.ask(|reply| Command::Workers { reply }).await.unwrap_or_default()
    }
}

impl Table {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Admit { job_id, tenant, kind, reply } => {
                let out = match self.jobs.get(&job_id) {
                    Some(r) => Admit::Duplicate(r.state),
                    None => {
                        let mut rec = JobRecord::new(job_id.clone(), tenant, kind, JobState::Queued);
                        rec.cancel_requested = self.early_cancels.remove(&job_id);
                        self.jobs.insert(job_id, rec);
                        Admit::New
                    }
                };
                let _ = reply.send(out);
            }
            Command::Reserve { job_id, limit, reply } => {
                let ok = match self.jobs.get_mut(&job_id) {
                    Some(r) if r.in_flight => true,
                    Some(r) => {
                        let n = self.in_flight.entry(r.tenant.clone()).or_default();
                        if *n < limit {
                            *n += 1;
                            r.in_flight = true;
                            true
                        } else {
                            false
                        }
                    }
                    None => false,
                };
                let _ = reply.send(ok);
            }
            Command::Apply(ev) => self.apply(*ev),
            Command::Cancel(job_id) => match self.jobs.get_mut(&job_id) {
                Some(r) => r.cancel_requested = true,
                None => {
                    self.early_cancels.insert(job_id);
                }
            },
            Command::Get { job_id, reply } => {
                let _ = reply.send(self.jobs.get(&job_id).cloned());
            }
            Command::Counts { reply } => {
                let mut counts = HashMap::new();
                for r in self.jobs.values() {
                    *counts.entry(r.state).or_insert(0) += 1;
                }
                let _ = reply.send(counts);
            }
            Command::InFlight { tenant, reply } => {
                let _ = reply.send(self.in_flight.get(&tenant).copied().unwrap_or(0));
            }
            Command::Beat(hb) => {
                self.workers.insert(hb.worker_id.clone(), *hb);
            }
            Command::Workers { reply } => {
                let now = Utc::now();
                self.workers.retain(|_, hb| (now - hb.at).num_seconds() <= 3 * i64::from(hb.interval_s.max(1)));
                let mut live: Vec<Heartbeat> = self.workers.values().cloned().collect();
                live.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
                let _ = reply.send(live);
            }
        }
    }

    fn apply(&mut self, ev: Event) {
        let (state, detail, result) = match ev.event {
            EventBody::State { state, detail } => (state, detail, None),
            EventBody::Finished { result } => {
                (result.status.into(), result.error.as_ref().map(|e| e.message.clone()), Some(*result))
            }
            EventBody::Progress { .. } => return,
        };
        let rec = self.jobs.entry(ev.job_id.clone()).or_insert_with(|| {
            JobRecord::new(ev.job_id.clone(), ev.tenant.clone(), result.as_ref().and_then(|r| r.kind), state)
        });
        if rec.state.is_terminal() && rec.result.is_some() {
            return;
        }
        if state == JobState::Dispatched && !rec.in_flight {
            rec.in_flight = true;
            *self.in_flight.entry(rec.tenant.clone()).or_default() += 1;
        }
        if state.is_terminal() && rec.in_flight {
            rec.in_flight = false;
            if let Some(n) = self.in_flight.get_mut(&rec.tenant) {
                *n = n.saturating_sub(1);
            }
        }
        rec.state = state;
        rec.detail = detail;
        if result.is_some() {
            rec.result = result;
        }
        rec.updated_at = ev.at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ErrorCode, JobStatus};

    fn state_event(id: &str, state: JobState) -> Event {
        Event::now(id.into(), "t".into(), "test", EventBody::State { state, detail: None })
    }

    fn finished(id: &str) -> Event {
        let r = JobResult::failure(
            id.into(),
            "t".into(),
            Some(JobKind::Edit),
            JobStatus::Failed,
            ErrorCode::InvalidMedia,
            "bad",
        );
        Event::now(id.into(), "t".into(), "w", EventBody::Finished { result: Box::new(r) })
    }

    #[tokio::test]
    async fn admit_once_and_terminal_states_stick() {
        let t = JobTable::spawn();
        assert_eq!(t.admit("a".into(), "t".into(), Some(JobKind::Edit)).await, Admit::New);
        assert_eq!(t.admit("a".into(), "t".into(), Some(JobKind::Edit)).await, Admit::Duplicate(JobState::Queued));
        t.apply(state_event("a", JobState::Running)).await;
        t.apply(finished("a")).await;
        t.apply(state_event("a", JobState::Running)).await;
        let rec = t.get(&"a".into()).await.unwrap();
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.detail.as_deref(), Some("bad"));
        assert_eq!(rec.result.unwrap().error.unwrap().code, ErrorCode::InvalidMedia);
        assert_eq!(t.counts().await.get(&JobState::Failed), Some(&1));
        assert!(t.get(&"zzz".into()).await.is_none());
    }

    #[tokio::test]
    async fn in_flight_is_bounded_per_tenant_and_released_on_finish() {
        let t = JobTable::spawn();
        for id in ["a", "b", "c"] {
            t.admit(id.into(), "t".into(), Some(JobKind::Edit)).await;
        }
        assert!(t.reserve(&"a".into(), 2).await);
        assert!(t.reserve(&"a".into(), 2).await, "reserving twice counts once");
        assert!(t.reserve(&"b".into(), 2).await);
        assert!(!t.reserve(&"c".into(), 2).await);
        // The dispatched event of an already counted job does not count it again.
        t.apply(state_event("a", JobState::Dispatched)).await;
        assert_eq!(t.in_flight(&"t".into()).await, 2);
        t.apply(finished("a")).await;
        assert_eq!(t.in_flight(&"t".into()).await, 1);
        assert!(t.reserve(&"c".into(), 2).await);
        // Another tenant is not affected.
        t.admit("x".into(), "u".into(), None).await;
        assert!(t.reserve(&"x".into(), 2).await);
    }

    #[tokio::test]
    async fn cancels_before_admission_are_remembered() {
        let t = JobTable::spawn();
        t.cancel("early".into()).await;
        t.admit("early".into(), "t".into(), None).await;
        assert!(t.get(&"early".into()).await.unwrap().cancel_requested);
        t.admit("late".into(), "t".into(), None).await;
        assert!(!t.get(&"late".into()).await.unwrap().cancel_requested);
        t.cancel("late".into()).await;
        assert!(t.get(&"late".into()).await.unwrap().cancel_requested);
    }
}
