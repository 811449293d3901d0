//! [`MemoryBus`]: the in-process broker of the embedded mode (and of unit tests of pure logic).
//! It keeps AMQP's semantics that reelforge relies on: per-queue priorities (higher first, FIFO
//! within a priority), prefetch-bounded consumers, manual ack/nack, redelivery of whatever a
//! dropped consumer left unsettled, direct, topic and fanout exchanges, message TTL with
//! dead-lettering (the retry ladder), `basic.get`, and unroutable publishes refused.
//! Nothing is persisted: it is not a stand-in for RabbitMQ in integration tests.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{Acker, Bus, BusError, Consumer, Delivery, ExchangeKind, Message, QueueSpec, topic};

/// The in-process broker. Cheap to clone; clones share the broker.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    exchanges: HashMap<String, Exchange>,
    seq: u64,
}

struct Exchange {
    kind: ExchangeKind,
    bindings: Vec<(String, String)>,
}

struct Queue {
    spec: QueueSpec,
    ready: BinaryHeap<Queued>,
    notify: Arc<Notify>,
}

struct Queued {
    priority: u8,
    seq: u64,
    redelivered: bool,
    message: Message,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then the older message (smaller seq) first.
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

fn not_found(what: &'static str, name: &str) -> BusError {
    BusError::NotFound { what, name: name.to_owned() }
}

impl MemoryBus {
    /// A broker with no queues or exchanges.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().expect("bus state poisoned")
    }

    fn requeue(&self, queue: &str, q: Queued) {
        if let Some(queue) = self.state().queues.get_mut(queue) {
            queue.ready.push(Queued { redelivered: true, ..q });
            queue.notify.notify_one();
        }
    }

    /// The queues a publish reaches.
    fn route(st: &State, exchange: &str, key: &str) -> Result<Vec<String>, BusError> {
        let targets: Vec<String> = if exchange.is_empty() {
            vec![key.to_owned()]
        } else {
            let ex = st.exchanges.get(exchange).ok_or_else(|| not_found("exchange", exchange))?;
            ex.bindings
                .iter()
                .filter(|(pattern, _)| match ex.kind {
                    ExchangeKind::Direct => pattern == key,
                    ExchangeKind::Topic => topic::matches(pattern, key),
                    ExchangeKind::Fanout => true,
                })
                .map(|(_, q)| q.clone())
                .collect()
        };
        Ok(targets.into_iter().filter(|q| st.queues.contains_key(q)).collect())
    }

