//! The queues and exchanges of a reelforge fleet, declared idempotently by both roles at start.
//! Any AMQP client can submit: publish a job document, persistent, `message_id` = job id, to
//! [`JOBS_EXCHANGE`] with routing key [`SUBMIT_KEY`].

use protocol::JobKind;

use crate::{Bus, BusError, ExchangeKind, QueueSpec};

/// Direct exchange that submissions are published to.
pub const JOBS_EXCHANGE: &str = "reelforge.jobs";
/// Routing key of submissions on [`JOBS_EXCHANGE`].
pub const SUBMIT_KEY: &str = "submit";
/// Durable queue the scheduler admits jobs from.
pub const SUBMIT_QUEUE: &str = "reelforge.submit";
/// Topic exchange of [`protocol::Event`]s, routing key `job.<id>.<state>`.
pub const EVENTS_EXCHANGE: &str = "reelforge.events";
/// Durable queue the scheduler tracks job state from (bound to `job.#`).
pub const SCHEDULER_EVENTS_QUEUE: &str = "reelforge.scheduler.events";
/// Highest message priority on work queues (jobs carry 0..=9).
pub const MAX_PRIORITY: u8 = protocol::limits::MAX_PRIORITY;

/// The work queue of one job kind and model profile: `reelforge.tasks.<kind>.<profile>`.
pub fn task_queue(kind: JobKind, profile: &str) -> String {
    format!("reelforge.tasks.{}.{profile}", kind.as_str())
}

/// Declares the shared part of the topology: submissions, events, the scheduler's event feed.
pub async fn declare_core(bus: &dyn Bus) -> Result<(), BusError> {
    bus.declare_exchange(JOBS_EXCHANGE, ExchangeKind::Direct)
        .await?;
    bus.declare_exchange(EVENTS_EXCHANGE, ExchangeKind::Topic)
        .await?;
    bus.declare_queue(&QueueSpec::durable(SUBMIT_QUEUE)).await?;
    bus.bind(SUBMIT_QUEUE, JOBS_EXCHANGE, SUBMIT_KEY).await?;
    bus.declare_queue(&QueueSpec::durable(SCHEDULER_EVENTS_QUEUE))
        .await?;
    bus.bind(SCHEDULER_EVENTS_QUEUE, EVENTS_EXCHANGE, "job.#")
        .await?;
    Ok(())
}

/// Declares the work queue of `kind` and `profile`, with priorities.
pub async fn declare_task_queue(
    bus: &dyn Bus,
    kind: JobKind,
    profile: &str,
) -> Result<String, BusError> {
    let name = task_queue(kind, profile);
    bus.declare_queue(&QueueSpec {
        name: name.clone(),
        durable: true,
        auto_delete: false,
        max_priority: MAX_PRIORITY,
    })
    .await?;
    Ok(name)
}
