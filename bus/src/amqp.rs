//! [`AmqpBus`]: the [`Bus`] over RabbitMQ through lapin. Publishes are persistent and
//! `mandatory`, on a channel in confirm mode, and return only once the broker has confirmed them
//! (an unroutable message is an error). Consumers each get a channel with `basic.qos` = their
//! prefetch. When the connection is lost, the bus reconnects with exponential backoff, replays
//! every declaration and binding it made (so transient queues come back), and consumers
//! resubscribe; deliveries in hand from the old connection were already requeued by the broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{Acker, Bus, BusError, Consumer, Delivery, ExchangeKind, Message, QueueSpec};

/// Reconnect attempts before an operation gives up (consumers retry forever).
const PUBLISH_ATTEMPTS: u32 = 6;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a transaction's commit-ok. A broker that never answers (RabbitMQ 3.10 did
/// not, for a commit that enqueued into a quorum queue while its leader's node had just died)
/// would otherwise hold the transaction's delivery, and every other delivery settled on that
/// channel, for good; past this, the channel is closed, which requeues what it held.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a channel to close after an abandoned transaction.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `tx.commit` on `ch`, given up after [`COMMIT_TIMEOUT`] (the broker's answer, committed or
/// not, then decides: a closed channel discards an uncommitted transaction).
async fn commit(ch: &Channel) -> Result<(), lapin::Error> {
    match tokio::time::timeout(COMMIT_TIMEOUT, ch.tx_commit()).await {
        Ok(out) => out,
        Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no commit-ok from the broker in {} s", COMMIT_TIMEOUT.as_secs()),
        ))))),
    }
}

/// Closes `ch`, not waiting longer than [`CLOSE_TIMEOUT`].
async fn close(ch: &Channel, why: &str) {
    if tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, why.into())).await.is_err() {
        warn!(why, "the broker did not confirm a channel close in time");
    }
}

/// RabbitMQ, reconnecting.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The cluster's nodes; a reconnect tries them in turn, from the one last connected to.
    urls: Vec<String>,
    /// Index in `urls` of the node to try first.
    node: std::sync::atomic::AtomicUsize,
    /// The `connection_name` client property (RabbitMQ shows it as the connection's name).
    name: Option<String>,
    link: Mutex<Option<Link>>,
    /// Everything declared so far, replayed in order after a reconnect.
    declared: std::sync::Mutex<Vec<Declaration>>,
    /// Idle channels in transaction mode, with the link generation they belong to: one per
    /// concurrent [`Bus::publish_atomic`], so transactions never interleave.
    tx_channels: std::sync::Mutex<Vec<(u64, Channel)>>,
    /// How "atomic" publishes are made ([`Atomicity`]).
    atomicity: Atomicity,
}

/// How [`Bus::publish_atomic`] and [`Acker::ack_with`] publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Atomicity {
    /// One AMQP transaction: all or nothing, and a delivery whose channel closed cannot
    /// publish anything (the fence). Right for classic queues.
    #[default]
    Transactions,
    /// Each message published with a publisher confirm, then the delivery acked. For quorum
    /// queues: RabbitMQ 3.10 answered commit-ok for transactions that enqueued into a quorum
    /// queue in the moments after its leader's node died and then lost those messages (4 to 6
    /// of 24 jobs in `tests/cluster.rs`, every run), while confirmed publishes are kept. Not
    /// atomic: when the ack fails after the publishes, the delivery comes back and its
    /// successors exist too, so consumers must (and reelforge's do) tolerate a repeat: a
    /// re-admitted job is a duplicate, a repeated commit record loses to the first one.
    Confirms,
}

#[derive(Clone)]
struct Link {
    conn: Arc<Connection>,
    publish: Channel,
    generation: u64,
}

#[derive(Clone, PartialEq)]
enum Declaration {
    Exchange(String, ExchangeKind),
    Queue(QueueSpec),
    Bind { queue: String, exchange: String, pattern: String },
}

