//! [`JobTable`]: the state of every job this scheduler has seen, owned by one task and reached
//! through a command channel (no locks on the hot path). Transitions out of a terminal state are
//! ignored, so events arriving late or twice cannot resurrect a finished job.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use protocol::{Event, EventBody, JobId, JobKind, JobResult, JobState, TenantId};
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
    /// Why, for failures and retries.
    pub detail: Option<String>,
    /// Its result, once finished.
    pub result: Option<JobResult>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
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
    Admit {
        job_id: JobId,
        tenant: TenantId,
        kind: Option<JobKind>,
        reply: oneshot::Sender<Admit>,
    },
    Apply(Box<Event>),
    Get {
        job_id: JobId,
        reply: oneshot::Sender<Option<JobRecord>>,
    },
    Counts {
        reply: oneshot::Sender<HashMap<JobState, usize>>,
    },
}

/// A handle on the job table; clones share it.
#[derive(Debug, Clone)]
pub struct JobTable {
    tx: mpsc::Sender<Command>,
}

impl JobTable {
    /// Starts the owning task.
    pub fn spawn() -> Self {
        let (tx, mut rx) = mpsc::channel::<Command>(1024);
        tokio::spawn(async move {
            let mut jobs: HashMap<JobId, JobRecord> = HashMap::new();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Admit {
                        job_id,
                        tenant,
                        kind,
                        reply,
                    } => {
                        let out = match jobs.get(&job_id) {
                            Some(r) => Admit::Duplicate(r.state),
                            None => {
                                jobs.insert(
                                    job_id.clone(),
                                    JobRecord {
                                        job_id,
                                        tenant,
                                        kind,
                                        state: JobState::Queued,
                                        detail: None,
                                        result: None,
                                        updated_at: Utc::now(),
                                    },
                                );
                                Admit::New
                            }
                        };
                        let _ = reply.send(out);
                    }
                    Command::Apply(ev) => apply(&mut jobs, *ev),
                    Command::Get { job_id, reply } => {
                        let _ = reply.send(jobs.get(&job_id).cloned());
                    }
                    Command::Counts { reply } => {
                        let mut counts = HashMap::new();
                        for r in jobs.values() {
                            *counts.entry(r.state).or_insert(0) += 1;
                        }
                        let _ = reply.send(counts);
                    }
                }
            }
        });
        JobTable { tx }
    }

    /// Records a job id as queued unless it was seen before.
    pub async fn admit(&self, job_id: JobId, tenant: TenantId, kind: Option<JobKind>) -> Admit {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .tx
            .send(Command::Admit {
                job_id,
                tenant,
                kind,
                reply,
            })
            .await;
        rx.await.unwrap_or(Admit::Duplicate(JobState::Failed))
    }

    /// Applies an event.
    pub async fn apply(&self, event: Event) {
        let _ = self.tx.send(Command::Apply(Box::new(event))).await;
    }

    /// The record of a job.
    pub async fn get(&self, job_id: &JobId) -> Option<JobRecord> {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .tx
            .send(Command::Get {
                job_id: job_id.clone(),
                reply,
            })
            .await;
        rx.await.ok().flatten()
    }

    /// How many jobs are in each state.
    pub async fn counts(&self) -> HashMap<JobState, usize> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Counts { reply }).await;
        rx.await.unwrap_or_default()
    }
}

fn apply(jobs: &mut HashMap<JobId, JobRecord>, ev: Event) {
    let (state, detail, result) = match ev.event {
        EventBody::State { state, detail } => (state, detail, None),
        EventBody::Finished { result } => (
            result.status.into(),
            result.error.as_ref().map(|e| e.message.clone()),
            Some(*result),
        ),
        EventBody::Progress { .. } => return,
    };
    let rec = jobs.entry(ev.job_id.clone()).or_insert_with(|| JobRecord {
        job_id: ev.job_id.clone(),
        tenant: ev.tenant.clone(),
        kind: result.as_ref().and_then(|r| r.kind),
        state,
        detail: None,
        result: None,
        updated_at: ev.at,
    });
    if rec.state.is_terminal() {
        return;
    }
    rec.state = state;
    rec.detail = detail;
    if result.is_some() {
        rec.result = result;
    }
    rec.updated_at = ev.at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ErrorCode, JobStatus};

    fn state_event(id: &str, state: JobState) -> Event {
        Event::now(
            id.into(),
            "t".into(),
            "test",
            EventBody::State {
                state,
                detail: None,
            },
        )
    }

    #[tokio::test]
    async fn admit_once_and_terminal_states_stick() {
        let t = JobTable::spawn();
        assert_eq!(
            t.admit("a".into(), "t".into(), Some(JobKind::Edit)).await,
            Admit::New
        );
        assert_eq!(
            t.admit("a".into(), "t".into(), Some(JobKind::Edit)).await,
            Admit::Duplicate(JobState::Queued)
        );
        t.apply(state_event("a", JobState::Running)).await;
        let failed = JobResult::failure(
            "a".into(),
            "t".into(),
            Some(JobKind::Edit),
            JobStatus::Failed,
            ErrorCode::InvalidMedia,
            "bad",
        );
        t.apply(Event::now(
            "a".into(),
            "t".into(),
            "w",
            EventBody::Finished {
                result: Box::new(failed),
            },
        ))
        .await;
        t.apply(state_event("a", JobState::Running)).await;
        let rec = t.get(&"a".into()).await.unwrap();
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.detail.as_deref(), Some("bad"));
        assert_eq!(
            rec.result.unwrap().error.unwrap().code,
            ErrorCode::InvalidMedia
        );
        assert_eq!(t.counts().await.get(&JobState::Failed), Some(&1));
        assert!(t.get(&"zzz".into()).await.is_none());
    }
}
