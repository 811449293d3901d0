//! Chaos soak, outside the test command: JOBS jobs through 2 scheduler replicas and 4 workers
//! (no-op pipelines, outputs on S3) in a private RabbitMQ vhost, while the soak SIGKILLs random
//! workers and scheduler replicas (each restarted a second later), closes worker connections
//! with `rabbitmqctl close_connection`, restarts an S3 node once (a quarter in) and the broker
//! once (halfway). Then it counts, from the bucket (one `result.json` per committed job) and the
//! event feed: submitted, committed, lost (must be 0), duplicate commits (a second commit record
//! for a job, which the committer logs; must be 0), executions per job (attempt markers), DLQ
//! entries by reason, submit → `finished` latency p50/p99, and the time to drain after the last
//! submit.
//!
//! Two sites. By default the test command's single RabbitMQ (127.0.0.1:5672; the broker restart
//! is `rabbitmqctl stop_app`/`start_app`, which disturbs anything else using it) and its single
//! garage node (127.0.0.1:3900, killed and started again). With `SOAK_CLUSTER=1`, the 3-node
//! clusters of deploy/scripts/rabbitmq-cluster.sh and garage-cluster.sh with quorum queues: the
//! broker restart SIGKILLs the RabbitMQ node leading every queue, the S3 restart a garage node,
//! each started again 10 s later.
//!
//! `cargo bench --bench soak -- [JOBS] [RATE]` (defaults 10000 jobs, 200 jobs/s; `SOAK_KEEP=1`
//! keeps the processes' logs). Exits non-zero when a job is lost or committed twice.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::amqp::AmqpBus;
use bus::{Bus, Message, topology};
use protocol::{Event, EventBody};
use worker::storage::Store;
use worker::storage::s3::{S3Config, S3Store};

const GARAGE_KEY_ID: &str = "GK7265656c666f7267652d7465";
const GARAGE_SECRET: &str = "7265656c666f7267652d746573742d7365637265742d6b65792d303030303031";
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/scripts");

/// Where the soak runs: the test command's single broker and garage node, or the 3-node clusters.
struct Site {
    cluster: bool,
}

impl Site {
    /// `rabbitmqctl ARGS` on the site's broker (through node 2 of the cluster, which stays up).
    fn ctl(&self, args: &[&str]) -> Option<std::process::Output> {
        let mut c = if self.cluster {
            let mut c = Command::new("bash");
            c.arg(format!("{SCRIPTS}/rabbitmq-cluster.sh")).args(["ctl", "2"]);
            c
        } else {
            let mut c = Command::new("rabbitmqctl");
            c.arg("-q");
            c
        };
        c.args(args).output().ok()
    }

    fn rabbitmqctl(&self, args: &[&str]) -> bool {
        self.ctl(args).is_some_and(|o| o.status.success())
    }

    /// The URL the fleet's processes get (a cluster's nodes, node 1 first).
    fn roles_url(&self, vhost: &str) -> String {
        if self.cluster {
            (1..=3).map(|i| format!("amqp://guest:guest@127.0.0.1:570{i}/{vhost}")).collect::<Vec<_>>().join(",")
        } else {
            format!("amqp://guest:guest@127.0.0.1:5672/{vhost}")
        }
    }

    /// The URL the soak follows events through (node 3 of a cluster: not the one it kills).
    fn own_url(&self, vhost: &str) -> String {
        if self.cluster { format!("amqp://guest:guest@127.0.0.1:5703/{vhost}") } else { self.roles_url(vhost) }
    }

    fn queue_type(&self) -> topology::QueueType {
        if self.cluster { topology::QueueType::Quorum } else { topology::QueueType::Classic }
    }