/// The user an AMQP URL connects as (lapin's own URI parser: percent-decoded, `guest` when the
/// URL names none), e.g. to bind submissions to it. A cluster's comma-separated URLs must all
/// name the same user.
pub fn user_of(url: &str) -> Result<String, BusError> {
    let mut users = split_urls(url).into_iter().map(|u| {
        u.parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .map_err(|e| BusError::Refused { what: "AMQP URL".into(), reason: e })
    });
    let first =
        users.next().unwrap_or_else(|| Err(BusError::Refused { what: "AMQP URL".into(), reason: "empty".into() }))?;
    for user in users {
        if user? != first {
            return Err(BusError::Refused {
                what: "AMQP URLs".into(),
                reason: "the nodes of one cluster must be reached as the same user".into(),
            });
        }
    }
    Ok(first)
}

/// The node URLs of `url`: one AMQP URL, or a cluster's, comma-separated.
fn split_urls(url: &str) -> Vec<String> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

fn refused(what: impl Into<String>, e: impl std::fmt::Display) -> BusError {
    BusError::Refused { what: what.into(), reason: e.to_string() }
}

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6))).min(MAX_BACKOFF)
}

impl AmqpBus {
    /// Connects to `url` (`amqp://user:pass@host:5672/%2f`), or to the first reachable node of
    /// a cluster given as comma-separated URLs (a lost connection then moves to the next node).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        Self::connect_named(url, None).await
    }

    /// Connects to `url`, naming the connection (what `rabbitmqctl list_connections` and the
    /// management UI show, e.g. `reelforge worker w1`).
    pub async fn connect_named(url: &str, name: Option<&str>) -> Result<Self, BusError> {
        Self::connect_with(url, name, Atomicity::default()).await
    }

    /// [`AmqpBus::connect_named`], choosing how atomic publishes are made.
    pub async fn connect_with(url: &str, name: Option<&str>, atomicity: Atomicity) -> Result<Self, BusError> {
        let urls = split_urls(url);
        if urls.is_empty() {
            return Err(BusError::Refused { what: "AMQP URL".into(), reason: "empty".into() });
        }
        let bus = AmqpBus {
            inner: Arc::new(Inner {
                urls,
                node: Default::default(),
                name: name.map(str::to_owned),
                link: Mutex::new(None),
                declared: Default::default(),
                tx_channels: Default::default(),
                atomicity,
            }),
        };
        bus.link().await?;
        Ok(bus)
    }

    /// The current link, (re)connecting once if it is down.
    async fn link(&self) -> Result<Link, BusError> {
        let mut guard = self.inner.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.conn.status().connected()
            && link.publish.status().connected()
        {
            return Ok(link.clone());
        }
        let generation = guard.as_ref().map_or(0, |l| l.generation + 1);
        let mut props = ConnectionProperties::default();
        if let Some(name) = &self.inner.name {
            props = props.with_connection_name(name.as_str().into());
        }
        let conn = self.connect_any(props).await?;
        let publish = conn.create_channel().await.map_err(|e| BusError::Disconnected(e.to_string()))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::Disconnected(e.to_string()))?;
        let link = Link { conn: Arc::new(conn), publish, generation };
        let replay = self.inner.declared.lock().expect("declarations lock").clone();
        for d in &replay {
            apply(&link.publish, d).await?;
        }
        if generation > 0 {
            info!(generation, declarations = replay.len(), "reconnected to the broker");
        }
        *guard = Some(link.clone());
        Ok(link)
    }

    /// This bus, when atomic publishes go with confirms ([`Atomicity::Confirms`]).
    fn confirms(&self) -> Option<AmqpBus> {
        (self.inner.atomicity == Atomicity::Confirms).then(|| self.clone())
    }

    /// A connection to the first node that answers, starting from the last one that did.
    async fn connect_any(&self, props: ConnectionProperties) -> Result<Connection, BusError> {
        use std::sync::atomic::Ordering;
        let urls = &self.inner.urls;
        let start = self.inner.node.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in (0..urls.len()).map(|k| (start + k) % urls.len()) {
            match Connection::connect(&urls[i], props.clone()).await {
                Ok(conn) => {
                    if i != start {
                        info!(node = i, "connected to another node of the cluster");
                    }
                    self.inner.node.store(i, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(e) => last = e.to_string(),
            }
        }
        // Next time, start from the node after the one that failed first.
        self.inner.node.store((start + 1) % urls.len(), Ordering::Relaxed);
        Err(BusError::Disconnected(last))
    }

    /// Runs `op` on the current link, reconnecting with backoff on connection errors.
    async fn with_link<T, F, Fut>(&self, what: &str, op: F) -> Result<T, BusError>
    where
        F: Fn(Link) -> Fut,
        Fut: std::future::Future<Output = Result<T, lapin::Error>>,
    {
        let mut last = String::new();
        for attempt in 0..PUBLISH_ATTEMPTS {
            match self.link().await {
                Ok(link) => match op(link.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) if link.conn.status().connected() && link.publish.status().connected() => {
                        return Err(refused(what, e));
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(BusError::Disconnected(format!("{what}: {last}")))
    }

    /// Publishes with a publisher confirm; `mandatory`: an unroutable message is an error.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
        mandatory: bool,
    ) -> Result<(), BusError> {
        let props = properties(&message);
        let what = format!("publish to `{exchange}`/`{routing_key}`");
        let confirmation = self
            .with_link(&what, |link| {
                let props = props.clone();
                let body = message.body.clone();
                async move {
                    let opts = BasicPublishOptions { mandatory, ..Default::default() };
                    link.publish.basic_publish(exchange.into(), routing_key.into(), opts, &body, props).await?.await
                }
            })
            .await?;
        let not_confirmed = |reason: &str| BusError::NotConfirmed {
            exchange: exchange.to_owned(),
            key: routing_key.to_owned(),
            reason: reason.to_owned(),
        };
        if !confirmation.is_ack() {
            return Err(not_confirmed("the broker nacked the message"));
        }
        if confirmation.take_message().is_some() {
            return Err(not_confirmed("unroutable: no queue is bound to this key"));
        }
        Ok(())
    }

    /// [`Bus::publish_atomic`] as one transaction.
    async fn publish_in_transaction(&self, messages: Vec<(String, String, Message)>) -> Result<(), BusError> {
        let lost =
            |e: lapin::Error| BusError::Disconnected(format!("atomic publish of {} messages: {e}", messages.len()));
        let link = self.link().await?;
        let pooled = {
            let mut pool = self.inner.tx_channels.lock().expect("tx channel pool");
            pool.retain(|(g, ch)| *g == link.generation && ch.status().connected());
            pool.pop().map(|(_, ch)| ch)
        };
        let ch = match pooled {
            Some(ch) => ch,
            None => {
                let ch = link.conn.create_channel().await.map_err(lost)?;
                ch.tx_select().await.map_err(lost)?;
                ch
            }
        };
        let committed = async {
            for (exchange, key, message) in &messages {
                let opts = BasicPublishOptions::default();
                ch.basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    opts,
                    &message.body,
                    properties(message),
                )
                .await?;
            }
            // The broker answers commit-ok once the persistent messages are on disk.
            commit(&ch).await
        }
        .await;
        match committed {
            Ok(()) => {
                self.inner.tx_channels.lock().expect("tx channel pool").push((link.generation, ch));
                Ok(())
            }
            Err(e) => {
                // Closing the channel discards whatever it had not committed.
                close(&ch, "transaction abandoned").await;
                Err(lost(e))
            }
        }
    }

    async fn declare(&self, d: Declaration) -> Result<(), BusError> {
        let what = match &d {
            Declaration::Exchange(n, _) => format!("exchange `{n}`"),
            Declaration::Queue(q) => format!("queue `{}`", q.name),
            Declaration::Bind { queue, exchange, .. } => format!("binding `{queue}` ← `{exchange}`"),
        };
        let mut last = String::new();
        for attempt in 0..PUBLISH_ATTEMPTS {
            let link = match self.link().await {
                Ok(l) => l,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            // A refused declaration closes its channel: use a throwaway one.
            let ch = match link.conn.create_channel().await {
                Ok(ch) => ch,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let out = apply(&ch, &d).await;
            let _ = ch.close(200, "declared".into()).await;
            match out {
                Ok(()) => {
                    let mut declared = self.inner.declared.lock().expect("declarations lock");
                    if !declared.contains(&d) {
                        declared.push(d);
                    }
                    return Ok(());
                }
                Err(e) if link.conn.status().connected() => return Err(e),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(BusError::Disconnected(format!("{what}: {last}")))
    }
}

async fn apply(ch: &Channel, d: &Declaration) -> Result<(), BusError> {
    match d {
        Declaration::Exchange(name, kind) => {
            let kind = match kind {
                ExchangeKind::Direct => lapin::ExchangeKind::Direct,
                ExchangeKind::Topic => lapin::ExchangeKind::Topic,
                ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            };
            let opts = ExchangeDeclareOptions { durable: true, ..Default::default() };
            ch.exchange_declare(name.as_str().into(), kind, opts, FieldTable::default())
                .await
                .map_err(|e| refused(format!("exchange `{name}`"), e))
        }
        Declaration::Queue(spec) => {
            spec.check()?;
            let mut args = FieldTable::default();
            if spec.quorum {
                args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
                if spec.dead_letter_exchange.is_some() {
                    // Dead-letter at least once (the default drops a message whose dead-letter
                    // publish is lost in a leader change); it needs reject-publish overflow.
                    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
                    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
                }
            }
            if spec.max_priority > 0 {
                args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(spec.max_priority));
            }
            if let Some(ttl) = spec.message_ttl_ms {
                args.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
            }
            if let Some(dlx) = &spec.dead_letter_exchange {
                args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
            }
            if spec.single_active_consumer {
                args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            }
            let opts =
                QueueDeclareOptions { durable: spec.durable, auto_delete: spec.auto_delete, ..Default::default() };
            ch.queue_declare(spec.name.as_str().into(), opts, args)
                .await
                .map(|_| ())
                .map_err(|e| refused(format!("queue `{}`", spec.name), e))
        }
        Declaration::Bind { queue, exchange, pattern } => ch
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| refused(format!("binding `{queue}` ← `{exchange}`"), e)),
    }
}

fn properties(message: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &message.headers {
        headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(message.id.as_str().into())
        .with_priority(message.priority)
        .with_content_type("application/json".into())
        .with_headers(headers);
    match &message.user_id {
        Some(user) => props.with_user_id(user.as_str().into()),
        None => props,
    }
}

fn message_of(d: &lapin::message::Delivery) -> Message {
    let p = &d.properties;
    let headers: BTreeMap<String, String> = p
        .headers()
        .as_ref()
        .map(|t| {
            t.inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => {
                        Some((k.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned()))
                    }
                    AMQPValue::ShortString(s) => Some((k.to_string(), s.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        id: p.message_id().as_ref().map(ShortString::to_string).unwrap_or_default(),
        priority: p.priority().unwrap_or(0),
        body: d.data.clone(),
        headers,
        user_id: p.user_id().as_ref().map(ShortString::to_string),
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BusError> {
        self.declare(Declaration::Queue(spec.clone())).await
    }

    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BusError> {
        self.declare(Declaration::Exchange(name.to_owned(), kind)).await
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BusError> {
        self.declare(Declaration::Bind { queue: queue.into(), exchange: exchange.into(), pattern: pattern.into() })
            .await
    }

    async fn publish(&self, exchange: &str, routing_key: &str, message: Message) -> Result<(), BusError> {
        self.publish_confirmed(exchange, routing_key, message, true).await
    }

    async fn publish_atomic(&self, messages: Vec<(String, String, Message)>) -> Result<(), BusError> {
        if self.inner.atomicity == Atomicity::Confirms {
            for (exchange, key, message) in messages {
                self.publish_confirmed(&exchange, &key, message, false).await?;
            }
            return Ok(());
        }
        self.publish_in_transaction(messages).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BusError> {
        let mut c = AmqpConsumer { bus: self.clone(), queue: queue.to_owned(), prefetch, stream: None, failures: 0 };
        c.subscribe().await?;
        Ok(Box::new(c))
    }

    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BusError> {
        let link = self.link().await?;
        let ch = link.conn.create_channel().await.map_err(|e| BusError::Disconnected(e.to_string()))?;
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| refused(format!("get from `{queue}`"), e))?;
        Ok(got.map(|g| {
            let message = message_of(&g.delivery);
            let acker = AmqpAcker {
                acker: Some(g.delivery.acker.clone()),
                settle: Arc::new(Settle::new(ch)),
                confirms: self.confirms(),
            };
            Delivery::new(message, g.delivery.redelivered, Box::new(acker))
        }))
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        let link = self.link().await?;
        let ch = link.conn.create_channel().await.map_err(|e| BusError::Disconnected(e.to_string()))?;
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = ch
            .queue_declare(queue.into(), opts, FieldTable::default())
            .await
            .map_err(|e| refused(format!("queue `{queue}`"), e))?;
        let _ = ch.close(200, "depth".into()).await;
        Ok(u64::from(q.message_count()))
    }

    async fn is_connected(&self) -> bool {
        self.inner.link.lock().await.as_ref().is_some_and(|l| l.conn.status().connected())
    }
}

struct AmqpConsumer {
    bus: AmqpBus,
    queue: String,
    prefetch: u16,
    stream: Option<(lapin::Consumer, Arc<Settle>)>,
    failures: u32,
}

impl AmqpConsumer {
    async fn subscribe(&mut self) -> Result<(), BusError> {
        let link = self.bus.link().await?;
        let ch = link.conn.create_channel().await.map_err(|e| BusError::Disconnected(e.to_string()))?;
        ch.basic_qos(self.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| refused(format!("qos on `{}`", self.queue), e))?;
        let consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| refused(format!("consume `{}`", self.queue), e))?;
        self.stream = Some((consumer, Arc::new(Settle::new(ch))));
        Ok(())
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if self.stream.is_none() {
                if let Err(e) = self.subscribe().await {
                    self.failures += 1;
                    if matches!(e, BusError::Refused { .. }) && Bus::is_connected(&self.bus).await {
                        return Some(Err(e));
                    }
                    warn!(queue = %self.queue, error = %e, "resubscribing after backoff");
                    tokio::time::sleep(backoff(self.failures)).await;
                    continue;
                }
                self.failures = 0;
            }
            let (stream, settle) = self.stream.as_mut().expect("subscribed above");
            match stream.next().await {
                Some(Ok(d)) => {
                    let message = message_of(&d);
                    let acker = AmqpAcker {
                        acker: Some(d.acker.clone()),
                        settle: settle.clone(),
                        confirms: self.bus.confirms(),
                    };
                    return Some(Ok(Delivery::new(message, d.redelivered, Box::new(acker))));
                }
                Some(Err(e)) => {
                    warn!(queue = %self.queue, error = %e, "consumer lost; resubscribing");
                    self.stream = None;
                }
                None => {
                    warn!(queue = %self.queue, "consumer closed by the broker; resubscribing");
                    self.stream = None;
                }
            }
        }
    }
}

/// Settles the deliveries of one channel, one at a time. AMQP transactions are per channel and
/// take in every ack and publish made on it, so once any delivery of the channel was settled
/// with [`Acker::ack_with`] the channel is in transaction mode and every later settlement on it
/// commits on its own; the lock keeps two settlements from sharing a transaction.
struct Settle {
    channel: Channel,
    /// True once `tx.select` was sent on the channel.
    transactional: Mutex<bool>,
}

impl Settle {
    fn new(channel: Channel) -> Self {
        Settle { channel, transactional: Mutex::new(false) }
    }

    fn held(&self) -> bool {
        self.channel.status().connected()
    }

    /// The error for a failed settlement: the delivery is lost when its channel is gone.
    fn failed(&self, what: &str, e: lapin::Error) -> BusError {
        if self.held() { refused(what, e) } else { BusError::Lost(format!("{what}: {e}")) }
    }

    /// Runs `op` (publishes on the channel, then the delivery's ack or nack, which says whether
    /// it went out) and, in transaction mode, commits it. An ack the channel could no longer
    /// send (it closed) rolls the transaction back: nothing published lands.
    async fn settle<F, Fut>(&self, what: &str, begin_tx: bool, op: F) -> Result<(), BusError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<bool, lapin::Error>>,
    {
        let mut tx = self.transactional.lock().await;
        if !self.held() {
            return Err(BusError::Lost(format!("{what}: the delivery's channel is closed")));
        }
        if begin_tx && !*tx {
            self.channel.tx_select().await.map_err(|e| self.failed(what, e))?;
            *tx = true;
        }
        let settled = op(self.channel.clone()).await;
        let out = match settled {
            Ok(true) if *tx => {
                // Commit-ok comes once the persistent messages are on disk and the ack applied.
                commit(&self.channel).await.map_err(|e| self.failed(what, e))
            }
            Ok(true) => Ok(()),
            Ok(false) => Err(BusError::Lost(format!("{what}: the delivery can no longer be settled here"))),
            Err(e) => Err(self.failed(what, e)),
        };
        if out.is_err() && self.held() {
            // A failure that left the channel open would leave the delivery unsettled on it for
            // good: close the channel, so the broker requeues what it held (the consumer
            // resubscribes on a new one). Closing also discards an open transaction.
            warn!("{what} failed on an open channel; closing it so its deliveries are requeued");
            close(&self.channel, "settlement failed").await;
        }
        out
    }
}

struct AmqpAcker {
    acker: Option<lapin::Acker>,
    /// The delivery's channel (kept open until the delivery is settled).
    settle: Arc<Settle>,
    /// The bus to publish through with confirms ([`Atomicity::Confirms`]); `None`: one
    /// transaction on the delivery's channel.
    confirms: Option<AmqpBus>,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        let acker = self.acker.take().expect("settled once");
        self.settle.settle("ack", false, |_| async move { acker.ack(BasicAckOptions::default()).await }).await
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<(), BusError> {
        let acker = self.acker.take().expect("settled once");
        let opts = BasicNackOptions { requeue, multiple: false };
        self.settle.settle("nack", false, |_| async move { acker.nack(opts).await }).await
    }

    async fn ack_with(mut self: Box<Self>, messages: Vec<crate::Outgoing>) -> Result<(), BusError> {
        let acker = self.acker.take().expect("settled once");
        let what = format!("ack with {} messages", messages.len());
        if let Some(bus) = self.confirms.take() {
            // Not held any more: publish nothing (a narrower fence than a transaction's; the
            // delivery's next holder may still repeat what follows, see `Atomicity::Confirms`).
            if !self.settle.held() || !acker.usable() {
                return Err(BusError::Lost(format!("{what}: the delivery's channel is closed")));
            }
            for (exchange, key, message) in messages {
                bus.publish_confirmed(&exchange, &key, message, false).await?;
            }
            return self
                .settle
                .settle(&what, false, |_| async move { acker.ack(BasicAckOptions::default()).await })
                .await;
        }
        self.settle
            .settle(&what, true, |ch| async move {
                for (exchange, key, message) in &messages {
                    let opts = BasicPublishOptions::default();
                    let props = properties(message);
                    ch.basic_publish(exchange.as_str().into(), key.as_str().into(), opts, &message.body, props).await?;
                }
                acker.ack(BasicAckOptions::default()).await
            })
            .await
    }

    fn is_held(&self) -> bool {
        self.settle.held() && self.acker.as_ref().is_some_and(lapin::Acker::usable)
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        // Unsettled: hand it back to the broker, as the in-process bus does.
        if let Some(acker) = self.acker.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let settle = self.settle.clone();
            rt.spawn(async move {
                let opts = BasicNackOptions { requeue: true, multiple: false };
                let _ = settle.settle("nack", false, |_| async move { acker.nack(opts).await }).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn the_user_is_read_from_the_url() {
        assert_eq!(user_of("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap(), "guest");
        assert_eq!(user_of("amqps://svc%40acme:p%3Ass@mq/v").unwrap(), "svc@acme");
        assert_eq!(user_of("amqp://127.0.0.1:5672").unwrap(), "guest");
    }
}
