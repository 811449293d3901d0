//! [`MemoryBus`]: the in-process broker of the embedded mode (and of unit tests of pure logic).
//! It keeps AMQP's semantics that reelforge relies on: per-queue priorities (higher first, FIFO
//! within a priority), prefetch-bounded consumers, manual ack/nack, redelivery of whatever a
//! dropped consumer left unsettled, direct and topic exchanges, and unroutable publishes refused.
//! Nothing is persisted: it is not a stand-in for RabbitMQ in integration tests.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{Acker, Bus, BusError, Consumer, Delivery, ExchangeKind, Message, QueueSpec, topic};

/// The in-process broker. Cheap to clone; clones share the broker.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
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
    max_priority: u8,
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
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl MemoryBus {
    /// A broker with no queues or exchanges.
    pub fn new() -> Self {
        Self::default()
    }

    fn requeue(&self, queue: &str, q: Queued) {
        let mut st = self.inner.state.lock().expect("bus state poisoned");
        if let Some(queue) = st.queues.get_mut(queue) {
            queue.ready.push(Queued {
                redelivered: true,
                ..q
            });
            queue.notify.notify_one();
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BusError> {
        let mut st = self.inner.state.lock().expect("bus state poisoned");
        st.queues.entry(spec.name.clone()).or_insert_with(|| Queue {
            max_priority: spec.max_priority,
            ready: BinaryHeap::new(),
            notify: Arc::new(Notify::new()),
        });
        Ok(())
    }

    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BusError> {
        let mut st = self.inner.state.lock().expect("bus state poisoned");
        st.exchanges
            .entry(name.to_owned())
            .or_insert_with(|| Exchange {
                kind,
                bindings: Vec::new(),
            });
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BusError> {
        let mut st = self.inner.state.lock().expect("bus state poisoned");
        if !st.queues.contains_key(queue) {
            return Err(BusError::NotFound {
                what: "queue",
                name: queue.to_owned(),
            });
        }
        let ex = st
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| BusError::NotFound {
                what: "exchange",
                name: exchange.to_owned(),
            })?;
        let binding = (pattern.to_owned(), queue.to_owned());
        if !ex.bindings.contains(&binding) {
            ex.bindings.push(binding);
        }
        Ok(())
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), BusError> {
        let mut st = self.inner.state.lock().expect("bus state poisoned");
        let targets: Vec<String> = if exchange.is_empty() {
            vec![routing_key.to_owned()]
        } else {
            let ex = st
                .exchanges
                .get(exchange)
                .ok_or_else(|| BusError::NotFound {
                    what: "exchange",
                    name: exchange.to_owned(),
                })?;
            ex.bindings
                .iter()
                .filter(|(pattern, _)| match ex.kind {
                    ExchangeKind::Direct => pattern == routing_key,
                    ExchangeKind::Topic => topic::matches(pattern, routing_key),
                })
                .map(|(_, q)| q.clone())
                .collect()
        };
        let targets: Vec<String> = targets
            .into_iter()
            .filter(|q| st.queues.contains_key(q))
            .collect();
        if targets.is_empty() {
            return Err(BusError::NotConfirmed {
                exchange: exchange.to_owned(),
                key: routing_key.to_owned(),
                reason: "unroutable: no queue is bound to this key".into(),
            });
        }
        for q in targets {
            st.seq += 1;
            let seq = st.seq;
            let queue = st.queues.get_mut(&q).expect("checked above");
            let priority = message.priority.min(queue.max_priority);
            queue.ready.push(Queued {
                priority,
                seq,
                redelivered: false,
                message: message.clone(),
            });
            queue.notify.notify_one();
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BusError> {
        let st = self.inner.state.lock().expect("bus state poisoned");
        let q = st.queues.get(queue).ok_or_else(|| BusError::NotFound {
            what: "queue",
            name: queue.to_owned(),
        })?;
        Ok(Box::new(MemoryConsumer {
            bus: self.clone(),
            queue: queue.to_owned(),
            notify: q.notify.clone(),
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        }))
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        let st = self.inner.state.lock().expect("bus state poisoned");
        let q = st.queues.get(queue).ok_or_else(|| BusError::NotFound {
            what: "queue",
            name: queue.to_owned(),
        })?;
        Ok(q.ready.len() as u64)
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
            let popped = {
                let mut st = self.bus.inner.state.lock().expect("bus state poisoned");
                st.queues.get_mut(&self.queue)?.ready.pop()
            };
            if let Some(q) = popped {
                let message = q.message.clone();
                let redelivered = q.redelivered;
                let acker = MemoryAcker {
                    bus: self.bus.clone(),
                    queue: self.queue.clone(),
                    held: Some(q),
                    _permit: permit,
                };
                return Some(Ok(Delivery::new(message, redelivered, Box::new(acker))));
            }
            notified.await;
        }
    }
}

struct MemoryAcker {
    bus: MemoryBus,
    queue: String,
    held: Option<Queued>,
    _permit: OwnedSemaphorePermit,
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
    use std::time::Duration;

    async fn bus_with(queue: &str, max_priority: u8) -> MemoryBus {
        let bus = MemoryBus::new();
        bus.declare_queue(&QueueSpec {
            name: queue.into(),
            durable: true,
            auto_delete: false,
            max_priority,
        })
        .await
        .unwrap();
        bus
    }

    #[tokio::test]
    async fn priorities_then_fifo() {
        let bus = bus_with("q", 9).await;
        for (id, p) in [("a", 1), ("b", 5), ("c", 5), ("d", 9), ("e", 0)] {
            bus.publish("", "q", Message::new(id, vec![]).with_priority(p))
                .await
                .unwrap();
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
        bus.publish("", "q", Message::new("m", b"x".to_vec()))
            .await
            .unwrap();
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
    async fn prefetch_bounds_unsettled_deliveries() {
        let bus = bus_with("q", 0).await;
        for i in 0..3 {
            bus.publish("", "q", Message::new(format!("{i}"), vec![]))
                .await
                .unwrap();
        }
        let mut c = bus.consume("q", 2).await.unwrap();
        let a = c.next().await.unwrap().unwrap();
        let _b = c.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), c.next()).await;
        assert!(third.is_err(), "a third delivery came past prefetch 2");
        a.ack().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(third.message.id, "2");
    }

    #[tokio::test]
    async fn topic_exchange_routes_and_unroutable_is_refused() {
        let bus = MemoryBus::new();
        bus.declare_exchange("ev", ExchangeKind::Topic)
            .await
            .unwrap();
        bus.declare_queue(&QueueSpec::durable("all")).await.unwrap();
        bus.declare_queue(&QueueSpec::durable("done"))
            .await
            .unwrap();
        bus.bind("all", "ev", "job.#").await.unwrap();
        bus.bind("done", "ev", "job.*.succeeded").await.unwrap();
        bus.publish("ev", "job.1.running", Message::new("1", vec![]))
            .await
            .unwrap();
        bus.publish("ev", "job.1.succeeded", Message::new("1", vec![]))
            .await
            .unwrap();
        assert_eq!(bus.depth("all").await.unwrap(), 2);
        assert_eq!(bus.depth("done").await.unwrap(), 1);
        let err = bus
            .publish("ev", "other.key", Message::new("x", vec![]))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NotConfirmed { .. }));
        let err = bus
            .publish("", "missing", Message::new("x", vec![]))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NotConfirmed { .. }));
    }

    #[tokio::test]
    async fn consumer_waits_for_a_publish() {
        let bus = bus_with("q", 0).await;
        let mut c = bus.consume("q", 1).await.unwrap();
        let b2 = bus.clone();
        let h = tokio::spawn(async move { c.next().await.unwrap().unwrap().message.id });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b2.publish("", "q", Message::new("late", vec![]))
            .await
            .unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap()
                .unwrap(),
            "late"
        );
    }
}
