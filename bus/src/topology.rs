//! The queues and exchanges of a reelforge fleet, declared idempotently by both roles at start,
//! as classic queues (one broker) or quorum queues (a cluster): the fleet's [`Layout`].
//! Any AMQP client can submit: publish a job document, persistent, `message_id` = job id, to
//! [`JOBS_EXCHANGE`] with routing key [`SUBMIT_KEY`].

use protocol::JobKind;

use crate::{Bus, BusError, ExchangeKind, QueueSpec};

/// Direct exchange that submissions are published to.
pub const JOBS_EXCHANGE: &str = "reelforge.jobs";
/// Routing key of submissions on [`JOBS_EXCHANGE`].
pub const SUBMIT_KEY: &str = "submit";
/// Durable queue the scheduler admits jobs from; one active consumer at a time, so replicas
/// never admit the same job id twice.
pub const SUBMIT_QUEUE: &str = "reelforge.submit";
/// Durable queue of admitted jobs whose tenant is at its in-flight limit; one active consumer
/// at a time, so only one replica releases held jobs.
pub const HELD_QUEUE: &str = "reelforge.held";
/// Durable queue of tasks that failed every attempt; header `x-reelforge-reason` says why.
pub const DEAD_LETTER_QUEUE: &str = "reelforge.dlq";
/// Durable queue of committed attempts (one [`protocol::JobResult`] each): a worker's task
/// commits by publishing its result here and acking its task in one transaction, and any
/// worker then writes the result as `result.json` and publishes `finished`.
pub const COMMITS_QUEUE: &str = "reelforge.commits";
/// The header a delayed commit record counts its tries in.
pub const COMMIT_TRIES_HEADER: &str = "x-reelforge-commit-tries";
/// The header of a commit record whose `finished` event was published already (by the
/// scheduler, for jobs that end at admission): the committer only writes `result.json`.
pub const ANNOUNCED_HEADER: &str = "x-reelforge-announced";
/// Topic exchange of [`protocol::Event`]s, routing key `job.<id>.<state>`.
pub const EVENTS_EXCHANGE: &str = "reelforge.events";
/// Fanout exchange of [`protocol::Control`] messages (cancellation).
pub const CONTROL_EXCHANGE: &str = "reelforge.control";
/// Fanout exchange of [`protocol::Heartbeat`]s.
pub const HEARTBEATS_EXCHANGE: &str = "reelforge.heartbeats";
/// Highest message priority on work queues (jobs carry 0..=9).
pub const MAX_PRIORITY: u8 = protocol::limits::MAX_PRIORITY;
/// The header a dead-lettered task carries its failure reason in.
pub const REASON_HEADER: &str = "x-reelforge-reason";
/// The header a dead-lettered task carries its attempt count in.
pub const ATTEMPTS_HEADER: &str = "x-reelforge-attempts";

/// How the durable queues are made, which every role of one fleet must agree on
/// (`--queue-type`): RabbitMQ refuses to redeclare a queue as another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Classic queues: one node's, not replicated; a work queue per kind and profile with
    /// AMQP priorities 0–9. For a single broker.
    #[default]
    Classic,
    /// Quorum queues: replicated across a cluster (Raft), so losing a node loses no job. They
    /// have no priorities in RabbitMQ 3.x, so each work queue is split into [`BANDS`].
    Quorum,
}

impl QueueType {
    /// `classic` or `quorum`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = BusError;

    fn from_str(s: &str) -> Result<Self, BusError> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(BusError::Refused {
                what: "queue type".into(),
                reason: format!("{other:?} is neither `classic` nor `quorum`"),
            }),
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The priority bands of a quorum fleet's work queues, highest first: (queue name suffix,
/// lowest job priority in the band). A worker takes from a higher band before a lower one.
pub const BANDS: [(&str, u8); 3] = [("high", 7), ("normal", 4), ("low", 0)];

/// The band a job priority falls in (its queue name suffix).
pub fn band_of(priority: u8) -> &'static str {
    BANDS.iter().find(|(_, lowest)| priority >= *lowest).map_or("low", |(name, _)| name)
}

