//! [`JobTable`]: what this scheduler replica knows — every job's state (fed by events), each
//! tenant's in-flight count (for fairness), cancellations asked for, and the live workers (fed
//! by heartbeats). One task owns it all and is reached through a command channel, so there are
//! no locks on the hot path. Transitions out of a terminal state are ignored: late or repeated
//! events cannot resurrect a finished job.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::{Event, EventBody, Heartbeat, JobId, JobKind, JobResult, JobState, TenantId};
use tokio::sync::{mpsc, oneshot};

/// How the `queued` event of a job put on the held queue starts its detail.
pub const HELD_DETAIL: &str = "held:";

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
    /// True while it waits on the held queue (its tenant was at its limit).
    pub held: bool,
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
            held: false,
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
    Held(JobId),
    HeldCount { tenant: TenantId, reply: oneshot::Sender<usize> },
    HeldTotal { reply: oneshot::Sender<usize> },
    Beat(Box<Heartbeat>),
    Workers { reply: oneshot::Sender<Vec<Heartbeat>> },
}

/// A handle on the job table; clones share it.
#[derive(Debug, Clone)]
pub struct JobTable {
    tx: mpsc::Sender<Command>,
}

/// How long this replica remembers what it no longer needs to act on.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished jobs are forgotten this long after they finished (their `result.json` stays
    /// in the store, and a resubmission finds it there and is not run again).
    pub finished: Duration,
    /// At most this many finished jobs are remembered; the oldest go first.
    pub max_finished: usize,
    /// Cancellations of jobs not seen yet are remembered this long...
    pub early_cancels: Duration,
    /// ...and at most this many of them; the oldest go first.
    pub max_early_cancels: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished: Duration::from_secs(24 * 3600),
            max_finished: 100_000,
            early_cancels: Duration::from_secs(24 * 3600),
            max_early_cancels: 100_000,
        }
    }
}

#[derive(Default)]
struct Table {
    retention: Retention,
    jobs: HashMap<JobId, JobRecord>,
    /// Finished jobs, in the order they finished, to forget them in that order.
    finished: VecDeque<(Instant, JobId)>,
    in_flight: HashMap<TenantId, usize>,
    /// Each tenant's jobs on the held queue.
    held: HashMap<TenantId, usize>,
    /// Cancellations for jobs not (yet) known here, oldest first.
    early_cancels: HashMap<JobId, Instant>,
    early_order: VecDeque<(Instant, JobId)>,
    workers: HashMap<String, Heartbeat>,
}

impl JobTable {
    /// Starts the owning task, with the default [`Retention`].
    pub fn spawn() -> Self {
        Self::spawn_with(Retention::default())
    }

