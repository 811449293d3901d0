//! Chaos soak, outside the test command: JOBS jobs through 2 scheduler replicas and 4 workers
//! (no-op pipelines, local store on tmpfs) in a private RabbitMQ vhost, while the soak SIGKILLs
//! random workers and scheduler replicas (each restarted a second later), closes worker
//! connections with `rabbitmqctl close_connection`, and restarts the broker's application once,
//! halfway. Then it counts, from the store (one `result.json` per committed job) and the event
//! feed: submitted, committed, lost (must be 0), duplicate commits (a second commit record for a
//! job, which the committer logs; must be 0), executions per job (attempt markers), DLQ entries
//! by reason, submit → `finished` latency p50/p99, and the time to drain after the last submit.
//!
//! `cargo bench --bench soak -- [JOBS] [RATE]` (defaults 10000 jobs, 200 jobs/s). Needs
//! RabbitMQ on 127.0.0.1:5672 with guest/guest and `rabbitmqctl` (restarting the broker's
//! application disturbs anything else using it). Exits non-zero when a job is lost or committed
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::amqp::AmqpBus;
use bus::{Bus, Message, topology};
use protocol::{Event, EventBody};

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl").arg("-q").args(args).output().is_ok_and(|o| o.status.success())
}

/// The soak's processes by name, each restartable with the arguments it was started with.
struct Fleet {
    bin: &'static str,
    url: String,
    logs: PathBuf,
    procs: BTreeMap<String, (Vec<String>, Child)>,
}