/// The work queue base name of one job kind and model profile: `reelforge.tasks.<kind>.<profile>`
/// (the queue itself in a classic fleet; its bands add `.<band>` in a quorum fleet).
pub fn task_queue_base(kind: JobKind, profile: &str) -> String {
    format!("reelforge.tasks.{}.{profile}", kind.as_str())
}

/// The fleet's queue layout: which names and arguments its durable queues have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// Classic or quorum queues.
    pub queue_type: QueueType,
}

impl Layout {
    /// The layout of `queue_type` queues.
    pub fn new(queue_type: QueueType) -> Self {
        Layout { queue_type }
    }

    /// The work queue a task of `kind`, `profile` and job `priority` goes to.
    pub fn task_queue(&self, kind: JobKind, profile: &str, priority: u8) -> String {
        let base = task_queue_base(kind, profile);
        match self.queue_type {
            QueueType::Classic => base,
            QueueType::Quorum => format!("{base}.{}", band_of(priority)),
        }
    }

    /// Every work queue of `kind` and `profile`, highest band first.
    pub fn task_queues(&self, kind: JobKind, profile: &str) -> Vec<String> {
        let base = task_queue_base(kind, profile);
        match self.queue_type {
            QueueType::Classic => vec![base],
            QueueType::Quorum => BANDS.iter().map(|(band, _)| format!("{base}.{band}")).collect(),
        }
    }

    /// A durable queue of this layout's type.
    fn durable(&self, name: impl Into<String>) -> QueueSpec {
        QueueSpec { quorum: self.queue_type == QueueType::Quorum, ..QueueSpec::durable(name) }
    }

    /// Message priorities a queue ordered by priority honours here (quorum queues: none).
    fn priorities(&self) -> u8 {
        match self.queue_type {
            QueueType::Classic => MAX_PRIORITY,
            QueueType::Quorum => 0,
        }
    }

    /// Declares the shared part of the topology.
    pub async fn declare_core(&self, bus: &dyn Bus) -> Result<(), BusError> {
        bus.declare_exchange(JOBS_EXCHANGE, ExchangeKind::Direct).await?;
        bus.declare_exchange(EVENTS_EXCHANGE, ExchangeKind::Topic).await?;
        bus.declare_exchange(CONTROL_EXCHANGE, ExchangeKind::Fanout).await?;
        bus.declare_exchange(HEARTBEATS_EXCHANGE, ExchangeKind::Fanout).await?;
        bus.declare_queue(&QueueSpec { single_active_consumer: true, ..self.durable(SUBMIT_QUEUE) }).await?;
        bus.bind(SUBMIT_QUEUE, JOBS_EXCHANGE, SUBMIT_KEY).await?;
        // A quorum held queue is first in, first out; the active scheduler still releases a
        // tenant's held jobs highest priority first among those it holds.
        let held =
            QueueSpec { max_priority: self.priorities(), single_active_consumer: true, ..self.durable(HELD_QUEUE) };
        bus.declare_queue(&held).await?;
        bus.declare_queue(&self.durable(DEAD_LETTER_QUEUE)).await?;
        bus.declare_queue(&self.durable(COMMITS_QUEUE)).await?;
        Ok(())
    }

    /// Declares the work queues of `kind` and `profile` and returns their names, highest band
    /// first.
    pub async fn declare_task_queues(
        &self,
        bus: &dyn Bus,
        kind: JobKind,
        profile: &str,
    ) -> Result<Vec<String>, BusError> {
        let names = self.task_queues(kind, profile);
        for name in &names {
            bus.declare_queue(&QueueSpec { max_priority: self.priorities(), ..self.durable(name.clone()) }).await?;
        }
        Ok(names)
    }

