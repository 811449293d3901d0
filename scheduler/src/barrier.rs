//! [`FeedBarrier`]: lets admission wait until this replica has applied every event published
//! before now. A replica that takes over admission receives the submissions and held jobs its
//! dead predecessor had in hand, redelivered; whatever that replica committed (a task and its
//! `dispatched` event, a held copy and its `queued` event, a result) was published atomically,
//! so its events already sit in this replica's event feed. Admission publishes a marker
//! straight to its own feed queue and waits until the event loop reaches it: every event
//! queued before the marker has then been applied to the job table, and a job the predecessor
//! committed shows up as a duplicate instead of being dispatched twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::{Bus, BusError, Message};
use tokio::sync::oneshot;

/// The header that marks a barrier message on an event feed.
pub const BARRIER_HEADER: &str = "x-reelforge-barrier";

/// How long admission waits for its marker before giving up (the submission is then requeued).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// Markers in flight on one replica's event feed.
pub struct FeedBarrier {
    bus: Arc<dyn Bus>,
    /// The replica's own event feed queue.
    feed: String,
    /// Waiting admissions by marker id.
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    next: AtomicU64,
}

impl FeedBarrier {
    /// A barrier over the event feed queue `feed`.
    pub fn new(bus: Arc<dyn Bus>, feed: String) -> Self {
        FeedBarrier { bus, feed, waiting: Mutex::default(), next: AtomicU64::new(0) }
    }

    /// Returns once the event loop has passed a marker published now.
    pub async fn sync(&self) -> Result<(), BusError> {
        let id = format!("barrier-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("barrier lock").insert(id.clone(), tx);
        let mut marker = Message::new(id.clone(), Vec::new());
        marker.headers.insert(BARRIER_HEADER.into(), "1".into());
        let published = self.bus.publish("", &self.feed, marker).await;
        let reached = match published {
            Ok(()) => tokio::time::timeout(BARRIER_TIMEOUT, rx).await.ok().and_then(Result::ok),
            Err(e) => {
                self.waiting.lock().expect("barrier lock").remove(&id);
                return Err(e);
            }
        };
        self.waiting.lock().expect("barrier lock").remove(&id);
        reached.ok_or_else(|| BusError::NotConfirmed {
            exchange: String::new(),
            key: self.feed.clone(),
            reason: "the event feed did not reach the barrier marker in time".into(),
        })
    }

    /// Called by the event loop for a message carrying [`BARRIER_HEADER`]: wakes its waiter.
    pub fn reached(&self, message: &Message) {
        if let Some(tx) = self.waiting.lock().expect("barrier lock").remove(&message.id) {
            let _ = tx.send(());
        }
    }

    /// True when `message` is a barrier marker.
    pub fn is_marker(message: &Message) -> bool {
        message.headers.contains_key(BARRIER_HEADER)
    }
}