    /// Starts the owning task.
    pub fn spawn_with(retention: Retention) -> Self {
        let (tx, mut rx) = mpsc::channel::<Command>(4096);
        tokio::spawn(async move {
            let mut t = Table { retention, ..Table::default() };
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

    /// Records that a job was put on the held queue (its `queued` event carries
    /// [`HELD_DETAIL`] too; whichever comes first counts it).
    pub async fn held(&self, job_id: &JobId) {
        let _ = self.tx.send(Command::Held(job_id.clone())).await;
    }

    /// Jobs of `tenant` waiting on the held queue, as far as this replica knows.
    pub async fn held_count(&self, tenant: &TenantId) -> usize {
        self.ask(|reply| Command::HeldCount { tenant: tenant.clone(), reply }).await.unwrap_or(0)
    }

    /// Jobs of every tenant waiting on the held queue, as far as this replica knows.
    pub async fn held_total(&self) -> usize {
        self.ask(|reply| Command::HeldTotal { reply }).await.unwrap_or(0)
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
                        rec.cancel_requested = self.early_cancels.remove(&job_id).is_some();
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
                    let now = Instant::now();
                    if self.early_cancels.insert(job_id.clone(), now).is_none() {
                        self.early_order.push_back((now, job_id));
                    }
                    self.forget_old(now);
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
            Command::Held(job_id) => self.mark_held(&job_id),
            Command::HeldCount { tenant, reply } => {
                let _ = reply.send(self.held.get(&tenant).copied().unwrap_or(0));
            }
            Command::HeldTotal { reply } => {
                let _ = reply.send(self.held.values().sum());
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

    /// Forgets finished jobs and early cancellations past their retention or over their cap.
    fn forget_old(&mut self, now: Instant) {
        let r = self.retention;
        while let Some((at, _)) = self.finished.front() {
            if now.duration_since(*at) < r.finished && self.finished.len() <= r.max_finished {
                break;
            }
            let (_, id) = self.finished.pop_front().expect("front exists");
            if self.jobs.get(&id).is_some_and(|rec| rec.state.is_terminal()) {
                self.jobs.remove(&id);
            }
        }
        while let Some((at, _)) = self.early_order.front() {
            if now.duration_since(*at) < r.early_cancels && self.early_order.len() <= r.max_early_cancels {
                break;
            }
            let (at, id) = self.early_order.pop_front().expect("front exists");
            if self.early_cancels.get(&id) == Some(&at) {
                self.early_cancels.remove(&id);
            }
        }
    }

    fn mark_held(&mut self, job_id: &JobId) {
        if let Some(rec) = self.jobs.get_mut(job_id)
            && !rec.held
            && rec.state == JobState::Queued
        {
            rec.held = true;
            *self.held.entry(rec.tenant.clone()).or_default() += 1;
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
        let is_held = state == JobState::Queued && detail.as_deref().is_some_and(|d| d.starts_with(HELD_DETAIL));
        if rec.held && !is_held && state != JobState::Queued {
            rec.held = false;
            if let Some(n) = self.held.get_mut(&rec.tenant) {
                *n = n.saturating_sub(1);
            }
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
        if state.is_terminal() && rec.result.is_some() {
            let now = Instant::now();
            self.finished.push_back((now, ev.job_id.clone()));
            self.forget_old(now);
        }
        if is_held {
            let job_id = ev.job_id.clone();
            self.mark_held(&job_id);
        }
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
    async fn held_jobs_are_counted_until_dispatched_or_ended() {
        let t = JobTable::spawn();
        for id in ["a", "b", "c"] {
            t.admit(id.into(), "t".into(), Some(JobKind::Edit)).await;
        }
        let held = |id: &str| {
            Event::now(
                id.into(),
                "t".into(),
                "s",
                EventBody::State { state: JobState::Queued, detail: Some(format!("{HELD_DETAIL} at its limit")) },
            )
        };
        // The replica that held it says so at once; its event, seen later, does not count twice.
        t.held(&"a".into()).await;
        t.apply(held("a")).await;
        // Another replica's hold is learnt from the event.
        t.apply(held("b")).await;
        assert_eq!(t.held_count(&"t".into()).await, 2);
        assert_eq!(t.held_total().await, 2);
        assert_eq!(t.held_count(&"u".into()).await, 0);
        t.apply(state_event("a", JobState::Dispatched)).await;
        t.apply(finished("b")).await;
        assert_eq!(t.held_count(&"t".into()).await, 0);
        // A late `held` for a dispatched job does not count it again.
        t.held(&"a".into()).await;
        t.apply(state_event("c", JobState::Dispatched)).await;
        t.held(&"c".into()).await;
        assert_eq!(t.held_count(&"t".into()).await, 0);
    }

    #[tokio::test]
    async fn finished_jobs_and_early_cancels_are_forgotten_in_time() {
        let retention = Retention {
            max_finished: 2,
            max_early_cancels: 2,
            early_cancels: Duration::from_secs(3600),
            ..Retention::default()
        };
        let t = JobTable::spawn_with(retention);
        for id in ["a", "b", "c", "running"] {
            t.admit(id.into(), "t".into(), Some(JobKind::Edit)).await;
        }
        t.apply(state_event("running", JobState::Running)).await;
        for id in ["a", "b", "c"] {
            t.apply(finished(id)).await;
        }
        // The oldest finished job went; the others and the running one stay.
        assert!(t.get(&"a".into()).await.is_none());
        for id in ["b", "c", "running"] {
            assert!(t.get(&id.into()).await.is_some(), "{id}");
        }
        // Cancellations for unknown ids are capped too (the cancel endpoint takes any id).
        for id in ["x1", "x2", "x3"] {
            t.cancel(id.into()).await;
        }
        t.admit("x1".into(), "t".into(), None).await;
        t.admit("x3".into(), "t".into(), None).await;
        assert!(!t.get(&"x1".into()).await.unwrap().cancel_requested, "the oldest cancellation was kept");
        assert!(t.get(&"x3".into()).await.unwrap().cancel_requested);
        // Past their retention they go whatever the count.
        let t = JobTable::spawn_with(Retention { finished: Duration::ZERO, ..Retention::default() });
        t.admit("z".into(), "t".into(), None).await;
        t.apply(finished("z")).await;
        t.apply(finished("zz")).await;
        assert!(t.get(&"z".into()).await.is_none());
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