impl Fleet {
    fn start(&mut self, name: &str, args: Vec<String>) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join(format!("{name}.log")));
        let child = Command::new(self.bin)
            .args(&args)
            .env("REELFORGE_AMQP_URL", &self.url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.unwrap())
            .spawn()
            .unwrap();
        self.procs.insert(name.to_owned(), (args, child));
    }

    fn kill(&mut self, name: &str) -> Option<Vec<String>> {
        let (args, mut child) = self.procs.remove(name)?;
        let _ = child.kill();
        let _ = child.wait();
        Some(args)
    }

    fn restart(&mut self, name: &str) {
        if let Some(args) = self.kill(name) {
            std::thread::sleep(Duration::from_secs(1));
            self.start(name, args);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Committed jobs (those with a `result.json`) and attempt markers per job, from the store.
fn scan(store: &Path) -> (usize, HashMap<String, usize>) {
    let (mut committed, mut markers) = (0, HashMap::new());
    for tenant in std::fs::read_dir(store).into_iter().flatten().flatten() {
        for job in std::fs::read_dir(tenant.path()).into_iter().flatten().flatten() {
            let id = job.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(job.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name == "result.json" {
                    committed += 1;
                } else if name.starts_with("attempt-") && name.ends_with(".json") && !name.ends_with(".meta.json") {
                    *markers.entry(id.clone()).or_default() += 1;
                }
            }
        }
    }
    (committed, markers)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(10_000);
    let rate = args.get(1).copied().unwrap_or(200).max(1);
    let vhost = format!("soak-{}", std::process::id());
    assert!(rabbitmqctl(&["add_vhost", &vhost]), "RabbitMQ and rabbitmqctl");
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let dir = tempfile::Builder::new().prefix("reelforge-soak-").tempdir_in("/dev/shm").expect("tmpfs");
    let store = dir.path().join("store");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut fleet =
        Fleet { bin: env!("CARGO_BIN_EXE_reelforge"), url: url.clone(), logs: logs.clone(), procs: BTreeMap::new() };
    for s in ["s1", "s2"] {
        fleet.start(s, ["scheduler", "--id", s, "--listen", "127.0.0.1:0"].map(String::from).to_vec());
    }
    for w in 0..4 {
        let id = format!("w{w}");
        let args = [
            "worker",
            "--id",
            &id,
            "--listen",
            "127.0.0.1:0",
            "--capacity",
            "8",
            "--noop-pipeline",
            "--max-attempts",
            "6",
            "--retry-delays-ms",
            "200,1000,3000",
            "--heartbeat-s",
            "1",
            "--store-dir",
            store.to_str().unwrap(),
        ];
        fleet.start(&id, args.map(String::from).to_vec());
    }
    let bus = AmqpBus::connect(&url).await.expect("RabbitMQ on 127.0.0.1:5672");
    topology::declare_core(&bus).await.unwrap();
    let feed = topology::declare_feed(&bus, "soak", "events", topology::EVENTS_EXCHANGE, "job.#").await.unwrap();
    let mut events = bus.consume(&feed, 2000).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Submit at `rate`, retrying through the broker restart.
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let t0 = Instant::now();
    let publisher = {
        let (bus, submitted) = (bus.clone(), submitted.clone());
        tokio::spawn(async move {
            for i in 0..jobs {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate as f64)).into()).await;
                let id = format!("k{i}");
                let doc = serde_json::json!({
                    "v": 1, "kind": "edit", "job_id": id, "tenant": format!("t{}", i % 8),
                    "source": "s3://soak-in/t/x.mp4", "guidance": { "instruction": "x" }
                });
                submitted.lock().unwrap().insert(id.clone(), Instant::now());
                let msg = Message::new(id, doc.to_string().into_bytes());
                while bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, msg.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
    };

    // Events: first `finished` per job (the feed misses what is published while the broker is
    // down; the store is the record of what committed).
    let finished: Arc<Mutex<HashMap<String, (Instant, usize)>>> = Default::default();
    let reader = {
        let finished = finished.clone();
        tokio::spawn(async move {
            while let Some(d) = events.next().await {
                let Ok(d) = d else { continue };
                if let Ok(ev) = serde_json::from_slice::<Event>(&d.message.body)
                    && let EventBody::Finished { .. } = ev.event
                {
                    let mut f = finished.lock().unwrap();
                    f.entry(ev.job_id.to_string()).or_insert((Instant::now(), 0)).1 += 1;
                }
                let _ = d.ack().await;
            }
        })
    };

    // Chaos while submitting: a step every 2 s; the broker restart once, halfway.
    let submit_s = jobs as f64 / rate as f64;
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut step = 0usize;
    let mut broker_restarted = false;
    while t0.elapsed().as_secs_f64() < submit_s {
        tokio::time::sleep(Duration::from_secs(2)).await;
        step += 1;
        if !broker_restarted && t0.elapsed().as_secs_f64() > submit_s / 2.0 {
            rabbitmqctl(&["stop_app"]);
            tokio::time::sleep(Duration::from_secs(3)).await;
            rabbitmqctl(&["start_app"]);
            broker_restarted = true;
            *actions.entry("broker restart").or_default() += 1;
            continue;
        }
        match step % 4 {
            0 => {
                fleet.restart(&format!("w{}", step / 4 % 4));
                *actions.entry("worker SIGKILL").or_default() += 1;
            }
            1 => {
                let name = format!("reelforge worker w{}", (step / 4 + 1) % 4);
                let out = Command::new("rabbitmqctl")
                    .args(["-q", "list_connections", "--no-table-headers", "pid", "vhost", "client_properties"])
                    .output()
                    .unwrap();
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut cols = line.splitn(3, '\t');
                    if let (Some(pid), Some(v), Some(p)) = (cols.next(), cols.next(), cols.next())
                        && v == vhost
                        && p.contains(&name)
                        && rabbitmqctl(&["close_connection", pid, "soak"])
                    {
                        *actions.entry("worker connection closed").or_default() += 1;
                    }
                }
            }
            2 => {
                fleet.restart(if (step / 4).is_multiple_of(2) { "s1" } else { "s2" });
                *actions.entry("scheduler SIGKILL").or_default() += 1;
            }
            _ => {}
        }
    }
    publisher.await.unwrap();
    let last_submit = Instant::now();

    // Drain: until every job committed, or nothing more commits for 120 s.
    let (mut committed, mut markers) = scan(&store);
    let (mut progress_at, mut last) = (Instant::now(), committed);
    while committed < jobs && progress_at.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (committed, markers) = scan(&store);
        if committed > last {
            (progress_at, last) = (Instant::now(), committed);
        }
    }
    let drain_s = last_submit.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();

    let mut dlq: BTreeMap<String, usize> = BTreeMap::new();
    while let Ok(Some(d)) = bus.get(topology::DEAD_LETTER_QUEUE).await {
        let reason = d.message.headers.get(topology::REASON_HEADER).cloned().unwrap_or_default();
        let short: String = reason.split(':').next().unwrap_or_default().chars().take(60).collect();
        *dlq.entry(short).or_default() += 1;
        let _ = d.ack().await;
    }
    let mut duplicate_commits = 0;
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        duplicate_commits += text.matches("a result was committed first").count();
    }
    let sub = submitted.lock().unwrap();
    let fin = finished.lock().unwrap();
    let mut latencies: Vec<f64> =
        fin.iter().filter_map(|(id, (at, _))| sub.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1e3)).collect();
    latencies.sort_by(f64::total_cmp);
    let announced_twice = fin.values().filter(|(_, n)| *n > 1).count();
    let executions: usize = markers.values().sum();
    let rerun = markers.values().filter(|n| **n > 1).count();
    let lost = jobs - committed.min(jobs);

    println!("soak: {jobs} jobs at {rate}/s, 2 schedulers, 4 workers × 8 (no-op pipelines)");
    println!("chaos: {actions:?}");
    println!("submitted {}, committed {committed}, lost {lost}, duplicate commits {duplicate_commits}", sub.len());
    println!(
        "attempts started {executions} ({rerun} jobs ran more than once: interrupted by a kill or a closed connection)"
    );
    println!("dead-lettered: {dlq:?}");
    println!(
        "submit → finished ms (of {} seen on the feed): p50 {:.0}, p99 {:.0}, max {:.0}; finished announced twice: {announced_twice}",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!("drain after the last submit: {drain_s:.1} s");
    drop(fleet);
    rabbitmqctl(&["delete_vhost", &vhost]);
    if lost == 0 && duplicate_commits == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
