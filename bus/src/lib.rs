//! `bus` owns the message transport the scheduler and the workers speak: the [`Bus`] trait
//! (declare, bind, publish with broker confirmation, consume with manual ack/nack), the
//! [`topology`] both roles declare (queue and exchange names are part of the wire contract), and
//! [`memory::MemoryBus`], the in-process broker of the embedded mode, and [`amqp::AmqpBus`],
//! RabbitMQ through lapin. The scheduler and worker code paths are the same over both.

pub mod amqp;
pub mod memory;
pub mod topic;
pub mod topology;

use std::collections::BTreeMap;

use async_trait::async_trait;

/// A message as published and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The AMQP `message_id` (for jobs and tasks: the job id).
    pub id: String,
    /// 0 (lowest) to the queue's max priority.
    pub priority: u8,
    /// The JSON body.
    pub body: Vec<u8>,
    /// String headers (reasons, attempt counts).
    pub headers: BTreeMap<String, String>,
    /// The AMQP `user_id` property: RabbitMQ refuses a publish whose `user_id` is not the
    /// publishing connection's user, so on delivery it names who published (when set).
    pub user_id: Option<String>,
}

impl Message {
    /// A message with an id and a body, priority 0, no headers.
    pub fn new(id: impl Into<String>, body: Vec<u8>) -> Self {
        Message { id: id.into(), body, ..Default::default() }
    }

    /// The same message with a priority.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }
}

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// To queues bound with exactly the routing key.
    Direct,
    /// To queues whose binding pattern matches the key (`*` one word, `#` any words).
    Topic,
    /// To every bound queue, whatever the key (the key is kept for dead-lettering).
    Fanout,
}

/// A queue to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Its name.
    pub name: String,
    /// Survives a broker restart (with persistent messages).
    pub durable: bool,
    /// Deleted when its last consumer goes (private event feeds).
    pub auto_delete: bool,
    /// Highest message priority honoured (0: none).
    pub max_priority: u8,
    /// Messages expire after this many milliseconds (retry delays).
    pub message_ttl_ms: Option<u32>,
    /// Expired or rejected messages go to this exchange, keeping their routing key
    /// (`""`: the default exchange, i.e. the queue named by the key).
    pub dead_letter_exchange: Option<String>,
    /// Only one consumer at a time receives; the others stand by (scheduler replicas).
    pub single_active_consumer: bool,
    /// A replicated quorum queue (RabbitMQ `x-queue-type: quorum`) instead of a classic one:
    /// durable only, no message priorities; dead-lettering is at least once.
    pub quorum: bool,
}

