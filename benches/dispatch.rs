//! Dispatch benchmark: submit-to-worker-start latency and dispatch throughput of the fleet
//! itself, with no-op pipelines. Starts a scheduler and several workers (real processes) in a
//! private RabbitMQ vhost, submits N jobs from concurrent publishers, and reads every job's
//! `running` event. Prints jobs/s and latency percentiles.
//!
//! `cargo bench --bench dispatch -- [JOBS] [WORKERS] [CAPACITY] [RATE]` (defaults 10000 4 16 0).
//! RATE paces submissions at that many jobs/s in all (0: as fast as the broker confirms), to
//! measure latency below saturation.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::amqp::AmqpBus;
use bus::{Bus, Message, topology};
use chrono::{DateTime, Utc};
use protocol::{Event, EventBody, JobState};

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}");
}

struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(10_000);
    let workers = args.get(1).copied().unwrap_or(4);
    let capacity = args.get(2).copied().unwrap_or(16);
    let rate = args.get(3).copied().unwrap_or(0);
    let vhost = format!("bench-dispatch-{}", std::process::id());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let store = tempfile::Builder::new().prefix("reelforge-bench-").tempdir_in("/dev/shm").expect("tmpfs store");
    let bin = env!("CARGO_BIN_EXE_reelforge");
    let bus = AmqpBus::connect(&url).await.expect("RabbitMQ on 127.0.0.1:5672");
    topology::Layout::default().declare_core(&bus).await.unwrap();
    let feed =
        topology::declare_feed(&bus, "bench", "events", topology::EVENTS_EXCHANGE, "job.*.running").await.unwrap();
    let mut events = bus.consume(&feed, 2000).await.unwrap();

    let mut procs = Procs(Vec::new());
    let spawn = |args: Vec<String>| {
        Command::new(bin)
            .args(args)
            .env("REELFORGE_AMQP_URL", &url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    procs.0.push(spawn(
        ["scheduler", "--id", "bench-s", "--listen", "127.0.0.1:0", "--tenant-max-in-flight", "1000000"]
            .map(String::from)
            .to_vec(),
    ));
    for w in 0..workers {
        procs.0.push(spawn(vec![
            "worker".into(),
            "--id".into(),
            format!("bench-w{w}"),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--capacity".into(),
            capacity.to_string(),
            "--store-dir".into(),
            store.path().display().to_string(),
            "--noop-pipeline".into(),
        ]));
    }
    // Let every role declare and subscribe.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let submitted: Arc<std::sync::Mutex<HashMap<String, DateTime<Utc>>>> = Default::default();
    let t0 = Instant::now();
    let publishers = 32;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (bus, submitted) = (bus.clone(), submitted.clone());
        tasks.push(tokio::spawn(async move {
            for i in (p..jobs).step_by(publishers) {
                if rate > 0 {
                    tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate as f64)).into()).await;
                }
                let id = format!("j{i}");
                let doc = serde_json::json!({
                    "v": 1, "kind": "edit", "job_id": id, "tenant": format!("t{}", i % 8),
                    "source": "s3://bench-in/t/x.mp4", "guidance": { "instruction": "x" }
                });
                submitted.lock().unwrap().insert(id.clone(), Utc::now());
                bus.publish(
                    topology::JOBS_EXCHANGE,
                    topology::SUBMIT_KEY,
                    Message::new(id, doc.to_string().into_bytes()),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let submit_s = t0.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(jobs);
    let mut first_start: Option<DateTime<Utc>> = None;
    let mut last_start: Option<DateTime<Utc>> = None;
    while latencies.len() < jobs {
        let d = tokio::time::timeout(Duration::from_secs(120), events.next()).await.expect("events").unwrap().unwrap();
        let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        if let EventBody::State { state: JobState::Running, .. } = ev.event
            && let Some(at) = submitted.lock().unwrap().get(ev.job_id.as_str())
        {
            latencies.push((ev.at - *at).num_microseconds().unwrap_or(0) as f64 / 1e3);
            first_start = Some(first_start.map_or(ev.at, |f| f.min(ev.at)));
            last_start = Some(last_start.map_or(ev.at, |l| l.max(ev.at)));
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let first_submit = *submitted.lock().unwrap().values().min().unwrap();
    let span = (last_start.unwrap() - first_submit).num_microseconds().unwrap() as f64 / 1e6;
    println!(
        "jobs {jobs}, workers {workers} × capacity {capacity}, publishers {publishers}, rate {rate} jobs/s (0: unpaced)"
    );
    println!("submit (confirmed publishes): {:.0} jobs/s ({submit_s:.2} s)", jobs as f64 / submit_s);
    println!(
        "dispatch (first submit → last worker start): {:.0} jobs/s ({span:.2} s; wall {wall:.2} s)",
        jobs as f64 / span
    );
    println!(
        "submit → worker start latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        pct(&latencies, 0.5),
        pct(&latencies, 0.9),
        pct(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    drop(procs);
    rabbitmqctl(&["delete_vhost", &vhost]);
}
