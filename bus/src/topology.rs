//! The queues and exchanges of a reelforge fleet, declared idempotently by both roles at start.
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

/// The work queue of one job kind and model profile: `reelforge.tasks.<kind>.<profile>`.
pub fn task_queue(kind: JobKind, profile: &str) -> String {
    format!("reelforge.tasks.{}.{profile}", kind.as_str())
}

/// The retry rung that delays a task by `delay_ms` before it returns to its work queue:
/// a fanout exchange and a queue of this name, whose messages expire into the default exchange
/// with their routing key (the work queue's name).
pub fn retry_rung(delay_ms: u32) -> String {
    format!("reelforge.retry.{delay_ms}ms")
}

/// Declares the shared part of the topology.
pub async fn declare_core(bus: &dyn Bus) -> Result<(), BusError> {
    bus.declare_exchange(JOBS_EXCHANGE, ExchangeKind::Direct).await?;
    bus.declare_exchange(EVENTS_EXCHANGE, ExchangeKind::Topic).await?;
    bus.declare_exchange(CONTROL_EXCHANGE, ExchangeKind::Fanout).await?;
    bus.declare_exchange(HEARTBEATS_EXCHANGE, ExchangeKind::Fanout).await?;
    bus.declare_queue(&QueueSpec { single_active_consumer: true, ..QueueSpec::durable(SUBMIT_QUEUE) }).await?;
    bus.bind(SUBMIT_QUEUE, JOBS_EXCHANGE, SUBMIT_KEY).await?;
    let held = QueueSpec { max_priority: MAX_PRIORITY, single_active_consumer: true, ..QueueSpec::durable(HELD_QUEUE) };
    bus.declare_queue(&held).await?;
    bus.declare_queue(&QueueSpec::durable(DEAD_LETTER_QUEUE)).await?;
    bus.declare_queue(&QueueSpec::durable(COMMITS_QUEUE)).await?;
    Ok(())
}

/// Declares the work queue of `kind` and `profile`, with priorities.
pub async fn declare_task_queue(bus: &dyn Bus, kind: JobKind, profile: &str) -> Result<String, BusError> {
    let name = task_queue(kind, profile);
    bus.declare_queue(&QueueSpec { max_priority: MAX_PRIORITY, ..QueueSpec::durable(name.clone()) }).await?;
    Ok(name)
}

/// Declares the retry ladder's rungs and returns their names, shortest delay first.
pub async fn declare_retry_ladder(bus: &dyn Bus, delays_ms: &[u32]) -> Result<Vec<String>, BusError> {
    let mut rungs = Vec::with_capacity(delays_ms.len());
    for &ms in delays_ms {
        let name = retry_rung(ms);
        bus.declare_exchange(&name, ExchangeKind::Fanout).await?;
        let spec = QueueSpec {
            message_ttl_ms: Some(ms),
            dead_letter_exchange: Some(String::new()),
            ..QueueSpec::durable(name.clone())
        };
        bus.declare_queue(&spec).await?;
        bus.bind(&name, &name, "").await?;
        rungs.push(name);
    }
    Ok(rungs)
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
