//! [`AmqpBus`] against the real RabbitMQ on 127.0.0.1:5672 (guest/guest; `deploy/scripts/test.sh`
//! starts it). Queue names are unique per test run; test queues auto-delete.

use std::time::Duration;

use bus::amqp::AmqpBus;
use bus::{Bus, BusError, ExchangeKind, Message, QueueSpec};

fn url() -> String {
    std::env::var("REELFORGE_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn bus() -> AmqpBus {
    AmqpBus::connect(&url()).await.expect("RabbitMQ on 127.0.0.1:5672 (run deploy/scripts/test.sh)")
}

fn unique(name: &str) -> String {
    format!("test.{name}.{}.{}", std::process::id(), chrono_like_nanos())
}

fn chrono_like_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The first message on `queue` within 5 s (polled every 100 ms), if any.
async fn get_within_5s(bus: &AmqpBus, queue: &str) -> Option<bus::Delivery> {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(d) = bus.get(queue).await.unwrap() {
            return Some(d);
        }
    }
    None
}

fn temp_queue(name: &str) -> QueueSpec {
    QueueSpec { auto_delete: true, ..QueueSpec::durable(name) }
}

#[tokio::test]
async fn publish_consume_ack_with_priorities_and_headers() {
    let bus = bus().await;
    let q = unique("prio");
    bus.declare_queue(&QueueSpec { max_priority: 9, ..temp_queue(&q) }).await.unwrap();
    for (id, p) in [("low", 1), ("high", 9), ("mid", 5)] {
        let mut m = Message::new(id, id.as_bytes().to_vec()).with_priority(p);
        m.headers.insert("x-test".into(), format!("h-{id}"));
        bus.publish("", &q, m).await.unwrap();
    }
    assert_eq!(bus.depth(&q).await.unwrap(), 3);
    let mut c = bus.consume(&q, 10).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), c.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(d.message.headers.get("x-test").map(String::as_str), Some(format!("h-{}", d.message.id).as_str()));
        got.push(d.message.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(got, ["high", "mid", "low"]);
}

#[tokio::test]
async fn unroutable_publish_is_an_error() {
    let bus = bus().await;
    let err = bus.publish("", &unique("nowhere"), Message::new("x", vec![])).await.unwrap_err();
    assert!(matches!(err, BusError::NotConfirmed { .. }), "{err}");
}

#[tokio::test]
async fn nack_requeue_redelivers_and_dropped_delivery_returns() {
    let bus = bus().await;
    let q = unique("redeliver");
    bus.declare_queue(&temp_queue(&q)).await.unwrap();
    bus.publish("", &q, Message::new("m", b"body".to_vec())).await.unwrap();
    let mut c = bus.consume(&q, 1).await.unwrap();
    let d = c.next().await.unwrap().unwrap();
    assert!(!d.redelivered);
    d.nack(true).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), c.next()).await.unwrap().unwrap().unwrap();
    assert!(d.redelivered);
    drop(d);
    let d = tokio::time::timeout(Duration::from_secs(10), c.next()).await.unwrap().unwrap().unwrap();
    assert!(d.redelivered);
    assert_eq!(d.message.body, b"body");
    d.ack().await.unwrap();
}

#[tokio::test]
async fn ttl_rung_dead_letters_back_to_the_work_queue() {
    let bus = bus().await;
    let work = unique("work");
    let rung = unique("rung");
    bus.declare_queue(&temp_queue(&work)).await.unwrap();
    bus.declare_exchange(&rung, ExchangeKind::Fanout).await.unwrap();
    let spec =
        QueueSpec { message_ttl_ms: Some(300), dead_letter_exchange: Some(String::new()), ..QueueSpec::durable(&rung) };
    bus.declare_queue(&spec).await.unwrap();
    bus.bind(&rung, &rung, "").await.unwrap();
    bus.publish(&rung, &work, Message::new("r", b"retry".to_vec())).await.unwrap();
    assert_eq!(bus.depth(&work).await.unwrap(), 0);
    let d = get_within_5s(&bus, &work).await.expect("dead-lettered into the work queue within 5 s");
    assert_eq!(d.message.body, b"retry");
    assert_eq!(d.message.id, "r");
    d.ack().await.unwrap();
    // The rung itself is durable: remove it so repeated runs leave nothing behind.
    let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_queue", &rung]).output();
}

/// Tests that close connections run one at a time (one closes every connection there is).
static CLOSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn consumers_survive_a_dropped_connection() {
    let _one_at_a_time = CLOSING.lock().await;
    let bus = bus().await;
    let q = unique("reconnect");
    // Durable and not auto-delete: the queue must outlive the dropped connection.
    bus.declare_queue(&QueueSpec::durable(&q)).await.unwrap();
    let mut c = bus.consume(&q, 1).await.unwrap();
    let out = std::process::Command::new("rabbitmqctl").args(["-q", "close_all_connections", "test"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Publishing reconnects; the consumer resubscribes on the new connection.
    bus.publish("", &q, Message::new("after", b"x".to_vec())).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), c.next())
        .await
        .expect("delivery after reconnect")
        .unwrap()
        .unwrap();
    assert_eq!(d.message.id, "after");
    d.ack().await.unwrap();
    assert!(bus.is_connected().await);
    let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_queue", &q]).output();
}