impl QueueSpec {
    /// A durable queue without priorities.
    pub fn durable(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            durable: true,
            auto_delete: false,
            max_priority: 0,
            message_ttl_ms: None,
            dead_letter_exchange: None,
            single_active_consumer: false,
            quorum: false,
        }
    }

    /// The spec as declared: refused when it asks for what the queue type cannot do (a quorum
    /// queue that is not durable, or has priorities).
    pub fn check(&self) -> Result<(), BusError> {
        let refuse =
            |reason: &str| Err(BusError::Refused { what: format!("queue `{}`", self.name), reason: reason.into() });
        match self {
            QueueSpec { quorum: true, durable: false, .. } | QueueSpec { quorum: true, auto_delete: true, .. } => {
                refuse("a quorum queue is durable and never auto-deleted")
            }
            QueueSpec { quorum: true, max_priority: 1.., .. } => {
                refuse("quorum queues have no message priorities: use one queue per priority band")
            }
            _ => Ok(()),
        }
    }

    /// A private queue that goes away with its consumer's connection (event feeds).
    pub fn transient(name: impl Into<String>) -> Self {
        QueueSpec { durable: false, auto_delete: true, ..QueueSpec::durable(name) }
    }
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Publishing to, binding or consuming a queue or exchange that was never declared.
    #[error("no such {what} `{name}`")]
    NotFound {
        /// `queue` or `exchange`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The broker refused or lost the message (no confirmation).
    #[error("publish to `{exchange}` with key `{key}` not confirmed: {reason}")]
    NotConfirmed {
        /// The exchange.
        exchange: String,
        /// The routing key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The connection is gone and could not be re-established.
    #[error("broker connection lost: {0}")]
    Disconnected(String),
    /// The delivery is no longer held by this consumer (its channel or connection closed, and
    /// the broker requeued it): it cannot be settled from here.
    #[error("delivery lost: {0}")]
    Lost(String),
    /// The broker refused a declaration or an operation.
    #[error("broker refused {what}: {reason}")]
    Refused {
        /// What was asked.
        what: String,
        /// The broker's reason.
        reason: String,
    },
}

/// The transport both roles speak. Every method is idempotent where AMQP's is.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Declares a queue (idempotent for the same spec).
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BusError>;
    /// Declares an exchange (idempotent).
    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BusError>;
    /// Routes messages of `exchange` matching `pattern` to `queue`.
    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BusError>;
    /// Publishes a persistent message and returns once the broker has taken responsibility for it.
    /// The exchange `""` routes to the queue named by the key. An unroutable message is an error.
    async fn publish(&self, exchange: &str, routing_key: &str, message: Message) -> Result<(), BusError>;
    /// Publishes persistent messages (exchange, routing key, message) all or none: when it
    /// returns, the broker holds every one; when it fails, or the publisher dies first, it holds
    /// all of them or none (AMQP transactions). Unlike [`Bus::publish`], an unroutable message is
    /// not detected: publish to queues and exchanges you declared.
    async fn publish_atomic(&self, messages: Vec<(String, String, Message)>) -> Result<(), BusError>;
    /// Starts consuming with at most `prefetch` unacknowledged deliveries in hand.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BusError>;
    /// Takes one message from a queue without subscribing (AMQP `basic.get`), if any is ready.
    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BusError>;
    /// Messages ready in a queue (not counting unacknowledged ones).
    async fn depth(&self, queue: &str) -> Result<u64, BusError>;
    /// True while the broker is reachable (readiness).
    async fn is_connected(&self) -> bool {
        true
    }
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; waits while the queue is empty or `prefetch` deliveries are unsettled.
    /// `None` when the consumer was closed.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

/// One message to publish as part of [`Acker::ack_with`]: (exchange, routing key, message).
pub type Outgoing = (String, String, Message);

/// Settles a delivery with the broker.
#[async_trait]
pub trait Acker: Send + Sync {
    /// The message is done with; the broker forgets it.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// The message was not handled: back to its queue (`requeue`) or dropped/dead-lettered.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), BusError>;
    /// Publishes `messages` (persistent) and acks this delivery as one atomic step (an AMQP
    /// transaction on the delivery's own channel): afterwards the broker holds all of them and
    /// has forgotten the delivery, or, when this fails, holds none of them and still has the
    /// delivery. It fails with [`BusError::Lost`] once the delivery is no longer this holder's
    /// (its channel closed and the broker requeued it for someone else): that is the fence that
    /// keeps a stale holder from committing anything. Unroutable messages are not detected:
    /// publish to queues and exchanges that were declared.
    async fn ack_with(self: Box<Self>, messages: Vec<Outgoing>) -> Result<(), BusError>;
    /// False once this holder can no longer settle the delivery (the channel it came on closed,
    /// so the broker has requeued it): whatever the holder is doing for it is now stale.
    fn is_held(&self) -> bool {
        true
    }
}

/// One message handed to a consumer, to be settled exactly once. Dropping it unsettled returns
/// the message to its queue, as a closed AMQP channel does.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// True when the broker delivered it before (its consumer died or nacked it).
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(message: Message, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Delivery { message, redelivered, acker }
    }

    /// Splits into the message and its acker, to settle later.
    pub fn into_parts(self) -> (Message, bool, Box<dyn Acker>) {
        (self.message, self.redelivered, self.acker)
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Rejects the delivery, requeueing it or not.
    pub async fn nack(self, requeue: bool) -> Result<(), BusError> {
        self.acker.nack(requeue).await
    }

    /// False once the delivery is no longer this holder's ([`Acker::is_held`]).
    pub fn is_held(&self) -> bool {
        self.acker.is_held()
    }

    /// Publishes `messages` and acks the delivery atomically ([`Acker::ack_with`]).
    pub async fn ack_with(self, messages: Vec<Outgoing>) -> Result<(), BusError> {
        self.acker.ack_with(messages).await
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}