    /// Declares the retry ladder's rungs and returns their names, shortest delay first.
    pub async fn declare_retry_ladder(&self, bus: &dyn Bus, delays_ms: &[u32]) -> Result<Vec<String>, BusError> {
        let mut rungs = Vec::with_capacity(delays_ms.len());
        for &ms in delays_ms {
            let name = retry_rung(ms);
            bus.declare_exchange(&name, ExchangeKind::Fanout).await?;
            let spec = QueueSpec {
                message_ttl_ms: Some(ms),
                dead_letter_exchange: Some(String::new()),
                ..self.durable(name.clone())
            };
            bus.declare_queue(&spec).await?;
            bus.bind(&name, &name, "").await?;
            rungs.push(name);
        }
        Ok(rungs)
    }
}

/// The retry rung that delays a task by `delay_ms` before it returns to its work queue:
/// a fanout exchange and a queue of this name, whose messages expire into the default exchange
/// with their routing key (the work queue's name).
pub fn retry_rung(delay_ms: u32) -> String {
    format!("reelforge.retry.{delay_ms}ms")
}

/// Declares a private, transient queue `reelforge.<owner>.<feed>` bound to `exchange` with
/// `pattern`: a replica's or a worker's own copy of a broadcast feed.
pub async fn declare_feed(
    bus: &dyn Bus,
    owner: &str,
    feed: &str,
    exchange: &str,
    pattern: &str,
) -> Result<String, BusError> {
    let name = format!("reelforge.{owner}.{feed}");
    bus.declare_queue(&QueueSpec::transient(name.clone())).await?;
    bus.bind(&name, exchange, pattern).await?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_fall_in_bands_and_bands_name_the_quorum_queues() {
        let bands: Vec<_> = (0..=MAX_PRIORITY).map(band_of).collect();
        assert_eq!(bands, ["low", "low", "low", "low", "normal", "normal", "normal", "high", "high", "high"]);
        assert_eq!(band_of(protocol::limits::DEFAULT_PRIORITY), "normal");
        let quorum = Layout::new(QueueType::Quorum);
        assert_eq!(quorum.task_queue(JobKind::Edit, "default", 8), "reelforge.tasks.edit.default.high");
        assert_eq!(
            quorum.task_queues(JobKind::Create, "p"),
            ["reelforge.tasks.create.p.high", "reelforge.tasks.create.p.normal", "reelforge.tasks.create.p.low"]
        );
        // A classic fleet keeps its one priority queue per kind and profile.
        let classic = Layout::default();
        assert_eq!(classic.task_queue(JobKind::Edit, "default", 8), "reelforge.tasks.edit.default");
        assert_eq!(classic.task_queues(JobKind::Edit, "default"), ["reelforge.tasks.edit.default"]);
        assert_eq!("quorum".parse::<QueueType>().unwrap(), QueueType::Quorum);
        assert!("mirrored".parse::<QueueType>().is_err());
    }

    #[tokio::test]
    async fn a_quorum_layout_declares_no_priorities_and_refuses_what_quorum_cannot_be() {
        let bus = crate::memory::MemoryBus::new();
        let quorum = Layout::new(QueueType::Quorum);
        quorum.declare_core(&bus).await.unwrap();
        let queues = quorum.declare_task_queues(&bus, JobKind::Edit, "default").await.unwrap();
        assert_eq!(queues.len(), BANDS.len());
        quorum.declare_retry_ladder(&bus, &[100]).await.unwrap();
        // What a quorum queue cannot be is refused, with the reason.
        let prio = QueueSpec { quorum: true, max_priority: 9, ..QueueSpec::durable("q") };
        let err = bus.declare_queue(&prio).await.unwrap_err().to_string();
        assert!(err.contains("priority band"), "{err}");
        let transient = QueueSpec { quorum: true, ..QueueSpec::transient("t") };
        assert!(bus.declare_queue(&transient).await.is_err());
    }
}
