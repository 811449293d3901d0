//! A replica taking over admission sees what its dead predecessor committed: on the real
//! RabbitMQ on 127.0.0.1:5672 (`deploy/scripts/test.sh` starts it), each test in a vhost of its
//! own. The replica tests in `tests/fleet.rs` kill real processes; this one stages the moment
//! exactly (the predecessor's commit published, its submission not yet acked).

use std::sync::Arc;
use std::time::Duration;

use bus::amqp::AmqpBus;
use bus::{Bus, Message, topology};
use protocol::{Event, EventBody, Job, JobKind, JobState, Task, ValidationContext};
use scheduler::{Scheduler, SchedulerConfig};
use tokio_util::sync::CancellationToken;

fn job(id: &str) -> Vec<u8> {
    serde_json::json!({
        "v": 1, "kind": "edit", "job_id": id, "tenant": "t1", "source": "s3://media/t1/in.mp4",
        "guidance": { "instruction": "x" }
    })
    .to_string()
    .into_bytes()
}

/// Starts the replica that takes over after "the predecessor" took the submission `id` in hand;
/// `commit` publishes what the predecessor committed before it died; then the submission is
/// redelivered. Returns (admissions counted as dispatched, as duplicate, tasks on the queue).
async fn takeover(id: &str, commit: bool) -> (u64, u64, u64) {
    let vhost = format!("test-takeover-{id}-{}", std::process::id());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let bus = Arc::new(AmqpBus::connect(&url).await.expect("RabbitMQ on 127.0.0.1:5672 (run deploy/scripts/test.sh)"));
    topology::Layout::default().declare_core(bus.as_ref()).await.unwrap();
    let queue = topology::Layout::default()
        .declare_task_queues(bus.as_ref(), JobKind::Edit, "default")
        .await
        .unwrap()
        .remove(0);
    bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, Message::new(id, job(id))).await.unwrap();
    let in_hand = bus.get(topology::SUBMIT_QUEUE).await.unwrap().expect("the submission");
    let cfg = SchedulerConfig { id: "s2".into(), ..Default::default() };
    let s2 = Scheduler::new(bus.clone(), cfg);
    let (ready, metrics, stop) = (s2.ready_flag(), s2.metrics(), CancellationToken::new());
    tokio::spawn(s2.run(stop.clone()));
    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A backlog on the replica's event feed: its event loop has not applied what follows yet
    // when the redelivered submission arrives.
    for i in 0..3000 {
        let ev = Event::now(
            protocol::JobId(format!("other-{i}")),
            "t2".into(),
            "s1",
            EventBody::State { state: JobState::Running, detail: None },
        );
        let body = serde_json::to_vec(&ev).unwrap();
        bus.publish(topology::EVENTS_EXCHANGE, &ev.routing_key(), Message::new(ev.job_id.to_string(), body))
            .await
            .unwrap();
    }
    if commit {
        let j = Job::from_json(&job(id), &ValidationContext::default()).unwrap();
        let task = Message::new(id, serde_json::to_vec(&Task::first(j.clone())).unwrap());
        let ev = Event::now(
            j.job_id().clone(),
            j.tenant().clone(),
            "s1",
            EventBody::State { state: JobState::Dispatched, detail: Some(queue.clone()) },
        );
        let ev =
            (topology::EVENTS_EXCHANGE.into(), ev.routing_key(), Message::new(id, serde_json::to_vec(&ev).unwrap()));
        bus.publish_atomic(vec![(String::new(), queue.clone(), task), ev]).await.unwrap();
    }
    // The predecessor dies: its unsettled delivery goes back, redelivered.
    drop(in_hand);
    let count = |label: &str| metrics.admissions.with_label_values(&[label]).get();
    for _ in 0..3000 {
        if count("dispatched") + count("duplicate") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = (count("dispatched"), count("duplicate"), bus.depth(&queue).await.unwrap());
    stop.cancel();
    rabbitmqctl(&["delete_vhost", &vhost]);
    out
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl on PATH");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_submission_the_predecessor_dispatched_is_a_duplicate() {
    assert_eq!(takeover("x1", true).await, (0, 1, 1), "(dispatched, duplicate, tasks)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_submission_the_predecessor_did_not_commit_is_dispatched() {
    assert_eq!(takeover("x2", false).await, (1, 0, 1), "(dispatched, duplicate, tasks)");
}