    /// Puts a message on a queue; a queue with a TTL and a dead-letter exchange forwards it
    /// there, with its routing key, when it expires unconsumed.
    fn enqueue(&self, st: &mut State, queue: &str, key: &str, message: Message) {
        st.seq += 1;
        let seq = st.seq;
        let Some(q) = st.queues.get_mut(queue) else { return };
        let priority = message.priority.min(q.spec.max_priority);
        if let (Some(ttl), Some(dlx)) = (q.spec.message_ttl_ms, q.spec.dead_letter_exchange.clone()) {
            let bus = self.clone();
            let (queue, key) = (queue.to_owned(), key.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(ttl))).await;
                bus.expire(&queue, seq, &dlx, &key);
            });
        }
        q.ready.push(Queued { priority, seq, redelivered: false, message });
        q.notify.notify_one();
    }

    fn expire(&self, queue: &str, seq: u64, dlx: &str, key: &str) {
        let mut st = self.state();
        let Some(q) = st.queues.get_mut(queue) else { return };
        let mut expired = None;
        q.ready.retain(|m| {
            if m.seq == seq {
                expired = Some(m.message.clone());
            }
            m.seq != seq
        });
        if let Some(message) = expired
            && let Ok(targets) = Self::route(&st, dlx, key)
        {
            for t in targets {
                self.enqueue(&mut st, &t, key, message.clone());
            }
        }
    }

    fn acker(&self, queue: &str, q: Queued, permit: Option<OwnedSemaphorePermit>) -> Delivery {
        let (message, redelivered) = (q.message.clone(), q.redelivered);
        let acker = MemoryAcker { bus: self.clone(), queue: queue.to_owned(), held: Some(q), _permit: permit };
        Delivery::new(message, redelivered, Box::new(acker))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BusError> {
        spec.check()?;
        let mut st = self.state();
        match st.queues.get(&spec.name) {
            Some(q) if q.spec != *spec => Err(BusError::Refused {
                what: format!("queue `{}`", spec.name),
                reason: "redeclared with different arguments".into(),
            }),
            Some(_) => Ok(()),
            None => {
                let q = Queue { spec: spec.clone(), ready: BinaryHeap::new(), notify: Arc::new(Notify::new()) };
                st.queues.insert(spec.name.clone(), q);
                Ok(())
            }
        }
    }

    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BusError> {
        self.state().exchanges.entry(name.to_owned()).or_insert_with(|| Exchange { kind, bindings: Vec::new() });
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BusError> {
        let mut st = self.state();
        if !st.queues.contains_key(queue) {
            return Err(not_found("queue", queue));
        }
        let ex = st.exchanges.get_mut(exchange).ok_or_else(|| not_found("exchange", exchange))?;
        let binding = (pattern.to_owned(), queue.to_owned());
        if !ex.bindings.contains(&binding) {
            ex.bindings.push(binding);
        }
        Ok(())
    }

    async fn publish(&self, exchange: &str, routing_key: &str, message: Message) -> Result<(), BusError> {
        let mut st = self.state();
        let targets = Self::route(&st, exchange, routing_key)?;
        if targets.is_empty() {
            return Err(BusError::NotConfirmed {
                exchange: exchange.to_owned(),
                key: routing_key.to_owned(),
                reason: "unroutable: no queue is bound to this key".into(),
            });
        }
        for q in targets {
            self.enqueue(&mut st, &q, routing_key, message.clone());
        }
        Ok(())
    }

    async fn publish_atomic(&self, messages: Vec<(String, String, Message)>) -> Result<(), BusError> {
        // Routed first, under one lock, so a bad route publishes nothing.
        let mut st = self.state();
        let mut routed = Vec::with_capacity(messages.len());
        for (exchange, key, message) in messages {
            routed.push((Self::route(&st, &exchange, &key)?, key, message));
        }
        for (targets, key, message) in routed {
            for q in targets {
                self.enqueue(&mut st, &q, &key, message.clone());
            }
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BusError> {
        let st = self.state();
        let q = st.queues.get(queue).ok_or_else(|| not_found("queue", queue))?;
        Ok(Box::new(MemoryConsumer {
            bus: self.clone(),
            queue: queue.to_owned(),
            notify: q.notify.clone(),
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        }))
    }

    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BusError> {
        let popped = self.state().queues.get_mut(queue).ok_or_else(|| not_found("queue", queue))?.ready.pop();
        Ok(popped.map(|q| self.acker(queue, q, None)))
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        let st = self.state();
        Ok(st.queues.get(queue).ok_or_else(|| not_found("queue", queue))?.ready.len() as u64)
    }
}

struct MemoryConsumer {
    bus: MemoryBus,
    queue: String,
    notify: Arc<Notify>,
    permits: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let popped = self.bus.state().queues.get_mut(&self.queue)?.ready.pop();
            if let Some(q) = popped {
                return Some(Ok(self.bus.acker(&self.queue, q, Some(permit))));
            }
            notified.await;
        }
    }
}

struct MemoryAcker {
    bus: MemoryBus,
    queue: String,
    held: Option<Queued>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        self.held = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<(), BusError> {
        if let Some(q) = self.held.take()
            && requeue
        {
            self.bus.requeue(&self.queue, q);
        }
        Ok(())
    }

    async fn ack_with(mut self: Box<Self>, messages: Vec<crate::Outgoing>) -> Result<(), BusError> {
        // Routed first, under the one lock, so a bad route publishes nothing and keeps the
        // delivery (it is requeued when this acker drops).
        let mut st = self.bus.state();
        let mut routed = Vec::with_capacity(messages.len());
        for (exchange, key, message) in messages {
            routed.push((MemoryBus::route(&st, &exchange, &key)?, key, message));
        }
        for (targets, key, message) in routed {
            for q in targets {
                self.bus.enqueue(&mut st, &q, &key, message.clone());
            }
        }
        self.held = None;
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(q) = self.held.take() {
            self.bus.requeue(&self.queue, q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bus_with(queue: &str, max_priority: u8) -> MemoryBus {
        let bus = MemoryBus::new();
        bus.declare_queue(&QueueSpec { max_priority, ..QueueSpec::durable(queue) }).await.unwrap();
        bus
    }

    #[tokio::test]
    async fn priorities_then_fifo() {
        let bus = bus_with("q", 9).await;
        for (id, p) in [("a", 1), ("b", 5), ("c", 5), ("d", 9), ("e", 0)] {
            bus.publish("", "q", Message::new(id, vec![]).with_priority(p)).await.unwrap();
        }
        let mut c = bus.consume("q", 10).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..5 {
            let d = c.next().await.unwrap().unwrap();
            order.push(d.message.id.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(order, ["d", "b", "c", "a", "e"]);
        assert_eq!(bus.depth("q").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn dropped_delivery_is_redelivered() {
        let bus = bus_with("q", 0).await;
        bus.publish("", "q", Message::new("m", b"x".to_vec())).await.unwrap();
        let mut c = bus.consume("q", 1).await.unwrap();
        let d = c.next().await.unwrap().unwrap();
        assert!(!d.redelivered);
        drop(d);
        let d = c.next().await.unwrap().unwrap();
        assert!(d.redelivered);
        assert_eq!(d.message.body, b"x");
        d.nack(false).await.unwrap();
        assert_eq!(bus.depth("q").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn ack_with_publishes_and_acks_together() {
        let bus = bus_with("q", 0).await;
        bus.declare_queue(&QueueSpec::durable("next")).await.unwrap();
        bus.publish("", "q", Message::new("m", b"x".to_vec())).await.unwrap();
        let mut c = bus.consume("q", 1).await.unwrap();
        // A bad route publishes nothing and keeps the delivery.
        let d = c.next().await.unwrap().unwrap();
        let bad = vec![("nowhere".to_string(), "k".to_string(), Message::new("n", vec![]))];
        assert!(d.ack_with(bad).await.is_err());
        assert_eq!(bus.depth("next").await.unwrap(), 0);
        let d = c.next().await.unwrap().unwrap();
        assert!(d.redelivered);
        let next = vec![(String::new(), "next".to_string(), Message::new("n", b"y".to_vec()))];
        d.ack_with(next).await.unwrap();
        assert_eq!((bus.depth("q").await.unwrap(), bus.depth("next").await.unwrap()), (0, 1));
    }

    #[tokio::test]
    async fn prefetch_bounds_unsettled_deliveries() {
        let bus = bus_with("q", 0).await;
        for i in 0..3 {
            bus.publish("", "q", Message::new(format!("{i}"), vec![])).await.unwrap();
        }
        let mut c = bus.consume("q", 2).await.unwrap();
        let a = c.next().await.unwrap().unwrap();
        let _b = c.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), c.next()).await;
        assert!(third.is_err(), "a third delivery came past prefetch 2");
        a.ack().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(third.message.id, "2");
    }

    #[tokio::test]
    async fn topic_exchange_routes_and_unroutable_is_refused() {
        let bus = MemoryBus::new();
        bus.declare_exchange("ev", ExchangeKind::Topic).await.unwrap();
        bus.declare_queue(&QueueSpec::durable("all")).await.unwrap();
        bus.declare_queue(&QueueSpec::durable("done")).await.unwrap();
        bus.bind("all", "ev", "job.#").await.unwrap();
        bus.bind("done", "ev", "job.*.succeeded").await.unwrap();
        bus.publish("ev", "job.1.running", Message::new("1", vec![])).await.unwrap();
        bus.publish("ev", "job.1.succeeded", Message::new("1", vec![])).await.unwrap();
        assert_eq!(bus.depth("all").await.unwrap(), 2);
        assert_eq!(bus.depth("done").await.unwrap(), 1);
        let err = bus.publish("ev", "other.key", Message::new("x", vec![])).await.unwrap_err();
        assert!(matches!(err, BusError::NotConfirmed { .. }));
        let err = bus.publish("", "missing", Message::new("x", vec![])).await.unwrap_err();
        assert!(matches!(err, BusError::NotConfirmed { .. }));
    }

    #[tokio::test]
    async fn consumer_waits_for_a_publish() {
        let bus = bus_with("q", 0).await;
        let mut c = bus.consume("q", 1).await.unwrap();
        let b2 = bus.clone();
        let h = tokio::spawn(async move { c.next().await.unwrap().unwrap().message.id });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b2.publish("", "q", Message::new("late", vec![])).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap(), "late");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_dead_letters_with_the_original_key() {
        let bus = MemoryBus::new();
        bus.declare_exchange("retry", ExchangeKind::Fanout).await.unwrap();
        let delay = QueueSpec {
            message_ttl_ms: Some(1000),
            dead_letter_exchange: Some(String::new()),
            ..QueueSpec::durable("delay")
        };
        bus.declare_queue(&delay).await.unwrap();
        bus.declare_queue(&QueueSpec::durable("work")).await.unwrap();
        bus.bind("delay", "retry", "").await.unwrap();
        bus.publish("retry", "work", Message::new("m", b"again".to_vec())).await.unwrap();
        assert_eq!((bus.depth("delay").await.unwrap(), bus.depth("work").await.unwrap()), (1, 0));
        tokio::time::sleep(Duration::from_millis(1001)).await;
        tokio::task::yield_now().await;
        assert_eq!((bus.depth("delay").await.unwrap(), bus.depth("work").await.unwrap()), (0, 1));
        let d = bus.get("work").await.unwrap().unwrap();
        assert_eq!(d.message.body, b"again");
        d.ack().await.unwrap();
        assert!(bus.get("work").await.unwrap().is_none());
        // Redeclaring with other arguments is refused, as RabbitMQ does.
        assert!(bus.declare_queue(&QueueSpec::durable("delay")).await.is_err());
    }
}