    fn s3_endpoint(&self) -> &'static str {
        if self.cluster { "http://127.0.0.1:3911" } else { "http://127.0.0.1:3900" }
    }

    /// Takes the broker down: the whole broker's application, or the node leading every queue.
    fn broker_down(&self) {
        if self.cluster {
            script("rabbitmq-cluster.sh", &["kill", "1"]);
        } else {
            self.rabbitmqctl(&["stop_app"]);
        }
    }

    fn broker_up(&self) {
        if self.cluster {
            script("rabbitmq-cluster.sh", &["start-node", "1"]);
        } else {
            self.rabbitmqctl(&["start_app"]);
        }
    }

    /// Kills an S3 node: the single garage node (an outage), or node 3 of the cluster (the
    /// other two keep the quorum).
    fn s3_down(&self) {
        if self.cluster {
            script("garage-cluster.sh", &["kill", "3"]);
        } else if let Ok(pid) = std::fs::read_to_string(garage_data().join("garage.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }

    fn s3_up(&self) {
        if self.cluster {
            script("garage-cluster.sh", &["start-node", "3"]);
            return;
        }
        let data = garage_data();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("garage.log")).unwrap();
        let bin =
            std::env::var("HOME").map(PathBuf::from).unwrap().join(".cache/reelforge/tools/garage-2.5.0/bin/garage");
        // Left running past the soak, as the test command's node is (so no wait()).
        #[allow(clippy::zombie_processes)]
        let child = Command::new(bin)
            .args(["-c", data.join("garage.toml").to_str().unwrap(), "server"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the garage binary deploy/scripts/services.sh built");
        std::fs::write(data.join("garage.pid"), child.id().to_string()).unwrap();
    }
}

/// The test command's single garage node's data dir (services.sh's GARAGE_DATA).
fn garage_data() -> PathBuf {
    std::env::var("GARAGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::var("HOME").map(PathBuf::from).unwrap().join(".cache/reelforge/garage-data"))
}

fn script(name: &str, args: &[&str]) {
    let out = Command::new("bash").arg(format!("{SCRIPTS}/{name}")).args(args).output().unwrap();
    assert!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The worker's own S3 store on `bucket` at `endpoint`, with the test key.
async fn garage_store(bucket: &str, endpoint: &str) -> S3Store {
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint = Some(endpoint.into());
    cfg.region = Some("garage".into());
    cfg.force_path_style = true;
    let creds = aws_sdk_s3::config::Credentials::new(GARAGE_KEY_ID, GARAGE_SECRET, None, None, "soak");
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(creds);
    S3Store::connect_with(cfg, loader).await.expect("garage (deploy/scripts/test.sh or garage-cluster.sh start)")
}

/// The soak's processes by name, each restartable with the arguments it was started with.
struct Fleet {
    bin: &'static str,
    url: String,
    env: Vec<(&'static str, String)>,
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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

/// Committed jobs (those with a `result.json`) and attempt markers per job, from the bucket
/// (keys `{tenant}/{job}/result.json` and `{tenant}/{job}/attempt-{n}.json`). `None` while S3
/// does not answer.
async fn scan(s3: &S3Store) -> Option<(usize, HashMap<String, usize>)> {
    let (mut committed, mut markers) = (0, HashMap::new());
    for key in s3.list("").await.ok()? {
        let parts: Vec<&str> = key.split('/').collect();
        let [_, job, name] = parts[..] else { continue };
        if name == "result.json" {
            committed += 1;
        } else if name.starts_with("attempt-") && name.ends_with(".json") {
            *markers.entry(job.to_owned()).or_default() += 1;
        }
    }
    Some((committed, markers))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(10_000);
    let rate = args.get(1).copied().unwrap_or(200).max(1);
    let site = Site { cluster: std::env::var("SOAK_CLUSTER").is_ok_and(|v| v == "1") };
    let vhost = format!("soak-{}", std::process::id());
    assert!(site.rabbitmqctl(&["add_vhost", &vhost]), "RabbitMQ and rabbitmqctl");
    site.rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = site.roles_url(&vhost);
    let bucket = format!("soak-{}", std::process::id());
    let s3 = garage_store(&bucket, site.s3_endpoint()).await;
    s3.client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("garage (deploy/scripts/test.sh or garage-cluster.sh start)");
    let mut dir = tempfile::Builder::new().prefix("reelforge-soak-").tempdir().unwrap();
    // SOAK_KEEP=1 keeps the processes' logs (the temp dir) for a look at what went wrong.
    if std::env::var_os("SOAK_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("logs kept in {}", dir.path().display());
    }
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let env = vec![
        ("REELFORGE_QUEUE_TYPE", site.queue_type().to_string()),
        ("AWS_ACCESS_KEY_ID", GARAGE_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", GARAGE_SECRET.to_owned()),
        ("AWS_REGION", "garage".to_owned()),
    ];
    let layout = topology::Layout::new(site.queue_type());
    // Declared through node 1 of a cluster, so that node leads every queue (and is the one the
    // broker restart kills).
    layout.declare_core(&AmqpBus::connect(&url).await.expect("RabbitMQ")).await.unwrap();
    let mut fleet = Fleet {
        bin: env!("CARGO_BIN_EXE_reelforge"),
        url: url.clone(),
        env,
        logs: logs.clone(),
        procs: BTreeMap::new(),
    };
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
            "--s3-bucket",
            &bucket,
            "--s3-endpoint",
            site.s3_endpoint(),
            "--s3-path-style",
        ];
        fleet.start(&id, args.map(String::from).to_vec());
    }
    let bus = AmqpBus::connect(&site.own_url(&vhost)).await.expect("RabbitMQ");
    layout.declare_core(&bus).await.unwrap();
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

    // Chaos while submitting: a step every 2 s; an S3 node restart a quarter in, the broker
    // restart halfway (a cluster's nodes come back 10 s later).
    let submit_s = jobs as f64 / rate as f64;
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut step = 0usize;
    let (mut s3_restarted, mut broker_restarted) = (false, false);
    let down_for = Duration::from_secs(if site.cluster { 10 } else { 3 });
    while t0.elapsed().as_secs_f64() < submit_s {
        tokio::time::sleep(Duration::from_secs(2)).await;
        step += 1;
        if !s3_restarted && t0.elapsed().as_secs_f64() > submit_s / 4.0 {
            site.s3_down();
            tokio::time::sleep(down_for).await;
            site.s3_up();
            s3_restarted = true;
            *actions.entry("S3 node restart").or_default() += 1;
            continue;
        }
        if !broker_restarted && t0.elapsed().as_secs_f64() > submit_s / 2.0 {
            site.broker_down();
            tokio::time::sleep(down_for).await;
            site.broker_up();
            broker_restarted = true;
            *actions
                .entry(if site.cluster { "broker node SIGKILL (every queue's leader)" } else { "broker restart" })
                .or_default() += 1;
            continue;
        }
        match step % 4 {
            0 => {
                fleet.restart(&format!("w{}", step / 4 % 4));
                *actions.entry("worker SIGKILL").or_default() += 1;
            }
            1 => {
                let name = format!("reelforge worker w{}", (step / 4 + 1) % 4);
                let Some(out) =
                    site.ctl(&["list_connections", "--no-table-headers", "pid", "vhost", "client_properties"])
                else {
                    continue;
                };
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut cols = line.splitn(3, '\t');
                    if let (Some(pid), Some(v), Some(p)) = (cols.next(), cols.next(), cols.next())
                        && v == vhost
                        && p.contains(&name)
                        && site.rabbitmqctl(&["close_connection", pid, "soak"])
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
    let (mut committed, mut markers) = (0, HashMap::new());
    let (mut progress_at, mut last) = (Instant::now(), committed);
    while committed < jobs && progress_at.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(scanned) = scan(&s3).await {
            (committed, markers) = scanned;
        }
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

    let where_ = if site.cluster {
        "3-node RabbitMQ (quorum queues) and garage clusters"
    } else {
        "one broker, one garage node"
    };
    println!("soak: {jobs} jobs at {rate}/s, 2 schedulers, 4 workers × 8 (no-op pipelines, outputs on S3), {where_}");
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
    site.rabbitmqctl(&["delete_vhost", &vhost]);
    if lost == 0 && duplicate_commits == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