#[tokio::test]
async fn atomic_publishes_arrive_together_and_concurrently() {
    let bus = bus().await;
    let (q1, q2) = (unique("atomic1"), unique("atomic2"));
    bus.declare_queue(&temp_queue(&q1)).await.unwrap();
    bus.declare_queue(&temp_queue(&q2)).await.unwrap();
    // Concurrent transactions use channels of their own: none commits another's messages.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (bus, q1, q2) = (bus.clone(), q1.clone(), q2.clone());
        tasks.push(tokio::spawn(async move {
            let m = |tag: &str| Message::new(format!("{tag}{i}"), tag.as_bytes().to_vec());
            bus.publish_atomic(vec![("".into(), q1, m("a")), ("".into(), q2, m("b"))]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(bus.depth(&q1).await.unwrap(), 8);
    assert_eq!(bus.depth(&q2).await.unwrap(), 8);
    let d = bus.get(&q2).await.unwrap().unwrap();
    assert_eq!(d.message.body, b"b");
    d.ack().await.unwrap();
}

/// Closes the connection whose client-provided name is `name`, as an operator or a network would.
fn close_connection_named(name: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "--no-table-headers", "pid", "client_properties"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = listing
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no connection named {name} in {listing}"));
    let out = std::process::Command::new("rabbitmqctl").args(["-q", "close_connection", pid, "test"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn ack_with_is_atomic_and_fenced_by_the_delivery() {
    let _one_at_a_time = CLOSING.lock().await;
    let name = unique("fenced-conn");
    let bus = AmqpBus::connect_named(&url(), Some(&name)).await.unwrap();
    let (q, next) = (unique("fence"), unique("fence.next"));
    bus.declare_queue(&QueueSpec::durable(&q)).await.unwrap();
    bus.declare_queue(&QueueSpec::durable(&next)).await.unwrap();
    let mut c = bus.consume(&q, 4).await.unwrap();
    let mut take = async || tokio::time::timeout(Duration::from_secs(30), c.next()).await.unwrap().unwrap().unwrap();

    // Settled together with its successor: the successor is queued, the message is gone.
    bus.publish("", &q, Message::new("a", b"1".to_vec())).await.unwrap();
    let d = take().await;
    assert!(d.is_held());
    d.ack_with(vec![(String::new(), next.clone(), Message::new("a2", b"2".to_vec()))]).await.unwrap();
    // A plain ack on the same (now transactional) channel still settles.
    bus.publish("", &q, Message::new("p", b"p".to_vec())).await.unwrap();
    take().await.ack().await.unwrap();
    assert_eq!((bus.depth(&q).await.unwrap(), bus.depth(&next).await.unwrap()), (0, 1));

    // The holder's connection goes: the broker requeues the message, and the stale holder can
    // commit nothing.
    bus.publish("", &q, Message::new("b", b"3".to_vec())).await.unwrap();
    let d = take().await;
    close_connection_named(&name);
    for _ in 0..100 {
        if !d.is_held() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!d.is_held(), "the delivery of a closed connection still looks held");
    let err = d.ack_with(vec![(String::new(), next.clone(), Message::new("b2", b"4".to_vec()))]).await.unwrap_err();
    assert!(matches!(err, BusError::Lost(_)), "{err}");
    let again = take().await;
    assert_eq!(again.message.id, "b");
    assert!(again.redelivered);
    again.ack().await.unwrap();
    assert_eq!(bus.depth(&next).await.unwrap(), 1, "the stale holder's successor landed");
    for queue in [&q, &next] {
        let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_queue", queue]).output();
    }
}

/// A quorum fleet's queues on a real broker (a single node runs quorum queues too): they are
/// declared with their type, a retry rung dead-letters into a work queue at least once, a task
/// is settled in a transaction with its successor (the commit path), and what a quorum queue
/// cannot do is refused before the broker sees it.
#[tokio::test]
async fn quorum_queues_dead_letter_and_take_transactions() {
    let bus = bus().await;
    let (work, next, rung) = (unique("qwork"), unique("qnext"), unique("qrung"));
    let quorum = |name: &str| QueueSpec { quorum: true, ..QueueSpec::durable(name) };
    bus.declare_queue(&quorum(&work)).await.unwrap();
    bus.declare_queue(&quorum(&next)).await.unwrap();
    // Idempotent with the same arguments.
    bus.declare_queue(&quorum(&work)).await.unwrap();
    bus.declare_exchange(&rung, ExchangeKind::Fanout).await.unwrap();
    let spec = QueueSpec { message_ttl_ms: Some(300), dead_letter_exchange: Some(String::new()), ..quorum(&rung) };
    bus.declare_queue(&spec).await.unwrap();
    bus.bind(&rung, &rung, "").await.unwrap();
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "--no-table-headers", "name", "type", "arguments"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = listing.lines().find(|l| l.starts_with(&format!("{rung}\t"))).expect("the rung is listed");
    assert!(row.contains("quorum") && row.contains("at-least-once"), "{row}");

    bus.publish(&rung, &work, Message::new("r", b"retry".to_vec())).await.unwrap();
    let d = get_within_5s(&bus, &work).await.expect("dead-lettered into the quorum work queue within 5 s");
    assert_eq!(d.message.id, "r");
    d.ack_with(vec![(String::new(), next.clone(), Message::new("r", b"committed".to_vec()))]).await.unwrap();
    assert_eq!(bus.depth(&work).await.unwrap(), 0);
    let d = bus.get(&next).await.unwrap().expect("the successor, published in the ack's transaction");
    assert_eq!(d.message.body, b"committed");
    d.ack().await.unwrap();

    let refused = bus.declare_queue(&QueueSpec { max_priority: 9, ..quorum(&unique("qprio")) }).await;
    assert!(matches!(refused, Err(BusError::Refused { .. })), "{refused:?}");
    for q in [&work, &next, &rung] {
        let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_queue", q]).output();
    }
}
